"""Spectrum Matching for latent diffusion (arXiv 2603.14645): regularisers of the autoencoder's latent spectrum.

"Spectrum Matching: a Unified Perspective for Superior Diffusability in Latent Diffusion" (Ning et al., 2026) trains
the autoencoder of a latent diffusion model so that its latents have a (flattened) power-law spectrum like natural
images, which diffusion models learn coarse-to-fine. Two regularisers, both read here from the authors' code
(github.com/forever208/SpectrumMatching, branches `SDVAE_and_ESM`: `utils_DCT.latent_spectral_reg_dct`, and `DSM`:
`modules/vae.py`, `vae_trainer.py`):

- Encoding Spectrum Matching (ESM, `EncodingSpectrumMatching`): a loss term, KL(image spectrum ‖ latent spectrum)
  between 16-bin radial DCT power distributions, added to the autoencoder loss with weight 0.01 (the authors' ESM-AE
  setting, with KL weight 0).
- Decoding Spectrum Matching (DSM, `apply_dsm`, `DSMSampler`): no extra term. Each step draws k from {0, 8, 10, 12},
  low-passes the sampled latent and the image with the same triangular mask in 8x8 block DCTs, decodes the masked
  latent and compares it with the masked image in every reconstruction loss.

The losses hold only hyper-parameters (no weight: weighting belongs to the caller) and return per-sample values `[B]`.
Everything computes in float32 (float64 for float64 input), autocast off. The representation-alignment (REPA / DoG)
part of the paper has no public code and is not implemented.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .tensors import compute_dtype
from .transforms import block_dct2, block_idct2, dct2

ESM_NUM_BINS = 16
DSM_KS = (0, 8, 10, 12)
DSM_BLOCK = 8


# ---------------------------------------------------------------------------------------------------------------
# Radial DCT power spectrum
# ---------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def radial_bins(height: int, width: int, num_bins: int = ESM_NUM_BINS) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    The radial bin of each DCT coefficient, over the DCT index radius `r = sqrt(u^2 + v^2)` (DC at `[0, 0]`), as in
    the authors' `radial_bin_map`: `bin = min(floor(r / r_max * num_bins), num_bins - 1)` with `r_max` the radius of
    the corner `[H-1, W-1]` (at least 1).

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: the bin of each coefficient, int64 `[H * W]` (row-major), and the number
        of coefficients per bin, int64 `[num_bins]` (empty bins hold 0; small grids leave some bins empty).
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}.")
    u = torch.arange(height, dtype=torch.float64)[:, None]
    v = torch.arange(width, dtype=torch.float64)[None, :]
    radius = torch.sqrt(u**2 + v**2)
    bins = torch.floor(radius / radius.max().clamp_min(1.0) * num_bins).long().clamp_(0, num_bins - 1).flatten()
    return bins, torch.bincount(bins, minlength=num_bins)


def dct_power(x: torch.Tensor, remove_dc: bool = True, eps: float = 1e-8) -> torch.Tensor:
    r"""
    Channel-averaged DCT power `mean_c DCT(x_c - mean(x_c))^2` (the authors' `channel_agg_power_dct_unified` with
    `center="mean"`).

    Args:
        x (`torch.Tensor`): `[B, C, H, W]`.
        remove_dc (`bool`, defaults to `True`): set the `[0, 0]` term to 0 (it is ~0 after the mean removal anyway).
        eps (`float`, defaults to 1e-8): the power is clamped below at `eps` (as the authors), before the DC is removed.

    Returns:
        `torch.Tensor`: `[B, H, W]`.
    """
    if x.ndim != 4:
        raise ValueError(f"Expected a batch [B, C, H, W], got shape {list(x.shape)}.")
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(compute_dtype(x))
        # 1. remove each channel's spatial mean, 2. orthonormal DCT-II, 3. square and average over channels
        power = (dct2(x - x.mean(dim=(-2, -1), keepdim=True)) ** 2).mean(dim=1).clamp_min(eps)
        if remove_dc:
            not_dc = torch.ones_like(power[0])
            not_dc[0, 0] = 0.0
            power = power * not_dc
        return power


def radial_dct_spectrum(x: torch.Tensor, num_bins: int = ESM_NUM_BINS, eps: float = 1e-8) -> torch.Tensor:
    r"""
    Radially averaged DCT power spectrum of an image or latent batch: `dct_power` (mean-removed, channel-averaged,
    DC zeroed) averaged over each of `num_bins` radial bins of the DCT index radius (`radial_bins`). Step 2-3 of ESM,
    arXiv 2603.14645 (the authors' `radial_band_energy`).

    Args:
        x (`torch.Tensor`): `[B, C, H, W]`.
        num_bins (`int`, defaults to 16): number of radial bins (the paper's 16).
        eps (`float`, defaults to 1e-8): floor of the coefficient power.

    Returns:
        `torch.Tensor`: `[B, num_bins]`, the mean power per bin (0 in an empty bin), low to high frequency.
    """
    power = dct_power(x, eps=eps)
    bins, counts = radial_bins(power.shape[-2], power.shape[-1], num_bins)
    bins = bins.to(power.device)
    totals = power.new_zeros(power.shape[0], num_bins).index_add_(1, bins, power.flatten(1))
    return totals / counts.to(power).clamp_min(1.0)


# ---------------------------------------------------------------------------------------------------------------
# Encoding Spectrum Matching
# ---------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _gaussian_kernel(kernel_size: int, sigma: float) -> torch.Tensor:
    """Normalised 2-D Gaussian `[k, k]` in float64 (the authors' `gaussian_kernel2d`)."""
    offsets = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    kernel = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    return kernel / kernel.sum()


def blur_and_resize(
    images: torch.Tensor, size: tuple[int, int], kernel_size: int = 7, sigma: float = 1.2
) -> torch.Tensor:
    r"""
    Anti-alias and resize images to the latent grid, step 1 of ESM (arXiv 2603.14645; the authors' `gaussian_blur`
    and `downsample_to`): a depthwise `kernel_size` Gaussian blur with zero padding, then bicubic interpolation
    (`align_corners=False`) to `size`.

    The authors' code skips the blur when the latent is 32x32 (their f8 setting at 256 px); here the blur is always
    applied, as the paper describes.

    Args:
        images (`torch.Tensor`): `[B, C, H, W]` in [-1, 1].
        size (`tuple[int, int]`): the latent's `(h, w)`.
        kernel_size (`int`, defaults to 7): odd blur kernel size.
        sigma (`float`, defaults to 1.2): blur standard deviation in pixels.

    Returns:
        `torch.Tensor`: `[B, C, h, w]`.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}.")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}.")
    channels = images.shape[1]
    kernel = _gaussian_kernel(kernel_size, float(sigma)).to(images)
    kernel = kernel.expand(channels, 1, kernel_size, kernel_size)
    blurred = F.conv2d(images, kernel, padding=kernel_size // 2, groups=channels)
    return F.interpolate(blurred, size=tuple(size), mode="bicubic", align_corners=False)


def spectrum_distribution(spectrum: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    r"""
    `log(1 + s)` normalised to sum 1 over the bins: the distributions ESM compares (the authors' `log_power` and
    normalisation, with their `eps`).

    Args:
        spectrum (`torch.Tensor`): `[B, num_bins]` non-negative band powers.

    Returns:
        `torch.Tensor`: `[B, num_bins]`, each row sums to 1 (up to `eps`).
    """
    logged = torch.log(spectrum + eps + 1.0).clamp_min(0.0)
    return logged / (logged.sum(dim=1, keepdim=True) + eps)


def spectrum_kl(target: torch.Tensor, predicted: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    r"""
    Per-sample `KL(target ‖ predicted) = sum_f p_f (log p_f - log q_f)` of two `[B, num_bins]` distributions,
    with `eps` inside the logarithms (as the authors).

    Returns:
        `torch.Tensor`: `[B]`.
    """
    return (target * (torch.log(target + eps) - torch.log(predicted + eps))).sum(dim=1)


class EncodingSpectrumMatching(nn.Module):
    r"""
    Encoding Spectrum Matching loss (ESM, arXiv 2603.14645): per-sample `KL(s_image ‖ s_latent)` between the radial
    DCT spectra of the image (blurred, resized to the latent grid, flattened by `f^δ`) and of the latent.

    Steps, following the authors' `latent_spectral_reg_dct` (`SDVAE_and_ESM` branch, `loss_type="kl"`,
    `log_power=True`, `center="mean"`, `remove_dc=True`):

    1. blur the image (Gaussian `kernel_size`, `sigma`) and resize it bicubically to the latent's `h x w`;
    2. for image and latent: subtract each channel's mean, orthonormal 2-D DCT-II, square, average over channels,
       zero the DC term;
    3. average the power into `num_bins` radial bins over the DCT index radius;
    4. flatten the image spectrum: bin `f` (1-based) times `f^δ` (δ = 1 in ESM-AE);
    5. `log(1 + s)`, normalise each sample's bins to sum 1;
    6. `KL(image ‖ latent)`.

    Computed on the sampled latent (the authors' `posterior`); add it to the autoencoder loss with weight 0.01.

    Args:
        kernel_size (`int`, defaults to 7): Gaussian blur kernel (the authors' f8 setting; 11 for f16).
        sigma (`float`, defaults to 1.2): Gaussian blur σ in pixels (2.2 for f16).
        num_bins (`int`, defaults to 16): number of radial bins.
        delta (`float`, defaults to 1.0): spectrum flattening exponent δ; 0 matches the image spectrum itself.
        eps (`float`, defaults to 1e-8): numerical floor (the authors').
    """

    def __init__(
        self,
        kernel_size: int = 7,
        sigma: float = 1.2,
        num_bins: int = ESM_NUM_BINS,
        delta: float = 1.0,
        eps: float = 1e-8,
    ):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}.")
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}.")
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}.")
        self.kernel_size, self.sigma, self.num_bins, self.delta, self.eps = kernel_size, sigma, num_bins, delta, eps

    def image_spectrum(self, images: torch.Tensor, size: tuple[int, int], flatten: bool = True) -> torch.Tensor:
        r"""
        The image's radial spectrum on the latent grid (steps 1-4), `[B, num_bins]`; `flatten=False` leaves out
        the `f^δ` factor.
        """
        with torch.autocast(device_type=images.device.type, enabled=False):
            images = images.to(compute_dtype(images))
            # 1. anti-alias and resize to the latent grid
            resized = blur_and_resize(images, size, self.kernel_size, self.sigma)
            # 2.-3. channel-averaged, mean-removed DCT power, radially binned
            spectrum = radial_dct_spectrum(resized, self.num_bins, self.eps)
            if not flatten:
                return spectrum
            # 4. flatten the power law: bin f (1-based) times f^δ
            f = torch.arange(1, self.num_bins + 1, device=spectrum.device, dtype=spectrum.dtype)
            return spectrum * f**self.delta

    def distributions(self, images: torch.Tensor, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""
        `(p_image, p_latent)`, the normalised log spectra (step 5), each `[B, num_bins]`.

        Args:
            images (`torch.Tensor`): `[B, C, H, W]` in [-1, 1].
            latents (`torch.Tensor`): `[B, c, h, w]`, the sampled latents.
        """
        if images.ndim != 4 or latents.ndim != 4 or images.shape[0] != latents.shape[0]:
            raise ValueError(
                f"Expected images [B, C, H, W] and latents [B, c, h, w] with the same B, got {list(images.shape)} "
                f"and {list(latents.shape)}."
            )
        target = self.image_spectrum(images, tuple(latents.shape[-2:]))
        with torch.autocast(device_type=latents.device.type, enabled=False):
            spectrum = radial_dct_spectrum(latents.to(compute_dtype(latents)), self.num_bins, self.eps)
        return spectrum_distribution(target, self.eps), spectrum_distribution(spectrum, self.eps)

    def forward(self, images: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        r"""
        Args:
            images (`torch.Tensor`): `[B, C, H, W]` in [-1, 1] (no gradient needed).
            latents (`torch.Tensor`): `[B, c, h, w]`, the sampled latents (the gradient flows to them).

        Returns:
            `torch.Tensor`: `[B]`, `KL(p_image ‖ p_latent)` (step 6).
        """
        target, predicted = self.distributions(images, latents)
        return spectrum_kl(target.detach(), predicted, self.eps)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, sigma={self.sigma}, num_bins={self.num_bins}, delta={self.delta}"


# ---------------------------------------------------------------------------------------------------------------
# Decoding Spectrum Matching
# ---------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _dsm_mask_cpu(k: int, block: int) -> torch.Tensor:
    u = torch.arange(block)[:, None]
    v = torch.arange(block)[None, :]
    return (u + v) < (2 * block - 1 - k)


def dsm_mask(k: int, block: int = DSM_BLOCK, device: torch.device | str | None = None) -> torch.Tensor:
    r"""
    The triangular low-pass mask of Decoding Spectrum Matching (arXiv 2603.14645): `True` where a block-DCT coefficient
    `(u, v)` is kept, i.e. `u + v < 2 * block - 1 - k` (`u + v < 15 - k` for 8x8 blocks, as in the authors' `DSM`
    branch: `thresh = 2 (b - 1) - (k - 1)`). `k = 0` keeps every coefficient.

    Args:
        k (`int`): the mask strength, `0 <= k <= 2 * block - 2` (`2 * block - 2` keeps only the DC term).
        block (`int`, defaults to 8): the block size.

    Returns:
        `torch.Tensor`: bool `[block, block]`.
    """
    if not 0 <= int(k) <= 2 * block - 2:
        raise ValueError(f"DSM k must be in [0, {2 * block - 2}] for {block}x{block} blocks, got {k}.")
    return _dsm_mask_cpu(int(k), block).to(device)


def apply_dsm(x: torch.Tensor, k: int, block: int = DSM_BLOCK) -> torch.Tensor:
    r"""
    Low-pass `x` as Decoding Spectrum Matching does (arXiv 2603.14645): 8x8 block DCT, zero every coefficient with
    `u + v >= 15 - k` (`dsm_mask`), inverse block DCT. `k = 0` returns `x` unchanged. Differentiable.

    Apply the same `k` to the image and to the sampled latent; decode the masked latent and use the masked image as
    the target of every reconstruction loss.

    Args:
        x (`torch.Tensor`): `[..., H, W]`, `H` and `W` multiples of `block` (else `ValueError`).
        k (`int`): the mask strength (`dsm_mask`).
        block (`int`, defaults to 8): the block size.

    Returns:
        `torch.Tensor`: the low-passed `x`, same shape and dtype.
    """
    mask = dsm_mask(k, block, x.device)
    if x.ndim < 2 or x.shape[-2] % block or x.shape[-1] % block:
        raise ValueError(
            f"apply_dsm: the size {list(x.shape[-2:])} is not a multiple of the {block}x{block} block; use sizes "
            f"divisible by {block}."
        )
    if k == 0:
        return x
    rows, cols = x.shape[-2] // block, x.shape[-1] // block
    coefficients = block_dct2(x, block)
    kept = mask.repeat(rows, cols).to(coefficients.dtype)
    return block_idct2(coefficients * kept, block).to(x.dtype)


class DSMSampler:
    r"""
    Draws the DSM strength k for each training step, uniformly from `ks` (the authors' `random.choice([0, 8, 10,
    12])` per step), with a `torch.Generator` so that a resumed run can replay the draws.

    Args:
        ks (`Sequence[int]`, defaults to `(0, 8, 10, 12)`): the strengths to draw from.
        block (`int`, defaults to 8): the block size (checks the strengths).
    """

    def __init__(self, ks: Sequence[int] = DSM_KS, block: int = DSM_BLOCK):
        if not ks:
            raise ValueError("DSM needs at least one k.")
        for k in ks:
            dsm_mask(k, block)  # validates
        self.ks, self.block = tuple(int(k) for k in ks), block

    def __call__(self, generator: torch.Generator | None = None) -> int:
        index = torch.randint(len(self.ks), (), generator=generator, device=generator.device if generator else "cpu")
        return self.ks[int(index)]

    def __repr__(self) -> str:
        return f"DSMSampler(ks={self.ks}, block={self.block})"


__all__ = [
    "DSM_BLOCK",
    "DSM_KS",
    "DSMSampler",
    "ESM_NUM_BINS",
    "EncodingSpectrumMatching",
    "apply_dsm",
    "blur_and_resize",
    "dct_power",
    "dsm_mask",
    "radial_bins",
    "radial_dct_spectrum",
    "spectrum_distribution",
    "spectrum_kl",
]
