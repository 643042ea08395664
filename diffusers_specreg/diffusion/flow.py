"""The flow-matching objective: rectified flow on x_t = (1 − σ)·x₀ + σ·ε with the velocity v = ε − x₀ as target.

Rectified flow (arXiv 2209.03003) as Diffusers' flow-matching scripts train it (SD3, arXiv 2403.03206): σ drawn by
`compute_density_for_timestep_sampling` (`--weighting_scheme` uniform / logit_normal / mode, `--logit_mean`,
`--logit_std`, `--mode_scale`) on the training grid of a `FlowMatchEulerDiscreteScheduler` (its `shift` included), the
network sees x_t and the timestep σ·N, and the base loss is `compute_loss_weighting_for_sd3` times the per-sample
MSE of v̂ against v. The maths lives in `diffusers_specreg.flow_matching`; this module ties it to the objective seam.

In the shared noise-level terms (`NoiseLevels`) a flow σ is the variance-exploding σ_VE = σ/(1 − σ), so
SNR = ((1 − σ)/σ)² and every spectral weighting means what it means for DDPM and EDM at the same SNR.
"""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

from .. import flow_matching as fm
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
from .samplers import PipelineSpec, Sampler, call_sampler, same_pipeline

# Diffusers' name for a velocity-predicting flow model (`DPMSolverMultistepScheduler(prediction_type=
# "flow_prediction")`); a flow model predicts nothing else
FLOW_PREDICTION_TYPES = ("flow_prediction",)
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler")
# Diffusers' SD3 / Flux scripts default to logit_normal
DEFAULT_WEIGHTING_SCHEME = "logit_normal"
# σ_VE = σ/(1 − σ) is infinite at σ = 1 (pure noise, on the training grid): capped so that λ_EDM(σ_VE) of the "edm"
# spectral weighting stays at its limit 1/σ_data² instead of inf/inf (SNR is exactly 0 there either way)
MAX_VE_SIGMA = 1e12


def flow_noise_levels(sigmas: torch.Tensor) -> NoiseLevels:
    """The noise levels of flow σ per sample: `t = σ`, `sigma = σ/(1 − σ)` (σ_VE), `snr = ((1 − σ)/σ)²`, no ᾱ.

    Args:
        sigmas (`torch.Tensor` of shape `[B]`): flow σ in (0, 1].

    Returns:
        `NoiseLevels` with float32 values (float64 kept); σ = 1 gives SNR = 0 and σ_VE = `MAX_VE_SIGMA`.
    """
    return NoiseLevels(t=sigmas, sigma=fm.ve_sigma(sigmas).clamp(max=MAX_VE_SIGMA), snr=fm.flow_snr(sigmas))


def flow_scheduler(settings: SchedulerSettings) -> FlowMatchEulerDiscreteScheduler:
    """The training `FlowMatchEulerDiscreteScheduler`: the fine-tuned flow pipeline's config, or a new one.

    Args:
        settings (`SchedulerSettings`): `num_train_timesteps` and `shift` (`None`: the fine-tuned scheduler's, else
            1.0); `prediction_type` must be "flow_prediction"; a `pretrained_config` of another scheduler class is
            refused (a DDPM or EDM model does not predict the velocity).

    Returns:
        `FlowMatchEulerDiscreteScheduler`
    """
    if settings.prediction_type not in FLOW_PREDICTION_TYPES:
        raise ValueError(
            "--formulation flow trains the velocity v = ε − x₀ (prediction_type 'flow_prediction'), got "
            f"prediction_type {settings.prediction_type!r}: leave --prediction_type out."
        )
    pretrained = settings.pretrained_config
    if pretrained is not None:
        if pretrained.get("_class_name") not in FLOW_SCHEDULERS:
            raise ValueError(
                f"--formulation flow fine-tunes flow-matching pipelines (scheduler {' or '.join(FLOW_SCHEDULERS)}); "
                f"the pretrained model's scheduler is {pretrained.get('_class_name')!r}."
            )
        config = dict(pretrained, shift=pretrained.get("shift", 1.0) if settings.shift is None else settings.shift)
        return FlowMatchEulerDiscreteScheduler.from_config(config)
    shift = 1.0 if settings.shift is None else settings.shift
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=settings.num_train_timesteps, shift=shift)


def flow_pipeline(unet, scheduler, spectrum=None, mel=None, vae=None):
    """The saved `FlowMatchPipeline` of `pipelines/pipeline_flow.py` (`spectrum`, `mel` and `vae` are not used)."""
    from diffusers_specreg.pipelines import FlowMatchPipeline

    return FlowMatchPipeline(unet=unet, scheduler=scheduler)


