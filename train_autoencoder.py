"""Train (or fine-tune) an `AutoencoderKL` for latent diffusion with Spectrum Matching (arXiv 2603.14645).

Stage 1 of the two-stage recipe: this script trains the autoencoder; `train_spectral.py --vae_name_or_path` trains the
diffusion model on its latents. Run it with `accelerate launch`:

    accelerate launch train_autoencoder.py --latent_regularizer esm                      # ESM-AE on built-in photos
    accelerate launch train_autoencoder.py --latent_regularizer dsm --train_data_dir imgs --resolution 256 \\
        --model_preset sd --output_dir dsm-ae-256
    accelerate launch train_autoencoder.py --pretrained_model_name_or_path stabilityai/sd-vae-ft-mse \\
        --latent_regularizer esm --train_data_dir imgs --resolution 256                 # fine-tune a Hub VAE

Loss: L1 reconstruction (+ LPIPS with `--lpips_weights`) + the regularisers of `--latent_regularizer` (kl: SD-VAE's KL,
esm: Encoding Spectrum Matching, dsm: Decoding Spectrum Matching). No PatchGAN (the authors only start it late in
training). The output folder is a plain `AutoencoderKL.save_pretrained` folder whose `scaling_factor` is 1/std of
sampled training latents, with a model card (held-out PSNR, latent spectrum plot) and TensorBoard logs.
"""

from __future__ import annotations

import argparse
import logging
import os

import torch
from accelerate.logging import get_logger

from diffusers_specreg import hub
from diffusers_specreg.autoencoder import (
    AUTOENCODER_PRESETS,
    DEFAULT_ESM_WEIGHT,
    DEFAULT_KL_WEIGHT,
    DEFAULT_LPIPS_WEIGHT,
    LATENT_REGULARIZERS,
    LPIPS,
    AutoencoderLoss,
    EncodeDecode,
    downsampling_factor,
    save_and_evaluate,
)
from diffusers_specreg.card.autoencoder import write_autoencoder_card
from diffusers_specreg.data import BUILTIN_DATASETS, build_image_dataset
from diffusers_specreg.spectrum_matching import DSM_KS, EncodingSpectrumMatching
from diffusers_specreg.train import arguments, validate
from diffusers_specreg.train.entry import run_script
from diffusers_specreg.train.lock import OutputDirLock
from diffusers_specreg.train.loop import CheckpointPolicy, LoopHooks, TrainingLoop, prepare
from diffusers_specreg.train.manifest import dataset_fingerprint, settings_of
from diffusers_specreg.train.models import load_autoencoder, new_autoencoder
from diffusers_specreg.train.output_dir import AUTOENCODER_OUTPUTS as OUTPUTS
from diffusers_specreg.train.output_dir import check_inputs, check_model_files, check_output_dir, claim_output_dir
from diffusers_specreg.train.runtime import main_process_timeout, make_accelerator
from diffusers_specreg.train.signals import stop_when_launcher_dies
from diffusers_specreg.train.tracking import log_reconstructions

logger = get_logger(__name__, log_level="INFO")
_STATE = {"training_started": False}  # errors before this is set are bad input: one line, exit code 2

