"""Tests of diffusers_specreg.metrics and diffusers_specreg.plots on analytic cases (tiny inputs, CPU, seconds)."""

import math

import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F
from PIL import Image

from diffusers_specreg import metrics
from diffusers_specreg.metrics import (
    NDB,
    RAPSD,
    FrechetLogMelDistance,
    FrechetWaveletDistance,
    MeanPowerSpectrum,
    compare_image_sets,
    frechet_distance,
    log_rapsd_distance,
    log_spectral_distance,
    mrstft_distance,
    psd_log_spectral_distance,
    rapsd,
    spectral_slope,
    wavelet_packet_transform,
)
from diffusers_specreg.plots import figure_to_array, plot_band_errors, plot_rapsd, save_image_grid


def white_noise(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def power_law_noise(batch, size, seed, exponent=2.0):
    """Images whose power falls as f^-exponent: white noise shaped by |f|^(-exponent/2) in the DFT domain."""
    spectrum = torch.fft.fft2(white_noise((batch, 1, size, size), seed))
    f = torch.fft.fftfreq(size, dtype=torch.float64)
    radius = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    amplitude = torch.where(radius > 0, radius.clamp_min(1e-12) ** (-exponent / 2), torch.zeros(()))
    x = torch.fft.ifft2(spectrum * amplitude).real
    return x / x.std()


def box_blur(x):
    """3x3 box blur with circular padding: the spectrum is multiplied by a fixed low-pass response."""
    return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="circular"), kernel_size=3, stride=1)


# ----------------------------------------------------------------------------------------------------------------
# RAPSD, log-RAPSD distance, spectral slope
# ----------------------------------------------------------------------------------------------------------------


def test_white_noise_rapsd_is_flat_with_unit_power():
    freqs, power = rapsd(white_noise((16, 3, 32, 32), seed=0))
    mean_power = power.mean(0).numpy()
    assert freqs.shape == (17,) and freqs[0] == 0.0 and freqs[-1] == 0.5
    assert abs(spectral_slope(freqs, mean_power)) < 0.15
    # orthonormal DFT of unit-variance white noise: E|X|^2 = 1 in every bin
    np.testing.assert_allclose(mean_power[1:].mean(), 1.0, rtol=0.05)


def test_power_law_noise_has_slope_minus_two():
    freqs, power = rapsd(power_law_noise(8, 64, seed=1))
    assert spectral_slope(freqs, power.mean(0).numpy()) == pytest.approx(-2.0, abs=0.2)


def test_rapsd_of_1d_signals_finds_the_sine_and_flat_noise():
    t = torch.arange(256, dtype=torch.float64)
    sine = torch.sin(2 * math.pi * 20 * t / 256).expand(4, 2, 256)
    freqs, power = rapsd(sine)
    assert freqs.shape == (129,)
    assert int(power.mean(0).argmax()) == 20 and freqs[20] == pytest.approx(20 / 256)
    acc = RAPSD()
    acc.update(white_noise((32, 1, 256), seed=2))
    spectrum = acc.compute()
    assert abs(spectral_slope(spectrum.frequencies, spectrum.power)) < 0.15


def test_radial_profile_bins_non_square_images():
    profile = metrics.radial_profile(torch.ones(2, 16, 32, dtype=torch.float64))
    assert profile.shape == (2, 9)  # min(H, W) // 2 + 1 bins
    torch.testing.assert_close(profile, torch.ones(2, 9, dtype=torch.float64))
    np.testing.assert_allclose(metrics.radial_frequencies(16, 32), np.arange(9) / 16)


def test_rapsd_streaming_equals_one_shot():
    x = white_noise((10, 3, 16, 16), seed=3)
    one_shot, chunked = RAPSD(), RAPSD()
    one_shot.update(x)
    for chunk in (x[:3], x[3:4], x[4:].numpy()):
        chunked.update(chunk)
    a, b = one_shot.compute(), chunked.compute()
    assert a.num_samples == b.num_samples == 10
    np.testing.assert_allclose(a.power, b.power, rtol=1e-12)
    with pytest.raises(ValueError, match=r"\[B, 3, 16, 16\]"):
        chunked.update(torch.zeros(2, 3, 8, 8))


