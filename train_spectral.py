#!/usr/bin/env python
"""Train an unconditional `UNet2DModel` with spectral regularization: a drop-in for Diffusers'
`examples/unconditional_image_generation/train_unconditional.py`.

Every argument of that script works here with the same name, default and meaning. On top:

    --spectral_loss amplitude_phase          Fourier / wavelet losses on the predicted clean sample (arXiv 2603.02447)
    --formulation edm                        EDM training (arXiv 2206.00364), saved with an EDMPipeline
    --formulation flow                       flow matching (arXiv 2209.03003), saved with a FlowMatchPipeline
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
from dataclasses import dataclass, replace
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from diffusers import UNet2DModel
from diffusers.training_utils import EMAModel

from diffusers_specreg import hub, run_settings, training
from diffusers_specreg.card.training import CardEvaluation, card_evaluation_problem, evaluate_and_write_card
from diffusers_specreg.data import BUILTIN_DATASETS, build_image_dataset
from diffusers_specreg.diffusion import registry
from diffusers_specreg.diffusion.registry import objective_class
from diffusers_specreg.evaluate import dataset_info
from diffusers_specreg.losses import LOSS_NAMES
from diffusers_specreg.metrics import spectral_band_errors
from diffusers_specreg.noise import NoiseSpectrum, corrupt_band
from diffusers_specreg.train import arguments, tracking
from diffusers_specreg.train.entry import run_script
from diffusers_specreg.train.loop import CheckpointPolicy, LoopHooks, LoopParts, Schedule, TrainingLoop, prepare
from diffusers_specreg.train.parts import build_unet, check_model_and_grid, ema_weights, make_ema

try:  # the pipelines/ folder is installed as diffusers_specreg.pipelines: fail now, not when saving
    import diffusers_specreg.pipelines  # noqa: F401
except ImportError as error:
    raise ImportError(f"{error}. Install the project first: pip install -e . (see README).") from error
from diffusers_specreg.formulations import Formulation, SchedulerSettings, select_formulation
from diffusers_specreg.latent import LatentCodec, check_latent_unet, latent_resolution, load_codec, warn_latent_scale
from diffusers_specreg.objectives import build_objective
from diffusers_specreg.pipelines_io import CUSTOM_PIPELINE_FILE_NAME
from diffusers_specreg.regularizer import SpectralRegularizer

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
    data = arguments.add_data_arguments(
        parser.add_argument_group("data (as train_unconditional.py)"),
        "Image size (default 64; 32 for built-in data).",
    )
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
    arguments.add_optimizer_arguments(
        parser.add_argument_group("optimiser (as train_unconditional.py)"),
        learning_rate=None,
        lr_scheduler="cosine",
        lr_warmup_steps=None,
        adam_beta1=0.95,
        adam_weight_decay=1e-6,
        learning_rate_help="Default 1e-4 (5e-4 for the built-in demo run).",
        lr_warmup_steps_help="Default 500 (50 for the built-in demo run).",
    )
    ema = parser.add_argument_group("EMA (as train_unconditional.py)")
    ema.add_argument("--use_ema", action="store_true")
    ema.add_argument("--ema_inv_gamma", type=float, default=1.0)
    ema.add_argument("--ema_power", type=float, default=3 / 4)
    ema.add_argument("--ema_max_decay", type=float, default=0.9999)
    arguments.add_hub_arguments(parser.add_argument_group("Hub (as train_unconditional.py)"))
    arguments.add_logging_arguments(parser.add_argument_group("logging (as train_unconditional.py)"))
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
    arguments.add_checkpoint_arguments(parser.add_argument_group("checkpoints (as train_unconditional.py)"))
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
    arguments.add_spectral_arguments(parser)  # regularization, formulation, SAGD, audio, latent, evaluation
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
    objective = objective_class(args.formulation)
    if not spectrum.is_white and not objective.supports_noise_spectrum:
        raise ValueError(
            f"--noise_spectrum needs --formulation {capable('supports_noise_spectrum')} (the {objective.name} "
            "sampler draws white noise)."
        )
    return RunSettings(
        formulation=select_formulation(
            args.formulation, args.modality, not spectrum.is_white, latent=bool(args.vae_name_or_path)
        ),
        noise_spectrum=spectrum,
        corrupt_band=parse_band(args.corrupt_band) if args.corrupt_band else None,
        builtin=builtin,
        # the objective's default; a fine-tuned scheduler's replaces it, see load_pretrained()
        prediction_type=args.prediction_type or objective.prediction_types[0],
        max_train_steps=max_train_steps,
        num_epochs=num_epochs,
        spectral_loss=spectral_loss,
        **defaults,
    )


def capable(attribute: str) -> str:
    """The registered objectives whose class sets `attribute` (e.g. `supports_audio`), as '--formulation' values."""
    return " or ".join(cls.name for cls in registry.OBJECTIVES if getattr(cls, attribute, False))


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
    objective = objective_class(args.formulation)
    if args.modality == "audio" and not objective.supports_audio:
        raise ValueError(
            "--modality audio saves an AudioDiffusionPipeline, which samples DDPM/DDIM: use --formulation "
            f"{capable('supports_audio')}."
        )
    if settings.prediction_type not in objective.prediction_types:
        raise ValueError(
            f"--formulation {args.formulation} supports --prediction_type {' or '.join(objective.prediction_types)}, "
            f"not {settings.prediction_type}."
        )
    if args.spectral_max_timestep is not None and not objective.integer_timesteps:
        raise ValueError(
            f"--spectral_max_timestep gates integer timesteps ({capable('integer_timesteps')}); with --formulation "
            f"{args.formulation} use --spectral_max_sigma."
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


def build_noise_scheduler(args, settings: RunSettings, pretrained):
    scheduler_settings = SchedulerSettings(
        prediction_type=settings.prediction_type,
        num_train_timesteps=args.ddpm_num_steps,
        beta_schedule=args.ddpm_beta_schedule,
        sigma_data=args.edm_sigma_data,
        shift=args.flow_shift,
        pretrained_config=pretrained.scheduler_config if pretrained is not None else None,
    )
    return settings.formulation.build_scheduler(scheduler_settings)


def make_pipeline(settings: RunSettings, unet, noise_scheduler, for_sampling: bool, mel=None, vae=None):
    """The pipeline saved (DDPM, EDM, SAGD, audio or latent) or used to draw logged samples (DDIM for speed)."""
    entry = settings.formulation
    pipeline = entry.build_pipeline(unet, noise_scheduler, spectrum=settings.noise_spectrum, mel=mel, vae=vae)
    return entry.fast_pipeline(pipeline) if for_sampling else pipeline


def log_samples(
    args, settings, accelerator, unet, noise_scheduler, ema_model, data_batch, global_step, mel=None, vae=None
):
    """Sample `eval_batch_size` images (EMA weights if any; decoded by `vae` for latent diffusion); log a grid, a RAPSD
    plot vs the data (and audio)."""
    with ema_weights(unet, ema_model):
        pipeline = make_pipeline(settings, unet, noise_scheduler, for_sampling=True, mel=mel, vae=vae)
        audio = settings.formulation.modality == "audio"
        samples = tracking.draw_samples(pipeline, args.eval_batch_size, settings.ddpm_num_inference_steps, audio)
    tracking.log_samples(accelerator, args.logger, samples, data_batch, global_step)


def save_pipeline(args, settings, unet, noise_scheduler, ema_model, mel=None, vae=None):
    """Save the pipeline (EMA weights if any) to output_dir as safetensors; custom pipelines get pipeline.py; a
    latent model carries its autoencoder (`vqvae/`), so the folder is self-contained."""
    from diffusers_specreg.pipelines_io import save_pipeline as save

    with ema_weights(unet, ema_model):
        save(make_pipeline(settings, unet, noise_scheduler, for_sampling=False, mel=mel, vae=vae), args.output_dir)


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


@dataclass
class Training:
    """Everything the training step and the hooks use, built by `setup` before the first step."""

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


def build_model_and_data(args, settings: RunSettings, accelerator: Accelerator):
    """The autoencoder (latent diffusion), the model fine-tuned from, the data and the UNet, checked against each
    other: `(codec, pipeline_vae, pretrained, data, model, settings)`."""
    codec, pipeline_vae = None, None
    if args.vae_name_or_path:
        codec, pipeline_vae = load_codec(
            args.vae_name_or_path,
            args.vae_subfolder,
            args.cache_dir,
            accelerator.device,
            accelerator.mixed_precision,
            args.spectral_space,
            logger,
        )
    pretrained, settings = load_pretrained(args, settings, codec)
    if codec is not None:  # latent diffusion: the autoencoder decides the image channels; the UNet sees latents
        channels = codec.image_channels
        # --resolution, else a --model_config_name_or_path UNet's sample_size x the factor, else the preset's
        config = args.model_config_name_or_path if pretrained is None and args.resolution is None else None
        settings = replace(settings, resolution=latent_resolution(codec, settings.resolution, config))
        if args.spectral_space == "latent":  # the latent grid must hold the wavelet levels
            grid = settings.resolution // codec.factor
            check_wavelet_levels(
                args, settings.spectral_loss, grid, f"the latent grid (--resolution / {codec.factor})"
            )
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
    model = build_unet(
        settings.model_preset, settings.resolution, data.channels, pretrained, args.model_config_name_or_path, codec
    )
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
    check_model_and_grid(
        model,
        settings.resolution,
        data.channels,
        settings.noise_spectrum,
        settings.corrupt_band,
        args.corrupt_band,
        codec,
    )
    return codec, pipeline_vae, pretrained, data, model, settings


def build_objective_and_regularizer(args, settings: RunSettings, pretrained, codec: LatentCodec | None):
    """The noise scheduler, the objective that noises each batch and the spectral regularizer."""
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
        **{option.flag: getattr(args, option.flag) for cls in registry.OBJECTIVES for option in cls.options},
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
    return noise_scheduler, objective, regularizer


def setup(args, settings: RunSettings, accelerator: Accelerator) -> tuple[Training, RunSettings]:
    """Data, model, scheduler, objective, optimiser: everything that can fail does so before the first step."""
    codec, pipeline_vae, pretrained, data, model, settings = build_model_and_data(args, settings, accelerator)
    noise_scheduler, objective, regularizer = build_objective_and_regularizer(args, settings, pretrained, codec)
    logger.info(
        f"Data: {data.description}; model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters"
    )
    problem = card_evaluation_problem(args.eval_num_samples, len(data.dataset))
    if problem:
        logger.warning(problem)

    ema_model = make_ema(model, args.ema_max_decay, args.ema_inv_gamma, args.ema_power) if args.use_ema else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, **arguments.optimizer_settings(args))
    parts, schedule = prepare(
        accelerator,
        model,
        optimizer,
        data.dataset,
        batch_size=args.train_batch_size,
        num_workers=args.dataloader_num_workers,
        seed=args.seed,
        lr_scheduler=args.lr_scheduler,
        lr_warmup_steps=settings.lr_warmup_steps,
        max_train_steps=settings.max_train_steps,
        num_epochs=settings.num_epochs,
        logger=logger,
    )
    settings = replace(settings, max_train_steps=schedule.max_train_steps, num_epochs=schedule.num_epochs)
    regularizer.to(accelerator.device)
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
        warn_latent_scale(codec, data_preview, logger)
    mel = getattr(data, "mel", None)
    parts = Training(
        data,
        mel,
        noise_scheduler,
        objective,
        regularizer,
        ema_model,
        parts,
        schedule,
        data_preview,
        checkpointed,
        codec,
        pipeline_vae,
    )
    return parts, settings


def run_manifest(args, settings: RunSettings, accelerator: Accelerator, run: Training) -> dict:
    """This run's settings as saved in each checkpoint and compared on resume (`run_settings.settings_of`)."""
    unet_config = accelerator.unwrap_model(run.parts.model).config
    dataset = run_settings.dataset_fingerprint(run.data.dataset, args.train_data_dir)
    return run_settings.settings_of(settings.config(args), accelerator.num_processes, unet_config, dataset)