# flags that cannot change when resuming (besides train.manifest.INCOMPATIBLE)
AUTOENCODER_INCOMPATIBLE = ("latent_regularizer", "model_preset", "pretrained_model_name_or_path", "subfolder")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = arguments.add_data_arguments(
        parser.add_argument_group("data (as train_unconditional.py)"),
        "Image size (default 32; a pretrained VAE's sample_size).",
    )
    data.add_argument("--builtin_dataset", type=str, default="photos", choices=BUILTIN_DATASETS)
    data.add_argument("--builtin_num_samples", type=int, default=1024, help="Number of built-in images.")
    data.add_argument(
        "--num_validation_images",
        type=int,
        default=64,
        help="Images held out of training (the last ones of the dataset) for the PSNR and spectra of the card.",
    )
    model = parser.add_argument_group("model and output")
    model.add_argument(
        "--model_preset",
        type=str,
        default="tiny",
        choices=AUTOENCODER_PRESETS,
        help="New AutoencoderKL: 'tiny' (f4, 4 latent channels, CPU-friendly) or 'sd' (the SD-VAE, f8).",
    )
    model.add_argument(
        "--pretrained_model_name_or_path",
        type=str,
        default=None,
        help="Fine-tune this AutoencoderKL (local folder or Hub id) instead of training a new one.",
    )
    model.add_argument("--subfolder", type=str, default=None, help="e.g. 'vae' for a Stable Diffusion pipeline repo.")
    model.add_argument("--output_dir", type=str, default=None, help="Default autoencoder-<preset>-<regularizers>.")
    model.add_argument("--overwrite_output_dir", action="store_true")
    sched = parser.add_argument_group("schedule (as train_unconditional.py)")
    sched.add_argument("--train_batch_size", type=int, default=16)
    sched.add_argument("--num_epochs", type=int, default=None, help="Default 10 (unless --max_train_steps is set).")
    sched.add_argument("--max_train_steps", type=int, default=None, help="Stop after this many optimiser steps.")
    sched.add_argument("--gradient_accumulation_steps", type=int, default=1)
    sched.add_argument("--validation_steps", type=int, default=200, help="Log reconstruction grids every N steps.")
    optim = arguments.add_optimizer_arguments(
        parser.add_argument_group("optimiser (the authors': AdamW 0.9/0.999, weight decay 0.005, clip 1.0)"),
        learning_rate=1e-4,
        lr_scheduler="constant_with_warmup",
        lr_warmup_steps=100,
        adam_beta1=0.9,
        adam_weight_decay=0.005,
    )
    optim.add_argument("--max_grad_norm", type=float, default=1.0)
    loss = parser.add_argument_group("loss (Spectrum Matching, arXiv 2603.14645)")
    loss.add_argument(
        "--latent_regularizer",
        type=str,
        nargs="+",
        default=["kl"],
        help=f"One or more of {', '.join(LATENT_REGULARIZERS)} (or 'none'); e.g. `esm`, `dsm`, `kl esm`.",
    )
    loss.add_argument("--kl_weight", type=float, default=DEFAULT_KL_WEIGHT, help="KL weight (SD-VAE: 1e-6).")
    loss.add_argument("--esm_weight", type=float, default=DEFAULT_ESM_WEIGHT, help="ESM weight (the authors': 0.01).")
    loss.add_argument("--esm_delta", type=float, default=1.0, help="ESM flattening exponent δ (ESM-AE: 1.0).")
    loss.add_argument("--esm_kernel_size", type=int, default=7, help="ESM Gaussian blur kernel (f8: 7, f16: 11).")
    loss.add_argument("--esm_sigma", type=float, default=1.2, help="ESM Gaussian blur σ (f8: 1.2, f16: 2.2).")
    loss.add_argument("--esm_num_bins", type=int, default=16)
    loss.add_argument(
        "--dsm_ks", type=int, nargs="+", default=list(DSM_KS), help="DSM strengths k drawn per step (mask u+v<15-k)."
    )
    loss.add_argument(
        "--perceptual_loss",
        type=str,
        default=None,
        choices=["lpips", "none"],
        help="Default: lpips when --lpips_weights is given, else none (weights are never downloaded).",
    )
    loss.add_argument(
        "--lpips_weights",
        type=str,
        default=None,
        help="Local file with the state dict of lpips.LPIPS(net='vgg') (.pth/.pt/.safetensors).",
    )
    loss.add_argument("--perceptual_weight", type=float, default=DEFAULT_LPIPS_WEIGHT)
    loss.add_argument(
        "--scaling_batches", type=int, default=4, help="Training batches to measure 1/std of the latents on."
    )
    arguments.add_hub_arguments(parser.add_argument_group("Hub (as train_unconditional.py)"))
    log = arguments.add_logging_arguments(
        parser.add_argument_group("logging and checkpoints (as train_unconditional.py)")
    )
    arguments.add_checkpoint_arguments(log)
    log.add_argument(
        "--seed", type=int, default=None, help="Seeds a new autoencoder's weights, the data order, the noise."
    )
    log.add_argument("--max_nonfinite_steps", type=int, default=5)
    args = parser.parse_args(argv)
    if args.latent_regularizer == ["none"]:
        args.latent_regularizer = []
    if args.perceptual_loss is None:
        args.perceptual_loss = "lpips" if args.lpips_weights else "none"
    if args.output_dir is None:
        names = "-".join(args.latent_regularizer) or "plain"
        args.output_dir = (
            f"autoencoder-{args.model_preset if not args.pretrained_model_name_or_path else 'ft'}-{names}"
        )
    return args


