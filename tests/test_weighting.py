import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, EDMEulerScheduler

from diffusers_specreg.weighting import WEIGHTINGS, low_noise_gate, timestep_weight

TIMESTEPS = torch.tensor([0, 10, 300, 999])


def test_weightings_constant():
    assert WEIGHTINGS == ("alpha_bar", "sqrt_snr", "min_sqrt_snr", "constant", "edm", "snr", "min_snr")


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_l1_weightings_equal_closed_forms(beta_schedule):
    scheduler = DDPMScheduler(beta_schedule=beta_schedule)
    timesteps = torch.tensor([0, 1, 50, 130, 400, 777, 950])
    alpha_bar = scheduler.alphas_cumprod[timesteps].double()
    sigma = ((1 - alpha_bar) / alpha_bar).sqrt()
    expected = {
        "alpha_bar": alpha_bar,
        "sqrt_snr": 1 / sigma,
        "min_sqrt_snr": torch.minimum(1 / sigma, torch.tensor(3.0, dtype=torch.float64)),
    }
    for kind, value in expected.items():
        weight = timestep_weight(kind, scheduler, timesteps, min_snr_gamma=3.0)
        torch.testing.assert_close(weight.double(), value, rtol=1e-4, atol=1e-6)


def test_l1_weightings_on_edm_sigmas():
    sigmas = torch.tensor([0.002, 0.3, 1.0, 80.0])
    scheduler = EDMEulerScheduler()
    torch.testing.assert_close(timestep_weight("alpha_bar", scheduler, sigmas), 1 / (1 + sigmas**2))
    torch.testing.assert_close(timestep_weight("sqrt_snr", scheduler, sigmas), 1 / sigmas)
    torch.testing.assert_close(
        timestep_weight("min_sqrt_snr", scheduler, sigmas, min_snr_gamma=5.0), (1 / sigmas).clamp(max=5.0)
    )


def test_sqrt_snr_turns_x0_l1_error_into_epsilon_l1_error():
    # x̂₀ − x₀ = −σ·(ε̂ − ε), so √SNR·‖x̂₀ − x₀‖₁ = ‖ε̂ − ε‖₁ per sample (SNR is the squared-error factor)
    from diffusers_specreg.reconstruction import predict_original_sample

    scheduler = DDPMScheduler(clip_sample=False)
    generator = torch.Generator().manual_seed(0)
    clean, noise, predicted = (torch.randn(4, 1, 4, 4, generator=generator) for _ in range(3))
    noisy = scheduler.add_noise(clean, noise, TIMESTEPS)
    x0_error = (predict_original_sample(scheduler, predicted, noisy, TIMESTEPS) - clean).abs().mean((1, 2, 3))
    eps_error = (predicted - noise).abs().mean((1, 2, 3))
    weight = timestep_weight("sqrt_snr", scheduler, TIMESTEPS)
    torch.testing.assert_close(weight * x0_error, eps_error, rtol=2e-3, atol=0)


def test_constant_is_one():
    weight = timestep_weight("constant", DDPMScheduler(), TIMESTEPS)
    assert weight.shape == (4,)
    torch.testing.assert_close(weight, torch.ones(4))


def test_snr_equals_alpha_bar_ratio():
    scheduler = DDIMScheduler(beta_schedule="scaled_linear")
    alpha_bar = scheduler.alphas_cumprod[TIMESTEPS]
    torch.testing.assert_close(timestep_weight("snr", scheduler, TIMESTEPS), alpha_bar / (1 - alpha_bar))


def test_snr_weight_turns_x0_error_into_epsilon_error():
    # x̂₀ − x₀ = −σ·(ε̂ − ε), so SNR·‖x̂₀ − x₀‖² = ‖ε̂ − ε‖² per sample
    from diffusers_specreg.reconstruction import predict_original_sample

    scheduler = DDPMScheduler(clip_sample=False)
    generator = torch.Generator().manual_seed(0)
    clean, noise, predicted = (torch.randn(4, 1, 4, 4, generator=generator) for _ in range(3))
    noisy = scheduler.add_noise(clean, noise, TIMESTEPS)
    x0_error = (predict_original_sample(scheduler, predicted, noisy, TIMESTEPS) - clean).pow(2).mean((1, 2, 3))
    eps_error = (predicted - noise).pow(2).mean((1, 2, 3))
    torch.testing.assert_close(timestep_weight("snr", scheduler, TIMESTEPS) * x0_error, eps_error, rtol=2e-3, atol=0)


def test_min_snr_clips_at_gamma():
    scheduler = DDPMScheduler()
    alpha_bar = scheduler.alphas_cumprod[TIMESTEPS]
    weight = timestep_weight("min_snr", scheduler, TIMESTEPS, min_snr_gamma=5.0)
    torch.testing.assert_close(weight, torch.minimum(alpha_bar / (1 - alpha_bar), torch.tensor(5.0)))
    assert weight[0] == 5.0 and weight[-1] < 5.0
    with pytest.raises(ValueError, match="min_snr_gamma"):
        timestep_weight("min_snr", scheduler, TIMESTEPS, min_snr_gamma=0.0)


def test_edm_weight_ddpm_uses_vp_sigma_and_default_sigma_data():
    scheduler = DDPMScheduler()
    alpha_bar = scheduler.alphas_cumprod[TIMESTEPS]
    sigma = ((1 - alpha_bar) / alpha_bar).sqrt()
    expected = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    torch.testing.assert_close(timestep_weight("edm", scheduler, TIMESTEPS), expected)


def test_edm_weight_edm_scheduler_uses_its_sigma_data():
    scheduler = EDMEulerScheduler(sigma_data=0.7)
    sigmas = torch.tensor([0.002, 0.5, 80.0])
    expected = (sigmas**2 + 0.49) / (sigmas * 0.7) ** 2
    torch.testing.assert_close(timestep_weight("edm", scheduler, sigmas), expected)


def test_unknown_kind_lists_allowed():
    with pytest.raises(ValueError, match="alpha_bar, sqrt_snr, min_sqrt_snr, constant, edm, snr, min_snr"):
        timestep_weight("p2", DDPMScheduler(), TIMESTEPS)


def test_gate_t_max():
    scheduler = DDPMScheduler()
    torch.testing.assert_close(low_noise_gate(scheduler, TIMESTEPS), torch.ones(4))
    torch.testing.assert_close(low_noise_gate(scheduler, TIMESTEPS, t_max=300), torch.tensor([1.0, 1.0, 1.0, 0.0]))
    torch.testing.assert_close(low_noise_gate(scheduler, TIMESTEPS, t_max=9), torch.tensor([1.0, 0.0, 0.0, 0.0]))


def test_gate_sigma_max_ddpm_and_edm():
    scheduler = DDPMScheduler()
    alpha_bar = scheduler.alphas_cumprod[TIMESTEPS]
    sigma = ((1 - alpha_bar) / alpha_bar).sqrt()
    gate = low_noise_gate(scheduler, TIMESTEPS, sigma_max=1.0)
    torch.testing.assert_close(gate, (sigma <= 1.0).float())
    assert gate.tolist() == [1.0, 1.0, 0.0, 0.0]
    edm = EDMEulerScheduler()
    sigmas = torch.tensor([0.1, 2.0, 2.5, 50.0])
    assert low_noise_gate(edm, sigmas, sigma_max=2.0).tolist() == [1.0, 1.0, 0.0, 0.0]


def test_gate_t_max_rejected_for_edm():
    with pytest.raises(ValueError, match="sigma_max"):
        low_noise_gate(EDMEulerScheduler(), torch.tensor([0.5]), t_max=100)
