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
import logging
import os
from dataclasses import replace

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger

from diffusers_specreg import hub
from diffusers_specreg.card.training import CardEvaluation, card_evaluation_problem, evaluate_and_write_card
from diffusers_specreg.data import BUILTIN_DATASETS
from diffusers_specreg.evaluate import dataset_info
from diffusers_specreg.metrics import spectral_band_errors
from diffusers_specreg.noise import corrupt_band
from diffusers_specreg.train import arguments, tracking, validate
from diffusers_specreg.train.entry import run_script
from diffusers_specreg.train.lock import OutputDirLock
from diffusers_specreg.train.loop import CheckpointPolicy, LoopHooks, TrainingLoop, prepare
from diffusers_specreg.train.manifest import dataset_fingerprint, settings_of
from diffusers_specreg.train.output_dir import check_inputs, check_output_dir, claim_output_dir, pipeline_run_outputs
from diffusers_specreg.train.parts import (
    SpectralTraining,
    build_data,
    build_model,
    build_objective,
    data_channels_and_resolution,
    ema_weights,
    load_fine_tuned,
    make_ema,
    make_pipeline,
    save_pipeline,
)
from diffusers_specreg.train.runtime import main_process_timeout, make_accelerator
from diffusers_specreg.train.settings import DerivedSettings, spectral_weights
from diffusers_specreg.train.signals import stop_when_launcher_dies

try:  # the pipelines/ folder is installed as diffusers_specreg.pipelines: fail now, not when saving
    import diffusers_specreg.pipelines  # noqa: F401
except ImportError as error:
    raise ImportError(f"{error}. Install the project first: pip install -e . (see README).") from error
from diffusers_specreg.latent import LatentCodec, load_codec, warn_latent_scale
from diffusers_specreg.regularizer import SpectralRegularizer

logger = get_logger(__name__, log_level="INFO")
_STATE = {"training_started": False}  # errors before this is set are bad input: reported in one line, exit code 2


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
    args = arguments.apply_objective_options(parser.parse_args(argv))  # refuses another objective's flags
    if args.output_dir is None:  # the anchor's name, unless the built-in demo runs (it is not a 64x64 model)
        builtin = not (args.dataset_name or args.train_data_dir)
        args.output_dir = f"specreg-{args.builtin_dataset}-{args.resolution or 32}" if builtin else "ddpm-model-64"
    env_local_rank = int(os.environ.get("LOCAL_RANK", -1))
    if env_local_rank != -1 and env_local_rank != args.local_rank:
        args.local_rank = env_local_rank
    return args


def validate_args(args, settings: DerivedSettings) -> None:
    """Every check that can fail before anything is loaded (ValueError with the problem and the fix)."""
    validate.check_spectral_losses(settings.spectral_loss, args.spectral_weight)
    counts = ("train_batch_size", "eval_batch_size", "gradient_accumulation_steps", "resolution", "ddpm_num_steps")
    counts += ("num_epochs", "max_train_steps", "checkpointing_steps", "checkpoints_total_limit")
    validate.check_at_least_one({name: getattr(settings if name == "resolution" else args, name) for name in counts})
    validate.check_finite({"learning_rate": settings.learning_rate}, positive=True)
    validate.check_objective_flags(
        args.formulation, args.modality, settings.prediction_type, args.spectral_max_timestep
    )
    if not args.vae_name_or_path or args.spectral_space == "decoded":  # latent grids are checked in setup
        validate.check_wavelet_levels(settings.spectral_loss, args.wavelet, args.wavelet_levels, settings.resolution)
    validate.check_latent_flags(args.vae_name_or_path, args.vae_subfolder, args.spectral_space, settings.spectral_loss)
    validate.check_evaluation_flags(args.eval_num_samples, args.corrupt_strength)
    if args.image_column is not None and args.modality == "audio":
        raise ValueError("--image_column applies to image datasets; --modality audio finds the audio column itself.")
    validate.check_upload(args.push_to_hub, args.output_dir, args.logging_dir)
    validate.check_mixed_precision(args.mixed_precision)
    if args.push_to_hub and not args.hub_model_id and not args.output_dir:
        raise ValueError("--push_to_hub needs --hub_model_id or an --output_dir name.")
    if args.hub_token:  # the value is never printed or saved by this script (hparams, card, checkpoints leave it out)
        logging.getLogger(__name__).warning(
            "--hub_token on the command line shows in `ps`, and `accelerate launch` prints the whole command when a "
            "run fails. Log in with `hf auth login` or set HF_TOKEN instead; they are used by default."
        )


