"""Fréchet distances: of two Gaussians, of streaming feature moments, and the Fréchet Wavelet Distance.

- `frechet_distance` (arXiv 1706.08500) of means and covariances; `RunningMoments`, the streaming mean and
  covariance every set metric here accumulates, and `frechet_from_moments` between two of them;
- `FeatureStatistics` / `feature_frechet_distance`: the FID statistic in the feature space of any extractor;
- `FrechetWaveletDistance` (FWD, arXiv 2312.15289) on the 2-D wavelet packets of `wavelet_packet_transform`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Literal

import numpy as np
import pywt
import torch
from scipy import linalg

from ..transforms import dwt
from .inputs import ArrayLike, as_float_tensor, as_images, check_choice, iter_batches

FRECHET_METHODS = ("eigh", "sqrtm")


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
    check_choice(method, FRECHET_METHODS, "method")
    mu1, mu2, sigma1, sigma2 = (as_float_tensor(v, "statistics").cpu() for v in (mu1, mu2, sigma1, sigma2))
    dim = mu1.shape[0] if mu1.ndim == 1 else -1
    if mu1.ndim != 1 or mu2.shape != (dim,) or sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            f"Expected means of shape [D] and covariances of shape [D, D]; got {list(mu1.shape)}, "
            f"{list(sigma1.shape)}, {list(mu2.shape)}, {list(sigma2.shape)}."
        )
    return float(_frechet_batched(mu1, sigma1, mu2, sigma2, method, eps))


class RunningMoments:
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
        r"""
        Add a batch.

        Args:
            x (`torch.Tensor`): `[N, *G, D]` features (converted to float64, moved to the running device).
        """
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
        """
        Returns:
            `torch.Tensor`: float64 `[*G, D, D]` unbiased covariance (divided by `count - 1`).
        """
        return self.m2 / (self.count - 1)


def frechet_from_moments(a: RunningMoments, b: RunningMoments, method: str, what: str) -> np.ndarray:
    r"""
    Fréchet distance per group between the Gaussians of two `RunningMoments` (`frechet_distance`, batched).

    Args:
        a (`RunningMoments`): moments of the reference set, at least 2 samples.
        b (`RunningMoments`): moments of the generated set, at least 2 samples, same `[*G, D]`.
        method (`"eigh"` or `"sqrtm"`): see `frechet_distance`.
        what (`str`): the metric's name, for the error when a set has fewer than 2 samples.

    Returns:
        `np.ndarray`: `[*G]` distances (a 0-d array when the features have no group axis).
    """
    for moments, name in ((a, "real"), (b, "generated")):
        if moments.count < 2:
            raise RuntimeError(f"{what} needs at least 2 {name} samples, got {moments.count}.")
    device = a.mean.device
    distances = _frechet_batched(
        a.mean, a.covariance(), b.mean.to(device), b.covariance().to(device), method=method, eps=1e-6
    )
    return distances.cpu().numpy()


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
        self.moments = RunningMoments()

    @torch.no_grad()
    def update(self, images: ArrayLike) -> None:
        """Add a batch `[B, C, H, W]` in `[-1, 1]`."""
        features = self.extractor(as_images(images, dtype=torch.float32))
        self.moments.update(torch.as_tensor(features).reshape(features.shape[0], -1).detach().cpu())

    @property
    def count(self) -> int:
        return self.moments.count

    def distance(self, other: FeatureStatistics, method: Literal["eigh", "sqrtm"] = "eigh") -> float:
        """The Fréchet distance between these moments and `other`'s."""
        check_choice(method, FRECHET_METHODS, "method")
        return float(frechet_from_moments(self.moments, other.moments, method, "feature Fréchet distance"))


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
        for batch in iter_batches(images, batch_size):
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
    x = as_images(images)
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
        check_choice(method, FRECHET_METHODS, "method")
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
        self._real = RunningMoments()
        self._fake = RunningMoments()
        self._shape: tuple[int, ...] | None = None

    def features(self, images: ArrayLike) -> torch.Tensor:
        r"""
        Per-packet feature vectors of a batch.

        Args:
            images (`torch.Tensor` or `np.ndarray`): `[B, C, H, W]`.

        Returns:
            `torch.Tensor`: float64 `[B, 4**level, C * H * W / 4**level]`.
        """
        x = as_images(images)
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
        return frechet_from_moments(self._real, self._fake, self.method, "FrechetWaveletDistance")

    def compute(self) -> float:
        """
        Returns:
            `float`: FWD, the mean over packets of the per-packet Fréchet distances.
        """
        return float(self.compute_per_packet().mean())
