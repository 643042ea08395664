"""The checks the training scripts run on their flags before anything is loaded or built.

Each check takes the values it judges and raises a `ValueError` that names the flag, the value and the fix; the
scripts call them in the order they report problems. Checks that need the model or the data (the UNet's grid, the
latents) run while the parts are built (`train.parts`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence

from diffusers_specreg import hub
from diffusers_specreg.autoencoder import LATENT_REGULARIZERS
from diffusers_specreg.diffusion.registry import objective_class
from diffusers_specreg.losses import LOSS_NAMES
from diffusers_specreg.spectrum_matching import DSM_BLOCK, DSMSampler, EncodingSpectrumMatching
from diffusers_specreg.train.runtime import mixed_precision_error
from diffusers_specreg.train.settings import capable, spectral_weights

logger = logging.getLogger(__name__)


def check_at_least_one(values: Mapping[str, int | None]) -> None:
    """Every count given is >= 1 (`None`: not given). `values` maps flag names (without `--`) to values."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}.")


def check_finite(values: Mapping[str, float], *, positive: bool) -> None:
    """Every value is a finite number, > 0 if `positive` else >= 0. `values` maps flag names to values."""
    for name, value in values.items():
        if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
            raise ValueError(f"--{name} must be a finite number {'>' if positive else '>='} 0, got {value}.")


def check_mixed_precision(mixed_precision: str) -> None:
    """`--mixed_precision` is one this machine can run."""
    problem = mixed_precision_error(mixed_precision)
    if problem:
        raise ValueError(problem)


def check_upload(push_to_hub: bool, output_dir: str, logging_dir: str) -> None:
    """The upload of `--push_to_hub` leaves the logging folder out: it must be one (raises for the output folder)."""
    if push_to_hub:
        hub.upload_ignore_patterns(output_dir, logging_dir)


def check_spectral_losses(losses: list[str], spectral_weight: Sequence[str] | None) -> None:
    """`--spectral_loss` names image losses, each once, and `--spectral_weight` gives one λ or one per loss."""
    if "none" in losses:
        raise ValueError("--spectral_loss none means no spectral term; it cannot be combined with other losses.")
    unknown = [name for name in losses if name not in LOSS_NAMES]
    if unknown:
        raise ValueError(f"Unknown --spectral_loss {unknown}; choose from {list(LOSS_NAMES)}.")
    if len(set(losses)) != len(losses):
        raise ValueError(f"--spectral_loss names a loss twice: {losses}.")
    if "mrstft" in losses:
        raise ValueError("--spectral_loss mrstft is a waveform loss; image / spectrogram training takes the others.")
    spectral_weights(spectral_weight, losses)


def check_objective_flags(
    formulation: str, modality: str, prediction_type: str, spectral_max_timestep: int | None
) -> None:
    """The objective of `--formulation` can do what the other flags ask (audio, the prediction type, the t gate)."""
    objective = objective_class(formulation)
    if modality == "audio" and not objective.supports_audio:
        raise ValueError(
            "--modality audio saves an AudioDiffusionPipeline, which samples DDPM/DDIM: use --formulation "
            f"{capable('supports_audio')}."
        )
    if prediction_type not in objective.prediction_types:
        raise ValueError(
            f"--formulation {formulation} supports --prediction_type {' or '.join(objective.prediction_types)}, "
            f"not {prediction_type}."
        )
    if spectral_max_timestep is not None and not objective.integer_timesteps:
        raise ValueError(
            f"--spectral_max_timestep gates integer timesteps ({capable('integer_timesteps')}); with --formulation "
            f"{formulation} use --spectral_max_sigma."
        )


def check_wavelet_levels(losses: list[str], wavelet: str, levels: int, size: int, grid: str = "--resolution") -> None:
    """The wavelet loss's levels fit the `size`x`size` grid it sees (the images, or the latents of latent diffusion).

    Args:
        losses (`list[str]`): the spectral losses; nothing to check without "wavelet".
        wavelet (`str`): `--wavelet`, a PyWavelets name.
        levels (`int`): `--wavelet_levels`.
        size (`int`): the side of the grid.
        grid (`str`, defaults to `"--resolution"`): what the grid is, for the message.
    """
    if "wavelet" not in losses:
        return
    import pywt

    try:
        dec_len = pywt.Wavelet(wavelet).dec_len
    except ValueError:
        raise ValueError(f"--wavelet {wavelet!r} is not a PyWavelets wavelet; try haar, bior1.3 or db2.") from None
    max_level = pywt.dwt_max_level(size, dec_len)
    if levels < 1 or levels > max(max_level, 1) or size % 2**levels:
        raise ValueError(
            f"--wavelet_levels {levels} does not fit {grid} {size} with wavelet "
            f"{wavelet}: the resolution must be divisible by 2**levels and levels <= {max_level}. "
            "Lower --wavelet_levels or change --resolution."
        )


