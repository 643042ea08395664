"""The UNet of `train_spectral.py`: built (fine-tuned, from a config or a preset), checked against the data, its EMA.

Every check here runs before the first step, so a model that does not fit the data or the resolution fails with a
message naming the flag and the fix instead of a shape error inside the loop.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from diffusers.training_utils import EMAModel

from diffusers_specreg.latent import LatentCodec
from diffusers_specreg.noise import NoiseSpectrum, corrupt_band
from diffusers_specreg.training import unet_config, unet_downsampling_factor


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
