"""Tests for diffusers_specreg.noise: spectrally anisotropic forward noise (SAGD, arXiv 2510.09660)."""

import json
import math

import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from diffusers_specreg import noise
from diffusers_specreg.noise import NoiseSpectrum, WeightsSpectrum, corrupt_band


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def radius(shape):
    """Normalised radius of the full FFT grid, written independently of the module: max over the grid is 1."""
    grids = torch.meshgrid(*[torch.fft.fftfreq(n, dtype=torch.float64) for n in shape], indexing="ij")
    r = torch.sqrt(sum(g**2 for g in grids))
    return r / r.max()


def power_spectrum(x):
    """Mean over batch and channels of |F x|² (orthonormal FFT over the signal dims), shape = signal shape."""
    dims = tuple(range(2, x.ndim))
    return torch.fft.fftn(x.double(), dim=dims, norm="ortho").abs().pow(2).mean(dim=(0, 1))


def rapsd_slope(x, r_min=0.25, r_max=0.75, bins=12):
    """Slope of log RAPSD vs log radius, fitted over log-spaced radial bins in [r_min, r_max]."""
    power, r = power_spectrum(x).flatten(), radius(x.shape[2:]).flatten()
    edges = torch.logspace(math.log10(r_min), math.log10(r_max), bins + 1, dtype=torch.float64)
    xs, ys = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (r >= lo) & (r < hi)
        assert sel.any()
        xs.append(r[sel].mean().log())
        ys.append(power[sel].mean().log())
    xs, ys = torch.stack(xs), torch.stack(ys)
    xc = xs - xs.mean()
    return float((xc * (ys - ys.mean())).sum() / (xc**2).sum())


SPECTRA = [
    "powerlaw:alpha=-1",
    "powerlaw:alpha=-0.5",
    "powerlaw:alpha=0.5",
    "powerlaw:alpha=2,eps=0.05",
    "band:0.2-0.6",
    "bandpass:low=0-0.25,high=0.5-1,gamma_low=0.7",
]


# ----------------------------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("spec", SPECTRA)
@pytest.mark.parametrize("shape", [(256, 1, 32, 32), (4096, 1, 256)])
def test_unit_variance_per_element(spec, shape):
    # batches sized so that ±5% is > 4 standard deviations of the estimate (1-D alpha = -1 has few degrees of freedom)
    spectrum = NoiseSpectrum.parse(spec)
    signal = shape[2:]
    # exactly: the weights are normalised to mean |w|² = 1, the diagonal of the circulant Σ_w
    assert float(spectrum.weights(signal, dtype=torch.float64).pow(2).mean()) == pytest.approx(1.0, abs=1e-12)
    noise = spectrum.sample(shape, generator=seeded(1))
    assert noise.shape == shape and noise.dtype == torch.float32
    assert float(noise.pow(2).mean()) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("alpha", [-1.0, -0.5, 0.5])
def test_powerlaw_rapsd_slope_is_two_alpha(alpha):
    spectrum = NoiseSpectrum.powerlaw(alpha)
    # 128 x 128 so that the default eps (smallest nonzero radius, 0.011) bends the slope by < 0.05 in [0.25, 0.75]
    noise = spectrum.sample((12, 1, 128, 128), generator=seeded(2))
    assert rapsd_slope(noise) == pytest.approx(2 * alpha, abs=0.15)
    # and the sign of alpha decides where the energy goes
    power, r = power_spectrum(noise), radius((128, 128))
    low, high = power[(r > 0) & (r < 0.2)].mean(), power[r > 0.6].mean()
    assert (low > high) == (alpha < 0)


def test_powerlaw_rapsd_slope_1d():
    noise = NoiseSpectrum.powerlaw(-0.5).sample((64, 1, 1024), generator=seeded(3))
    assert rapsd_slope(noise) == pytest.approx(-1.0, abs=0.15)


