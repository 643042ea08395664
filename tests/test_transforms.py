"""Tests of diffusers_specreg.transforms against NumPy (np.fft) and PyWavelets references."""

import numpy as np
import pytest
import pywt
import torch

from diffusers_specreg.transforms import (
    DWT_MODES,
    dwt,
    dwt_max_level,
    fourier,
    radial_frequency,
    safe_abs,
    safe_angle,
    spectral_dims,
    stft_magnitude,
    wrapped_phase_difference,
)

PYWT_NAMES_2D = {"LH": 0, "HL": 1, "HH": 2}  # index into pywt's (cH, cV, cD)


def _random(shape, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)


# ----------------------------------------------------------------------------------------------------------- shapes
def test_spectral_dims():
    assert spectral_dims(torch.zeros(2, 3, 4, 5)) == (-2, -1)
    assert spectral_dims(torch.zeros(2, 3, 7)) == (-1,)
    for shape in [(4, 5), (1, 2, 3, 4, 5)]:
        with pytest.raises(ValueError, match=r"\[B, C, H, W\].*\[B, C, T\]"):
            spectral_dims(torch.zeros(shape))


# ---------------------------------------------------------------------------------------------------------- fourier
@pytest.mark.parametrize("shape", [(2, 3, 17, 23), (2, 3, 16, 8), (2, 2, 37)])
def test_fourier_matches_numpy_orthonormal_fft(shape):
    x = _random(shape)
    axes = (-2, -1) if len(shape) == 4 else (-1,)
    expected = np.fft.fftn(x.numpy(), axes=axes, norm="ortho")
    out = fourier(x)
    assert out.dtype == torch.complex128
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)
    # Parseval: the orthonormal DFT preserves the energy of every sample
    torch.testing.assert_close(out.abs().square().sum(axes), x.square().sum(axes))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_fourier_low_precision_computes_in_float32(dtype):
    x = _random((2, 3, 17, 23), dtype=dtype)
    out = fourier(x)
    assert out.dtype == torch.complex64
    expected = np.fft.fftn(x.double().numpy(), axes=(-2, -1), norm="ortho")
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)


def test_fourier_inside_bf16_autocast_is_float32():
    x = _random((2, 3, 8, 8), dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fourier(x.to(torch.bfloat16))
    assert out.dtype == torch.complex64
    assert torch.isfinite(torch.view_as_real(out)).all()


# -------------------------------------------------------------------------------------------------- radial frequency
@pytest.mark.parametrize("shape", [(8, 8), (17, 23), (6, 9), (37,), (16,)])
def test_radial_frequency_matches_numpy(shape):
    grids = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    expected = np.sqrt(sum(g**2 for g in grids))
    out = radial_frequency(shape)
    assert out.shape == shape
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)


def test_radial_frequency_layout_and_cache():
    radius = radial_frequency((8, 8))
    assert radius[0, 0] == 0.0  # DC first (un-shifted layout)
    assert radius[4, 0] == pytest.approx(0.5)  # Nyquist of an axis
    assert radius.max().item() == pytest.approx(0.5**0.5)
    assert radial_frequency((8, 8), dtype=torch.float64)[4, 0] == 0.5
    assert radial_frequency((8, 8), dtype=torch.float64) is radial_frequency((8, 8), dtype=torch.float64)  # cached
    assert radial_frequency((8, 8), device="cpu").shape == (8, 8)
    for bad in [(), (2, 3, 4), (0, 4)]:
        with pytest.raises(ValueError, match=r"\(H, W\) or \(T,\)"):
            radial_frequency(bad)


# -------------------------------------------------------------------------------------------------------------- dwt
def _check_against_pywt_2d(bands, x, wave, levels, mode, atol):
    reference = pywt.wavedec2(x.double().numpy(), wave, mode=mode, level=levels, axes=(-2, -1))
    names = [(name, level) for name, level, _ in bands]
    expected_names = [("LL", levels)] + [(s, lv) for lv in range(levels, 0, -1) for s in ("LH", "HL", "HH")]
    assert names == expected_names
    np.testing.assert_allclose(bands[0][2].double().numpy(), reference[0], atol=atol)
    for name, level, coefficients in bands[1:]:
        expected = reference[levels - level + 1][PYWT_NAMES_2D[name]]
        assert coefficients.shape == expected.shape
        np.testing.assert_allclose(coefficients.double().numpy(), expected, atol=atol)


def _check_against_pywt_1d(bands, x, wave, levels, mode, atol):
    reference = pywt.wavedec(x.double().numpy(), wave, mode=mode, level=levels, axis=-1)
    assert [(name, level) for name, level, _ in bands] == [("L", levels)] + [("H", lv) for lv in range(levels, 0, -1)]
    for (_, _, coefficients), expected in zip(bands, reference):
        assert coefficients.shape == expected.shape
        np.testing.assert_allclose(coefficients.double().numpy(), expected, atol=atol)


