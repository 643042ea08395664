"""Reading audio: every file of a folder, or the audio column of a `datasets` dataset, mono at one sample rate.

Files at another sample rate are resampled with `librosa.resample` (soxr) and counted; multichannel audio is averaged
to mono. Files that cannot be decoded and files with zero samples are skipped and counted. `datasets` audio columns
are read as stored bytes (`Audio(decode=False)`) and decoded with soundfile: datasets >= 4 decodes audio with
torchcodec, which has no build for every torch, and this way Hub datasets get the same resample-and-count policy as
folders.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from ..data import DataError, list_files, load_hf_dataset

# The name of the module before the split, so that log lines keep their logger name.
logger = logging.getLogger("diffusers_specreg.audio")

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".caf", ".w64")


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
