#!/usr/bin/env python
"""Train an unconditional `UNet2DModel` with spectral regularization: a drop-in for Diffusers'
`examples/unconditional_image_generation/train_unconditional.py`.

Every argument of that script works here with the same name, default and meaning. On top:

    --spectral_loss amplitude_phase          Fourier / wavelet losses on the predicted clean sample (arXiv 2603.02447)
    --formulation edm                        EDM training (arXiv 2206.00364), saved with an EDMPipeline
    --noise_spectrum powerlaw:alpha=-0.04    coloured forward noise (SAGD, arXiv 2510.09660)
    --pretrained_model_name_or_path DIR      fine-tune a saved pipeline or UNet
    --vae_name_or_path AE_DIR                latent diffusion on a frozen AutoencoderKL's scaled latents (LDMPipeline)

Run `accelerate launch train_spectral.py` with no argument to train a small model on built-in checkerboards.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from diffusers import UNet2DModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from diffusers_specreg import hub, run_settings, training
from diffusers_specreg.data import BUILTIN_DATASETS, DataError, build_image_dataset
from diffusers_specreg.losses import LOSS_NAMES
from diffusers_specreg.noise import NoiseSpectrum, corrupt_band

try:  # the pipelines/ folder is installed as diffusers_specreg.pipelines: fail now, not when saving
    import diffusers_specreg.pipelines  # noqa: F401
except ImportError as error:
    raise ImportError(f"{error}. Install the project first: pip install -e . (see README).") from error
from diffusers_specreg.formulations import Formulation, SchedulerSettings, formulation_choices, select_formulation
from diffusers_specreg.latent import LatentCodec, check_latent_unet, load_vae
from diffusers_specreg.objectives import build_objective
from diffusers_specreg.pipelines_io import CUSTOM_PIPELINE_FILE_NAME
from diffusers_specreg.regularizer import DEFAULT_WEIGHTS, SpectralRegularizer
from diffusers_specreg.weighting import DEFAULT_WEIGHTING, WEIGHTINGS

logger = get_logger(__name__, log_level="INFO")
_STATE = {"training_started": False}  # errors before this is set are bad input: reported in one line, exit code 2

# What `accelerate launch train_spectral.py` does with no data named: the product's demo, a run that finishes in
# minutes on a CPU and converges in its budget (lr 5e-4 with a short warm-up), with the paper's amplitude+phase loss
# (Eq. 15) at its default λ and weighting. `--spectral_loss none` gives the MSE baseline of the same run.
BUILTIN_PRESET = dict(
    resolution=32,
    model_preset="small",
    max_train_steps=1500,
    ddpm_num_inference_steps=50,
    learning_rate=5e-4,
    lr_warmup_steps=50,
    spectral_loss=["amplitude_phase"],
)
# What a run that names data uses where the user did not say: train_unconditional.py's defaults (no spectral term).
ANCHOR_DEFAULTS = dict(
    resolution=64,
    model_preset="default",
    ddpm_num_inference_steps=1000,
    learning_rate=1e-4,
    lr_warmup_steps=500,
    spectral_loss=[],
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # --- the arguments of train_unconditional.py, same names, defaults and meaning -------------------------
    data = parser.add_argument_group("data (as train_unconditional.py)")
    data.add_argument("--dataset_name", type=str, default=None, help="A `datasets` dataset (Hub id or local).")
    data.add_argument("--dataset_config_name", type=str, default=None)
    data.add_argument("--train_data_dir", type=str, default=None, help="A folder of images (searched recursively).")
    data.add_argument(
        "--image_column",
        type=str,
        default=None,
        help="The --dataset_name column to train on (default 'image', as train_unconditional.py, else the only image "
        "column).",
    )
    data.add_argument("--cache_dir", type=str, default=None)
    data.add_argument("--resolution", type=int, default=None, help="Image size (default 64; 32 for built-in data).")
    data.add_argument("--center_crop", action="store_true", default=False)
    data.add_argument("--random_flip", action="store_true", default=False)
    data.add_argument("--dataloader_num_workers", type=int, default=0)
    data.add_argument("--preserve_input_precision", action="store_true", help="Keep 16-bit images at full precision.")
    model = parser.add_argument_group("model and output (as train_unconditional.py)")
    model.add_argument(
        "--model_config_name_or_path", type=str, default=None, help="UNet2DModel config to train from scratch."
    )
    model.add_argument(
        "--output_dir",
        type=str,
        default=None,
        help="Default ddpm-model-64 (as train_unconditional.py); for the built-in demo specreg-<dataset>-32.",
    )
    model.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Allow replacing a trained pipeline and checkpoints in output_dir.",
    )
    sched = parser.add_argument_group("schedule (as train_unconditional.py)")
    sched.add_argument("--train_batch_size", type=int, default=16)
    sched.add_argument("--eval_batch_size", type=int, default=16)
    sched.add_argument("--num_epochs", type=int, default=None, help="Default 100 (unless --max_train_steps is set).")
    sched.add_argument("--save_images_epochs", type=int, default=10)
    sched.add_argument("--save_model_epochs", type=int, default=10)
    sched.add_argument("--gradient_accumulation_steps", type=int, default=1)
    optim = parser.add_argument_group("optimiser (as train_unconditional.py)")
    optim.add_argument(
        "--learning_rate", type=float, default=None, help="Default 1e-4 (5e-4 for the built-in demo run)."
    )
    optim.add_argument("--lr_scheduler", type=str, default="cosine")
    optim.add_argument("--lr_warmup_steps", type=int, default=None, help="Default 500 (50 for the built-in demo run).")
    optim.add_argument("--adam_beta1", type=float, default=0.95)
    optim.add_argument("--adam_beta2", type=float, default=0.999)
    optim.add_argument("--adam_weight_decay", type=float, default=1e-6)
    optim.add_argument("--adam_epsilon", type=float, default=1e-08)
    ema = parser.add_argument_group("EMA (as train_unconditional.py)")
    ema.add_argument("--use_ema", action="store_true")
    ema.add_argument("--ema_inv_gamma", type=float, default=1.0)
    ema.add_argument("--ema_power", type=float, default=3 / 4)
    ema.add_argument("--ema_max_decay", type=float, default=0.9999)
    hub = parser.add_argument_group("Hub (as train_unconditional.py)")
    hub.add_argument("--push_to_hub", action="store_true")
    hub.add_argument(
        "--hub_token",
        type=str,
        default=None,
        help="Avoid: a token on the command line shows in `ps`, and `accelerate launch` prints the whole command "
        "when a run fails. By default the token of `hf auth login` or HF_TOKEN is used.",
    )
    hub.add_argument("--hub_model_id", type=str, default=None)
    hub.add_argument("--hub_private_repo", action="store_true")
    log = parser.add_argument_group("logging (as train_unconditional.py)")
    log.add_argument("--logger", type=str, default="tensorboard", choices=["tensorboard", "wandb"])
    log.add_argument("--logging_dir", type=str, default="logs")
    log.add_argument("--local_rank", type=int, default=-1, help="Set by the launcher.")
    log.add_argument("--mixed_precision", type=str, default="no", choices=["no", "fp16", "bf16"])
    diff = parser.add_argument_group("diffusion (as train_unconditional.py)")
    diff.add_argument(
        "--prediction_type",
        type=str,
        default=None,
        choices=["epsilon", "v_prediction", "sample"],
        help="Default epsilon; when fine-tuning, the pretrained scheduler's.",
    )
    diff.add_argument("--ddpm_num_steps", type=int, default=1000)
    diff.add_argument(
        "--ddpm_num_inference_steps",
        type=int,
        default=None,
        help="Sampling steps (default 1000; 50 for built-in data).",
    )
    diff.add_argument("--ddpm_beta_schedule", type=str, default="linear")
    diff.add_argument("--enable_xformers_memory_efficient_attention", action="store_true", help="Needs xformers.")
    ckpt = parser.add_argument_group("checkpoints (as train_unconditional.py)")
    ckpt.add_argument("--checkpointing_steps", type=int, default=500)
    ckpt.add_argument("--checkpoints_total_limit", type=int, default=None)
    ckpt.add_argument("--resume_from_checkpoint", type=str, default=None, help="A checkpoint path or 'latest'.")
    # --- fixes of train_unconditional.py's gaps ---------------------------------------------------------------
    extra = parser.add_argument_group("run control")
    extra.add_argument("--seed", type=int, default=None, help="Seed for data order, noise and initialisation.")
    extra.add_argument("--max_train_steps", type=int, default=None, help="Stop after this many optimiser steps.")
    extra.add_argument(
        "--model_preset",
        type=str,
        default=None,
        choices=["default", "small"],
        help="UNet size when no config is given: 'default' (train_unconditional's) or 'small' (CPU-friendly).",
    )
    extra.add_argument("--builtin_dataset", type=str, default="checkerboards", choices=BUILTIN_DATASETS)
    extra.add_argument(
        "--builtin_num_samples",
        type=int,
        default=2048,
        help="Number of built-in checkerboards or photo crops (fashion_mnist always uses its 60,000 training images).",
    )
    extra.add_argument(
        "--max_nonfinite_steps",
        type=int,
        default=5,
        help="Stop after this many skipped steps (non-finite loss or gradient) in a row.",
    )
    extra.add_argument(
        "--pretrained_model_name_or_path", type=str, default=None, help="Fine-tune this pipeline or UNet."
    )
    # --- spectral regularization (arXiv 2603.02447) ------------------------------------------------------------
    spec = parser.add_argument_group("spectral regularization (arXiv 2603.02447)")
    spec.add_argument(
        "--spectral_loss",
        type=str,
        nargs="*",
        default=None,
        metavar="NAME",
        help=f"Spectral losses on the predicted clean sample, any of {', '.join(LOSS_NAMES)}, or 'none'. Default: "
        "none when data are named (as train_unconditional.py); amplitude_phase for the built-in demo run.",
    )
    spec.add_argument(
        "--spectral_weight",
        type=str,
        nargs="+",
        default=None,
        help="λ per loss (one value for all, or one per loss), a number >= 0. Default: "
        + ", ".join(f"{name} {value}" for name, value in DEFAULT_WEIGHTS.items())
        + " (chosen by the sweep in benchmarks/README.md).",
    )
    spec.add_argument(
        "--spectral_weighting",
        type=str,
        default=DEFAULT_WEIGHTING,
        choices=WEIGHTINGS,
        help=f"Timestep weight of the spectral terms (default {DEFAULT_WEIGHTING}: ᾱ_t, see README).",
    )
    spec.add_argument("--min_snr_gamma", type=float, default=5.0, help="γ of min_sqrt_snr / min_snr.")
    spec.add_argument(
        "--spectral_max_timestep", type=int, default=None, help="Apply spectral terms only at t <= this (DDPM)."
    )
    spec.add_argument(
        "--spectral_max_sigma", type=float, default=None, help="Apply spectral terms only at σ <= this (EDM)."
    )
    spec.add_argument("--wavelet", type=str, default="haar", help="PyWavelets wavelet of the wavelet loss.")
    spec.add_argument("--wavelet_levels", type=int, default=3)
    # --- formulation ------------------------------------------------------------------------------------------
    form = parser.add_argument_group("formulation")
    form.add_argument("--formulation", type=str, default="ddpm", choices=formulation_choices())
    form.add_argument("--edm_sigma_data", type=float, default=0.5)
    form.add_argument("--edm_p_mean", type=float, default=-1.2)
    form.add_argument("--edm_p_std", type=float, default=1.2)
    # --- spectrally anisotropic forward noise (arXiv 2510.09660) ----------------------------------------------------
    sagd = parser.add_argument_group("anisotropic forward noise (SAGD, arXiv 2510.09660)")
    sagd.add_argument(
        "--noise_spectrum",
        type=str,
        default="white",
        help="Forward noise spectrum: white (default), 'powerlaw:alpha=-0.04', 'band:0-0.5' or "
        "'bandpass:low=0-0.3,high=0.6-1,gamma_low=0.7'. Saved with the pipeline and used for sampling.",
    )
    sagd.add_argument(
        "--corrupt_band",
        type=str,
        default=None,
        metavar="A-B",
        help="Selective-omission experiments: add Gaussian noise confined to the radial band A-B (in [0, 1]) to "
        "every training image.",
    )
    sagd.add_argument(
        "--corrupt_strength", type=float, default=0.5, help="Standard deviation of --corrupt_band noise."
    )
    # --- audio (mel-spectrogram images, teticio's audio-diffusion) --------------------------------------------------
    audio = parser.add_argument_group("audio")
    audio.add_argument(
        "--modality",
        type=str,
        default="image",
        choices=["image", "audio"],
        help="'audio': train on mel-spectrogram slices of audio files (--train_data_dir / --dataset_name, or "
        "built-in synthetic audio) and save an AudioDiffusionPipeline.",
    )
    audio.add_argument("--sample_rate", type=int, default=22050)
    audio.add_argument("--n_fft", type=int, default=2048)
    audio.add_argument("--hop_length", type=int, default=512)
    audio.add_argument("--top_db", type=int, default=80)
    audio.add_argument("--builtin_num_clips", type=int, default=64, help="Number of built-in synthetic audio clips.")
    # --- latent diffusion (arXiv 2112.10752; autoencoders of train_autoencoder.py, arXiv 2603.14645) -------------
    latent = parser.add_argument_group("latent diffusion")
    latent.add_argument(
        "--vae_name_or_path",
        type=str,
        default=None,
        help="A frozen AutoencoderKL (local folder or Hub id; e.g. the output of train_autoencoder.py): train the UNet "
        "on its latents, encode(x).latent_dist.sample() * scaling_factor, and save an LDMPipeline with it. "
        "--resolution stays the image size.",
    )
    latent.add_argument(
        "--vae_subfolder", type=str, default=None, help="Subfolder of --vae_name_or_path, e.g. 'vae' for an SD repo."
    )
    latent.add_argument(
        "--spectral_space",
        type=str,
        default="latent",
        choices=["latent", "decoded"],
        help="Where the spectral losses compare x̂₀ with x₀ in latent diffusion: 'latent' (default) on the latents, "
        "'decoded' on images decoded by the frozen autoencoder (gradients flow through its decoder).",
    )
    # --- evaluation for the model card --------------------------------------------------------------------------
    evals = parser.add_argument_group("evaluation")
    evals.add_argument(
        "--eval_num_samples",
        type=int,
        default=64,
        help="Samples for the quick evaluation whose spectral metrics go into the model card (0: none).",
    )
    evals.add_argument(
        "--eval_sampler",
        choices=["pipeline", "fast"],
        default="pipeline",
        help="Sampler of the card's grid and metrics, with --ddpm_num_inference_steps: the saved pipeline's own "
        "(DDPM: ancestral; chosen by benchmarks/bench_card_sampler.py) or fast (DDIM, eta 0). Audio: always fast.",
    )
    args = parser.parse_args(argv)
    if args.output_dir is None:  # the anchor's name, unless the built-in demo runs (it is not a 64x64 model)
        builtin = not (args.dataset_name or args.train_data_dir)
        args.output_dir = f"specreg-{args.builtin_dataset}-{args.resolution or 32}" if builtin else "ddpm-model-64"
    env_local_rank = int(os.environ.get("LOCAL_RANK", -1))
    if env_local_rank != -1 and env_local_rank != args.local_rank:
        args.local_rank = env_local_rank
    return args


@dataclass
class RunSettings:
    r"""
    What a run derives from its command line; `args` itself stays exactly as parsed.

    Args:
        formulation (`Formulation`): the registry entry (DDPM, EDM, SAGD or audio), `diffusers_specreg.formulations`.
        noise_spectrum (`NoiseSpectrum`): `--noise_spectrum`, parsed.
        corrupt_band (`tuple[float, float]`, *optional*): `--corrupt_band`, parsed.
        builtin (`bool`): no data named, so the quick built-in preset applies.
        resolution (`int`): `--resolution`, else the fine-tuned model's sample size, else the preset's.
        model_preset (`str`): `--model_preset`, else the preset's.
        ddpm_num_inference_steps (`int`): `--ddpm_num_inference_steps`, else the preset's.
        prediction_type (`str`): `--prediction_type`, else the fine-tuned scheduler's, else `"epsilon"`.
        max_train_steps (`int`, *optional*): `--max_train_steps`, else the preset's; set from `num_epochs` once the
            data size is known.
        num_epochs (`int`, *optional*): `--num_epochs`, else 100 for named data; recomputed from `max_train_steps`.
        learning_rate (`float`): `--learning_rate`, else the preset's (5e-4 for the built-in demo, 1e-4 otherwise).
        lr_warmup_steps (`int`): `--lr_warmup_steps`, else the preset's (50 for the built-in demo, 500 otherwise).
        spectral_loss (`list[str]`): `--spectral_loss` ("none" -> []), else the preset's (`amplitude_phase` for the
            built-in demo, none otherwise).
    """

    formulation: Formulation
    noise_spectrum: NoiseSpectrum
    corrupt_band: tuple[float, float] | None
    builtin: bool
    resolution: int
    model_preset: str
    ddpm_num_inference_steps: int
    prediction_type: str
    max_train_steps: int | None
    num_epochs: int | None
    learning_rate: float
    lr_warmup_steps: int
    spectral_loss: list[str]

    def config(self, args) -> dict:
        """`vars(args)` with the derived values and without the Hub token: what the trackers and the card record."""
        config = {k: v for k, v in vars(args).items() if k != "hub_token"}  # the token never goes into the logs
        derived = (
            "builtin",
            "resolution",
            "model_preset",
            "ddpm_num_inference_steps",
            "prediction_type",
            "learning_rate",
            "lr_warmup_steps",
            "spectral_loss",
        )
        config.update({key: getattr(self, key) for key in (*derived, "max_train_steps", "num_epochs")})
        return config


def derive_settings(args) -> RunSettings:
    """The anchor's defaults, or the quick built-in preset when no data is named; the parsed spectra; the kind."""
    builtin = not (args.dataset_name or args.train_data_dir)
    preset = BUILTIN_PRESET if builtin else ANCHOR_DEFAULTS
    keys = ("resolution", "model_preset", "ddpm_num_inference_steps", "learning_rate", "lr_warmup_steps")
    defaults = {key: preset[key] if getattr(args, key) is None else getattr(args, key) for key in keys}
    spectral_loss = list(preset["spectral_loss"]) if args.spectral_loss is None else list(args.spectral_loss)
    if spectral_loss == ["none"]:  # `--spectral_loss none` (or the bare flag): the MSE baseline
        spectral_loss = []
    max_train_steps, num_epochs = args.max_train_steps, args.num_epochs
    if num_epochs is None and max_train_steps is None:
        max_train_steps, num_epochs = (BUILTIN_PRESET["max_train_steps"], None) if builtin else (None, 100)
    spectrum = NoiseSpectrum.parse(args.noise_spectrum)
    if not spectrum.is_white and args.formulation != "ddpm":
        raise ValueError("--noise_spectrum needs --formulation ddpm (the EDM sampler draws white noise).")
    return RunSettings(
        formulation=select_formulation(
            args.formulation, args.modality, not spectrum.is_white, latent=bool(args.vae_name_or_path)
        ),
        noise_spectrum=spectrum,
        corrupt_band=parse_band(args.corrupt_band) if args.corrupt_band else None,
        builtin=builtin,
        prediction_type=args.prediction_type or "epsilon",  # a fine-tuned scheduler's replaces it, see setup()
        max_train_steps=max_train_steps,
        num_epochs=num_epochs,
        spectral_loss=spectral_loss,
        **defaults,
    )


