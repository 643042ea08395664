"""The pipeline kinds this project trains and saves: one per registered objective, plus SAGD, audio and latent.

A kind ties together what a training run saves and how the saved model is sampled and described: the pipeline class
(one Diffusers ships, or one file of `pipelines/` copied beside the weights as `pipeline.py`), the fast sampler used
for logged samples and evaluation, the model card's usage snippet (a template in `model_cards/`), its tags and its
citations, and the objective it trains with. The training script, the evaluation and the model card read it here.

- Every objective of `diffusion.registry.OBJECTIVES` is a kind, built from the objective's `PipelineSpec` and
  `make_scheduler` (`kind_of_objective`): a new objective needs no line here.
- Three kinds train the DDPM objective and save another pipeline: "sagd" (a coloured `--noise_spectrum`, arXiv
  2510.09660), "audio" (`--modality audio`, mel spectrograms) and "latent" (`--vae_name_or_path`: the UNet trains on
  the scaled latents of a frozen `AutoencoderKL` and Diffusers' `LDMPipeline` is saved with it). A new kind of that
  sort is one entry of `PIPELINE_KINDS` (plus its pipeline file and usage template `model_cards/usage_NAME.md`).
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .diffusion.base import SchedulerSettings
from .diffusion.ddpm import DDPMObjective, ddim_pipeline
from .diffusion.registry import OBJECTIVES, on_register
from .diffusion.samplers import Sampler, call_sampler, ddim_of, default_sampler

__all__ = [
    "PIPELINE_KINDS",
    "PipelineKind",
    "class_name",
    "kind_of",
    "kind_of_objective",
    "objective_choices",
    "read_card_file",
    "render_usage",
    "select_kind",
]


@dataclass(frozen=True)
class PipelineKind:
    r"""
    One pipeline kind: how it trains, what it saves, how it samples and how its card reads.

    Args:
        name (`str`): registry key, e.g. `"sagd"`; the card's usage snippet is `model_cards/usage_<name>.md`
            (`string.Template` fields `$repo`, `$steps`, `$fast`, `$sample_steps`, `$pipeline_class`).
        pipeline_class (`str`): class of the saved pipeline (`model_index.json` `_class_name`).
        build_pipeline (`Callable`): `(unet, scheduler, spectrum=None, mel=None, vae=None) -> DiffusionPipeline`, the
            pipeline saved with the model (`vae`: the frozen `AutoencoderKL` of a latent model).
        fast_pipeline (`Callable`): `(saved pipeline) -> DiffusionPipeline` that samples quickly (DDIM where the
            saved one is ancestral), for logged samples.
        sampler (`Callable`, *optional*): `(pipeline, steps) -> (sample(generators) -> [B, H, W, C] in [0, 1],
            description)` for evaluation; defaults to calling the pipeline itself (`default_sampler`).
        pipeline_file (`str`, *optional*): the file of `pipelines/` that defines `pipeline_class`; `None` for classes
            Diffusers ships.
        objective (`str`, defaults to `"ddpm"`): the registered name of the training objective
            (`diffusion.registry.build_objective`).
        scheduler_builder (`Callable[[SchedulerSettings], SchedulerMixin]`, *optional*): the training noise scheduler;
            defaults to that of the DDPM objective.
        modality (`Literal["image", "audio"]`, defaults to `"image"`).
        sample_steps (`int`, defaults to `50`): steps of the card's custom-pipeline snippet.
        tags (`tuple[str, ...]`): extra model-card tags.
        citations (`tuple[str, ...]`): arXiv ids cited by the model card (keys of `model_card.CITATIONS`).
        aliases (`tuple[str, ...]`): other saved classes that belong to this kind (e.g. `DDIMPipeline`).
        selected_by (`Literal["flag", "noise", "modality", "vae"]`, defaults to `"flag"`): how a training run picks
            the kind: named by `--formulation`, implied by a coloured `--noise_spectrum`, by its `--modality`, or by
            `--vae_name_or_path` (latent diffusion).
    """

    name: str
    pipeline_class: str
    build_pipeline: Callable[..., Any]
    fast_pipeline: Callable[[Any], Any]
    sampler: Callable[[Any, int], tuple[Sampler, str]] | None = field(default=None, repr=False)
    pipeline_file: str | None = None
    objective: str = DDPMObjective.name
    scheduler_builder: Callable[[SchedulerSettings], Any] | None = field(default=None, repr=False)
    modality: Literal["image", "audio"] = "image"
    sample_steps: int = 50
    tags: tuple[str, ...] = ()
    citations: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    selected_by: Literal["flag", "noise", "modality", "vae"] = "flag"

    @property
    def usage_template(self) -> str:
        """The file of `model_cards/` with this kind's usage snippet."""
        return f"usage_{self.name}.md"

    def build_scheduler(self, settings: SchedulerSettings):
        """The training noise scheduler of this kind."""
        return (self.scheduler_builder or DDPMObjective.make_scheduler)(settings)

    @property
    def is_custom(self) -> bool:
        """Whether the saved folder carries its own `pipeline.py` (loads with `trust_remote_code=True`)."""
        return self.pipeline_file is not None

    def make_sampler(self, pipeline, num_inference_steps: int) -> tuple[Sampler, str]:
        r"""
        The evaluation sampler of a loaded pipeline of this kind.

        Returns:
            `tuple`: `sample(generators) -> np.ndarray` of shape `[len(generators), H, W, C]` in `[0, 1]` (one
            generator per image), and a one-line description such as `"DDIM (eta 0), 50 steps"`.
        """
        if num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be >= 1, got {num_inference_steps}.")
        return (self.sampler or default_sampler)(pipeline, num_inference_steps)


