"""Predicted clean sample x̂₀ from a Diffusers scheduler and a model output.

The spectral losses of arXiv 2603.02447 compare the clean training sample x₀ with the sample x̂₀ that the network
predicts at the sampled noise level ("Formulations": DDPM / DDIM use Eq. 15 of arXiv 2006.11239, EDM uses the
preconditioned denoiser D_θ = c_skip·x + c_out·F_θ of arXiv 2206.00364). This module puts that parametrisation in
one place, together with the per-sample noise-level helpers the training needs (σ, SNR, the EDM loss weight).

Two scheduler families are supported:

- variance preserving (VP), indexed by an integer timestep t: `DDPMScheduler`, `DDIMScheduler` and any other
  scheduler with `alphas_cumprod`, `config.prediction_type` and unit `init_noise_sigma` (x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε);
- EDM, indexed by the noise level σ itself: `EDMEulerScheduler`, `EDMDPMSolverMultistepScheduler`
  (x = x₀ + σ·ε).

k-diffusion style schedulers (`EulerDiscreteScheduler`, `LMSDiscreteScheduler`, `HeunDiscreteScheduler`, ...) have
`alphas_cumprod` too, but their `add_noise` builds x₀ + σ·ε, not the VP sample, so they are rejected.
"""

from __future__ import annotations

import torch
from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler

from .pipeline_kernels import predicted_original_sample
from .tensors import as_per_sample, compute_dtype, per_sample

SUPPORTED_SCHEDULERS = (
    "DDPMScheduler",
    "DDIMScheduler",
    "EDMEulerScheduler",
    "EDMDPMSolverMultistepScheduler",
)
VP_PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
EDM_PREDICTION_TYPES = ("epsilon", "v_prediction")

# Floor for ᾱ_t: with `rescale_betas_zero_snr=True` the last ᾱ is exactly 0 and Eq. 15 divides by zero. Diffusers'
# Euler schedulers use the same floor (`alphas_cumprod[-1] = 2**-24`) for the same reason.
_MIN_ALPHA_CUMPROD = 2.0**-24
# What the per-sample noise levels are called in shape errors
_TIMESTEPS = "timesteps / sigmas"


def is_edm_scheduler(scheduler) -> bool:
    """Whether `scheduler` is one of the EDM schedulers, whose "timesteps" are noise levels σ.

    Args:
        scheduler (`SchedulerMixin`): a Diffusers scheduler.

    Returns:
        `bool`: `True` for `EDMEulerScheduler` and `EDMDPMSolverMultistepScheduler`.
    """
    return isinstance(scheduler, (EDMEulerScheduler, EDMDPMSolverMultistepScheduler))


def is_vp_scheduler(scheduler) -> bool:
    """Whether `scheduler` uses the variance-preserving sample x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε with integer timesteps.

    Args:
        scheduler (`SchedulerMixin`): a Diffusers scheduler.

    Returns:
        `bool`: `True` for `DDPMScheduler`, `DDIMScheduler` and other schedulers with `alphas_cumprod`,
        `config.prediction_type` and `init_noise_sigma == 1`.
    """
    if is_edm_scheduler(scheduler):
        return False
    if not hasattr(scheduler, "alphas_cumprod") or not hasattr(getattr(scheduler, "config", None), "prediction_type"):
        return False
    # k-diffusion style schedulers start from σ_max-scaled noise (init_noise_sigma > 1) and their add_noise is
    # x₀ + σ·ε; VP schedulers start from unit-variance noise.
    return float(getattr(scheduler, "init_noise_sigma", 1.0)) == 1.0


def _unsupported(scheduler) -> ValueError:
    return ValueError(
        f"Scheduler {type(scheduler).__name__} is not supported. Supported schedulers: {', '.join(SUPPORTED_SCHEDULERS)}"
        f" (or any variance-preserving scheduler with `alphas_cumprod` and `config.prediction_type`); supported"
        f" prediction types: {', '.join(VP_PREDICTION_TYPES)} for DDPM/DDIM and {', '.join(EDM_PREDICTION_TYPES)} for"
        " EDM."
    )