def spectral_weights(args, losses: list[str]) -> list[float | None]:
    """Parse --spectral_weight into one λ per loss (None: that loss's default), with errors that say what is allowed."""
    values = []
    for raw in args.spectral_weight if args.spectral_weight is not None else [None]:
        if raw is None:
            values.append(None)
            continue
        if raw.strip().lower() == "auto":
            raise ValueError(
                "--spectral_weight auto was removed: it set λ from the ratio of loss values, so the spectral pull "
                "faded as the MSE converged. Give a number, or leave --spectral_weight out for the default λ."
            )
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"--spectral_weight {raw!r} is not a number.") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"--spectral_weight must be >= 0 and finite, got {raw}.")
        values.append(value)
    if len(values) == 1:
        return values * len(losses)
    if len(values) != len(losses):
        raise ValueError(
            f"--spectral_weight has {len(values)} values for {len(losses)} losses "
            f"({losses}); give one value for all or one per loss."
        )
    return values


def parse_band(text: str) -> tuple[float, float]:
    """'A-B' -> (A, B) with 0 <= A < B <= 1 (normalised radial frequency)."""
    try:
        low, high = (float(v) for v in text.split("-"))
    except ValueError:
        raise ValueError(f"--corrupt_band {text!r} must look like 'A-B' with 0 <= A < B <= 1, e.g. 0.5-0.8.") from None
    if not 0 <= low < high <= 1:
        raise ValueError(f"--corrupt_band {text!r} must satisfy 0 <= A < B <= 1 (normalised radial frequency).")
    return low, high


