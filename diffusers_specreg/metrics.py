"""Spectral metrics for generated images and audio that need no pretrained network.

No Inception, VGGish or CLAP weights can be downloaded here, so FID, KID, IS and FAD are out of reach. Everything in
this module is computed from the samples alone:

- radially averaged power spectral density (`RAPSD`, `rapsd`, `radial_profile`), the per-band distance between two
  log-spectra (`log_rapsd_distance`) and the power-law exponent of a spectrum (`spectral_slope`);
- Fréchet Wavelet Distance (`FrechetWaveletDistance`, arXiv 2312.15289) on wavelet packet coefficients;
- Number of statistically Different Bins (`NDB`, arXiv 1805.12462) with the Jensen-Shannon divergence of the bins;
- audio: multi-resolution STFT distance (`mrstft_distance`), log-spectral distance (`log_spectral_distance`,
  `psd_log_spectral_distance` with `MeanPowerSpectrum`) and a Fréchet distance on log-mel frames
  (`FrechetLogMelDistance`);
- `compare_image_sets`, the image report used by the evaluation command.

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

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pywt
import torch
from scipy import linalg
from scipy.stats import norm as normal_distribution

from .losses import MRSTFT_FFT_SIZES, MRSTFT_HOP_SIZES, MRSTFT_WIN_LENGTHS, MultiResolutionSTFTLoss
from .transforms import dwt, radial_frequency, stft

ArrayLike = torch.Tensor | np.ndarray

# Thirds of the non-DC frequency range [0, Nyquist], as fractions of the Nyquist frequency.
DEFAULT_BANDS = {"low": (0.0, 1.0 / 3.0), "mid": (1.0 / 3.0, 2.0 / 3.0), "high": (2.0 / 3.0, 1.0)}
FRECHET_METHODS = ("eigh", "sqrtm")
REDUCTIONS = ("none", "mean", "sum")
LOG_MEL_INPUT_TYPES = ("waveform", "spectrogram")


# ----------------------------------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------------------------------


def _as_float_tensor(x: ArrayLike, name: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor or a numpy.ndarray, got {type(x).__name__}.")
    return x.detach().to(dtype)


def _as_images(x: ArrayLike, name: str = "images", dtype: torch.dtype = torch.float64) -> torch.Tensor:
    x = _as_float_tensor(x, name, dtype)
    if x.ndim != 4:
        raise ValueError(f"`{name}` must have shape [B, C, H, W], got {list(x.shape)}.")
    return x


def _as_waveforms(x: ArrayLike, name: str = "waveforms", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`[B, T]` or `[B, C, T]` -> `[B, C, T]`."""
    x = _as_float_tensor(x, name, dtype)
    if x.ndim == 2:
        x = x.unsqueeze(1)
    if x.ndim != 3:
        raise ValueError(f"`{name}` must have shape [B, T] or [B, C, T], got {list(x.shape)}.")
    return x


def _as_1d_array(x: ArrayLike | PowerSpectrum, name: str) -> np.ndarray:
    if isinstance(x, PowerSpectrum):
        x = x.power
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D spectrum of shape [K], got shape {list(x.shape)}.")
    return x