def kind_of_objective(objective_class: type) -> PipelineKind:
    """The kind of a registered objective: its `PipelineSpec`, its `make_scheduler`, selected by `--formulation`.

    Args:
        objective_class (`type`): a class of `diffusion.registry.OBJECTIVES`.

    Returns:
        `PipelineKind`
    """
    spec = objective_class.pipeline
    return PipelineKind(
        objective_class.name,
        spec.pipeline_class,
        spec.build_pipeline,
        spec.fast_pipeline,
        spec.sampler,
        pipeline_file=spec.pipeline_file,
        objective=objective_class.name,
        scheduler_builder=objective_class.make_scheduler,
        sample_steps=spec.sample_steps,
        tags=spec.tags,
        citations=spec.citations,
        aliases=spec.aliases,
    )


# ---------------------------------------------------------------------------------------------------------------
# The kinds that train the DDPM objective and save another pipeline: builders and samplers
# ---------------------------------------------------------------------------------------------------------------


def sagd_pipeline(unet, scheduler, spectrum=None, mel=None, vae=None):
    """The saved `SAGDPipeline` of `pipelines/pipeline_sagd.py`, which samples with the training noise `spectrum`."""
    from diffusers_specreg.pipelines import SAGDPipeline

    return SAGDPipeline(unet=unet, scheduler=scheduler, noise_spectrum=spectrum)


def sagd_ddim_pipeline(pipeline):
    """The SAGD pipeline with a DDIM schedule (its fast sampler)."""
    return type(pipeline)(
        unet=pipeline.unet, scheduler=ddim_of(pipeline.scheduler), noise_spectrum=pipeline.config.noise_spectrum
    )


def audio_pipeline(unet, scheduler, spectrum=None, mel=None, vae=None):
    """The saved `AudioDiffusionPipeline` with the run's `Mel` settings."""
    from diffusers_specreg.audio import make_audio_pipeline

    return make_audio_pipeline(unet, mel, scheduler)


def audio_ddim_pipeline(pipeline):
    """The audio pipeline with a DDIM schedule (its fast sampler)."""
    from diffusers import AudioDiffusionPipeline

    return AudioDiffusionPipeline(
        vqvae=pipeline.vqvae, unet=pipeline.unet, mel=pipeline.mel, scheduler=ddim_of(pipeline.scheduler)
    )


def latent_pipeline(unet, scheduler, spectrum=None, mel=None, vae=None):
    """The saved `LDMPipeline` with the frozen autoencoder `vae` in its `vqvae` slot."""
    # Diffusers' LDMPipeline divides the sampled latents by `vqvae.config.scaling_factor` before `vqvae.decode(...)`,
    # which is exactly the contract of an AutoencoderKL trained for diffusion; its `vqvae` slot takes the KL model.
    from diffusers import LDMPipeline

    if vae is None:
        raise ValueError("The latent formulation needs the frozen autoencoder (vae=...).")
    return LDMPipeline(vqvae=vae, unet=unet, scheduler=scheduler)