def validate_args(args, settings: RunSettings) -> None:
    """Every check that can fail before training starts (ValueError with the problem and the fix)."""
    losses = settings.spectral_loss
    if "none" in losses:
        raise ValueError("--spectral_loss none means no spectral term; it cannot be combined with other losses.")
    unknown = [name for name in losses if name not in LOSS_NAMES]
    if unknown:
        raise ValueError(f"Unknown --spectral_loss {unknown}; choose from {list(LOSS_NAMES)}.")
    if len(set(losses)) != len(losses):
        raise ValueError(f"--spectral_loss names a loss twice: {losses}.")
    if "mrstft" in losses:
        raise ValueError("--spectral_loss mrstft is a waveform loss; image / spectrogram training takes the others.")
    spectral_weights(args, losses)
    for name in ("train_batch_size", "eval_batch_size", "gradient_accumulation_steps", "resolution", "ddpm_num_steps"):
        value = settings.resolution if name == "resolution" else getattr(args, name)
        if value < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}.")
    for name in ("num_epochs", "max_train_steps", "checkpointing_steps", "checkpoints_total_limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}.")
    if not (math.isfinite(settings.learning_rate) and settings.learning_rate > 0):
        raise ValueError(f"--learning_rate must be a finite number > 0, got {settings.learning_rate}.")
    if args.modality == "audio" and args.formulation == "edm":
        raise ValueError(
            "--modality audio saves an AudioDiffusionPipeline, which samples DDPM/DDIM: use --formulation ddpm."
        )
    if args.formulation == "edm" and settings.prediction_type == "sample":
        raise ValueError("--formulation edm supports --prediction_type epsilon or v_prediction, not sample.")
    if args.spectral_max_timestep is not None and args.formulation != "ddpm":
        raise ValueError(
            "--spectral_max_timestep gates DDPM timesteps; with --formulation edm use --spectral_max_sigma."
        )
    if not args.vae_name_or_path or args.spectral_space == "decoded":  # latent grids are checked in setup
        check_wavelet_levels(args, losses, settings.resolution)
    if args.vae_name_or_path is None:
        for flag, value, default in (
            ("vae_subfolder", args.vae_subfolder, None),
            ("spectral_space", args.spectral_space, "latent"),
        ):
            if value != default:
                raise ValueError(f"--{flag} {value} applies to latent diffusion only: add --vae_name_or_path.")
    elif args.spectral_space == "decoded" and not losses:
        logging.getLogger(__name__).warning("--spectral_space decoded has no effect without a --spectral_loss.")
    if args.corrupt_strength < 0:
        raise ValueError(f"--corrupt_strength must be >= 0, got {args.corrupt_strength}.")
    if args.eval_num_samples < 0:
        raise ValueError(f"--eval_num_samples must be >= 0, got {args.eval_num_samples}.")
    if args.eval_num_samples == 1:
        raise ValueError(
            "--eval_num_samples 1: the card's spectral metrics compare at least 2 samples with 2 data images. Pass 2 "
            "or more, or 0 for a card without metrics."
        )
    if args.image_column is not None and args.modality == "audio":
        raise ValueError("--image_column applies to image datasets; --modality audio finds the audio column itself.")
    if args.push_to_hub:  # the upload leaves the logging folder out: it must be one (raises for the output folder)
        hub.upload_ignore_patterns(args.output_dir, args.logging_dir)
    problem = training.mixed_precision_error(args.mixed_precision)
    if problem:
        raise ValueError(problem)
    if args.push_to_hub and not args.hub_model_id and not args.output_dir:
        raise ValueError("--push_to_hub needs --hub_model_id or an --output_dir name.")
    if args.hub_token:  # the value is never printed or saved by this script (hparams, card, checkpoints leave it out)
        logging.getLogger(__name__).warning(
            "--hub_token on the command line shows in `ps`, and `accelerate launch` prints the whole command when a "
            "run fails. Log in with `hf auth login` or set HF_TOKEN instead; they are used by default."
        )
    if args.push_to_hub and not args.hub_model_id and not args.output_dir:
        raise ValueError("--push_to_hub needs --hub_model_id or an --output_dir name.")


