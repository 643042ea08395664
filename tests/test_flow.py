"""Flow matching: x̂₀ for every parametrisation, the scripts' timestep sampling and loss weighting, the spectral
weightings and gates in σ units, the hook for Diffusers' SD3 / Flux loops, and Flux's packed latents."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    EDMEulerScheduler,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
)
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

from diffusers_specreg import flow_matching as fm
from diffusers_specreg.flow_regularizer import FlowSpectralRegularizer
from diffusers_specreg.losses import LOSS_NAMES, build_loss
from diffusers_specreg.parametrisation import PARAMETRISATIONS, predict_x0
from diffusers_specreg.regularizer import SpectralRegularizer
from diffusers_specreg.weighting import WEIGHTINGS, timestep_weight

IMAGE_LOSSES = tuple(name for name in LOSS_NAMES if name != "mrstft")
# Small settings so that every loss runs on an 8x8 image or a 256-sample waveform
LOSS_KWARGS = {
    "wavelet": {"levels": 2},
    "mrstft": {"fft_sizes": (64, 32), "hop_sizes": (16, 8), "win_lengths": (32, 16)},
}


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _loss(name):
    return build_loss(name, reduction="none", **LOSS_KWARGS.get(name, {}))


# ---------------------------------------------------------------------------------------------------------------------
# x̂₀ per parametrisation: hand computation and the schedulers' own step / preconditioning
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_vp_x0_matches_hand_computation_and_step(prediction_type):
    scheduler = DDPMScheduler(prediction_type=prediction_type, clip_sample=False)
    output, noisy = _randn(3, 2, 4, 4, seed=1), _randn(3, 2, 4, 4, seed=2)
    timesteps = torch.tensor([3, 500, 998])
    x0 = predict_x0(prediction_type, output, noisy, scheduler=scheduler, timesteps=timesteps)
    a = scheduler.alphas_cumprod[timesteps].reshape(3, 1, 1, 1)
    hand = {
        "epsilon": (noisy - (1 - a).sqrt() * output) / a.sqrt(),
        "v_prediction": a.sqrt() * noisy - (1 - a).sqrt() * output,
        "sample": output,
    }[prediction_type]
    torch.testing.assert_close(x0, hand, rtol=1e-5, atol=1e-5)
    for i, t in enumerate(timesteps.tolist()):
        expected = scheduler.step(output[i : i + 1], t, noisy[i : i + 1]).pred_original_sample
        torch.testing.assert_close(x0[i : i + 1], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_edm_x0_matches_hand_computation_and_precondition_outputs(prediction_type):
    scheduler = EDMEulerScheduler(prediction_type=prediction_type)
    output, noisy = _randn(3, 2, 4, 4, seed=3), _randn(3, 2, 4, 4, seed=4)
    sigmas = torch.tensor([0.01, 0.5, 20.0])
    x0 = predict_x0("edm", output, noisy, scheduler=scheduler, sigmas=sigmas.reshape(3, 1, 1, 1))
    s, d = sigmas.reshape(3, 1, 1, 1), 0.5
    c_out = s * d / (s**2 + d**2).sqrt() * (1 if prediction_type == "epsilon" else -1)
    torch.testing.assert_close(x0, d**2 / (s**2 + d**2) * noisy + c_out * output)
    for i in range(3):
        expected = scheduler.precondition_outputs(noisy[i : i + 1], output[i : i + 1], sigmas[i])
        torch.testing.assert_close(x0[i : i + 1], expected)


def test_flow_x0_matches_hand_computation_and_accepts_the_scripts_shapes():
    velocity, noisy = _randn(3, 4, 4, 4, seed=5), _randn(3, 4, 4, 4, seed=6)
    sigmas = torch.tensor([0.001, 0.37, 1.0])
    hand = noisy - sigmas.reshape(3, 1, 1, 1) * velocity
    for kwargs in (
        {"sigmas": sigmas},
        {"sigmas": sigmas.reshape(3, 1, 1, 1)},  # get_sigmas(timesteps, n_dim=4) of the scripts
        {"timesteps": sigmas * 1000},  # the scripts' timesteps
        {"timesteps": sigmas * 500, "scheduler": FlowMatchEulerDiscreteScheduler(num_train_timesteps=500)},
    ):
        torch.testing.assert_close(predict_x0("flow", velocity, noisy, **kwargs), hand)
    # a scalar σ applies to the whole batch; bf16 inputs give float32
    torch.testing.assert_close(predict_x0("flow", velocity, noisy, sigmas=0.25), noisy - 0.25 * velocity)
    assert predict_x0("flow", velocity.bfloat16(), noisy.bfloat16(), sigmas=sigmas.bfloat16()).dtype == torch.float32
    # the SD3 scripts' preconditioned output is x̂₀ already
    preconditioned = velocity * (-sigmas.reshape(3, 1, 1, 1)) + noisy
    torch.testing.assert_close(predict_x0("flow_preconditioned", preconditioned, noisy), hand)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_flow_x0_is_the_euler_endpoint_of_the_scheduler(shift):
    """FlowMatchEulerDiscreteScheduler.step from σ to σ_next is x_t + (σ_next − σ)·v̂; x̂₀ is its σ_next = 0 end."""
    velocity, noisy = _randn(1, 4, 4, 4, seed=7), _randn(1, 4, 4, 4, seed=8)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(sigmas=[0.8, 0.5])  # shifted, then 0 appended
    sigma, sigma_next = scheduler.sigmas[0], scheduler.sigmas[1]
    assert sigma_next < sigma and scheduler.sigmas[2] == 0
    stepped = scheduler.step(velocity, scheduler.timesteps[0], noisy).prev_sample
    torch.testing.assert_close(stepped, noisy + (sigma_next - sigma) * velocity)
    # one step from σ to 0: the scheduler's own x̂₀
    scheduler.set_timesteps(sigmas=[0.6])
    sigma = scheduler.sigmas[0]
    endpoint = scheduler.step(velocity, scheduler.timesteps[0], noisy).prev_sample
    torch.testing.assert_close(predict_x0("flow", velocity, noisy, sigmas=sigma), endpoint)
    torch.testing.assert_close(
        predict_x0("flow", velocity, noisy, timesteps=scheduler.timesteps[0], scheduler=scheduler), endpoint
    )


def test_predict_x0_errors_name_the_allowed_values():
    output = noisy = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match="epsilon, v_prediction, sample, edm, flow, flow_preconditioned"):
        predict_x0("velocity", output, noisy, sigmas=0.5)
    with pytest.raises(ValueError, match="differs from the scheduler's prediction_type 'epsilon'"):
        predict_x0("sample", output, noisy, scheduler=DDPMScheduler(), timesteps=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="needs a variance-preserving scheduler"):
        predict_x0(
            "epsilon", output, noisy, scheduler=FlowMatchEulerDiscreteScheduler(), timesteps=torch.tensor([1, 2])
        )
    with pytest.raises(ValueError, match="needs an EDM scheduler"):
        predict_x0("edm", output, noisy, scheduler=DDPMScheduler(), sigmas=1.0)
    with pytest.raises(ValueError, match="not both"):
        predict_x0("flow", output, noisy, sigmas=0.5, timesteps=500.0)
    with pytest.raises(ValueError, match="needs sigmas"):
        predict_x0("flow", output, noisy)
    with pytest.raises(ValueError, match=r"a \[B\] = \[2\] tensor"):
        predict_x0("flow", output, noisy, sigmas=torch.tensor([0.1, 0.2, 0.3]))


# ---------------------------------------------------------------------------------------------------------------------
# Every spectral term is zero, with a zero gradient, at a perfect prediction, for every parametrisation
# ---------------------------------------------------------------------------------------------------------------------


def _dyadic(shape, seed):
    # values k/16 with |k| <= 32: sums and products with σ in {1/4, 1/2, 3/4} are exact in float64
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-32, 33, shape, generator=generator).double() / 16


def _perfect(parametrisation, shape):
    """(perfect model output, noisy sample, predict_x0 keyword arguments, x₀) for one parametrisation, float64."""
    x0, noise = _randn(*shape, seed=11, dtype=torch.float64), _randn(*shape, seed=12, dtype=torch.float64)
    batch = shape[0]
    if parametrisation in ("epsilon", "v_prediction", "sample"):
        scheduler = DDPMScheduler(prediction_type=parametrisation)
        timesteps = torch.tensor([10, 600])[:batch]
        noisy = scheduler.add_noise(x0, noise, timesteps)
        output = {"epsilon": noise, "v_prediction": scheduler.get_velocity(x0, noise, timesteps), "sample": x0}
        return output[parametrisation], noisy, {"scheduler": scheduler, "timesteps": timesteps}, x0
    if parametrisation == "edm":
        scheduler = EDMEulerScheduler()
        sigma = torch.tensor([0.05, 3.0], dtype=torch.float64)[:batch].reshape(-1, *([1] * (len(shape) - 1)))
        noisy = x0 + sigma * noise
        c_skip = 0.25 / (sigma**2 + 0.25)
        c_out = sigma * 0.5 / (sigma**2 + 0.25) ** 0.5
        return (x0 - c_skip * noisy) / c_out, noisy, {"scheduler": scheduler, "sigmas": sigma}, x0
    # flow: dyadic x₀, ε and σ make x_t − σ·(ε − x₀) = x₀ exact, so the check needs no tolerance at all
    x0, noise = _dyadic(shape, 13), _dyadic(shape, 14)
    sigmas = torch.tensor([0.25, 0.75], dtype=torch.float64)[:batch]
    noisy = fm.add_noise(x0, noise, sigmas)
    velocity = fm.velocity(x0, noise)
    if parametrisation == "flow":
        return velocity, noisy, {"sigmas": sigmas}, x0
    # the SD3 scripts' preconditioning of a perfect velocity
    return velocity * (-sigmas.reshape(-1, *([1] * (len(shape) - 1)))) + noisy, noisy, {}, x0


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("parametrisation", PARAMETRISATIONS)
def test_every_spectral_term_is_zero_with_zero_gradient_at_a_perfect_prediction(parametrisation, name):
    shape = (2, 1, 256) if name == "mrstft" else (2, 3, 8, 8)
    output, noisy, kwargs, x0 = _perfect(parametrisation, shape)
    loss = _loss(name)

    # 1. x̂₀ = x₀ and L(x̂₀, x₀) = 0 to float64 tolerance (exactly for the flow forms, built from dyadic numbers)
    x0_hat = predict_x0(parametrisation, output, noisy, **kwargs)
    assert x0_hat.dtype == torch.float64
    if parametrisation in ("flow", "flow_preconditioned"):
        assert torch.equal(x0_hat, x0)
    assert (x0_hat - x0).abs().max() < 1e-12
    assert loss(x0_hat, x0).abs().max() < 1e-10

    # 2. the gradient with respect to the model output is exactly 0 there. L1 terms have a kink at zero error, so a
    #    rounding-level difference would give a full-size sign gradient: the target is x̂₀ of the perfect output (equal
    #    to x₀ within 1e-12, step 1), which for the flow forms is x₀ itself.
    output = output.clone().requires_grad_(True)
    target = x0 if parametrisation in ("flow", "flow_preconditioned") else x0_hat.detach()
    term = loss(predict_x0(parametrisation, output, noisy, **kwargs), target)
    assert torch.equal(term, torch.zeros_like(term))
    (gradient,) = torch.autograd.grad(term.sum(), output)
    assert torch.equal(gradient, torch.zeros_like(gradient))

    # 3. away from the perfect prediction the same term and gradient are not zero (the check above can fail)
    perturbed = (output.detach() + 0.1 * _randn(*shape, seed=15, dtype=torch.float64)).requires_grad_(True)
    term = loss(predict_x0(parametrisation, perturbed, noisy, **kwargs), target)
    (gradient,) = torch.autograd.grad(term.sum(), perturbed)
    assert (term > 1e-6).all() and gradient.abs().max() > 0


@pytest.mark.parametrize("name", IMAGE_LOSSES)
def test_dividing_by_one_minus_sigma_breaks_the_perfect_prediction_property(name):
    """The error of an open trainer, (x_t − σ·v̂)/(1 − σ) compared with x₀, is not zero at a perfect velocity."""
    output, noisy, kwargs, x0 = _perfect("flow", (2, 3, 8, 8))
    sigma = kwargs["sigmas"].reshape(2, 1, 1, 1)
    wrong = (noisy - sigma * output) / (1 - sigma)
    assert (_loss(name)(wrong, x0) > 1e-3).all()


# ---------------------------------------------------------------------------------------------------------------------
# The scripts' timestep sampling, shift and base-loss weighting
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["logit_normal", "mode", "uniform", "none", "sigma_sqrt", "cosmap"])
def test_density_draws_what_diffusers_draws_with_the_same_generator(scheme):
    ours = fm.density_for_timestep_sampling(
        scheme, 64, logit_mean=0.3, logit_std=1.2, mode_scale=1.29, generator=torch.Generator().manual_seed(5)
    )
    theirs = compute_density_for_timestep_sampling(
        scheme, 64, logit_mean=0.3, logit_std=1.2, mode_scale=1.29, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(ours, theirs)


def test_density_errors():
    with pytest.raises(ValueError, match="sigma_sqrt, logit_normal, mode, cosmap, none"):
        fm.density_for_timestep_sampling("lognorm", 4)
    with pytest.raises(ValueError, match="monotone"):
        fm.density_for_timestep_sampling("mode", 4, mode_scale=2.0)
    with pytest.raises(ValueError, match="logit_std >= 0"):
        fm.density_for_timestep_sampling("logit_normal", 4, logit_std=-1.0)


def test_logit_normal_density_has_the_requested_logit_moments():
    n, mean, std = 40_000, 0.5, 1.5
    u = fm.density_for_timestep_sampling(
        "logit_normal", n, logit_mean=mean, logit_std=std, generator=torch.Generator().manual_seed(0)
    ).double()
    logit = torch.log(u / (1 - u))
    assert abs(logit.mean().item() - mean) < 5 * std / math.sqrt(n)
    assert abs(logit.std().item() - std) < 5 * std / math.sqrt(2 * n)


def _mode_inverse(t: float, s: float) -> float:
    # f_mode is decreasing on [0, 1] for s in range: bisection for f_mode(u) = t
    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        value = 1 - mid - s * (math.cos(math.pi * mid / 2) ** 2 - 1 + mid)
        low, high = (mid, high) if value > t else (low, mid)
    return (low + high) / 2


def test_mode_density_has_its_closed_form_shape():
    n, s = 400_000, 1.29
    u = fm.density_for_timestep_sampling("mode", n, mode_scale=s, generator=torch.Generator().manual_seed(1)).double()
    assert u.min() >= 0 and u.max() <= 1
    # exact bin probabilities P(low <= f(U) < high) = f⁻¹(low) − f⁻¹(high), U uniform
    for low, high in [(0.0, 0.05), (0.45, 0.55), (0.95, 1.0)]:
        expected = _mode_inverse(low, s) - _mode_inverse(high, s)
        observed = ((u >= low) & (u < high)).double().mean().item()
        assert abs(observed - expected) < 5 * math.sqrt(expected * (1 - expected) / n)
    # the density 1/|f'(u)|: 1/(1 − s(π/2 − 1)) ≈ 3.8 at 1/2 and 1/(1 + s) ≈ 0.44 at both ends, from narrow bins
    middle = ((u - 0.5).abs() < 0.01).double().mean().item() / 0.02
    ends = ((u < 0.02) | (u > 0.98)).double().mean().item() / 0.04
    assert middle == pytest.approx(1 / (1 - s * (math.pi / 2 - 1)), rel=0.05)
    assert ends == pytest.approx(1 / (1 + s), rel=0.05)
    # scale 0 is the uniform 1 − r exactly
    zero = fm.density_for_timestep_sampling("mode", 16, mode_scale=0.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(zero, 1 - torch.rand(16, generator=torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_shift_and_sampled_sigmas_are_the_schedulers(shift):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    base = torch.arange(1000, 0, -1, dtype=torch.float32) / 1000
    assert torch.equal(fm.shift_sigmas(base, shift), scheduler.sigmas)
    for scheme in ("logit_normal", "mode", "none"):
        ours = fm.sample_sigmas(scheme, 256, shift=shift, generator=torch.Generator().manual_seed(3))
        # the scripts: u, then noise_scheduler_copy.timesteps[indices] and get_sigmas(timesteps)
        u = compute_density_for_timestep_sampling(
            scheme, 256, logit_mean=0.0, logit_std=1.0, mode_scale=1.29, generator=torch.Generator().manual_seed(3)
        )
        indices = (u * scheduler.config.num_train_timesteps).long()
        assert torch.equal(ours, scheduler.sigmas[indices])
        torch.testing.assert_close(fm.sigmas_from_timesteps(scheduler.timesteps[indices]), ours)
        assert ours.min() >= fm.shift_sigmas(torch.tensor(0.001), shift) and ours.max() <= 1


def test_sampled_sigmas_follow_the_scripts_direction():
    """The scripts' σ ≈ 1 − u: logit_mean = +1 with std 1 puts P(σ < 1/2) = Φ(1) of the samples at low noise."""
    n = 20_000
    sigmas = fm.sample_sigmas("logit_normal", n, logit_mean=1.0, generator=torch.Generator().manual_seed(4))
    phi_1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    assert abs((sigmas < 0.5).double().mean().item() - phi_1) < 5 * math.sqrt(phi_1 * (1 - phi_1) / n)