def check_latent_flags(
    vae_name_or_path: str | None, vae_subfolder: str | None, spectral_space: str, losses: list[str]
) -> None:
    """`--vae_subfolder` and `--spectral_space` only with `--vae_name_or_path` (latent diffusion)."""
    if vae_name_or_path is None:
        for flag, value, default in (
            ("vae_subfolder", vae_subfolder, None),
            ("spectral_space", spectral_space, "latent"),
        ):
            if value != default:
                raise ValueError(f"--{flag} {value} applies to latent diffusion only: add --vae_name_or_path.")
    elif spectral_space == "decoded" and not losses:
        logger.warning("--spectral_space decoded has no effect without a --spectral_loss.")


def check_evaluation_flags(eval_num_samples: int, corrupt_strength: float) -> None:
    """`--corrupt_strength` >= 0; `--eval_num_samples` 0 (no metrics) or at least 2."""
    if corrupt_strength < 0:
        raise ValueError(f"--corrupt_strength must be >= 0, got {corrupt_strength}.")
    if eval_num_samples < 0:
        raise ValueError(f"--eval_num_samples must be >= 0, got {eval_num_samples}.")
    if eval_num_samples == 1:
        raise ValueError(
            "--eval_num_samples 1: the card's spectral metrics compare at least 2 samples with 2 data images. Pass 2 "
            "or more, or 0 for a card without metrics."
        )


def check_latent_regularizers(regularizers: list[str]) -> None:
    """`--latent_regularizer` names known regularizers, each once."""
    unknown = [name for name in regularizers if name not in LATENT_REGULARIZERS]
    if unknown:
        raise ValueError(
            f"Unknown --latent_regularizer {unknown}; choose one or more of {list(LATENT_REGULARIZERS)} (or none)."
        )
    if len(set(regularizers)) != len(regularizers):
        raise ValueError(f"--latent_regularizer names a regularizer twice: {regularizers}.")


def check_autoencoder_loss(
    regularizers: list[str],
    *,
    esm_delta: float,
    esm_kernel_size: int,
    esm_sigma: float,
    esm_num_bins: int,
    dsm_ks: Sequence[int],
    perceptual_loss: str,
    lpips_weights: str | None,
) -> None:
    """ESM's blur and DSM's strengths are valid where `regularizers` use them; LPIPS has local weights. The keyword
    arguments are the flags of the same names."""
    if "esm" in regularizers:
        if not (math.isfinite(esm_delta) and esm_delta >= 0):
            raise ValueError(f"--esm_delta must be a finite number >= 0 (the authors' ESM-AE: 1.0), got {esm_delta}.")
        try:
            EncodingSpectrumMatching(esm_kernel_size, esm_sigma, esm_num_bins, esm_delta)
        except ValueError as error:
            raise ValueError(f"--esm_kernel_size/--esm_sigma/--esm_num_bins: {error}") from None
    if "dsm" in regularizers:
        try:
            DSMSampler(dsm_ks)
        except ValueError as error:
            raise ValueError(f"--dsm_ks: {error}") from None
    if perceptual_loss == "lpips":
        if not lpips_weights:
            raise ValueError(
                "--perceptual_loss lpips needs local weights: pass --lpips_weights PATH (the state dict of "
                "lpips.LPIPS(net='vgg')); nothing is downloaded. Or use --perceptual_loss none."
            )
        if not os.path.isfile(lpips_weights):
            raise ValueError(f"--lpips_weights {lpips_weights!r} is not a file.")


def check_autoencoder_grid(regularizers: list[str], resolution: int, factor: int) -> None:
    """The resolution fits the autoencoder's downsampling `factor` and the DSM blocks (image and latent)."""
    if resolution % factor:
        raise ValueError(
            f"--resolution {resolution} is not divisible by {factor}, the downsampling factor of the autoencoder. "
            f"Use a multiple of {factor}."
        )
    if "dsm" in regularizers and resolution % (DSM_BLOCK * factor):
        raise ValueError(
            f"--latent_regularizer dsm cuts image and latent into {DSM_BLOCK}x{DSM_BLOCK} blocks: --resolution "
            f"{resolution} must be a multiple of {DSM_BLOCK * factor} ({DSM_BLOCK} x the downsampling factor "
            f"{factor}), so that the {resolution // factor}x{resolution // factor} latent is too."
        )
    if "esm" in regularizers and resolution // factor < 2:
        raise ValueError(f"--latent_regularizer esm needs a latent of at least 2x2; raise --resolution {resolution}.")
