"""Tests of diffusers_specreg.losses against independent NumPy / PyWavelets references."""

import math

import numpy as np
import pytest
import pywt
import torch

from diffusers_specreg.losses import (
    FOURIER_MODES,
    LOSS_NAMES,
    FourierLoss,
    MultiResolutionSTFTLoss,
    STFTLoss,
    WaveletLoss,
    build_loss,
)

SMALL_MRSTFT = {"fft_sizes": (16, 32, 8), "hop_sizes": (4, 8, 2), "win_lengths": (12, 32, 8)}


def _random(shape, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)


def _image_or_waveform(name):
    """Inputs on which each named loss is defined: images for the Fourier/wavelet losses, waveforms for MR-STFT."""
    return (2, 2, 64) if name == "mrstft" else (2, 3, 12, 14)


def _build(name, **kwargs):
    return build_loss(name, **(SMALL_MRSTFT if name == "mrstft" else {}), **kwargs)


# ---------------------------------------------------------------------------------------------- NumPy references
def _numpy_radial_weight(shape, power):
    grids = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grids))
    weight = (radius + radius[radius > 0].min()) ** power
    return weight / weight.mean()


def _numpy_fourier_loss(prediction, target, mode, radial_power=0.0):
    axes = tuple(range(2, prediction.ndim))
    spectrum_pred = np.fft.fftn(prediction, axes=axes, norm="ortho")
    spectrum_target = np.fft.fftn(target, axes=axes, norm="ortho")
    amplitude_error = np.abs(np.abs(spectrum_target) - np.abs(spectrum_pred))
    phase_error = np.abs(np.angle(spectrum_target * np.conj(spectrum_pred)))
    weight = _numpy_radial_weight(prediction.shape[2:], radial_power)
    batch = prediction.shape[0]
    if mode == "amplitude":
        return (weight * amplitude_error).reshape(batch, -1).mean(1)
    if mode == "amplitude_phase":
        amplitude_term = (weight * amplitude_error).reshape(batch, -1).mean(1)
        phase_term = (weight * phase_error).reshape(batch, -1).mean(1)
        return amplitude_term * (1 + phase_term)
    errors = weight * (amplitude_error + np.abs(spectrum_target) * phase_error)
    return errors.reshape(batch, -1).mean(1)


def _numpy_wavelet_loss(prediction, target, wave, levels, level_weights=None, subband_weights=None):
    level_weights = level_weights or [1.0] * levels
    subband_weights = subband_weights or {}
    # Eq. 16 of arXiv 2603.02447 as written (L1 SUM over each subband's coefficients), divided by the documented
    # constant N = number of elements of one input sample
    batch = prediction.shape[0]
    elements = prediction[0].size

    def mean_abs(a, b):
        return np.abs(a - b).reshape(batch, -1).sum(1) / elements

    if prediction.ndim == 4:
        coeffs_pred = pywt.wavedec2(prediction, wave, mode="zero", level=levels, axes=(-2, -1))
        coeffs_target = pywt.wavedec2(target, wave, mode="zero", level=levels, axes=(-2, -1))
        total = level_weights[levels - 1] * subband_weights.get("LL", 1.0) * mean_abs(coeffs_pred[0], coeffs_target[0])
        for index in range(1, levels + 1):
            level = levels - index + 1
            for name, pred_band, target_band in zip(("LH", "HL", "HH"), coeffs_pred[index], coeffs_target[index]):
                gamma = level_weights[level - 1] * subband_weights.get(name, 1.0)
                total = total + gamma * mean_abs(pred_band, target_band)
        return total
    coeffs_pred = pywt.wavedec(prediction, wave, mode="zero", level=levels, axis=-1)
    coeffs_target = pywt.wavedec(target, wave, mode="zero", level=levels, axis=-1)
    total = level_weights[levels - 1] * subband_weights.get("L", 1.0) * mean_abs(coeffs_pred[0], coeffs_target[0])
    for index in range(1, levels + 1):
        gamma = level_weights[levels - index] * subband_weights.get("H", 1.0)
        total = total + gamma * mean_abs(coeffs_pred[index], coeffs_target[index])
    return total


