"""The EDM objective: the preconditioned denoiser of Karras et al. 2022 (arXiv 2206.00364, Table 1 and Eq. 2).

EDM is indexed by the noise level σ itself (x = x₀ + σ·ε). Its preconditioning (c_in, c_noise, c_skip, c_out) has one
home: Diffusers' `EDMEulerScheduler.precondition_inputs / precondition_noise / precondition_outputs`, which
`pipelines/pipeline_edm.py` calls when sampling and this module calls when training. No other module of the package
writes c_skip or c_out.
"""

from __future__ import annotations

import torch
from diffusers import EDMEulerScheduler

from ..tensors import as_per_sample, check_output_shape, compute_dtype, per_sample
from .base import (
    NoiseFn,
    NoiseLevels,
    NoisyBatch,
    Option,
    SchedulerSettings,
    check_positional_time_embedding,
    per_sample_mse,
    white_noise,
)
from .samplers import PipelineSpec, same_pipeline

EDM_PREDICTION_TYPES = ("epsilon", "v_prediction")


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


def edm_noise_levels(sigma: torch.Tensor, sigma_data: float = 0.5) -> NoiseLevels:
    """The noise levels of EDM noise levels σ: `t = σ`, `sigma = σ`, `snr = σ⁻²`, no ᾱ.

    Args:
        sigma (`torch.Tensor` of shape `[B]`): σ per sample.
        sigma_data (`float`, defaults to 0.5): the scheduler's `config.sigma_data`.

    Returns:
        `NoiseLevels` with float32 `sigma` and `snr` (float64 kept).
    """
    sigma_float = sigma.to(compute_dtype(sigma))
    return NoiseLevels(t=sigma, sigma=sigma_float, snr=sigma_float**-2, sigma_data=sigma_data)


def edm_x0_hat(
    scheduler, model_output: torch.Tensor, noisy_sample: torch.Tensor, sigma: torch.Tensor | float
) -> torch.Tensor:
    """The EDM denoiser D = c_skip(σ)·x + c_out(σ)·F_θ, one σ per sample, by the scheduler's `precondition_outputs`.

    Args:
        scheduler (`EDMEulerScheduler` or `EDMDPMSolverMultistepScheduler`):
            Supplies σ_data and, through `config.prediction_type` ("epsilon" or "v_prediction"), the sign of c_out.
        model_output (`torch.Tensor` of shape `[B, C, ...]`): the raw network output F_θ.
        noisy_sample (`torch.Tensor` of shape `[B, C, ...]`): x = x₀ + σ·ε, before `precondition_inputs`.
        sigma (`torch.Tensor` of shape `[B]` or `[B, 1, ..., 1]`, or a scalar): σ per sample.

    Returns:
        `torch.Tensor` of shape `[B, C, ...]`: x̂₀ in float32 (float64 if the inputs are float64).
    """
    prediction_type = scheduler.config.prediction_type
    if prediction_type not in EDM_PREDICTION_TYPES:
        raise ValueError(f"EDM supports prediction_type {' or '.join(EDM_PREDICTION_TYPES)}, got {prediction_type!r}.")
    check_output_shape(model_output, noisy_sample)
    dtype = compute_dtype(model_output, noisy_sample)
    sigma = as_per_sample(sigma, noisy_sample.shape[0], noisy_sample.device, dtype, name="timesteps / sigmas")
    # 1. D = c_skip·x + c_out·F with c_skip = σ_data²/(σ²+σ_data²), c_out = ±σ·σ_data/√(σ²+σ_data²) (Table 1)
    return scheduler.precondition_outputs(
        noisy_sample.to(dtype), model_output.to(dtype), per_sample(sigma, noisy_sample)
    )


def edm_scheduler(settings: SchedulerSettings) -> EDMEulerScheduler:
    """The training `EDMEulerScheduler` with `settings.sigma_data` and `settings.prediction_type`."""
    return EDMEulerScheduler(sigma_data=settings.sigma_data, prediction_type=settings.prediction_type)


