"""Diffusion objectives: one file per objective, the protocol they share, and the scheduler facade.

- `base`: `NoiseLevels`, `NoisyBatch`, the `Objective` protocol, `per_sample_mse`, `white_noise`;
- `ddpm`: the variance-preserving maths (ᾱ_t, σ, SNR, x̂₀) and `DDPMObjective`;
- `edm`: EDM's denoiser through the scheduler's preconditioning, its loss weight, and `EDMObjective`;
- `flow`: rectified flow (flow matching) as Diffusers' SD3 / Flux scripts train it, and `FlowObjective`;
- `schedulers`: `predict_original_sample`, `sigma_from_timesteps` and `snr` from a scheduler, for users' own loops;
- `registry`: the objectives by name (`build_objective`).
"""

from .base import NoiseLevels, NoisyBatch, Objective, per_sample_mse, white_noise
from .ddpm import DDPMObjective
from .edm import EDMObjective
from .flow import FlowObjective
from .registry import build_objective
from .schedulers import predict_original_sample

__all__ = [
    "DDPMObjective",
    "EDMObjective",
    "FlowObjective",
    "NoiseLevels",
    "NoisyBatch",
    "Objective",
    "build_objective",
    "per_sample_mse",
    "predict_original_sample",
    "white_noise",
]
