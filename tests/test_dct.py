"""Tests of the orthonormal DCT-II (full and 8x8 block) in diffusers_specreg.transforms against scipy.fft."""

import numpy as np
import pytest
import scipy.fft
import torch

from diffusers_specreg.transforms import block_dct2, block_idct2, dct2, idct2


@pytest.mark.parametrize("shape", [(1, 1), (4, 4), (5, 3), (2, 3, 8, 12), (1, 2, 16, 7), (3, 32, 32)])
def test_dct2_equals_scipy_dctn(shape):
    x = np.random.default_rng(0).normal(size=shape)
    expected = scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(dct2(torch.from_numpy(x)).numpy(), expected, atol=1e-12)
    # float32 in, float32 out, same values to float32 precision
    out32 = dct2(torch.from_numpy(x).float())
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("shape", [(6, 9), (2, 3, 16, 8)])
def test_idct2_inverts_dct2_and_equals_scipy_idctn(shape):
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(idct2(dct2(x)), x, atol=1e-12, rtol=0)
    expected = scipy.fft.idctn(x.numpy(), type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(idct2(x).numpy(), expected, atol=1e-12)


def test_dct2_is_orthonormal_and_puts_a_constant_in_dc():
    x = torch.randn(3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close((dct2(x) ** 2).sum(), (x**2).sum())
    constant = dct2(torch.full((8, 8), 2.0, dtype=torch.float64))
    assert constant[0, 0].item() == pytest.approx(16.0)  # 2 * sqrt(64)
    assert constant.abs().flatten()[1:].max() < 1e-12


@pytest.mark.parametrize("shape,block", [((16, 24), 8), ((2, 3, 8, 8), 8), ((1, 12, 8), 4)])
def test_block_dct2_equals_per_block_scipy(shape, block):
    x = np.random.default_rng(2).normal(size=shape)
    expected = np.empty_like(x)
    for i in range(0, shape[-2], block):
        for j in range(0, shape[-1], block):
            tile = x[..., i : i + block, j : j + block]
            expected[..., i : i + block, j : j + block] = scipy.fft.dctn(tile, type=2, norm="ortho", axes=(-2, -1))
    got = block_dct2(torch.from_numpy(x), block)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)
    torch.testing.assert_close(block_idct2(got, block), torch.from_numpy(x), atol=1e-12, rtol=0)


def test_block_transforms_reject_sizes_off_the_block_grid():
    with pytest.raises(ValueError, match="not a multiple of the 8x8 block"):
        block_dct2(torch.zeros(1, 12, 16))
    with pytest.raises(ValueError, match="multiple"):
        block_idct2(torch.zeros(16, 10))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        dct2(torch.zeros(4))


def test_gradcheck_float64():
    x = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(dct2, (x,))
    assert torch.autograd.gradcheck(idct2, (x,))
    y = torch.randn(1, 8, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: block_dct2(t, 4), (y,))
    assert torch.autograd.gradcheck(lambda t: block_idct2(t, 8), (y,))