def edm_pipeline(unet, scheduler, spectrum=None, mel=None, vae=None):
    """The saved `EDMPipeline` of `pipelines/pipeline_edm.py` (`spectrum`, `mel` and `vae` are not used)."""
    from diffusers_specreg.pipelines import EDMPipeline

    return EDMPipeline(unet=unet, scheduler=scheduler)


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

    name = "edm"
    formulation = "edm"
    other_names = ()
    prediction_types = EDM_PREDICTION_TYPES
    integer_timesteps = False
    supports_noise_spectrum = False  # the EDM sampler draws white noise
    supports_audio = False  # the AudioDiffusionPipeline samples DDPM/DDIM
    # not in run_settings.INCOMPATIBLE: a resumed run may change them
    options = (
        Option("edm_p_mean", float, -1.2, "Mean of ln σ of the EDM training noise levels.", "p_mean", "compatible"),
        Option("edm_p_std", float, 1.2, "Standard deviation of ln σ.", "p_std", "compatible"),
    )
    # the saved EDMPipeline (pipelines/pipeline_edm.py, 40 steps by default) is its own fast sampler
    pipeline = PipelineSpec(
        "EDMPipeline",
        edm_pipeline,
        same_pipeline,
        pipeline_file="pipeline_edm.py",
        sample_steps=40,
        tags=("edm",),
        citations=("2206.00364",),
    )

    def __init__(
        self, scheduler: EDMEulerScheduler, p_mean: float = -1.2, p_std: float = 1.2, noise_fn: NoiseFn | None = None
    ):
        self.scheduler = scheduler
        self.sigma_data = float(scheduler.config.sigma_data)
        self.p_mean, self.p_std = p_mean, p_std
        self.noise_fn = noise_fn or white_noise

    @classmethod
    def make_scheduler(cls, settings: SchedulerSettings) -> EDMEulerScheduler:
        """The training noise scheduler (`edm_scheduler`)."""
        return edm_scheduler(settings)

    @classmethod
    def check_model_config(cls, config: dict) -> None:
        """The UNet embeds its noise label c_noise(σ) with `time_embedding_type` "positional" (`EDMPipeline` refuses
        any other); raises `ValueError` otherwise."""
        check_positional_time_embedding(config, cls.name, "c_noise(σ) = ln(σ)/4", cls.pipeline.pipeline_class)

    def noise_batch(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> NoisyBatch:
        """Draw ln σ ~ N(P_mean, P_std²), then the noise, and build x = x₀ + σ·ε.

        Args:
            clean (`torch.Tensor` of shape `[B, C, ...]`): x₀.
            generator (`torch.Generator`, *optional*): the source of σ and the noise.

        Returns:
            `NoisyBatch`: the network sees `(c_in·x, c_noise(σ))`; the target is x₀; `levels.t` is σ.
        """
        batch_size, device = clean.shape[0], clean.device
        sigma = (torch.randn(batch_size, generator=generator, device=device) * self.p_std + self.p_mean).exp()
        noise = self.noise_fn(tuple(clean.shape), generator, device).to(clean.dtype)
        noisy = clean + per_sample(sigma, clean) * noise
        # 1. c_in = 1 / sqrt(σ² + σ_data²), c_noise = ln(σ) / 4 (Table 1 of arXiv 2206.00364)
        model_input = self.scheduler.precondition_inputs(noisy, per_sample(sigma, clean))
        model_timesteps = self.scheduler.precondition_noise(sigma)
        return NoisyBatch(
            clean, noise, noisy, model_input, model_timesteps, clean, edm_noise_levels(sigma, self.sigma_data)
        )

    def model_inputs(self, batch: NoisyBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """`(c_in·x, c_noise(σ))`: the UNet's sample and timestep arguments."""
        return batch.model_input, batch.model_timesteps

    def x0_hat(self, model_output: torch.Tensor, batch: NoisyBatch) -> torch.Tensor:
        """The denoiser D `[B, C, ...]` from the raw output F_θ (`edm_x0_hat`)."""
        return edm_x0_hat(self.scheduler, model_output, batch.noisy, batch.levels.t)

    def base_loss(
        self, model_output: torch.Tensor, batch: NoisyBatch, x0_hat: torch.Tensor | None = None
    ) -> torch.Tensor:
        """λ(σ)·mean((D - x0)²) per sample `[B]`; D is `x0_hat` when given, so it is computed once per step."""
        denoised = self.x0_hat(model_output, batch) if x0_hat is None else x0_hat
        # λ(σ) in float32, as the loss has always been computed
        return edm_loss_weight(batch.levels.t.float(), self.sigma_data) * per_sample_mse(denoised, batch.clean)
