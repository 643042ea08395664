"""The command-line argument groups both training scripts share, written once.

Each function adds its flags to an argparse group (or parser) and returns it, so a script can add its own flags to
the same group after them. The flags keep train_unconditional.py's names and meaning; where the two scripts differ
(the optimiser defaults, the resolution's default), the script passes its values.

The functions after the argument groups (`hub_target`, `optimizer_settings`, `accelerator_settings`, `derived_settings`,
`data_settings`, ...) turn the parsed flags into the library's settings. They are the one place below the scripts
that reads a parsed `argparse.Namespace`: every other module takes values.
"""

from __future__ import annotations

import argparse
from typing import Protocol

from diffusers_specreg import hub
from diffusers_specreg.diffusion import registry
from diffusers_specreg.diffusion.base import SchedulerSettings
from diffusers_specreg.diffusion.weighting import DEFAULT_WEIGHTING, WEIGHTINGS
from diffusers_specreg.kinds import objective_choices
from diffusers_specreg.losses import LOSS_NAMES
from diffusers_specreg.regularizer import DEFAULT_WEIGHTS
from diffusers_specreg.train.parts import AUDIO_FLAGS
from diffusers_specreg.train.settings import DERIVED_FROM, DerivedSettings, derive_settings


class ArgumentGroup(Protocol):
    """An argparse parser or argument group (`parser.add_argument_group(...)`): anything with `add_argument`."""

    def add_argument(self, *args, **kwargs) -> argparse.Action: ...


def add_data_arguments(group: ArgumentGroup, resolution_help: str) -> ArgumentGroup:
    """The data flags of train_unconditional.py: a `datasets` dataset or an image folder, its size and augmentation.

    Args:
        group (`ArgumentGroup`): where the flags go.
        resolution_help (`str`): the help of `--resolution` (its default differs per script).
    """
    group.add_argument("--dataset_name", type=str, default=None, help="A `datasets` dataset (Hub id or local).")
    group.add_argument("--dataset_config_name", type=str, default=None)
    group.add_argument("--train_data_dir", type=str, default=None, help="A folder of images (searched recursively).")
    group.add_argument(
        "--image_column",
        type=str,
        default=None,
        help="The --dataset_name column to train on (default 'image', as train_unconditional.py, else the only image "
        "column).",
    )
    group.add_argument("--cache_dir", type=str, default=None)
    group.add_argument("--resolution", type=int, default=None, help=resolution_help)
    group.add_argument("--center_crop", action="store_true", default=False)
    group.add_argument("--random_flip", action="store_true", default=False)
    group.add_argument("--dataloader_num_workers", type=int, default=0)
    return group


def add_optimizer_arguments(
    group: ArgumentGroup,
    *,
    learning_rate: float | None,
    lr_scheduler: str,
    lr_warmup_steps: int | None,
    adam_beta1: float,
    adam_weight_decay: float,
    learning_rate_help: str | None = None,
    lr_warmup_steps_help: str | None = None,
) -> ArgumentGroup:
    """AdamW and its learning-rate schedule (Diffusers' `get_scheduler` names), with the script's defaults.

    Args:
        group (`ArgumentGroup`): where the flags go.
        learning_rate (`float`, *optional*): the default of `--learning_rate` (`None`: the script derives it).
        lr_scheduler (`str`): the default of `--lr_scheduler`.
        lr_warmup_steps (`int`, *optional*): the default of `--lr_warmup_steps` (`None`: the script derives it).
        adam_beta1 (`float`): the default of `--adam_beta1`.
        adam_weight_decay (`float`): the default of `--adam_weight_decay`.
        learning_rate_help (`str`, *optional*): the help of `--learning_rate`.
        lr_warmup_steps_help (`str`, *optional*): the help of `--lr_warmup_steps`.
    """
    group.add_argument("--learning_rate", type=float, default=learning_rate, help=learning_rate_help)
    group.add_argument("--lr_scheduler", type=str, default=lr_scheduler)
    group.add_argument("--lr_warmup_steps", type=int, default=lr_warmup_steps, help=lr_warmup_steps_help)
    group.add_argument("--adam_beta1", type=float, default=adam_beta1)
    group.add_argument("--adam_beta2", type=float, default=0.999)
    group.add_argument("--adam_weight_decay", type=float, default=adam_weight_decay)
    group.add_argument("--adam_epsilon", type=float, default=1e-08)
    return group