def check_wavelet_levels(args, losses: list[str], size: int, grid: str = "--resolution") -> None:
    """The wavelet loss's levels fit the `size`x`size` grid it sees (the images, or the latents of latent diffusion)."""
    if "wavelet" not in losses:
        return
    import pywt

    try:
        wavelet = pywt.Wavelet(args.wavelet)
    except ValueError:
        raise ValueError(
            f"--wavelet {args.wavelet!r} is not a PyWavelets wavelet; try haar, bior1.3 or db2."
        ) from None
    max_level = pywt.dwt_max_level(size, wavelet.dec_len)
    if args.wavelet_levels < 1 or args.wavelet_levels > max(max_level, 1) or size % 2**args.wavelet_levels:
        raise ValueError(
            f"--wavelet_levels {args.wavelet_levels} does not fit {grid} {size} with wavelet "
            f"{args.wavelet}: the resolution must be divisible by 2**levels and levels <= {max_level}. "
            "Lower --wavelet_levels or change --resolution."
        )


def run_output_names(args, settings: RunSettings) -> list[str]:
    """The top-level names this run writes in --output_dir besides the logging folder and checkpoints: the pipeline
    (`model_index.json`, a folder per component: `mel/` for audio, `vqvae/` for latent diffusion; `pipeline.py` for a
    custom pipeline), the card and `training_args.json`, and `evaluation/` when it evaluates."""
    names = ["model_index.json", "unet", "scheduler"]
    names += ["mel"] if settings.formulation.modality == "audio" else []
    names += ["vqvae"] if args.vae_name_or_path else []
    names += [CUSTOM_PIPELINE_FILE_NAME] if settings.formulation.is_custom else []
    names += ["README.md", "training_args.json"]
    return names + (["evaluation"] if args.eval_num_samples > 0 else [])


def check_output_dir(args, settings: RunSettings) -> None:
    """Refuse to overwrite a trained pipeline, checkpoints or user files unless asked to; never delete on resume; never
    write over or delete the model being fine-tuned, the autoencoder or the training data."""
    outputs = run_output_names(args, settings)
    vae = os.path.join(args.vae_name_or_path, args.vae_subfolder or "") if args.vae_name_or_path else None
    run_settings.check_inputs(
        args.output_dir,
        {"--pretrained_model_name_or_path": args.pretrained_model_name_or_path, "--vae_name_or_path": vae},
        {"--train_data_dir": args.train_data_dir, "--dataset_name": args.dataset_name},
        outputs,
        args.logging_dir,
    )
    run_settings.check_output_dir(
        args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir, args.logging_dir, outputs
    )


def hub_target(args) -> hub.HubTarget | None:
    """Where `--push_to_hub` uploads the run's folder; None without it."""
    if not args.push_to_hub:
        return None
    return hub.HubTarget(args.output_dir, args.hub_model_id, args.hub_token, args.hub_private_repo, args.logging_dir)


def optimizer_settings(args) -> dict:
    """AdamW's settings besides the learning rate (also re-applied on resume, so changed flags take effect)."""
    return dict(betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)


def build_model(
    args, settings: RunSettings, channels: int, pretrained, codec: LatentCodec | None = None
) -> UNet2DModel:
    """The UNet: fine-tuned, from a config, or a preset sized to the data (the latents, for latent diffusion)."""
    if pretrained is not None:
        return pretrained.unet
    if args.model_config_name_or_path:
        config = UNet2DModel.load_config(args.model_config_name_or_path)
        return UNet2DModel.from_config(config)
    if codec is not None:
        size, channels = settings.resolution // codec.factor, codec.latent_channels
        return UNet2DModel(**training.unet_config(settings.model_preset, size, channels))
    return UNet2DModel(**training.unet_config(settings.model_preset, settings.resolution, channels))


def build_noise_scheduler(args, settings: RunSettings, pretrained):
    scheduler_settings = SchedulerSettings(
        prediction_type=settings.prediction_type,
        num_train_timesteps=args.ddpm_num_steps,
        beta_schedule=args.ddpm_beta_schedule,
        sigma_data=args.edm_sigma_data,
        pretrained_config=pretrained.scheduler_config if pretrained is not None else None,
    )
    return settings.formulation.build_scheduler(scheduler_settings)


def make_pipeline(settings: RunSettings, unet, noise_scheduler, for_sampling: bool, mel=None, vae=None):
    """The pipeline saved (DDPM, EDM, SAGD, audio or latent) or used to draw logged samples (DDIM for speed)."""
    entry = settings.formulation
    pipeline = entry.build_pipeline(unet, noise_scheduler, spectrum=settings.noise_spectrum, mel=mel, vae=vae)
    return entry.fast_pipeline(pipeline) if for_sampling else pipeline


class ema_weights:
    """Context manager: the EMA weights in `unet` inside the block (if there is an EMA), the training ones after."""

    def __init__(self, unet, ema_model):
        self.unet, self.ema_model = unet, ema_model

    def __enter__(self):
        if self.ema_model is not None:
            self.ema_model.store(self.unet.parameters())
            self.ema_model.copy_to(self.unet.parameters())
        return self.unet

    def __exit__(self, *exc):
        if self.ema_model is not None:
            self.ema_model.restore(self.unet.parameters())


