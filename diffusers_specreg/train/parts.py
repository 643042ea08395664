"""The parts of a `train_spectral.py` run, built before the first step: the model fine-tuned from, the training data,
the UNet (fine-tuned, from a config or a preset) checked against the data, its EMA, the pipeline it is saved as.

Every check here runs before the first step, so a model that does not fit the data or the resolution fails with a
message naming the flag and the fix instead of a shape error inside the loop. The functions take values, not the
parsed flags: `train.arguments` turns those into the settings passed here.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from typing import Any

import torch
from diffusers import UNet2DModel
from diffusers.training_utils import EMAModel

from diffusers_specreg.data import build_image_dataset
from diffusers_specreg.diffusion import registry
from diffusers_specreg.diffusion.base import SchedulerSettings
from diffusers_specreg.latent import LatentCodec, check_latent_unet, latent_resolution
from diffusers_specreg.noise import NoiseSpectrum, corrupt_band
from diffusers_specreg.pipelines_io import save_pipeline as save_pipeline_folder
from diffusers_specreg.regularizer import SpectralRegularizer
from diffusers_specreg.train.loop import LoopParts, Schedule
from diffusers_specreg.train.models import (
    Pretrained,
    load_pretrained,
    resolution_for_config,
    unet_config,
    unet_downsampling_factor,
)
from diffusers_specreg.train.settings import DerivedSettings

# the keywords of `build_data` besides `resolution` and `seed`, named as the flags that give them
SOURCE_FLAGS = ("dataset_name", "dataset_config_name", "train_data_dir", "cache_dir")
IMAGE_FLAGS = (
    "center_crop",
    "random_flip",
    "preserve_input_precision",
    "builtin_dataset",
    "builtin_num_samples",
    "image_column",
)
AUDIO_FLAGS = ("sample_rate", "n_fft", "hop_length", "top_db", "builtin_num_clips")


def load_fine_tuned(
    name_or_path: str | None,
    settings: DerivedSettings,
    *,
    cache_dir: str | None,
    resolution: int | None,
    prediction_type: str | None,
    codec: LatentCodec | None = None,
    log: logging.Logger | None = None,
) -> tuple[Pretrained | None, DerivedSettings]:
    """The model fine-tuned from (or `None`), and the settings it implies: its sample size (times the autoencoder's
    downsampling factor, for latent diffusion) unless `--resolution` is given (then the UNet samples at the new size
    from now on), its scheduler's prediction type unless `--prediction_type` is given.

    Args:
        name_or_path (`str`, *optional*): `--pretrained_model_name_or_path`; `None`: nothing is fine-tuned.
        settings (`DerivedSettings`): the run's settings so far.
        cache_dir (`str`, *optional*): `--cache_dir`.
        resolution (`int`, *optional*): `--resolution` as given.
        prediction_type (`str`, *optional*): `--prediction_type` as given.
        codec (`LatentCodec`, *optional*): latent diffusion's autoencoder.
        log (`logging.Logger`, *optional*): where the line naming the model goes (the script's logger).
    """
    if not name_or_path:
        return None, settings
    pretrained = load_pretrained(name_or_path, cache_dir)
    index_file = os.path.join(name_or_path, "model_index.json")
    if codec is None and os.path.isfile(index_file) and "vqvae" in _read_json(index_file):
        raise ValueError(
            f"--pretrained_model_name_or_path {name_or_path} is a latent diffusion pipeline: fine-tune it on its own "
            f"autoencoder with --vae_name_or_path {name_or_path} --vae_subfolder vqvae."
        )
    factor = codec.factor if codec is not None else 1
    if resolution is None:
        settings = replace(settings, resolution=pretrained.unet.config.sample_size * factor)
    elif pretrained.unet.config.sample_size * factor != resolution and resolution % factor == 0:
        pretrained.unet.register_to_config(sample_size=resolution // factor)
    inherited = (pretrained.scheduler_config or {}).get("prediction_type")
    if prediction_type is None and inherited:
        settings = replace(settings, prediction_type=inherited)
    (log or logging.getLogger(__name__)).info(
        f"Fine-tuning {name_or_path} with prediction_type {settings.prediction_type}."
    )
    return pretrained, settings


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def data_channels_and_resolution(
    settings: DerivedSettings,
    pretrained: Pretrained | None,
    codec: LatentCodec | None,
    config_name_or_path: str | None,
    resolution: int | None,
) -> tuple[DerivedSettings, int | None]:
    """The image channels the model decides (`None`: the data's own) and the resolution it implies: latent diffusion's
    autoencoder, else the model fine-tuned from, else a `--model_config_name_or_path` config.

    Args:
        settings (`DerivedSettings`): the run's settings so far.
        pretrained (`Pretrained`, *optional*): the model fine-tuned from.
        codec (`LatentCodec`, *optional*): latent diffusion's autoencoder.
        config_name_or_path (`str`, *optional*): `--model_config_name_or_path`.
        resolution (`int`, *optional*): `--resolution` as given.
    """
    if codec is not None:  # latent diffusion: the autoencoder decides the image channels; the UNet sees latents
        # --resolution, else a --model_config_name_or_path UNet's sample_size x the factor, else the preset's
        config = config_name_or_path if pretrained is None and resolution is None else None
        settings = replace(settings, resolution=latent_resolution(codec, settings.resolution, config))
        return settings, codec.image_channels
    if pretrained is not None:
        return settings, pretrained.unet.config.in_channels
    if config_name_or_path:  # the config decides the channels; data follow
        config = UNet2DModel.load_config(config_name_or_path)
        settings = replace(settings, resolution=resolution_for_config(config, settings.resolution, resolution))
        return settings, config["in_channels"]
    return settings, None


def build_data(modality: str, channels: int | None, **options):
    """The training data: mel-spectrogram slices of audio (`modality` "audio") or images.

    Args:
        modality (`str`): the pipeline kind's modality.
        channels (`int`, *optional*): the image channels the model decides; `None`: the data's own.
        options: `resolution`, `seed` and the keywords named in `SOURCE_FLAGS`, `IMAGE_FLAGS` and `AUDIO_FLAGS` (the
            flags of the same names); the image and audio readers each take their own.
    """
    common = {key: options[key] for key in (*SOURCE_FLAGS, "resolution", "seed")}
    if modality == "audio":
        from diffusers_specreg.audio import build_audio_dataset

        return build_audio_dataset(**common, **{key: options[key] for key in AUDIO_FLAGS})
    return build_image_dataset(**common, **{key: options[key] for key in IMAGE_FLAGS}, channels=channels)


def build_model(
    settings: DerivedSettings,
    channels: int,
    pretrained: Pretrained | None,
    codec: LatentCodec | None,
    *,
    pretrained_name_or_path: str | None,
    config_name_or_path: str | None,
    xformers: bool,
    corrupt_band_flag: str | None,
) -> UNet2DModel:
    """The UNet to train, checked against the objective (`check_model_config`), the data's `channels`, the resolution,
    the autoencoder and the spectra.

    Args:
        settings (`DerivedSettings`): the run's settings (preset, resolution, spectra).
        channels (`int`): the data's channels.
        pretrained (`Pretrained`, *optional*): the model fine-tuned from.
        codec (`LatentCodec`, *optional*): latent diffusion's autoencoder.
        pretrained_name_or_path (`str`, *optional*): `--pretrained_model_name_or_path` (for messages).
        config_name_or_path (`str`, *optional*): `--model_config_name_or_path`.
        xformers (`bool`): `--enable_xformers_memory_efficient_attention`.
        corrupt_band_flag (`str`, *optional*): `--corrupt_band` as given (for messages).
    """
    model = build_unet(settings.model_preset, settings.resolution, channels, pretrained, config_name_or_path, codec)
    if pretrained is not None:
        source = f"--pretrained_model_name_or_path {pretrained_name_or_path}"
    else:
        source = f"--model_config_name_or_path {config_name_or_path}" if config_name_or_path else "--model_preset"
    try:  # the objective can train this UNet and its pipeline sample it (e.g. flow's positional time embedding)
        registry.check_model_config(settings.formulation.objective, model.config)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    if codec is not None:
        check_latent_unet(model.config, codec, settings.resolution, source)
    if xformers:
        import importlib.util

        if importlib.util.find_spec("xformers") is None:
            raise ValueError("--enable_xformers_memory_efficient_attention needs xformers: pip install xformers.")
        model.enable_xformers_memory_efficient_attention()
    check_model_and_grid(
        model, settings.resolution, channels, settings.noise_spectrum, settings.corrupt_band, corrupt_band_flag, codec
    )
    return model


def build_objective(settings: DerivedSettings, scheduler_settings: SchedulerSettings, options: dict):
    """The noise scheduler of the run's objective and the objective that noises each batch (with the coloured noise of
    `--noise_spectrum`, SAGD, where it is not white): `(noise_scheduler, objective)`.

    Args:
        settings (`DerivedSettings`): the run's settings (its pipeline kind and noise spectrum).
        scheduler_settings (`SchedulerSettings`): what the scheduler is built from.
        options (`dict`): the objectives' `Option` values by flag (each objective reads its own).
    """
    noise_scheduler = settings.formulation.build_scheduler(scheduler_settings)
    spectrum = settings.noise_spectrum
    noise_fn = (
        None
        if spectrum.is_white
        else (lambda shape, gen, device: spectrum.sample(shape, generator=gen, device=device))
    )
    return noise_scheduler, registry.build_objective(
        settings.formulation.objective, noise_scheduler, noise_fn=noise_fn, **options
    )


@dataclass
class SpectralTraining:
    """Everything the `train_spectral.py` step and its hooks use, built by its `setup` before the first step."""

    data: Any
    mel: Any  # audio: the Mel that turns samples back into sound, else None
    noise_scheduler: Any
    objective: Any
    regularizer: SpectralRegularizer
    ema_model: EMAModel | None
    parts: LoopParts  # the prepared model, optimiser, LR scheduler and loader, the noise RNG (train.loop.prepare)
    schedule: Schedule
    data_preview: torch.Tensor
    checkpointed: dict  # name -> EMA model / regularizer, saved with each checkpoint without pickle
    codec: LatentCodec | None = None  # latent diffusion: the frozen autoencoder that encodes each batch
    pipeline_vae: Any = None  # the same autoencoder in float32, saved and sampled with the UNet


def make_pipeline(settings: DerivedSettings, unet, noise_scheduler, for_sampling: bool, mel=None, vae=None):
    """The pipeline saved (DDPM, EDM, flow, SAGD, audio or latent) or used to draw logged samples (DDIM for speed)."""
    entry = settings.formulation
    pipeline = entry.build_pipeline(unet, noise_scheduler, spectrum=settings.noise_spectrum, mel=mel, vae=vae)
    return entry.fast_pipeline(pipeline) if for_sampling else pipeline


def save_pipeline(
    settings: DerivedSettings, unet, noise_scheduler, ema_model: EMAModel | None, output_dir: str, mel=None, vae=None
) -> None:
    """Save the pipeline (EMA weights if any) to `output_dir` as safetensors; custom pipelines get pipeline.py; a
    latent model carries its autoencoder (`vqvae/`), so the folder is self-contained."""
    with ema_weights(unet, ema_model):
        pipeline = make_pipeline(settings, unet, noise_scheduler, for_sampling=False, mel=mel, vae=vae)
        save_pipeline_folder(pipeline, output_dir)


def build_unet(
    preset: str,
    resolution: int,
    channels: int,
    pretrained=None,
    config_name_or_path: str | None = None,
    codec: LatentCodec | None = None,
) -> UNet2DModel:
    """The UNet: fine-tuned, from a config, or a preset sized to the data (the latents, for latent diffusion).

    Args:
        preset (`str`): `--model_preset`, "default" or "small".
        resolution (`int`): the image size.
        channels (`int`): the data's channels.
        pretrained (`Pretrained`, *optional*): the model fine-tuned from; its UNet is returned.
        config_name_or_path (`str`, *optional*): `--model_config_name_or_path`, a UNet2DModel config.
        codec (`LatentCodec`, *optional*): latent diffusion: the UNet sees its latents.
    """
    if pretrained is not None:
        return pretrained.unet
    if config_name_or_path:
        return UNet2DModel.from_config(UNet2DModel.load_config(config_name_or_path))
    if codec is not None:
        return UNet2DModel(**unet_config(preset, resolution // codec.factor, codec.latent_channels))
    return UNet2DModel(**unet_config(preset, resolution, channels))


def check_model_and_grid(
    model: UNet2DModel,
    resolution: int,
    channels: int,
    noise_spectrum: NoiseSpectrum,
    band: tuple[float, float] | None = None,
    band_flag: str | None = None,
    codec: LatentCodec | None = None,
) -> None:
    """The UNet fits the data and resolution (the latents, for latent diffusion); the spectra hold frequencies of the
    training grid (checked now, not at the first step).

    Args:
        model (`UNet2DModel`): the UNet to train.
        resolution (`int`): the image size.
        channels (`int`): the data's channels.
        noise_spectrum (`NoiseSpectrum`): `--noise_spectrum`, parsed.
        band (`tuple[float, float]`, *optional*): `--corrupt_band`, parsed.
        band_flag (`str`, *optional*): `--corrupt_band` as given (for the message).
        codec (`LatentCodec`, *optional*): latent diffusion's autoencoder (its latent channels are checked by
            `check_latent_unet`).
    """
    factor = unet_downsampling_factor(model.config)
    blocks = len(model.config.down_block_types)
    if codec is not None:  # the UNet sees latents (their channels were checked by check_latent_unet)
        grid = resolution // codec.factor
        if grid % factor:
            raise ValueError(
                f"The {grid}x{grid} latents (--resolution {resolution} / the autoencoder's downsampling "
                f"factor {codec.factor}) are not divisible by {factor}, the downsampling factor of the UNet "
                f"({blocks} down blocks). Use --model_preset small, a UNet config with "
                f"fewer down blocks, or a --resolution that is a multiple of {factor * codec.factor}."
            )
    elif resolution % factor:
        raise ValueError(
            f"--resolution {resolution} is not divisible by {factor}, the downsampling factor of the UNet "
            f"({blocks} down blocks). Use a multiple of {factor}."
        )
    elif model.config.in_channels != channels:
        raise ValueError(
            f"The model takes {model.config.in_channels} channels but the data has {channels}; use a model "
            "config with matching in_channels/out_channels."
        )
    noise_spectrum.weights((resolution, resolution))
    if band is not None:
        try:
            corrupt_band(torch.zeros(1, channels, resolution, resolution), band, 1.0)
        except ValueError as error:
            raise ValueError(
                f"--corrupt_band {band_flag} holds no frequency of the {resolution}x{resolution} "
                "grid; widen the band (radii are normalised so the grid corner is 1)."
            ) from error


def make_ema(model: UNet2DModel, max_decay: float, inv_gamma: float, power: float) -> EMAModel:
    """train_unconditional.py's EMA of `model`'s weights (`--ema_max_decay`, `--ema_inv_gamma`, `--ema_power`)."""
    return EMAModel(
        model.parameters(),
        decay=max_decay,
        use_ema_warmup=True,
        inv_gamma=inv_gamma,
        power=power,
        model_cls=UNet2DModel,
        model_config=model.config,
    )


class ema_weights:
    """Context manager: the EMA weights in `unet` inside the block (if there is an EMA), the training ones after.

    Args:
        unet (`torch.nn.Module`): the trained model.
        ema_model (`EMAModel`, *optional*): its EMA; without one the block sees the training weights.
    """

    def __init__(self, unet, ema_model: EMAModel | None):
        self.unet, self.ema_model = unet, ema_model

    def __enter__(self):
        if self.ema_model is not None:
            self.ema_model.store(self.unet.parameters())
            self.ema_model.copy_to(self.unet.parameters())
        return self.unet

    def __exit__(self, *exc):
        if self.ema_model is not None:
            self.ema_model.restore(self.unet.parameters())