@pytest.mark.parametrize("scheme", ["sigma_sqrt", "cosmap", "none", "logit_normal", "mode"])
def test_loss_weighting_is_diffusers_and_its_closed_form(scheme):
    sigmas = torch.tensor([0.001, 0.25, 0.5, 0.9, 1.0]).reshape(5, 1, 1, 1)
    ours = fm.loss_weighting(scheme, sigmas)
    torch.testing.assert_close(ours, compute_loss_weighting_for_sd3(scheme, sigmas), rtol=0, atol=0)
    half = fm.loss_weighting(scheme, 0.5).item()
    assert half == pytest.approx({"sigma_sqrt": 4.0, "cosmap": 4 / math.pi}.get(scheme, 1.0))
    with pytest.raises(ValueError, match="expected one of"):
        fm.loss_weighting("sigma", sigmas)


def test_add_noise_and_velocity_are_the_schedulers_forward_process():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    x0, noise = _randn(2, 4, 4, 4, seed=20), _randn(2, 4, 4, 4, seed=21)
    timesteps = scheduler.timesteps[torch.tensor([10, 700])]
    expected = scheduler.scale_noise(x0, timesteps, noise)
    torch.testing.assert_close(fm.add_noise(x0, noise, scheduler.sigmas[torch.tensor([10, 700])]), expected)
    torch.testing.assert_close(fm.velocity(x0, noise), noise - x0)


