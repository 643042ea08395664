"""Kept for old imports: the spectral-term weightings now live in `diffusers_specreg.diffusion`.

`WEIGHTINGS`, `DEFAULT_WEIGHTING`, `spectral_weight(kind, sigma, snr, ...)` and `noise_gate(levels, ...)` (functions of
σ and SNR) are in `diffusion.weighting`; the scheduler forms `timestep_weight` and `low_noise_gate` are in
`diffusion.schedulers`.
"""

from .diffusion.schedulers import low_noise_gate, timestep_weight
from .diffusion.weighting import DEFAULT_WEIGHTING, WEIGHTINGS, noise_gate, spectral_weight

__all__ = ["DEFAULT_WEIGHTING", "WEIGHTINGS", "low_noise_gate", "noise_gate", "spectral_weight", "timestep_weight"]