def test_log_rapsd_distance_is_zero_for_identical_and_exact_for_a_scaled_spectrum():
    spectrum = RAPSD()
    spectrum.update(power_law_noise(4, 32, seed=4))
    psd = spectrum.compute()
    assert log_rapsd_distance(psd, psd) == {"all": 0.0, "low": 0.0, "mid": 0.0, "high": 0.0}
    scaled = log_rapsd_distance(psd, psd.power * 10.0)
    for value in scaled.values():
        assert value == pytest.approx(1.0)


def test_log_rapsd_distance_bands_split_nyquist_in_thirds():
    a = np.ones(13)  # 12 non-DC bins: 4 per third
    b = np.ones(13)
    b[1:5], b[5:9], b[9:] = 10.0, 100.0, 1000.0
    assert log_rapsd_distance(a, b) == {"all": pytest.approx(2.0), "low": 1.0, "mid": 2.0, "high": 3.0}
    custom = log_rapsd_distance(a, b, bands={"bottom": (0.0, 0.5), "top": (0.5, 1.0)})
    # fractions k / 12: bins 1..6 in (0, 0.5], bins 7..12 in (0.5, 1]
    assert custom["bottom"] == pytest.approx(8 / 6) and custom["top"] == pytest.approx(16 / 6)


def test_blur_raises_high_band_distance_more_than_low_band():
    x = power_law_noise(8, 32, seed=5)
    sharp, blurred = RAPSD(), RAPSD()
    sharp.update(x)
    blurred.update(box_blur(x))
    to_self = log_rapsd_distance(sharp.compute(), sharp.compute())
    to_blur = log_rapsd_distance(blurred.compute(), sharp.compute())
    assert to_blur["high"] > to_self["high"]
    assert to_blur["high"] > to_blur["low"]


def test_spectral_slope_of_exact_power_law_and_range():
    freqs = np.arange(33) / 64
    power = np.zeros(33)
    power[1:] = freqs[1:] ** -3.0
    assert spectral_slope(freqs, power) == pytest.approx(-3.0)
    bent = power.copy()
    bent[17:] = power[17:] * 1e-3  # a cliff above f = 0.25 changes the full fit but not the fit below it
    assert spectral_slope(freqs, bent, fmax=0.25) == pytest.approx(-3.0)
    assert spectral_slope(freqs, bent) < -4.0
    with pytest.raises(ValueError, match="two non-DC bins"):
        spectral_slope(freqs, power, fmin=0.4, fmax=0.41)


# ----------------------------------------------------------------------------------------------------------------
# Fréchet distance and FWD
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wavelet", ["haar", "db2", "sym5"])
def test_wavelet_packets_match_pywt_and_keep_energy(wavelet):
    x = white_noise((2, 3, 16, 16), seed=6)
    packets = wavelet_packet_transform(x, wavelet, level=2)
    assert packets.shape == (2, 16, 3, 4, 4)
    tree = pywt.WaveletPacket2D(x[1, 2].numpy(), wavelet, mode="periodization", maxlevel=2)
    expected = np.stack([tree[path].data for path in metrics.packet_paths(2)])
    np.testing.assert_allclose(packets[1, :, 2].numpy(), expected, atol=1e-12)
    # orthonormal wavelets with periodic boundaries preserve energy (Parseval)
    torch.testing.assert_close(packets.square().sum(), x.square().sum())


def test_frechet_eigh_matches_scipy_sqrtm():
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((80, 12)), rng.standard_normal((90, 12)) * 1.3 + 0.2
    stats = (a.mean(0), np.cov(a.T), b.mean(0), np.cov(b.T))
    assert frechet_distance(*stats) == pytest.approx(frechet_distance(*stats, method="sqrtm"), rel=1e-9)
    # 1-D Gaussians: (mu1 - mu2)^2 + (s1 - s2)^2
    one_d = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]]))
    assert one_d == pytest.approx(4.0 + 1.0)
    with pytest.raises(ValueError, match="eigh"):
        frechet_distance(*stats, method="cholesky")