def test_powerlaw_weights_formula_and_default_eps():
    r = radius((16, 16))
    eps = float(r[r > 0].min())  # documented default: the smallest nonzero radius
    expected = (r + eps) ** -0.5
    expected = expected / expected.pow(2).mean().sqrt()
    got = NoiseSpectrum.powerlaw(-0.5).weights((16, 16), dtype=torch.float64)
    torch.testing.assert_close(got, expected)
    explicit = (r + 0.1) ** 1.5
    explicit = explicit / explicit.pow(2).mean().sqrt()
    torch.testing.assert_close(
        NoiseSpectrum.parse("powerlaw:alpha=1.5,eps=0.1").weights((16, 16), None, torch.float64), explicit
    )


def test_empirical_covariance_matches_sigma_w():
    # Σ_w = F⁻¹ Diag(|w|²) F, as a dense 16 x 16 matrix on a 4 x 4 grid, against the covariance of many samples.
    spectrum = NoiseSpectrum.parse("powerlaw:alpha=-0.7")
    basis = torch.eye(16, dtype=torch.float64).reshape(16, 1, 4, 4)
    sigma = spectrum.apply_covariance(basis).reshape(16, 16)
    t_w = spectrum.color(basis).reshape(16, 16)
    torch.testing.assert_close(sigma, t_w @ t_w.T)  # Σ_w = T_w T_wᵀ
    torch.testing.assert_close(sigma, sigma.T)
    assert float(torch.linalg.eigvalsh(sigma).min()) > 0
    samples = spectrum.sample((40000, 1, 4, 4), generator=seeded(4), dtype=torch.float64).reshape(-1, 16)
    empirical = samples.T @ samples / samples.shape[0]
    torch.testing.assert_close(empirical, sigma, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.diagonal(sigma), torch.ones(16, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------- white noise


@pytest.mark.parametrize("spec", ["white", "powerlaw:alpha=0", "powerlaw:alpha=0,eps=0.3", "band:0-1"])
@pytest.mark.parametrize("shape", [(3, 2, 8, 8), (3, 2, 17)])
def test_white_spectra_equal_torch_randn_exactly(spec, shape):
    spectrum = NoiseSpectrum.parse(spec)
    assert spectrum.is_white
    assert torch.equal(spectrum.sample(shape, generator=seeded(5)), torch.randn(shape, generator=seeded(5)))
    xi = torch.randn(shape)
    assert torch.equal(spectrum.color(xi), xi)
    assert torch.equal(spectrum.apply_inverse_covariance(xi), xi)


def test_default_is_white_and_resolve():
    assert NoiseSpectrum.white() == NoiseSpectrum.resolve(None) == NoiseSpectrum.from_dict({"kind": "white"})
    with pytest.raises(TypeError, match="parse"):
        NoiseSpectrum()  # the base of the kinds: built by parse / from_dict / the constructors
    assert NoiseSpectrum.resolve("powerlaw:alpha=-0.5") == NoiseSpectrum.powerlaw(-0.5)
    assert NoiseSpectrum.resolve({"kind": "band", "band": [0, 0.5]}) == NoiseSpectrum.band(0, 0.5)
    with pytest.raises(ValueError, match="powerlaw:alpha="):
        NoiseSpectrum.resolve(3)


def test_complementary_band_mix_is_white():
    mix = NoiseSpectrum.parse("bandpass:low=0-0.5,high=0.5-1,gamma_low=0.5")
    assert mix.is_white and not mix.is_singular
    assert not NoiseSpectrum.parse("bandpass:low=0-0.5,high=0.5-1,gamma_low=0.6").is_white
    assert not NoiseSpectrum.powerlaw(-0.1).is_white


# ----------------------------------------------------------------------------------------------- bands


@pytest.mark.parametrize("shape", [(64, 1, 32, 32), (64, 1, 256)])
def test_bandpass_noise_has_no_energy_outside_its_bands(shape):
    spectrum = NoiseSpectrum.parse("bandpass:low=0-0.25,high=0.5-1,gamma_low=0.7")
    noise = spectrum.sample(shape, generator=seeded(6))
    power, r = power_spectrum(noise), radius(shape[2:])
    low, high = r < 0.25, r >= 0.5
    gap = ~(low | high)
    assert gap.any()
    assert float(power[gap].max()) < 1e-10
    # amplitude per frequency follows γ_l : γ_h = 0.7 : 0.3
    assert float(power[low].mean() / power[high].mean()) == pytest.approx((0.7 / 0.3) ** 2, rel=0.15)


def test_band_noise_only_in_band():
    noise = NoiseSpectrum.band(0.2, 0.6).sample((16, 3, 16, 16), generator=seeded(7))
    power, r = power_spectrum(noise), radius((16, 16))
    inside = (r >= 0.2) & (r < 0.6)
    assert float(power[~inside].max()) < 1e-10
    assert float(power[inside].min()) > 0.1


def test_band_edges_are_half_open_and_include_one():
    w = NoiseSpectrum.band(0.5, 1).weights((8, 8), dtype=torch.float64)
    r = radius((8, 8))
    assert bool((w[r >= 0.5] > 0).all()) and bool((w[r < 0.5] == 0).all())
    assert float(w[4, 4]) > 0  # the corner, r = 1 exactly


def test_band_without_grid_frequency_raises():
    # on an 8 x 8 grid the smallest nonzero normalised radius is (1/8) / (0.5 * sqrt(2)) = 0.177
    with pytest.raises(ValueError, match="contains no frequency.*band:a-b"):
        NoiseSpectrum.band(0.01, 0.1).weights((8, 8))


# ----------------------------------------------------------------------------------------------- covariance


@pytest.mark.parametrize(
    "spec", ["powerlaw:alpha=-1", "powerlaw:alpha=0.8", "bandpass:low=0-0.5,high=0.5-1,gamma_low=0.8"]
)
@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (2, 3, 15)])
def test_covariance_inverse_round_trip(spec, shape):
    spectrum = NoiseSpectrum.parse(spec)
    x = torch.randn(shape, generator=seeded(8), dtype=torch.float64)
    out = spectrum.apply_covariance(spectrum.apply_inverse_covariance(x))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(
        spectrum.apply_inverse_covariance(spectrum.apply_covariance(x)), x, rtol=1e-10, atol=1e-10
    )
    # Σ_w = T_w T_w (w real and symmetric)
    torch.testing.assert_close(spectrum.color(spectrum.color(x)), spectrum.apply_covariance(x))


