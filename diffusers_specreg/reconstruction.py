"""Kept for old imports: x̂₀, σ and SNR from a scheduler now live in `diffusers_specreg.diffusion`.

The scheduler facade (`predict_original_sample`, `sigma_from_timesteps`, `snr`, `is_edm_scheduler`,
`is_vp_scheduler`, `SUPPORTED_SCHEDULERS`) is `diffusion.schedulers`; the VP maths is `diffusion.ddpm`, the EDM
denoiser and `edm_loss_weight` are `diffusion.edm`.
"""

from .diffusion.ddpm import VP_PREDICTION_TYPES
from .diffusion.edm import EDM_PREDICTION_TYPES, edm_loss_weight
from .diffusion.schedulers import (
    SUPPORTED_SCHEDULERS,
    is_edm_scheduler,
    is_vp_scheduler,
    predict_original_sample,
    sigma_from_timesteps,
    snr,
)

__all__ = [
    "EDM_PREDICTION_TYPES",
    "SUPPORTED_SCHEDULERS",
    "VP_PREDICTION_TYPES",
    "edm_loss_weight",
    "is_edm_scheduler",
    "is_vp_scheduler",
    "predict_original_sample",
    "sigma_from_timesteps",
    "snr",
]
