"""Radially averaged power spectra of images (and 1-D signals), their distances and slopes, and the image report.

- `rapsd` / `RAPSD` (streaming): the per-sample (mean) power per ring of integer radius, `radial_profile` and
  `radial_frequencies` for the bins;
- `log_rapsd_distance`: mean |Δ log10 P| overall and per band of the Nyquist range; `spectral_slope`: the power-law
  exponent;
- `compare_image_sets`: the image report of the evaluation command (these spectra and the Fréchet Wavelet Distance).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from ..transforms import fourier, radial_frequency, spectral_dims
from .frechet import FrechetWaveletDistance
from .inputs import ArrayLike, PowerSpectrum, as_1d_array, as_float_tensor, iter_batches

# Thirds of the non-DC frequency range [0, Nyquist], as fractions of the Nyquist frequency.
DEFAULT_BANDS = {"low": (0.0, 1.0 / 3.0), "mid": (1.0 / 3.0, 2.0 / 3.0), "high": (2.0 / 3.0, 1.0)}


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
    x = as_float_tensor(x, "x")
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


@torch.no_grad()
def spectral_band_errors(
    prediction: torch.Tensor,
    target: torch.Tensor,
    bands: Mapping[str, tuple[float, float]] | Sequence[tuple[float, float]] = DEFAULT_BANDS,
) -> dict[str, torch.Tensor]:
    r"""
    Squared error of a prediction in each radial frequency band: the training log's per-band view of x̂₀ − x₀.

    `E_band = mean over the batch, the channels and the DFT bins of the band of |DFT(prediction − target)|²` with the
    orthonormal DFT (`transforms.fourier`), so by Parseval the bin-count-weighted mean of the bands is the pixel MSE.
    A bin belongs to band `[lo, hi)` when its radial frequency as a fraction of Nyquist (`radial_frequency` / 0.5) lies
    in it; the last band also holds the bins beyond Nyquist (the grid's corners, up to √2), so the bands partition
    the grid. Computed without gradients, on the device of the inputs (no host copy: the caller reads the values).

    Args:
        prediction (`torch.Tensor` of shape `[B, C, H, W]` or `[B, C, T]`): e.g. x̂₀.
        target (`torch.Tensor` of the same shape): e.g. x₀.
        bands (`dict[str, tuple[float, float]]` or sequence of pairs, defaults to `DEFAULT_BANDS`): band edges as
            fractions of Nyquist, low/mid/high thirds by default (the bands of `log_rapsd_distance`).

    Returns:
        `dict[str, torch.Tensor]`: one float32 scalar per band name, in the order of `bands`. A band that holds no DFT
        bin of the grid (a tiny one: on 2x2 or 3x3 the middle third is empty) is left out, not `nan`, so a training
        log of these values never shows `nan`.
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"`prediction` and `target` must have the same shape, got {list(prediction.shape)} and "
            f"{list(target.shape)}."
        )
    error = fourier(prediction.detach().float() - target.detach().float())
    dims = spectral_dims(error)
    power = error.abs().square().flatten(0, error.ndim - len(dims) - 1).mean(0)
    fraction = radial_frequency(tuple(power.shape)) / 0.5  # on the CPU: the masks and bin counts need no device sync
    items = _band_items(bands)
    result = {}
    for index, (name, (low, high)) in enumerate(items):
        mask = fraction >= low
        if index < len(items) - 1:
            mask = mask & (fraction < high)
        count = int(mask.sum())
        if count:  # a band without bins has no error to report: left out
            result[name] = (power * mask.to(device=power.device, dtype=power.dtype)).sum() / count
    return result


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
    a = as_1d_array(psd_a, "psd_a")
    b = as_1d_array(psd_b, "psd_b")
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
    f = as_1d_array(freqs, "freqs")
    p = as_1d_array(power, "power")
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
        for batch in iter_batches(images, batch_size):
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