def run_output_names(args, settings: DerivedSettings) -> list[str]:
    """The top-level names this run writes in --output_dir besides the logging folder and checkpoints."""
    return pipeline_run_outputs(settings.formulation, bool(args.vae_name_or_path), args.eval_num_samples > 0)


def check_output_and_inputs(args, settings: DerivedSettings) -> None:
    """Refuse to overwrite a trained pipeline, checkpoints or user files unless asked to; never delete on resume; never
    write over or delete the model being fine-tuned, the autoencoder or the training data."""
    outputs = run_output_names(args, settings)
    vae = os.path.join(args.vae_name_or_path, args.vae_subfolder or "") if args.vae_name_or_path else None
    check_inputs(
        args.output_dir,
        {"--pretrained_model_name_or_path": args.pretrained_model_name_or_path, "--vae_name_or_path": vae},
        {"--train_data_dir": args.train_data_dir, "--dataset_name": args.dataset_name},
        outputs,
        args.logging_dir,
    )
    check_output_dir(
        args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir, args.logging_dir, outputs
    )


def build_model_and_data(args, settings: DerivedSettings, accelerator: Accelerator):
    """The autoencoder (latent diffusion), the model fine-tuned from, the data and the UNet, checked against each
    other: `(codec, pipeline_vae, pretrained, data, model, settings)`."""
    codec, pipeline_vae = None, None
    if args.vae_name_or_path:
        device, precision = accelerator.device, accelerator.mixed_precision
        codec, pipeline_vae = load_codec(
            args.vae_name_or_path, args.vae_subfolder, args.cache_dir, device, precision, args.spectral_space, logger
        )
    pretrained, settings = load_fine_tuned(
        args.pretrained_model_name_or_path,
        settings,
        cache_dir=args.cache_dir,
        resolution=args.resolution,
        prediction_type=args.prediction_type,
        codec=codec,
        log=logger,
    )
    settings, channels = data_channels_and_resolution(
        settings, pretrained, codec, args.model_config_name_or_path, args.resolution
    )
    if codec is not None and args.spectral_space == "latent":  # the latent grid must hold the wavelet levels
        grid, size = f"the latent grid (--resolution / {codec.factor})", settings.resolution // codec.factor
        validate.check_wavelet_levels(settings.spectral_loss, args.wavelet, args.wavelet_levels, size, grid)
    data = build_data(settings.formulation.modality, channels, **arguments.data_settings(args, settings.resolution))
    model = build_model(
        settings,
        data.channels,
        pretrained,
        codec,
        pretrained_name_or_path=args.pretrained_model_name_or_path,
        config_name_or_path=args.model_config_name_or_path,
        xformers=args.enable_xformers_memory_efficient_attention,
        corrupt_band_flag=args.corrupt_band,
    )
    return codec, pipeline_vae, pretrained, data, model, settings


def build_objective_and_regularizer(args, settings: DerivedSettings, pretrained, codec: LatentCodec | None):
    """The noise scheduler, the objective that noises each batch and the spectral regularizer."""
    scheduler_config = pretrained.scheduler_config if pretrained is not None else None
    scheduler_settings = arguments.scheduler_settings(args, settings.prediction_type, scheduler_config)
    noise_scheduler, objective = build_objective(settings, scheduler_settings, arguments.objective_options(args))
    losses = settings.spectral_loss
    regularizer = SpectralRegularizer.from_names(
        losses,
        spectral_weights(args.spectral_weight, losses) if losses else [],
        decoder=codec.decode if codec is not None and args.spectral_space == "decoded" else None,
        **arguments.regularizer_settings(args),
    )
    return noise_scheduler, objective, regularizer


