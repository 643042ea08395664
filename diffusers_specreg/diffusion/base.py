"""What every diffusion objective shares: per-sample noise levels, the noised batch, and the Objective protocol.

A training step reads the same way for every objective:

    batch = objective.noise_batch(clean, generator)
    model_output = unet(*objective.model_inputs(batch)).sample
    x0_hat = objective.x0_hat(model_output, batch)                   # computed once per step
    base = objective.base_loss(model_output, batch, x0_hat)          # [B]

`NoiseLevels` gives σ and SNR per sample with one meaning in every objective (σ is the variance-exploding noise level
1/√SNR of Table 1 of arXiv 2206.00364), so the spectral weightings are functions of σ or SNR, not of a scheduler.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F

NoiseFn = Callable[[tuple, torch.Generator | None, torch.device], torch.Tensor]


@dataclass(frozen=True)
class SchedulerSettings:
    r"""
    What an objective's noise scheduler is built from.

    Args:
        prediction_type (`Literal["epsilon", "sample", "v_prediction"]`, defaults to `"epsilon"`):
            What the network predicts.
        num_train_timesteps (`int`, defaults to `1000`): DDPM schedule length.
        beta_schedule (`str`, defaults to `"linear"`): DDPM β schedule.
        sigma_data (`float`, defaults to `0.5`): EDM data standard deviation σ_data.
        pretrained_config (`dict`, *optional*): the scheduler config of a pipeline being fine-tuned (DDPM kinds reuse
            it, with `prediction_type` replaced).
        shift (`float`, *optional*): flow matching's σ shift (`FlowMatchEulerDiscreteScheduler(shift=...)`); `None`:
            the fine-tuned scheduler's, else 1.0.
    """

    prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon"
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    sigma_data: float = 0.5
    pretrained_config: dict | None = None
    shift: float | None = None


@dataclass(frozen=True)
class Option:
    r"""
    A command-line setting that belongs to one objective (so the parser and the resume check need no edit for it).

    The training script adds `--flag` for every registered objective's options and refuses one given on the command
    line with another `--formulation` (it would be ignored); one not given takes `default`.

    Args:
        flag (`str`): the argparse destination, e.g. `"edm_p_mean"` for `--edm_p_mean`.
        type (`type`): the argparse `type`.
        default (`Any`): the default value.
        help (`str`): the help line.
        kwarg (`str`): the objective's constructor argument it sets, e.g. `"p_mean"` (or, with `target` "scheduler",
            the `SchedulerSettings` field).
        resume (`Literal["incompatible", "compatible"]`, defaults to `"incompatible"`): whether a resumed run may
            change it (`"incompatible"`: refused, as the flags of `train.manifest.INCOMPATIBLE`; `"compatible"`:
            compared and reported, not refused).
        target (`Literal["objective", "scheduler"]`, defaults to `"objective"`): where the value goes: the
            objective's constructor, or the `SchedulerSettings` field `kwarg` that `make_scheduler` reads (e.g.
            flow's `shift`).
    """

    flag: str
    type: type
    default: Any
    help: str
    kwarg: str
    resume: Literal["incompatible", "compatible"] = "incompatible"
    target: Literal["objective", "scheduler"] = "objective"


def check_positional_time_embedding(config: Mapping, formulation: str, timesteps: str, pipeline: str) -> None:
    """Refuse a UNet `config` whose `time_embedding_type` is not "positional" (a Fourier one, say) for an objective
    that feeds the network real-valued timesteps and whose saved pipeline accepts only "positional".

    Args:
        config (`Mapping`): the UNet's config.
        formulation (`str`): the objective's `--formulation` name, for the message.
        timesteps (`str`): what the network receives as its timestep, for the message (e.g. "σ·N").
        pipeline (`str`): the saved pipeline's class name, for the message.
    """
    embedding = config.get("time_embedding_type", "positional")
    if embedding != "positional":
        raise ValueError(
            f"the UNet's time_embedding_type {embedding!r} does not fit --formulation {formulation}: it feeds the "
            f"UNet real-valued timesteps {timesteps}, and the saved {pipeline} accepts only 'positional'. Use a UNet "
            "config with time_embedding_type 'positional' (Diffusers' default), or another --formulation."
        )


def white_noise(shape: tuple, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """N(0, I) noise of `shape` (the default forward noise)."""
    return torch.randn(shape, generator=generator, device=device)


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each sample, in float32: `[B, ...]` -> `[B]`."""
    return F.mse_loss(prediction.float(), target.float(), reduction="none").flatten(1).mean(1)


