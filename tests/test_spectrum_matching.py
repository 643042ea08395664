"""Tests of Spectrum Matching (arXiv 2603.14645): radial DCT spectrum, ESM loss, DSM masks and sampler."""

import numpy as np
import pytest
import scipy.fft
import torch

from diffusers_specreg.spectrum_matching import (
    DSMSampler,
    EncodingSpectrumMatching,
    apply_dsm,
    dsm_mask,
    radial_bins,
    radial_dct_spectrum,
)
from diffusers_specreg.transforms import block_dct2, idct2


def test_radial_spectrum_puts_a_dct_basis_image_in_its_bin():
    bins, counts = radial_bins(8, 8, 16)
    assert counts.sum() == 64 and counts[0] == 1  # 8x8: bin 0 holds only the DC term
    for u, v in [(0, 1), (3, 2), (7, 7)]:
        coefficients = torch.zeros(1, 2, 8, 8, dtype=torch.float64)
        coefficients[..., u, v] = 2.0
        spectrum = radial_dct_spectrum(idct2(coefficients))[0]
        b = int(bins[u * 8 + v])
        assert spectrum[b].item() == pytest.approx(4.0 / counts[b].item(), rel=1e-6)
        others = torch.cat([spectrum[:b], spectrum[b + 1 :]])
        assert others.max() < 1e-7  # only the eps floor elsewhere


def test_radial_spectrum_removes_the_mean_and_matches_scipy():
    x = np.random.default_rng(0).normal(size=(2, 3, 12, 10)) + 5.0  # a large mean must not show
    power = (scipy.fft.dctn(x - x.mean(axis=(-2, -1), keepdims=True), norm="ortho", axes=(-2, -1)) ** 2).mean(1)
    power[:, 0, 0] = 0
    bins, counts = radial_bins(12, 10, 16)
    expected = np.stack([np.bincount(bins.numpy(), p.flatten(), minlength=16) for p in power])
    expected /= np.maximum(counts.numpy(), 1)
    np.testing.assert_allclose(radial_dct_spectrum(torch.from_numpy(x)).numpy(), expected, rtol=1e-6, atol=1e-7)


def latents_with_spectrum(spectrum: torch.Tensor, channels: int = 4, size: int = 8) -> torch.Tensor:
    """Latents whose radial DCT spectrum is `spectrum` `[B, 16]`: every coefficient of bin f has power s_f."""
    bins, _ = radial_bins(size, size, spectrum.shape[1])
    amplitude = spectrum[:, bins].sqrt().view(-1, 1, size, size).repeat(1, channels, 1, 1)
    amplitude[..., 0, 0] = 0.0  # zero mean, as the spectrum assumes
    return idct2(amplitude)


