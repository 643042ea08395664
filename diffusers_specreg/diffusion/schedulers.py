"""x̂₀, σ and SNR from a Diffusers scheduler: the facade for users' own training loops.

A loop that holds a scheduler and a batch of timesteps, rather than an `Objective` and a `NoisyBatch`, calls these
functions (README "In your own training loop"). This module is the only place that looks at a scheduler's type; the
maths lives in `diffusion.ddpm` (VP), `diffusion.edm` and `diffusion.weighting`.

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

from ..tensors import as_per_sample, check_output_shape, compute_dtype
from .base import NoiseLevels
from .ddpm import (
    VP_PREDICTION_TYPES,
    alpha_bar_at,
    drop_learned_variance,
    vp_noise_levels,
    vp_sigma,
    vp_snr,
    vp_x0_hat,
)
from .edm import EDM_PREDICTION_TYPES, edm_noise_levels, edm_x0_hat
from .weighting import check_weighting, noise_gate, spectral_weight

SUPPORTED_SCHEDULERS = (
    "DDPMScheduler",
    "DDIMScheduler",
    "EDMEulerScheduler",
    "EDMDPMSolverMultistepScheduler",
)


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


def unsupported_scheduler_error(scheduler) -> ValueError:
    """The `ValueError` for a scheduler (or prediction type) this package cannot reconstruct x̂₀ for.

    Args:
        scheduler (`SchedulerMixin` or any): the rejected scheduler.

    Returns:
        `ValueError`: names the supported schedulers and prediction types.
    """
    return ValueError(
        f"Scheduler {type(scheduler).__name__} is not supported. Supported schedulers: {', '.join(SUPPORTED_SCHEDULERS)}"
        f" (or any variance-preserving scheduler with `alphas_cumprod` and `config.prediction_type`); supported"
        f" prediction types: {', '.join(VP_PREDICTION_TYPES)} for DDPM/DDIM and {', '.join(EDM_PREDICTION_TYPES)} for"
        " EDM."
    )


def _timesteps_device(timesteps) -> torch.device:
    return timesteps.device if isinstance(timesteps, torch.Tensor) else torch.device("cpu")


# What the per-sample noise levels are called in shape errors
_TIMESTEPS = "timesteps / sigmas"


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
        timesteps (`torch.Tensor` of shape `[B]` or `[B, 1, ..., 1]`, or a scalar):
            Integer timesteps t for VP schedulers; noise levels σ for EDM schedulers.

    Returns:
        `torch.Tensor` of shape `[B, C, ...]`: x̂₀, in float32 (float64 if the inputs are float64).
    """
    if noisy_sample.ndim < 2:
        raise ValueError(f"Expected noisy_sample of shape [B, C, ...], got shape {list(noisy_sample.shape)}.")
    prediction_type = getattr(getattr(scheduler, "config", None), "prediction_type", None)
    if is_edm_scheduler(scheduler):
        # 1. EDM denoiser D = c_skip·x + c_out·F, Table 1 of arXiv 2206.00364 (the scheduler's precondition_outputs)
        check_output_shape(model_output, noisy_sample)
        if prediction_type not in EDM_PREDICTION_TYPES:
            raise unsupported_scheduler_error(scheduler)
        return edm_x0_hat(scheduler, model_output, noisy_sample, timesteps)
    if not is_vp_scheduler(scheduler):
        raise unsupported_scheduler_error(scheduler)
    # 2. VP: split a learned variance off (as DDPMScheduler.step does), then ᾱ_t per sample
    model_output = drop_learned_variance(model_output, noisy_sample, getattr(scheduler.config, "variance_type", None))
    check_output_shape(model_output, noisy_sample)
    device, dtype = noisy_sample.device, compute_dtype(model_output, noisy_sample)
    timesteps = as_per_sample(timesteps, noisy_sample.shape[0], device, name=_TIMESTEPS)
    alpha_bar = alpha_bar_at(scheduler.alphas_cumprod, timesteps, device, dtype)
    if prediction_type not in VP_PREDICTION_TYPES:
        raise unsupported_scheduler_error(scheduler)
    # 3. x̂₀ from ε̂ (Eq. 15 of arXiv 2006.11239), v̂ (arXiv 2202.00512) or x̂₀ itself
    return vp_x0_hat(model_output, noisy_sample, alpha_bar, prediction_type)


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
        raise unsupported_scheduler_error(scheduler)
    # 1. σ_t = √((1−ᾱ_t)/ᾱ_t), the VP ↔ VE correspondence of Table 1 of arXiv 2206.00364
    return vp_sigma(alpha_bar_at(scheduler.alphas_cumprod, timesteps, device))


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
        raise unsupported_scheduler_error(scheduler)
    # 1. SNR(t) = ᾱ_t / (1 − ᾱ_t), arXiv 2303.09556 (computed directly, not via σ, for precision near t = 0)
    return vp_snr(alpha_bar_at(scheduler.alphas_cumprod, timesteps, _timesteps_device(timesteps)))