def test_fwd_of_identical_sets_is_zero_and_of_shifted_sets_exact():
    x = torch.rand(40, 1, 16, 16, generator=torch.Generator().manual_seed(8)) * 2 - 1
    fwd = FrechetWaveletDistance()
    fwd.update(x, real=True)
    fwd.update(x, real=False)
    trace = fwd._real.covariance().diagonal(dim1=-2, dim2=-1).sum().item()
    assert abs(fwd.compute()) < 1e-6 * trace
    # a constant offset c (in [-1, 1] units, c / 2 in [0, 1] units) moves only the all-lowpass packet, whose
    # Haar coefficients are 2**level * c / 2: FWD = C*H*W / 4**level * (c/2)**2 exactly (equal covariances)
    shifted = FrechetWaveletDistance()
    shifted.update(x, real=True)
    shifted.update(x + 0.2, real=False)
    assert shifted.compute() == pytest.approx(1 * 16 * 16 / 16 * 0.1**2, rel=1e-6)
    per_packet = shifted.compute_per_packet()
    assert per_packet.shape == (16,) and per_packet[0] == pytest.approx(16 * 16 * 0.1**2, rel=1e-6)
    assert np.abs(per_packet[1:]).max() < 1e-9


def test_fwd_streaming_equals_one_shot_and_detects_blur():
    x = power_law_noise(24, 16, seed=9).float().clamp(-1, 1)
    one_shot, chunked, blurred = FrechetWaveletDistance(), FrechetWaveletDistance(), FrechetWaveletDistance()
    one_shot.update(x, real=True)
    one_shot.update(x.flip(-1), real=False)
    for start in range(0, 24, 5):
        chunked.update(x[start : start + 5].numpy(), real=True)
        chunked.update(x.flip(-1)[start : start + 5], real=False)
    assert chunked.compute() == pytest.approx(one_shot.compute(), rel=1e-9)
    blurred.update(x, real=True)
    blurred.update(box_blur(x), real=False)
    assert blurred.compute() > 0.1


def test_fwd_validates_inputs():
    with pytest.raises(ValueError, match="method"):
        FrechetWaveletDistance(method="svd")
    with pytest.raises(ValueError, match="wavelet"):
        FrechetWaveletDistance(wavelet="not-a-wavelet")
    fwd = FrechetWaveletDistance(level=2)
    with pytest.raises(ValueError, match="divisible"):
        fwd.update(torch.zeros(2, 1, 10, 10), real=True)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        fwd.update(torch.zeros(2, 16, 16), real=True)
    with pytest.raises(ValueError, match="max_features"):
        fwd.update(torch.zeros(2, 3, 256, 256), real=True)


# ----------------------------------------------------------------------------------------------------------------
# NDB
# ----------------------------------------------------------------------------------------------------------------