def end_of_epoch(args, settings, accelerator, run: Training, epoch: int, step: int, last: bool, loop) -> None:
    """Samples and pipeline, as the anchor: every N epochs and at the end (main process). A SIGINT / SIGTERM stops
    the sampling within one step and skips what is left, so the loop saves the checkpoint first."""
    if not accelerator.is_main_process:
        return
    unet = accelerator.unwrap_model(run.parts.model)
    if epoch % args.save_images_epochs == 0 or last:
        unet.eval()
        with loop.main_process_work(unet):
            log_samples(
                args,
                settings,
                accelerator,
                unet,
                run.noise_scheduler,
                run.ema_model,
                run.data_preview,
                step,
                run.mel,
                run.pipeline_vae,
            )
        unet.train()
    if loop.interrupt.raised:
        return
    if epoch % args.save_model_epochs == 0 or last:
        save_pipeline(args, settings, unet, run.noise_scheduler, run.ema_model, run.mel, run.pipeline_vae)
        if args.push_to_hub and not last and not loop.interrupt.raised:
            hub.push_run(arguments.hub_target(args), f"Epoch {epoch}")


def spectral_step(settings: RunSettings, run: Training, corrupt_strength: float):
    """The training step: `batch -> {"loss": [B], "base": [B], <loss name>: [B], "spectral_band/<band>": []}`."""
    device, rng, objective = run.parts.accelerator.device, run.parts.rng, run.objective

    def step(data: dict) -> dict[str, torch.Tensor]:
        clean = data["input"].to(device)
        if settings.corrupt_band is not None:  # selective omission: the data carry band-limited noise
            clean = corrupt_band(clean, settings.corrupt_band, corrupt_strength, rng.generator)
        if run.codec is not None:  # latent diffusion: x0 is the scaled latent of the batch (frozen encoder)
            clean = run.codec.encode(clean, rng.generator)
        batch = objective.noise_batch(clean, rng.generator)
        model_output = run.parts.model(*objective.model_inputs(batch)).sample
        x0_hat = objective.x0_hat(model_output, batch)  # once per step: the base loss and the spectral terms share it
        terms = run.regularizer.terms(batch, x0_hat, objective.base_loss(model_output, batch, x0_hat))
        bands = spectral_band_errors(x0_hat, clean)  # no gradient: logged as spectral_band/<band>, not trained on
        return terms | {f"spectral_band/{band}": error for band, error in bands.items()}

    return step


