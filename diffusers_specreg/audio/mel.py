"""Mel-spectrogram slices: the `Mel` settings, audio cut into uint8 images, and the training set built from them.

A slice is `x_res * hop_length - 1` samples and gives one `[y_res, x_res]` image (Diffusers' `Mel`). Clips shorter
than one slice are skipped and counted rather than zero-padded; the trailing partial slice of a longer clip is
dropped; a slice below `silence_threshold(top_db)`, or whose image has a single value, is skipped as silent.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data import DataError
from .io import AudioScan, load_audio_dataset, scan_audio_folder
from .synthetic import BUILTIN_SLICES_PER_CLIP, synthetic_audio

# The name of the module before the split, so that log lines keep their logger name.
logger = logging.getLogger("diffusers_specreg.audio")


def check_mel_settings(resolution: int, sample_rate: int, n_fft: int, hop_length: int, top_db: float = 80) -> None:
    r"""
    Raise `DataError` when the Mel settings cannot give `resolution × resolution` images.

    `resolution` is both the number of mel bands (`y_res`) and of STFT frames per slice (`x_res`); the mel bands must
    not outnumber the `n_fft // 2 + 1` STFT bins. Mel bands that get no STFT bin at all (too small an `n_fft` for the
    sample rate) are only warned about: their image rows are constant.

    Args:
        resolution (`int`): image height (mel bands) and width (frames).
        sample_rate (`int`): sample rate in Hz.
        n_fft (`int`): FFT size.
        hop_length (`int`): STFT hop in samples.
        top_db (`float`, defaults to 80): dynamic range of the images in dB.
    """
    for value, name in ((resolution, "resolution"), (sample_rate, "sample_rate"), (n_fft, "n_fft")):
        if value < 2:
            raise DataError(f"--{name} must be >= 2, got {value}.")
    if hop_length < 1:
        raise DataError(f"--hop_length must be >= 1, got {hop_length}.")
    if top_db <= 0:
        raise DataError(f"--top_db must be > 0, got {top_db}.")
    if resolution > n_fft // 2 + 1:
        raise DataError(
            f"--resolution {resolution} asks for {resolution} mel bands, but n_fft={n_fft} gives only "
            f"{n_fft // 2 + 1} frequency bins. Pass --n_fft >= {2 * (resolution - 1)} or a smaller --resolution."
        )
    import librosa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns about empty filters; we count them ourselves
        basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=resolution)
    empty = int((basis.max(axis=1) == 0).sum())
    if empty:
        logger.warning(
            "%d of %d mel bands get no STFT bin with n_fft=%d at %d Hz; their image rows will be constant. "
            "Raise --n_fft or lower --resolution.",
            empty,
            resolution,
            n_fft,
            sample_rate,
        )


def make_mel(resolution: int, sample_rate: int, n_fft: int, hop_length: int, top_db: int = 80):
    """
    A Diffusers `Mel(x_res=resolution, y_res=resolution, ...)` after `check_mel_settings`.

    Args:
        resolution (`int`): image height (mel bands) and width (frames).
        sample_rate (`int`): sample rate in Hz.
        n_fft (`int`): FFT size.
        hop_length (`int`): STFT hop in samples.
        top_db (`int`, defaults to 80): dynamic range of the images in dB.

    Returns:
        `diffusers.Mel`
    """
    from diffusers import Mel

    check_mel_settings(resolution, sample_rate, n_fft, hop_length, top_db)
    return Mel(
        x_res=resolution, y_res=resolution, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, top_db=top_db
    )


def mel_slice_seconds(mel) -> float:
    """Duration of one `Mel` slice (`x_res * hop_length - 1` samples) in seconds."""
    return mel.slice_size / mel.get_sample_rate()


def mel_audio_length(mel) -> int:
    """Samples of the audio `Mel.image_to_audio` returns: `hop_length * (x_res - 1)` (centred inverse STFT)."""
    return mel.hop_length * (mel.x_res - 1)


def silence_threshold(top_db: float) -> float:
    """Peak amplitude below which a slice is silent: `10 ** (-top_db / 20)` (below the images' dynamic range)."""
    return float(10.0 ** (-top_db / 20.0))


@dataclass
class MelSlices:
    """
    Mel-spectrogram images of a set of clips, and what was skipped.

    Args:
        images (`np.ndarray`): uint8 `[N, y_res, x_res]` images (low frequencies in row 0, as `Mel` writes them).
        too_short (`int`): clips shorter than one slice, skipped.
        silent_slices (`int`): slices skipped as silent.
        max_clip_seconds (`float`): the longest clip, in seconds.
    """

    images: np.ndarray
    too_short: int
    silent_slices: int
    max_clip_seconds: float


def audio_to_mel_images(clips: Sequence[np.ndarray], mel) -> MelSlices:
    r"""
    Cut clips into `Mel` slices and turn every non-silent slice into a uint8 mel-spectrogram image.

    Clips shorter than one slice (`mel.slice_size` samples) are skipped and counted; the trailing partial slice of a
    longer clip is dropped (as `Mel.get_number_of_slices` does). A slice whose peak amplitude is below
    `silence_threshold(mel.top_db)`, or whose image has a single value, is skipped and counted as silent.

    Args:
        clips (`Sequence[np.ndarray]`): `[T]` float clips at `mel.get_sample_rate()`.
        mel (`diffusers.Mel`): the slicing and spectrogram settings.

    Returns:
        `MelSlices`: the images `[N, y_res, x_res]` (N may be 0) and the skip counts.
    """
    threshold = silence_threshold(mel.top_db)
    images, too_short, silent, longest = [], 0, 0, 0
    for clip in clips:
        clip = np.asarray(clip, dtype=np.float32)
        if clip.ndim != 1:
            raise ValueError(f"Every clip must have shape [T], got {list(clip.shape)}.")
        longest = max(longest, clip.shape[0])
        if clip.shape[0] < mel.slice_size:
            too_short += 1
            continue
        mel.load_audio(raw_audio=clip)
        for index in range(mel.get_number_of_slices()):
            if np.abs(mel.get_audio_slice(index)).max() < threshold:
                silent += 1
                continue
            image = np.asarray(mel.audio_slice_to_image(index), dtype=np.uint8)
            if image.min() == image.max():  # teticio's rule: an image of one value is a silent slice
                silent += 1
                continue
            images.append(image)
    mel.audio = None
    stacked = np.stack(images) if images else np.zeros((0, mel.y_res, mel.x_res), dtype=np.uint8)
    return MelSlices(stacked, too_short, silent, longest / mel.get_sample_rate())


class MelImageDataset(torch.utils.data.Dataset):
    """
    Precomputed uint8 mel images `[N, H, W]`, served as `{"input": Tensor[1, H, W]}` in [-1, 1].

    The mapping `x / 255 * 2 - 1` is the one `AudioDiffusionPipeline` applies to an input image.
    """

    def __init__(self, images: np.ndarray):
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"`images` must be uint8 of shape [N, H, W], got {images.dtype} {list(images.shape)}.")
        self.images = torch.from_numpy(np.ascontiguousarray(images))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict:
        return {"input": self.images[index].unsqueeze(0).float() / 255.0 * 2.0 - 1.0}