@pytest.mark.parametrize("wave", ["haar", "bior1.3", "db2"])
@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("size", [(17, 23), (41, 47)])
def test_dwt_2d_matches_pywavelets(wave, levels, size):
    x = _random((2, 3, *size))
    max_level = pywt.dwt_max_level(min(size), pywt.Wavelet(wave).dec_len)
    if levels > max_level:
        with pytest.raises(ValueError, match=f"maximum level is {max_level}"):
            dwt(x, wave, levels)
        return
    _check_against_pywt_2d(dwt(x, wave, levels), x, wave, levels, "zero", atol=1e-12)


@pytest.mark.parametrize("wave", ["haar", "bior1.3", "db2"])
@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("length", [37, 45])
def test_dwt_1d_matches_pywavelets(wave, levels, length):
    x = _random((2, 3, length))
    max_level = pywt.dwt_max_level(length, pywt.Wavelet(wave).dec_len)
    if levels > max_level:
        with pytest.raises(ValueError, match=f"maximum level is {max_level}"):
            dwt(x, wave, levels)
        return
    _check_against_pywt_1d(dwt(x, wave, levels), x, wave, levels, "zero", atol=1e-12)


@pytest.mark.parametrize("mode", DWT_MODES)
@pytest.mark.parametrize("wave", ["haar", "db2"])
def test_dwt_modes_match_pywavelets(mode, wave):
    image, waveform = _random((1, 2, 19, 22)), _random((1, 2, 41))
    _check_against_pywt_2d(dwt(image, wave, 2, mode), image, wave, 2, mode, atol=1e-12)
    _check_against_pywt_1d(dwt(waveform, wave, 2, mode), waveform, wave, 2, mode, atol=1e-12)