def add_hub_arguments(group: ArgumentGroup) -> ArgumentGroup:
    """`--push_to_hub` and where to: train_unconditional.py's Hub flags."""
    group.add_argument("--push_to_hub", action="store_true")
    group.add_argument(
        "--hub_token",
        type=str,
        default=None,
        help="Avoid: a token on the command line shows in `ps`, and `accelerate launch` prints the whole command "
        "when a run fails. By default the token of `hf auth login` or HF_TOKEN is used.",
    )
    group.add_argument("--hub_model_id", type=str, default=None)
    group.add_argument("--hub_private_repo", action="store_true")
    return group


def add_logging_arguments(group: ArgumentGroup) -> ArgumentGroup:
    """The tracker, its folder, the launcher's rank and mixed precision: train_unconditional.py's logging flags."""
    group.add_argument("--logger", type=str, default="tensorboard", choices=["tensorboard", "wandb"])
    group.add_argument("--logging_dir", type=str, default="logs")
    group.add_argument("--local_rank", type=int, default=-1, help="Set by the launcher.")
    group.add_argument("--mixed_precision", type=str, default="no", choices=["no", "fp16", "bf16"])
    return group


def add_checkpoint_arguments(group: ArgumentGroup) -> ArgumentGroup:
    """How often checkpoints are written, how many are kept, and which one to resume."""
    group.add_argument("--checkpointing_steps", type=int, default=500)
    group.add_argument("--checkpoints_total_limit", type=int, default=None)
    group.add_argument("--resume_from_checkpoint", type=str, default=None, help="A checkpoint path or 'latest'.")
    return group


