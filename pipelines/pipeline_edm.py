"""EDM sampling pipeline for a `UNet2DModel` trained with EDM preconditioning (Karras et al. 2022, arXiv 2206.00364).

A model trained with EDM preconditioning is not a DDPM ε-predictor: the network F_θ sees a scaled input and a
log-sigma noise label, and the denoiser is D_θ(x; σ) = c_skip(σ) x + c_out(σ) F_θ(c_in(σ) x; c_noise(σ))
(Eq. 7 and Table 1 of arXiv 2206.00364). Stock `DDPMPipeline` / `DDIMPipeline` apply none of this, so such a model
needs this pipeline. Who applies what (checked in the Diffusers 0.42 source of `EDMEulerScheduler` and
`EDMDPMSolverMultistepScheduler`; each preconditioning is applied exactly once):

- `scheduler.timesteps` are already c_noise(σ) = ¼ ln σ (`set_timesteps` stores `precondition_noise(sigmas)`),
  so they go to the UNet unchanged;
- `scheduler.scale_model_input(x, t)` returns c_in(σ) x = x / √(σ² + σ_data²);
- `scheduler.precondition_outputs(x, F, σ)` forms D = c_skip x + c_out F (`scheduler.step` does the same inside).

With an `EDMEulerScheduler` the pipeline integrates the probability-flow ODE itself with Karras et al. Algorithm 2:
Heun's second-order method, optionally stochastic (`S_churn`, `S_tmin`, `S_tmax`, `S_noise`; `S_churn = 0` is the
deterministic Algorithm 1; `second_order=False` drops Heun's correction, leaving Euler). The scheduler supplies the σ
schedule and the preconditioning. With an `EDMDPMSolverMultistepScheduler` its own `step` (DPM-Solver++) is used.

The model is expected to map data scaled to [-1, 1] (σ_data = 0.5 by default); outputs are mapped to [0, 1] like
`DDPMPipeline`.

How to load a saved folder (written by `EDMPipeline.save_pretrained`):

```py
# with diffusers-specreg installed
from diffusers_specreg.pipelines import EDMPipeline

pipe = EDMPipeline.from_pretrained("path/to/folder")  # or a Hub repo id "user/repo"

# without it: this file copied alone into the folder / Hub repo as `pipeline.py`
# (`diffusers_specreg.pipelines_io.write_custom_pipeline_file(EDMPipeline, folder)` does that)
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("path/to/folder", custom_pipeline="path/to/folder", trust_remote_code=True)
pipe = DiffusionPipeline.from_pretrained("user/repo", custom_pipeline="user/repo", trust_remote_code=True)
images = pipe(batch_size=4, num_inference_steps=40).images
```

Diffusers (0.42) refuses custom code without `trust_remote_code=True`, even from a local folder. This file imports
only `torch` and `diffusers`, so it works on its own.
"""

import torch
from diffusers import (
    DiffusionPipeline,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    ImagePipelineOutput,
    UNet2DModel,
)
from diffusers.utils.torch_utils import randn_tensor

OUTPUT_TYPES = ("pil", "np", "pt")