@dataclass
class AudioTrainingData:
    """
    The audio dataset the training script uses.

    Args:
        dataset (`MelImageDataset`): yields `{"input": Tensor[1, resolution, resolution]}` in [-1, 1].
        channels (`int`): always 1.
        description (`str`): one line with the counts, for the log and the model card.
        name (`str`, *optional*): the Hub dataset id, for the model card's `datasets` metadata.
        mel (`diffusers.Mel`): the spectrogram settings, to save in the pipeline.
        stats (`dict[str, int]`): `files` (clips read: files, dataset rows or synthetic clips), `unreadable`,
            `empty`, `resampled`, `too_short`, `slices` (images kept), `silent_slices`.
    """

    dataset: MelImageDataset
    channels: int
    description: str
    name: str | None
    mel: object
    stats: dict[str, int]


def build_audio_dataset(
    *,
    dataset_name: str | None,
    dataset_config_name: str | None,
    train_data_dir: str | None,
    cache_dir: str | None,
    resolution: int,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    top_db: int = 80,
    builtin_num_clips: int = 64,
    seed: int = 0,
) -> AudioTrainingData:
    r"""
    Build the mel-spectrogram training set from exactly one source: a `datasets` name, an audio folder or built-in
    synthetic audio.

    Args:
        dataset_name (`str`, *optional*): Hub dataset id or local dataset folder with an audio column.
        dataset_config_name (`str`, *optional*): its configuration.
        train_data_dir (`str`, *optional*): folder of audio files (recursive).
        cache_dir (`str`, *optional*): `datasets` cache folder.
        resolution (`int`): image height (mel bands) and width (STFT frames per slice).
        sample_rate (`int`): sample rate in Hz; audio at other rates is resampled.
        n_fft (`int`): FFT size, `>= 2 * (resolution - 1)`.
        hop_length (`int`): STFT hop; a slice lasts `(resolution * hop_length - 1) / sample_rate` seconds.
        top_db (`int`, defaults to 80): dynamic range of the images in dB.
        builtin_num_clips (`int`, defaults to 64): synthetic clips (of `BUILTIN_SLICES_PER_CLIP` slices each) when no
            data is named.
        seed (`int`, defaults to 0): seed of the synthetic audio.

    Returns:
        `AudioTrainingData`

    Raises:
        `DataError`: bad Mel settings, unusable data, every clip shorter than one slice, or every slice silent.
    """
    if dataset_name and train_data_dir:
        raise DataError("Pass either --dataset_name or --train_data_dir, not both.")
    mel = make_mel(resolution, sample_rate, n_fft, hop_length, top_db)
    scan, source = _read_clips(
        dataset_name, dataset_config_name, train_data_dir, cache_dir, mel, sample_rate, builtin_num_clips, seed
    )
    slices = audio_to_mel_images(scan.clips, mel)
    seconds = mel_slice_seconds(mel)
    stats = _count_slices(scan, slices, seconds, resolution, hop_length, sample_rate, top_db)
    skipped = [f"{stats[key]} {what}" for key, what in _SKIP_NAMES if stats[key]]
    description = (
        f"{stats['slices']} mel slices ({resolution}x{resolution}, {seconds:.3f} s at {sample_rate} Hz) from "
        f"{stats['files']} {source}" + (f" ({', '.join(skipped)})" if skipped else "")
    )
    logger.info("Audio training data: %s", description)
    return AudioTrainingData(
        dataset=MelImageDataset(slices.images),
        channels=1,
        description=description,
        name=dataset_name or None,
        mel=mel,
        stats=stats,
    )


