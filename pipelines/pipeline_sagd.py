"""Sampling pipeline for spectrally anisotropic Gaussian diffusion (SAGD, arXiv 2510.09660).

A SAGD model is an ordinary ε-prediction DDPM whose forward noise is coloured, ε_w = T_w ξ ~ N(0, Σ_w) with
Σ_w = F⁻¹ Diag(|w|²) F. Its sampler is the usual DDPM / DDIM sampler with the initial x_T **and every injected
noise** drawn from N(0, Σ_w) instead of N(0, I) (papers.md §2). The DDPM posterior q(x_{t-1} | x_t, x_0) of the
coloured process is N(μ̃_t, β̃_t Σ_w) with the same mean μ̃_t (Eq. 7 of arXiv 2006.11239), so only the noise
changes: prev = μ̃_t + σ_t T_w ξ.

Stock `DDPMPipeline` / `DDIMPipeline` draw white noise and so sample such a model wrongly. The noise spectrum is
therefore part of the pipeline config: `SAGDPipeline(unet, scheduler, noise_spectrum="powerlaw:alpha=-0.5")` writes
`"noise_spectrum"` and a `"sagd_note"` into `model_index.json`, `from_pretrained` passes them back, and a stock
`DDPMPipeline.from_pretrained` / `DDIMPipeline.from_pretrained` of the folder logs Diffusers' own warning
"The config attributes {...} were passed to DDPMPipeline, but are not expected and will be ignored", whose text
includes the note ("... Stock DDPMPipeline/DDIMPipeline draw white noise and sample it wrongly."). The keys live in
`model_index.json` and not in the scheduler config on purpose: `DDPMScheduler` itself would warn about unknown keys
whenever it loads, also inside this pipeline, while only the pipeline class reads `model_index.json`.

How to load a saved folder (written by `SAGDPipeline.save_pretrained`):

```py
# with diffusers-specreg installed
from diffusers_specreg.pipelines import SAGDPipeline

pipe = SAGDPipeline.from_pretrained("path/to/folder")  # or a Hub repo id "user/repo"

# this file copied into the folder / Hub repo as `pipeline.py`
# (`diffusers_specreg.pipelines_io.write_custom_pipeline_file(SAGDPipeline, folder)` does that)
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("path/to/folder", custom_pipeline="path/to/folder", trust_remote_code=True)
pipe = DiffusionPipeline.from_pretrained("user/repo", custom_pipeline="user/repo", trust_remote_code=True)
images = pipe(batch_size=4, num_inference_steps=1000).images
```

Unlike the EDM pipeline this file is not fully self-contained: it imports `diffusers_specreg.noise.NoiseSpectrum`, so
the `diffusers-specreg` package must be installed wherever it is loaded (also with `custom_pipeline`). Diffusers
(0.42) refuses custom code without `trust_remote_code=True`, even from a local folder.
"""

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    ImagePipelineOutput,
    UNet2DModel,
)
from diffusers.schedulers.scheduling_ddpm import DDPMSchedulerOutput

from diffusers_specreg.noise import NoiseSpectrum

OUTPUT_TYPES = ("pil", "np", "pt")
DDPM_VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "learned_range")

SAGD_NOTE = (
    "This model was trained with spectrally anisotropic (coloured) forward noise, SAGD arXiv 2510.09660, see "
    "noise_spectrum. Sample it with SAGDPipeline (pip install diffusers-specreg; or DiffusionPipeline.from_pretrained("
    "..., custom_pipeline=<folder or repo id>, trust_remote_code=True)). Stock DDPMPipeline/DDIMPipeline draw white "
    "noise and sample it wrongly."
)