def _numpy_stft_magnitude(x, n_fft, hop, win_length):
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length)
    left = (n_fft - win_length) // 2
    window = np.pad(window, (left, n_fft - win_length - left))
    padded = np.pad(x, [(0, 0), (n_fft // 2, n_fft // 2)], mode="reflect")
    n_frames = 1 + (padded.shape[-1] - n_fft) // hop
    frames = np.stack([padded[:, i * hop : i * hop + n_fft] for i in range(n_frames)], axis=-1)
    return np.abs(np.fft.rfft(frames * window[:, None], axis=1))


def _numpy_stft_loss(prediction, target, n_fft, hop, win_length, eps=1e-7):
    batch = prediction.shape[0]
    s_x = _numpy_stft_magnitude(prediction.reshape(-1, prediction.shape[-1]), n_fft, hop, win_length)
    s_y = _numpy_stft_magnitude(target.reshape(-1, target.shape[-1]), n_fft, hop, win_length)
    s_x, s_y = s_x.reshape(batch, -1), s_y.reshape(batch, -1)
    convergence = np.linalg.norm(s_y - s_x, axis=1) / (np.linalg.norm(s_y, axis=1) + eps)
    return convergence + np.abs(np.log(s_y + eps) - np.log(s_x + eps)).mean(1)


# ------------------------------------------------------------------------------------------------ reference values
@pytest.mark.parametrize("mode", FOURIER_MODES)
@pytest.mark.parametrize("radial_power", [0.0, 1.5, -1.0])
@pytest.mark.parametrize("shape", [(2, 3, 17, 23), (3, 2, 37), (2, 1, 8, 16)])
def test_fourier_loss_matches_numpy(mode, radial_power, shape):
    prediction, target = _random(shape, seed=1), _random(shape, seed=2)
    loss = FourierLoss(mode=mode, radial_power=radial_power, reduction="none")(prediction, target)
    expected = _numpy_fourier_loss(prediction.numpy(), target.numpy(), mode, radial_power)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-10)
    # float32 agrees with the float64 reference to float32 accuracy
    loss32 = FourierLoss(mode=mode, radial_power=radial_power, reduction="none")(prediction.float(), target.float())
    assert loss32.dtype == torch.float32
    np.testing.assert_allclose(loss32.numpy(), expected, rtol=1e-4)


@pytest.mark.parametrize("wave", ["haar", "bior1.3", "db2"])
@pytest.mark.parametrize("levels", [1, 2, 3])
@pytest.mark.parametrize("shape", [(2, 3, 41, 47), (2, 2, 45)])
def test_wavelet_loss_matches_pywavelets(wave, levels, shape):
    prediction, target = _random(shape, seed=3), _random(shape, seed=4)
    loss = WaveletLoss(wave=wave, levels=levels, reduction="none")(prediction, target)
    expected = _numpy_wavelet_loss(prediction.numpy(), target.numpy(), wave, levels)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("shape", [(2, 3, 17, 23), (2, 2, 37)])
def test_wavelet_loss_weights_match_pywavelets(shape):
    prediction, target = _random(shape, seed=5), _random(shape, seed=6)
    level_weights = [0.5, 2.0]
    subband_weights = {"LL": 3.0, "HH": 0.0, "HL": 0.25, "H": 4.0, "L": 0.1}
    loss = WaveletLoss("db2", 2, level_weights=level_weights, subband_weights=subband_weights, reduction="none")
    expected = _numpy_wavelet_loss(prediction.numpy(), target.numpy(), "db2", 2, level_weights, subband_weights)
    np.testing.assert_allclose(loss(prediction, target).numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("shape", [(2, 101), (2, 3, 101)])
def test_stft_losses_match_numpy(shape):
    prediction, target = _random(shape, seed=7), _random(shape, seed=8)
    single = STFTLoss(n_fft=32, hop_length=5, win_length=20, reduction="none")(prediction, target)
    np.testing.assert_allclose(single.numpy(), _numpy_stft_loss(prediction.numpy(), target.numpy(), 32, 5, 20))
    multi = MultiResolutionSTFTLoss(**SMALL_MRSTFT, reduction="none")(prediction, target)
    resolutions = zip(SMALL_MRSTFT["fft_sizes"], SMALL_MRSTFT["hop_sizes"], SMALL_MRSTFT["win_lengths"])
    expected = np.mean([_numpy_stft_loss(prediction.numpy(), target.numpy(), *r) for r in resolutions], axis=0)
    np.testing.assert_allclose(multi.numpy(), expected, rtol=1e-10)


def test_mrstft_default_resolutions_run_on_long_waveforms():
    prediction, target = _random((1, 2100), seed=9, dtype=torch.float32), _random((1, 2100), seed=10)
    loss = MultiResolutionSTFTLoss()(prediction, target.float())
    assert torch.isfinite(loss) and loss > 0
    assert MultiResolutionSTFTLoss()(target.float(), target.float()) == 0


# ------------------------------------------------------------------------------------------------------- properties
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_identical_inputs_give_zero(name):
    x = _random(_image_or_waveform(name), dtype=torch.float32)
    loss = _build(name, reduction="none")(x, x.clone())
    assert torch.equal(loss, torch.zeros(2))


def test_circular_shift_amplitude_losses_blind_weighted_phase_not():
    image = _random((2, 3, 17, 23), seed=11, dtype=torch.float32)
    shifted = torch.roll(image, shifts=(3, -5), dims=(-2, -1))
    assert build_loss("amplitude")(shifted, image) < 1e-5
    # Eq. 15 multiplies the phase factor by the amplitude error, so a pure shift costs nothing
    assert build_loss("amplitude_phase")(shifted, image) < 1e-5
    assert build_loss("amplitude_weighted_phase")(shifted, image) > 0.1
    # also for radially weighted amplitudes and for waveforms
    assert build_loss("amplitude", radial_power=2.0)(shifted, image) < 1e-5
    waveform = image[:, :, 0]
    assert build_loss("amplitude_weighted_phase")(torch.roll(waveform, 4, -1), waveform) > 0.1


def test_weighted_phase_ignores_zero_energy_frequencies():
    # a target with energy at DC only: phase errors elsewhere carry no weight
    target = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    prediction = target + 0.3 * torch.cos(torch.arange(8.0, dtype=torch.float64) * np.pi / 2)
    weighted = build_loss("amplitude_weighted_phase")(prediction, target)
    amplitude_only = build_loss("amplitude")(prediction, target)
    torch.testing.assert_close(weighted, amplitude_only)


def test_radial_power_shifts_weight_to_high_frequencies():
    target = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    low = target + 0.1  # DC error only
    checker = 0.1 * (-1.0) ** (torch.arange(16.0)[:, None] + torch.arange(16.0)[None, :])  # Nyquist error only
    for power, low_wins in [(2.0, False), (-2.0, True)]:
        loss = FourierLoss(radial_power=power)
        assert (loss(low, target) > loss(checker[None, None], target)) == low_wins
    flat = FourierLoss()
    torch.testing.assert_close(flat(low, target), flat(checker[None, None].double(), target))


# -------------------------------------------------------------------------------------------------------- gradients
GRADCHECK_CASES = [
    ("amplitude", {}, (1, 2, 5, 7)),
    ("amplitude_phase", {}, (1, 2, 5, 7)),
    ("amplitude_weighted_phase", {}, (1, 2, 5, 7)),
    ("amplitude_weighted_phase", {"radial_power": 1.0}, (2, 1, 9)),
    ("amplitude_phase", {"radial_power": -0.5}, (2, 1, 9)),
    ("wavelet", {"wave": "haar", "levels": 2}, (1, 2, 5, 7)),
    ("wavelet", {"wave": "bior1.3", "levels": 1}, (1, 1, 10, 11)),
    ("wavelet", {"wave": "db2", "levels": 2}, (2, 1, 13)),
    ("mrstft", {"fft_sizes": (8, 16), "hop_sizes": (3, 4), "win_lengths": (8, 12)}, (1, 1, 17)),
]


@pytest.mark.parametrize("name,kwargs,shape", GRADCHECK_CASES)
def test_gradcheck_float64(name, kwargs, shape):
    prediction = _random(shape, seed=12).requires_grad_()
    target = _random(shape, seed=13)
    if name in ("amplitude_phase", "amplitude_weighted_phase"):
        kwargs = {"phase_eps": 0.0, **kwargs}  # the exact gradient; the damped one is tested below
    loss = build_loss(name, reduction="sum", **kwargs)
    assert torch.autograd.gradcheck(lambda p: loss(p, target), (prediction,))


@pytest.mark.parametrize("mode", ["amplitude_phase", "amplitude_weighted_phase"])
def test_phase_gradient_bounded_on_tiny_and_blurred_predictions(mode):
    # the exact phase gradient scales like 1/|Y|: a ~1e-20 prediction gives NaN/inf, a strongly blurred x̂₀ a huge one
    target = torch.sign(torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)))
    kernel = torch.ones(1, 1, 9, 9) / 81
    blurred = torch.nn.functional.conv2d(torch.nn.functional.conv2d(target, kernel, padding=4), kernel, padding=4)
    tiny = 1e-20 * torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    norms = {}
    for name, prediction in [("tiny", tiny), ("blurred", blurred * 1e-3), ("blurred only", blurred)]:
        for eps in (0.0, 1e-3):
            leaf = prediction.clone().requires_grad_()
            FourierLoss(mode, phase_eps=eps)(leaf, target).backward()
            norms[name, eps] = float(leaf.grad.norm())
    assert not all(math.isfinite(norms["tiny", 0.0]) and norms[k, 0.0] < 1e3 for k in ("tiny", "blurred"))
    for name in ("tiny", "blurred", "blurred only"):
        # bound: 1/(2√eps) per frequency, averaged over the 1024 frequencies of each sample, plus the amplitude part
        assert math.isfinite(norms[name, 1e-3]) and norms[name, 1e-3] < 5.0, norms


def test_damped_phase_gradient_matches_exact_where_amplitudes_are_large():
    target, prediction = _random((2, 1, 8, 8), seed=3), _random((2, 1, 8, 8), seed=4)
    grads = []
    for eps in (0.0, 1e-9):
        p = prediction.clone().requires_grad_()
        FourierLoss("amplitude_weighted_phase", phase_eps=eps)(p, target).sum().backward()
        grads.append(p.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-8)
    value = FourierLoss("amplitude_phase", phase_eps=0.5)(prediction, target)
    torch.testing.assert_close(value, FourierLoss("amplitude_phase", phase_eps=0.0)(prediction, target))


def test_wavelet_level_balance_is_eq16_sum_form():
    # Eq. 16 sums |ΔW| over all coefficients, so on an orthonormal Haar DWT of an error with energy at every scale the
    # finest level holds about 3/4 of the loss (a mean per subband would give it only 4^-1 of the coarse weight)
    target = torch.sign(torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)))
    error = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    full = WaveletLoss("haar", 3, reduction="none")(target + error, target)
    finest = WaveletLoss("haar", 3, level_weights=[1.0, 0.0, 0.0], reduction="none")(target + error, target)
    assert 0.65 < float(finest / full) < 0.85


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_no_nan_gradient_at_zero_prediction_identical_inputs_and_silence(name):
    target = _random(_image_or_waveform(name), dtype=torch.float32)
    loss = _build(name)
    for prediction, reference in [
        (torch.zeros_like(target), target),
        (target.clone(), target),
        (torch.zeros_like(target), torch.zeros_like(target)),
    ]:
        prediction.requires_grad_()
        value = loss(prediction, reference)
        value.backward()
        assert torch.isfinite(value)
        assert torch.isfinite(prediction.grad).all()
    # the wavelet loss is linear in the coefficients: an all-zero prediction still gets a nonzero gradient; the
    # magnitude losses have none there (|z| has no direction at z = 0), but a nonzero prediction does
    zero = torch.zeros_like(target, requires_grad=True)
    loss(zero, target).backward()
    assert (zero.grad.abs().sum() > 0) == (name == "wavelet")
    small = (1e-3 * _random(target.shape, seed=20, dtype=torch.float32)).requires_grad_()
    loss(small, target).backward()
    assert small.grad.abs().sum() > 0 and torch.isfinite(small.grad).all()


