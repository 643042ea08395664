"""The models the training scripts build or load: UNet presets, the training resolution of a config, a pretrained UNet
(a pipeline or a bare UNet folder / Hub repo), a pretrained `AutoencoderKL` for fine-tuning and a new, seeded one."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, UNet2DModel

from diffusers_specreg.autoencoder import autoencoder_config


def unet_config(preset: str, resolution: int, channels: int) -> dict:
    """`UNet2DModel` keyword arguments of a named size.

    Args:
        preset (`str`): "default" is the model of Diffusers' `train_unconditional.py` (block widths
            128,128,256,256,512,512, attention in the 5th down and 2nd up block, ~114 M parameters at 3 channels);
            "small" (~1.1 M parameters, three levels) trains at a few steps per second on a CPU.
        resolution (`int`): `sample_size`.
        channels (`int`): input and output channels (inferred from the data, so 1-channel data needs no config
            file).
    """
    if preset == "default":
        return dict(
            sample_size=resolution,
            in_channels=channels,
            out_channels=channels,
            layers_per_block=2,
            block_out_channels=(128, 128, 256, 256, 512, 512),
            down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
        )
    if preset == "small":
        return dict(
            sample_size=resolution,
            in_channels=channels,
            out_channels=channels,
            layers_per_block=1,
            block_out_channels=(32, 64, 64),
            down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
        )
    raise ValueError(f"Unknown model preset {preset!r}; choose 'default' or 'small'.")


def unet_downsampling_factor(config) -> int:
    """How many times a UNet2DModel halves its input: 2 ** (number of down blocks - 1)."""
    return 2 ** (len(config["down_block_types"]) - 1)


def resolution_for_config(config: dict, resolution: int, resolution_from_user: int | None) -> int:
    """The training resolution for a UNet config: its `sample_size` unless `--resolution` was given, and then they
    must agree (the pipeline samples at `sample_size`; a mismatch used to crash the sample logging after training).

    Raises `ValueError` naming both values and the fixes; also for a config whose `out_channels` differ from its
    `in_channels` (the denoising losses compare the output with the input).
    """
    size = config.get("sample_size")
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(
                f"The model config's sample_size {list(size)} is not square; training crops square images. Set "
                "sample_size to one number in the config."
            )
        size = size[0]
    in_channels, out_channels = config.get("in_channels"), config.get("out_channels")
    if in_channels is not None and out_channels is not None and in_channels != out_channels:
        raise ValueError(
            f"The model config has in_channels {in_channels} but out_channels {out_channels}; the losses compare the "
            "output with the input, so set out_channels to in_channels."
        )
    if size is None:
        return resolution
    if resolution_from_user is None:
        return int(size)
    if int(size) != resolution_from_user:
        raise ValueError(
            f"--resolution {resolution_from_user} differs from the model config's sample_size {size}: the model would "
            f"train on {resolution_from_user}x{resolution_from_user} images and sample at {size}x{size}. Leave out "
            f"--resolution (trains at {size}), pass --resolution {size}, or set sample_size to {resolution_from_user} "
            "in the config."
        )
    return resolution


@dataclass
class Pretrained:
    """A model loaded for fine-tuning: the UNet and, when the source was a pipeline, its scheduler config."""

    unet: UNet2DModel
    scheduler_config: dict | None
    source: str


def _has_file(name_or_path: str, filename: str, subfolder: str | None = None) -> bool:
    if os.path.isdir(name_or_path):
        return os.path.isfile(os.path.join(name_or_path, subfolder or "", filename))
    from huggingface_hub import file_exists

    try:
        path = f"{subfolder}/{filename}" if subfolder else filename
        return file_exists(name_or_path, path)
    except Exception:
        return False


def load_pretrained(name_or_path: str, cache_dir: str | None = None) -> Pretrained:
    """Load a UNet2DModel from a pipeline (model_index.json with `unet/`) or a bare UNet folder / Hub repo.

    Raises `ValueError` with what was looked for when neither layout is found.
    """
    try:
        if _has_file(name_or_path, "model_index.json"):
            unet = UNet2DModel.from_pretrained(name_or_path, subfolder="unet", cache_dir=cache_dir)
            scheduler_config = None
            if _has_file(name_or_path, "scheduler_config.json", "scheduler"):
                from diffusers import DDPMScheduler

                scheduler_config = dict(
                    DDPMScheduler.load_config(name_or_path, subfolder="scheduler", cache_dir=cache_dir)
                )
            return Pretrained(unet, scheduler_config, name_or_path)
        return Pretrained(UNet2DModel.from_pretrained(name_or_path, cache_dir=cache_dir), None, name_or_path)
    except OSError as error:
        raise ValueError(
            f"--pretrained_model_name_or_path {name_or_path!r}: found neither a pipeline (model_index.json with a "
            f"unet/ folder) nor a UNet2DModel (config.json + weights). Offline, pass a local folder. ({error})"
        ) from error


def load_autoencoder(
    name_or_path: str | None, subfolder: str | None = None, cache_dir: str | None = None
) -> AutoencoderKL | None:
    """The `AutoencoderKL` that `train_autoencoder.py` fine-tunes, or `None` without `name_or_path`.

    Args:
        name_or_path (`str`, *optional*): `--pretrained_model_name_or_path`, a local folder or Hub id.
        subfolder (`str`, *optional*): `--subfolder` (e.g. "vae" for a Stable Diffusion pipeline repo).
        cache_dir (`str`, *optional*): `--cache_dir`.
    """
    if not name_or_path:
        return None
    try:
        return AutoencoderKL.from_pretrained(name_or_path, subfolder=subfolder, cache_dir=cache_dir)
    except OSError as error:
        raise ValueError(
            f"Cannot load an AutoencoderKL from --pretrained_model_name_or_path {name_or_path!r}"
            f"{f' (--subfolder {subfolder})' if subfolder else ''}: {error}. A Stable Diffusion pipeline "
            "repo keeps it in --subfolder vae."
        ) from None


def new_autoencoder(preset: str, channels: int, resolution: int, seed: int | None = None) -> AutoencoderKL:
    """A new `AutoencoderKL` of `autoencoder_config(preset, channels, resolution)`, its initial weights drawn from
    `seed`: `train_autoencoder.py` builds it before the accelerator seeds torch, so `--seed` must reach it here.

    Args:
        preset (`str`): `--model_preset`, "tiny" or "sd".
        channels (`int`): the data's image channels.
        resolution (`int`): the training image size.
        seed (`int`, *optional*): `--seed`; the same seed gives the same weights. `None`: torch's global random state
            draws them. The global random state is left as it was either way (the accelerator seeds it afterwards).
    """
    config = autoencoder_config(preset, channels, resolution)
    if seed is None:
        return AutoencoderKL(**config)
    with torch.random.fork_rng(devices=[]):  # the model is built on the CPU
        torch.manual_seed(seed)
        return AutoencoderKL(**config)