def mixture(n, seed, weights=(0.25, 0.25, 0.25, 0.25)):
    """2-D Gaussian mixture with four well-separated modes."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 6.0]])
    modes = rng.choice(4, size=n, p=np.asarray(weights))
    return centres[modes] + rng.standard_normal((n, 2))


def test_ndb_same_distribution_is_near_zero_and_dropped_mode_is_large():
    reference = mixture(10000, seed=10)
    ndb = NDB(k=20, seed=0).fit(reference)
    same_runs = []
    for seed in range(11, 16):  # five fresh samples of the reference distribution
        ndb.reset()
        ndb.update(mixture(10000, seed=seed))
        same_runs.append(ndb.compute())
    # each bin's test has a 5% false-positive rate, so NDB/K of an equal distribution is about 0.05
    assert np.mean([run["ndb_k"] for run in same_runs]) <= 0.1
    assert max(run["ndb_k"] for run in same_runs) <= 0.2
    same = same_runs[0]
    assert same["js"] < 0.01
    ndb.reset()
    ndb.update(mixture(2000, seed=12, weights=(0.5, 0.5, 0.0, 0.0)))  # mode collapse: two modes missing
    collapsed = ndb.compute()
    assert collapsed["ndb_k"] >= 0.5
    assert collapsed["js"] > 10 * same["js"]
    np.testing.assert_allclose(collapsed["generated_proportions"].sum(), 1.0)


def test_ndb_streaming_equals_one_shot_and_accepts_images():
    reference = torch.from_numpy(mixture(400, seed=13)).reshape(400, 1, 1, 2)  # image-shaped samples are flattened
    generated = torch.from_numpy(mixture(300, seed=14)).reshape(300, 1, 1, 2)
    one_shot, chunked = NDB(k=8, seed=1).fit(reference), NDB(k=8, seed=1).fit(reference.numpy())
    one_shot.update(generated)
    for start in range(0, 300, 70):
        chunked.update(generated[start : start + 70])
    a, b = one_shot.compute(), chunked.compute()
    assert a["ndb"] == b["ndb"]
    np.testing.assert_array_equal(a["generated_proportions"], b["generated_proportions"])
    np.testing.assert_array_equal(one_shot.reference_counts, chunked.reference_counts)
    held_out = NDB(k=8, seed=1).fit(reference, proportion_samples=generated[:100])
    assert held_out.reference_counts.sum() == 100
    torch.testing.assert_close(held_out.centers, one_shot.centers)


def test_kmeans_is_seeded_and_finds_separated_clusters():
    x = mixture(400, seed=15)
    centres_a, labels_a = metrics.kmeans(x, 4, seed=3)
    centres_b, labels_b = metrics.kmeans(x, 4, seed=3)
    torch.testing.assert_close(centres_a, centres_b)
    assert sorted(np.round(c / 6.0).astype(int).tolist() for c in centres_a.numpy()) == [
        [0, 0],
        [0, 1],
        [1, 0],
        [1, 1],
    ]
    assert torch.bincount(labels_a, minlength=4).min() > 60


# ----------------------------------------------------------------------------------------------------------------
# Audio metrics
# ----------------------------------------------------------------------------------------------------------------


def tones(batch, length=4096, seed=16):
    """Harmonic tones with random fundamentals and amplitudes, float32 [B, T]."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 16000.0
    f0 = rng.uniform(150, 600, size=(batch, 1))
    x = sum(rng.uniform(0.2, 1.0, size=(batch, 1)) / h * np.sin(2 * np.pi * h * f0 * t) for h in range(1, 5))
    return torch.from_numpy(x.astype(np.float32))


def test_mrstft_distance_is_zero_to_itself_and_grows_with_noise():
    x = tones(3)
    assert mrstft_distance(x, x).item() == 0.0
    noise = white_noise(tuple(x.shape), seed=17).float()
    values = [mrstft_distance(x + level * noise, x).item() for level in (0.01, 0.05, 0.2)]
    assert 0.0 < values[0] < values[1] < values[2]
    per_sample = mrstft_distance((x + 0.05 * noise).unsqueeze(1), x.unsqueeze(1), reduction="none")
    assert per_sample.shape == (3,)
    with pytest.raises(ValueError, match="reduction"):
        mrstft_distance(x, x, reduction="max")
    with pytest.raises(ValueError, match="too short"):
        mrstft_distance(x[:, :512], x[:, :512])


def test_log_spectral_distance_is_zero_to_itself_and_grows_with_noise():
    x = tones(3)
    assert log_spectral_distance(x, x).item() == 0.0
    noise = white_noise(tuple(x.shape), seed=18).float()
    values = [log_spectral_distance(x + level * noise, x, n_fft=512, hop_length=128).item() for level in (0.01, 0.1)]
    assert 0.0 < values[0] < values[1]
    with pytest.raises(ValueError, match=r"\[B, C, T\]"):
        log_spectral_distance(x, x[:2])


