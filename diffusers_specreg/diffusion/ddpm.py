"""The DDPM / DDIM objective on the variance-preserving path x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε (arXiv 2006.11239).

DDPM and DDIM share their training (arXiv 2010.02502). This module holds the VP maths the rest of the package uses:
ᾱ_t per sample, its σ and SNR, x̂₀ from ε̂, v̂ or x̂₀ (Eq. 15 of arXiv 2006.11239; arXiv 2202.00512), and
`DDPMObjective`, the objective of Diffusers' `train_unconditional.py` with any prediction type and forward noise.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from ..pipeline_kernels import predicted_original_sample
from ..tensors import check_output_shape, compute_dtype, per_sample
from .base import NoiseFn, NoiseLevels, NoisyBatch, SchedulerSettings, per_sample_mse, white_noise
from .samplers import PipelineSpec, Sampler, call_sampler, ddim_of

VP_PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# Floor for ᾱ_t: with `rescale_betas_zero_snr=True` the last ᾱ is exactly 0 and Eq. 15 divides by zero. Diffusers'
# Euler schedulers use the same floor (`alphas_cumprod[-1] = 2**-24`) for the same reason.
MIN_ALPHA_BAR = 2.0**-24


def alpha_bar_at(
    alphas_cumprod: torch.Tensor,
    timesteps: torch.Tensor | int | float,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """ᾱ_t gathered per timestep, not floored.

    Args:
        alphas_cumprod (`torch.Tensor` of shape `[T]`): the scheduler's `alphas_cumprod`.
        timesteps (`torch.Tensor` of any shape, or a scalar): integer t; float timesteps are rounded.
        device (`torch.device`, *optional*): device of the result; that of `timesteps` (CPU for a number) if `None`.
        dtype (`torch.dtype`, defaults to `torch.float32`): dtype of the result.

    Returns:
        `torch.Tensor` of the shape of `timesteps`.
    """
    timesteps = torch.as_tensor(timesteps, device=device)
    if timesteps.is_floating_point():
        timesteps = timesteps.round()
    return alphas_cumprod.to(device=timesteps.device, dtype=dtype)[timesteps.long()]


def vp_sigma(alpha_bar: torch.Tensor) -> torch.Tensor:
    """σ_t = √((1−ᾱ_t)/ᾱ_t), the VP ↔ VE correspondence of Table 1 of arXiv 2206.00364 (ᾱ floored at 2⁻²⁴)."""
    alpha_bar = alpha_bar.clamp_min(MIN_ALPHA_BAR)
    return ((1 - alpha_bar) / alpha_bar) ** 0.5


def vp_snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    """SNR(t) = ᾱ_t/(1−ᾱ_t), arXiv 2303.09556: computed directly, not as σ⁻², for precision near t = 0."""
    alpha_bar = alpha_bar.clamp_min(MIN_ALPHA_BAR)
    return alpha_bar / (1 - alpha_bar)


def vp_noise_levels(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, sigma_data: float = 0.5) -> NoiseLevels:
    """The noise levels of integer timesteps on the VP path.

    Args:
        alphas_cumprod (`torch.Tensor` of shape `[T]`): the scheduler's `alphas_cumprod`.
        timesteps (`torch.Tensor` of shape `[B]`): integer t (float timesteps are rounded to gather ᾱ_t).
        sigma_data (`float`, defaults to 0.5): σ_data of the "edm" spectral weighting.

    Returns:
        `NoiseLevels`: `t`, float32 `sigma` and `snr` (from ᾱ floored at 2⁻²⁴) and `alpha_bar` as gathered (float32
        at least, not floored).
    """
    alpha_bar = alpha_bar_at(alphas_cumprod, timesteps, dtype=compute_dtype(alphas_cumprod))
    alpha_bar32 = alpha_bar.to(torch.float32)
    return NoiseLevels(timesteps, vp_sigma(alpha_bar32), vp_snr(alpha_bar32), alpha_bar, sigma_data)


def drop_learned_variance(
    model_output: torch.Tensor, noisy_sample: torch.Tensor, variance_type: str | None
) -> torch.Tensor:
    """The first half of a `[B, 2C, ...]` output with a learned variance (as `DDPMScheduler.step` splits it).

    Args:
        model_output (`torch.Tensor` of shape `[B, C, ...]` or `[B, 2C, ...]`): the network output.
        noisy_sample (`torch.Tensor` of shape `[B, C, ...]`): x_t.
        variance_type (`str`, *optional*): the scheduler's `config.variance_type`; only "learned" and
            "learned_range" split the output.

    Returns:
        `torch.Tensor`: `model_output[:, :C]` for a learned variance of twice the channels, else `model_output`.
    """
    if (
        variance_type in ("learned", "learned_range")
        and model_output.ndim == noisy_sample.ndim
        and model_output.shape[1] == 2 * noisy_sample.shape[1]
    ):
        return model_output[:, : noisy_sample.shape[1]]
    return model_output


def vp_x0_hat(
    model_output: torch.Tensor,
    noisy_sample: torch.Tensor,
    alpha_bar: torch.Tensor,
    prediction_type: str,
    variance_type: str | None = None,
) -> torch.Tensor:
    """x̂₀ on the VP path, one ᾱ_t per sample; the same function as the SAGD sampler's (`pipeline_kernels`).

    Matches `DDPMScheduler.step(...).pred_original_sample` without its optional clipping or thresholding, so the
    spectral losses see the raw prediction and its full gradient.

    Args:
        model_output (`torch.Tensor` of shape `[B, C, ...]`): ε̂, v̂ or x̂₀ (`[B, 2C, ...]` with a learned variance).
        noisy_sample (`torch.Tensor` of shape `[B, C, ...]`): x_t.
        alpha_bar (`torch.Tensor` of shape `[B]`): ᾱ_t per sample, not floored (this function floors it at 2⁻²⁴).
        prediction_type (`str`): "epsilon", "v_prediction" or "sample".
        variance_type (`str`, *optional*): the scheduler's `config.variance_type` (see `drop_learned_variance`).

    Returns:
        `torch.Tensor` of shape `[B, C, ...]`: x̂₀ in float32 (float64 if the inputs are float64).
    """
    if prediction_type not in VP_PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type must be one of {', '.join(VP_PREDICTION_TYPES)} on the VP path, got {prediction_type!r}."
        )
    model_output = drop_learned_variance(model_output, noisy_sample, variance_type)
    check_output_shape(model_output, noisy_sample)
    dtype = compute_dtype(model_output, noisy_sample)
    # 1. ᾱ_t per sample, floored, broadcast to the sample's rank
    alpha_prod_t = per_sample(alpha_bar.to(dtype).clamp_min(MIN_ALPHA_BAR), noisy_sample)
    # 2. x̂₀ from ε̂ (Eq. 15 of arXiv 2006.11239), v̂ (arXiv 2202.00512) or x̂₀ itself
    return predicted_original_sample(noisy_sample.to(dtype), model_output.to(dtype), alpha_prod_t, prediction_type)


def ddpm_scheduler(settings: SchedulerSettings) -> DDPMScheduler:
    """The training `DDPMScheduler`: the fine-tuned pipeline's config (with `prediction_type` replaced), or a new one.

    Args:
        settings (`SchedulerSettings`): prediction type, schedule length and β schedule, or a pretrained config.

    Returns:
        `DDPMScheduler`
    """
    if settings.pretrained_config is not None:
        return DDPMScheduler.from_config(dict(settings.pretrained_config, prediction_type=settings.prediction_type))
    return DDPMScheduler(
        num_train_timesteps=settings.num_train_timesteps,
        beta_schedule=settings.beta_schedule,
        prediction_type=settings.prediction_type,
    )


def ddpm_pipeline(unet, scheduler, spectrum=None, mel=None, vae=None):
    """The saved `DDPMPipeline` (`spectrum`, `mel` and `vae` are not used by this kind)."""
    from diffusers import DDPMPipeline

    return DDPMPipeline(unet=unet, scheduler=scheduler)


def ddim_pipeline(pipeline):
    """A `DDIMPipeline` on the UNet and schedule of a saved DDPM-trained pipeline (the fast sampler)."""
    from diffusers import DDIMPipeline

    return DDIMPipeline(unet=pipeline.unet, scheduler=ddim_of(pipeline.scheduler))


def ddim_sampler(pipeline, steps: int) -> tuple[Sampler, str]:
    """The evaluation sampler of a DDPM-trained pipeline: deterministic DDIM (η = 0) with `steps` steps."""
    return call_sampler(ddim_pipeline(pipeline), steps, eta=0.0), f"DDIM (eta 0), {steps} steps"


class DDPMObjective:
    """Training objective of Diffusers' `train_unconditional.py`, with any prediction type and forward noise.

    Args:
        scheduler (`DDPMScheduler`): its `config.prediction_type` ("epsilon", "v_prediction" or "sample") sets
            the target.
        noise_fn (`callable`, *optional*): `(shape, generator, device) -> noise`; white noise by default. Coloured
            noise (arXiv 2510.09660) plugs in here; the target of epsilon prediction is then the coloured noise.
    """

    name = "ddpm"
    formulation = "ddpm"
    # other names of --formulation that train this objective (DDIM trains exactly like DDPM)
    other_names = ("ddim",)
    prediction_types = VP_PREDICTION_TYPES
    integer_timesteps = True
    supports_noise_spectrum = True  # coloured forward noise (SAGD) through noise_fn
    supports_audio = True  # the AudioDiffusionPipeline samples DDPM/DDIM
    options = ()
    pipeline = PipelineSpec("DDPMPipeline", ddpm_pipeline, ddim_pipeline, ddim_sampler, aliases=("DDIMPipeline",))

    def __init__(self, scheduler: DDPMScheduler, noise_fn: NoiseFn | None = None):
        prediction_type = scheduler.config.prediction_type
        if prediction_type not in VP_PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type must be 'epsilon', 'v_prediction' or 'sample', got {prediction_type!r}."
            )
        self.scheduler = scheduler
        self.prediction_type = prediction_type
        self.noise_fn = noise_fn or white_noise

    @classmethod
    def make_scheduler(cls, settings: SchedulerSettings) -> DDPMScheduler:
        """The training noise scheduler (`ddpm_scheduler`)."""
        return ddpm_scheduler(settings)

    def noise_batch(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> NoisyBatch:
        """Draw the noise, then t ~ U{0, ..., T-1}, and build x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε (Eq. 4, 2006.11239).

        Args:
            clean (`torch.Tensor` of shape `[B, C, ...]`): x₀.
            generator (`torch.Generator`, *optional*): the source of the noise and the timesteps.

        Returns:
            `NoisyBatch`: the network sees `(x_t, t)`; `levels` holds t, σ, SNR and ᾱ_t per sample.
        """
        batch_size, device = clean.shape[0], clean.device
        noise = self.noise_fn(tuple(clean.shape), generator, device).to(clean.dtype)
        t = torch.randint(
            0, self.scheduler.config.num_train_timesteps, (batch_size,), generator=generator, device=device
        ).long()
        noisy = self.scheduler.add_noise(clean, noise, t)
        if self.prediction_type == "epsilon":
            target = noise
        elif self.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(clean, noise, t)
        else:
            target = clean
        levels = vp_noise_levels(self.scheduler.alphas_cumprod.to(device), t)
        return NoisyBatch(clean, noise, noisy, noisy, t, target, levels)

    def model_inputs(self, batch: NoisyBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """`(x_t, t)`: the UNet's sample and timestep arguments."""
        return batch.model_input, batch.model_timesteps

    def x0_hat(self, model_output: torch.Tensor, batch: NoisyBatch) -> torch.Tensor:
        """x̂₀ `[B, C, ...]` from the network output (`vp_x0_hat` with the scheduler's prediction and variance type)."""
        variance_type = getattr(self.scheduler.config, "variance_type", None)
        return vp_x0_hat(model_output, batch.noisy, batch.levels.alpha_bar, self.prediction_type, variance_type)

    def base_loss(
        self, model_output: torch.Tensor, batch: NoisyBatch, x0_hat: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-sample MSE `[B]`; for "sample" prediction weighted by SNR(t) = ᾱ_t / (1 - ᾱ_t) as the anchor does.

        `x0_hat` is not used: the loss is on the network's own output.
        """
        loss = per_sample_mse(model_output, batch.target)
        if self.prediction_type == "sample":
            alphas_cumprod = batch.alpha_bar
            loss = loss * alphas_cumprod / (1 - alphas_cumprod)
        return loss