# ---------------------------------------------------------------------------------------------------------------------
# Spectral weightings and gates in σ units
# ---------------------------------------------------------------------------------------------------------------------


def test_spectral_weights_closed_forms():
    sigmas = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    snr = torch.tensor([16.0, 1.0, 1 / 16], dtype=torch.float64)
    torch.testing.assert_close(fm.flow_snr(sigmas), snr)
    expected = {
        "alpha_bar": snr / (1 + snr),
        "sqrt_snr": torch.tensor([4.0, 1.0, 0.25], dtype=torch.float64),
        "min_sqrt_snr": torch.tensor([2.0, 1.0, 0.25], dtype=torch.float64),  # γ = 2
        "constant": torch.ones(3, dtype=torch.float64),
        "edm": 4 + snr,  # 1/σ_data² + SNR, σ_data = 0.5
        "snr": snr,
        "min_snr": torch.tensor([2.0, 1.0, 1 / 16], dtype=torch.float64),
        "velocity": 1 / sigmas,
    }
    assert set(expected) == set(fm.FLOW_WEIGHTINGS)
    for kind, values in expected.items():
        torch.testing.assert_close(fm.spectral_weight(kind, sigmas, min_snr_gamma=2.0), values)
    torch.testing.assert_close(fm.spectral_weight("velocity", sigmas), 1 + fm.spectral_weight("sqrt_snr", sigmas))
    # the ends: σ = 1 (pure noise, SNR 0) and σ = 0 (clean)
    ends = torch.tensor([1.0, 0.0])
    torch.testing.assert_close(fm.spectral_weight("alpha_bar", ends), torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(fm.spectral_weight("edm", ends[:1]), torch.tensor([4.0]))
    torch.testing.assert_close(fm.spectral_weight("min_sqrt_snr", ends[1:]), torch.tensor([5.0]))
    with pytest.raises(ValueError, match="alpha_bar, sqrt_snr"):
        fm.spectral_weight("sigma_sqrt", sigmas)


@pytest.mark.parametrize("kind", WEIGHTINGS)
def test_spectral_weights_mean_what_they_mean_for_edm_and_ddpm(kind):
    """At equal SNR a flow sample gets the weight an EDM sample (σ_VE = σ/(1 − σ)) or a DDPM timestep gets."""
    sigmas = torch.tensor([0.05, 0.3, 0.5, 0.7, 0.95], dtype=torch.float64)
    edm = timestep_weight(kind, EDMEulerScheduler(sigma_data=0.5), fm.ve_sigma(sigmas), min_snr_gamma=3.0)
    torch.testing.assert_close(fm.spectral_weight(kind, sigmas, min_snr_gamma=3.0), edm.double())
    ddpm = DDPMScheduler()
    timesteps = torch.tensor([5, 100, 400, 800, 990])
    a = ddpm.alphas_cumprod[timesteps].double()
    flow_sigmas = fm.sigma_from_snr(a / (1 - a))
    expected = timestep_weight(kind, ddpm, timesteps, min_snr_gamma=3.0).double()
    torch.testing.assert_close(fm.spectral_weight(kind, flow_sigmas, min_snr_gamma=3.0), expected, rtol=1e-5, atol=0)


def test_sigma_conversions_are_inverse():
    sigmas = torch.tensor([0.01, 0.5, 0.99], dtype=torch.float64)
    torch.testing.assert_close(fm.sigma_from_ve(fm.ve_sigma(sigmas)), sigmas)
    torch.testing.assert_close(fm.sigma_from_snr(fm.flow_snr(sigmas)), sigmas)
    assert fm.sigma_from_ve(1.0).item() == 0.5 and fm.ve_sigma(0.5).item() == 1.0


def test_sigma_gate_and_sigmoid_fade():
    sigmas = torch.tensor([0.0, 0.69, 0.7, 0.71, 1.0])
    assert fm.sigma_gate(sigmas, 0.7).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        fm.sigma_gate(sigmas, 1.5)
    fade = fm.sigmoid_fade(torch.tensor([0.7, 0.5, 0.9]), cutoff=0.7, width=0.4)
    torch.testing.assert_close(fade, torch.sigmoid(torch.tensor([0.0, 2.0, -2.0])))
    grid = torch.linspace(0, 1, 101)
    # the defaults are the wavelet-loss library's sigmoid(10·((1 − σ) − 0.3))
    torch.testing.assert_close(fm.sigmoid_fade(grid), torch.sigmoid(10 * ((1 - grid) - 0.3)))
    assert (fm.sigmoid_fade(grid).diff() < 0).all()
    with pytest.raises(ValueError, match="width > 0"):
        fm.sigmoid_fade(grid, width=0.0)


# ---------------------------------------------------------------------------------------------------------------------
# Flux's packed latents
# ---------------------------------------------------------------------------------------------------------------------


def test_pack_and_unpack_are_fluxs_layout_and_invert_each_other():
    from diffusers.pipelines.flux.pipeline_flux import FluxPipeline

    latents = _randn(2, 3, 4, 6, seed=30)  # H != W, so a swapped axis shows
    packed = fm.pack_latents(latents)
    assert packed.shape == (2, 6, 12)
    assert torch.equal(packed, FluxPipeline._pack_latents(latents, 2, 3, 4, 6))
    assert torch.equal(fm.unpack_latents(packed, 4, 6), latents)
    # Diffusers' unpack takes the pixel size and the VAE factor
    assert torch.equal(FluxPipeline._unpack_latents(packed, 4 * 8, 6 * 8, 8), latents)
    # token (i, j) is the 2x2 patch at rows 2i, 2i+1 and columns 2j, 2j+1, channel-major
    assert torch.equal(packed[:, 1 * 3 + 2].reshape(2, 3, 2, 2), latents[:, :, 2:4, 4:6])
    with pytest.raises(ValueError, match="even"):
        fm.pack_latents(_randn(1, 3, 5, 4))
    with pytest.raises(ValueError, match=r"\[B, 6, 4C\]"):
        fm.unpack_latents(packed[:, :5], 4, 6)


def test_hook_on_packed_latents_equals_the_unpacked_computation():
    spectral = FlowSpectralRegularizer.from_names(["amplitude_phase", "wavelet"], wave="haar", levels=1)
    x0, noise = _randn(2, 4, 4, 6, seed=31), _randn(2, 4, 4, 6, seed=32)
    sigmas = torch.tensor([0.3, 0.6])
    noisy = fm.add_noise(x0, noise, sigmas)
    velocity = fm.velocity(x0, noise) + 0.05 * _randn(2, 4, 4, 6, seed=33)
    base = torch.zeros(2)
    unpacked = spectral(velocity, noisy, sigmas, x0, base)
    packed = spectral(
        fm.pack_latents(velocity), fm.pack_latents(noisy), sigmas, fm.pack_latents(x0), base, latent_shape=(4, 6)
    )
    for name in ("amplitude_phase", "wavelet", "loss"):
        torch.testing.assert_close(packed[name], unpacked[name])
        assert (unpacked[name] > 0).all()
    perfect = spectral(
        fm.pack_latents(fm.velocity(x0, noise)),
        fm.pack_latents(noisy),
        sigmas,
        fm.pack_latents(x0),
        base,
        latent_shape=(4, 6),
    )
    assert perfect["loss"].abs().max() < 1e-5
    with pytest.raises(ValueError, match="latent_shape"):
        spectral(fm.pack_latents(velocity), fm.pack_latents(noisy), sigmas, fm.pack_latents(x0), base)


# ---------------------------------------------------------------------------------------------------------------------
# The hook: weights, gates, decoded space, and the SD3 loop on a tiny transformer
# ---------------------------------------------------------------------------------------------------------------------


def test_hook_terms_are_the_regularizers_losses_weighted_in_sigma_units():
    spectral = FlowSpectralRegularizer.from_names(["amplitude", "wavelet"], [0.5, 2.0], weighting="sqrt_snr", levels=2)
    x0, noise = _randn(3, 2, 8, 8, seed=40), _randn(3, 2, 8, 8, seed=41)
    sigmas = torch.tensor([0.2, 0.5, 0.8])
    noisy = fm.add_noise(x0, noise, sigmas)
    velocity = _randn(3, 2, 8, 8, seed=42)
    base = torch.tensor([1.0, 2.0, 3.0])
    terms = spectral(velocity, noisy, sigmas.reshape(3, 1, 1, 1), x0, base)
    x0_hat = noisy - sigmas.reshape(3, 1, 1, 1) * velocity
    amplitude, wavelet = _loss("amplitude")(x0_hat, x0), _loss("wavelet")(x0_hat, x0)
    torch.testing.assert_close(terms["amplitude"], amplitude)
    torch.testing.assert_close(terms["wavelet"], wavelet)
    weight = torch.tensor([4.0, 1.0, 0.25])  # (1 − σ)/σ
    torch.testing.assert_close(terms["loss"], base + weight * (0.5 * amplitude + 2.0 * wavelet))
    assert set(terms) == {"base", "amplitude", "wavelet", "loss"}


def test_hook_gates_and_defaults():
    sigmas = torch.tensor([0.2, 0.49, 0.51, 0.9])
    # the regularizer's weighting name carries over, in flow SNR terms
    default = FlowSpectralRegularizer(SpectralRegularizer.from_names(["amplitude"]))
    assert default.weighting == "alpha_bar"
    torch.testing.assert_close(default.term_weight(sigmas), fm.spectral_weight("alpha_bar", sigmas))
    # hard gate in flow units, and the regularizer's VE gate σ_VE <= 1 read as flow σ <= 1/2
    gated = FlowSpectralRegularizer(SpectralRegularizer.from_names(["amplitude"]), "constant", sigma_max=0.9)
    assert gated.term_weight(sigmas).tolist() == [1.0, 1.0, 1.0, 1.0]  # the bound is kept
    gated = FlowSpectralRegularizer(SpectralRegularizer.from_names(["amplitude"]), "constant", sigma_max=0.3)
    assert gated.term_weight(sigmas).tolist() == [1.0, 0.0, 0.0, 0.0]
    ve = FlowSpectralRegularizer(SpectralRegularizer.from_names(["amplitude"], gate_sigma_max=1.0), "constant")
    assert ve.sigma_max == 0.5 and ve.term_weight(sigmas).tolist() == [1.0, 1.0, 0.0, 0.0]
    both = FlowSpectralRegularizer(SpectralRegularizer.from_names(["amplitude"], gate_sigma_max=1.0), sigma_max=0.3)
    assert both.sigma_max == 0.3
    faded = FlowSpectralRegularizer(SpectralRegularizer.from_names(["amplitude"]), "constant", fade_cutoff=0.5)
    torch.testing.assert_close(faded.term_weight(sigmas), fm.sigmoid_fade(sigmas, 0.5, 0.4))
    with pytest.raises(ValueError, match="gate_t_max"):
        FlowSpectralRegularizer(SpectralRegularizer.from_names(["amplitude"], gate_t_max=200))
    with pytest.raises(ValueError, match="velocity"):
        FlowSpectralRegularizer(SpectralRegularizer.from_names(["amplitude"]), weighting="cosmap")
    # gated-off samples add exactly nothing, and no loss at all returns the base loss
    x0, noise = _randn(4, 1, 8, 8, seed=43), _randn(4, 1, 8, 8, seed=44)
    noisy = fm.add_noise(x0, noise, sigmas)
    terms = ve(_randn(4, 1, 8, 8, seed=45), noisy, sigmas, x0, torch.zeros(4))
    assert terms["loss"][2:].tolist() == [0.0, 0.0] and (terms["loss"][:2] > 0).all()
    empty = FlowSpectralRegularizer(SpectralRegularizer.from_names([]))
    base = torch.ones(4)
    assert empty(noise, noisy, sigmas, x0, base)["loss"] is base


def _tiny_vae():
    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=[8],
        down_block_types=["DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D"],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=8,
    ).eval()