@pytest.mark.parametrize("delta", [0.0, 1.0])
def test_esm_is_zero_on_the_flattened_target_and_grows_as_spectra_part(delta):
    esm = EncodingSpectrumMatching(delta=delta)
    images = torch.rand(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    target = esm.image_spectrum(images, (8, 8))  # flattened by f^delta
    latents = latents_with_spectrum(target)
    torch.testing.assert_close(radial_dct_spectrum(latents), target, rtol=1e-6, atol=1e-7)
    assert esm(images, latents).abs().max() < 1e-6
    # Move the latent's distribution away along q_a = (1 - a) p + a r (r: uniform over the bins a latent can fill);
    # KL(p || q_a) is convex in a with its minimum 0 at a = 0, so it must grow with a. log(1 + s) = c q inverts
    # the log-normalisation, with c the target's own normaliser so that a = 0 gives back the target.
    _, counts = radial_bins(8, 8, 16)
    fillable = (counts > 0) & (torch.arange(16) > 0)
    r = fillable.double() / fillable.sum()
    c = torch.log1p(target).sum(dim=1, keepdim=True)
    p = torch.log1p(target) / c
    losses = [esm(images, latents_with_spectrum(torch.expm1(c * ((1 - a) * p + a * r)))) for a in (0.1, 0.3, 0.6, 1)]
    assert losses[0].min() > 1e-5
    for smaller, larger in zip(losses, losses[1:]):
        assert (larger > smaller).all()  # every sample's loss grows as its spectrum parts further


def test_esm_per_sample_values_and_gradients_reach_the_latent():
    esm = EncodingSpectrumMatching()
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    latents = torch.randn(4, 4, 8, 8, requires_grad=True)
    loss = esm(images, latents)
    assert loss.shape == (4,) and loss.dtype == torch.float32 and (loss >= 0).all()
    loss[1].backward()
    assert torch.isfinite(latents.grad).all()
    assert latents.grad[1].abs().sum() > 0 and latents.grad[0].abs().sum() == 0  # per sample
    with pytest.raises(ValueError, match="same B"):
        esm(images, latents[:2])


def test_esm_delta_flattens_the_image_target():
    images = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    plain = EncodingSpectrumMatching(delta=0.0).image_spectrum(images, (8, 8))
    flat = EncodingSpectrumMatching(delta=1.0).image_spectrum(images, (8, 8))
    torch.testing.assert_close(flat, plain * torch.arange(1, 17))


@pytest.mark.parametrize("k", [0, 8, 10, 12])
def test_dsm_keeps_exactly_the_low_triangle_of_every_block(k):
    x = torch.randn(2, 3, 16, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
    masked = apply_dsm(x, k)
    assert masked.shape == x.shape and masked.dtype == x.dtype
    before, after = block_dct2(x), block_dct2(masked)
    u = torch.arange(16)[:, None] % 8
    v = torch.arange(24)[None, :] % 8
    keep = (u + v) < 15 - k
    torch.testing.assert_close(after[..., keep], before[..., keep])
    if k:
        assert after[..., ~keep].abs().max() < 1e-12
    if k == 0:
        assert masked is x


def test_dsm_mask_counts_and_bad_input():
    assert [int(dsm_mask(k).sum()) for k in (0, 8, 10, 12, 14)] == [64, 28, 15, 6, 1]
    with pytest.raises(ValueError, match="DSM k must be in"):
        dsm_mask(15)
    with pytest.raises(ValueError, match="multiple of the 8x8 block"):
        apply_dsm(torch.zeros(1, 4, 12, 16), 8)
    with pytest.raises(ValueError, match="DSM k must be in"):
        DSMSampler([0, 20])


def test_dsm_sampler_draws_from_the_set_reproducibly():
    sampler = DSMSampler()
    draws = [sampler(torch.Generator().manual_seed(3)) for _ in range(3)]
    assert len(set(draws)) == 1  # same seed, same draw
    generator = torch.Generator().manual_seed(0)
    many = [sampler(generator) for _ in range(400)]
    assert set(many) == {0, 8, 10, 12}
    assert max(many.count(k) for k in (0, 8, 10, 12)) < 140  # about uniform (100 each)


def reference_esm(images: np.ndarray, latents: np.ndarray, delta: float, bins: int = 16, eps: float = 1e-8):
    """The authors' latent_spectral_reg_dct (SDVAE_and_ESM branch) step by step in NumPy/SciPy; only the bicubic
    resize uses torch (F.interpolate, align_corners=False, as theirs)."""
    import scipy.ndimage

    offsets = np.arange(7) - 3
    kernel = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * 1.2**2))
    kernel /= kernel.sum()
    blurred = np.stack(
        [[scipy.ndimage.correlate(ch, kernel, mode="constant", cval=0.0) for ch in image] for image in images]
    )
    h, w = latents.shape[-2:]
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(blurred), size=(h, w), mode="bicubic", align_corners=False
    ).numpy()

    def spectrum(x):
        x = x - x.mean(axis=(-2, -1), keepdims=True)
        power = np.maximum((scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1)) ** 2).mean(axis=1), eps)
        power[:, 0, 0] = 0.0
        radius = np.sqrt(np.arange(h)[:, None] ** 2 + np.arange(w)[None, :] ** 2)
        index = np.clip(np.floor(radius / max(radius.max(), 1.0) * bins).astype(int), 0, bins - 1).ravel()
        counts = np.maximum(np.bincount(index, minlength=bins), 1)
        return np.stack([np.bincount(index, p.ravel(), minlength=bins) for p in power]) / (counts + eps)

    sx = spectrum(resized) * np.arange(1, bins + 1) ** delta
    sz = spectrum(latents)
    sx, sz = np.log(sx + eps + 1.0), np.log(sz + eps + 1.0)
    sx, sz = sx / (sx.sum(1, keepdims=True) + eps), sz / (sz.sum(1, keepdims=True) + eps)
    return (sx * (np.log(sx + eps) - np.log(sz + eps))).sum(1)


@pytest.mark.parametrize("latent_size,delta", [(8, 1.0), (16, 0.0), (12, 0.5)])
def test_esm_equals_the_authors_recipe(latent_size, delta):
    rng = np.random.default_rng(latent_size)
    images = np.cumsum(rng.normal(size=(3, 3, 64, 64)), axis=-1) / 8  # correlated, image-like spectra
    latents = rng.normal(size=(3, 4, latent_size, latent_size)) * 3
    expected = reference_esm(images, latents, delta)
    got = EncodingSpectrumMatching(delta=delta)(torch.from_numpy(images), torch.from_numpy(latents))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-9)