def log_samples(
    args, settings, accelerator, unet, noise_scheduler, ema_model, data_batch, global_step, mel=None, vae=None
):
    """Sample `eval_batch_size` images (EMA weights if any; decoded by `vae` for latent diffusion); log a grid, a RAPSD
    plot vs the data (and audio)."""
    from diffusers_specreg import metrics, plots

    audios = None
    with ema_weights(unet, ema_model):
        pipeline = make_pipeline(settings, unet, noise_scheduler, for_sampling=True, mel=mel, vae=vae)
        pipeline.set_progress_bar_config(disable=True)
        generator = torch.Generator(device=pipeline.device).manual_seed(0)
        if settings.formulation.modality == "audio":
            from diffusers_specreg.audio import generate_audio

            mel_images, audios, sample_rate = generate_audio(
                pipeline, args.eval_batch_size, settings.ddpm_num_inference_steps, generator
            )
            images = mel_images[..., None].astype(np.float32) / 255.0
        else:
            images = pipeline(
                generator=generator,
                batch_size=args.eval_batch_size,
                num_inference_steps=settings.ddpm_num_inference_steps,
                output_type="np",
            ).images
    samples = torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1
    data_freqs, data_power = metrics.rapsd(data_batch.float().cpu())
    sample_freqs, sample_power = metrics.rapsd(samples)
    curves = {
        "data": (data_freqs, data_power.mean(0).numpy()),
        "samples": (sample_freqs, sample_power.mean(0).numpy()),
    }
    distance = metrics.log_rapsd_distance(curves["samples"][1], curves["data"][1])
    figure = plots.plot_rapsd(curves, title=f"RAPSD at step {global_step}")
    if args.logger == "tensorboard":
        writer = accelerator.get_tracker("tensorboard", unwrap=True)
        # one grid with 2-pixel gaps between the tiles (add_images would butt them together), as the card's grid
        writer.add_image("samples", plots.image_grid(samples, nrow=8), global_step, dataformats="HWC")
        writer.add_image("rapsd", plots.figure_to_array(figure), global_step, dataformats="HWC")
        for i, clip in enumerate(audios[:4] if audios is not None else []):
            clip = 0.9 * clip / max(float(np.abs(clip).max()), 1e-9)  # Griffin-Lim output exceeds [-1, 1]
            writer.add_audio(f"audio/{i}", torch.from_numpy(clip)[None], global_step, sample_rate=sample_rate)
    else:
        import wandb

        logs = {"samples": [wandb.Image(i) for i in images], "rapsd": wandb.Image(plots.figure_to_array(figure))}
        if audios is not None:
            logs["audio"] = [
                wandb.Audio(0.9 * clip / max(float(np.abs(clip).max()), 1e-9), sample_rate=sample_rate)
                for clip in audios[:4]
            ]
        accelerator.get_tracker("wandb").log(logs, step=global_step)
    accelerator.log({f"eval/log_rapsd_distance_{k}": v for k, v in distance.items()}, step=global_step)


def save_pipeline(args, settings, unet, noise_scheduler, ema_model, mel=None, vae=None):
    """Save the pipeline (EMA weights if any) to output_dir as safetensors; custom pipelines get pipeline.py; a
    latent model carries its autoencoder (`vqvae/`), so the folder is self-contained."""
    from diffusers_specreg.pipelines_io import save_pipeline as save

    with ema_weights(unet, ema_model):
        save(make_pipeline(settings, unet, noise_scheduler, for_sampling=False, mel=mel, vae=vae), args.output_dir)


def evaluate_and_write_card(
    args, settings, accelerator, data, regularizer, codec: LatentCodec | None = None, interrupt=None
):
    """Quick evaluation of the saved pipeline (metrics in the card), then the model card itself. A SIGINT / SIGTERM
    (`interrupt`) during the evaluation's sampling raises `training.TrainingInterrupted` within one step."""
    from diffusers_specreg.evaluate import dataset_info, evaluate_pipeline, load_pipeline
    from diffusers_specreg.model_card import write_model_card

    metrics, grid, plot = None, None, None
    if args.eval_num_samples > 0 and card_evaluation_problem(args, data) is None:
        pipeline = load_pipeline(args.output_dir, device=accelerator.device)
        pipeline.set_progress_bar_config(disable=True)
        with training.stop_on_interrupt(interrupt, pipeline.unet):
            metrics = evaluate_pipeline(
                pipeline,
                data.dataset,
                args.eval_num_samples,
                args.eval_batch_size,
                settings.ddpm_num_inference_steps,
                args.seed or 0,
                os.path.join(args.output_dir, "evaluation"),
                name=os.path.basename(os.path.abspath(args.output_dir)),
                dataset=dataset_info(
                    args.dataset_name,
                    args.train_data_dir,
                    args.builtin_dataset,
                    modality=settings.formulation.modality,
                ),
                # audio pipelines are sampled with DDIM on the mel images either way (their call vocodes every image)
                sampler=args.eval_sampler if settings.formulation.modality != "audio" else "fast",
            )
        grid, plot = "evaluation/samples.png", "evaluation/rapsd.png"
        logger.info(f"Spectral metrics of {args.eval_num_samples} samples: {metrics.log_rapsd_distance}")
    config = settings.config(args)
    config["noise_spectrum"] = args.noise_spectrum
    config["final_spectral_weights"] = regularizer.current_weights()
    if codec is not None:
        config["vae_scaling_factor"] = codec.scaling_factor
    write_model_card(
        args.output_dir,
        config=config,
        metrics=metrics,
        base_model=args.pretrained_model_name_or_path,
        dataset_name=data.name,
        pipeline_class=read_json(os.path.join(args.output_dir, "model_index.json"))["_class_name"],
        sample_grid=grid,
        spectrum_plot=plot,
    )
    return metrics


def card_evaluation_problem(args, data) -> str | None:
    """Why the card's quick evaluation cannot run on the training data (warned before training, then skipped)."""
    if args.eval_num_samples > 0 and len(data.dataset) < 2:
        return (
            f"The data holds {len(data.dataset)} training image: the model card's spectral metrics compare samples "
            "with at least 2 data images, so this run skips them and writes the card without metrics. Add images "
            "to get them (or pass --eval_num_samples 0 to silence this)."
        )
    return None


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


@dataclass
class Training:
    """Everything the training loop uses, built by `setup` before the first step."""

    data: Any
    mel: Any  # audio: the Mel that turns samples back into sound, else None
    model: UNet2DModel
    noise_scheduler: Any
    objective: Any
    regularizer: SpectralRegularizer
    ema_model: EMAModel | None
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    sampler: training.EpochShuffleSampler
    train_dataloader: torch.utils.data.DataLoader
    updates_per_epoch: int
    noise_rng: training.CheckpointedGenerator
    data_preview: torch.Tensor
    checkpointed: dict  # name -> EMA model / regularizer, saved with each checkpoint without pickle
    codec: LatentCodec | None = None  # latent diffusion: the frozen autoencoder that encodes each batch
    pipeline_vae: Any = None  # the same autoencoder in float32, saved and sampled with the UNet