@dataclass(frozen=True)
class NoiseLevels:
    """The noise level of every sample of a batch, `[B]` each.

    Args:
        t (`torch.Tensor` of shape `[B]`):
            The objective's own index: integer timesteps t (DDPM / DDIM) or the noise level σ itself (EDM).
        sigma (`torch.Tensor` of shape `[B]`):
            float32 variance-exploding noise level σ = 1/√SNR: √((1−ᾱ_t)/ᾱ_t) for VP objectives (ᾱ floored at
            2⁻²⁴), σ for EDM.
        snr (`torch.Tensor` of shape `[B]`):
            float32 signal-to-noise ratio: ᾱ_t/(1−ᾱ_t) computed directly for VP objectives, σ⁻² for EDM.
        alpha_bar (`torch.Tensor` of shape `[B]`, *optional*):
            ᾱ_t as gathered from the scheduler, not floored (VP objectives only; the "sample" base loss reads it).
        sigma_data (`float`, defaults to 0.5):
            σ_data of the EDM loss weight λ(σ) (the "edm" spectral weighting); the EDM scheduler's
            `config.sigma_data` under EDM.
    """

    t: torch.Tensor
    sigma: torch.Tensor
    snr: torch.Tensor
    alpha_bar: torch.Tensor | None = None
    sigma_data: float = 0.5


@dataclass
class NoisyBatch:
    """One noised training batch.

    Args:
        clean (`torch.Tensor` of shape `[B, C, H, W]` or `[B, C, T]`): x₀.
        noise (`torch.Tensor`, same shape): the forward noise ε.
        noisy (`torch.Tensor`, same shape): x_t (VP) or x = x₀ + σ·ε (EDM).
        model_input (`torch.Tensor`, same shape): what the network receives (x_t, or c_in·x for EDM).
        model_timesteps (`torch.Tensor` of shape `[B]`): the network's timestep argument (t, or c_noise(σ) for EDM).
        target (`torch.Tensor`, same shape as `clean`): the regression target of the base loss.
        levels (`NoiseLevels`): t, σ, SNR (and ᾱ_t for VP) per sample.
    """

    clean: torch.Tensor
    noise: torch.Tensor
    noisy: torch.Tensor
    model_input: torch.Tensor
    model_timesteps: torch.Tensor
    target: torch.Tensor
    levels: NoiseLevels

    @property
    def timesteps(self) -> torch.Tensor:
        """`[B]` the objective's index t (`levels.t`): integer t (DDPM) or σ (EDM), as the schedulers index them."""
        return self.levels.t

    @property
    def sigma(self) -> torch.Tensor:
        """`[B]` float32 variance-exploding noise level σ (`levels.sigma`)."""
        return self.levels.sigma

    @property
    def alpha_bar(self) -> torch.Tensor | None:
        """`[B]` ᾱ_t, not floored (`levels.alpha_bar`); `None` for objectives without one (EDM)."""
        return self.levels.alpha_bar


class Objective(Protocol):
    """A diffusion training objective: how a clean batch is noised, what the network sees, x̂₀ and the base loss.

    Attributes:
        name (`str`): the registry name (`--formulation`).
        prediction_types (`tuple[str, ...]`): the `prediction_type`s it trains; the first is the default.
        integer_timesteps (`bool`): whether `levels.t` is an integer timestep (so `--spectral_max_timestep` applies).
        supports_noise_spectrum (`bool`): whether it trains, and its saved pipeline samples, coloured forward noise
            (`--noise_spectrum`, SAGD).
        supports_audio (`bool`): whether `--modality audio` can train it (the saved `AudioDiffusionPipeline` samples
            DDPM/DDIM).
        options (`tuple[Option, ...]`): its own command-line settings, passed to the constructor by `kwarg`.
        pipeline (`PipelineSpec`): its saved pipeline and samplers (`diffusion.samplers`).
        scheduler (`SchedulerMixin`): the Diffusers scheduler whose noise schedule it trains.
    """

    name: ClassVar[str]
    prediction_types: ClassVar[tuple[str, ...]]
    integer_timesteps: ClassVar[bool]
    supports_noise_spectrum: ClassVar[bool]
    supports_audio: ClassVar[bool]
    options: ClassVar[tuple[Option, ...]]
    pipeline: ClassVar[Any]
    scheduler: object

    @classmethod
    def make_scheduler(cls, settings: SchedulerSettings):
        """The training noise scheduler built from `settings`."""
        ...

    @classmethod
    def check_model_config(cls, config: dict) -> None:
        """Raise `ValueError` (the problem and the fix) for a network `config` this objective cannot train or its
        pipeline cannot sample, e.g. a UNet's `time_embedding_type`; the training script calls it when it builds the
        UNet, before the first step (`diffusion.registry.check_model_config`).

        Optional: an objective without it accepts every config.
        """
        ...

    def noise_batch(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> NoisyBatch:
        """Draw noise levels and noise for `clean` `[B, C, ...]` and noise it."""
        ...

    def model_inputs(self, batch: NoisyBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's `(sample, timestep)` arguments for `batch`."""
        ...

    def x0_hat(self, model_output: torch.Tensor, batch: NoisyBatch) -> torch.Tensor:
        """The predicted clean sample `[B, C, ...]`, float32 (float64 kept)."""
        ...

    def base_loss(
        self, model_output: torch.Tensor, batch: NoisyBatch, x0_hat: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The objective's own per-sample loss `[B]` (it may reuse `x0_hat` instead of computing it again)."""
        ...