def add_spectral_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`train_spectral.py`'s own groups: the spectral regularization (arXiv 2603.02447), the objective
    (`--formulation` and each registered objective's `Option`s), SAGD forward noise, audio, latent diffusion and the
    card's evaluation."""
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
    choices = objective_choices()  # the registered objectives, the first one the default
    form.add_argument("--formulation", type=str, default=choices[0], choices=choices)
    form.add_argument("--edm_sigma_data", type=float, default=0.5)
    for cls in registry.OBJECTIVES:  # each objective's own flags: None tells "not given" (`apply_objective_options`)
        for option in cls.options:
            default = "" if option.default is None else f"; default {option.default}"
            text = f"{option.help.rstrip('.')}{default} (--formulation {cls.name} only)."
            form.add_argument(f"--{option.flag}", type=option.type, default=None, help=text)
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
    return parser


def hub_target(args: argparse.Namespace) -> hub.HubTarget | None:
    """Where `--push_to_hub` uploads the run's folder (`--hub_model_id`, `--hub_token`, `--hub_private_repo`); None
    without it."""
    if not args.push_to_hub:
        return None
    return hub.HubTarget(args.output_dir, args.hub_model_id, args.hub_token, args.hub_private_repo, args.logging_dir)


def optimizer_settings(args: argparse.Namespace) -> dict:
    """AdamW's settings besides the learning rate (also re-applied on resume, so changed flags take effect)."""
    return dict(betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)


def accelerator_settings(args: argparse.Namespace) -> dict:
    """The keyword settings of `train.runtime.make_accelerator` besides the logger, from the shared flags."""
    return dict(
        output_dir=args.output_dir,
        logging_dir=args.logging_dir,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.logger,
        seed=args.seed,
    )


def derived_settings(args: argparse.Namespace) -> DerivedSettings:
    """What a `train_spectral.py` run derives from its flags (`train.settings.derive_settings`), read once."""
    builtin = not (args.dataset_name or args.train_data_dir)
    flags = {name: getattr(args, name) for name in DERIVED_FROM}
    return derive_settings(builtin=builtin, latent=bool(args.vae_name_or_path), **flags)


def image_data_settings(args: argparse.Namespace) -> dict:
    """The keywords of `data.build_image_dataset` that both scripts' data flags give, and the seed of the data."""
    names = ("dataset_name", "dataset_config_name", "train_data_dir", "cache_dir", "center_crop", "random_flip")
    flags = {name: getattr(args, name) for name in (*names, "image_column", "builtin_dataset", "builtin_num_samples")}
    return flags | {"seed": args.seed or 0}


def data_settings(args: argparse.Namespace, resolution: int) -> dict:
    """The keywords of `train.parts.build_data` at `resolution`: `train_spectral.py`'s image and audio data flags."""
    audio = {name: getattr(args, name) for name in AUDIO_FLAGS}
    extra = {"preserve_input_precision": args.preserve_input_precision, "resolution": resolution}
    return image_data_settings(args) | audio | extra


def scheduler_settings(
    args: argparse.Namespace, prediction_type: str, pretrained_config: dict | None
) -> SchedulerSettings:
    """What the objective's noise scheduler is built from: the schedule flags, the objective's `Option`s whose target
    is the scheduler (flow's `--flow_shift`), the prediction type the run derived and the scheduler config of the
    model fine-tuned from (or `None`)."""
    options = registry.objective_class(args.formulation).options
    return SchedulerSettings(
        prediction_type=prediction_type,
        num_train_timesteps=args.ddpm_num_steps,
        beta_schedule=args.ddpm_beta_schedule,
        sigma_data=args.edm_sigma_data,
        pretrained_config=pretrained_config,
        **{option.kwarg: getattr(args, option.flag) for option in options if option.target == "scheduler"},
    )


def apply_objective_options(args: argparse.Namespace) -> argparse.Namespace:
    """Refuse an objective's `Option` given on the command line with another `--formulation` (it would be silently
    ignored), then set the ones not given to their defaults. `add_spectral_arguments` adds them with the default
    `None`, so a flag given at its default value (`--formulation ddpm --weighting_scheme logit_normal`) is refused too.

    Args:
        args (`argparse.Namespace`): the parsed flags, changed in place.

    Returns:
        `argparse.Namespace`: `args`.
    """
    own = {option.flag for option in registry.objective_class(args.formulation).options}
    for cls in registry.OBJECTIVES:
        for option in cls.options:
            if option.flag not in own and getattr(args, option.flag) is not None:
                owners = " or ".join(other.name for other in registry.OBJECTIVES if option in other.options)
                raise ValueError(
                    f"--{option.flag} applies only to --formulation {owners}, not {args.formulation}: leave it out, "
                    f"or train with --formulation {owners}."
                )
            if getattr(args, option.flag) is None:
                setattr(args, option.flag, option.default)
    return args


def objective_options(args: argparse.Namespace) -> dict:
    """Every registered objective's `Option`s, by flag (`diffusion.registry.build_objective` picks its own)."""
    return {option.flag: getattr(args, option.flag) for cls in registry.OBJECTIVES for option in cls.options}


def regularizer_settings(args: argparse.Namespace) -> dict:
    """The keywords of `SpectralRegularizer.from_names` that flags give (besides the losses, λ and the decoder)."""
    return dict(
        wave=args.wavelet,
        levels=args.wavelet_levels,
        weighting=args.spectral_weighting,
        gate_t_max=args.spectral_max_timestep,
        gate_sigma_max=args.spectral_max_sigma,
        min_snr_gamma=args.min_snr_gamma,
    )