def update_hook(run: Training, loop: TrainingLoop):
    """After each optimiser update: the EMA step (not on a skipped update) and the values logged beside the terms."""

    def after_update(updated: bool, step: int) -> dict:
        if run.ema_model is not None and updated:
            run.ema_model.step(run.parts.accelerator.unwrap_model(run.parts.model).parameters())
        logs = {f"lambda/{k}": v for k, v in run.regularizer.current_weights().items()}
        logs["nonfinite/skipped_steps"] = loop.guard.skipped
        if run.ema_model is not None:
            logs["ema_decay"] = run.ema_model.cur_decay_value
        return logs

    return after_update


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    training.stop_when_launcher_dies()
    settings = derive_settings(args)
    validate_args(args, settings)
    training.main_process_timeout()  # SPECREG_MAIN_PROCESS_TIMEOUT, checked before training
    with run_settings.OutputDirLock(args.output_dir):  # one run at a time in --output_dir (the main process holds it)
        return train(args, settings)


def write_card(args, settings: RunSettings, accelerator, run, interrupt) -> None:
    """The quick evaluation of the saved pipeline and its model card (the main process)."""
    modality = settings.formulation.modality
    evaluate_and_write_card(
        args.output_dir,
        settings.config(args),
        CardEvaluation(
            args.eval_num_samples,
            args.eval_batch_size,
            settings.ddpm_num_inference_steps,
            seed=args.seed or 0,
            # audio: DDIM on the mel images either way (the pipeline's own call vocodes every image)
            sampler=args.eval_sampler if modality != "audio" else "fast",
            dataset=dataset_info(args.dataset_name, args.train_data_dir, args.builtin_dataset, modality=modality),
        ),
        dataset=run.data.dataset,
        dataset_name=run.data.name,
        device=accelerator.device,
        base_model=args.pretrained_model_name_or_path,
        final_spectral_weights=run.regularizer.current_weights(),
        vae_scaling_factor=run.codec.scaling_factor if run.codec is not None else None,
        interrupt=interrupt,
        log=logger,
    )


