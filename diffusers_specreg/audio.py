"""Audio as mel-spectrogram images: data, the `AudioDiffusionPipeline` and network-free audio metrics.

The recipe of teticio's audio-diffusion, on current Diffusers: audio is cut into slices, every slice becomes a
1-channel `[y_res, x_res]` mel-spectrogram image with Diffusers' (deprecated, still shipped) `Mel`, a `UNet2DModel`
learns the images, and `AudioDiffusionPipeline(vqvae=None, unet, mel, scheduler)` samples images and turns them back
into audio with Griffin-Lim.

Facts about `Mel` (diffusers 0.42.1) this module relies on:

- A slice is `slice_size = x_res * hop_length - 1` samples; its centred STFT has exactly `x_res` frames.
- `load_audio(raw_audio=...)` zero-pads a clip shorter than `x_res * hop_length`; `get_number_of_slices()` is
  `len(audio) // slice_size`, so the trailing partial slice of a longer clip is dropped.
- `audio_slice_to_image(i)` is `power_to_db(melspectrogram, ref=np.max, top_db)` scaled to `[0, 255]` uint8: every
  slice is normalised to its own loudest bin, so a near-silent slice looks as loud as a loud one, and a digitally
  silent slice becomes an image of one value (255).
- `image_to_audio(image)` inverts with `n_iter` Griffin-Lim iterations from a random phase that librosa draws from an
  unseeded generator, and returns `hop_length * (x_res - 1)` samples.

Our decisions:

- Clips shorter than one slice are skipped and counted (`too_short`) rather than zero-padded: a padded slice teaches
  the model a silent tail that real slices do not have. The trailing partial slice of a longer clip is dropped, as
  `Mel` does.
- A slice is silent, skipped and counted (`silent_slices`) when its peak amplitude is below `10 ** (-top_db / 20)`
  (-80 dBFS for `top_db=80`: the slice lies entirely below the dynamic range a full-scale spectrogram shows, and the
  per-slice normalisation would blow up its noise floor) or when its image has a single value (teticio's rule).
- Files whose sample rate differs from `sample_rate` are resampled with `librosa.resample` (soxr), and the log says how
  many were resampled from which rates. Multichannel audio is averaged to mono.
- `datasets` audio columns are read as stored bytes (`Audio(decode=False)`) and decoded with soundfile: datasets >= 4
  decodes audio with torchcodec, which has no build for every torch, and this way Hub datasets get the same
  resample-and-count policy as folders.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .data import DataError, list_files, load_hf_dataset
from .losses import MRSTFT_FFT_SIZES, MRSTFT_HOP_SIZES, MRSTFT_WIN_LENGTHS, stft_distance
from .metrics import NDB, FrechetLogMelDistance, MeanPowerSpectrum, frechet_distance, psd_log_spectral_distance

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".caf", ".w64")
NOTE_KINDS = ("tone", "linear_chirp", "exponential_chirp", "vowel")
# Slices of built-in audio per synthetic clip.
BUILTIN_SLICES_PER_CLIP = 4
# Shortest clip `audio_metrics` accepts (the resolutions are then 16 times smaller than auraloss').
MIN_METRIC_SAMPLES = 128


# ---------------------------------------------------------------------------------------------------------------
# Built-in synthetic audio
# ---------------------------------------------------------------------------------------------------------------


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _envelope(rng: np.random.Generator, length: int, sample_rate: int) -> np.ndarray:
    """Attack (linear), decay to a sustain level (exponential), release (linear to 0)."""
    t = np.arange(length) / sample_rate
    attack = min(rng.uniform(0.002, 0.05) * sample_rate, length / 3)
    release = min(rng.uniform(0.01, 0.1) * sample_rate, length / 3)
    sustain = rng.uniform(0.4, 0.9)
    decay_s = rng.uniform(0.05, 0.3)
    index = np.arange(length)
    envelope = sustain + (1.0 - sustain) * np.exp(-np.maximum(t - attack / sample_rate, 0.0) / decay_s)
    envelope = envelope * np.clip(index / max(attack, 1.0), 0.0, 1.0)
    envelope = envelope * np.clip((length - 1 - index) / max(release, 1.0), 0.0, 1.0)
    return envelope


def _note(rng: np.random.Generator, kind: str, length: int, sample_rate: int) -> np.ndarray:
    """One note of `length` samples, peak about 1, without envelope."""
    nyquist = sample_rate / 2
    f_low, f_high = min(55.0, 0.05 * nyquist), 0.8 * nyquist
    t = np.arange(length) / sample_rate
    duration = length / sample_rate
    phase0 = rng.uniform(0, 2 * np.pi)
    if kind == "tone":
        return np.sin(2 * np.pi * _log_uniform(rng, f_low, f_high) * t + phase0)
    if kind in ("linear_chirp", "exponential_chirp"):
        f0, f1 = _log_uniform(rng, f_low, f_high), _log_uniform(rng, f_low, f_high)
        if kind == "linear_chirp":
            # f(t) = f0 + (f1 - f0) t / T  ->  phase 2π (f0 t + (f1 - f0) t² / 2T)
            phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration))
        else:
            # f(t) = f0 k^(t/T), k = f1 / f0  ->  phase 2π f0 T (k^(t/T) - 1) / ln k
            log_k = np.log(f1 / f0)
            if abs(log_k) < 1e-6:
                phase = 2 * np.pi * f0 * t
            else:
                phase = 2 * np.pi * f0 * duration * np.expm1(log_k * t / duration) / log_k
        return np.sin(phase + phase0)
    if kind == "vowel":
        # harmonic source with vibrato, harmonics weighted by three Gaussian formant peaks
        f0_low = min(80.0, 1.5 * f_low)
        f0 = _log_uniform(rng, f0_low, max(min(400.0, f_high / 4), 1.01 * f0_low))
        depth = rng.uniform(0.005, 0.02)
        rate = rng.uniform(4.0, 7.0)
        instantaneous = f0 * (1.0 + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
        phase = 2 * np.pi * np.cumsum(instantaneous) / sample_rate
        scale = min(1.0, nyquist / 4000.0)
        formants = [rng.uniform(300, 900) * scale, rng.uniform(900, 2500) * scale, rng.uniform(2500, 3500) * scale]
        bandwidth = rng.uniform(60.0, 150.0) * scale
        num_harmonics = int(min(30, max(1, np.floor(0.9 * nyquist / (f0 * (1 + depth))))))
        signal = np.zeros(length)
        for k in range(1, num_harmonics + 1):
            gain = sum(np.exp(-0.5 * ((k * f0 - f) / bandwidth) ** 2) for f in formants) + 0.05 / k
            signal += gain * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
        return signal / max(np.abs(signal).max(), 1e-12)
    raise ValueError(f"Unknown note kind {kind!r}; expected one of {list(NOTE_KINDS)}.")


def _synthetic_clip(rng: np.random.Generator, length: int, sample_rate: int) -> np.ndarray:
    clip = np.zeros(length)
    # 1. a chain of overlapping notes that covers the whole clip (no silent stretch longer than a release)
    cursor = 0
    while cursor < length:
        note_length = max(8, int(rng.uniform(0.12, 0.7) * sample_rate))
        kind = str(rng.choice(NOTE_KINDS))
        note = _note(rng, kind, note_length, sample_rate) * _envelope(rng, note_length, sample_rate)
        end = min(cursor + note_length, length)
        clip[cursor:end] += rng.uniform(0.3, 1.0) * note[: end - cursor]
        cursor += max(1, int(note_length * rng.uniform(0.6, 1.0)))
    # 2. transients, about 3 per second: decaying white-noise bursts (5-40 ms) and clicks (1-3 samples)
    for _ in range(int(rng.poisson(3.0 * length / sample_rate)) + 1):
        onset = int(rng.integers(0, length))
        if rng.random() < 0.5:
            burst_length = max(2, int(rng.uniform(0.005, 0.04) * sample_rate))
            decay = np.exp(-np.arange(burst_length) / (burst_length / 5.0))
            burst = rng.uniform(0.3, 1.0) * rng.standard_normal(burst_length) * decay
            end = min(onset + burst_length, length)
            clip[onset:end] += burst[: end - onset]
        else:
            width = int(rng.integers(1, 4))
            clip[onset : onset + width] += rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)
    # 3. peak normalisation to a random level in [0.5, 0.95]
    clip *= rng.uniform(0.5, 0.95) / max(np.abs(clip).max(), 1e-12)
    return clip.astype(np.float32)


def synthetic_audio(num_clips: int, sample_rate: int, duration_s: float, seed: int = 0) -> list[np.ndarray]:
    r"""
    Built-in audio that needs no download, with the fine structure a blurry spectrogram model misses.

    Every clip is a chain of overlapping notes covering the whole clip, each with an attack-decay-sustain-release
    amplitude envelope and drawn from:

    - pure tones (log-uniform frequency between 55 Hz and 0.8 × Nyquist);
    - linear chirps `f(t) = f0 + (f1 - f0) t / T` and exponential chirps `f(t) = f0 (f1 / f0)^(t / T)`;
    - "vowel-like" harmonic tones: a fundamental of 80-400 Hz with 4-7 Hz vibrato (0.5-2 % depth), harmonics
      weighted by three Gaussian formant peaks (scaled below Nyquist at low sample rates);

    overlaid with about three transients per second: exponentially decaying white-noise bursts of 5-40 ms and clicks
    of 1-3 samples (sharp onsets: broadband vertical lines in the spectrogram). Each clip is peak-normalised to a
    random level in [0.5, 0.95]. Clip `i` depends only on `(seed, i)`, so the first clips of a larger set are the
    clips of a smaller one.

    Args:
        num_clips (`int`): number of clips.
        sample_rate (`int`): sample rate in Hz.
        duration_s (`float`): duration of every clip in seconds.
        seed (`int`, defaults to 0): seed; the same seed gives the same clips.

    Returns:
        `list[np.ndarray]`: `num_clips` float32 arrays of shape `[round(duration_s * sample_rate)]` in [-1, 1].
    """
    if num_clips < 1:
        raise DataError(f"`num_clips` must be >= 1, got {num_clips}.")
    if sample_rate < 1000:
        raise DataError(f"`sample_rate` must be >= 1000 Hz, got {sample_rate}.")
    length = int(round(duration_s * sample_rate))
    if length < 1:
        raise DataError(f"`duration_s` must give at least one sample, got {duration_s} s at {sample_rate} Hz.")
    return [_synthetic_clip(np.random.default_rng([seed % 2**63, i]), length, sample_rate) for i in range(num_clips)]


# ---------------------------------------------------------------------------------------------------------------
# Reading audio: folders and `datasets` datasets
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class AudioScan:
    """
    Audio read from a folder or a dataset, mono at `sample_rate`.

    Args:
        clips (`list[np.ndarray]`): float32 `[T]` clips, one per readable, non-empty file (or row).
        sources (`list[str]`): the file (or "row <i>") of every clip.
        unreadable (`list[str]`): files that could not be decoded.
        empty (`list[str]`): files that decoded to zero samples.
        resampled_from (`dict[int, int]`): original sample rate -> number of files resampled from it.
        sample_rate (`int`): sample rate of `clips`.
    """

    clips: list[np.ndarray]
    sources: list[str]
    unreadable: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    resampled_from: dict[int, int] = field(default_factory=dict)
    sample_rate: int = 22050

    @property
    def resampled(self) -> int:
        """Number of files resampled to `sample_rate`."""
        return sum(self.resampled_from.values())


def _decode(source: str | bytes) -> tuple[np.ndarray, int]:
    """A path or encoded bytes -> (mono float32 `[T]`, sample rate); soundfile first, librosa (audioread) second."""
    import soundfile

    try:
        data, rate = soundfile.read(io.BytesIO(source) if isinstance(source, bytes) else source, dtype="float32")
    except Exception as soundfile_error:  # libsndfile raises LibsndfileError, RuntimeError, TypeError, ...
        if isinstance(source, bytes):
            raise soundfile_error
        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # audioread fallback deprecation warnings
            data, rate = librosa.load(source, sr=None, mono=True)
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)
    return data, int(rate)


def _resample(clip: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    import librosa

    return librosa.resample(clip, orig_sr=rate, target_sr=sample_rate).astype(np.float32)


def _log_problems(scan: AudioScan, total: int, where: str, what: str) -> None:
    for items, problem in ((scan.unreadable, "that cannot be decoded"), (scan.empty, "with zero samples")):
        if items:
            shown = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
            logger.warning("Skipping %d of %d %s in %s %s (%s).", len(items), total, what, where, problem, shown)
    if scan.resampled_from:
        rates = ", ".join(f"{count} from {rate} Hz" for rate, count in sorted(scan.resampled_from.items()))
        logger.info("Resampled %d %s to %d Hz (%s).", scan.resampled, what, scan.sample_rate, rates)


def _collect(
    items: Iterable[tuple[str, Callable[[], tuple[np.ndarray, int]]]],
    sample_rate: int,
    where: str,
    what: str,
    fix: str,
) -> AudioScan:
    """Run `(name, load)` pairs (`load() -> (clip, rate)`) into an `AudioScan`, counting problems; raise if none."""
    scan = AudioScan(clips=[], sources=[], sample_rate=sample_rate)
    resampled: Counter[int] = Counter()
    total = 0
    for name, load in items:
        total += 1
        try:
            clip, rate = load()
        except Exception:  # every decoding failure counts as unreadable
            scan.unreadable.append(name)
            continue
        if clip.size == 0:
            scan.empty.append(name)
            continue
        if rate != sample_rate:
            clip = _resample(clip, rate, sample_rate)
            resampled[rate] += 1
        scan.clips.append(np.nan_to_num(clip))
        scan.sources.append(name)
    scan.resampled_from = dict(resampled)
    if not scan.clips:
        example = (scan.unreadable or scan.empty)[0]
        raise DataError(
            f"None of the {total} {what} in {where} has usable audio: {len(scan.unreadable)} cannot be decoded and "
            f"{len(scan.empty)} have zero samples (for example {example!r}). {fix}"
        )
    _log_problems(scan, total, where, what)
    return scan


def scan_audio_folder(folder: str, sample_rate: int) -> AudioScan:
    r"""
    Read every audio file under `folder` (recursively) as mono float32 at `sample_rate`.

    Files are matched by extension (`AUDIO_EXTENSIONS`: WAV, FLAC, OGG/Opus, MP3, AIFF, AU, CAF, W64) and read with
    soundfile (librosa/audioread as a fallback); multichannel audio is averaged to mono; files at another sample rate
    are resampled with `librosa.resample` (the log says how many, from which rates). Files that cannot be decoded and
    files with zero samples are skipped and counted, with a warning naming a few.

    Args:
        folder (`str`): the folder to scan.
        sample_rate (`int`): target sample rate in Hz.

    Returns:
        `AudioScan`: the clips and what was skipped or resampled.

    Raises:
        `DataError`: the folder is missing, holds no audio file, or no file has usable audio.
    """
    if not os.path.isdir(folder):
        raise DataError(
            f"--train_data_dir {folder!r} does not exist or is not a folder. Pass a folder of audio files "
            f"({', '.join(AUDIO_EXTENSIONS)})."
        )
    files = list_files(folder, AUDIO_EXTENSIONS)  # symlinked sub-folders too, each real folder once
    if not files:
        raise DataError(
            f"--train_data_dir {folder!r} contains no audio files ({', '.join(AUDIO_EXTENSIONS)}). Put audio files in "
            "it, or leave out --train_data_dir and --dataset_name to train on built-in synthetic audio."
        )
    items = ((os.path.relpath(path, folder), functools.partial(_decode, path)) for path in files)
    fix = "Check that they are valid audio files (soundfile reads WAV, FLAC, OGG, MP3 and AIFF)."
    return _collect(items, sample_rate, repr(folder), "audio files", fix)


def _audio_column(dataset) -> str:
    from datasets import Audio

    for name, feature in dataset.features.items():
        if isinstance(feature, Audio):
            return name
    if "audio" in dataset.column_names:
        return "audio"
    raise DataError(
        f"The dataset has no audio column (columns: {dataset.column_names}). It needs a column of type "
        "datasets.Audio, or one named 'audio'."
    )


def load_audio_dataset(
    name: str, config_name: str | None, cache_dir: str | None, sample_rate: int, split: str = "train"
) -> AudioScan:
    r"""
    Read the audio column of a `datasets` dataset (`load_dataset(name, config_name, split="train")`).

    The column (the first of type `datasets.Audio`, else one named "audio") is cast to `Audio(decode=False)` and its
    stored bytes (or local paths) are decoded with soundfile, resampled to `sample_rate` and counted like the files of
    `scan_audio_folder`. Rows that already hold `{"array", "sampling_rate"}` dicts are used as they are.

    Args:
        name (`str`): Hub dataset id or local dataset folder.
        config_name (`str`, *optional*): dataset configuration.
        cache_dir (`str`, *optional*): `datasets` cache folder.
        sample_rate (`int`): target sample rate in Hz.
        split (`str`, defaults to `"train"`): only `"train"` is supported, as in `train_unconditional.py`.

    Returns:
        `AudioScan`: one clip per usable row, sources named "row <i>".
    """
    if split != "train":
        raise ValueError(f"Unknown split {split!r}; expected one of ['train'].")
    from datasets import Audio

    dataset = load_hf_dataset(name, config_name, cache_dir)
    column = _audio_column(dataset)
    if isinstance(dataset.features[column], Audio):
        dataset = dataset.cast_column(column, Audio(decode=False))

    def load(value) -> tuple[np.ndarray, int]:
        if isinstance(value, dict) and value.get("array") is not None:  # an already decoded column
            array = np.asarray(value["array"], dtype=np.float32)
            return (array.mean(axis=0) if array.ndim == 2 else array), int(value["sampling_rate"])
        source = (value.get("bytes") or value.get("path")) if isinstance(value, dict) else value
        if source is None:
            raise ValueError("no audio in this row")
        return _decode(source)

    items = ((f"row {i}", functools.partial(load, row[column])) for i, row in enumerate(dataset))
    fix = "Check the dataset's audio column holds encoded audio (WAV, FLAC, OGG, MP3) or arrays with a sampling rate."
    return _collect(items, sample_rate, f"dataset {name!r}", "rows", fix)


# ---------------------------------------------------------------------------------------------------------------
# Mel-spectrogram slices
# ---------------------------------------------------------------------------------------------------------------


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
    if train_data_dir:
        scan, source = scan_audio_folder(train_data_dir, sample_rate), f"audio files in {train_data_dir}"
    elif dataset_name:
        scan = load_audio_dataset(dataset_name, dataset_config_name, cache_dir, sample_rate)
        source = f"rows of dataset {dataset_name}"
    else:
        duration = BUILTIN_SLICES_PER_CLIP * mel.slice_size / sample_rate
        clips = synthetic_audio(builtin_num_clips, sample_rate, duration, seed=seed)
        scan = AudioScan(clips=clips, sources=[f"synthetic {i}" for i in range(len(clips))], sample_rate=sample_rate)
        source = "built-in synthetic clips"
    slices = audio_to_mel_images(scan.clips, mel)
    seconds = mel_slice_seconds(mel)
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
    stats = {
        "files": len(scan.clips) + len(scan.unreadable) + len(scan.empty),
        "unreadable": len(scan.unreadable),
        "empty": len(scan.empty),
        "resampled": scan.resampled,
        "too_short": slices.too_short,
        "slices": int(slices.images.shape[0]),
        "silent_slices": slices.silent_slices,
    }
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


_SKIP_NAMES = (
    ("unreadable", "unreadable"),
    ("empty", "empty"),
    ("resampled", "resampled"),
    ("too_short", "too short"),
    ("silent_slices", "silent slices skipped"),
)


# ---------------------------------------------------------------------------------------------------------------
# Pipeline and sampling
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# Set metrics for audio
# ---------------------------------------------------------------------------------------------------------------


def _as_clip_list(waveforms, name: str) -> list[np.ndarray]:
    if isinstance(waveforms, torch.Tensor):
        waveforms = waveforms.detach().cpu().numpy()
    if isinstance(waveforms, np.ndarray):
        if waveforms.ndim == 3 and waveforms.shape[1] == 1:
            waveforms = waveforms[:, 0]
        if waveforms.ndim != 2:
            raise ValueError(f"`{name}` must have shape [B, T] (or [B, 1, T]), got {list(waveforms.shape)}.")
        clips = list(waveforms)
    else:
        clips = [np.asarray(w.detach().cpu() if isinstance(w, torch.Tensor) else w) for w in waveforms]
    if not clips:
        raise ValueError(f"`{name}` is empty.")
    for clip in clips:
        if clip.ndim != 1:
            raise ValueError(f"Every clip of `{name}` must have shape [T], got {list(clip.shape)}.")
    return [clip.astype(np.float32) for clip in clips]


def _by_length(clips: list[np.ndarray]):
    """Batches `[b, T]` of equal-length clips."""
    groups: dict[int, list[np.ndarray]] = {}
    for clip in clips:
        groups.setdefault(clip.shape[0], []).append(clip)
    return [np.stack(group) for group in groups.values()]


def mrstft_resolutions(shortest: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    r"""
    auraloss' MR-STFT resolutions, halved together until the largest FFT fits in `shortest` samples.

    Args:
        shortest (`int`): length of the shortest clip.

    Returns:
        `tuple`: `(fft_sizes, hop_sizes, win_lengths)`.
    """
    factor = 1
    while max(MRSTFT_FFT_SIZES) // factor > max(shortest, MIN_METRIC_SAMPLES):
        factor *= 2
    ffts = tuple(n // factor for n in MRSTFT_FFT_SIZES)
    hops = tuple(max(1, h // factor) for h in MRSTFT_HOP_SIZES)
    wins = tuple(min(n, max(4, w // factor)) for n, w in zip(ffts, MRSTFT_WIN_LENGTHS))
    return ffts, hops, wins


def audio_metrics(
    real_waveforms,
    fake_waveforms,
    sample_rate: int,
    ndb_bins: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    r"""
    Network-free distances between a set of real and a set of generated waveforms (unpaired, any lengths).

    Generated audio has no paired reference, so every distance compares set statistics; each is 0 for a set against
    itself. STFT settings come from `mrstft_resolutions(shortest clip)` (auraloss' resolutions, halved for short
    clips); `n_fft` below is the first of them (1024 for clips of at least 2048 samples).

    - `mrstft`: MR-STFT distance (arXiv 1910.11480) between mean magnitude spectra: per resolution, `|Y|` and `|X|`
      are the square roots of the mean STFT power of the real and generated sets (`MeanPowerSpectrum`), and the
      distance is spectral convergence `‖|Y| - |X|‖ / ‖|Y|‖` plus `mean |log |Y| - log |X||`, averaged over
      resolutions. Pairing clips would measure the random pairing, not the generator.
    - `log_spectral_distance`: `psd_log_spectral_distance` of the mean power spectra at `max(fft_sizes)`, in dB.
    - `frechet_log_mel`: `FrechetLogMelDistance` of log-mel frames (`n_fft`, hop `n_fft // 4`,
      `n_fft // 8` mel bands, clipped to [8, 80]).
    - `ndb_k`, `ndb_js`: `NDB` (arXiv 1805.12462) on the same log-mel frames, every frame a sample, with
      `min(ndb_bins, real frames // 2)` k-means bins fitted on the real frames.

    Args:
        real_waveforms (`list[np.ndarray]`, `np.ndarray` or `torch.Tensor`): real clips `[T_i]`, or `[B, T]`.
        fake_waveforms (`list[np.ndarray]`, `np.ndarray` or `torch.Tensor`): generated clips, same forms.
        sample_rate (`int`): sample rate of both sets, in Hz.
        ndb_bins (`int`, defaults to 20): NDB bins (fewer when there are few real frames).
        seed (`int`, defaults to 0): k-means seed of NDB.

    Returns:
        `dict[str, float]`: `mrstft`, `log_spectral_distance`, `frechet_log_mel`, `ndb_k`, `ndb_js`, `num_real`,
        `num_fake`.
    """
    if ndb_bins < 2:
        raise ValueError(f"`ndb_bins` must be >= 2, got {ndb_bins}.")
    real, fake = _as_clip_list(real_waveforms, "real_waveforms"), _as_clip_list(fake_waveforms, "fake_waveforms")
    shortest = min(clip.shape[0] for clip in real + fake)
    if shortest < MIN_METRIC_SAMPLES:
        raise ValueError(f"Clips must have at least {MIN_METRIC_SAMPLES} samples, the shortest has {shortest}.")
    ffts, hops, wins = mrstft_resolutions(shortest)
    real_batches, fake_batches = _by_length(real), _by_length(fake)

    def mean_power(batches, n_fft: int, hop: int, win: int) -> np.ndarray:
        accumulator = MeanPowerSpectrum(n_fft=n_fft, hop_length=hop, win_length=win, sample_rate=sample_rate)
        for batch in batches:
            accumulator.update(batch)
        return accumulator.compute().power

    # 1. MR-STFT distance (arXiv 1910.11480: spectral convergence + log STFT magnitude), on the set mean spectra
    total = 0.0
    for n_fft, hop, win in zip(ffts, hops, wins):
        magnitude_real = torch.from_numpy(np.sqrt(mean_power(real_batches, n_fft, hop, win)))[None]
        magnitude_fake = torch.from_numpy(np.sqrt(mean_power(fake_batches, n_fft, hop, win)))[None]
        total += float(stft_distance(magnitude_fake, magnitude_real))
    # 2. log-spectral distance of the mean power spectra
    lsd_fft = max(ffts)
    lsd = psd_log_spectral_distance(
        mean_power(real_batches, lsd_fft, lsd_fft // 4, lsd_fft),
        mean_power(fake_batches, lsd_fft, lsd_fft // 4, lsd_fft),
    )
    # 3. Fréchet distance (arXiv 1706.08500) and NDB on the log-mel frames of FrechetLogMelDistance
    n_fft = ffts[0]
    frechet = FrechetLogMelDistance(
        sample_rate=sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=max(8, min(80, n_fft // 8))
    )
    real_frames = torch.cat([frechet.features(batch) for batch in real_batches])
    fake_frames = torch.cat([frechet.features(batch) for batch in fake_batches])
    if min(real_frames.shape[0], fake_frames.shape[0]) < 2:
        raise ValueError("The Fréchet log-mel distance needs at least 2 STFT frames in each set.")
    # round-off can make the distance of identical statistics slightly negative; a distance is >= 0
    frechet_log_mel = max(
        0.0,
        frechet_distance(real_frames.mean(0), torch.cov(real_frames.T), fake_frames.mean(0), torch.cov(fake_frames.T)),
    )
    bins = min(ndb_bins, real_frames.shape[0] // 2)
    if bins >= 2:
        ndb = NDB(k=bins, seed=seed).fit(real_frames)
        ndb.update(fake_frames)
        ndb_result = ndb.compute()
        ndb_k, ndb_js = float(ndb_result["ndb_k"]), float(ndb_result["js"])
    else:
        ndb_k = ndb_js = float("nan")
    return {
        "mrstft": float(total / len(ffts)),
        "log_spectral_distance": float(lsd),
        "frechet_log_mel": frechet_log_mel,
        "ndb_k": ndb_k,
        "ndb_js": ndb_js,
        "num_real": len(real),
        "num_fake": len(fake),
    }