def validate_args(args) -> None:
    """Checks that need no model or data (ValueError naming the flag and the fix)."""
    validate.check_latent_regularizers(args.latent_regularizer)
    counts = ("train_batch_size", "gradient_accumulation_steps", "validation_steps", "scaling_batches")
    counts += ("num_epochs", "max_train_steps", "checkpointing_steps", "checkpoints_total_limit", "resolution")
    validate.check_at_least_one({name: getattr(args, name) for name in (*counts, "num_validation_images")})
    validate.check_finite({"learning_rate": args.learning_rate}, positive=True)
    weights = ("kl_weight", "esm_weight", "perceptual_weight")
    validate.check_finite({name: getattr(args, name) for name in weights}, positive=False)
    esm = ("esm_delta", "esm_kernel_size", "esm_sigma", "esm_num_bins")
    loss = {name: getattr(args, name) for name in (*esm, "dsm_ks", "perceptual_loss", "lpips_weights")}
    validate.check_autoencoder_loss(args.latent_regularizer, **loss)
    validate.check_mixed_precision(args.mixed_precision)
    validate.check_upload(args.push_to_hub, args.output_dir, args.logging_dir)
    if args.hub_token:
        logging.getLogger(__name__).warning(
            "--hub_token on the command line shows in `ps`; log in with `hf auth login` or set HF_TOKEN instead."
        )