def test_mean_power_spectrum_set_distance():
    x = tones(8)
    psd, psd_chunked = MeanPowerSpectrum(n_fft=256, hop_length=64), MeanPowerSpectrum(256, 64)
    psd.update(x)
    psd_chunked.update(x[:5])
    psd_chunked.update(x[5:].numpy())
    np.testing.assert_allclose(psd.compute().power, psd_chunked.compute().power, rtol=1e-10)
    assert psd_log_spectral_distance(psd.compute(), psd_chunked.compute()) == pytest.approx(0.0, abs=1e-9)
    psd_noisy = MeanPowerSpectrum(n_fft=256, hop_length=64)
    psd_noisy.update(x + 0.1 * white_noise(tuple(x.shape), seed=19).float())
    assert psd_log_spectral_distance(psd_noisy.compute(), psd.compute()) > 1.0
    with_rate = MeanPowerSpectrum(n_fft=256, hop_length=64, sample_rate=16000)
    with_rate.update(x)
    assert with_rate.compute().frequencies[-1] == pytest.approx(8000.0)


def test_frechet_log_mel_distance_is_zero_to_itself_and_grows_with_noise():
    x = tones(6)
    noise = white_noise(tuple(x.shape), seed=20).float()
    distances = []
    for level in (0.0, 0.01, 0.1):
        fld = FrechetLogMelDistance(sample_rate=16000, n_fft=512, hop_length=128, n_mels=32)
        fld.update(x, real=True)
        for chunk in torch.split(x + level * noise, 4):  # streaming over the generated set
            fld.update(chunk, real=False)
        distances.append(fld.compute())
    trace = fld._real.covariance().diagonal().sum().item()
    assert abs(distances[0]) < 1e-6 * trace
    assert distances[0] < distances[1] < distances[2]


def test_frechet_log_mel_distance_on_spectrogram_images():
    images = torch.rand(4, 1, 16, 32, generator=torch.Generator().manual_seed(21)) * 2 - 1
    fld = FrechetLogMelDistance(input_type="spectrogram")
    assert fld.features(images).shape == (4 * 32, 16)  # columns are frames
    fld.update(images, real=True)
    fld.update(images, real=False)
    assert abs(fld.compute()) < 1e-8
    with pytest.raises(ValueError, match="input_type"):
        FrechetLogMelDistance(input_type="mel")
    with pytest.raises(ValueError, match="16 features"):
        bad = FrechetLogMelDistance(input_type="spectrogram")
        bad.update(images, real=True)
        bad.update(images[:, :, :8], real=False)


# ----------------------------------------------------------------------------------------------------------------
# Image report and plots
# ----------------------------------------------------------------------------------------------------------------


def test_compare_image_sets_identical_and_blurred():
    x = power_law_noise(16, 16, seed=22).float().clamp(-1, 1)
    same = compare_image_sets(x, x, batch_size=5)
    assert same["log_rapsd_all"] == 0.0 and same["slope_gap"] == 0.0 and abs(same["fwd"]) < 1e-6
    assert same["num_real"] == same["num_fake"] == 16 and same["frequencies"].shape == (9,)
    blurred = compare_image_sets(x, (box_blur(x[i : i + 4]) for i in range(0, 16, 4)))
    assert blurred["slope_gap"] < -0.5  # the samples lack high frequencies: steeper spectrum
    assert blurred["log_rapsd_high"] > blurred["log_rapsd_low"]
    assert blurred["fwd"] > 0.01
    assert set(same) >= {"rapsd_real", "rapsd_fake", "log_rapsd_low", "log_rapsd_mid", "slope_real", "slope_fake"}