def timestep_weight(
    kind: str,
    scheduler,
    timesteps: torch.Tensor | int | float,
    min_snr_gamma: float = 5.0,
) -> torch.Tensor:
    """Weight w(t) of a spectral term at each sample's noise level (`diffusion.weighting.spectral_weight`).

    Args:
        kind (`str`):
            One of `WEIGHTINGS` (see `diffusion.weighting`); "alpha_bar" is the default of the training script.
        scheduler (`SchedulerMixin`):
            A scheduler supported by `predict_original_sample`; for "edm", σ_data is `scheduler.config.sigma_data`
            when present, else 0.5.
        timesteps (`torch.Tensor` of shape `[B]`, or a scalar):
            Integer timesteps t (DDPM / DDIM) or noise levels σ (EDM).
        min_snr_gamma (`float`, defaults to 5.0):
            The cap γ of "min_sqrt_snr" (on √SNR, so γ = 5 caps SNR at 25) and of "min_snr" (on SNR); unused by the
            others.

    Returns:
        `torch.Tensor`, same shape as `timesteps` (`[B]`), float32.
    """
    check_weighting(kind, min_snr_gamma)
    return spectral_weight(
        kind,
        sigma_from_timesteps(scheduler, timesteps),
        snr(scheduler, timesteps),
        min_snr_gamma,
        float(getattr(scheduler.config, "sigma_data", 0.5)),
    )


def low_noise_gate(
    scheduler,
    timesteps: torch.Tensor | int | float,
    t_max: int | None = None,
    sigma_max: float | None = None,
) -> torch.Tensor:
    """0/1 mask that keeps a spectral term only at low noise (`diffusion.weighting.noise_gate`).

    Args:
        scheduler (`SchedulerMixin`):
            A scheduler supported by `predict_original_sample`.
        timesteps (`torch.Tensor` of shape `[B]`, or a scalar):
            Integer timesteps t (DDPM / DDIM) or noise levels σ (EDM).
        t_max (`int`, *optional*):
            Keep samples with t <= t_max (DDPM / DDIM only; an error for EDM schedulers, use `sigma_max`).
        sigma_max (`float`, *optional*):
            Keep samples with σ <= sigma_max (σ = √((1−ᾱ)/ᾱ) for DDPM / DDIM). When both bounds are given both apply.

    Returns:
        `torch.Tensor`, same shape as `timesteps` (`[B]`), float32 of 0 and 1; all ones when neither bound is given.
    """
    sigma = sigma_from_timesteps(scheduler, timesteps)
    if t_max is not None and is_edm_scheduler(scheduler):
        raise ValueError(
            f"t_max applies to integer-timestep schedulers (DDPM / DDIM); {type(scheduler).__name__} is indexed by"
            " σ, use sigma_max instead."
        )
    # the gate reads t and σ only; SNR = σ⁻² completes the levels
    levels = NoiseLevels(t=torch.as_tensor(timesteps, device=sigma.device), sigma=sigma, snr=sigma**-2)
    return noise_gate(levels, t_max, sigma_max)


def noise_levels(
    scheduler, timesteps: torch.Tensor | int | float, batch_size: int, device: torch.device | None = None
) -> NoiseLevels:
    """The `NoiseLevels` of a batch indexed the scheduler's way (what an `Objective` puts on its `NoisyBatch`).

    Args:
        scheduler (`SchedulerMixin`): a supported scheduler (see `predict_original_sample`).
        timesteps (`torch.Tensor` of shape `[B]` or `[B, 1, ..., 1]`, or a scalar): integer t (VP) or σ (EDM).
        batch_size (`int`): B; a scalar is expanded to it.
        device (`torch.device`, *optional*): where to compute; that of `timesteps` (CPU for a number) if `None`.

    Returns:
        `NoiseLevels` with `[B]` fields: VP t, σ, SNR and ᾱ_t (`vp_noise_levels`), or EDM σ (`edm_noise_levels`);
        `sigma_data` is the scheduler's `config.sigma_data` when it has one, else 0.5.
    """
    timesteps = as_per_sample(timesteps, batch_size, device, name=_TIMESTEPS)
    sigma_data = float(getattr(getattr(scheduler, "config", None), "sigma_data", 0.5))
    if is_edm_scheduler(scheduler):
        return edm_noise_levels(timesteps, sigma_data)
    if not is_vp_scheduler(scheduler):
        raise unsupported_scheduler_error(scheduler)
    return vp_noise_levels(scheduler.alphas_cumprod, timesteps, sigma_data)