def test_dwt_float32_and_float64_share_no_rounded_filters():
    # the float32 and float64 transforms are cached separately; the float64 one keeps exact filter taps
    x64 = _random((1, 1, 41, 47))
    _check_against_pywt_2d(dwt(x64.float(), "bior1.3", 3), x64.float(), "bior1.3", 3, "zero", atol=1e-5)
    bands64 = dwt(x64, "bior1.3", 3)
    assert all(c.dtype == torch.float64 for _, _, c in bands64)
    _check_against_pywt_2d(bands64, x64, "bior1.3", 3, "zero", atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dwt_low_precision_and_autocast_give_float32(dtype):
    x = _random((2, 3, 32, 32), dtype=dtype)
    for bands in (dwt(x, "bior1.3", 2), dwt(x[:, :, 0], "haar", 3)):
        assert all(c.dtype == torch.float32 for _, _, c in bands)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bands = dwt(x.float(), "db2", 2)
    assert all(c.dtype == torch.float32 for _, _, c in bands)
    _check_against_pywt_2d(bands, x.float(), "db2", 2, "zero", atol=1e-5)


def test_dwt_gradient_is_the_adjoint():
    # pytorch_wavelets' hand-written backward, checked numerically on odd sizes in float64
    image = _random((1, 1, 10, 11)).requires_grad_()
    waveform = _random((1, 1, 13)).requires_grad_()
    for x, wave in [(image, "bior1.3"), (waveform, "db2")]:
        assert torch.autograd.gradcheck(lambda t, w=wave: tuple(c for _, _, c in dwt(t, w, 1)), (x,))


def test_dwt_validation_errors():
    x = torch.zeros(1, 1, 17, 23)
    with pytest.raises(ValueError, match=r">= 1"):
        dwt(x, "haar", 0)
    with pytest.raises(ValueError, match="maximum level is 1"):
        dwt(x, "bior1.3", 2)
    with pytest.raises(ValueError, match="allowed values are"):
        dwt(x, "haar", 1, mode="smooth")
    with pytest.raises(ValueError, match="Unknown wavelet"):
        dwt(x, "morl", 1)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        dwt(torch.zeros(4, 17), "haar", 1)
    assert dwt_max_level(17, "bior1.3") == 1 and dwt_max_level(64, "haar") == 6


# ------------------------------------------------------------------------------------------------------------- stft
def _numpy_stft_magnitude(x, n_fft, hop, win_length):
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)  # periodic Hann
    left = (n_fft - win_length) // 2
    window = np.pad(window, (left, n_fft - win_length - left))
    padded = np.pad(x, [(0, 0), (n_fft // 2, n_fft // 2)], mode="reflect")
    n_frames = 1 + (padded.shape[-1] - n_fft) // hop
    frames = np.stack([padded[:, i * hop : i * hop + n_fft] for i in range(n_frames)], axis=-1)  # [B, n_fft, N]
    return np.abs(np.fft.rfft(frames * window[:, None], axis=1))


@pytest.mark.parametrize("shape", [(2, 101), (2, 3, 101)])
@pytest.mark.parametrize("n_fft,hop,win_length", [(16, 4, 16), (32, 5, 20), (8, 3, 7)])
def test_stft_magnitude_matches_numpy(shape, n_fft, hop, win_length):
    x = _random(shape)
    out = stft_magnitude(x, n_fft, hop, win_length)
    expected = _numpy_stft_magnitude(x.reshape(-1, shape[-1]).numpy(), n_fft, hop, win_length)
    assert out.shape == expected.shape == (int(np.prod(shape[:-1])), n_fft // 2 + 1, expected.shape[-1])
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-10)
    assert stft_magnitude(x.to(torch.bfloat16), n_fft, hop, win_length).dtype == torch.float32


def test_stft_magnitude_errors():
    with pytest.raises(ValueError, match=r"\[B, T\] or \[B, C, T\]"):
        stft_magnitude(torch.zeros(1, 1, 1, 64), 16, 4, 16)
    with pytest.raises(ValueError, match="allowed values are"):
        stft_magnitude(torch.zeros(1, 64), 16, 4, 16, window="kaiser")
    with pytest.raises(ValueError, match="win_length <= n_fft"):
        stft_magnitude(torch.zeros(1, 64), 16, 4, 32)
    with pytest.raises(ValueError, match="T > 32"):
        stft_magnitude(torch.zeros(1, 32), 64, 4, 64)


# -------------------------------------------------------------------------------------------------- safe abs / angle
def test_safe_abs_and_angle_have_zero_gradient_at_zero():
    z = torch.zeros(4, dtype=torch.complex128, requires_grad=True)
    (safe_abs(z) + safe_angle(z)).sum().backward()
    assert torch.equal(z.grad, torch.zeros_like(z.grad))
    values = torch.randn(50, dtype=torch.complex128)
    torch.testing.assert_close(safe_abs(values), values.abs())
    torch.testing.assert_close(safe_angle(values), values.angle())


def test_wrapped_phase_difference_matches_numpy_and_range():
    x = torch.randn(200, dtype=torch.complex128)
    y = torch.randn(200, dtype=torch.complex128)
    diff = wrapped_phase_difference(x, y)
    np.testing.assert_allclose(diff.numpy(), np.angle(x.numpy() * np.conj(y.numpy())), atol=1e-12)
    assert (diff > -np.pi).all() and (diff <= np.pi).all()
    # a real negative product (DC bins of real signals with opposite signs) wraps to +π, never -π
    real = torch.tensor([1.0, -1.0], dtype=torch.float64)
    signed = torch.complex(real, torch.tensor([0.0, -0.0], dtype=torch.float64))
    assert wrapped_phase_difference(signed, torch.ones(2, dtype=torch.complex128)).tolist() == [0.0, np.pi]


@pytest.mark.parametrize("mode", DWT_MODES)
@pytest.mark.parametrize("levels", [1, 3])
def test_haar_fast_path_matches_pywavelets_and_pytorch_wavelets(mode, levels):
    # sides divisible by 2**levels take the sum/difference path: same coefficients as PyWavelets in every mode, and
    # the same gradients as the pytorch_wavelets convolution it replaces
    from diffusers_specreg.transforms import _dwt_module

    image, waveform = _random((2, 3, 16, 24)), _random((2, 2, 32))
    _check_against_pywt_2d(dwt(image, "haar", levels, mode), image, "haar", levels, mode, atol=1e-12)
    _check_against_pywt_1d(dwt(waveform, "haar", levels, mode), waveform, "haar", levels, mode, atol=1e-12)
    for x, ndim in ((image, 2), (waveform, 1)):
        x = x.clone().requires_grad_(True)
        weights = [torch.randn_like(c) for _, _, c in dwt(x, "haar", levels, mode)]
        fast = torch.autograd.grad(
            sum((w * c).sum() for w, (_, _, c) in zip(weights, dwt(x, "haar", levels, mode))), x
        )
        low, highs = _dwt_module(ndim, "haar", levels, mode, x.device, x.dtype)(x)
        reference_bands = [low] + [
            band
            for level in range(levels, 0, -1)
            for band in (highs[level - 1].unbind(2) if ndim == 2 else [highs[level - 1]])
        ]
        reference = torch.autograd.grad(sum((w * c).sum() for w, c in zip(weights, reference_bands)), x)
        torch.testing.assert_close(fast[0], reference[0], rtol=1e-12, atol=1e-12)
