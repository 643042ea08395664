"""The formulations (pipeline kinds) this project trains and saves, in one registry.

A formulation ties together everything that differs between DDPM/DDIM, EDM, SAGD and audio training: the noise
scheduler, the training objective, the pipeline saved with the model (a class Diffusers ships, or one file of
`pipelines/` copied beside the weights as `pipeline.py`), the fast sampler used for logged samples and evaluation, the
model card's usage snippet (a template in `model_cards/`), its tags and its citations. The latent kind trains the UNet
on the scaled latents of a frozen `AutoencoderKL` and saves Diffusers' `LDMPipeline` with that autoencoder. The training script, the
evaluation and the model card read it from here.

Adding a kind is one entry in `FORMULATIONS` (plus its pipeline file and usage template):

```py
FORMULATIONS["mykind"] = Formulation(
    "mykind",                                    # model_cards/usage_mykind.md holds the card's snippet
    "MyPipeline",                                # defined in pipelines/pipeline_mykind.py
    lambda unet, scheduler, spectrum=None, mel=None, vae=None: MyPipeline(unet=unet, scheduler=scheduler),
    lambda pipeline: pipeline,                   # the fast sampler for logged samples
    pipeline_file="pipeline_mykind.py",
)
```
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
import torch

__all__ = [
    "FORMULATIONS",
    "Formulation",
    "SchedulerSettings",
    "class_name",
    "default_sampler",
    "formulation_choices",
    "formulation_of",
    "read_card_file",
    "render_usage",
    "select_formulation",
]

Sampler = Callable[[list[torch.Generator]], np.ndarray]


@dataclass(frozen=True)
class SchedulerSettings:
    r"""
    What a formulation's noise scheduler is built from.

    Args:
        prediction_type (`Literal["epsilon", "sample", "v_prediction"]`, defaults to `"epsilon"`):
            What the network predicts.
        num_train_timesteps (`int`, defaults to `1000`): DDPM schedule length.
        beta_schedule (`str`, defaults to `"linear"`): DDPM β schedule.
        sigma_data (`float`, defaults to `0.5`): EDM data standard deviation σ_data.
        pretrained_config (`dict`, *optional*): the scheduler config of a pipeline being fine-tuned (DDPM kinds reuse
            it, with `prediction_type` replaced).
    """

    prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon"
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    sigma_data: float = 0.5
    pretrained_config: dict | None = None


@dataclass(frozen=True)
class Formulation:
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
        objective (`Literal["ddpm", "edm"]`, defaults to `"ddpm"`): the training objective
            (`diffusers_specreg.objectives.build_objective`).
        scheduler_builder (`Callable[[SchedulerSettings], SchedulerMixin]`, *optional*): the training noise scheduler;
            defaults to a `DDPMScheduler`.
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
    objective: Literal["ddpm", "edm"] = "ddpm"
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
        return (self.scheduler_builder or _ddpm_scheduler)(settings)

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


# ---------------------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------------------


def _ddpm_scheduler(settings: SchedulerSettings):
    from diffusers import DDPMScheduler

    if settings.pretrained_config is not None:
        return DDPMScheduler.from_config(dict(settings.pretrained_config, prediction_type=settings.prediction_type))
    return DDPMScheduler(
        num_train_timesteps=settings.num_train_timesteps,
        beta_schedule=settings.beta_schedule,
        prediction_type=settings.prediction_type,
    )


def _edm_scheduler(settings: SchedulerSettings):
    from diffusers import EDMEulerScheduler

    return EDMEulerScheduler(sigma_data=settings.sigma_data, prediction_type=settings.prediction_type)


def _ddim(scheduler):
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(scheduler.config)


def _ddpm_pipeline(unet, scheduler, spectrum=None, mel=None, vae=None):
    from diffusers import DDPMPipeline

    return DDPMPipeline(unet=unet, scheduler=scheduler)


def _ddim_pipeline(pipeline):
    from diffusers import DDIMPipeline

    return DDIMPipeline(unet=pipeline.unet, scheduler=_ddim(pipeline.scheduler))


def _edm_pipeline(unet, scheduler, spectrum=None, mel=None, vae=None):
    from diffusers_specreg.pipelines import EDMPipeline

    return EDMPipeline(unet=unet, scheduler=scheduler)


def _sagd_pipeline(unet, scheduler, spectrum=None, mel=None, vae=None):
    from diffusers_specreg.pipelines import SAGDPipeline

    return SAGDPipeline(unet=unet, scheduler=scheduler, noise_spectrum=spectrum)


def _sagd_ddim_pipeline(pipeline):
    return type(pipeline)(
        unet=pipeline.unet, scheduler=_ddim(pipeline.scheduler), noise_spectrum=pipeline.config.noise_spectrum
    )


def _audio_pipeline(unet, scheduler, spectrum=None, mel=None, vae=None):
    from diffusers_specreg.audio import make_audio_pipeline

    return make_audio_pipeline(unet, mel, scheduler)


def _latent_pipeline(unet, scheduler, spectrum=None, mel=None, vae=None):
    # Diffusers' LDMPipeline divides the sampled latents by `vqvae.config.scaling_factor` before `vqvae.decode(...)`,
    # which is exactly the contract of an AutoencoderKL trained for diffusion; its `vqvae` slot takes the KL model.
    from diffusers import LDMPipeline

    if vae is None:
        raise ValueError("The latent formulation needs the frozen autoencoder (vae=...).")
    return LDMPipeline(vqvae=vae, unet=unet, scheduler=scheduler)


def _latent_ddim_pipeline(pipeline):
    from diffusers import LDMPipeline

    return LDMPipeline(vqvae=pipeline.vqvae, unet=pipeline.unet, scheduler=_ddim(pipeline.scheduler))


def _audio_ddim_pipeline(pipeline):
    from diffusers import AudioDiffusionPipeline

    return AudioDiffusionPipeline(
        vqvae=pipeline.vqvae, unet=pipeline.unet, mel=pipeline.mel, scheduler=_ddim(pipeline.scheduler)
    )


# ---------------------------------------------------------------------------------------------------------------
# Evaluation samplers
# ---------------------------------------------------------------------------------------------------------------


def _call_sampler(pipeline, num_inference_steps: int, quantise: bool = False, **call) -> Sampler:
    """`sample(generators)` calling `pipeline` with one generator per image (progress bar off); uint8 levels if
    `quantise`."""
    pipeline.set_progress_bar_config(disable=True)

    def sample(generators: list[torch.Generator]) -> np.ndarray:
        images = pipeline(
            batch_size=len(generators),
            generator=generators,
            num_inference_steps=num_inference_steps,
            output_type="np",
            **call,
        ).images
        return np.round(images * 255.0) / 255.0 if quantise else images

    return sample


def default_sampler(pipeline, steps: int) -> tuple[Sampler, str]:
    """Call the pipeline itself with `num_inference_steps` (its progress-bar setting is restored after each call)."""

    def sample(generators: list[torch.Generator]) -> np.ndarray:
        previous = dict(getattr(pipeline, "_progress_bar_config", {}))
        try:
            return _call_sampler(pipeline, steps)(generators)
        finally:
            pipeline._progress_bar_config = previous

    return sample, f"{type(pipeline).__name__}, {steps} steps"


def _ddim_sampler(pipeline, steps: int) -> tuple[Sampler, str]:
    return _call_sampler(_ddim_pipeline(pipeline), steps, eta=0.0), f"DDIM (eta 0), {steps} steps"


def _sagd_sampler(pipeline, steps: int) -> tuple[Sampler, str]:
    from diffusers_specreg.noise import NoiseSpectrum

    spectrum = NoiseSpectrum.from_dict(pipeline.config.noise_spectrum)
    label = "user weights" if spectrum.kind == "weights" else spectrum.to_string()
    description = f"SAGD DDIM (eta 0, noise {label}), {steps} steps"
    return _call_sampler(_sagd_ddim_pipeline(pipeline), steps, eta=0.0), description


def _latent_sampler(pipeline, steps: int) -> tuple[Sampler, str]:
    description = f"LDM DDIM (eta 0), {steps} steps, decoded by the autoencoder"
    return _call_sampler(_latent_ddim_pipeline(pipeline), steps, eta=0.0), description


def _audio_sampler(pipeline, steps: int) -> tuple[Sampler, str]:
    description = f"AudioDiffusion DDIM (eta 0), {steps} steps (mel images)"
    if pipeline.vqvae is None:
        # AudioDiffusionPipeline.__call__ also inverts every image with an unseeded Griffin-Lim (seconds per image at
        # the default Mel) that the metrics never use. Without a VQ-VAE its images are exactly those of DDIMPipeline
        # on the same UNet and DDIM schedule (same initial noise, same steps), quantised to uint8 as it does.
        return _call_sampler(_ddim_pipeline(pipeline), steps, quantise=True, eta=0.0), description
    sampler = _audio_ddim_pipeline(pipeline)
    sampler.set_progress_bar_config(disable=True)

    def sample(generators):
        images = sampler(batch_size=len(generators), generator=generators, steps=steps, eta=0.0).images
        array = np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in images])
        return array[..., None] if array.ndim == 3 else array

    return sample, description


# ---------------------------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------------------------


def _same(pipeline):
    return pipeline


FORMULATIONS: dict[str, Formulation] = {
    "ddpm": Formulation(
        "ddpm", "DDPMPipeline", _ddpm_pipeline, _ddim_pipeline, _ddim_sampler, aliases=("DDIMPipeline",)
    ),
    "edm": Formulation(
        "edm",
        "EDMPipeline",
        _edm_pipeline,
        _same,
        pipeline_file="pipeline_edm.py",
        objective="edm",
        scheduler_builder=_edm_scheduler,
        sample_steps=40,
        tags=("edm",),
        citations=("2206.00364",),
    ),
    "sagd": Formulation(
        "sagd",
        "SAGDPipeline",
        _sagd_pipeline,
        _sagd_ddim_pipeline,
        _sagd_sampler,
        pipeline_file="pipeline_sagd.py",
        selected_by="noise",
        tags=("sagd",),
        citations=("2510.09660",),
    ),
    "audio": Formulation(
        "audio",
        "AudioDiffusionPipeline",
        _audio_pipeline,
        _audio_ddim_pipeline,
        _audio_sampler,
        modality="audio",
        selected_by="modality",
        tags=("audio", "mel-spectrogram", "unconditional-audio-generation"),
    ),
    "latent": Formulation(
        "latent",
        "LDMPipeline",
        _latent_pipeline,
        _latent_ddim_pipeline,
        _latent_sampler,
        selected_by="vae",
        tags=("latent-diffusion",),
        citations=("2603.14645",),
    ),
}


def formulation_choices() -> list[str]:
    """The kinds `--formulation` names; the others follow from a coloured `--noise_spectrum` or from `--modality`."""
    return [name for name, entry in FORMULATIONS.items() if entry.selected_by == "flag"]


def select_formulation(
    formulation: str = "ddpm", modality: str = "image", coloured_noise: bool = False, latent: bool = False
) -> Formulation:
    r"""
    The registry entry a training run uses.

    Args:
        formulation (`str`, defaults to `"ddpm"`): `--formulation`, one of `formulation_choices()`.
        modality (`str`, defaults to `"image"`): `--modality`; a kind selected by its modality (audio saves an
            `AudioDiffusionPipeline`, whatever the noise) wins.
        coloured_noise (`bool`, defaults to `False`): whether `--noise_spectrum` is coloured (SAGD).
        latent (`bool`, defaults to `False`): whether `--vae_name_or_path` is given (latent diffusion). It combines
            with DDPM/DDIM image training on white noise only: the saved `LDMPipeline` samples with a DDPM/DDIM
            scheduler from white latent noise, so EDM, SAGD and audio raise a `ValueError`.

    Returns:
        [`Formulation`]
    """
    if formulation not in formulation_choices():
        raise ValueError(f"formulation must be one of {formulation_choices()}, got {formulation!r}.")
    by_modality = [e for e in FORMULATIONS.values() if e.selected_by == "modality" and e.modality == modality]
    if modality not in ("image", *(e.modality for e in FORMULATIONS.values())):
        raise ValueError(f"modality must be one of ['image', 'audio'], got {modality!r}.")
    if latent:
        clashes = {
            "--modality audio": modality == "audio",
            f"--formulation {formulation}": formulation != "ddpm",
            "a coloured --noise_spectrum (SAGD)": coloured_noise,
        }
        named = [flag for flag, clash in clashes.items() if clash]
        if named:
            raise ValueError(
                f"--vae_name_or_path (latent diffusion) does not combine with {', '.join(named)}: the saved "
                "LDMPipeline samples image latents with a DDPM/DDIM scheduler from white noise. Use --formulation ddpm "
                "with white noise, or leave out --vae_name_or_path."
            )
        return next(e for e in FORMULATIONS.values() if e.selected_by == "vae")
    if by_modality:
        return by_modality[0]
    if coloured_noise:
        return next(e for e in FORMULATIONS.values() if e.selected_by == "noise")
    return FORMULATIONS[formulation]


def class_name(name: str | list | tuple) -> str:
    """The class of a `model_index.json` `_class_name`: `"DDPMPipeline"`, or `["pipeline", "SAGDPipeline"]` ->
    `"SAGDPipeline"`."""
    return str(name[-1]) if isinstance(name, (list, tuple)) else str(name)


def formulation_of(pipeline: Any) -> Formulation | None:
    """The entry whose saved class is `pipeline` (an instance, a class name or a `_class_name` list), else `None`."""
    if not isinstance(pipeline, (str, list, tuple)):
        pipeline = type(pipeline).__name__
    name = class_name(pipeline)
    for entry in FORMULATIONS.values():
        if name == entry.pipeline_class or name in entry.aliases:
            return entry
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
    entry = formulation_of(pipeline_class)
    template = entry.usage_template if entry is not None else "usage_custom.md"
    fields: Mapping[str, Any] = {
        "repo": json.dumps(repo_id),
        "fast": min(50, num_train_timesteps) if num_train_timesteps else 50,
        "steps": num_inference_steps or 1000,
        "sample_steps": entry.sample_steps if entry is not None else 50,
        "pipeline_class": class_name(pipeline_class),
    }
    return string.Template(read_card_file(template)).substitute(fields).strip()