# ------------------------------------------------------------------------------------------------- mixed precision
@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_give_finite_float32(name, dtype):
    shape = _image_or_waveform(name)
    prediction = _random(shape, seed=14, dtype=dtype).requires_grad_()
    target = _random(shape, seed=15, dtype=dtype)
    loss = _build(name, reduction="none")
    value = loss(prediction, target)
    assert value.dtype == torch.float32 and torch.isfinite(value).all()
    reference = loss(prediction.detach().float(), target.float())
    torch.testing.assert_close(value, reference)  # the half values are upcast before any transform
    value.sum().backward()
    assert prediction.grad.dtype == dtype and torch.isfinite(prediction.grad.float()).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        in_autocast = loss(prediction.float(), target.float())
    assert in_autocast.dtype == torch.float32
    torch.testing.assert_close(in_autocast, reference)


# ------------------------------------------------------------------------------------------- reductions and errors
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_reductions_are_consistent(name):
    shape = _image_or_waveform(name)
    prediction, target = _random(shape, seed=16), _random(shape, seed=17)
    per_sample = _build(name, reduction="none")(prediction, target)
    assert per_sample.shape == (2,)
    assert per_sample[0] != per_sample[1]
    torch.testing.assert_close(_build(name, reduction="mean")(prediction, target), per_sample.mean())
    torch.testing.assert_close(_build(name, reduction="sum")(prediction, target), per_sample.sum())
    # each sample's value does not depend on the rest of the batch
    torch.testing.assert_close(_build(name, reduction="none")(prediction[1:], target[1:]), per_sample[1:])


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_shape_errors_name_the_shapes(name):
    shape = _image_or_waveform(name)
    loss = _build(name)
    other = (*shape[:-1], shape[-1] - 1)
    with pytest.raises(ValueError, match=rf"{list(shape)}.*{list(other)}".replace("[", r"\[").replace("]", r"\]")):
        loss(torch.zeros(shape), torch.zeros(other))
    if name == "mrstft":
        with pytest.raises(ValueError, match=r"\[B, T\] or \[B, C, T\]"):
            loss(torch.zeros(1, 1, 1, 64), torch.zeros(1, 1, 1, 64))
    else:
        with pytest.raises(ValueError, match=r"\[B, C, H, W\].*\[B, C, T\]"):
            loss(torch.zeros(3, 40), torch.zeros(3, 40))