class EDMPipeline(DiffusionPipeline):
    r"""
    Unconditional image generation with a `UNet2DModel` trained with EDM preconditioning (arXiv 2206.00364).

    Parameters:
        unet ([`UNet2DModel`]):
            The raw network F_θ. It must use `time_embedding_type="positional"`: it receives the real-valued noise
            label c_noise(σ) = ¼ ln σ as its timestep (a `"fourier"` UNet would take the log again and divide its
            output by the timestep; a `"learned"` one needs integer timesteps).
        scheduler ([`EDMEulerScheduler`] or [`EDMDPMSolverMultistepScheduler`]):
            Sets the σ schedule (Karras et al. Eq. 5 with `rho`) and applies c_in, c_skip and c_out; its `sigma_data`
            and `prediction_type` must match training.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: UNet2DModel, scheduler: EDMEulerScheduler | EDMDPMSolverMultistepScheduler):
        super().__init__()
        if not isinstance(scheduler, (EDMEulerScheduler, EDMDPMSolverMultistepScheduler)):
            raise ValueError(
                f"EDMPipeline needs a scheduler that applies EDM preconditioning; allowed: EDMEulerScheduler, "
                f"EDMDPMSolverMultistepScheduler, got {type(scheduler).__name__}."
            )
        time_embedding_type = unet.config.get("time_embedding_type", "positional")
        if time_embedding_type != "positional":
            raise ValueError(
                f"EDMPipeline feeds the UNet the real-valued noise label c_noise = 0.25 * log(sigma), which needs "
                f"time_embedding_type 'positional' (allowed: ['positional']), got {time_embedding_type!r}."
            )
        self.register_modules(unet=unet, scheduler=scheduler)

    def denoise(self, sample: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        r"""
        The denoiser D_θ(x; σ) = c_skip(σ) x + c_out(σ) F_θ(c_in(σ) x; c_noise(σ)) (Eq. 7 and Table 1 of arXiv
        2206.00364), with the preconditioning of `self.scheduler`.

        Args:
            sample (`torch.Tensor` of shape `[B, C, H, W]`): the noisy sample x.
            sigma (`torch.Tensor` of shape `[]`): its noise level σ > 0.

        Returns:
            `torch.Tensor` of shape `[B, C, H, W]`: the denoised estimate of the clean sample.
        """
        model_input = self.scheduler.precondition_inputs(sample, sigma)
        model_output = self.unet(model_input, self.scheduler.precondition_noise(sigma)).sample
        return self.scheduler.precondition_outputs(sample, model_output, sigma)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 40,
        output_type: str = "pil",
        return_dict: bool = True,
        second_order: bool = True,
        S_churn: float = 0.0,
        S_tmin: float = 0.0,
        S_tmax: float = float("inf"),
        S_noise: float = 1.0,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generate images by integrating the EDM probability-flow ODE (Algorithm 2 of arXiv 2206.00364 with an
        `EDMEulerScheduler`, else the scheduler's solver) from σ_max to 0.

        Args:
            batch_size (`int`, defaults to `1`):
                Number of images to generate.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Random generator(s) for the initial noise (and the churn noise); a list holds one per image.
            num_inference_steps (`int`, defaults to `40`):
                Number of σ levels N (Heun: 2N − 1 denoiser evaluations when the last σ is 0).
            output_type (`str`, defaults to `"pil"`):
                `"pil"` (list of `PIL.Image`), `"np"` (`np.ndarray` of shape `[B, H, W, C]`) or `"pt"`
                (`torch.Tensor` of shape `[B, C, H, W]`), values in [0, 1].
            return_dict (`bool`, defaults to `True`):
                Return an [`ImagePipelineOutput`] instead of a tuple.
            second_order (`bool`, defaults to `True`):
                Heun's correction (Algorithm 2, lines 9-11); `False` takes plain Euler steps. `EDMEulerScheduler`
                only.
            S_churn (`float`, defaults to `0.0`):
                Total stochasticity: each step in [S_tmin, S_tmax] raises σ by γ = min(S_churn / N, √2 − 1) before
                the step. 0 gives the deterministic Algorithm 1. `EDMEulerScheduler` only.
            S_tmin (`float`, defaults to `0.0`), S_tmax (`float`, defaults to `inf`):
                The σ range in which churn is added.
            S_noise (`float`, defaults to `1.0`):
                Standard deviation of the churn noise (slightly above 1 offsets detail lost by the denoiser).

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
        if S_churn < 0 or S_noise < 0:
            raise ValueError(f"S_churn and S_noise must be >= 0, got {S_churn} and {S_noise}.")
        heun = isinstance(self.scheduler, EDMEulerScheduler)
        if not heun and (S_churn > 0 or not second_order):
            raise ValueError(
                "S_churn and second_order apply to Karras' sampler with an EDMEulerScheduler; "
                f"{type(self.scheduler).__name__} takes its own solver steps."
            )

        sample_size = self.unet.config.sample_size
        if isinstance(sample_size, int):
            sample_size = (sample_size, sample_size)
        shape = (batch_size, self.unet.config.in_channels, *sample_size)
        device = self._execution_device

        # 1. σ levels σ_0 = σ_max > ... > σ_{N-1} = σ_min, σ_N = 0 (Eq. 5 of arXiv 2206.00364); the scheduler stores
        #    timesteps = c_noise(σ_i) = ¼ ln σ_i (Table 1).
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        noise = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        if heun:
            sample = self._karras_sampler(noise, generator, second_order, S_churn, S_tmin, S_tmax, S_noise)
        else:
            # x_0 ~ N(0, σ_max² I); `init_noise_sigma` = √(σ_max² + 1) is Diffusers' convention for this scheduler.
            sample = noise * self.scheduler.init_noise_sigma
            for t in self.progress_bar(self.scheduler.timesteps):
                # c_in(σ) x and c_noise(σ) = t into the UNet; `step` forms D_θ (Eq. 7) and takes the solver step.
                model_output = self.unet(self.scheduler.scale_model_input(sample, t), t).sample
                sample = self.scheduler.step(model_output, t, sample, generator=generator).prev_sample

        # 2. data in [-1, 1] -> images in [0, 1], as DDPMPipeline.
        image = (sample / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            image = image.cpu().permute(0, 2, 3, 1).float().numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)

    def _karras_sampler(
        self,
        noise: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None,
        second_order: bool,
        S_churn: float,
        S_tmin: float,
        S_tmax: float,
        S_noise: float,
    ) -> torch.Tensor:
        """Algorithm 2 of arXiv 2206.00364 over `self.scheduler.sigmas` (σ_0 > ... > σ_N), from unit `noise`."""
        sigmas = self.scheduler.sigmas.to(device=noise.device, dtype=torch.float32)
        steps = len(sigmas) - 1
        # 2. x_0 ~ N(0, σ_0² I) (line 2).
        sample = noise * sigmas[0]
        for i in self.progress_bar(range(steps)):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            # 3. churn (lines 4-6): raise σ to σ̂ = (1 + γ) σ by adding noise of variance σ̂² − σ².
            gamma = min(S_churn / steps, 2**0.5 - 1) if S_tmin <= float(sigma) <= S_tmax else 0.0
            sigma_hat = sigma * (1 + gamma)
            if gamma > 0:
                eps = S_noise * randn_tensor(sample.shape, generator=generator, device=noise.device, dtype=noise.dtype)
                sample = sample + (sigma_hat**2 - sigma**2).sqrt() * eps
            # 4. Euler step of dx/dσ = (x − D_θ(x; σ)) / σ from σ̂ to σ_{i+1} (lines 7-8).
            slope = (sample - self.denoise(sample, sigma_hat)) / sigma_hat
            sample_next = sample + (sigma_next - sigma_hat) * slope
            # 5. Heun's correction with the slope at the end point, unless σ_{i+1} = 0 (lines 9-11).
            if second_order and sigma_next > 0:
                slope_next = (sample_next - self.denoise(sample_next, sigma_next)) / sigma_next
                sample_next = sample + (sigma_next - sigma_hat) * (slope + slope_next) / 2
            sample = sample_next
        return sample
