"""Spectral metrics for generated images and audio that need no pretrained network.

No Inception, VGGish or CLAP weights can be downloaded here, so FID, KID, IS and FAD are out of reach. Everything in
this package is computed from the samples alone, one module per family:

- `spectra`: radially averaged power spectral density (`RAPSD`, `rapsd`, `radial_profile`), the per-band distance
  between two log-spectra (`log_rapsd_distance`), the power-law exponent of a spectrum (`spectral_slope`) and
  `compare_image_sets`, the image report used by the evaluation command;
- `frechet`: the Fréchet distance (`frechet_distance`, `RunningMoments`, `FeatureStatistics`) and the Fréchet Wavelet
  Distance (`FrechetWaveletDistance`, arXiv 2312.15289) on wavelet packet coefficients;
- `ndb`: Number of statistically Different Bins (`NDB`, arXiv 1805.12462) with the Jensen-Shannon divergence of the
  bins;
- `audio`: multi-resolution STFT distance (`mrstft_distance`), log-spectral distance (`log_spectral_distance`,
  `psd_log_spectral_distance` with `MeanPowerSpectrum`) and a Fréchet distance on log-mel frames
  (`FrechetLogMelDistance`), and `audio_metrics`, the set report of unpaired clips;
- `inputs`: the array conversions and option checks they share;
- `results`: the typed result of evaluating one pipeline (`EvaluationResult` with `BandDistances`, `SpectralSlopes`,
  `AudioScores`; `PipelineResult`), the form of `metrics.json` that the evaluation writes and the model card reads.

Every name is importable from `diffusers_specreg.metrics` as before the split.

Conventions:

- Inputs are `torch.Tensor` or `numpy.ndarray`: images `[B, C, H, W]`, waveforms `[B, T]` or `[B, C, T]`. Images may
  be in any range; the power spectra scale with it (the log-spectral distances and slopes do not depend on a common
  scale), and the Fréchet Wavelet Distance maps `data_range` to `[0, 1]` first, as the reference implementation
  does with images read by `ToTensor`.
- Every set metric is a streaming accumulator: `update(batch)` any number of times, then `compute()`. The state is
  running sums (means and centred sums of outer products merged batch by batch, bin counts), never the samples, so
  memory does not grow with the number of samples and updating in chunks gives the one-shot result up to rounding.
  The one exception is `NDB.fit`, which needs the reference samples to run k-means; the generated set streams.
- Statistics accumulate in float64 on the device of the first batch. Results are deterministic; the only random
  step (k-means++ seeding in `NDB`) takes a seed.
"""

from .audio import (
    LOG_MEL_INPUT_TYPES,
    MIN_METRIC_SAMPLES,
    FrechetLogMelDistance,
    MeanPowerSpectrum,
    audio_metrics,
    log_spectral_distance,
    mrstft_distance,
    mrstft_resolutions,
    psd_log_spectral_distance,
)
from .frechet import (
    FRECHET_METHODS,
    FeatureStatistics,
    FrechetWaveletDistance,
    RunningMoments,
    feature_frechet_distance,
    frechet_distance,
    frechet_from_moments,
    packet_paths,
    wavelet_packet_transform,
)
from .inputs import REDUCTIONS, ArrayLike, PowerSpectrum
from .ndb import NDB, jensen_shannon_divergence, kmeans
from .results import AudioScores, BandDistances, EvaluationResult, PipelineResult, SpectralSlopes, library_versions
from .spectra import (
    DEFAULT_BANDS,
    RAPSD,
    compare_image_sets,
    log_rapsd_distance,
    radial_frequencies,
    radial_profile,
    rapsd,
    spectral_slope,
)

__all__ = [
    "DEFAULT_BANDS",
    "FRECHET_METHODS",
    "LOG_MEL_INPUT_TYPES",
    "MIN_METRIC_SAMPLES",
    "REDUCTIONS",
    "NDB",
    "RAPSD",
    "ArrayLike",
    "AudioScores",
    "BandDistances",
    "EvaluationResult",
    "FeatureStatistics",
    "FrechetLogMelDistance",
    "FrechetWaveletDistance",
    "MeanPowerSpectrum",
    "PipelineResult",
    "PowerSpectrum",
    "RunningMoments",
    "SpectralSlopes",
    "audio_metrics",
    "compare_image_sets",
    "feature_frechet_distance",
    "frechet_distance",
    "frechet_from_moments",
    "jensen_shannon_divergence",
    "kmeans",
    "library_versions",
    "log_rapsd_distance",
    "log_spectral_distance",
    "mrstft_distance",
    "mrstft_resolutions",
    "packet_paths",
    "psd_log_spectral_distance",
    "radial_frequencies",
    "radial_profile",
    "rapsd",
    "spectral_slope",
    "wavelet_packet_transform",
]