def load_pretrained(args, settings: RunSettings, codec: LatentCodec | None = None):
    """The model fine-tuned from (or `None`), and the settings it implies: its sample size (times the autoencoder's
    downsampling factor, for latent diffusion) unless `--resolution` is given (then the UNet samples at the new size
    from now on), its scheduler's prediction type unless `--prediction_type` is given."""
    if not args.pretrained_model_name_or_path:
        return None, settings
    pretrained = training.load_pretrained(args.pretrained_model_name_or_path, args.cache_dir)
    index_file = os.path.join(args.pretrained_model_name_or_path, "model_index.json")
    if codec is None and os.path.isfile(index_file) and "vqvae" in read_json(index_file):
        raise ValueError(
            f"--pretrained_model_name_or_path {args.pretrained_model_name_or_path} is a latent diffusion pipeline: "
            f"fine-tune it on its own autoencoder with --vae_name_or_path {args.pretrained_model_name_or_path} "
            "--vae_subfolder vqvae."
        )
    factor = codec.factor if codec is not None else 1
    if args.resolution is None:
        settings = replace(settings, resolution=pretrained.unet.config.sample_size * factor)
    elif pretrained.unet.config.sample_size * factor != args.resolution and args.resolution % factor == 0:
        pretrained.unet.register_to_config(sample_size=args.resolution // factor)
    inherited = (pretrained.scheduler_config or {}).get("prediction_type")
    if args.prediction_type is None and inherited:
        settings = replace(settings, prediction_type=inherited)
    logger.info(f"Fine-tuning {args.pretrained_model_name_or_path} with prediction_type {settings.prediction_type}.")
    return pretrained, settings


def build_data(args, settings: RunSettings, channels: int | None):
    """The training data: mel-spectrogram slices of audio (audio kinds) or images."""
    common = dict(
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        train_data_dir=args.train_data_dir,
        cache_dir=args.cache_dir,
        resolution=settings.resolution,
        seed=args.seed or 0,
    )
    if settings.formulation.modality == "audio":
        from diffusers_specreg.audio import build_audio_dataset

        audio = ("sample_rate", "n_fft", "hop_length", "top_db", "builtin_num_clips")
        return build_audio_dataset(**common, **{key: getattr(args, key) for key in audio})
    image = (
        "center_crop",
        "random_flip",
        "preserve_input_precision",
        "builtin_dataset",
        "builtin_num_samples",
        "image_column",
    )
    return build_image_dataset(**common, **{key: getattr(args, key) for key in image}, channels=channels)


def check_model_and_grid(
    args, settings: RunSettings, model: UNet2DModel, channels: int, codec: LatentCodec | None = None
) -> None:
    """The UNet fits the data and resolution (the latents, for latent diffusion); the spectra hold frequencies of the
    training grid (checked now, not at the first step)."""
    factor = training.unet_downsampling_factor(model.config)
    if codec is not None:  # the UNet sees latents (their channels were checked by check_latent_unet)
        grid = settings.resolution // codec.factor
        if grid % factor:
            raise ValueError(
                f"The {grid}x{grid} latents (--resolution {settings.resolution} / the autoencoder's downsampling "
                f"factor {codec.factor}) are not divisible by {factor}, the downsampling factor of the UNet "
                f"({len(model.config.down_block_types)} down blocks). Use --model_preset small, a UNet config with "
                f"fewer down blocks, or a --resolution that is a multiple of {factor * codec.factor}."
            )
    elif settings.resolution % factor:
        raise ValueError(
            f"--resolution {settings.resolution} is not divisible by {factor}, the downsampling factor of the UNet "
            f"({len(model.config.down_block_types)} down blocks). Use a multiple of {factor}."
        )
    elif model.config.in_channels != channels:
        raise ValueError(
            f"The model takes {model.config.in_channels} channels but the data has {channels}; use a model "
            "config with matching in_channels/out_channels."
        )
    size = settings.resolution
    settings.noise_spectrum.weights((size, size))
    if settings.corrupt_band is not None:
        try:
            corrupt_band(torch.zeros(1, channels, size, size), settings.corrupt_band, 1.0)
        except ValueError as error:
            raise ValueError(
                f"--corrupt_band {args.corrupt_band} holds no frequency of the {size}x{size} "
                "grid; widen the band (radii are normalised so the grid corner is 1)."
            ) from error


def load_codec(args, accelerator: Accelerator) -> tuple[LatentCodec | None, Any]:
    """Latent diffusion: the frozen autoencoder of `--vae_name_or_path` on the accelerator device in the weight dtype
    (the encoder of every batch, the decoder of `--spectral_space decoded`), and a float32 one for the saved and
    sampled pipeline (the same object without mixed precision). `(None, None)` for pixel-space training."""
    if not args.vae_name_or_path:
        return None, None
    vae = load_vae(args.vae_name_or_path, args.vae_subfolder, args.cache_dir)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    pipeline_vae = vae.to(accelerator.device)
    if weight_dtype != torch.float32:
        import copy

        vae = copy.deepcopy(pipeline_vae).to(dtype=weight_dtype)
    source = os.path.join(args.vae_name_or_path, args.vae_subfolder) if args.vae_subfolder else args.vae_name_or_path
    codec = LatentCodec(vae, source)
    logger.info(
        f"Latent diffusion on {source}: {codec.latent_channels}-channel latents, downsampling {codec.factor}, "
        f"scaling_factor {codec.scaling_factor:.6g}, spectral losses on the {args.spectral_space} x̂₀."
    )
    return codec, pipeline_vae


def warn_latent_scale(codec: LatentCodec, images: torch.Tensor) -> float:
    """Warn when the scaled latents of a data batch are far from unit variance (the noise schedule assumes it), with
    the scaling factor that would fix it; returns their standard deviation."""
    generator = torch.Generator(device=codec.vae.device).manual_seed(0)
    std = float(codec.encode(images, generator).std())
    if not 0.5 <= std <= 2.0:
        logger.warning(
            f"The scaled latents of a data batch have std {std:.3g} (scaling_factor {codec.scaling_factor:.6g} of "
            f"{codec.source}); the noise schedule assumes about 1. A scaling_factor of "
            f"{codec.scaling_factor / max(std, 1e-12):.6g} would give unit variance on this data "
            "(vae.register_to_config(scaling_factor=...) and save_pretrained, or train_autoencoder.py measures it)."
        )
    return std


def latent_resolution(args, settings: RunSettings, codec: LatentCodec, pretrained) -> RunSettings:
    """The image resolution of latent diffusion: `--resolution`, else a `--model_config_name_or_path` UNet's
    sample_size times the autoencoder's downsampling factor (a fine-tuned UNet's was set by `load_pretrained`), else
    the preset's; it must be a multiple of that factor, and the latent grid must hold the wavelet levels."""
    if pretrained is None and args.model_config_name_or_path and args.resolution is None:
        size = UNet2DModel.load_config(args.model_config_name_or_path).get("sample_size")
        size = size[0] if isinstance(size, (list, tuple)) else size
        if size:
            settings = replace(settings, resolution=int(size) * codec.factor)
    if settings.resolution % codec.factor:
        raise ValueError(
            f"--resolution {settings.resolution} is not divisible by {codec.factor}, the downsampling factor of the "
            f"autoencoder {codec.source} (2 ** (len(block_out_channels) - 1)). Use a multiple of {codec.factor}."
        )
    if args.spectral_space == "latent":
        grid = settings.resolution // codec.factor
        check_wavelet_levels(args, settings.spectral_loss, grid, f"the latent grid (--resolution / {codec.factor})")
    return settings


def setup(args, settings: RunSettings, accelerator: Accelerator) -> tuple[Training, RunSettings]:
    """Data, model, scheduler, objective, optimiser: everything that can fail does so before the first step."""
    codec, pipeline_vae = load_codec(args, accelerator)
    pretrained, settings = load_pretrained(args, settings, codec)
    if codec is not None:  # latent diffusion: the autoencoder decides the image channels; the UNet sees latents
        channels = codec.image_channels
        settings = latent_resolution(args, settings, codec, pretrained)
    elif pretrained is not None:
        channels = pretrained.unet.config.in_channels
    elif args.model_config_name_or_path:  # the config decides the channels; data follow
        config = UNet2DModel.load_config(args.model_config_name_or_path)
        channels = config["in_channels"]
        resolution = training.resolution_for_config(config, settings.resolution, args.resolution)
        settings = replace(settings, resolution=resolution)
    else:
        channels = None
    data = build_data(args, settings, channels)
    model = build_model(args, settings, data.channels, pretrained, codec)
    if codec is not None:
        source = (
            f"--pretrained_model_name_or_path {args.pretrained_model_name_or_path}"
            if pretrained is not None
            else f"--model_config_name_or_path {args.model_config_name_or_path}"
        )
        check_latent_unet(model.config, codec, settings.resolution, source)
    if args.enable_xformers_memory_efficient_attention:
        import importlib.util

        if importlib.util.find_spec("xformers") is None:
            raise ValueError("--enable_xformers_memory_efficient_attention needs xformers: pip install xformers.")
        model.enable_xformers_memory_efficient_attention()
    check_model_and_grid(args, settings, model, data.channels, codec)
    noise_scheduler = build_noise_scheduler(args, settings, pretrained)
    spectrum = settings.noise_spectrum
    noise_fn = (
        None
        if spectrum.is_white
        else (lambda shape, gen, device: spectrum.sample(shape, generator=gen, device=device))
    )
    objective = build_objective(
        settings.formulation.objective,
        noise_scheduler,
        noise_fn=noise_fn,
        edm_p_mean=args.edm_p_mean,
        edm_p_std=args.edm_p_std,
    )
    regularizer = SpectralRegularizer.from_names(
        settings.spectral_loss,
        spectral_weights(args, settings.spectral_loss) if settings.spectral_loss else [],
        wave=args.wavelet,
        levels=args.wavelet_levels,
        weighting=args.spectral_weighting,
        gate_t_max=args.spectral_max_timestep,
        gate_sigma_max=args.spectral_max_sigma,
        min_snr_gamma=args.min_snr_gamma,
        decoder=codec.decode if codec is not None and args.spectral_space == "decoded" else None,
    )
    logger.info(
        f"Data: {data.description}; model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters"
    )
    problem = card_evaluation_problem(args, data)
    if problem:
        logger.warning(problem)

    ema_model = None
    if args.use_ema:
        ema_model = EMAModel(
            model.parameters(),
            decay=args.ema_max_decay,
            use_ema_warmup=True,
            inv_gamma=args.ema_inv_gamma,
            power=args.ema_power,
            model_cls=UNet2DModel,
            model_config=model.config,
        )

    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, **optimizer_settings(args))
    sampler = training.EpochShuffleSampler(len(data.dataset), args.seed or 0)
    train_dataloader = torch.utils.data.DataLoader(
        data.dataset,
        batch_size=args.train_batch_size,
        sampler=sampler,
        num_workers=args.dataloader_num_workers,
        worker_init_fn=training.ignore_interrupts_in_worker if args.dataloader_num_workers else None,
    )
    # Schedule lengths in optimiser updates; Accelerate steps the LR scheduler once per process per update.
    updates_per_epoch = math.ceil(
        math.ceil(len(data.dataset) / (args.train_batch_size * accelerator.num_processes))
        / args.gradient_accumulation_steps
    )
    max_train_steps = settings.max_train_steps or settings.num_epochs * updates_per_epoch
    settings = replace(
        settings, max_train_steps=max_train_steps, num_epochs=math.ceil(max_train_steps / updates_per_epoch)
    )
    warning = training.warmup_warning(settings.lr_warmup_steps, settings.max_train_steps)
    if warning:
        logger.warning(warning)
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=settings.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=settings.max_train_steps * accelerator.num_processes,
    )
    model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, lr_scheduler
    )
    regularizer.to(accelerator.device)
    noise_seed = args.seed if args.seed is not None else int(torch.randint(0, 2**31 - 1, ()))
    noise_rng = training.CheckpointedGenerator(accelerator.device, noise_seed * 1000 + accelerator.process_index)
    if ema_model is not None:
        ema_model.to(accelerator.device)
    # saved with each checkpoint as safetensors (EMA: save_pretrained), never pickled (training.save_checkpoint)
    checkpointed = {"ema_unet": ema_model, "regularizer": regularizer}

    if accelerator.is_main_process:
        run_settings.claim_output_dir(
            args.output_dir,
            args.resume_from_checkpoint,
            args.overwrite_output_dir,
            args.logging_dir,
            run_output_names(args, settings),
        )
        hparams = {
            k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in settings.config(args).items()
        }
        accelerator.init_trackers(os.path.splitext(os.path.basename(__file__))[0], config=hparams)

    # a fixed data batch for the spectrum plots, drawn before any state is restored (it uses the global RNG)
    data_preview = next(iter(torch.utils.data.DataLoader(data.dataset, batch_size=args.eval_batch_size)))["input"]
    if codec is not None:
        warn_latent_scale(codec, data_preview)
    mel = getattr(data, "mel", None)
    parts = Training(
        data,
        mel,
        model,
        noise_scheduler,
        objective,
        regularizer,
        ema_model,
        optimizer,
        lr_scheduler,
        sampler,
        train_dataloader,
        updates_per_epoch,
        noise_rng,
        data_preview,
        checkpointed,
        codec,
        pipeline_vae,
    )
    return parts, settings