def test_unknown_options_raise_with_allowed_values():
    with pytest.raises(ValueError, match="amplitude_weighted_phase"):
        FourierLoss(mode="phase")
    with pytest.raises(ValueError, match=r"'none', 'mean', 'sum'"):
        FourierLoss(reduction="max")
    with pytest.raises(ValueError, match=r"'amplitude', 'amplitude_phase', 'amplitude_weighted_phase', 'wavelet'"):
        build_loss("focal")
    with pytest.raises(ValueError, match="'LL', 'LH', 'HL', 'HH'"):
        WaveletLoss(subband_weights={"XY": 1.0})
    with pytest.raises(ValueError, match="one weight per level"):
        WaveletLoss(levels=3, level_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="allowed values are"):
        WaveletLoss(mode="smooth")
    with pytest.raises(ValueError, match="Unknown wavelet"):
        WaveletLoss(wave="morl")
    with pytest.raises(ValueError, match="maximum level is 1"):
        WaveletLoss("bior1.3", levels=3)(torch.zeros(1, 1, 17, 23), torch.zeros(1, 1, 17, 23))
    with pytest.raises(ValueError, match="same nonzero length"):
        MultiResolutionSTFTLoss(fft_sizes=(16, 32), hop_sizes=(4,), win_lengths=(16,))
    with pytest.raises(ValueError, match="allowed values are"):
        STFTLoss(window="kaiser")


