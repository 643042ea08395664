"""Per-sample timestep weights and low-noise gates for the spectral terms (arXiv 2603.02447, Eq. 17).

The spectral losses are computed on the predicted clean sample x̂₀, whose error grows like σ·(error of ε̂) at high
noise. A per-sample weight w(t) multiplies each unreduced spectral term before the batch mean:

- "constant": w = 1 (the paper's "unweighted" variant);
- "edm": w = λ_EDM(σ) = (σ²+σ_data²)/(σ·σ_data)² (the paper's "weighted" variant, Table 1 of arXiv 2206.00364);
- "snr": w = SNR = 1/σ², which turns an x̂₀-space squared error into the ε-space one (x̂₀ − x₀ = −σ·(ε̂ − ε));
- "min_snr": w = min(SNR, γ), the Min-SNR-γ weight for an x̂₀-space loss (arXiv 2303.09556).

`low_noise_gate` applies a term only below a chosen noise level: at high noise x̂₀ is a blurry mean and the spectral
penalties mostly add gradient noise.
"""

from __future__ import annotations

import math

import torch

from .reconstruction import is_edm_scheduler, sigma_from_timesteps, snr

WEIGHTINGS = ("constant", "edm", "snr", "min_snr")


def timestep_weight(
    kind: str,
    scheduler,
    timesteps: torch.Tensor | int | float,
    min_snr_gamma: float = 5.0,
) -> torch.Tensor:
    """Weight w(t) of a spectral term at each sample's noise level.

    Args:
        kind (`str`):
            One of `WEIGHTINGS`: "constant", "edm", "snr" or "min_snr" (see the module docstring).
        scheduler (`SchedulerMixin`):
            A scheduler supported by `predict_original_sample`; for "edm", σ_data is `scheduler.config.sigma_data`
            when present, else 0.5.
        timesteps (`torch.Tensor` of shape `[B]`, or a scalar):
            Integer timesteps t (DDPM / DDIM) or noise levels σ (EDM).
        min_snr_gamma (`float`, defaults to 5.0):
            γ of Min-SNR-γ; used only by "min_snr".

    Returns:
        `torch.Tensor`, same shape as `timesteps` (`[B]`), float32.
    """
    if kind not in WEIGHTINGS:
        raise ValueError(f"Unknown timestep weighting {kind!r}; expected one of {', '.join(WEIGHTINGS)}.")
    if kind == "constant":
        # 1. the paper's unweighted objective L_diffusion + λ·L_S, Eq. 17 of arXiv 2603.02447
        return torch.ones_like(sigma_from_timesteps(scheduler, timesteps))
    if kind == "edm":
        # 2. λ(σ) = (σ² + σ_data²) / (σ·σ_data)², Table 1 of arXiv 2206.00364
        sigma = sigma_from_timesteps(scheduler, timesteps)
        sigma_data = float(getattr(scheduler.config, "sigma_data", 0.5))
        return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    signal_to_noise = snr(scheduler, timesteps)
    if kind == "snr":
        # 3. SNR = 1/σ²: since x̂₀ − x₀ = −σ·(ε̂ − ε), SNR·‖x̂₀ − x₀‖² = ‖ε̂ − ε‖² (Min-SNR, arXiv 2303.09556)
        return signal_to_noise
    # 4. Min-SNR-γ weight min(SNR, γ) for an x̂₀-space loss, arXiv 2303.09556
    if not (math.isfinite(min_snr_gamma) and min_snr_gamma > 0):
        raise ValueError(f"Expected min_snr_gamma > 0 and finite, got {min_snr_gamma}.")
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