@pytest.mark.parametrize(
    "spec", ["band:0-0.5", "bandpass:low=0-0.25,high=0.5-1,gamma_low=0.5", "powerlaw:alpha=1,eps=0"]
)
def test_singular_spectra_raise_and_pseudo_inverse_projects(spec):
    spectrum = NoiseSpectrum.parse(spec)
    assert spectrum.is_singular
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=seeded(9))
    with pytest.raises(ValueError, match="singular.*powerlaw.*pseudo_inverse=True"):
        spectrum.apply_inverse_covariance(x)
    with pytest.raises(ValueError, match="singular"):
        spectrum.score_from_epsilon(x, 0.5)
    # Moore-Penrose: Σ Σ⁺ x is the projection of x onto range(Σ_w) (frequencies with w ≠ 0)
    projected = spectrum.apply_covariance(spectrum.apply_inverse_covariance(x, pseudo_inverse=True))
    support = (spectrum.weights((8, 8), dtype=torch.float64) > 0).to(torch.float64)
    expected = torch.fft.ifft2(torch.fft.fft2(x) * support).real
    torch.testing.assert_close(projected, expected)
    assert float((projected - x).abs().max()) > 1e-3  # the null space is really removed


def test_score_from_epsilon_matches_dense_formula():
    spectrum = NoiseSpectrum.powerlaw(-0.5)
    basis = torch.eye(16, dtype=torch.float64).reshape(16, 1, 4, 4)
    sigma = spectrum.apply_covariance(basis).reshape(16, 16)
    eps_hat = torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=seeded(10))
    sigma_t = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)
    score = spectrum.score_from_epsilon(eps_hat, sigma_t)
    dense = -(torch.linalg.solve(sigma, eps_hat.reshape(3, 16).T).T / sigma_t[:, None]).reshape(3, 1, 4, 4)
    torch.testing.assert_close(score, dense)
    torch.testing.assert_close(
        spectrum.score_from_epsilon(eps_hat, 0.5), spectrum.score_from_epsilon(eps_hat, torch.tensor(0.5))
    )
    with pytest.raises(ValueError, match=r"shape \[\] or \[B\]"):
        spectrum.score_from_epsilon(eps_hat, torch.ones(2))
    # white: the ordinary −ε̂ / σ_t
    torch.testing.assert_close(NoiseSpectrum.white().score_from_epsilon(eps_hat, 0.5), -eps_hat / 0.5)