def test_build_loss_returns_configured_modules():
    for mode in FOURIER_MODES:
        loss = build_loss(mode, radial_power=0.5, reduction="sum")
        assert isinstance(loss, FourierLoss) and loss.mode == mode and loss.radial_power == 0.5
    wavelet = build_loss("wavelet", wave="bior1.3", levels=2)
    assert isinstance(wavelet, WaveletLoss) and (wavelet.wave, wavelet.levels) == ("bior1.3", 2)
    mrstft = build_loss("mrstft")
    assert isinstance(mrstft, MultiResolutionSTFTLoss)
    assert [s.n_fft for s in mrstft.stft_losses] == [1024, 2048, 512]
    assert list(LOSS_NAMES) == ["amplitude", "amplitude_phase", "amplitude_weighted_phase", "wavelet", "mrstft"]


def _full_fft_fourier_loss(prediction, target, mode, radial_power, phase_eps):
    """The Fourier losses written with the full DFT (`transforms.fourier`), plain means over all frequencies."""
    from diffusers_specreg.losses import radial_weight
    from diffusers_specreg.transforms import fourier, safe_abs, wrapped_phase_difference

    spectrum_pred, spectrum_target = fourier(prediction), fourier(target)
    amplitude_error = (safe_abs(spectrum_target) - safe_abs(spectrum_pred)).abs()
    weight = radial_weight(prediction.shape[2:], radial_power, dtype=torch.float64)
    phase_error = wrapped_phase_difference(spectrum_target, spectrum_pred, phase_eps).abs()
    if mode == "amplitude":
        return (weight * amplitude_error).flatten(1).mean(1)
    if mode == "amplitude_phase":
        return (weight * amplitude_error).flatten(1).mean(1) * (1 + (weight * phase_error).flatten(1).mean(1))
    return (weight * (amplitude_error + safe_abs(spectrum_target) * phase_error)).flatten(1).mean(1)