def check_output_and_inputs(args) -> None:
    """As train_spectral.py (`train.output_dir.check_output_dir`), plus the autoencoder's own files: a finished model
    in the way, weights no run of ours wrote, and the model being fine-tuned (never replaced: a crash would lose it)."""
    source = args.pretrained_model_name_or_path
    if source and os.path.isdir(source):
        source = os.path.join(source, args.subfolder) if args.subfolder else source
    data = {"--train_data_dir": args.train_data_dir, "--dataset_name": args.dataset_name}
    folder = (args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    check_inputs(args.output_dir, {"--pretrained_model_name_or_path": source}, data, OUTPUTS, args.logging_dir)
    check_output_dir(*folder, args.logging_dir, OUTPUTS)
    check_model_files(*folder)


def build(args):
    """The autoencoder, the data (training and held-out parts) and the loss: every bad input fails here, before
    training. Sets `args.resolution` (a pretrained VAE's sample size when not given). `(vae, data, train, held_out,
    loss_fn, factor)`."""
    pretrained = load_autoencoder(args.pretrained_model_name_or_path, args.subfolder, args.cache_dir)
    if pretrained is not None:
        resolution = args.resolution or pretrained.config.sample_size
        pretrained.register_to_config(sample_size=resolution)
        channels = pretrained.config.in_channels
    else:
        resolution, channels = args.resolution or 32, None
    args.resolution = resolution
    data = build_image_dataset(
        **arguments.image_data_settings(args), resolution=resolution, preserve_input_precision=False, channels=channels
    )
    vae = pretrained or new_autoencoder(args.model_preset, data.channels, resolution, args.seed)
    if vae.config.in_channels != data.channels:
        raise ValueError(f"The autoencoder takes {vae.config.in_channels} channels, the data has {data.channels}.")
    factor = downsampling_factor(vae.config)
    validate.check_autoencoder_grid(args.latent_regularizer, resolution, factor)
    size = len(data.dataset)
    if size <= args.num_validation_images:
        raise ValueError(
            f"The dataset has {size} images, not more than --num_validation_images {args.num_validation_images} "
            "held out for evaluation; lower --num_validation_images or add data."
        )
    train_dataset = torch.utils.data.Subset(data.dataset, range(size - args.num_validation_images))
    held_out_dataset = torch.utils.data.Subset(data.dataset, range(size - args.num_validation_images, size))
    perceptual = LPIPS.from_file(args.lpips_weights) if args.perceptual_loss == "lpips" else None
    if perceptual is None:
        logging.getLogger(__name__).info(
            "Perceptual loss off (no --lpips_weights; LPIPS weights are never downloaded): L1 reconstruction only."
        )
    loss_fn = AutoencoderLoss(
        args.latent_regularizer,
        kl_weight=args.kl_weight,
        esm_weight=args.esm_weight,
        esm=EncodingSpectrumMatching(args.esm_kernel_size, args.esm_sigma, args.esm_num_bins, args.esm_delta),
        dsm_ks=args.dsm_ks,
        perceptual=perceptual,
        perceptual_weight=args.perceptual_weight,
    )
    return vae, data, train_dataset, held_out_dataset, loss_fn, factor


def finish(args, accelerator, vae, train_dataset, held_out: torch.Tensor, data_description: str, step: int) -> dict:
    """Scaling factor on training batches, save_pretrained, held-out evaluation, ESM plot, card (main process)."""
    loader = torch.utils.data.DataLoader(train_dataset, batch_size=args.train_batch_size, shuffle=False)
    batches = [batch["input"] for _, batch in zip(range(args.scaling_batches), loader)]
    result = save_and_evaluate(vae, batches, held_out, args.output_dir, args.seed or 0, logger)
    scaling_factor = result["scaling_factor"]
    accelerator.log(
        {"scaling_factor": scaling_factor, "eval/psnr": result["psnr"], "eval/latent_slope": result["latent_slope"]},
        step=step,
    )
    write_autoencoder_card(args.output_dir, vars(args), result, scaling_factor, data_description, step)
    return result


def train(args) -> int:
    """`main` once the flags are checked, inside the output folder's lock: check the folder, set up, train, save."""
    check_output_and_inputs(args)
    hub.check_push_run(arguments.hub_target(args))
    main_process_timeout()  # SPECREG_MAIN_PROCESS_TIMEOUT, checked before training
    vae, data, train_dataset, held_out_dataset, loss_fn, factor = build(args)
    accelerator = make_accelerator(logger=logger, **arguments.accelerator_settings(args))
    model = EncodeDecode(vae)
    model.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.learning_rate, **arguments.optimizer_settings(args))
    parts, schedule = prepare(
        accelerator,
        model,
        optimizer,
        train_dataset,
        batch_size=args.train_batch_size,
        num_workers=args.dataloader_num_workers,
        seed=args.seed,
        lr_scheduler=args.lr_scheduler,
        lr_warmup_steps=args.lr_warmup_steps,
        max_train_steps=args.max_train_steps,
        num_epochs=args.num_epochs or 10,
        logger=logger,
    )
    loss_fn.to(accelerator.device)
    held_out = torch.stack([held_out_dataset[i]["input"] for i in range(len(held_out_dataset))])
    preview = held_out[:8]

    settings = {k: v for k, v in vars(args).items()}
    settings["max_train_steps"] = schedule.max_train_steps  # the run length also when --num_epochs sets it
    dataset = dataset_fingerprint(train_dataset, args.train_data_dir)
    manifest = settings_of(settings, accelerator.num_processes, dict(vae.config), dataset)
    if accelerator.is_main_process:
        claim_output_dir(
            args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir, args.logging_dir, OUTPUTS
        )
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in settings.items()}
        hparams.pop("hub_token", None)
        accelerator.init_trackers("train_autoencoder", config=hparams)
    checkpoints = CheckpointPolicy(args.output_dir, args.checkpointing_steps, args.checkpoints_total_limit, manifest)
    loop = TrainingLoop(
        parts,
        schedule,
        checkpoints,
        max_nonfinite_steps=args.max_nonfinite_steps,
        max_grad_norm=args.max_grad_norm,
        logger=logger,
        state=_STATE,
    )
    loop.resume(
        args.resume_from_checkpoint, args.learning_rate, arguments.optimizer_settings(args), AUTOENCODER_INCOMPATIBLE
    )
    logger.info(
        f"***** Training an AutoencoderKL ({sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M parameters, f{factor}"
        f") on {data.description}: {schedule.max_train_steps} steps, batch {args.train_batch_size}, regularizers "
        f"{args.latent_regularizer or 'none'} *****"
    )

    def reconstructions(updated: bool, step: int) -> dict:
        if accelerator.is_main_process and step % args.validation_steps == 0:
            log_reconstructions(accelerator, accelerator.unwrap_model(parts.model).vae, preview, step)
        return {}

    with loop:
        code = loop.run(
            lambda batch: loss_fn(parts.model, batch["input"].to(accelerator.device), parts.rng.generator),
            LoopHooks(after_update=reconstructions),
        )
        if code is not None:
            return code
        # finish: scaling factor, save_pretrained, held-out evaluation, card, Hub; a SIGINT / SIGTERM stops its
        # loops within one encoder or decoder call, and the checkpoint of the last step is saved (resuming finishes)
        if accelerator.is_main_process and not loop.interrupt.raised:
            vae = accelerator.unwrap_model(parts.model).vae
            with loop.main_process_work(vae.encoder, vae.decoder):
                log_reconstructions(accelerator, vae, preview, loop.global_step)
                finish(args, accelerator, vae, train_dataset, held_out, data.description, loop.global_step)
                if args.push_to_hub and not loop.interrupt.raised:
                    hub.push_run(arguments.hub_target(args), f"Step {loop.global_step}")
        return loop.finish(f"Saved the autoencoder and its model card to {args.output_dir}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_when_launcher_dies()
    validate_args(args)
    with OutputDirLock(args.output_dir):  # one run at a time in --output_dir (the main process holds it)
        return train(args)


if __name__ == "__main__":
    run_script(main, "train_autoencoder.py", _STATE)
