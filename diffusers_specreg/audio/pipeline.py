"""The `AudioDiffusionPipeline` of mel images, and sampling audio from it with a seedable Griffin-Lim."""

from __future__ import annotations

import numpy as np
import torch


def _pair(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def make_audio_pipeline(unet, mel, scheduler):
    r"""
    `AudioDiffusionPipeline(vqvae=None, unet, mel, scheduler)`, checked so that it can sample.

    Save it with `save_pretrained(folder)`; `DiffusionPipeline.from_pretrained(folder)` loads it back as an
    `AudioDiffusionPipeline` (the `mel` is stored as `mel/mel_config.json`).

    Args:
        unet (`UNet2DModel`): 1 input and 1 output channel, `sample_size` equal to `(mel.y_res, mel.x_res)`.
        mel (`diffusers.Mel`): the spectrogram settings the images were made with.
        scheduler (`DDPMScheduler` or `DDIMScheduler`): the pipeline calls `set_timesteps` itself and passes `eta`
            only to DDIM.

    Returns:
        `AudioDiffusionPipeline`
    """
    from diffusers import AudioDiffusionPipeline, DDIMScheduler, DDPMScheduler

    if not isinstance(scheduler, (DDPMScheduler, DDIMScheduler)):
        raise ValueError(
            f"Unknown scheduler {type(scheduler).__name__!r} for AudioDiffusionPipeline; expected one of "
            "['DDPMScheduler', 'DDIMScheduler']."
        )
    config = unet.config
    if config.in_channels != 1 or config.out_channels != 1:
        raise ValueError(
            f"The UNet must map [B, 1, H, W] to [B, 1, H, W], got in_channels={config.in_channels}, "
            f"out_channels={config.out_channels}."
        )
    if _pair(config.sample_size) != (mel.y_res, mel.x_res):
        raise ValueError(
            f"The UNet's sample_size {config.sample_size} must be the mel image shape [H, W] = "
            f"[{mel.y_res}, {mel.x_res}] (y_res mel bands, x_res frames)."
        )
    return AudioDiffusionPipeline(vqvae=None, unet=unet, mel=mel, scheduler=scheduler)


def mel_images_to_audio(images: np.ndarray, mel, seed: int | None = None) -> np.ndarray:
    r"""
    Invert uint8 mel images to audio like `Mel.image_to_audio`, with a seedable Griffin-Lim.

    The same maths as `Mel.image_to_audio` (pixels -> dB over `top_db` -> power -> `mel_to_stft` -> `n_iter`
    Griffin-Lim iterations, momentum 0.99), but the random initial phase comes from `np.random.default_rng(seed)`,
    so the audio is reproducible. Use it on real images to give reference audio the same vocoder as samples.

    Args:
        images (`np.ndarray`): uint8 `[B, y_res, x_res]` (or one `[y_res, x_res]` image).
        mel (`diffusers.Mel`): the spectrogram settings.
        seed (`int`, *optional*): seed of the initial phases; `None` draws fresh ones.

    Returns:
        `np.ndarray`: float32 `[B, hop_length * (x_res - 1)]`.
    """
    import librosa

    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.shape[1:] != (mel.y_res, mel.x_res):
        raise ValueError(f"`images` must have shape [B, {mel.y_res}, {mel.x_res}], got {list(images.shape)}.")
    rng = np.random.default_rng(seed)
    audios = []
    for image in images:
        # 1. pixels -> dB -> power, inverting Mel.audio_slice_to_image
        power = librosa.db_to_power(image.astype(np.float64) * mel.top_db / 255.0 - mel.top_db)
        # 2. mel power -> linear STFT magnitude (non-negative least squares), then Griffin-Lim
        magnitude = librosa.feature.inverse.mel_to_stft(power, sr=mel.get_sample_rate(), n_fft=mel.n_fft)
        audio = librosa.griffinlim(
            magnitude, n_iter=mel.n_iter, hop_length=mel.hop_length, n_fft=mel.n_fft, random_state=rng
        )
        audios.append(audio.astype(np.float32))
    return np.stack(audios)


def generate_audio(
    pipeline,
    batch_size: int,
    num_inference_steps: int,
    generator: torch.Generator | None = None,
    griffin_lim_seed: int | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    r"""
    Sample mel images and audio with an `AudioDiffusionPipeline` (DDPM or DDIM with `eta=0`).

    The images depend only on `generator`. The audio of the stock `Mel.image_to_audio` starts Griffin-Lim from an
    unseeded random phase, so it changes from call to call; pass `griffin_lim_seed` to re-invert the images with
    `mel_images_to_audio` instead (reproducible, at the cost of a second Griffin-Lim pass).

    Args:
        pipeline (`AudioDiffusionPipeline`): from `make_audio_pipeline` or `DiffusionPipeline.from_pretrained`.
        batch_size (`int`): number of samples.
        num_inference_steps (`int`): denoising steps (at most the scheduler's `num_train_timesteps`).
        generator (`torch.Generator`, *optional*): generator of the initial noise and of the DDPM step noise.
        griffin_lim_seed (`int`, *optional*): seed for a reproducible inversion; `None` keeps the pipeline's audio.

    Returns:
        `tuple`: uint8 images `[B, y_res, x_res]`, float32 audio `[B, hop_length * (x_res - 1)]` and the sample rate.
    """
    if batch_size < 1 or num_inference_steps < 1:
        raise ValueError(
            f"`batch_size` and `num_inference_steps` must be >= 1, got {batch_size}, {num_inference_steps}."
        )
    train_steps = pipeline.scheduler.config.num_train_timesteps
    if num_inference_steps > train_steps:
        raise ValueError(
            f"`num_inference_steps` ({num_inference_steps}) must be <= num_train_timesteps ({train_steps})."
        )
    output = pipeline(batch_size=batch_size, steps=num_inference_steps, generator=generator, eta=0.0)
    images = np.stack([np.asarray(image, dtype=np.uint8) for image in output.images])
    if griffin_lim_seed is None:
        audios = np.asarray(output.audios, dtype=np.float32).reshape(batch_size, -1)
    else:
        audios = mel_images_to_audio(images, pipeline.mel, seed=griffin_lim_seed)
    return images, audios, int(pipeline.mel.get_sample_rate())