def train(args, settings: RunSettings) -> int:
    """`main` once the flags are checked, inside the output folder's lock: check the folder, set up, train, save."""
    check_output_dir(args, settings)
    hub.check_push_run(arguments.hub_target(args))
    accelerator = training.make_accelerator(logger=logger, **arguments.accelerator_settings(args))
    run, settings = setup(args, settings, accelerator)
    checkpoints = CheckpointPolicy(
        args.output_dir,
        args.checkpointing_steps,
        args.checkpoints_total_limit,
        run_manifest(args, settings, accelerator, run),
        extra_state=run.checkpointed,
    )
    loop = TrainingLoop(
        run.parts, run.schedule, checkpoints, max_nonfinite_steps=args.max_nonfinite_steps, logger=logger, state=_STATE
    )
    loop.resume(args.resume_from_checkpoint, settings.learning_rate, arguments.optimizer_settings(args))
    logger.info(
        f"***** Training: {settings.max_train_steps} steps, {settings.num_epochs} epochs, batch {args.train_batch_size}"
        f" x {accelerator.num_processes} processes x {args.gradient_accumulation_steps} accumulation; spectral: "
        f"{settings.spectral_loss or 'none'} *****"
    )
    with loop:
        loop.begin()
        if loop.global_step >= settings.max_train_steps:
            logger.info(
                f"The run already reached --max_train_steps {settings.max_train_steps}; nothing left to train."
            )
            if accelerator.is_main_process:  # the loop has nothing to do: still write the pipeline and card below
                unet = accelerator.unwrap_model(run.parts.model)
                save_pipeline(args, settings, unet, run.noise_scheduler, run.ema_model, run.mel, run.pipeline_vae)
        hooks = LoopHooks(
            after_update=update_hook(run, loop),
            end_of_epoch=lambda epoch, step, last: end_of_epoch(
                args, settings, accelerator, run, epoch, step, last, loop
            ),
        )
        code = loop.run(spectral_step(settings, run, args.corrupt_strength), hooks)
        if code is not None:
            return code
        # finish: quick evaluation -> model card with spectral metrics -> Hub
        if loop.guard.skipped:
            logger.warning(
                f"Skipped {loop.guard.skipped} batches with a non-finite loss or gradient "
                f"({loop.guard.skipped_gradients} gradient)."
            )
        if accelerator.is_main_process and not loop.interrupt.raised:
            with loop.main_process_work():  # the checkpoint of the last step is saved on a signal; resuming writes it
                write_card(args, settings, accelerator, run, loop.interrupt)
                if args.push_to_hub and not loop.interrupt.raised:
                    hub.push_run(arguments.hub_target(args), f"Step {loop.global_step}")
        return loop.finish(f"Saved the pipeline and its model card to {args.output_dir}")


if __name__ == "__main__":
    run_script(main, "train_spectral.py", _STATE)
