"""Latent diffusion: a frozen `AutoencoderKL` that maps images to the scaled latents the UNet is trained on.

The contract with `train_autoencoder.py` (and with Stable Diffusion's VAEs, arXiv 2112.10752):

    latents = vae.encode(images).latent_dist.sample() * vae.config.scaling_factor      # images in [-1, 1]
    images = vae.decode(latents / vae.config.scaling_factor).sample

`scaling_factor` is 1 / std of the sampled latents, so the latents have about unit variance, as the DDPM noise
schedule assumes. Diffusers' `LDMPipeline` applies the same division before decoding, so a UNet trained here is saved
as `LDMPipeline(vqvae=vae, unet=unet, scheduler=scheduler)` and loads with `DiffusionPipeline.from_pretrained`.
"""

from __future__ import annotations

import json
import logging
import os

import torch

from .autoencoder import downsampling_factor, measure_scaling_factor

__all__ = [
    "STOCK_SCALING_FACTOR",
    "LatentCodec",
    "check_latent_unet",
    "downsampling_factor",
    "load_vae",
    "measure_scaling_factor",
]

logger = logging.getLogger(__name__)

STOCK_SCALING_FACTOR = 0.18215  # AutoencoderKL's default: Stable Diffusion v1's measured value, not this model's


def _where(name_or_path: str, subfolder: str | None) -> str:
    return os.path.join(name_or_path, subfolder) if subfolder else name_or_path


def _read_local_config(name_or_path: str, subfolder: str | None) -> dict | None:
    """The autoencoder's `config.json` of a local folder (`None` for a Hub id); `ValueError` if the folder or file
    is missing, with the likely fix."""
    if not os.path.isdir(name_or_path):
        if os.path.isabs(name_or_path) or name_or_path.startswith(".") or name_or_path.count("/") != 1:
            raise ValueError(f"--vae_name_or_path {name_or_path!r} is not a folder (nor a Hub id 'user/repo').")
        return None  # a Hub id: AutoencoderKL.from_pretrained fetches it
    folder = _where(name_or_path, subfolder)
    config_file = os.path.join(folder, "config.json")
    if not os.path.isfile(config_file):
        hint = ""
        if not subfolder and os.path.isfile(os.path.join(name_or_path, "vae", "config.json")):
            hint = " It holds a vae/ folder: add --vae_subfolder vae."
        raise ValueError(
            f"--vae_name_or_path {folder!r} has no config.json: pass the folder that train_autoencoder.py "
            f"(or AutoencoderKL.save_pretrained) wrote.{hint}"
        )
    with open(config_file, encoding="utf-8") as f:
        return json.load(f)


def load_vae(name_or_path: str, subfolder: str | None = None, cache_dir: str | None = None):
    r"""
    Load and check the frozen autoencoder of a latent diffusion run.

    Args:
        name_or_path (`str`): a local `AutoencoderKL` folder or a Hub id (`--vae_name_or_path`).
        subfolder (`str`, *optional*): the autoencoder's subfolder, e.g. `"vae"` in a Stable Diffusion repo.
        cache_dir (`str`, *optional*): Hub cache folder.

    Returns:
        `AutoencoderKL` in eval mode with `requires_grad` off, on the CPU in float32.

    Raises:
        `ValueError`: missing folder, a model that is not an `AutoencoderKL`, or a config without `scaling_factor`.
        A `scaling_factor` equal to the stock 0.18215 only logs a warning (it is right for Stable Diffusion's VAE).
    """
    from diffusers import AutoencoderKL

    config = _read_local_config(name_or_path, subfolder)
    where = _where(name_or_path, subfolder)
    if config is None:
        try:
            config = dict(AutoencoderKL.load_config(name_or_path, subfolder=subfolder, cache_dir=cache_dir))
        except OSError as error:
            raise ValueError(f"--vae_name_or_path {where!r}: no autoencoder config found ({error}).") from error
    kind = config.get("_class_name")
    if kind != "AutoencoderKL":
        raise ValueError(
            f"--vae_name_or_path {where!r} holds a {kind or 'model of unknown class'}, not an AutoencoderKL; latent "
            "diffusion here needs the KL autoencoder of train_autoencoder.py (or Stable Diffusion's vae/)."
        )
    if config.get("scaling_factor") is None:
        raise ValueError(
            f"--vae_name_or_path {where!r}: its config.json has no scaling_factor, so the latents' scale is unknown. "
            "Set it to 1 / std of vae.encode(x).latent_dist.sample() over your data (train_autoencoder.py writes it; "
            "diffusers_specreg.autoencoder.measure_scaling_factor computes it)."
        )
    if abs(float(config["scaling_factor"]) - STOCK_SCALING_FACTOR) < 1e-9:
        logger.warning(
            f"The autoencoder {where!r} has scaling_factor {STOCK_SCALING_FACTOR}, AutoencoderKL's default (right for "
            "Stable Diffusion's VAE, arbitrary for any other). If this autoencoder is not SD's, measure it: 1 / std "
            "of vae.encode(x).latent_dist.sample() over your data (diffusers_specreg.autoencoder.measure_scaling_factor), "
            "and save it with vae.register_to_config(scaling_factor=...)."
        )
    try:
        vae = AutoencoderKL.from_pretrained(name_or_path, subfolder=subfolder, cache_dir=cache_dir)
    except OSError as error:
        raise ValueError(f"--vae_name_or_path {where!r}: cannot load the AutoencoderKL weights ({error}).") from error
    vae.eval().requires_grad_(False)
    return vae


