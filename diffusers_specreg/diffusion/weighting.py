"""Per-sample weights and low-noise gates of the spectral terms, as functions of σ and SNR (arXiv 2603.02447, Eq. 17).

The spectral losses are L1 distances on the predicted clean sample x̂₀. Since x̂₀ − x₀ = −σ·(ε̂ − ε), an L1 error on
x̂₀ is σ times the L1 error of ε̂: at high noise (σ up to ~157 for the linear DDPM schedule) the x̂₀ errors are huge and
carry no fine structure, at low noise they are small. A per-sample weight w multiplies each unreduced spectral term
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

`noise_gate` applies a term only below a chosen noise level: at high noise x̂₀ is a blurry mean and the spectral
penalties mostly add gradient noise. No function here takes a scheduler: the scheduler forms `timestep_weight` and
`low_noise_gate` are in `diffusion.schedulers`.
"""

from __future__ import annotations

import math

import torch

from .base import NoiseLevels
from .edm import edm_loss_weight

WEIGHTINGS = ("alpha_bar", "sqrt_snr", "min_sqrt_snr", "constant", "edm", "snr", "min_snr")
DEFAULT_WEIGHTING = "alpha_bar"


def check_weighting(kind: str, min_snr_gamma: float = 5.0) -> None:
    """Raise a `ValueError` for an unknown weighting or an invalid cap γ.

    Args:
        kind (`str`): one of `WEIGHTINGS`.
        min_snr_gamma (`float`, defaults to 5.0): the cap of "min_sqrt_snr" and "min_snr", > 0 and finite.
    """
    if kind not in WEIGHTINGS:
        raise ValueError(f"Unknown timestep weighting {kind!r}; expected one of {', '.join(WEIGHTINGS)}.")
    if kind in ("min_sqrt_snr", "min_snr") and not (math.isfinite(min_snr_gamma) and min_snr_gamma > 0):
        raise ValueError(f"Expected min_snr_gamma > 0 and finite, got {min_snr_gamma}.")


def spectral_weight(
    kind: str,
    sigma: torch.Tensor,
    snr: torch.Tensor,
    min_snr_gamma: float = 5.0,
    sigma_data: float = 0.5,
) -> torch.Tensor:
    """Weight w of a spectral term at each sample's noise level (see the module docstring).

    Args:
        kind (`str`):
            One of `WEIGHTINGS`; "alpha_bar" is the default of the training script.
        sigma (`torch.Tensor` of shape `[B]`):
            float32 variance-exploding noise level σ per sample (`NoiseLevels.sigma`).
        snr (`torch.Tensor` of shape `[B]`):
            float32 SNR per sample (`NoiseLevels.snr`; ᾱ_t/(1−ᾱ_t) computed directly for VP objectives).
        min_snr_gamma (`float`, defaults to 5.0):
            The cap γ of "min_sqrt_snr" (on √SNR, so γ = 5 caps SNR at 25) and of "min_snr" (on SNR); unused by the
            others.
        sigma_data (`float`, defaults to 0.5):
            σ_data of "edm".

    Returns:
        `torch.Tensor` of the shape of `sigma` (`[B]`), float32.
    """
    check_weighting(kind, min_snr_gamma)
    if kind == "constant":
        # 1. the paper's unweighted objective L_diffusion + λ·L_S, Eq. 17 of arXiv 2603.02447
        return torch.ones_like(sigma)
    if kind == "edm":
        # 2. λ(σ) = (σ² + σ_data²) / (σ·σ_data)², Table 1 of arXiv 2206.00364
        return edm_loss_weight(sigma, sigma_data)
    if kind == "alpha_bar":
        # 3. ᾱ_t = SNR / (1 + SNR) = 1 / (1 + σ²), bounded in [0, 1], written so that SNR = ∞ (σ = 0) gives 1
        return 1 / (1 + snr.reciprocal())
    if kind == "sqrt_snr":
        # 4. √SNR = 1/σ: x̂₀ − x₀ = −σ·(ε̂ − ε), so ‖x̂₀ − x₀‖₁/σ = ‖ε̂ − ε‖₁ (the L1 analogue of arXiv 2303.09556)
        return snr.sqrt()
    if kind == "min_sqrt_snr":
        # 5. min(√SNR, γ): the ε-space L1 factor, capped at γ near t = 0
        return snr.sqrt().clamp(max=min_snr_gamma)
    if kind == "snr":
        # 6. SNR = 1/σ², the squared-error factor: SNR·‖x̂₀ − x₀‖² = ‖ε̂ − ε‖² (arXiv 2303.09556)
        return snr
    # 7. Min-SNR-γ weight min(SNR, γ), the squared-error form of arXiv 2303.09556
    return snr.clamp(max=min_snr_gamma)


def noise_gate(levels: NoiseLevels, t_max: int | None = None, sigma_max: float | None = None) -> torch.Tensor:
    """0/1 mask that keeps a spectral term only at low noise.

    Args:
        levels (`NoiseLevels`):
            The batch's noise levels; `t` is compared with `t_max` and `sigma` with `sigma_max`.
        t_max (`int`, *optional*):
            Keep samples with t <= t_max. Meant for integer timesteps; the callers reject it for σ-indexed
            objectives (EDM), where `sigma_max` applies.
        sigma_max (`float`, *optional*):
            Keep samples with σ <= sigma_max (σ = √((1−ᾱ)/ᾱ) for DDPM / DDIM). When both bounds are given both apply.

    Returns:
        `torch.Tensor` of the shape of `levels.sigma` (`[B]`), float32 of 0 and 1; all ones when neither bound is
        given.
    """
    sigma = levels.sigma
    gate = torch.ones_like(sigma, dtype=torch.float32)
    if t_max is not None:
        t = torch.as_tensor(levels.t, device=sigma.device)
        gate = gate * (t <= t_max).to(gate.dtype)
    if sigma_max is not None:
        if not sigma_max > 0:
            raise ValueError(f"Expected sigma_max > 0, got {sigma_max}.")
        gate = gate * (sigma <= sigma_max).to(gate.dtype)
    return gate
