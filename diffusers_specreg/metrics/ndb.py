"""NDB, the number of statistically different bins (arXiv 1805.12462), with its k-means and Jensen-Shannon divergence.

`NDB.fit` clusters reference samples into bins with `kmeans` (k-means++ seeding, deterministic for a seed);
generated samples stream into the bins, and a two-proportion z-test per bin counts the bins whose proportions differ.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import norm as normal_distribution

from .inputs import ArrayLike, as_1d_array, as_float_tensor


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
    x = as_float_tensor(x, "x")
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
    p, q = as_1d_array(p, "p"), as_1d_array(q, "q")
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
        x = as_float_tensor(samples, name)
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
