"""Diffusion training objectives: how a clean batch is noised, what the UNet sees, and the base loss.

The whole parametrisation lives here so the training loop has no `if prediction_type == ...` branches:

    batch = objective.noise_batch(clean)
    model_output = unet(batch.model_input, batch.model_timesteps).sample
    base = objective.base_loss(model_output, batch)              # [B]
    terms = regularizer(objective.scheduler, model_output, batch.noisy, batch.timesteps, clean, base)

`DDPMObjective` covers DDPM and DDIM (they share training, arXiv 2006.11239 / 2010.02502); `EDMObjective` is the
preconditioned denoiser of Karras et al. 2022 (arXiv 2206.00364).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, EDMEulerScheduler

from .reconstruction import edm_loss_weight, predict_original_sample
from .tensors import per_sample

NoiseFn = Callable[[tuple, torch.Generator | None, torch.device], torch.Tensor]


def white_noise(shape: tuple, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """N(0, I) noise of `shape` (the default forward noise)."""
    return torch.randn(shape, generator=generator, device=device)


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each sample, in float32: `[B, ...]` -> `[B]`."""
    return F.mse_loss(prediction.float(), target.float(), reduction="none").flatten(1).mean(1)


@dataclass
class NoisyBatch:
    """One noised training batch.

    Args:
        clean (`torch.Tensor`): x0, `[B, C, H, W]` (or `[B, C, T]`).
        noise (`torch.Tensor`): the forward noise, same shape.
        noisy (`torch.Tensor`): x_t, same shape.
        model_input (`torch.Tensor`): what the UNet receives (x_t, or c_in x_t for EDM).
        model_timesteps (`torch.Tensor`): the UNet's timestep argument `[B]` (t, or c_noise(σ) for EDM).
        timesteps (`torch.Tensor`): `[B]` integer t (DDPM) or σ (EDM): what `predict_original_sample` and the
            timestep weightings take.
        target (`torch.Tensor`): the regression target of the base loss.
    """

    clean: torch.Tensor
    noise: torch.Tensor
    noisy: torch.Tensor
    model_input: torch.Tensor
    model_timesteps: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor


class DDPMObjective:
    """Training objective of Diffusers' `train_unconditional.py`, with any prediction type and forward noise.

    Args:
        scheduler (`DDPMScheduler`): its `config.prediction_type` ("epsilon", "v_prediction" or "sample") sets
            the target.
        noise_fn (`callable`, *optional*): `(shape, generator, device) -> noise`; white noise by default. Coloured
            noise (arXiv 2510.09660) plugs in here; the target of epsilon prediction is then the coloured noise.
    """

    formulation = "ddpm"

    def __init__(self, scheduler: DDPMScheduler, noise_fn: NoiseFn | None = None):
        prediction_type = scheduler.config.prediction_type
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(
                f"prediction_type must be 'epsilon', 'v_prediction' or 'sample', got {prediction_type!r}."
            )
        self.scheduler = scheduler
        self.prediction_type = prediction_type
        self.noise_fn = noise_fn or white_noise

    def noise_batch(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> NoisyBatch:
        """Draw t ~ U{0, ..., T-1} and noise, and build x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε (Eq. 4, 2006.11239)."""
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
        return NoisyBatch(clean, noise, noisy, noisy, t, t, target)

    def base_loss(self, model_output: torch.Tensor, batch: NoisyBatch) -> torch.Tensor:
        """Per-sample MSE `[B]`; for "sample" prediction weighted by SNR(t) = ᾱ_t / (1 - ᾱ_t) as the anchor does."""
        loss = per_sample_mse(model_output, batch.target)
        if self.prediction_type == "sample":
            alphas_cumprod = self.scheduler.alphas_cumprod.to(loss.device)[batch.timesteps]
            loss = loss * alphas_cumprod / (1 - alphas_cumprod)
        return loss


class EDMObjective:
    """The EDM training objective (Karras et al. 2022, arXiv 2206.00364, Table 1 and Eq. 2).

    σ is log-normal, ln σ ~ N(P_mean, P_std²); the UNet F receives c_in·x and c_noise(σ); the denoiser is
    D = c_skip·x + c_out·F and the loss is λ(σ)·||D - x0||² with λ(σ) = (σ² + σ_data²) / (σ·σ_data)².

    Args:
        scheduler (`EDMEulerScheduler`): supplies σ_data and the preconditioning.
        p_mean (`float`, defaults to -1.2): mean of ln σ.
        p_std (`float`, defaults to 1.2): standard deviation of ln σ.
        noise_fn (`callable`, *optional*): forward noise, white by default.
    """

    formulation = "edm"

    def __init__(
        self, scheduler: EDMEulerScheduler, p_mean: float = -1.2, p_std: float = 1.2, noise_fn: NoiseFn | None = None
    ):
        self.scheduler = scheduler
        self.sigma_data = float(scheduler.config.sigma_data)
        self.p_mean, self.p_std = p_mean, p_std
        self.noise_fn = noise_fn or white_noise

    def noise_batch(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> NoisyBatch:
        """x = x0 + σ·n with ln σ ~ N(P_mean, P_std²)."""
        batch_size, device = clean.shape[0], clean.device
        sigma = (torch.randn(batch_size, generator=generator, device=device) * self.p_std + self.p_mean).exp()
        noise = self.noise_fn(tuple(clean.shape), generator, device).to(clean.dtype)
        noisy = clean + per_sample(sigma, clean) * noise
        # 1. c_in = 1 / sqrt(σ² + σ_data²), c_noise = ln(σ) / 4 (Table 1 of arXiv 2206.00364)
        model_input = self.scheduler.precondition_inputs(noisy, per_sample(sigma, clean))
        model_timesteps = self.scheduler.precondition_noise(sigma)
        return NoisyBatch(clean, noise, noisy, model_input, model_timesteps, sigma, clean)

    def base_loss(self, model_output: torch.Tensor, batch: NoisyBatch) -> torch.Tensor:
        """λ(σ)·mean((D - x0)²) per sample `[B]`."""
        denoised = predict_original_sample(self.scheduler, model_output, batch.noisy, batch.timesteps)
        sigma = batch.timesteps.float()
        return edm_loss_weight(sigma, self.sigma_data) * per_sample_mse(denoised, batch.clean)


def build_objective(
    formulation: str,
    scheduler,
    noise_fn: NoiseFn | None = None,
    edm_p_mean: float = -1.2,
    edm_p_std: float = 1.2,
):
    """The objective for `formulation` in {"ddpm", "edm"} ("ddim" trains exactly like "ddpm")."""
    if formulation in ("ddpm", "ddim"):
        return DDPMObjective(scheduler, noise_fn)
    if formulation == "edm":
        return EDMObjective(scheduler, edm_p_mean, edm_p_std, noise_fn)
    raise ValueError(f"formulation must be 'ddpm', 'ddim' or 'edm', got {formulation!r}.")