def test_hook_in_decoded_space():
    vae = _tiny_vae().requires_grad_(False)

    def decode(latents):
        return vae.decode(latents).sample

    spectral = FlowSpectralRegularizer.from_names(["amplitude_weighted_phase"], weighting="constant", decoder=decode)
    x0, noise = _randn(2, 4, 8, 8, seed=50), _randn(2, 4, 8, 8, seed=51)
    sigmas = torch.tensor([0.25, 0.75])
    noisy = fm.add_noise(x0, noise, sigmas)
    velocity = (fm.velocity(x0, noise) + 0.1 * _randn(2, 4, 8, 8, seed=52)).requires_grad_(True)
    terms = spectral(velocity, noisy, sigmas, x0, torch.zeros(2))
    x0_hat = noisy - sigmas.reshape(2, 1, 1, 1) * velocity.detach()
    with torch.no_grad():
        expected = _loss("amplitude_weighted_phase")(decode(x0_hat), decode(x0))
    torch.testing.assert_close(terms["amplitude_weighted_phase"], expected)
    terms["loss"].sum().backward()
    assert velocity.grad.abs().max() > 0 and torch.isfinite(velocity.grad).all()
    # a perfect velocity decodes to the same image: zero term
    perfect = spectral(fm.velocity(x0, noise), noisy, sigmas, x0, torch.zeros(2))
    assert perfect["amplitude_weighted_phase"].abs().max() < 1e-5