def flow_sampler(pipeline, steps: int) -> tuple[Sampler, str]:
    """The evaluation sampler of a flow pipeline: its own deterministic ODE solver (Euler, or Heun if saved so)."""
    solver = "Heun" if isinstance(pipeline.scheduler, FlowMatchHeunDiscreteScheduler) else "Euler"
    description = f"Flow matching {solver} ({type(pipeline.scheduler).__name__}), {steps} steps"
    return call_sampler(pipeline, steps), description


class FlowObjective:
    """Rectified-flow training (arXiv 2209.03003) as Diffusers' SD3 / Flux scripts do it (arXiv 2403.03206, Sec. 3).

    x_t = (1 − σ)·x₀ + σ·ε, the UNet receives (x_t, σ·N) and predicts v = ε − x₀, x̂₀ = x_t − σ·v̂, and the loss is
    w(σ)·mean((v̂ − v)²) with w of `compute_loss_weighting_for_sd3`.

    Args:
        scheduler (`FlowMatchEulerDiscreteScheduler`): its `num_train_timesteps` N and `shift` give the σ grid.
        weighting_scheme (`str`, defaults to `"logit_normal"`): `--weighting_scheme` of Diffusers' scripts, one of
            "none", "sigma_sqrt", "logit_normal", "mode", "cosmap": logit_normal / mode shape the σ density
            (others draw u uniformly); sigma_sqrt / cosmap weight the loss (others weight 1).
        logit_mean (`float`, defaults to 0.0): mean of the logit-normal density.
        logit_std (`float`, defaults to 1.0): its standard deviation.
        mode_scale (`float`, defaults to 1.29): scale s of the "mode" density f_mode(u; s) (arXiv 2403.03206,
            Sec. 3.1).
        noise_fn (`callable`, *optional*): forward noise, white by default (the saved pipeline samples white noise).
    """

    name = "flow"
    formulation = "flow"
    other_names = ()
    prediction_types = FLOW_PREDICTION_TYPES
    integer_timesteps = False
    supports_noise_spectrum = False  # the saved pipeline starts from white noise
    supports_audio = False  # AudioDiffusionPipeline samples DDPM / DDIM
    # Diffusers' flag names and defaults; a resumed run may change them (compared and reported) but for the shift
    options = (
        Option(
            "weighting_scheme",
            str,
            DEFAULT_WEIGHTING_SCHEME,
            "Flow matching: σ density and loss weight, as Diffusers' scripts: " + ", ".join(fm.WEIGHTING_SCHEMES),
            "weighting_scheme",
            "compatible",
        ),
        Option(
            "logit_mean",
            float,
            fm.DEFAULT_LOGIT_MEAN,
            "Mean of the logit_normal σ density.",
            "logit_mean",
            "compatible",
        ),
        Option(
            "logit_std", float, fm.DEFAULT_LOGIT_STD, "Std of the logit_normal σ density.", "logit_std", "compatible"
        ),
        Option(
            "mode_scale", float, fm.DEFAULT_MODE_SCALE, "Scale of the 'mode' σ density.", "mode_scale", "compatible"
        ),
        # the scheduler's σ shift (None: the fine-tuned scheduler's, else 1.0); a new shift trains another σ grid
        # than the checkpoint's, so a resumed run may not change it
        Option(
            "flow_shift",
            float,
            None,
            "Flow matching: σ shift of the FlowMatchEulerDiscreteScheduler (default: the fine-tuned model's, else 1.0).",
            "shift",
            "incompatible",
            "scheduler",
        ),
    )
    # the saved FlowMatchPipeline (Euler by default) is its own fast sampler
    pipeline = PipelineSpec(
        "FlowMatchPipeline",
        flow_pipeline,
        same_pipeline,
        flow_sampler,
        pipeline_file="pipeline_flow.py",
        sample_steps=50,
        tags=("flow-matching", "rectified-flow"),
        citations=("2209.03003", "2403.03206"),
    )

    def __init__(
        self,
        scheduler: FlowMatchEulerDiscreteScheduler,
        weighting_scheme: str = DEFAULT_WEIGHTING_SCHEME,
        logit_mean: float = fm.DEFAULT_LOGIT_MEAN,
        logit_std: float = fm.DEFAULT_LOGIT_STD,
        mode_scale: float = fm.DEFAULT_MODE_SCALE,
        noise_fn: NoiseFn | None = None,
    ):
        if type(scheduler).__name__ not in FLOW_SCHEDULERS:
            raise ValueError(f"FlowObjective needs a {' or '.join(FLOW_SCHEDULERS)}, got {type(scheduler).__name__}.")
        if weighting_scheme not in fm.WEIGHTING_SCHEMES:
            raise ValueError(
                f"--weighting_scheme must be one of {', '.join(fm.WEIGHTING_SCHEMES)}, got {weighting_scheme!r}."
            )
        if weighting_scheme == "mode" and not fm.MODE_SCALE_RANGE[0] <= mode_scale <= fm.MODE_SCALE_RANGE[1]:
            low, high = fm.MODE_SCALE_RANGE
            raise ValueError(
                f"--mode_scale must lie in [{low}, {high:.4f}] (f_mode is monotone there), got {mode_scale}."
            )
        if not logit_std > 0:
            raise ValueError(f"--logit_std must be > 0, got {logit_std}.")
        self.scheduler = scheduler
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.shift = float(scheduler.config.shift)
        self.weighting_scheme = weighting_scheme
        self.logit_mean, self.logit_std, self.mode_scale = float(logit_mean), float(logit_std), float(mode_scale)
        self.noise_fn = noise_fn or white_noise

    @classmethod
    def make_scheduler(cls, settings: SchedulerSettings) -> FlowMatchEulerDiscreteScheduler:
        """The training noise scheduler (`flow_scheduler`)."""
        return flow_scheduler(settings)

    @classmethod
    def check_model_config(cls, config: dict) -> None:
        """The UNet embeds its timestep σ·N with `time_embedding_type` "positional" (`FlowMatchPipeline` refuses any
        other); raises `ValueError` otherwise."""
        check_positional_time_embedding(config, cls.name, "σ·N", cls.pipeline.pipeline_class)

    def noise_batch(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> NoisyBatch:
        """Draw the noise, then σ as Diffusers' scripts do, and build x_t = (1 − σ)·x₀ + σ·ε.

        Args:
            clean (`torch.Tensor` of shape `[B, C, ...]`): x₀.
            generator (`torch.Generator`, *optional*): the source of the noise and of σ.

        Returns:
            `NoisyBatch`: the network sees `(x_t, σ·N)`; the target is v = ε − x₀; `levels.t` is σ.
        """
        batch_size, device = clean.shape[0], clean.device
        # 1. the noise first, then u and σ = shift(1 − ⌊u·N⌋/N), the order of Diffusers' SD3 scripts
        noise = self.noise_fn(tuple(clean.shape), generator, device).to(clean.dtype)
        sigmas = fm.sample_sigmas(
            self.weighting_scheme,
            batch_size,
            self.logit_mean,
            self.logit_std,
            self.mode_scale,
            shift=self.shift,
            num_train_timesteps=self.num_train_timesteps,
            device=device,
            generator=generator,
        )
        # 2. x_t = (1 − σ)·x₀ + σ·ε and v = ε − x₀ (the rectified-flow path, arXiv 2209.03003)
        noisy = fm.add_noise(clean, noise, sigmas).to(clean.dtype)
        target = fm.velocity(clean, noise)
        timesteps = fm.timesteps_from_sigmas(sigmas, self.num_train_timesteps)
        return NoisyBatch(clean, noise, noisy, noisy, timesteps, target, flow_noise_levels(sigmas))

    def model_inputs(self, batch: NoisyBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """`(x_t, σ·N)`: the UNet's sample and timestep arguments (the scheduler's `timesteps` at sampling)."""
        return batch.model_input, batch.model_timesteps

    def x0_hat(self, model_output: torch.Tensor, batch: NoisyBatch) -> torch.Tensor:
        """x̂₀ = x_t − σ·v̂ `[B, C, ...]`, float32 (float64 kept)."""
        return fm.pred_original_sample(model_output, batch.noisy, batch.levels.t)

    def base_loss(
        self, model_output: torch.Tensor, batch: NoisyBatch, x0_hat: torch.Tensor | None = None
    ) -> torch.Tensor:
        """w(σ)·mean((v̂ − v)²) per sample `[B]`, w = `compute_loss_weighting_for_sd3` (`x0_hat` is not used)."""
        weight = fm.loss_weighting(self.weighting_scheme, batch.levels.t).to(torch.float32)
        return weight * per_sample_mse(model_output, batch.target)
