"""Kept for old imports: the diffusion objectives now live in `diffusers_specreg.diffusion`.

`NoisyBatch`, `NoiseFn`, `white_noise` and `per_sample_mse` are in `diffusion.base`, `DDPMObjective` in
`diffusion.ddpm`, `EDMObjective` in `diffusion.edm` and `build_objective` in `diffusion.registry`.
"""

from .diffusion.base import NoiseFn, NoiseLevels, NoisyBatch, per_sample_mse, white_noise
from .diffusion.ddpm import DDPMObjective
from .diffusion.edm import EDMObjective
from .diffusion.registry import build_objective

__all__ = [
    "DDPMObjective",
    "EDMObjective",
    "NoiseFn",
    "NoiseLevels",
    "NoisyBatch",
    "build_objective",
    "per_sample_mse",
    "white_noise",
]