def resume(args, settings: RunSettings, accelerator: Accelerator, run: Training) -> tuple[int, int, int, dict]:
    """Restore the latest (or named) checkpoint, if any, after comparing its settings with this run's:
    `(global_step, first_epoch, batches to skip, this run's settings manifest)`."""
    global_step, first_epoch, resume_batches = 0, 0, 0
    checkpoint = training.resolve_resume(args.output_dir, args.resume_from_checkpoint)
    if args.resume_from_checkpoint and checkpoint is None:
        logger.info(f"No checkpoint in {args.output_dir} to resume from; starting a new training run.")
    unet_config = accelerator.unwrap_model(run.model).config
    dataset = run_settings.dataset_fingerprint(run.data.dataset, args.train_data_dir)
    manifest = run_settings.settings_of(settings.config(args), accelerator.num_processes, unet_config, dataset)
    if checkpoint is not None:
        run_settings.check_resume_settings(checkpoint, manifest)
        resumed = training.load_checkpoint(accelerator, checkpoint, run.checkpointed)
        training.apply_optimizer_settings(
            run.optimizer, run.lr_scheduler, settings.learning_rate, **optimizer_settings(args)
        )
        if resumed.rank_state is not None:
            run.noise_rng.load_state_dict(resumed.rank_state["noise_rng"])
        global_step = resumed.global_step
        first_epoch = global_step // run.updates_per_epoch
        resume_batches = (global_step % run.updates_per_epoch) * args.gradient_accumulation_steps
        logger.info(f"Resumed from {checkpoint} at step {global_step} (epoch {first_epoch}).")
    return global_step, first_epoch, resume_batches, manifest