def test_plots_write_pngs_of_the_expected_size(tmp_path):
    freqs = np.arange(17) / 32
    power = np.r_[10.0, freqs[1:] ** -2.0]
    figure = plot_rapsd(
        {"model": (freqs, power * 2.0), "data": (freqs, power)}, tmp_path / "rapsd.png", figsize=(6, 4.5), dpi=100
    )
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    assert lines["data"].get_color() == "black" and lines["model"].get_color() != "black"
    assert len(lines["data"].get_xdata()) == 16  # DC not drawn on the log axis
    with Image.open(tmp_path / "rapsd.png") as image:
        assert image.size == (600, 450)
    plot_band_errors(
        {"mse": {"low": 0.1, "mid": 0.2, "high": 0.5}, "spectral": {"low": 0.1, "mid": 0.1, "high": 0.2}},
        tmp_path / "bands.png",
        figsize=(5, 3),
        dpi=80,
    )
    with Image.open(tmp_path / "bands.png") as image:
        assert image.size == (400, 240)
    array = figure_to_array(figure)
    assert array.shape == (450, 600, 3) and array.dtype == np.uint8 and array.std() > 0
    with pytest.raises(ValueError, match="reference"):
        plot_rapsd({"model": (freqs, power)}, reference="data")


def test_save_image_grid_layout_and_values(tmp_path):
    images = torch.full((5, 3, 8, 8), -1.0)
    images[0] = 1.0
    images[4, 1] = 0.0
    grid = save_image_grid(images, tmp_path / "grid.png", nrow=3, padding=2)
    with Image.open(tmp_path / "grid.png") as image:
        assert image.size == (3 * 10 + 2, 2 * 10 + 2) and image.mode == "RGB"
        pixels = np.asarray(image)
    assert pixels[2, 2].tolist() == [255, 255, 255]  # first image is white
    assert pixels[12 + 3, 12 + 3].tolist() == [0, 128, 0]  # fifth image (row 1, column 1): green channel at 0
    assert grid.size == image.size
    grey = save_image_grid(torch.zeros(2, 1, 4, 4), tmp_path / "grey.png", nrow=8, padding=0)
    assert grey.mode == "L" and grey.size == (8, 4)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        save_image_grid(torch.zeros(2, 2, 4, 4), tmp_path / "bad.png")


def test_image_grid_separates_tiles_with_padding():
    from diffusers_specreg.plots import image_grid

    # black tiles (digits and mel spectrograms are mostly black): white 2-pixel gaps keep them apart
    grid = image_grid(torch.full((3, 1, 4, 4), -1.0), nrow=2, padding=2)
    assert grid.shape == (2 * 6 + 2, 2 * 6 + 2, 1)
    gaps = np.ones(grid.shape[:2], dtype=bool)
    for top in (2, 8):
        for left in (2, 8):
            gaps[top : top + 4, left : left + 4] = False
    assert (grid[..., 0][gaps] == 255).all()
    assert (grid[2:6, 2:6] == 0).all() and (grid[8:12, 2:6] == 0).all()
    assert (grid[8:12, 8:12] == 255).all()  # the missing fourth tile is padding too
    assert (image_grid(torch.full((2, 1, 4, 4), 1.0), nrow=2, pad_value=0)[:, 6:8] == 0).all()


def _visible_tick_labels(axis, renderer):
    low, high = sorted(axis.get_view_interval())
    labels = []
    for tick in axis.get_major_ticks() + axis.get_minor_ticks():
        label = tick.label1
        if label.get_visible() and label.get_text() and low <= tick.get_loc() <= high:
            labels.append(label)
    return labels


@pytest.mark.parametrize("size", [16, 32, 64, 256, 1024])
@pytest.mark.parametrize("power_decades", [0.25, 0.6, 1.2, 8.0])
def test_rapsd_plot_tick_labels_do_not_overlap(size, power_decades):
    freqs = np.fft.rfftfreq(size)  # DC to Nyquist, as a RAPSD of size x size images
    power = 10.0 ** (-power_decades * np.linspace(0.0, 1.0, freqs.size))
    figure = plot_rapsd({"data": (freqs, power), "samples": (freqs, power * 0.8)})
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    axes = figure.axes[0]
    for axis in (axes.xaxis, axes.yaxis):
        labels = _visible_tick_labels(axis, renderer)
        assert len(labels) >= 2, [label.get_text() for label in labels]
        boxes = [label.get_window_extent(renderer) for label in labels]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                assert not boxes[i].overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())
