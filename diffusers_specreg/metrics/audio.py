"""Network-free metrics of audio and spectrograms.

- `mrstft_distance`: the multi-resolution STFT distance of paired signals (arXiv 1910.11480);
- `log_spectral_distance` of paired signals, and `psd_log_spectral_distance` of two `MeanPowerSpectrum` set means;
- `FrechetLogMelDistance`: a Fréchet distance of log-mel frame statistics, a stand-in for FAD (no VGGish here).
- `audio_metrics`: the set report of the evaluation command for unpaired real and generated clips of any lengths
  (MR-STFT and log-spectral distances of the set mean spectra, Fréchet distance and NDB of log-mel frames).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from ..losses import MRSTFT_FFT_SIZES, MRSTFT_HOP_SIZES, MRSTFT_WIN_LENGTHS, MultiResolutionSTFTLoss, stft_distance
from ..transforms import stft
from .frechet import FRECHET_METHODS, RunningMoments, frechet_distance, frechet_from_moments
from .inputs import (
    REDUCTIONS,
    ArrayLike,
    PowerSpectrum,
    apply_reduction,
    as_1d_array,
    as_images,
    as_waveforms,
    check_choice,
)
from .ndb import NDB

LOG_MEL_INPUT_TYPES = ("waveform", "spectrogram")
# Shortest clip `audio_metrics` accepts (the resolutions are then 16 times smaller than auraloss').
MIN_METRIC_SAMPLES = 128


def _stft_power(x: torch.Tensor, n_fft: int, hop_length: int, win_length: int) -> torch.Tensor:
    """`[N, T]` -> float32 `[N, n_fft // 2 + 1, frames]` power `|STFT|^2` (`transforms.stft`, Hann window)."""
    spectrum = stft(x.float(), n_fft, hop_length, win_length)
    return spectrum.real.square() + spectrum.imag.square()


def _paired_waveforms(x: ArrayLike, y: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = as_waveforms(x, "x"), as_waveforms(y, "y")
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
    check_choice(reduction, REDUCTIONS, "reduction")
    if not len(fft_sizes) == len(hop_sizes) == len(win_lengths):
        raise ValueError("`fft_sizes`, `hop_sizes` and `win_lengths` must have the same length.")
    x, y = _paired_waveforms(x, y)
    batch, channels, length = x.shape
    loss = MultiResolutionSTFTLoss(fft_sizes, hop_sizes, win_lengths, eps=eps, reduction="none")
    per_channel = loss(x.float().reshape(-1, 1, length), y.float().reshape(-1, 1, length))
    return apply_reduction(per_channel.reshape(batch, channels).mean(dim=1), reduction)


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
    check_choice(reduction, REDUCTIONS, "reduction")
    x, y = _paired_waveforms(x, y)
    batch, channels, length = x.shape
    win_length = n_fft if win_length is None else win_length
    power_x = _stft_power(x.reshape(-1, length), n_fft, hop_length, win_length)
    power_y = _stft_power(y.reshape(-1, length), n_fft, hop_length, win_length)
    log_diff = 10.0 * (torch.log10(power_x + eps) - torch.log10(power_y + eps))  # [N, F, frames]
    per_frame = log_diff.square().mean(dim=1).sqrt()
    per_sample = per_frame.mean(dim=1).reshape(batch, channels).mean(dim=1)
    return apply_reduction(per_sample, reduction)


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
        x = as_waveforms(waveforms)
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
    a, b = as_1d_array(psd_a, "psd_a"), as_1d_array(psd_b, "psd_b")
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
        check_choice(input_type, LOG_MEL_INPUT_TYPES, "input_type")
        check_choice(method, FRECHET_METHODS, "method")
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
        self._real = RunningMoments()
        self._fake = RunningMoments()
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
            images = as_images(x, "spectrograms")
            batch, channels, height, width = images.shape
            return images.permute(0, 3, 1, 2).reshape(batch * width, channels * height)
        waveforms = as_waveforms(x)
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
        return float(frechet_from_moments(self._real, self._fake, self.method, "FrechetLogMelDistance"))


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
    # 1. MR-STFT distance (arXiv 1910.11480: spectral convergence + log STFT magnitude), on the set mean spectra
    total = 0.0
    for n_fft, hop, win in zip(ffts, hops, wins):
        magnitude_real = torch.from_numpy(np.sqrt(_mean_power(real_batches, n_fft, hop, win, sample_rate)))[None]
        magnitude_fake = torch.from_numpy(np.sqrt(_mean_power(fake_batches, n_fft, hop, win, sample_rate)))[None]
        total += float(stft_distance(magnitude_fake, magnitude_real))
    # 2. log-spectral distance of the mean power spectra
    lsd_fft = max(ffts)
    lsd = psd_log_spectral_distance(
        _mean_power(real_batches, lsd_fft, lsd_fft // 4, lsd_fft, sample_rate),
        _mean_power(fake_batches, lsd_fft, lsd_fft // 4, lsd_fft, sample_rate),
    )
    # 3. Fréchet distance (arXiv 1706.08500) and NDB on the log-mel frames of FrechetLogMelDistance
    frechet_log_mel, ndb_k, ndb_js = _log_mel_frame_distances(
        real_batches, fake_batches, ffts[0], sample_rate, ndb_bins, seed
    )
    return {
        "mrstft": float(total / len(ffts)),
        "log_spectral_distance": float(lsd),
        "frechet_log_mel": frechet_log_mel,
        "ndb_k": ndb_k,
        "ndb_js": ndb_js,
        "num_real": len(real),
        "num_fake": len(fake),
    }


def _mean_power(batches: list[np.ndarray], n_fft: int, hop: int, win: int, sample_rate: int) -> np.ndarray:
    """`MeanPowerSpectrum(n_fft, hop, win)` power `[n_fft // 2 + 1]` of the `[b, T]` batches of one set."""
    accumulator = MeanPowerSpectrum(n_fft=n_fft, hop_length=hop, win_length=win, sample_rate=sample_rate)
    for batch in batches:
        accumulator.update(batch)
    return accumulator.compute().power


def _log_mel_frame_distances(
    real_batches: list[np.ndarray],
    fake_batches: list[np.ndarray],
    n_fft: int,
    sample_rate: int,
    ndb_bins: int,
    seed: int,
) -> tuple[float, float, float]:
    """`frechet_log_mel`, `ndb_k` and `ndb_js` of `audio_metrics`, on the log-mel frames of `FrechetLogMelDistance`
    (`n_fft`, hop `n_fft // 4`, `n_fft // 8` mel bands clipped to [8, 80]); NDB is `nan` with under 4 real frames."""
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
    if bins < 2:
        return frechet_log_mel, float("nan"), float("nan")
    ndb = NDB(k=bins, seed=seed).fit(real_frames)
    ndb.update(fake_frames)
    ndb_result = ndb.compute()
    return frechet_log_mel, float(ndb_result["ndb_k"]), float(ndb_result["js"])