def ddpm_step_with_noise(
    scheduler: DDPMScheduler,
    model_output: torch.Tensor,
    timestep: int | torch.Tensor,
    sample: torch.Tensor,
    variance_noise: torch.Tensor | None,
) -> DDPMSchedulerOutput:
    r"""
    One ancestral DDPM step x_t -> x_{t-1} with caller-supplied unit noise, i.e. `DDPMScheduler.step` with its
    internally drawn white noise replaced by `variance_noise` (SAGD passes coloured noise ε_w ~ N(0, Σ_w)). With the
    white noise that `DDPMScheduler.step` would draw, the result is identical to it.

    Args:
        scheduler ([`DDPMScheduler`]):
            Supplies ᾱ_t, the previous timestep, the variance and clipping / thresholding settings.
        model_output (`torch.Tensor` of shape `[B, C, H, W]`, or `[B, 2C, H, W]` for `"learned_range"`):
            Network output at `timestep` (ε̂, x̂_0 or v̂ depending on `scheduler.config.prediction_type`).
        timestep (`int` or `torch.Tensor`):
            Current timestep t, one of `scheduler.timesteps`.
        sample (`torch.Tensor` of shape `[B, C, H, W]`):
            Current sample x_t.
        variance_noise (`torch.Tensor` of shape `[B, C, H, W]`, *optional*):
            Unit-variance noise to scale by the step's standard deviation; required when t > 0, unused at t = 0.

    Returns:
        [`DDPMSchedulerOutput`] with `prev_sample` x_{t-1} and `pred_original_sample` x̂_0, shapes `[B, C, H, W]`.
    """
    variance_type = scheduler.config.variance_type
    if variance_type not in DDPM_VARIANCE_TYPES:
        raise ValueError(
            f"SAGD DDPM sampling supports variance_type in {list(DDPM_VARIANCE_TYPES)}, got {variance_type!r}."
        )
    t = timestep
    prev_t = scheduler.previous_timestep(t)
    predicted_variance = None
    if variance_type == "learned_range":
        if model_output.shape[1] != 2 * sample.shape[1]:
            raise ValueError(
                f"variance_type 'learned_range' needs a model output of shape [B, 2C, H, W] = "
                f"[{sample.shape[0]}, {2 * sample.shape[1]}, ...], got {tuple(model_output.shape)}."
            )
        model_output, predicted_variance = torch.split(model_output, sample.shape[1], dim=1)

    # 1. ᾱ_t, ᾱ_{t-1}, β_t (the operations and their order are those of DDPMScheduler.step, for bitwise equality).
    alpha_prod_t = scheduler.alphas_cumprod[t]
    alpha_prod_t_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.one
    beta_prod_t = 1 - alpha_prod_t
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    current_alpha_t = alpha_prod_t / alpha_prod_t_prev
    current_beta_t = 1 - current_alpha_t

    # 2. predicted x_0, Eq. 15 of arXiv 2006.11239 (x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε_w holds for coloured ε_w too).
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
    elif prediction_type == "sample":
        pred_original_sample = model_output
    elif prediction_type == "v_prediction":
        pred_original_sample = (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
    else:
        raise ValueError(
            f"prediction_type must be one of ['epsilon', 'sample', 'v_prediction'], got {prediction_type!r}."
        )
    if scheduler.config.thresholding:
        pred_original_sample = scheduler._threshold_sample(pred_original_sample)
    elif scheduler.config.clip_sample:
        clip = scheduler.config.clip_sample_range
        pred_original_sample = pred_original_sample.clamp(-clip, clip)

    # 3. posterior mean μ̃_t(x_t, x̂_0), Eq. 7 of arXiv 2006.11239.
    pred_original_sample_coeff = (alpha_prod_t_prev ** (0.5) * current_beta_t) / beta_prod_t
    current_sample_coeff = current_alpha_t ** (0.5) * beta_prod_t_prev / beta_prod_t
    pred_prev_sample = pred_original_sample_coeff * pred_original_sample + current_sample_coeff * sample

    # 4. x_{t-1} = μ̃_t + σ_t ε with ε ~ N(0, Σ_w): the posterior covariance of the coloured process is σ_t² Σ_w.
    if t > 0:
        if variance_noise is None:
            raise ValueError("variance_noise is required for t > 0.")
        if variance_noise.shape != pred_prev_sample.shape:
            raise ValueError(
                f"variance_noise must have the sample's shape {tuple(pred_prev_sample.shape)}, "
                f"got {tuple(variance_noise.shape)}."
            )
        variance = scheduler._get_variance(t, predicted_variance=predicted_variance)
        if variance_type == "fixed_small_log":
            std = variance  # `_get_variance` already returns exp(½ log β̃_t) for this type
        elif variance_type == "learned_range":
            std = torch.exp(0.5 * variance)  # interpolated log variance, Eq. 15 of arXiv 2102.09672
        else:
            std = variance**0.5
        pred_prev_sample = pred_prev_sample + std * variance_noise

    return DDPMSchedulerOutput(prev_sample=pred_prev_sample, pred_original_sample=pred_original_sample)


class SAGDPipeline(DiffusionPipeline):
    r"""
    Unconditional image generation for a model trained with spectrally anisotropic forward noise (arXiv 2510.09660).

    Parameters:
        unet ([`UNet2DModel`]):
            The noise (or sample / v) predictor.
        scheduler ([`DDPMScheduler`] or [`DDIMScheduler`]):
            DDPM: ancestral sampling with coloured noise in every step. DDIM: coloured `variance_noise` in every
            step when `eta > 0` (with `eta = 0` only x_T is coloured).
        noise_spectrum (`str`, `dict` or `NoiseSpectrum`, defaults to `"white"`):
            The training noise spectrum w, e.g. `"powerlaw:alpha=-0.5"` (see `diffusers_specreg.noise`). Stored in
            the pipeline config (`model_index.json`) as its string form (`to_dict()` for user weights). `"white"`
            makes this pipeline sample exactly like `DDPMPipeline` / `DDIMPipeline`.
        sagd_note (`str`, *optional*):
            Ignored. For a coloured spectrum the pipeline writes a fixed explanatory note under this key so that
            stock pipelines print it when they load the folder; the argument exists so that loading it back with this
            class raises no "unexpected config attribute" warning.
    """

    model_cpu_offload_seq = "unet"

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: DDPMScheduler | DDIMScheduler,
        noise_spectrum: str | dict | NoiseSpectrum = "white",
        sagd_note: str | None = None,
    ):
        super().__init__()
        if not isinstance(scheduler, (DDPMScheduler, DDIMScheduler)):
            raise ValueError(
                f"SAGDPipeline supports the schedulers DDPMScheduler, DDIMScheduler, got {type(scheduler).__name__}."
            )
        spectrum = NoiseSpectrum.resolve(noise_spectrum)
        self.register_modules(unet=unet, scheduler=scheduler)
        stored = spectrum.to_dict() if spectrum.kind == "weights" else spectrum.to_string()
        self.register_to_config(noise_spectrum=stored)
        if not spectrum.is_white:
            self.register_to_config(sagd_note=SAGD_NOTE)
        self._spectrum = spectrum

    @property
    def spectrum(self) -> NoiseSpectrum:
        """The noise spectrum (parsed from `self.config.noise_spectrum`)."""
        return self._spectrum

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        eta: float = 1.0,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generate images with x_T and every injected noise drawn from N(0, Σ_w).

        Args:
            batch_size (`int`, defaults to `1`):
                Number of images to generate.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Random generator(s) for all noise draws; a list holds one per image. The draws happen in the same
                order and with the same shapes as in `DDPMPipeline` / `DDIMPipeline`.
            num_inference_steps (`int`, defaults to `1000`):
                Number of denoising steps.
            eta (`float`, defaults to `1.0`):
                DDIM only: stochasticity in [0, 1] (0 deterministic DDIM, 1 DDPM-like). Ignored with a DDPMScheduler.
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
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1] (0: DDIM, 1: DDPM-like), got {eta}.")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"Got a list of {len(generator)} generators for batch_size {batch_size}; expected one each."
            )

        sample_size = self.unet.config.sample_size
        if isinstance(sample_size, int):
            sample_size = (sample_size, sample_size)
        shape = (batch_size, self.unet.config.in_channels, *sample_size)
        device = self._execution_device
        is_ddim = isinstance(self.scheduler, DDIMScheduler)

        # 1. x_T ~ N(0, Σ_w) instead of N(0, I) (SAGD sampling, arXiv 2510.09660).
        image = self._spectrum.sample(shape, generator=generator, device=device, dtype=self.unet.dtype)

        self.scheduler.set_timesteps(num_inference_steps)
        for t in self.progress_bar(self.scheduler.timesteps):
            model_output = self.unet(image, t).sample
            if is_ddim:
                # 2. DDIM, Eq. 12 of arXiv 2010.02502, with the σ_t-scaled noise drawn from N(0, Σ_w).
                noise = None
                if eta > 0:
                    noise = self._spectrum.sample(
                        model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
                    )
                image = self.scheduler.step(model_output, t, image, eta=eta, variance_noise=noise).prev_sample
            else:
                # 3. ancestral DDPM step, Eq. 7 of arXiv 2006.11239, posterior noise drawn from N(0, Σ_w).
                noise = None
                if t > 0:
                    noise = self._spectrum.sample(
                        image.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
                    )
                image = ddpm_step_with_noise(self.scheduler, model_output, t, image, noise).prev_sample

        # 4. data in [-1, 1] -> images in [0, 1], as DDPMPipeline.
        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            image = image.cpu().permute(0, 2, 3, 1).float().numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)
