"""The typed result of evaluating one pipeline: what `metrics.json` holds per pipeline and the model card reads.

It lives with the metrics (not in `evaluate/`) so that the model card (`diffusers_specreg.card`) can read it without
importing the evaluation, which itself writes cards.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np
import torch

from .. import __version__
from .inputs import PowerSpectrum

BANDS = ("all", "low", "mid", "high")
# WAV files written per pipeline (and of the data), and mel images per row of the spectrogram figure.
AUDIO_FILES = 4


def library_versions() -> dict[str, str]:
    """Versions of the packages the numbers depend on."""
    import diffusers
    import huggingface_hub

    return {
        "diffusers_specreg": __version__,
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "huggingface_hub": huggingface_hub.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


@dataclass
class PipelineResult:
    """What evaluating one pipeline gives: the typed metrics, the sample spectrum and the first samples (grid); for
    audio also the first generated clips (float32 `[N, T]`, for WAV files) and their mel images (uint8 `[N, H, W]`)."""

    name: str
    metrics: EvaluationResult
    spectrum: PowerSpectrum
    grid: torch.Tensor
    audio: np.ndarray | None = None
    mel_images: np.ndarray | None = None


@dataclass(frozen=True)
class BandDistances:
    """Mean |Δ log10 P| between the radial spectra of samples and data, overall and per third of [0, Nyquist]."""

    all: float | None = None
    low: float | None = None
    mid: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class SpectralSlopes:
    """Power-law exponents of the data's and the samples' spectra; gap = model − data (< 0: missing high
    frequencies, the blur of MSE training)."""

    data: float | None = None
    model: float | None = None
    gap: float | None = None


@dataclass(frozen=True)
class AudioScores:
    r"""
    Audio metrics of an `AudioDiffusionPipeline` (`audio.audio_metrics` of Griffin-Lim clips of generated and data mel
    images; all lower is better), how they were made, and the files written for them.

    Fields: `mrstft` (arXiv 1910.11480), `log_spectral_distance` (dB), `frechet_log_mel`, `ndb_k`, `ndb_js`
    (arXiv 1805.12462); `num_real`, `num_fake` clips; `sample_rate`, `clip_seconds`, `vocoder`, `mel` (the Mel
    settings), `seconds`; `spectrogram_figure`, `samples`, `data_samples` (paths relative to the evaluation folder).
    """

    mrstft: float | None = None
    log_spectral_distance: float | None = None
    frechet_log_mel: float | None = None
    ndb_k: float | None = None
    ndb_js: float | None = None
    num_real: int | None = None
    num_fake: int | None = None
    sample_rate: int | None = None
    clip_seconds: float | None = None
    vocoder: str | None = None
    mel: dict | None = None
    seconds: float | None = None
    spectrogram_figure: str | None = None
    samples: tuple[str, ...] = ()
    data_samples: tuple[str, ...] = ()


_NESTED = {"log_rapsd_distance": BandDistances, "slope": SpectralSlopes, "audio": AudioScores}


@dataclass(frozen=True)
class EvaluationResult(Mapping):
    r"""
    What evaluating one pipeline measured: the typed form of its entry in `metrics.json`, read by the model card and
    the benchmarks by attribute (`result.log_rapsd_distance.all`, `result.audio.mrstft`). A field that was not
    measured is `None` (FID without Inception weights, `audio` for image pipelines, file names before files are
    written); a measured value may be NaN.

    It is also a read-only `Mapping` of its JSON form ([`~EvaluationResult.to_dict`], e.g. `result["slope"]["gap"]`),
    so code written for the `metrics.json` dicts keeps working; [`~EvaluationResult.from_dict`] reads such a dict.
    """

    name: str = "model"
    pipeline: str | None = None
    pipeline_class: str | None = None
    sampler: str | None = None
    num_samples: int | None = None
    num_real: int | None = None
    num_inference_steps: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    log_rapsd_distance: BandDistances = field(default_factory=BandDistances)
    slope: SpectralSlopes = field(default_factory=SpectralSlopes)
    fwd: float | None = None
    fwd_wavelet: str | None = None
    fwd_level: int | None = None
    fid: float | None = None
    feature_extractor: str | None = None  # `fid` is the Fréchet distance on this network's features, not Inception's
    sampling_seconds: float | None = None
    dataset: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    sample_grid: str | None = None
    spectrum_plot: str | None = None
    audio: AudioScores | None = None

    @classmethod
    def from_dict(cls, data: Mapping) -> EvaluationResult:
        """Read a `metrics.json` entry (unknown keys are ignored, missing ones are `None`)."""
        if isinstance(data, EvaluationResult):
            return data
        values = {}
        for item in fields(cls):
            if item.name not in data:
                continue
            value = data[item.name]
            nested = _NESTED.get(item.name)
            if nested is not None and isinstance(value, Mapping):
                known = {f.name for f in fields(nested)}
                value = nested(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items() if k in known})
            values[item.name] = value
        return cls(**values)

    def to_dict(self) -> dict:
        """The JSON form: nested dicts, `None` fields left out."""
        out = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None:
                continue
            if item.name in _NESTED:
                value = {
                    k: list(v) if isinstance(v, tuple) else v for k, v in asdict(value).items() if v not in (None, ())
                }
            out[item.name] = value
        return out

    def with_files(self, **files) -> EvaluationResult:
        """A copy naming the files written for it: `sample_grid`, `spectrum_plot`, and for audio
        `spectrogram_figure`, `samples`, `data_samples`."""
        audio_keys = {"spectrogram_figure", "samples", "data_samples"}
        audio_files = {k: tuple(v) if isinstance(v, list) else v for k, v in files.items() if k in audio_keys}
        result = replace(self, **{k: v for k, v in files.items() if k not in audio_keys})
        if audio_files and result.audio is not None:
            result = replace(result, audio=replace(result.audio, **audio_files))
        return result

    # read-only Mapping of the JSON form
    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def __iter__(self):
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())