def test_color_is_linear_and_differentiable():
    spectrum = NoiseSpectrum.powerlaw(-0.5)
    x = torch.randn(1, 1, 4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(spectrum.color, (x,))
    assert torch.autograd.gradcheck(spectrum.apply_inverse_covariance, (x,))


# ----------------------------------------------------------------------------------------------- serialisation


ROUND_TRIP = [
    "white",
    "powerlaw:alpha=-0.5",
    "powerlaw:alpha=0.5,eps=0.01",
    "powerlaw:alpha=-0.06,eps=1e-05",
    "band:0-0.5",
    "band:0.125-1",
    "bandpass:low=0-0.25,high=0.5-1,gamma_low=0.7",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_string_and_dict_round_trips(text):
    spectrum = NoiseSpectrum.parse(text)
    assert spectrum.to_string() == text
    assert NoiseSpectrum.parse(spectrum.to_string()) == spectrum
    config = json.loads(json.dumps(spectrum.to_dict()))
    assert NoiseSpectrum.from_dict(config) == spectrum
    assert NoiseSpectrum.from_dict(config).to_string() == text
    assert hash(NoiseSpectrum.parse(text)) == hash(spectrum)


def test_parse_is_lenient_with_case_and_spaces():
    assert NoiseSpectrum.parse("  PowerLaw: alpha = -0.5 , EPS=0.1 ") == NoiseSpectrum.powerlaw(-0.5, 0.1)
    assert NoiseSpectrum.parse("bandpass: high=0.5-1, low=0 - 0.25, gamma_low=1") == NoiseSpectrum.bandpass(
        (0, 0.25), (0.5, 1), 1.0
    )
    assert NoiseSpectrum.parse("powerlaw:alpha=-0.5") != NoiseSpectrum.parse("powerlaw:alpha=-0.5,eps=0.1")


MALFORMED = [
    "",
    "pink",
    "white:alpha=1",
    "powerlaw",
    "powerlaw:",
    "powerlaw:alpha",
    "powerlaw:alpha=abc",
    "powerlaw:eps=0.1",
    "powerlaw:alpha=1,beta=2",
    "powerlaw:alpha=1,alpha=2",
    "powerlaw:alpha=nan",
    "powerlaw:alpha=inf",
    "powerlaw:alpha=-1,eps=0",  # infinite DC weight
    "powerlaw:alpha=1,eps=-0.1",
    "band:abc",
    "band:0.5",
    "band:0.5-0.2",  # empty
    "band:0.3-0.3",  # empty
    "band:0-1.5",  # outside [0, 1]
    "bandpass:low=0-0.2,high=0.5-1",  # missing gamma_low
    "bandpass:low=0-0.2,high=0.5-1,gamma_low=1.5",
    "bandpass:low=0-0.2,high=0.5-1,gamma_low=-0.1",
    "bandpass:low=0-0.2,high=0.5-1.2,gamma_low=0.5",
    "bandpass:low=0.3-0.2,high=0.5-1,gamma_low=0.5",
    "bandpass:low=0-0.2;high=0.5-1,gamma_low=0.5",
]


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_strings_raise_naming_the_valid_form(text):
    with pytest.raises(ValueError) as info:
        NoiseSpectrum.parse(text)
    message = str(info.value)
    assert "powerlaw:alpha=A[,eps=E]" in message and "bandpass:low=a-b,high=c-d,gamma_low=g" in message
    assert "e.g. 'powerlaw:alpha=-0.5'" in message


@pytest.mark.parametrize(
    "make",
    [
        lambda: NoiseSpectrum.from_dict({"kind": "pink"}),
        lambda: NoiseSpectrum.from_dict({"kind": "white", "alpha": 1.0}),
        lambda: NoiseSpectrum.from_dict({"kind": "powerlaw"}),
        lambda: NoiseSpectrum.powerlaw(float("inf")),
        lambda: NoiseSpectrum.band(-0.1, 0.5),
        lambda: NoiseSpectrum.band(0.4, 0.4),
        lambda: NoiseSpectrum.bandpass((0, 0.2), (0.5, 1), 2.0),
        lambda: NoiseSpectrum.from_dict({"kind": "powerlaw", "alpha": 1, "gamma": 2}),
        lambda: NoiseSpectrum.from_dict({"alpha": 1}),
        lambda: NoiseSpectrum.parse(None),
    ],
)
def test_bad_constructor_arguments_raise(make):
    with pytest.raises(ValueError, match="Valid noise spectra: 'white', 'powerlaw:alpha=A"):
        make()


# ----------------------------------------------------------------------------------------------- user weights


def test_from_weights_reproduces_a_radial_spectrum():
    radial = NoiseSpectrum.powerlaw(-0.5)
    custom = NoiseSpectrum.from_weights(radial.weights((8, 8), dtype=torch.float64) * 3.0)  # rescaled on input
    assert custom.signal_shape == (8, 8) and custom.kind == "weights" and isinstance(custom, WeightsSpectrum)
    a = radial.sample((4, 2, 8, 8), generator=seeded(11), dtype=torch.float64)
    b = custom.sample((4, 2, 8, 8), generator=seeded(11), dtype=torch.float64)
    torch.testing.assert_close(a, b)
    restored = NoiseSpectrum.from_dict(json.loads(json.dumps(custom.to_dict())))
    assert restored == custom
    with pytest.raises(ValueError, match="to_dict"):
        custom.to_string()


def test_from_weights_checks_shape_symmetry_and_values():
    weights = torch.rand(8, 8, generator=seeded(12)) + 0.1
    with pytest.raises(ValueError, match="symmetric.*symmetrize=True"):
        NoiseSpectrum.from_weights(weights)
    symmetric = NoiseSpectrum.from_weights(weights, symmetrize=True)
    w = symmetric.weights((8, 8), dtype=torch.float64)
    mirrored = torch.roll(torch.flip(w, dims=(0, 1)), shifts=(1, 1), dims=(0, 1))
    torch.testing.assert_close(w, mirrored)
    noise = symmetric.sample((512, 1, 8, 8), generator=seeded(13))
    assert float(noise.pow(2).mean()) == pytest.approx(1.0, rel=0.05)
    with pytest.raises(ValueError, match=r"expected a tensor of shape \[B, C, 8, 8\]"):
        symmetric.sample((1, 1, 8, 9))
    with pytest.raises(ValueError, match="signal shape"):
        symmetric.weights((16, 16))
    with pytest.raises(ValueError, match="non-negative"):
        NoiseSpectrum.from_weights(-torch.ones(8, 8))
    with pytest.raises(ValueError, match="all zero"):
        NoiseSpectrum.from_weights(torch.zeros(8))
    with pytest.raises(ValueError, match="finite"):
        NoiseSpectrum.from_weights(torch.full((8,), float("nan")))
    with pytest.raises(ValueError, match=r"\[H, W\].*\[T\]"):
        NoiseSpectrum.from_weights(torch.ones(2, 4, 4))
    assert NoiseSpectrum.from_weights(torch.ones(6)).is_white


# ----------------------------------------------------------------------------------------------- sampling api


def test_reproducible_with_seeded_generator():
    spectrum = NoiseSpectrum.powerlaw(-0.5)
    a = spectrum.sample((2, 3, 16, 16), generator=seeded(14))
    b = spectrum.sample((2, 3, 16, 16), generator=seeded(14))
    c = spectrum.sample((2, 3, 16, 16), generator=seeded(15))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # sampling = colouring the white noise the same generator draws
    assert torch.equal(a, spectrum.color(torch.randn(2, 3, 16, 16, generator=seeded(14))))
    # a list of generators seeds each batch element, as Diffusers' randn_tensor does
    listed = spectrum.sample((2, 3, 16, 16), generator=[seeded(1), seeded(2)])
    torch.testing.assert_close(listed, spectrum.color(randn_tensor((2, 3, 16, 16), generator=[seeded(1), seeded(2)])))
    torch.testing.assert_close(listed[1:], spectrum.sample((1, 3, 16, 16), generator=seeded(2)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_sample_dtypes(dtype):
    spectrum = NoiseSpectrum.powerlaw(-0.5)
    noise = spectrum.sample((4, 2, 16, 16), generator=seeded(16), dtype=dtype)
    assert noise.dtype == dtype and bool(torch.isfinite(noise).all())
    reference = spectrum.color(torch.randn(4, 2, 16, 16, generator=seeded(16), dtype=dtype).double())
    torch.testing.assert_close(noise.double(), reference, atol=0.05, rtol=0.02)


def test_one_dimensional_signals():
    spectrum = NoiseSpectrum.powerlaw(-1.0)
    noise = spectrum.sample((8, 1, 100), generator=seeded(17))
    assert noise.shape == (8, 1, 100)
    assert spectrum.weights((100,)).shape == (100,)
    x = torch.randn(2, 1, 100, dtype=torch.float64)
    torch.testing.assert_close(spectrum.apply_covariance(spectrum.apply_inverse_covariance(x)), x)


def test_weights_are_cached_and_spectrum_is_immutable():
    spectrum = NoiseSpectrum.powerlaw(-0.5)
    assert spectrum.weights((8, 8)) is spectrum.weights((8, 8))
    assert spectrum.weights((8, 8), dtype=torch.float64).dtype == torch.float64
    with pytest.raises(AttributeError):
        spectrum._alpha = 1.0
    assert spectrum.alpha == -0.5


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.sample((8, 8)),
        lambda s: s.sample((1, 1, 2, 8, 8)),
        lambda s: s.color(torch.randn(8, 8)),
        lambda s: s.apply_covariance(torch.randn(1, 1, 1, 4, 4)),
        lambda s: s.color(torch.ones(1, 1, 4, 4, dtype=torch.long)),
        lambda s: s.weights((2, 2, 2)),
    ],
)
def test_wrong_shapes_raise(call):
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]|\(H, W\)|floating-point"):
        call(NoiseSpectrum.powerlaw(-0.5))


# ----------------------------------------------------------------------------------------------- corruption


@pytest.mark.parametrize("shape", [(64, 2, 16, 16), (64, 2, 256)])
def test_corrupt_band_energy_only_in_band(shape):
    x = torch.randn(shape, generator=seeded(18))
    corrupted = corrupt_band(x, band=(0.5, 0.8), strength=0.5, generator=seeded(19))
    added = corrupted - x
    power, r = power_spectrum(added), radius(shape[2:])
    inside = (r >= 0.5) & (r < 0.8)
    assert float(power[~inside].max()) < 1e-10
    assert float(added.pow(2).mean()) == pytest.approx(0.25, rel=0.05)  # unit variance times strength²
    again = corrupt_band(x, band=(0.5, 0.8), strength=0.5, generator=seeded(19))
    assert torch.equal(corrupted, again)
    assert torch.equal(corrupt_band(x, band=(0.5, 0.8), strength=0.0), x)


def test_corrupt_band_rejects_bad_arguments():
    x = torch.randn(1, 1, 8, 8)
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        corrupt_band(x, band=(0.5, 1.5))
    with pytest.raises(ValueError, match="empty"):
        corrupt_band(x, band=(0.5, 0.5))
    with pytest.raises(ValueError, match="pair"):
        corrupt_band(x, band=(0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match="strength"):
        corrupt_band(x, band=(0.1, 0.5), strength=-1.0)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        corrupt_band(torch.randn(8, 8), band=(0.1, 0.5))


def test_one_class_per_kind_in_the_parse_registry():
    assert set(noise.SPECTRA) == {"white", "powerlaw", "band", "bandpass", "weights"}
    for text in (
        "white",
        "powerlaw:alpha=-0.5,eps=0.01",
        "band:0-0.5",
        "bandpass:low=0-0.25,high=0.5-1,gamma_low=0.7",
    ):
        spectrum = NoiseSpectrum.parse(text)
        assert type(spectrum) is noise.SPECTRA[spectrum.kind] and spectrum.to_string() == text
        assert NoiseSpectrum.from_dict(spectrum.to_dict()) == spectrum and hash(spectrum) == hash(
            NoiseSpectrum.parse(text)
        )
    assert NoiseSpectrum.parse("band:0-0.5") != NoiseSpectrum.parse("bandpass:low=0-0.5,high=0.5-1,gamma_low=1")