def _check_choice(value: str, allowed: Sequence[str], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {list(allowed)}.")


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    _check_choice(reduction, REDUCTIONS, "reduction")
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


# ----------------------------------------------------------------------------------------------------------------
# Radially averaged power spectral density
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class PowerSpectrum:
    r"""
    A mean power spectrum over a set of samples.

    Args:
        frequencies (`np.ndarray`): `[K]` bin frequencies, in cycles per pixel / per sample (0 to 0.5), or in Hz
            where a sample rate was given. Index 0 is DC.
        power (`np.ndarray`): `[K]` mean power per bin over the samples (orthonormal DFT, channels averaged).
        num_samples (`int`): number of samples averaged.
    """

    frequencies: np.ndarray
    power: np.ndarray
    num_samples: int


@functools.lru_cache(maxsize=32)
def _radial_bins(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Integer radius of every `[H, W]` DFT index (`fftfreq` layout), the pixels kept, and the number of bins."""
    size = min(height, width)
    num_bins = size // 2 + 1
    # radius in cycles/pixel times the shorter side: integer radius in frequency-index units of the shorter axis
    radius = radial_frequency((height, width), dtype=torch.float64) * size
    index = torch.round(radius).long().flatten()
    keep = torch.nonzero(index < num_bins).squeeze(1)
    return index[keep], keep, num_bins


def radial_frequencies(height: int, width: int | None = None) -> np.ndarray:
    r"""
    Frequencies of the radial bins of `radial_profile` (2-D) or of the rfft bins (1-D, `width=None`).

    Args:
        height (`int`): image height, or signal length `T` for 1-D signals.
        width (`int`, *optional*, defaults to `None`): image width; `None` for 1-D signals.

    Returns:
        `np.ndarray`: `[K]` frequencies in cycles per pixel (sample), `k / min(H, W)` for `k = 0 .. min(H, W) // 2`
        (`k / T` for `k = 0 .. T // 2`).
    """
    size = height if width is None else min(height, width)
    return np.arange(size // 2 + 1, dtype=np.float64) / size


def radial_profile(power: torch.Tensor) -> torch.Tensor:
    r"""
    Average a 2-D power spectrum over rings of equal integer radius.

    The radius of DFT index `(u, v)` is `round(sqrt(fy^2 + fx^2) * min(H, W))` with `fy, fx` in cycles per pixel,
    i.e. the integer radius in frequency-index units of the shorter axis. Bins run from 0 (DC alone) to the axis
    Nyquist `min(H, W) // 2`; the corners beyond it are dropped, so every bin is a full ring.

    Args:
        power (`torch.Tensor`): `[..., H, W]` power spectrum in the un-shifted `torch.fft.fft2` layout.

    Returns:
        `torch.Tensor`: `[..., min(H, W) // 2 + 1]` mean power per ring, dtype of `power`.
    """
    if power.ndim < 2:
        raise ValueError(f"`power` must have shape [..., H, W], got {list(power.shape)}.")
    height, width = power.shape[-2:]
    index, keep, num_bins = _radial_bins(height, width)
    index, keep = index.to(power.device), keep.to(power.device)
    flat = power.reshape(-1, height * width)[:, keep]
    sums = torch.zeros(flat.shape[0], num_bins, dtype=power.dtype, device=power.device)
    sums.index_add_(1, index, flat)
    counts = torch.bincount(index, minlength=num_bins).to(power.dtype)
    return (sums / counts).reshape(*power.shape[:-2], num_bins)


def rapsd(x: ArrayLike) -> tuple[np.ndarray, torch.Tensor]:
    r"""
    Radially averaged power spectral density of every sample of a batch.

    Per sample: orthonormal DFT over the signal dimensions (`norm="ortho"`, nothing subtracted, so bin 0 holds the
    DC power `|mean|^2 * H * W`), `|X|^2` averaged over channels, then averaged over rings of integer radius
    (`radial_profile`) for images, or taken per rfft bin for 1-D signals.

    Args:
        x (`torch.Tensor` or `np.ndarray`): images `[B, C, H, W]` or 1-D signals `[B, C, T]`, any range.

    Returns:
        `tuple[np.ndarray, torch.Tensor]`: frequencies `[K]` in cycles per pixel (sample), 0 to 0.5, and the
        float64 power `[B, K]`, `K = min(H, W) // 2 + 1` (`T // 2 + 1`).
    """
    x = _as_float_tensor(x, "x")
    if x.ndim == 4:
        power = torch.fft.fft2(x, norm="ortho").abs().square().mean(dim=1)
        return radial_frequencies(*x.shape[-2:]), radial_profile(power)
    if x.ndim == 3:
        power = torch.fft.rfft(x, norm="ortho").abs().square().mean(dim=1)
        return radial_frequencies(x.shape[-1]), power
    raise ValueError(f"`x` must have shape [B, C, H, W] (images) or [B, C, T] (signals), got {list(x.shape)}.")


class RAPSD:
    r"""
    Streaming radially averaged power spectral density of a set of images (or 1-D signals).

    Keeps the running sum of the per-sample spectra of `rapsd`, so memory is `O(K)` whatever the number of samples.
    The DC bin is kept in `power[0]`; the distances and slope fits of this module exclude it.

    Example:
        ```py
        acc = RAPSD()
        for batch in loader:
            acc.update(batch)  # [B, C, H, W]
        spectrum = acc.compute()  # PowerSpectrum(frequencies, power, num_samples)
        ```
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every sample seen."""
        self._sum: torch.Tensor | None = None
        self._frequencies: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None
        self.num_samples = 0

    def update(self, x: ArrayLike) -> None:
        r"""
        Add a batch.

        Args:
            x (`torch.Tensor` or `np.ndarray`): `[B, C, H, W]` images or `[B, C, T]` signals; every batch must have
                the same shape apart from `B`.
        """
        shape = tuple(np.shape(x)[1:])
        if self._shape is not None and shape != self._shape:
            raise ValueError(f"Expected batches of shape [B, {', '.join(map(str, self._shape))}], got {list(shape)}.")
        frequencies, power = rapsd(x)
        batch_sum = power.sum(dim=0)
        self._sum = batch_sum if self._sum is None else self._sum + batch_sum.to(self._sum.device)
        self._frequencies, self._shape = frequencies, shape
        self.num_samples += power.shape[0]

    def compute(self) -> PowerSpectrum:
        """
        Returns:
            `PowerSpectrum`: bin frequencies (cycles per pixel) and the mean power per bin over all samples.
        """
        if self.num_samples == 0:
            raise RuntimeError("RAPSD.compute() called before any update().")
        power = (self._sum / self.num_samples).cpu().numpy()
        return PowerSpectrum(frequencies=self._frequencies.copy(), power=power, num_samples=self.num_samples)


def _band_items(bands: Mapping[str, tuple[float, float]] | Sequence[tuple[float, float]]):
    if isinstance(bands, Mapping):
        return list(bands.items())
    bands = list(bands)
    names = ["low", "mid", "high"] if len(bands) == 3 else [f"band{i}" for i in range(len(bands))]
    return list(zip(names, bands))


def log_rapsd_distance(
    psd_a: ArrayLike | PowerSpectrum,
    psd_b: ArrayLike | PowerSpectrum,
    bands: Mapping[str, tuple[float, float]] | Sequence[tuple[float, float]] = DEFAULT_BANDS,
    eps: float = 1e-20,
    relative_floor: float = 1e-4,
    floor: float | None = None,
) -> dict[str, float]:
    r"""
    Mean absolute difference of two log10 power spectra, overall and per frequency band.

    `d_k = |log10 P_a[k] - log10 P_b[k]|` for the non-DC bins `k = 1 .. K-1`; a bin belongs to band `(lo, hi]` when
    `k / (K - 1)`, its frequency as a fraction of Nyquist, lies in it. The default bands are the thirds of
    `[0, Nyquist]`. A value of 0.1 means the spectra differ by a factor `10^0.1 ≈ 1.26` on average.

    Args:
        psd_a (`np.ndarray`, `torch.Tensor` or `PowerSpectrum`): `[K]` power spectrum, bin 0 = DC (from `RAPSD`).
        psd_b (`np.ndarray`, `torch.Tensor` or `PowerSpectrum`): `[K]` power spectrum on the same bins.
        bands (`dict[str, tuple[float, float]]` or sequence of pairs, defaults to thirds named low/mid/high): band
            edges as fractions of Nyquist; a sequence of three pairs is named "low", "mid", "high", others "band<i>".
        eps (`float`, defaults to `1e-20`): absolute power floor before the logarithm.
        relative_floor (`float`, defaults to `1e-4`): power floor as a fraction of the larger of the two spectra's
            mean non-DC power (40 dB below it), so empty bins do not dominate the distance.
        floor (`float`, *optional*): an absolute power floor used instead of `relative_floor` (for example 1e-4 of
            the data's peak power, so that every model is compared against the same floor).

    Returns:
        `dict[str, float]`: `"all"` and one entry per band; a band without bins (tiny inputs) is `nan`.
    """
    a = _as_1d_array(psd_a, "psd_a")
    b = _as_1d_array(psd_b, "psd_b")
    if a.shape != b.shape:
        raise ValueError(f"`psd_a` and `psd_b` must have the same shape, got {list(a.shape)} and {list(b.shape)}.")
    if a.shape[0] < 2:
        raise ValueError("The spectra need at least one non-DC bin (shape [K] with K >= 2).")
    # Power below a floor relative to the spectra's mean non-DC power counts as that floor: otherwise bins with
    # (numerically) no energy, such as the even harmonics of a checkerboard, dominate the log distance.
    if floor is None:
        floor = relative_floor * float(max(a[1:].mean(), b[1:].mean()))
    floor = max(eps, float(floor))
    diff = np.abs(np.log10(np.maximum(a, floor)) - np.log10(np.maximum(b, floor)))[1:]
    fraction = np.arange(1, a.shape[0]) / (a.shape[0] - 1)
    result = {"all": float(diff.mean())}
    for name, (low, high) in _band_items(bands):
        mask = (fraction > low) & (fraction <= high)
        result[name] = float(diff[mask].mean()) if mask.any() else float("nan")
    return result


def spectral_slope(
    freqs: ArrayLike, power: ArrayLike | PowerSpectrum, fmin: float | None = None, fmax: float | None = None
) -> float:
    r"""
    Power-law exponent of a spectrum: the least-squares slope of `log10 P` against `log10 f`.

    Natural images have `P(f) ∝ f^-α` with `α ≈ 2`, so the slope is about -2; white noise gives 0. The DC bin
    (`f = 0`) and bins with zero power are excluded.

    Args:
        freqs (`np.ndarray` or `torch.Tensor`): `[K]` bin frequencies.
        power (`np.ndarray`, `torch.Tensor` or `PowerSpectrum`): `[K]` power per bin.
        fmin (`float`, *optional*, defaults to `None`): lowest frequency fitted (inclusive); `None` = lowest non-DC.
        fmax (`float`, *optional*, defaults to `None`): highest frequency fitted (inclusive); `None` = Nyquist.

    Returns:
        `float`: the slope (power-law exponent, negative for spectra that fall with frequency).
    """
    f = _as_1d_array(freqs, "freqs")
    p = _as_1d_array(power, "power")
    if f.shape != p.shape:
        raise ValueError(f"`freqs` and `power` must have the same shape, got {list(f.shape)} and {list(p.shape)}.")
    mask = (f > 0) & (p > 0)
    if fmin is not None:
        mask &= f >= fmin
    if fmax is not None:
        mask &= f <= fmax
    if mask.sum() < 2:
        raise ValueError("At least two non-DC bins with positive power are needed in [fmin, fmax] to fit a slope.")
    slope, _ = np.polyfit(np.log10(f[mask]), np.log10(p[mask]), deg=1)
    return float(slope)


# ----------------------------------------------------------------------------------------------------------------
# Fréchet distance and streaming moments
# ----------------------------------------------------------------------------------------------------------------


def _frechet_batched(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor, method: str, eps: float
) -> torch.Tensor:
    """Fréchet distance of `[..., D]` means and `[..., D, D]` covariances (float64) -> `[...]`."""
    diff = mu1 - mu2
    traces = sigma1.diagonal(dim1=-2, dim2=-1).sum(-1) + sigma2.diagonal(dim1=-2, dim2=-1).sum(-1)
    if method == "eigh":
        # 1. S1 = V diag(w) V^T, factor L = V diag(sqrt w) (round-off negative eigenvalues clipped)
        values, vectors = torch.linalg.eigh(sigma1)
        factor = vectors * values.clamp_min(0.0).sqrt().unsqueeze(-2)
        # 2. L^T S2 L is symmetric PSD with the eigenvalues of S1 S2 = L L^T S2, so tr (S1 S2)^{1/2} = sum sqrt(eig)
        inner = factor.transpose(-1, -2) @ sigma2 @ factor
        inner = (inner + inner.transpose(-1, -2)) / 2.0
        tr_covmean = torch.linalg.eigvalsh(inner).clamp_min(0.0).sqrt().sum(-1)
    else:
        # pytorch-fid / TTUR recipe: sqrtm of the product, retried with an offset when it is not finite
        s1, s2 = sigma1.cpu().numpy(), sigma2.cpu().numpy()
        dim = s1.shape[-1]
        flat1, flat2 = s1.reshape(-1, dim, dim), s2.reshape(-1, dim, dim)
        values = []
        for a, b in zip(flat1, flat2):
            covmean = linalg.sqrtm(a @ b)
            if not np.isfinite(covmean).all():
                offset = np.eye(dim) * eps
                covmean = linalg.sqrtm((a + offset) @ (b + offset))
            values.append(np.trace(np.real(covmean)))
        tr_covmean = torch.tensor(values, dtype=torch.float64).reshape(s1.shape[:-2]).to(sigma1.device)
    return (diff * diff).sum(-1) + traces - 2.0 * tr_covmean


def frechet_distance(
    mu1: ArrayLike,
    sigma1: ArrayLike,
    mu2: ArrayLike,
    sigma2: ArrayLike,
    method: Literal["eigh", "sqrtm"] = "eigh",
    eps: float = 1e-6,
) -> float:
    r"""
    Fréchet distance between two Gaussians, `|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})` (arXiv 1706.08500).

    Args:
        mu1 (`np.ndarray` or `torch.Tensor`): `[D]` mean of the first set.
        sigma1 (`np.ndarray` or `torch.Tensor`): `[D, D]` covariance of the first set.
        mu2 (`np.ndarray` or `torch.Tensor`): `[D]` mean of the second set.
        sigma2 (`np.ndarray` or `torch.Tensor`): `[D, D]` covariance of the second set.
        method (`"eigh"` or `"sqrtm"`, defaults to `"eigh"`): how `tr (S1 S2)^{1/2}` is computed. `"eigh"`: with
            `S1 = L L^T` from the eigendecomposition of `S1`, it is `sum sqrt(eig(L^T S2 L))`, a symmetric
            eigenproblem that stays real and accurate for the singular covariances of fewer samples than features,
            and runs batched on the GPU. `"sqrtm"`: the pytorch-fid / TTUR recipe, `scipy.linalg.sqrtm(S1 @ S2)`,
            retried with `eps` added to both diagonals when not finite, real part taken. The two agree for
            well-conditioned covariances.
        eps (`float`, defaults to `1e-6`): diagonal offset of the `"sqrtm"` fallback.

    Returns:
        `float`: the distance (about `±1e-12` relative to the traces, possibly negative, for identical statistics).
    """
    _check_choice(method, FRECHET_METHODS, "method")
    mu1, mu2, sigma1, sigma2 = (_as_float_tensor(v, "statistics").cpu() for v in (mu1, mu2, sigma1, sigma2))
    dim = mu1.shape[0] if mu1.ndim == 1 else -1
    if mu1.ndim != 1 or mu2.shape != (dim,) or sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            f"Expected means of shape [D] and covariances of shape [D, D]; got {list(mu1.shape)}, "
            f"{list(sigma1.shape)}, {list(mu2.shape)}, {list(sigma2.shape)}."
        )
    return float(_frechet_batched(mu1, sigma1, mu2, sigma2, method, eps))


class _RunningMoments:
    """
    Streaming mean and covariance of `[N, *G, D]` features per group `G`, in float64.

    Each batch contributes its mean and centred sum of outer products, merged with the running ones by the pairwise
    update of Chan, Golub & LeVeque (1979). Unlike raw sums of `x x^T`, this does not lose precision when the mean
    is large compared with the spread.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        n_batch = x.shape[0]
        if n_batch == 0:
            return
        x = x.to(torch.float64)
        if self.mean is not None:
            x = x.to(self.mean.device)
        x = x.movedim(0, -2)  # [*G, N, D]
        mean_batch = x.mean(dim=-2)
        centred = x - mean_batch.unsqueeze(-2)
        m2_batch = centred.transpose(-1, -2) @ centred
        if self.count == 0:
            self.mean, self.m2, self.count = mean_batch, m2_batch, n_batch
            return
        total = self.count + n_batch
        delta = mean_batch - self.mean
        self.mean = self.mean + delta * (n_batch / total)
        self.m2 = self.m2 + m2_batch + delta.unsqueeze(-1) * delta.unsqueeze(-2) * (self.count * n_batch / total)
        self.count = total

    def covariance(self) -> torch.Tensor:
        return self.m2 / (self.count - 1)


def _frechet_from_moments(a: _RunningMoments, b: _RunningMoments, method: str, what: str) -> np.ndarray:
    """Fréchet distance per group between two `_RunningMoments` -> `[*G]` (a 0-d array for no group)."""
    for moments, name in ((a, "real"), (b, "generated")):
        if moments.count < 2:
            raise RuntimeError(f"{what} needs at least 2 {name} samples, got {moments.count}.")
    device = a.mean.device
    distances = _frechet_batched(
        a.mean, a.covariance(), b.mean.to(device), b.covariance().to(device), method=method, eps=1e-6
    )
    return distances.cpu().numpy()


# ----------------------------------------------------------------------------------------------------------------
# Fréchet Wavelet Distance (arXiv 2312.15289)
# ----------------------------------------------------------------------------------------------------------------


class FeatureStatistics:
    r"""
    Streaming mean and covariance of the features an extractor gives a set of images (the moments of FID).

    Args:
        extractor (`Callable[[torch.Tensor], torch.Tensor]`): images `[B, C, H, W]` in `[-1, 1]` -> features
            `[B, D]` (or `[B, ...]`, flattened). Any network: a local Inception TorchScript file gives FID, the
            penultimate layer of a classifier trained on the data gives the FID analogue of the MNIST literature.
    """

    def __init__(self, extractor) -> None:
        self.extractor = extractor
        self.moments = _RunningMoments()

    @torch.no_grad()
    def update(self, images: ArrayLike) -> None:
        """Add a batch `[B, C, H, W]` in `[-1, 1]`."""
        features = self.extractor(_as_images(images, dtype=torch.float32))
        self.moments.update(torch.as_tensor(features).reshape(features.shape[0], -1).detach().cpu())

    @property
    def count(self) -> int:
        return self.moments.count

    def distance(self, other: FeatureStatistics, method: Literal["eigh", "sqrtm"] = "eigh") -> float:
        """The Fréchet distance between these moments and `other`'s."""
        _check_choice(method, FRECHET_METHODS, "method")
        return float(_frechet_from_moments(self.moments, other.moments, method, "feature Fréchet distance"))


def feature_frechet_distance(
    real: ArrayLike | Iterable[ArrayLike],
    generated: ArrayLike | Iterable[ArrayLike],
    extractor,
    batch_size: int = 256,
    method: Literal["eigh", "sqrtm"] = "eigh",
) -> float:
    r"""
    Fréchet distance between the Gaussians fitted to `extractor`'s features of two image sets (arXiv 1706.08500).

    With Inception pool features this is FID; with any other network it is the same statistic in that network's
    feature space (FD_cls for a data set's own classifier). Unlike the spectral metrics it sees what the images
    show, so no spectral statistic can improve it without better images.

    Args:
        real (`torch.Tensor`, `np.ndarray` or an iterable of batches): `[N, C, H, W]` data images in `[-1, 1]`.
        generated (same types): `[M, C, H, W]` generated images in `[-1, 1]`.
        extractor (`Callable[[torch.Tensor], torch.Tensor]`): images `[B, C, H, W]` -> features `[B, D]`.
        batch_size (`int`, defaults to 256): images per extractor call for tensors and arrays.
        method (`"eigh"` or `"sqrtm"`, defaults to `"eigh"`): see [`frechet_distance`].

    Returns:
        `float`: the distance (0 up to round-off for identical feature statistics).
    """
    statistics = []
    for images in (real, generated):
        moments = FeatureStatistics(extractor)
        for batch in _batches(images, batch_size):
            moments.update(batch)
        statistics.append(moments)
    return statistics[0].distance(statistics[1], method)


def _check_wavelet(wavelet: str) -> int:
    """The filter length of a discrete PyWavelets wavelet; ValueError naming some for an unknown one."""
    try:
        return pywt.Wavelet(wavelet).dec_len
    except ValueError as error:
        raise ValueError(
            f"Unknown wavelet {wavelet!r}; expected a discrete PyWavelets name such as {pywt.wavelist(kind='discrete')[:8]}."
        ) from error


def _dwt2(x: torch.Tensor, wavelet: str) -> torch.Tensor:
    """One level of the periodised 2-D DWT of `[..., H, W]` -> `[..., 4, H/2, W/2]`, ordered a, h, v, d as pywt.

    `transforms.dwt` (pytorch_wavelets, mode "periodization") does the work. A grid shorter than twice the filter is
    tiled first: the periodised transform of a periodically tiled signal is the tiled transform, so cropping gives
    `pywt`'s coefficients for any size, as `pywt.WaveletPacket2D(mode="periodization")` computes them."""
    *lead, height, width = x.shape
    need = 2 * (_check_wavelet(wavelet) - 1)
    reps = (max(1, math.ceil(need / height)), max(1, math.ceil(need / width)))
    tiled = x.reshape(-1, 1, height, width).repeat(1, 1, *reps)
    bands = dwt(tiled, wavelet, levels=1, mode="periodization")  # LL, LH (pywt h), HL (pywt v), HH (pywt d)
    coefficients = torch.stack([band for _, _, band in bands], dim=-3)[..., : height // 2, : width // 2]
    return coefficients.reshape(*lead, 4, height // 2, width // 2)


def packet_paths(level: int) -> list[str]:
    r"""
    Names of the 2-D wavelet packets of a level in natural order, as `pywt.WaveletPacket2D.get_level(level)`.

    Args:
        level (`int`): decomposition level.

    Returns:
        `list[str]`: `4**level` paths such as `"ah"`: one letter per level, "a" (lowpass along both axes),
        "h" (highpass along H), "v" (highpass along W), "d" (highpass along both).
    """
    return ["".join(p) for p in itertools.product("ahvd", repeat=level)]


def wavelet_packet_transform(images: ArrayLike, wavelet: str = "haar", level: int = 2) -> torch.Tensor:
    r"""
    Full 2-D wavelet packet transform (every subband split again at every level), periodised boundaries.

    The coefficients equal `pywt.WaveletPacket2D(..., mode="periodization")` for any discrete PyWavelets wavelet;
    for Haar they also equal the reference FWD implementation, whose boundary mode does not matter for Haar.

    Args:
        images (`torch.Tensor` or `np.ndarray`): `[B, C, H, W]`, `H` and `W` divisible by `2**level`.
        wavelet (`str`, defaults to `"haar"`): PyWavelets wavelet name.
        level (`int`, defaults to `2`): decomposition level (`>= 1`).

    Returns:
        `torch.Tensor`: float64 `[B, 4**level, C, H / 2**level, W / 2**level]`, packets in `packet_paths(level)`
        order.
    """
    x = _as_images(images)
    if level < 1:
        raise ValueError(f"`level` must be >= 1, got {level}.")
    height, width = x.shape[-2:]
    if height % 2**level or width % 2**level:
        raise ValueError(
            f"Image sides must be divisible by 2**level = {2**level} for a level-{level} packet transform, "
            f"got [H, W] = [{height}, {width}]."
        )
    packets = x.unsqueeze(1)  # [B, P=1, C, H, W]
    for _ in range(level):
        children = _dwt2(packets, wavelet)  # [B, P, C, 4, h, w]
        batch, num_packets, channels, _, h, w = children.shape
        packets = children.permute(0, 1, 3, 2, 4, 5).reshape(batch, num_packets * 4, channels, h, w)
    return packets


class FrechetWaveletDistance:
    r"""
    Streaming Fréchet Wavelet Distance (FWD) of Veeramacheneni et al., ICLR 2025, arXiv 2312.15289.

    Every image is split into `4**level` wavelet packets; for each packet the `C * h * w` coefficients of an image
    form one feature vector. The Fréchet distance between the real and generated Gaussians is computed per packet and
    averaged over packets. The paper uses Haar at level 4 for 256×256 images (16×16 packets); the default here,
    Haar at level 2, gives the same 16×16 packets for 64×64 images (768 features for RGB). Memory is
    `2 * 4**level * D^2` float64 numbers with `D = C * H * W / 4**level`; `compute()` solves two `D × D` symmetric
    eigenproblems per packet (about 1 s per packet at `D = 768` on 2 CPU cores, batched on a GPU). At least a few
    times `D` samples per set keep the covariance estimates, and so the value, stable.

    Args:
        wavelet (`str`, defaults to `"haar"`): PyWavelets wavelet name (periodised boundaries).
        level (`int`, defaults to `2`): packet decomposition level; image sides must be divisible by `2**level`.
        log_scale (`bool`, defaults to `False`): use `log(|c| + 1e-6)` of the coefficients, as the reference option.
        data_range (`tuple[float, float]`, *optional*, defaults to `(-1.0, 1.0)`): range of the inputs, mapped to
            `[0, 1]` (the range the paper's numbers refer to); `None` leaves the values as they are.
        max_features (`int`, defaults to `4096`): largest per-packet feature size `D` accepted; raise `level` for
            larger images instead of raising this.
        method (`"eigh"` or `"sqrtm"`, defaults to `"eigh"`): matrix square-root method of `frechet_distance`.

    Example:
        ```py
        fwd = FrechetWaveletDistance()
        for real, fake in zip(real_batches, fake_batches):
            fwd.update(real, real=True)
            fwd.update(fake, real=False)
        value = fwd.compute()
        ```
    """

    def __init__(
        self,
        wavelet: str = "haar",
        level: int = 2,
        log_scale: bool = False,
        data_range: tuple[float, float] | None = (-1.0, 1.0),
        max_features: int = 4096,
        method: Literal["eigh", "sqrtm"] = "eigh",
    ) -> None:
        _check_wavelet(wavelet)
        _check_choice(method, FRECHET_METHODS, "method")
        if level < 1:
            raise ValueError(f"`level` must be >= 1, got {level}.")
        if data_range is not None and not data_range[1] > data_range[0]:
            raise ValueError(f"`data_range` must be (low, high) with high > low, got {data_range}.")
        self.wavelet = wavelet
        self.level = level
        self.log_scale = log_scale
        self.data_range = data_range
        self.max_features = max_features
        self.method = method
        self.reset()

    def reset(self) -> None:
        """Forget both sets."""
        self._real = _RunningMoments()
        self._fake = _RunningMoments()
        self._shape: tuple[int, ...] | None = None

    def features(self, images: ArrayLike) -> torch.Tensor:
        r"""
        Per-packet feature vectors of a batch.

        Args:
            images (`torch.Tensor` or `np.ndarray`): `[B, C, H, W]`.

        Returns:
            `torch.Tensor`: float64 `[B, 4**level, C * H * W / 4**level]`.
        """
        x = _as_images(images)
        if self.data_range is not None:
            low, high = self.data_range
            x = (x - low) / (high - low)
        packets = wavelet_packet_transform(x, self.wavelet, self.level)
        if self.log_scale:
            packets = torch.log(packets.abs() + 1e-6)
        return packets.flatten(start_dim=2)

    def update(self, images: ArrayLike, real: bool) -> None:
        r"""
        Add a batch to the real or the generated set.

        Args:
            images (`torch.Tensor` or `np.ndarray`): `[B, C, H, W]`, same `C, H, W` for every batch of both sets.
            real (`bool`): `True` for reference data, `False` for generated samples.
        """
        shape = tuple(np.shape(images)[1:])
        if len(shape) != 3:
            raise ValueError(f"`images` must have shape [B, C, H, W], got {list(np.shape(images))}.")
        if self._shape is not None and shape != self._shape:
            raise ValueError(f"Expected batches of shape [B, {', '.join(map(str, self._shape))}], got {list(shape)}.")
        num_features = shape[0] * shape[1] * shape[2] // 4**self.level
        if num_features > self.max_features:
            raise ValueError(
                f"Each packet would have {num_features} features (C*H*W/4**level) > max_features={self.max_features}; "
                f"raise `level` (e.g. {self.level + 1}) or `max_features`."
            )
        features = self.features(images)
        self._shape = shape
        (self._real if real else self._fake).update(features)

    def compute_per_packet(self) -> np.ndarray:
        """
        Returns:
            `np.ndarray`: `[4**level]` Fréchet distance of every packet, in `packet_paths(level)` order.
        """
        return _frechet_from_moments(self._real, self._fake, self.method, "FrechetWaveletDistance")

    def compute(self) -> float:
        """
        Returns:
            `float`: FWD, the mean over packets of the per-packet Fréchet distances.
        """
        return float(self.compute_per_packet().mean())


# ----------------------------------------------------------------------------------------------------------------
# NDB: number of statistically different bins (arXiv 1805.12462)
# ----------------------------------------------------------------------------------------------------------------


def _squared_distances(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    return (x.square().sum(1, keepdim=True) - 2.0 * x @ centers.T + centers.square().sum(1)[None, :]).clamp_min(0.0)


def kmeans(x: ArrayLike, k: int, num_iters: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    Lloyd's k-means with k-means++ seeding, deterministic for a given seed.

    Args:
        x (`torch.Tensor` or `np.ndarray`): `[N, D]` samples, `N >= k`.
        k (`int`): number of clusters.
        num_iters (`int`, defaults to `50`): maximum number of Lloyd iterations (stops early when assignments settle).
        seed (`int`, defaults to `0`): seed of the k-means++ draws.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: float64 centres `[k, D]` and the assignment `[N]` of every sample.
    """
    x = _as_float_tensor(x, "x")
    if x.ndim != 2:
        raise ValueError(f"`x` must have shape [N, D], got {list(x.shape)}.")
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k-means needs 1 <= k <= N, got k={k} and N={x.shape[0]}.")
    generator = torch.Generator().manual_seed(seed)
    # 1. k-means++ seeding (Arthur & Vassilvitskii 2007): each new centre drawn with probability ∝ squared distance
    first = int(torch.randint(x.shape[0], (1,), generator=generator))
    centers = x[first : first + 1]
    closest = _squared_distances(x, centers).squeeze(1)
    for _ in range(1, k):
        total = closest.sum()
        if total > 0:
            probs = (closest / total).cpu()
            index = int(torch.multinomial(probs, 1, generator=generator))
        else:  # fewer distinct points than k: any point
            index = int(torch.randint(x.shape[0], (1,), generator=generator))
        centers = torch.cat([centers, x[index : index + 1]])
        closest = torch.minimum(closest, _squared_distances(x, centers[-1:]).squeeze(1))
    # 2. Lloyd iterations; an emptied cluster is moved to the sample farthest from its centre
    labels = _squared_distances(x, centers).argmin(1)
    for _ in range(num_iters):
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        new_centers = sums / counts.clamp_min(1).unsqueeze(1).to(x.dtype)
        empty = torch.nonzero(counts == 0).flatten()
        if empty.numel():
            far = _squared_distances(x, centers).gather(1, labels[:, None]).squeeze(1)
            new_centers[empty] = x[far.argsort(descending=True)[: empty.numel()]]
        centers = new_centers
        new_labels = _squared_distances(x, centers).argmin(1)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return centers, labels


def jensen_shannon_divergence(p: ArrayLike, q: ArrayLike) -> float:
    r"""
    Jensen-Shannon divergence of two discrete distributions, in nats (0 to ln 2).

    Args:
        p (`np.ndarray` or `torch.Tensor`): `[K]` probabilities.
        q (`np.ndarray` or `torch.Tensor`): `[K]` probabilities.

    Returns:
        `float`: `(KL(p || m) + KL(q || m)) / 2` with `m = (p + q) / 2`.
    """
    p, q = _as_1d_array(p, "p"), _as_1d_array(q, "q")
    m = (p + q) / 2.0

    def kl(a: np.ndarray) -> float:
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log(a[nonzero] / m[nonzero])))

    return 0.5 * (kl(p) + kl(q))


class NDB:
    r"""
    Number of statistically Different Bins, Richardson & Weiss 2018 (arXiv 1805.12462).

    `fit` clusters the reference samples (flattened) into `k` bins with k-means; `update` assigns generated samples
    to the nearest bin centre and counts them (streaming: only the `k` counts are kept). For every bin a two-sided
    two-proportion z-test compares the reference and generated proportions; NDB is the number of bins where the
    test rejects at `significance`, NDB/K its fraction. Two samples of the same distribution give NDB/K ≈
    `significance`; a generator that drops or over-produces modes gives large values.

    Args:
        k (`int`, defaults to `50`): number of bins (k-means clusters).
        significance (`float`, defaults to `0.05`): significance level of each bin's test.
        whitening (`bool`, defaults to `False`): divide every feature by its reference standard deviation after
            subtracting its reference mean, as the authors' optional whitening.
        num_iters (`int`, defaults to `50`): maximum number of k-means iterations.
        seed (`int`, defaults to `0`): k-means++ seed.

    Example:
        ```py
        ndb = NDB(k=50).fit(train_images)  # [N, C, H, W] or [N, D]
        for batch in generated_batches:
            ndb.update(batch)
        ndb.compute()["ndb_k"]
        ```
    """

    def __init__(
        self, k: int = 50, significance: float = 0.05, whitening: bool = False, num_iters: int = 50, seed: int = 0
    ) -> None:
        if k < 2:
            raise ValueError(f"`k` must be >= 2, got {k}.")
        if not 0.0 < significance < 1.0:
            raise ValueError(f"`significance` must lie in (0, 1), got {significance}.")
        self.k = k
        self.significance = significance
        self.whitening = whitening
        self.num_iters = num_iters
        self.seed = seed
        self.centers: torch.Tensor | None = None
        self.reference_counts: np.ndarray | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the generated samples (the fitted bins stay)."""
        self.generated_counts = np.zeros(self.k, dtype=np.int64)

    @staticmethod
    def _flatten(samples: ArrayLike, name: str) -> torch.Tensor:
        x = _as_float_tensor(samples, name)
        if x.ndim < 2:
            raise ValueError(f"`{name}` must have shape [N, ...] (e.g. [N, D] or [N, C, H, W]), got {list(x.shape)}.")
        return x.flatten(start_dim=1)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if not self.whitening:
            return x
        return (x - self._mean.to(x.device)) / self._std.to(x.device)

    def fit(self, reference: ArrayLike, proportion_samples: ArrayLike | None = None) -> NDB:
        r"""
        Build the bins from reference samples.

        Args:
            reference (`torch.Tensor` or `np.ndarray`): `[N, ...]` reference samples, `N >= k` (the paper uses
                tens of thousands; at least `200 * k` keeps NDB/K of an equal distribution near `significance`).
            proportion_samples (`torch.Tensor` or `np.ndarray`, *optional*, defaults to `None`): held-out reference
                samples whose bin proportions are compared; `None` uses `reference` itself, as the paper does.
                k-means adapts its bins to the samples it is fitted on, which biases their proportions; with small
                reference sets a held-out half gives a false-positive rate closer to `significance`.

        Returns:
            `NDB`: `self`, with the bins and reference proportions set and the generated counts reset.
        """
        x = self._flatten(reference, "reference")
        if x.shape[0] < self.k:
            raise ValueError(f"Need at least k={self.k} reference samples, got {x.shape[0]}.")
        self._mean = x.mean(0)
        std = x.std(0)
        self._std = torch.where(std > 0, std, torch.ones_like(std))
        self.centers, labels = kmeans(self._normalise(x), self.k, num_iters=self.num_iters, seed=self.seed)
        if proportion_samples is not None:
            labels = self.assign(proportion_samples)
        self.reference_counts = torch.bincount(labels, minlength=self.k).cpu().numpy()
        self.reset()
        return self

    def assign(self, samples: ArrayLike) -> torch.Tensor:
        r"""
        Nearest bin of each sample.

        Args:
            samples (`torch.Tensor` or `np.ndarray`): `[B, ...]` with the reference's per-sample shape.

        Returns:
            `torch.Tensor`: `[B]` bin indices.
        """
        if self.centers is None:
            raise RuntimeError("Call NDB.fit(reference) before assigning samples.")
        x = self._flatten(samples, "samples")
        if x.shape[1] != self.centers.shape[1]:
            raise ValueError(f"Samples have {x.shape[1]} features, the reference {self.centers.shape[1]}.")
        return _squared_distances(self._normalise(x), self.centers.to(x.device)).argmin(1)

    def update(self, samples: ArrayLike) -> None:
        r"""
        Count a batch of generated samples into the bins.

        Args:
            samples (`torch.Tensor` or `np.ndarray`): `[B, ...]` with the reference's per-sample shape.
        """
        labels = self.assign(samples)
        self.generated_counts += torch.bincount(labels, minlength=self.k).cpu().numpy()

    def compute(self) -> dict[str, float | int | np.ndarray]:
        r"""
        Returns:
            `dict`: `"ndb"` (`int`, number of different bins), `"ndb_k"` (`float`, NDB / K), `"js"` (`float`,
            Jensen-Shannon divergence of the two bin histograms, nats), `"different_bins"` (`[K]` bool),
            `"z"` (`[K]` z statistics), `"reference_proportions"` and `"generated_proportions"` (`[K]`).
        """
        if self.reference_counts is None:
            raise RuntimeError("Call NDB.fit(reference) before compute().")
        n_ref, n_gen = int(self.reference_counts.sum()), int(self.generated_counts.sum())
        if n_gen == 0:
            raise RuntimeError("NDB.compute() called before any update().")
        p_ref, p_gen = self.reference_counts / n_ref, self.generated_counts / n_gen
        # 1. two-proportion z-test per bin with the pooled proportion (arXiv 1805.12462, Sec. 3)
        pooled = (self.reference_counts + self.generated_counts) / (n_ref + n_gen)
        standard_error = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n_ref + 1.0 / n_gen))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(standard_error > 0, (p_ref - p_gen) / standard_error, 0.0)
        p_values = 2.0 * normal_distribution.sf(np.abs(z))
        different = p_values < self.significance
        ndb = int(different.sum())
        return {
            "ndb": ndb,
            "ndb_k": ndb / self.k,
            "js": jensen_shannon_divergence(p_ref, p_gen),
            "different_bins": different,
            "z": z,
            "reference_proportions": p_ref,
            "generated_proportions": p_gen,
        }


# ----------------------------------------------------------------------------------------------------------------
# Audio and spectrogram metrics
# ----------------------------------------------------------------------------------------------------------------


def _stft_power(x: torch.Tensor, n_fft: int, hop_length: int, win_length: int) -> torch.Tensor:
    """`[N, T]` -> float32 `[N, n_fft // 2 + 1, frames]` power `|STFT|^2` (`transforms.stft`, Hann window)."""
    spectrum = stft(x.float(), n_fft, hop_length, win_length)
    return spectrum.real.square() + spectrum.imag.square()


def _paired_waveforms(x: ArrayLike, y: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_waveforms(x, "x"), _as_waveforms(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"`x` and `y` must have the same shape [B, C, T], got {list(x.shape)} and {list(y.shape)}.")
    return x, y.to(x.device)


def mrstft_distance(
    x: ArrayLike,
    y: ArrayLike,
    fft_sizes: Sequence[int] = MRSTFT_FFT_SIZES,
    hop_sizes: Sequence[int] = MRSTFT_HOP_SIZES,
    win_lengths: Sequence[int] = MRSTFT_WIN_LENGTHS,
    eps: float = 1e-7,
    reduction: Literal["none", "mean", "sum"] = "mean",
) -> torch.Tensor:
    r"""
    Multi-resolution STFT distance of Parallel WaveGAN (arXiv 1910.11480), as an evaluation metric: the training loss
    `losses.MultiResolutionSTFTLoss` (spectral convergence plus log-magnitude L1, `losses.stft_distance`, Hann
    window) of every channel, averaged over channels. Computed in float32; the defaults are auraloss' resolutions.

    Args:
        x (`torch.Tensor` or `np.ndarray`): estimate, `[B, T]` or `[B, C, T]`, `T > max(fft_sizes) // 2`.
        y (`torch.Tensor` or `np.ndarray`): reference, same shape.
        fft_sizes (`Sequence[int]`, defaults to `(1024, 2048, 512)`): FFT sizes.
        hop_sizes (`Sequence[int]`, defaults to `(120, 240, 50)`): hop lengths.
        win_lengths (`Sequence[int]`, defaults to `(600, 1200, 240)`): Hann window lengths.
        eps (`float`, defaults to `1e-7`): see `losses.stft_distance`.
        reduction (`"none"`, `"mean"` or `"sum"`, defaults to `"mean"`): over the batch.

    Returns:
        `torch.Tensor`: `[B]` for `"none"`, else a scalar.
    """
    _check_choice(reduction, REDUCTIONS, "reduction")
    if not len(fft_sizes) == len(hop_sizes) == len(win_lengths):
        raise ValueError("`fft_sizes`, `hop_sizes` and `win_lengths` must have the same length.")
    x, y = _paired_waveforms(x, y)
    batch, channels, length = x.shape
    loss = MultiResolutionSTFTLoss(fft_sizes, hop_sizes, win_lengths, eps=eps, reduction="none")
    per_channel = loss(x.float().reshape(-1, 1, length), y.float().reshape(-1, 1, length))
    return _reduce(per_channel.reshape(batch, channels).mean(dim=1), reduction)


def log_spectral_distance(
    x: ArrayLike,
    y: ArrayLike,
    n_fft: int = 2048,
    hop_length: int = 512,
    win_length: int | None = None,
    eps: float = 1e-10,
    reduction: Literal["none", "mean", "sum"] = "mean",
) -> torch.Tensor:
    r"""
    Log-spectral distance (LSD) of paired signals, in dB.

    Per frame `sqrt(mean_f (10 log10 P_x - 10 log10 P_y)^2)` with `P = |STFT|^2 + eps` (Hann window), then the
    mean over frames and channels.

    Args:
        x (`torch.Tensor` or `np.ndarray`): estimate, `[B, T]` or `[B, C, T]`, `T > n_fft // 2`.
        y (`torch.Tensor` or `np.ndarray`): reference, same shape.
        n_fft (`int`, defaults to `2048`): FFT size.
        hop_length (`int`, defaults to `512`): hop length.
        win_length (`int`, *optional*, defaults to `None`): window length, `n_fft` when `None`.
        eps (`float`, defaults to `1e-10`): added to the power before the logarithm.
        reduction (`"none"`, `"mean"` or `"sum"`, defaults to `"mean"`): over the batch.

    Returns:
        `torch.Tensor`: `[B]` for `"none"`, else a scalar.
    """
    _check_choice(reduction, REDUCTIONS, "reduction")
    x, y = _paired_waveforms(x, y)
    batch, channels, length = x.shape
    win_length = n_fft if win_length is None else win_length
    power_x = _stft_power(x.reshape(-1, length), n_fft, hop_length, win_length)
    power_y = _stft_power(y.reshape(-1, length), n_fft, hop_length, win_length)
    log_diff = 10.0 * (torch.log10(power_x + eps) - torch.log10(power_y + eps))  # [N, F, frames]
    per_frame = log_diff.square().mean(dim=1).sqrt()
    per_sample = per_frame.mean(dim=1).reshape(batch, channels).mean(dim=1)
    return _reduce(per_sample, reduction)


class MeanPowerSpectrum:
    r"""
    Streaming mean STFT power spectrum of a set of waveforms (Welch's method with a Hann window).

    Args:
        n_fft (`int`, defaults to `2048`): FFT size.
        hop_length (`int`, defaults to `512`): hop length.
        win_length (`int`, *optional*, defaults to `None`): window length, `n_fft` when `None`.
        sample_rate (`float`, *optional*, defaults to `None`): when given, frequencies are in Hz instead of cycles
            per sample.
    """

    def __init__(
        self,
        n_fft: int = 2048,
        hop_length: int = 512,
        win_length: int | None = None,
        sample_rate: float | None = None,
    ) -> None:
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = n_fft if win_length is None else win_length
        self.sample_rate = sample_rate
        self.reset()

    def reset(self) -> None:
        """Forget every signal seen."""
        self._sum: torch.Tensor | None = None
        self._frames = 0
        self.num_samples = 0

    def update(self, waveforms: ArrayLike) -> None:
        r"""
        Add a batch.

        Args:
            waveforms (`torch.Tensor` or `np.ndarray`): `[B, T]` or `[B, C, T]`; channels are averaged.
        """
        x = _as_waveforms(waveforms)
        batch, channels, length = x.shape
        power = _stft_power(x.reshape(-1, length), self.n_fft, self.hop_length, self.win_length)
        power = power.reshape(batch, channels, *power.shape[1:]).mean(dim=1).double()  # [B, F, frames]
        batch_sum = power.sum(dim=(0, 2))
        self._sum = batch_sum if self._sum is None else self._sum + batch_sum.to(self._sum.device)
        self._frames += batch * power.shape[-1]
        self.num_samples += batch

    def compute(self) -> PowerSpectrum:
        """
        Returns:
            `PowerSpectrum`: `n_fft // 2 + 1` frequencies and the mean power per frame.
        """
        if self.num_samples == 0:
            raise RuntimeError("MeanPowerSpectrum.compute() called before any update().")
        frequencies = np.arange(self.n_fft // 2 + 1, dtype=np.float64) / self.n_fft
        if self.sample_rate is not None:
            frequencies = frequencies * self.sample_rate
        power = (self._sum / self._frames).cpu().numpy()
        return PowerSpectrum(frequencies=frequencies, power=power, num_samples=self.num_samples)


def psd_log_spectral_distance(
    psd_a: ArrayLike | PowerSpectrum, psd_b: ArrayLike | PowerSpectrum, eps: float = 1e-10
) -> float:
    r"""
    Log-spectral distance between two mean power spectra (sets of signals), in dB.

    `sqrt(mean_k (10 log10 P_a[k] - 10 log10 P_b[k])^2)` over the non-DC bins `k >= 1`, with `P + eps`.

    Args:
        psd_a (`np.ndarray`, `torch.Tensor` or `PowerSpectrum`): `[K]` mean power spectrum (`MeanPowerSpectrum`).
        psd_b (`np.ndarray`, `torch.Tensor` or `PowerSpectrum`): `[K]` on the same bins.
        eps (`float`, defaults to `1e-10`): added to the power before the logarithm.

    Returns:
        `float`: the distance in dB.
    """
    a, b = _as_1d_array(psd_a, "psd_a"), _as_1d_array(psd_b, "psd_b")
    if a.shape != b.shape or a.shape[0] < 2:
        raise ValueError(f"Expected two spectra of the same shape [K], K >= 2, got {list(a.shape)}, {list(b.shape)}.")
    diff = 10.0 * (np.log10(a[1:] + eps) - np.log10(b[1:] + eps))
    return float(np.sqrt(np.mean(diff**2)))


class FrechetLogMelDistance:
    r"""
    Streaming Fréchet distance between the log-mel frame statistics of two sets of waveforms or spectrograms.

    A network-free stand-in for FAD: every STFT frame (or spectrogram column) is one feature vector; the mean and
    covariance of the frames of each set are accumulated and compared with the Fréchet distance (arXiv 1706.08500).
    It measures the per-frame spectral envelope distribution, not temporal structure.

    - `input_type="waveform"`: inputs `[B, T]` or `[B, C, T]`; power `|STFT|^2` (Hann, centred, float32) averaged
      over channels, mapped by the `librosa.filters.mel` matrix, features `log(mel + eps)` of size `n_mels`.
    - `input_type="spectrogram"`: inputs are mel-spectrogram images `[B, C, H, W]` with frequency along `H` and time
      along `W` (as Diffusers' `Mel` writes them); each column is a frame of `C * H` values, used as they are.

    Args:
        sample_rate (`int`, defaults to `22050`): sample rate of the waveforms.
        n_fft (`int`, defaults to `1024`): FFT size.
        hop_length (`int`, defaults to `256`): hop length.
        win_length (`int`, *optional*, defaults to `None`): window length, `n_fft` when `None`.
        n_mels (`int`, defaults to `80`): number of mel bands.
        f_min (`float`, defaults to `0.0`): lowest mel filter frequency in Hz.
        f_max (`float`, *optional*, defaults to `None`): highest mel filter frequency in Hz, `sample_rate / 2` if
            `None`.
        eps (`float`, defaults to `1e-5`): added to the mel power before the logarithm.
        input_type (`"waveform"` or `"spectrogram"`, defaults to `"waveform"`): what `update` receives.
        method (`"eigh"` or `"sqrtm"`, defaults to `"eigh"`): matrix square-root method of `frechet_distance`.
    """

    def __init__(
        self,
        sample_rate: int = 22050,
        n_fft: int = 1024,
        hop_length: int = 256,
        win_length: int | None = None,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
        eps: float = 1e-5,
        input_type: Literal["waveform", "spectrogram"] = "waveform",
        method: Literal["eigh", "sqrtm"] = "eigh",
    ) -> None:
        _check_choice(input_type, LOG_MEL_INPUT_TYPES, "input_type")
        _check_choice(method, FRECHET_METHODS, "method")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = n_fft if win_length is None else win_length
        self.n_mels = n_mels
        self.eps = eps
        self.input_type = input_type
        self.method = method
        self.mel_basis: torch.Tensor | None = None
        if input_type == "waveform":
            import librosa  # only the waveform mode needs it

            basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max)
            self.mel_basis = torch.from_numpy(basis).float()  # [n_mels, n_fft // 2 + 1]
        self.reset()

    def reset(self) -> None:
        """Forget both sets."""
        self._real = _RunningMoments()
        self._fake = _RunningMoments()
        self._num_features: int | None = None

    def features(self, x: ArrayLike) -> torch.Tensor:
        r"""
        Per-frame features of a batch.

        Args:
            x (`torch.Tensor` or `np.ndarray`): waveforms `[B, T]` / `[B, C, T]` or spectrograms `[B, C, H, W]`,
                following `input_type`.

        Returns:
            `torch.Tensor`: `[B * frames, n_mels]` log-mel frames (`[B * W, C * H]` columns for spectrograms).
        """
        if self.input_type == "spectrogram":
            images = _as_images(x, "spectrograms")
            batch, channels, height, width = images.shape
            return images.permute(0, 3, 1, 2).reshape(batch * width, channels * height)
        waveforms = _as_waveforms(x)
        batch, channels, length = waveforms.shape
        power = _stft_power(waveforms.reshape(-1, length), self.n_fft, self.hop_length, self.win_length)
        power = power.reshape(batch, channels, *power.shape[1:]).mean(dim=1)  # [B, F, frames]
        mel = self.mel_basis.to(power.device) @ power  # [B, n_mels, frames]
        return torch.log(mel + self.eps).transpose(1, 2).reshape(-1, self.n_mels).double()

    def update(self, x: ArrayLike, real: bool) -> None:
        r"""
        Add a batch to the real or the generated set.

        Args:
            x (`torch.Tensor` or `np.ndarray`): see `features`.
            real (`bool`): `True` for reference data, `False` for generated samples.
        """
        features = self.features(x)
        if self._num_features is not None and features.shape[1] != self._num_features:
            raise ValueError(f"Expected {self._num_features} features per frame, got {features.shape[1]}.")
        self._num_features = features.shape[1]
        (self._real if real else self._fake).update(features)

    def compute(self) -> float:
        """
        Returns:
            `float`: Fréchet distance between the real and generated frame statistics.
        """
        return float(_frechet_from_moments(self._real, self._fake, self.method, "FrechetLogMelDistance"))


# ----------------------------------------------------------------------------------------------------------------
# Image report
# ----------------------------------------------------------------------------------------------------------------


def _batches(x: ArrayLike | Iterable[ArrayLike], batch_size: int) -> Iterable[ArrayLike]:
    if isinstance(x, (torch.Tensor, np.ndarray)):
        for start in range(0, x.shape[0], batch_size):
            yield x[start : start + batch_size]
    else:
        yield from x


def compare_image_sets(
    real: ArrayLike | Iterable[ArrayLike],
    fake: ArrayLike | Iterable[ArrayLike],
    wavelet: str = "haar",
    level: int = 2,
    data_range: tuple[float, float] | None = (-1.0, 1.0),
    bands: Mapping[str, tuple[float, float]] | Sequence[tuple[float, float]] = DEFAULT_BANDS,
    fmin: float | None = None,
    fmax: float | None = None,
    batch_size: int = 64,
) -> dict[str, float | np.ndarray]:
    r"""
    Spectral comparison of a generated image set with a reference set, in one streaming pass over each.

    Args:
        real (`torch.Tensor`, `np.ndarray` or iterable of them): reference images `[N, C, H, W]`, or batches.
        fake (`torch.Tensor`, `np.ndarray` or iterable of them): generated images, same `C, H, W`.
        wavelet (`str`, defaults to `"haar"`): FWD wavelet.
        level (`int`, defaults to `2`): FWD packet level; `H` and `W` must be divisible by `2**level`.
        data_range (`tuple[float, float]`, *optional*, defaults to `(-1.0, 1.0)`): input range, for FWD.
        bands (defaults to thirds of `[0, Nyquist]`): bands of `log_rapsd_distance`.
        fmin (`float`, *optional*, defaults to `None`): lowest frequency of the slope fits.
        fmax (`float`, *optional*, defaults to `None`): highest frequency of the slope fits.
        batch_size (`int`, defaults to `64`): chunk size when whole arrays are given.

    Returns:
        `dict`: `"frequencies"`, `"rapsd_real"`, `"rapsd_fake"` (`[K]` arrays, cycles per pixel and mean power);
        `"log_rapsd_all"` and `"log_rapsd_<band>"` (mean |Δ log10 P|); `"slope_real"`, `"slope_fake"` and
        `"slope_gap"` (= fake − real; negative means the samples lack high frequencies); `"fwd"`;
        `"num_real"`, `"num_fake"`.
    """
    fwd = FrechetWaveletDistance(wavelet=wavelet, level=level, data_range=data_range)
    spectra = {"real": RAPSD(), "fake": RAPSD()}
    for name, images in (("real", real), ("fake", fake)):
        for batch in _batches(images, batch_size):
            spectra[name].update(batch)
            fwd.update(batch, real=name == "real")
    psd_real, psd_fake = spectra["real"].compute(), spectra["fake"].compute()
    distances = log_rapsd_distance(psd_fake, psd_real, bands=bands)
    slope_real = spectral_slope(psd_real.frequencies, psd_real.power, fmin=fmin, fmax=fmax)
    slope_fake = spectral_slope(psd_fake.frequencies, psd_fake.power, fmin=fmin, fmax=fmax)
    report: dict[str, float | np.ndarray] = {
        "frequencies": psd_real.frequencies,
        "rapsd_real": psd_real.power,
        "rapsd_fake": psd_fake.power,
    }
    report.update({f"log_rapsd_{name}": value for name, value in distances.items()})
    report.update(
        {
            "slope_real": slope_real,
            "slope_fake": slope_fake,
            "slope_gap": slope_fake - slope_real,
            "fwd": fwd.compute(),
            "num_real": psd_real.num_samples,
            "num_fake": psd_fake.num_samples,
        }
    )
    return report


__all__ = [
    "DEFAULT_BANDS",
    "NDB",
    "RAPSD",
    "FrechetLogMelDistance",
    "FrechetWaveletDistance",
    "MeanPowerSpectrum",
    "PowerSpectrum",
    "compare_image_sets",
    "frechet_distance",
    "jensen_shannon_divergence",
    "kmeans",
    "log_rapsd_distance",
    "log_spectral_distance",
    "mrstft_distance",
    "packet_paths",
    "psd_log_spectral_distance",
    "radial_frequencies",
    "radial_profile",
    "rapsd",
    "spectral_slope",
    "wavelet_packet_transform",
]