def _tiny_sd3():
    torch.manual_seed(0)
    return SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        caption_projection_dim=16,
        pooled_projection_dim=16,
        out_channels=4,
    )


@pytest.mark.parametrize("precondition_outputs", [True, False])
def test_sd3_loop_on_a_tiny_transformer(precondition_outputs):
    """The SD3 DreamBooth/LoRA loop, step by step, with the hook in place of its loss; backward included."""
    transformer = _tiny_sd3()
    noise_scheduler_copy = FlowMatchEulerDiscreteScheduler(shift=3.0)
    spectral = FlowSpectralRegularizer.from_names(["amplitude_phase", "wavelet"], levels=2)
    generator = torch.Generator().manual_seed(60)
    model_input = torch.randn(2, 4, 8, 8, generator=generator)
    prompt_embeds = torch.randn(2, 5, 16, generator=generator)
    pooled_prompt_embeds = torch.randn(2, 16, generator=generator)

    # the script: noise, u, indices into the scheduler copy's timesteps, get_sigmas, noisy_model_input
    noise = torch.randn(model_input.shape, generator=generator)
    u = compute_density_for_timestep_sampling("logit_normal", 2, 0.0, 1.0, 1.29, generator=generator)
    indices = (u * noise_scheduler_copy.config.num_train_timesteps).long()
    timesteps = noise_scheduler_copy.timesteps[indices]
    sigmas = noise_scheduler_copy.sigmas[indices].reshape(2, 1, 1, 1)
    noisy_model_input = (1.0 - sigmas) * model_input + sigmas * noise
    raw = transformer(
        hidden_states=noisy_model_input,
        timestep=timesteps,
        encoder_hidden_states=prompt_embeds,
        pooled_projections=pooled_prompt_embeds,
        return_dict=False,
    )[0]
    if precondition_outputs:
        model_pred, target = raw * (-sigmas) + noisy_model_input, model_input
    else:
        model_pred, target = raw, noise - model_input
    weighting = compute_loss_weighting_for_sd3("logit_normal", sigmas)
    base = (weighting.float() * (model_pred.float() - target.float()) ** 2).reshape(2, -1).mean(1)

    terms = spectral(
        model_pred, noisy_model_input, sigmas, model_input, base, precondition_outputs=precondition_outputs
    )

    # the terms are the losses on x̂₀ = x_t − σ·(raw output), whichever form the script holds
    x0_hat = (noisy_model_input - sigmas * raw).detach()
    torch.testing.assert_close(terms["wavelet"], _loss("wavelet")(x0_hat, model_input), rtol=1e-5, atol=1e-6)
    weight = fm.spectral_weight("alpha_bar", sigmas.flatten())
    spectral_part = weight * (terms["amplitude_phase"] + terms["wavelet"])
    torch.testing.assert_close(terms["loss"], base + spectral_part)
    assert (spectral_part > 0).all()

    # backward: the spectral part alone reaches the transformer's weights, and changes the total gradient
    params = [p for p in transformer.parameters() if p.requires_grad]
    spectral_grads = torch.autograd.grad(spectral_part.mean(), params, retain_graph=True, allow_unused=True)
    assert any(g is not None and g.abs().max() > 0 for g in spectral_grads)
    terms["loss"].mean().backward()
    grads = [p.grad for p in params if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert transformer.proj_out.weight.grad.abs().max() > 0