def setup(args, settings: DerivedSettings, accelerator: Accelerator) -> tuple[SpectralTraining, DerivedSettings]:
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
    # saved with each checkpoint as safetensors (EMA: save_pretrained), never pickled (train.checkpoint)
    checkpointed = {"ema_unet": ema_model, "regularizer": regularizer}

    if accelerator.is_main_process:
        folder = (args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir, args.logging_dir)
        claim_output_dir(*folder, run_output_names(args, settings))
        config = settings.config(vars(args))
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.items()}
        accelerator.init_trackers(os.path.splitext(os.path.basename(__file__))[0], config=hparams)

    # a fixed data batch for the spectrum plots, drawn before any state is restored (it uses the global RNG)
    data_preview = next(iter(torch.utils.data.DataLoader(data.dataset, batch_size=args.eval_batch_size)))["input"]
    if codec is not None:
        warn_latent_scale(codec, data_preview, logger)
    mel = getattr(data, "mel", None)
    run = SpectralTraining(
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
    return run, settings


def run_manifest(args, settings: DerivedSettings, accelerator: Accelerator, run: SpectralTraining) -> dict:
    """This run's settings as saved in each checkpoint and compared on resume (`train.manifest.settings_of`)."""
    unet_config = accelerator.unwrap_model(run.parts.model).config
    dataset = dataset_fingerprint(run.data.dataset, args.train_data_dir)
    return settings_of(settings.config(vars(args)), accelerator.num_processes, unet_config, dataset)


def end_of_epoch(args, settings, accelerator, run: SpectralTraining, epoch: int, step: int, last: bool, loop) -> None:
    """Samples and pipeline, as the anchor: every N epochs and at the end (main process). A SIGINT / SIGTERM stops
    the sampling within one step and skips what is left, so the loop saves the checkpoint first."""
    if not accelerator.is_main_process:
        return
    unet = accelerator.unwrap_model(run.parts.model)
    if epoch % args.save_images_epochs == 0 or last:
        unet.eval()
        with loop.main_process_work(unet):  # a grid and a RAPSD plot vs the data (and audio), with the EMA weights
            with ema_weights(unet, run.ema_model):
                pipeline = make_pipeline(settings, unet, run.noise_scheduler, True, run.mel, run.pipeline_vae)
                steps, audio = settings.ddpm_num_inference_steps, settings.formulation.modality == "audio"
                samples = tracking.draw_samples(pipeline, args.eval_batch_size, steps, audio)
            tracking.log_samples(accelerator, args.logger, samples, run.data_preview, step)
        unet.train()
    if loop.interrupt.raised:
        return
    if epoch % args.save_model_epochs == 0 or last:
        save_pipeline(settings, unet, run.noise_scheduler, run.ema_model, args.output_dir, run.mel, run.pipeline_vae)
        if args.push_to_hub and not last and not loop.interrupt.raised:
            hub.push_run(arguments.hub_target(args), f"Epoch {epoch}")


def spectral_step(settings: DerivedSettings, run: SpectralTraining, corrupt_strength: float):
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


def update_hook(run: SpectralTraining, loop: TrainingLoop):
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


def write_card(args, settings: DerivedSettings, accelerator, run, interrupt) -> None:
    """The quick evaluation of the saved pipeline and its model card (the main process)."""
    modality = settings.formulation.modality
    evaluate_and_write_card(
        args.output_dir,
        settings.config(vars(args)),
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


def train(args, settings: DerivedSettings) -> int:
    """`main` once the flags are checked, inside the output folder's lock: check the folder, set up, train, save."""
    check_output_and_inputs(args, settings)
    hub.check_push_run(arguments.hub_target(args))
    accelerator = make_accelerator(logger=logger, **arguments.accelerator_settings(args))
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
                save = (run.noise_scheduler, run.ema_model, args.output_dir, run.mel, run.pipeline_vae)
                save_pipeline(settings, unet, *save)
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_when_launcher_dies()
    settings = arguments.derived_settings(args)
    validate_args(args, settings)
    main_process_timeout()  # SPECREG_MAIN_PROCESS_TIMEOUT, checked before training
    with OutputDirLock(args.output_dir):  # one run at a time in --output_dir (the main process holds it)
        return train(args, settings)


if __name__ == "__main__":
    run_script(main, "train_spectral.py", _STATE)
