"""Per-sample timestep weights and low-noise gates for the spectral terms (arXiv 2603.02447, Eq. 17).

The spectral losses are L1 distances on the predicted clean sample x̂₀. Since x̂₀ − x₀ = −σ·(ε̂ − ε), an L1 error on
x̂₀ is σ times the L1 error of ε̂: at high noise (σ up to ~157 for the linear DDPM schedule) the x̂₀ errors are huge and
carry no fine structure, at low noise they are small. A per-sample weight w(t) multiplies each unreduced spectral term
before the batch mean:

- "alpha_bar" (default): w = ᾱ_t = SNR/(1+SNR) = 1/(1+σ²). Bounded in (0, 1]: about 1 where the model commits to
  edges (σ < 1) and fading like 1/σ² at high noise, so the blurry high-noise x̂₀ do not drive the term;
- "sqrt_snr": w = √SNR = 1/σ, the exact ε-space equivalent of an L1 term on x̂₀ (‖x̂₀ − x₀‖₁/σ = ‖ε̂ − ε‖₁);
- "min_sqrt_snr": w = min(√SNR, γ), the same capped at γ so the nearly noise-free steps do not dominate (the L1
  analogue of Min-SNR-γ, arXiv 2303.09556);
- "constant": w = 1 (the paper's "unweighted" variant; dominated by the high-noise samples under ε-prediction);
- "edm": w = λ_EDM(σ) = (σ²+σ_data²)/(σ·σ_data)² (the paper's "weighted" variant, Table 1 of arXiv 2206.00364);
- "snr", "min_snr": w = SNR = 1/σ² and min(SNR, γ): the SQUARED-error forms (they turn ‖x̂₀ − x₀‖² into ‖ε̂ − ε‖²).
  On an L1 term they over-weight low noise (SNR is the square of the right factor); kept for comparison.

`low_noise_gate` applies a term only below a chosen noise level: at high noise x̂₀ is a blurry mean and the spectral
penalties mostly add gradient noise.
"""

from __future__ import annotations

import math

import torch

from .reconstruction import edm_loss_weight, is_edm_scheduler, sigma_from_timesteps, snr

WEIGHTINGS = ("alpha_bar", "sqrt_snr", "min_sqrt_snr", "constant", "edm", "snr", "min_snr")
DEFAULT_WEIGHTING = "alpha_bar"


def timestep_weight(
    kind: str,
    scheduler,
    timesteps: torch.Tensor | int | float,
    min_snr_gamma: float = 5.0,
) -> torch.Tensor:
    """Weight w(t) of a spectral term at each sample's noise level.

    Args:
        kind (`str`):
            One of `WEIGHTINGS` (see the module docstring); "alpha_bar" is the default of the training script.
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
    if kind not in WEIGHTINGS:
        raise ValueError(f"Unknown timestep weighting {kind!r}; expected one of {', '.join(WEIGHTINGS)}.")
    if kind in ("min_sqrt_snr", "min_snr") and not (math.isfinite(min_snr_gamma) and min_snr_gamma > 0):
        raise ValueError(f"Expected min_snr_gamma > 0 and finite, got {min_snr_gamma}.")
    if kind == "constant":
        # 1. the paper's unweighted objective L_diffusion + λ·L_S, Eq. 17 of arXiv 2603.02447
        return torch.ones_like(sigma_from_timesteps(scheduler, timesteps))
    if kind == "edm":
        # 2. λ(σ) = (σ² + σ_data²) / (σ·σ_data)², Table 1 of arXiv 2206.00364
        sigma = sigma_from_timesteps(scheduler, timesteps)
        return edm_loss_weight(sigma, float(getattr(scheduler.config, "sigma_data", 0.5)))
    signal_to_noise = snr(scheduler, timesteps)
    if kind == "alpha_bar":
        # 3. ᾱ_t = SNR / (1 + SNR) = 1 / (1 + σ²), bounded in [0, 1], written so that SNR = ∞ (σ = 0) gives 1
        return 1 / (1 + signal_to_noise.reciprocal())
    if kind == "sqrt_snr":
        # 4. √SNR = 1/σ: x̂₀ − x₀ = −σ·(ε̂ − ε), so ‖x̂₀ − x₀‖₁/σ = ‖ε̂ − ε‖₁ (the L1 analogue of arXiv 2303.09556)
        return signal_to_noise.sqrt()
    if kind == "min_sqrt_snr":
        # 5. min(√SNR, γ): the ε-space L1 factor, capped at γ near t = 0
        return signal_to_noise.sqrt().clamp(max=min_snr_gamma)
    if kind == "snr":
        # 6. SNR = 1/σ², the squared-error factor: SNR·‖x̂₀ − x₀‖² = ‖ε̂ − ε‖² (arXiv 2303.09556)
        return signal_to_noise
    # 7. Min-SNR-γ weight min(SNR, γ), the squared-error form of arXiv 2303.09556
    return signal_to_noise.clamp(max=min_snr_gamma)


def low_noise_gate(
    scheduler,
    timesteps: torch.Tensor | int | float,
    t_max: int | None = None,
    sigma_max: float | None = None,
) -> torch.Tensor:
    """0/1 mask that keeps a spectral term only at low noise.

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
    gate = torch.ones_like(sigma, dtype=torch.float32)
    if t_max is not None:
        if is_edm_scheduler(scheduler):
            raise ValueError(
                f"t_max applies to integer-timestep schedulers (DDPM / DDIM); {type(scheduler).__name__} is indexed by"
                " σ, use sigma_max instead."
            )
        t = torch.as_tensor(timesteps, device=sigma.device)
        gate = gate * (t <= t_max).to(gate.dtype)
    if sigma_max is not None:
        if not sigma_max > 0:
            raise ValueError(f"Expected sigma_max > 0, got {sigma_max}.")
        gate = gate * (sigma <= sigma_max).to(gate.dtype)
    return gate