def _read_clips(
    dataset_name: str | None,
    dataset_config_name: str | None,
    train_data_dir: str | None,
    cache_dir: str | None,
    mel,
    sample_rate: int,
    builtin_num_clips: int,
    seed: int,
) -> tuple[AudioScan, str]:
    """The clips of the one source named (an audio folder, else a dataset, else built-in synthetic audio of
    `BUILTIN_SLICES_PER_CLIP` slices per clip) and the words that name the source in the description."""
    if train_data_dir:
        return scan_audio_folder(train_data_dir, sample_rate), f"audio files in {train_data_dir}"
    if dataset_name:
        scan = load_audio_dataset(dataset_name, dataset_config_name, cache_dir, sample_rate)
        return scan, f"rows of dataset {dataset_name}"
    duration = BUILTIN_SLICES_PER_CLIP * mel.slice_size / sample_rate
    clips = synthetic_audio(builtin_num_clips, sample_rate, duration, seed=seed)
    scan = AudioScan(clips=clips, sources=[f"synthetic {i}" for i in range(len(clips))], sample_rate=sample_rate)
    return scan, "built-in synthetic clips"


def _count_slices(
    scan: AudioScan,
    slices: MelSlices,
    seconds: float,
    resolution: int,
    hop_length: int,
    sample_rate: int,
    top_db: int,
) -> dict[str, int]:
    """`AudioTrainingData.stats` of the clips read and the slices cut; `DataError` when every clip is shorter than
    one slice of `seconds` or every slice is silent, a warning when some clips are too short."""
    if slices.too_short == len(scan.clips):
        raise DataError(
            f"Every one of the {len(scan.clips)} clips (the longest lasts {slices.max_clip_seconds:.3f} s) is shorter "
            f"than one mel slice of {seconds:.3f} s (resolution {resolution} × hop_length {hop_length} / sample_rate "
            f"{sample_rate}). Lower --resolution or --hop_length, or use longer clips."
        )
    if slices.too_short:
        logger.warning(
            "Skipping %d of %d clips shorter than one mel slice of %.3f s.", slices.too_short, len(scan.clips), seconds
        )
    if slices.images.shape[0] == 0:
        raise DataError(
            f"All {slices.silent_slices} mel slices of the {len(scan.clips)} clips are silent (peak below "
            f"{silence_threshold(top_db):.1e}, i.e. -{top_db} dBFS). Check that the audio is not silent, or normalise "
            "its level."
        )
    return {
        "files": len(scan.clips) + len(scan.unreadable) + len(scan.empty),
        "unreadable": len(scan.unreadable),
        "empty": len(scan.empty),
        "resampled": scan.resampled,
        "too_short": slices.too_short,
        "slices": int(slices.images.shape[0]),
        "silent_slices": slices.silent_slices,
    }


_SKIP_NAMES = (
    ("unreadable", "unreadable"),
    ("empty", "empty"),
    ("resampled", "resampled"),
    ("too_short", "too short"),
    ("silent_slices", "silent slices skipped"),
)