class LatentCodec:
    r"""
    The frozen autoencoder as the training loop uses it: images -> scaled latents (no gradient), and latents ->
    images (differentiable, for spectral losses on the decoded x̂₀).

    Args:
        vae (`AutoencoderKL`): the frozen autoencoder, on the training device in the weight dtype.
        source (`str`): where it came from (`--vae_name_or_path`, with the subfolder), for the model card.
    """

    def __init__(self, vae, source: str):
        self.vae, self.source = vae, source
        self.scaling_factor = float(vae.config.scaling_factor)
        self.factor = downsampling_factor(vae.config)
        self.latent_channels = int(vae.config.latent_channels)
        self.image_channels = int(vae.config.in_channels)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """`[B, C, H, W]` images in [-1, 1] -> `[B, latent_channels, H / f, W / f]` scaled latents, float32 (a
        sample of the posterior, as Stable Diffusion trains)."""
        posterior = self.vae.encode(images.to(self.vae.device, self.vae.dtype)).latent_dist
        return posterior.sample(generator=generator).float() * self.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images `[B, C, H, W]` (about [-1, 1]), float32; differentiable w.r.t. `latents`."""
        return self.vae.decode((latents / self.scaling_factor).to(self.vae.dtype)).sample.float()


def check_latent_unet(config, codec: LatentCodec, resolution: int, source: str) -> None:
    r"""
    The UNet denoises the latents of `resolution`-pixel images: `in_channels` = `out_channels` = the autoencoder's
    `latent_channels` and `sample_size` = resolution / downsampling factor. `ValueError` naming both numbers and
    the fix otherwise.

    Args:
        config (`dict`-like): the UNet's config.
        codec (`LatentCodec`): the autoencoder.
        resolution (`int`): the image resolution (`--resolution`).
        source (`str`): where the UNet came from, e.g. `"--model_config_name_or_path cfg/"`.
    """
    size = resolution // codec.factor
    if source.startswith("--pretrained_model_name_or_path"):
        fix = (
            "Fine-tune a UNet trained on this autoencoder's latents, or leave out --pretrained_model_name_or_path to "
            "train one from scratch."
        )
    else:
        fix = (
            f"Set in_channels and out_channels to {codec.latent_channels} in the UNet config, or leave out "
            "--model_config_name_or_path for a UNet sized to the latents."
        )
    for key in ("in_channels", "out_channels"):
        if config[key] != codec.latent_channels:
            raise ValueError(
                f"The UNet of {source} has {key} {config[key]} but the autoencoder's latents have "
                f"{codec.latent_channels} channels (latent_channels of {codec.source}). {fix}"
            )
    sample_size = config["sample_size"]
    sample_size = sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size
    if sample_size != size:
        raise ValueError(
            f"The UNet of {source} has sample_size {sample_size} but --resolution {resolution} images give "
            f"{size}x{size} latents (the autoencoder downsamples by {codec.factor}). Set sample_size to {size} in the "
            f"UNet config, or pass --resolution {sample_size * codec.factor}."
        )