def latent_ddim_pipeline(pipeline):
    """The latent pipeline with a DDIM schedule (its fast sampler)."""
    from diffusers import LDMPipeline

    return LDMPipeline(vqvae=pipeline.vqvae, unet=pipeline.unet, scheduler=ddim_of(pipeline.scheduler))


def sagd_sampler(pipeline, steps: int) -> tuple[Sampler, str]:
    """SAGD DDIM (η = 0) with the saved noise spectrum."""
    from diffusers_specreg.noise import NoiseSpectrum

    spectrum = NoiseSpectrum.from_dict(pipeline.config.noise_spectrum)
    label = "user weights" if spectrum.kind == "weights" else spectrum.to_string()
    description = f"SAGD DDIM (eta 0, noise {label}), {steps} steps"
    return call_sampler(sagd_ddim_pipeline(pipeline), steps, eta=0.0), description


def latent_sampler(pipeline, steps: int) -> tuple[Sampler, str]:
    """LDM DDIM (η = 0), decoded by the autoencoder."""
    description = f"LDM DDIM (eta 0), {steps} steps, decoded by the autoencoder"
    return call_sampler(latent_ddim_pipeline(pipeline), steps, eta=0.0), description


def audio_sampler(pipeline, steps: int) -> tuple[Sampler, str]:
    """AudioDiffusion DDIM (η = 0): the mel images, as uint8 levels."""
    description = f"AudioDiffusion DDIM (eta 0), {steps} steps (mel images)"
    if pipeline.vqvae is None:
        # AudioDiffusionPipeline.__call__ also inverts every image with an unseeded Griffin-Lim (seconds per image at
        # the default Mel) that the metrics never use. Without a VQ-VAE its images are exactly those of DDIMPipeline
        # on the same UNet and DDIM schedule (same initial noise, same steps), quantised to uint8 as it does.
        return call_sampler(ddim_pipeline(pipeline), steps, quantise=True, eta=0.0), description
    sampler = audio_ddim_pipeline(pipeline)
    sampler.set_progress_bar_config(disable=True)

    def sample(generators):
        images = sampler(batch_size=len(generators), generator=generators, steps=steps, eta=0.0).images
        array = np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in images])
        return array[..., None] if array.ndim == 3 else array

    return sample, description


# ---------------------------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------------------------

PIPELINE_KINDS: dict[str, PipelineKind] = {
    **{cls.name: kind_of_objective(cls) for cls in OBJECTIVES},
    "sagd": PipelineKind(
        "sagd",
        "SAGDPipeline",
        sagd_pipeline,
        sagd_ddim_pipeline,
        sagd_sampler,
        pipeline_file="pipeline_sagd.py",
        selected_by="noise",
        tags=("sagd",),
        citations=("2510.09660",),
    ),
    "audio": PipelineKind(
        "audio",
        "AudioDiffusionPipeline",
        audio_pipeline,
        audio_ddim_pipeline,
        audio_sampler,
        modality="audio",
        selected_by="modality",
        tags=("audio", "mel-spectrogram", "unconditional-audio-generation"),
    ),
    "latent": PipelineKind(
        "latent",
        "LDMPipeline",
        latent_pipeline,
        latent_ddim_pipeline,
        latent_sampler,
        selected_by="vae",
        tags=("latent-diffusion",),
        citations=("2603.14645",),
    ),
}


def add_objective_kind(objective_class: type):
    """Add the kind of an objective registered later (`diffusion.registry.register_objective`); returns its undo."""
    PIPELINE_KINDS[objective_class.name] = kind_of_objective(objective_class)
    return lambda: PIPELINE_KINDS.pop(objective_class.name, None)


on_register(add_objective_kind)


def objective_choices() -> list[str]:
    """The kinds `--formulation` names; the others follow from a coloured `--noise_spectrum` or from `--modality`."""
    return [name for name, kind in PIPELINE_KINDS.items() if kind.selected_by == "flag"]