@pytest.mark.parametrize("mode", FOURIER_MODES)
@pytest.mark.parametrize("radial_power,phase_eps", [(0.0, 0.0), (0.0, 1e-3), (1.5, 0.5)])
@pytest.mark.parametrize("shape", [(2, 2, 8, 10), (2, 2, 9, 7), (2, 2, 6, 5), (2, 3, 16), (2, 3, 15)])
def test_rfft_fourier_loss_equals_full_fft_values_and_gradients(mode, radial_power, phase_eps, shape):
    # the half spectrum with Hermitian weights (DC and even-size Nyquist columns once, the others twice) must give
    # the full-DFT means and their gradients, including the damped phase backward (phase_eps > 0)
    prediction = _random(shape, seed=3).requires_grad_(True)
    target = _random(shape, seed=4).requires_grad_(True)
    loss = FourierLoss(mode=mode, radial_power=radial_power, phase_eps=phase_eps, reduction="none")
    value = loss(prediction, target)
    grads = torch.autograd.grad(value.sum(), (prediction, target))
    expected = _full_fft_fourier_loss(prediction, target, mode, radial_power, phase_eps)
    expected_grads = torch.autograd.grad(expected.sum(), (prediction, target))
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("shape", [(6, 8), (6, 7), (5,), (4,)])
def test_hermitian_weight_counts_every_full_dft_bin_once(shape):
    from diffusers_specreg.transforms import hermitian_weight

    weight = hermitian_weight(shape, dtype=torch.float64)
    assert weight.shape == (*shape[:-1], shape[-1] // 2 + 1)
    assert weight.sum().item() == math.prod(shape)
    assert weight[..., 0].eq(1).all()
    assert weight[..., -1].eq(1 if shape[-1] % 2 == 0 else 2).all()