def _alphas_cumprod(scheduler, timesteps, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """ᾱ_t gathered per timestep, same shape as `timesteps`."""
    timesteps = torch.as_tensor(timesteps, device=device)
    if timesteps.is_floating_point():
        timesteps = timesteps.round()
    timesteps = timesteps.long()
    alphas_cumprod = scheduler.alphas_cumprod.to(device=device, dtype=dtype)
    return alphas_cumprod[timesteps].clamp_min(_MIN_ALPHA_CUMPROD)


def _timesteps_device(timesteps) -> torch.device:
    return timesteps.device if isinstance(timesteps, torch.Tensor) else torch.device("cpu")


def predict_original_sample(
    scheduler,
    model_output: torch.Tensor,
    noisy_sample: torch.Tensor,
    timesteps: torch.Tensor | int | float,
) -> torch.Tensor:
    """Predicted clean sample x̂₀ for a batch, one noise level per sample.

    Matches `scheduler.step(...).pred_original_sample` (DDPM / DDIM, without its optional clipping or thresholding)
    and `scheduler.precondition_outputs(...)` (EDM), but accepts a different timestep for every sample, as training
    needs. No clipping is applied so that the spectral losses see the raw prediction and its full gradient.

    Args:
        scheduler (`SchedulerMixin`):
            `DDPMScheduler`, `DDIMScheduler` (or another VP scheduler with `alphas_cumprod`), `EDMEulerScheduler` or
            `EDMDPMSolverMultistepScheduler`. Its `config.prediction_type` selects the parametrisation.
        model_output (`torch.Tensor` of shape `[B, C, ...]`):
            The network output (ε̂, v̂ or x̂₀ for VP schedulers; the raw F_θ for EDM). For DDPM with a learned variance
            (`variance_type` "learned" / "learned_range") a `[B, 2C, ...]` output is split and its first half used.
        noisy_sample (`torch.Tensor` of shape `[B, C, ...]`):
            The noisy input x_t (VP) or x = x₀ + σ·ε (EDM, before `precondition_inputs`). Images `[B, C, H, W]` and
            waveforms `[B, C, T]` alike.
        timesteps (`torch.Tensor` of shape `[B]`, or a scalar):
            Integer timesteps t for VP schedulers; noise levels σ for EDM schedulers.

    Returns:
        `torch.Tensor` of shape `[B, C, ...]`: x̂₀, in float32 (float64 if the inputs are float64).
    """
    if noisy_sample.ndim < 2:
        raise ValueError(f"Expected noisy_sample of shape [B, C, ...], got shape {list(noisy_sample.shape)}.")
    prediction_type = getattr(getattr(scheduler, "config", None), "prediction_type", None)
    edm = is_edm_scheduler(scheduler)
    if not edm and not is_vp_scheduler(scheduler):
        raise _unsupported(scheduler)

    # 1. split a learned variance off the model output (as DDPMScheduler.step does)
    variance_type = getattr(scheduler.config, "variance_type", None)
    if (
        not edm
        and variance_type in ("learned", "learned_range")
        and model_output.ndim == noisy_sample.ndim
        and model_output.shape[1] == 2 * noisy_sample.shape[1]
    ):
        model_output = model_output[:, : noisy_sample.shape[1]]
    if model_output.shape != noisy_sample.shape:
        raise ValueError(
            f"Expected model_output of the noisy sample's shape {list(noisy_sample.shape)}, got"
            f" {list(model_output.shape)}."
        )

    dtype = compute_dtype(model_output, noisy_sample)
    device = noisy_sample.device
    batch_size = noisy_sample.shape[0]
    model_output = model_output.to(dtype)
    sample = noisy_sample.to(dtype)

    if edm:
        # 2. EDM denoiser D = c_skip·x + c_out·F, Table 1 of arXiv 2206.00364 (as EDMEulerScheduler.precondition_outputs)
        if prediction_type not in EDM_PREDICTION_TYPES:
            raise _unsupported(scheduler)
        sigma = per_sample(as_per_sample(timesteps, batch_size, device, dtype, _TIMESTEPS), noisy_sample)
        sigma_data = float(scheduler.config.sigma_data)
        c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
        c_out = sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
        if prediction_type == "v_prediction":
            c_out = -c_out
        return c_skip * sample + c_out * model_output

    # 3. VP: ᾱ_t per sample, broadcast to the sample's rank
    timesteps = as_per_sample(timesteps, batch_size, device, name=_TIMESTEPS)
    alpha_prod_t = per_sample(_alphas_cumprod(scheduler, timesteps, device, dtype), noisy_sample)
    if prediction_type not in VP_PREDICTION_TYPES:
        raise _unsupported(scheduler)
    # 4. x̂₀ from ε̂ (Eq. 15 of arXiv 2006.11239), v̂ (arXiv 2202.00512) or x̂₀ itself: the one function that the SAGD
    #    sampler uses too (it lives in its self-contained pipeline file)
    return predicted_original_sample(sample, model_output, alpha_prod_t, prediction_type)


def sigma_from_timesteps(scheduler, timesteps: torch.Tensor | int | float) -> torch.Tensor:
    """Noise level σ per sample, in the EDM sense (x/√ᾱ = x₀ + σ·ε for VP schedulers).

    Args:
        scheduler (`SchedulerMixin`): a supported scheduler (see `predict_original_sample`).
        timesteps (`torch.Tensor` of shape `[B]`, or a scalar): integer t (VP) or σ (EDM).

    Returns:
        `torch.Tensor`, same shape as `timesteps`, float32: √((1−ᾱ_t)/ᾱ_t) for VP schedulers, σ itself for EDM.
    """
    device = _timesteps_device(timesteps)
    if is_edm_scheduler(scheduler):
        sigma = torch.as_tensor(timesteps, device=device)
        return sigma.to(compute_dtype(sigma))
    if not is_vp_scheduler(scheduler):
        raise _unsupported(scheduler)
    alpha_prod_t = _alphas_cumprod(scheduler, timesteps, device, torch.float32)
    # 1. σ_t = √((1−ᾱ_t)/ᾱ_t), the VP ↔ VE correspondence of Table 1 of arXiv 2206.00364
    return ((1 - alpha_prod_t) / alpha_prod_t) ** 0.5


def snr(scheduler, timesteps: torch.Tensor | int | float) -> torch.Tensor:
    """Signal-to-noise ratio SNR = 1/σ² per sample (ᾱ_t/(1−ᾱ_t) for VP schedulers).

    Args:
        scheduler (`SchedulerMixin`): a supported scheduler (see `predict_original_sample`).
        timesteps (`torch.Tensor` of shape `[B]`, or a scalar): integer t (VP) or σ (EDM).

    Returns:
        `torch.Tensor`, same shape as `timesteps`, float32.
    """
    if is_edm_scheduler(scheduler):
        return sigma_from_timesteps(scheduler, timesteps) ** -2
    if not is_vp_scheduler(scheduler):
        raise _unsupported(scheduler)
    # 1. SNR(t) = ᾱ_t / (1 − ᾱ_t), arXiv 2303.09556 (computed directly, not via σ, for precision near t = 0)
    alpha_prod_t = _alphas_cumprod(scheduler, timesteps, _timesteps_device(timesteps), torch.float32)
    return alpha_prod_t / (1 - alpha_prod_t)


def edm_loss_weight(sigma: torch.Tensor | float, sigma_data: float = 0.5) -> torch.Tensor:
    """EDM loss weight λ(σ) = (σ²+σ_data²)/(σ·σ_data)², Table 1 of arXiv 2206.00364 (NVlabs `EDMLoss`).

    Args:
        sigma (`torch.Tensor` of any shape, or a scalar): noise levels.
        sigma_data (`float`, defaults to 0.5): standard deviation of the data.

    Returns:
        `torch.Tensor`, same shape as `sigma`.
    """
    sigma = torch.as_tensor(sigma)
    if not sigma.is_floating_point():
        sigma = sigma.float()
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
