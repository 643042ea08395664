"""What the training scripts show in TensorBoard (or Weights & Biases) besides the loss terms.

`train_spectral.py` logs sample grids, a RAPSD plot against the data (and audio clips) every `--save_images_epochs`;
`train_autoencoder.py` logs originals over reconstructions every `--validation_steps`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Samples:
    """Samples drawn for the logs.

    Args:
        images (`np.ndarray` of shape `[N, H, W, C]`): in [0, 1] (audio: the mel images).
        audios (`np.ndarray`, *optional*): audio: the vocoded clips, `[N, T]`.
        sample_rate (`int`, *optional*): audio: their sample rate.
    """

    images: np.ndarray
    audios: np.ndarray | None = None
    sample_rate: int | None = None


def draw_samples(pipeline, batch_size: int, num_inference_steps: int, audio: bool = False) -> Samples:
    """`batch_size` samples of `pipeline` (seed 0, no progress bar); `audio`: an `AudioDiffusionPipeline`'s mel
    images and clips."""
    pipeline.set_progress_bar_config(disable=True)
    generator = torch.Generator(device=pipeline.device).manual_seed(0)
    if audio:
        from diffusers_specreg.audio import generate_audio

        mel_images, audios, sample_rate = generate_audio(pipeline, batch_size, num_inference_steps, generator)
        return Samples(mel_images[..., None].astype(np.float32) / 255.0, audios, sample_rate)
    images = pipeline(
        generator=generator, batch_size=batch_size, num_inference_steps=num_inference_steps, output_type="np"
    ).images
    return Samples(images)


def _clip(clip: np.ndarray) -> np.ndarray:
    return 0.9 * clip / max(float(np.abs(clip).max()), 1e-9)  # Griffin-Lim output exceeds [-1, 1]


def log_samples(accelerator, tracker: str, samples: Samples, data_batch: torch.Tensor, step: int) -> None:
    """Log a grid of `samples`, their RAPSD against `data_batch`'s (and up to 4 clips), and the log-RAPSD distance.

    Args:
        accelerator (`Accelerator`): the run's accelerator, with its trackers initialised.
        tracker (`str`): `--logger`, "tensorboard" or "wandb".
        samples (`Samples`): from `draw_samples`.
        data_batch (`torch.Tensor` of shape `[N, C, H, W]`): a fixed batch of training data in [-1, 1].
        step (`int`): the global step.
    """
    from diffusers_specreg import metrics, plots

    images, audios, sample_rate = samples.images, samples.audios, samples.sample_rate
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1
    data_freqs, data_power = metrics.rapsd(data_batch.float().cpu())
    sample_freqs, sample_power = metrics.rapsd(pixels)
    curves = {
        "data": (data_freqs, data_power.mean(0).numpy()),
        "samples": (sample_freqs, sample_power.mean(0).numpy()),
    }
    distance = metrics.log_rapsd_distance(curves["samples"][1], curves["data"][1])
    figure = plots.plot_rapsd(curves, title=f"RAPSD at step {step}")
    if tracker == "tensorboard":
        writer = accelerator.get_tracker("tensorboard", unwrap=True)
        # one grid with 2-pixel gaps between the tiles (add_images would butt them together), as the card's grid
        writer.add_image("samples", plots.image_grid(pixels, nrow=8), step, dataformats="HWC")
        writer.add_image("rapsd", plots.figure_to_array(figure), step, dataformats="HWC")
        for i, clip in enumerate(audios[:4] if audios is not None else []):
            writer.add_audio(f"audio/{i}", torch.from_numpy(_clip(clip))[None], step, sample_rate=sample_rate)
    else:
        import wandb

        logs = {"samples": [wandb.Image(i) for i in images], "rapsd": wandb.Image(plots.figure_to_array(figure))}
        if audios is not None:
            logs["audio"] = [wandb.Audio(_clip(clip), sample_rate=sample_rate) for clip in audios[:4]]
        accelerator.get_tracker("wandb").log(logs, step=step)
    accelerator.log({f"eval/log_rapsd_distance_{k}": v for k, v in distance.items()}, step=step)


def tracker_name(accelerator) -> str | None:
    """The name of the run's first tracker ("tensorboard", "wandb"), or None without one."""
    names = [tracker.name for tracker in accelerator.trackers]
    return names[0] if names else None


def log_reconstructions(accelerator, vae, images: torch.Tensor, step: int) -> None:
    """Originals (top) and their reconstructions by `vae` (bottom, the latent mode decoded) to TensorBoard.

    Args:
        accelerator (`Accelerator`): the run's accelerator; nothing is logged unless its tracker is TensorBoard.
        vae (`AutoencoderKL`): the autoencoder being trained.
        images (`torch.Tensor` of shape `[N, C, H, W]`): held-out images in [-1, 1].
        step (`int`): the global step.
    """
    if tracker_name(accelerator) != "tensorboard":
        return
    with torch.no_grad():
        reconstruction = vae.decode(vae.encode(images.to(vae.device, vae.dtype)).latent_dist.mode()).sample
    grid = torch.cat([images.cpu().float(), reconstruction.cpu().float().clamp(-1, 1)])
    pixels = ((grid + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    accelerator.get_tracker("tensorboard", unwrap=True).add_images("reconstructions", pixels, step)
