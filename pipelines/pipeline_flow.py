"""Flow-matching sampling pipeline for an unconditional `UNet2DModel` trained as a rectified flow (arXiv 2209.03003).

The model was trained on x_t = (1 − σ)·x₀ + σ·ε to predict the velocity v = ε − x₀, with the timestep σ·N
(N = `scheduler.config.num_train_timesteps`), as Diffusers' SD3 / Flux training scripts do. Diffusers ships no
pipeline for an unconditional flow UNet, so this file samples it with the stock flow-matching schedulers: it
integrates the ODE dx/dσ = v(x, σ) from σ = 1 (pure noise) to 0, one `scheduler.step` per model evaluation:

- `FlowMatchEulerDiscreteScheduler` (the saved one): Euler steps x ← x + (σ_next − σ)·v̂, `num_inference_steps`
  model evaluations;
- `FlowMatchHeunDiscreteScheduler`: Heun's second-order steps, 2·`num_inference_steps` − 1 model evaluations (the
  last step, to σ = 0, is Euler).

Both take the σ grid (and its `shift`) from their config, and pass `scheduler.timesteps` (= σ·N) to the UNet.

How to load a saved folder (written by `FlowMatchPipeline.save_pretrained`):

```py
# with diffusers-specreg installed
from diffusers_specreg.pipelines import FlowMatchPipeline

pipe = FlowMatchPipeline.from_pretrained("path/to/folder")

# without it: this file copied into the folder / Hub repo as `pipeline.py`
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("path/to/folder", trust_remote_code=True)
images = pipe(batch_size=4, num_inference_steps=50).images

# Heun instead of Euler, on the same σ grid
from diffusers import FlowMatchHeunDiscreteScheduler

config = pipe.scheduler.config
pipe.scheduler = FlowMatchHeunDiscreteScheduler(num_train_timesteps=config.num_train_timesteps, shift=config.shift)
```

This file imports only `torch` and `diffusers`, so it works on its own.
"""

import torch
from diffusers import (
    DiffusionPipeline,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    ImagePipelineOutput,
    UNet2DModel,
)
from diffusers.utils.torch_utils import randn_tensor

OUTPUT_TYPES = ("pil", "np", "pt")


class FlowMatchPipeline(DiffusionPipeline):
    r"""
    Unconditional image generation with a `UNet2DModel` trained by flow matching (velocity v = ε − x₀).

    Parameters:
        unet ([`UNet2DModel`]):
            The velocity network v_θ(x_t, σ·N). It must use `time_embedding_type="positional"` (it receives real
            timesteps σ·N; a `"learned"` embedding needs integers and `"fourier"` takes their log).
        scheduler ([`FlowMatchEulerDiscreteScheduler`] or [`FlowMatchHeunDiscreteScheduler`]):
            The σ grid (`num_train_timesteps`, `shift`) of training, and the ODE solver.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler: FlowMatchEulerDiscreteScheduler | FlowMatchHeunDiscreteScheduler):
        super().__init__()
        if not isinstance(scheduler, (FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler)):
            raise ValueError(
                "FlowMatchPipeline needs a flow-matching scheduler; allowed: FlowMatchEulerDiscreteScheduler, "
                f"FlowMatchHeunDiscreteScheduler, got {type(scheduler).__name__}."
            )
        time_embedding_type = unet.config.get("time_embedding_type", "positional")
        if time_embedding_type != "positional":
            raise ValueError(
                "FlowMatchPipeline feeds the UNet real-valued timesteps sigma * num_train_timesteps, which needs "
                f"time_embedding_type 'positional' (allowed: ['positional']), got {time_embedding_type!r}."
            )
        self.register_modules(unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 50,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generate images by integrating dx/dσ = v_θ(x, σ) from σ = 1 to σ = 0 with the scheduler's solver.

        Args:
            batch_size (`int`, defaults to `1`):
                Number of images to generate.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Random generator(s) for the initial noise; a list holds one per image.
            num_inference_steps (`int`, defaults to `50`):
                Number of σ levels (Euler: that many UNet evaluations; Heun: twice that, minus one).
            output_type (`str`, defaults to `"pil"`):
                `"pil"` (list of `PIL.Image`), `"np"` (`np.ndarray` of shape `[B, H, W, C]`) or `"pt"`
                (`torch.Tensor` of shape `[B, C, H, W]`), values in [0, 1].
            return_dict (`bool`, defaults to `True`):
                Return an [`ImagePipelineOutput`] instead of a tuple.

        Returns:
            [`ImagePipelineOutput`] or `tuple`: the generated images (first element of the tuple).
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {list(OUTPUT_TYPES)}, got {output_type!r}.")
        if batch_size < 1 or num_inference_steps < 1:
            raise ValueError(
                f"batch_size and num_inference_steps must be >= 1, got {batch_size} and {num_inference_steps}."
            )
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"Got a list of {len(generator)} generators for batch_size {batch_size}; expected one each."
            )
        sample_size = self.unet.config.sample_size
        if isinstance(sample_size, int):
            sample_size = (sample_size, sample_size)
        shape = (batch_size, self.unet.config.in_channels, *sample_size)
        device = self._execution_device

        # 1. σ grid from 1 to σ_min, then 0 (the scheduler appends it); timesteps = σ·N, as in training
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        self.scheduler.set_begin_index(0)
        # 2. x at σ = 1 is pure noise: x_1 = ε (x_t = (1 − σ)·x₀ + σ·ε)
        sample = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        for t in self.progress_bar(self.scheduler.timesteps):
            # 3. v̂ = v_θ(x, σ·N), then the solver step x ← x + (σ_next − σ)·v̂ (Heun averages two slopes)
            velocity = self.unet(sample, t.expand(batch_size)).sample
            sample = self.scheduler.step(velocity, t, sample).prev_sample

        # 4. data in [-1, 1] -> images in [0, 1], as DDPMPipeline
        image = (sample.float() / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            image = image.cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)