def end_of_epoch(
    args, settings, accelerator, run: Training, epoch: int, global_step: int, last: bool, interrupt
) -> None:
    """Samples and pipeline, as the anchor: every N epochs and at the end (main process). A SIGINT / SIGTERM
    (`interrupt`) stops the sampling within one step and skips what is left, so the caller saves the checkpoint
    first."""
    if not accelerator.is_main_process:
        return
    unet = accelerator.unwrap_model(run.model)
    if epoch % args.save_images_epochs == 0 or last:
        unet.eval()
        try:
            with training.stop_on_interrupt(interrupt, unet):
                log_samples(
                    args,
                    settings,
                    accelerator,
                    unet,
                    run.noise_scheduler,
                    run.ema_model,
                    run.data_preview,
                    global_step,
                    run.mel,
                    run.pipeline_vae,
                )
        except training.TrainingInterrupted:
            return
        finally:
            unet.train()
    if interrupt.raised:
        return
    if epoch % args.save_model_epochs == 0 or last:
        save_pipeline(args, settings, unet, run.noise_scheduler, run.ema_model, run.mel, run.pipeline_vae)
        if args.push_to_hub and not last and not interrupt.raised:
            hub.push_run(hub_target(args), f"Epoch {epoch}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    training.stop_when_launcher_dies()
    settings = derive_settings(args)
    validate_args(args, settings)
    training.main_process_timeout()  # SPECREG_MAIN_PROCESS_TIMEOUT, checked before training
    with run_settings.OutputDirLock(args.output_dir):  # one run at a time in --output_dir (the main process holds it)
        return train(args, settings)


def train(args, settings: RunSettings) -> int:
    """`main` once the flags are checked, inside the output folder's lock: check the folder, set up, train, save."""
    check_output_dir(args, settings)
    hub.check_push_run(hub_target(args))
    accelerator = training.make_accelerator(
        logger=logger,
        output_dir=args.output_dir,
        logging_dir=args.logging_dir,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.logger,
        seed=args.seed,
    )

    # 1. setup: data, model, scheduler, objective, optimiser; then the checkpoint to resume from
    run, settings = setup(args, settings, accelerator)
    model, optimizer, lr_scheduler, noise_rng = run.model, run.optimizer, run.lr_scheduler, run.noise_rng
    objective, regularizer, noise_scheduler, ema_model = (
        run.objective,
        run.regularizer,
        run.noise_scheduler,
        run.ema_model,
    )
    global_step, first_epoch, resume_batches, manifest = resume(args, settings, accelerator, run)

    logger.info(
        f"***** Training: {settings.max_train_steps} steps, {settings.num_epochs} epochs, batch {args.train_batch_size}"
        f" x {accelerator.num_processes} processes x {args.gradient_accumulation_steps} accumulation; spectral: "
        f"{settings.spectral_loss or 'none'} *****"
    )
    interrupt = training.InterruptFlag().install()
    guard = training.NonFiniteGuard(args.max_nonfinite_steps)
    progress_bar = tqdm(
        total=settings.max_train_steps,
        initial=global_step,
        disable=not accelerator.is_local_main_process,
        desc="Steps",
    )
    stop = False
    _STATE["training_started"] = True
    saved_step = global_step if global_step else None  # the checkpoint resumed from holds this very state

    def checkpoint_now():
        nonlocal saved_step
        if saved_step == global_step:  # on disk already (a checkpointing step): a second save would replace it
            return
        training.save_checkpoint(
            accelerator,
            args.output_dir,
            global_step,
            {"global_step": global_step},
            args.checkpoints_total_limit,
            rank_state={"noise_rng": noise_rng.state_dict()},
            extra_state=run.checkpointed,
            settings=manifest,
        )
        saved_step = global_step

    def stop_on_signal() -> int:
        checkpoint_now()
        logger.warning(
            f"Interrupted ({interrupt.signal_name or 'signal on another process'}): saved checkpoint-{global_step}. "
            "Resume with --resume_from_checkpoint latest."
        )
        return interrupt.exit_code

    if global_step >= settings.max_train_steps:
        logger.info(f"The run already reached --max_train_steps {settings.max_train_steps}; nothing left to train.")
        first_epoch = settings.num_epochs  # skip the loop, still write the pipeline and card below
        if accelerator.is_main_process:
            save_pipeline(
                args, settings, accelerator.unwrap_model(model), noise_scheduler, ema_model, run.mel, run.pipeline_vae
            )
    try:
        # 2. the training loop
        for epoch in range(first_epoch, settings.num_epochs):
            model.train()
            loader = run.train_dataloader
            if epoch == first_epoch and resume_batches:
                loader = accelerator.skip_first_batches(run.train_dataloader, resume_batches)
            # The data order is a function of (seed, epoch), so a resumed run replays the uninterrupted one. Accelerate
            # also calls `sampler.set_epoch(loader.iteration)` as iteration starts (single process): keep them equal.
            run.sampler.set_epoch(epoch)
            getattr(run.data.dataset, "set_epoch", lambda epoch: None)(epoch)  # augmentations: seeded per epoch/sample
            loader.iteration = epoch
            for batch in loader:
                clean = batch["input"].to(accelerator.device)
                if settings.corrupt_band is not None:  # selective omission: the data carry band-limited noise
                    clean = corrupt_band(clean, settings.corrupt_band, args.corrupt_strength, noise_rng.generator)
                if run.codec is not None:  # latent diffusion: x0 is the scaled latent of the batch (frozen encoder)
                    clean = run.codec.encode(clean, noise_rng.generator)
                noisy = objective.noise_batch(clean, noise_rng.generator)
                with accelerator.accumulate(model):
                    model_output = model(noisy.model_input, noisy.model_timesteps).sample
                    base = objective.base_loss(model_output, noisy)
                    terms = regularizer(noise_scheduler, model_output, noisy.noisy, noisy.timesteps, clean, base)
                    loss = terms["loss"].mean()
                    finite = accelerator.reduce(torch.isfinite(loss.detach()).float(), reduction="sum")
                    updated = False  # a skipped batch (non-finite loss or gradient) changes no weight, EMA included
                    if guard.check(bool(finite.item() == accelerator.num_processes), global_step, terms):
                        accelerator.backward(loss)
                        updated = training.clip_and_step(
                            accelerator, model, optimizer, lr_scheduler, guard, global_step
                        )
                    optimizer.zero_grad()

                if accelerator.sync_gradients:
                    if ema_model is not None and updated:
                        ema_model.step(accelerator.unwrap_model(model).parameters())
                    global_step += 1
                    progress_bar.update(1)
                    # one device-to-host copy for all terms (a float() per term would sync the GPU once each)
                    means = torch.stack([v.detach().float().mean() for v in terms.values()]).tolist()
                    logs = dict(zip(terms, means))
                    logs.update({f"lambda/{k}": v for k, v in regularizer.current_weights().items()})
                    logs["lr"] = lr_scheduler.get_last_lr()[0]
                    logs["nonfinite/skipped_steps"] = guard.skipped
                    if ema_model is not None:
                        logs["ema_decay"] = ema_model.cur_decay_value
                    progress_bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if "/" not in k})
                    accelerator.log(logs, step=global_step)

                    if global_step % args.checkpointing_steps == 0:
                        checkpoint_now()
                    if training.interrupted_anywhere(accelerator, interrupt):
                        return stop_on_signal()
                    if global_step >= settings.max_train_steps:
                        stop = True
                        break
            progress_bar.refresh()
            last = stop or epoch == settings.num_epochs - 1
            end_of_epoch(args, settings, accelerator, run, epoch, global_step, last, interrupt)
            training.wait_for_main_process(accelerator)  # its samples, pipeline and Hub push: no collective timeout
            if training.interrupted_anywhere(accelerator, interrupt):  # during the samples or the pipeline save
                return stop_on_signal()
            if stop:
                break

        # 3. finish: quick evaluation -> model card with spectral metrics -> Hub
        progress_bar.close()
        if guard.skipped:
            logger.warning(
                f"Skipped {guard.skipped} batches with a non-finite loss or gradient ({guard.skipped_gradients} "
                "gradient)."
            )
        if accelerator.is_main_process and not interrupt.raised:
            try:
                evaluate_and_write_card(args, settings, accelerator, run.data, regularizer, run.codec, interrupt)
                if args.push_to_hub and not interrupt.raised:
                    hub.push_run(hub_target(args), f"Step {global_step}")
            except training.TrainingInterrupted:
                pass  # the checkpoint of the last step is saved below; resuming it writes the card
        training.wait_for_main_process(accelerator)  # however long the evaluation and upload take
        if training.interrupted_anywhere(accelerator, interrupt):
            return stop_on_signal()
        logger.info(f"Saved the pipeline and its model card to {args.output_dir}")
        return 0
    finally:
        interrupt.uninstall()
        progress_bar.close()
        if sys.exc_info()[0] is None:  # finished or stopped by a signal: every process is here together
            run = model = optimizer = lr_scheduler = None  # freed on every process before any exits
            training.release_distributed_models(accelerator)
        accelerator.end_training()  # also ends the process group: nothing collective after this


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, DataError) as error:
        if _STATE["training_started"]:
            raise
        print(f"train_spectral.py: error: {error}", file=sys.stderr)  # bad input, caught before any training
        sys.exit(2)