def select_kind(
    formulation: str = DDPMObjective.name, modality: str = "image", coloured_noise: bool = False, latent: bool = False
) -> PipelineKind:
    r"""
    The pipeline kind a training run uses.

    Args:
        formulation (`str`, defaults to `"ddpm"`): `--formulation`, one of `objective_choices()`.
        modality (`str`, defaults to `"image"`): `--modality`; a kind selected by its modality (audio saves an
            `AudioDiffusionPipeline`, whatever the noise) wins.
        coloured_noise (`bool`, defaults to `False`): whether `--noise_spectrum` is coloured (SAGD).
        latent (`bool`, defaults to `False`): whether `--vae_name_or_path` is given (latent diffusion). It combines
            with DDPM/DDIM image training on white noise only: the saved `LDMPipeline` samples with a DDPM/DDIM
            scheduler from white latent noise, so EDM, SAGD and audio raise a `ValueError`.

    Returns:
        [`PipelineKind`]
    """
    if formulation not in objective_choices():
        raise ValueError(f"formulation must be one of {objective_choices()}, got {formulation!r}.")
    by_modality = [k for k in PIPELINE_KINDS.values() if k.selected_by == "modality" and k.modality == modality]
    if modality not in ("image", *(k.modality for k in PIPELINE_KINDS.values())):
        raise ValueError(f"modality must be one of ['image', 'audio'], got {modality!r}.")
    if latent:
        latent_kind = next(k for k in PIPELINE_KINDS.values() if k.selected_by == "vae")
        clashes = {
            "--modality audio": modality == "audio",
            f"--formulation {formulation}": formulation != latent_kind.objective,
            "a coloured --noise_spectrum (SAGD)": coloured_noise,
        }
        named = [flag for flag, clash in clashes.items() if clash]
        if named:
            raise ValueError(
                f"--vae_name_or_path (latent diffusion) does not combine with {', '.join(named)}: the saved "
                "LDMPipeline samples image latents with a DDPM/DDIM scheduler from white noise. Use --formulation"
                f" {latent_kind.objective} with white noise, or leave out --vae_name_or_path."
            )
        return latent_kind
    if by_modality:
        return by_modality[0]
    if coloured_noise:
        return next(k for k in PIPELINE_KINDS.values() if k.selected_by == "noise")
    return PIPELINE_KINDS[formulation]


def class_name(name: str | list | tuple) -> str:
    """The class of a `model_index.json` `_class_name`: `"DDPMPipeline"`, or `["pipeline", "SAGDPipeline"]` ->
    `"SAGDPipeline"`."""
    return str(name[-1]) if isinstance(name, (list, tuple)) else str(name)


def kind_of(pipeline: Any) -> PipelineKind | None:
    """The kind whose saved class is `pipeline` (an instance, a class name or a `_class_name` list), else `None`."""
    if not isinstance(pipeline, (str, list, tuple)):
        pipeline = type(pipeline).__name__
    name = class_name(pipeline)
    for kind in PIPELINE_KINDS.values():
        if name == kind.pipeline_class or name in kind.aliases:
            return kind
    return None


# ---------------------------------------------------------------------------------------------------------------
# Model-card usage snippets
# ---------------------------------------------------------------------------------------------------------------


def read_card_file(name: str) -> str:
    """A file of `model_cards/` (installed as `diffusers_specreg.model_cards`, else the checkout's folder)."""
    try:
        return resources.files("diffusers_specreg.model_cards").joinpath(name).read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError):  # a plain checkout: model_cards/ beside the package
        return (Path(__file__).resolve().parents[1] / "model_cards" / name).read_text("utf-8")


def render_usage(
    pipeline_class: str | list,
    repo_id: str,
    num_inference_steps: int | None = None,
    num_train_timesteps: int | None = None,
) -> str:
    r"""
    The model card's usage snippet: the kind's template from `model_cards/`, filled in.

    Args:
        pipeline_class (`str` or `list`): the saved pipeline class (`model_index.json` `_class_name`).
        repo_id (`str`): Hub repo id or local folder of the model.
        num_inference_steps (`int`, *optional*): steps of the reference (slow, ancestral) sampler.
        num_train_timesteps (`int`, *optional*): the noise schedule's length; the fast DDIM snippets use
            `min(50, num_train_timesteps)` steps (DDIM cannot take more steps than the schedule has).

    Returns:
        `str`: markdown with one or two python code blocks; the first one runs as it is.
    """
    kind = kind_of(pipeline_class)
    template = kind.usage_template if kind is not None else "usage_custom.md"
    fields: Mapping[str, Any] = {
        "repo": json.dumps(repo_id),
        "fast": min(50, num_train_timesteps) if num_train_timesteps else 50,
        "steps": num_inference_steps or 1000,
        "sample_steps": kind.sample_steps if kind is not None else 50,
        "pipeline_class": class_name(pipeline_class),
    }
    return string.Template(read_card_file(template)).substitute(fields).strip()
