"""The training objectives reproduce the anchor script's loss (DDPM) and the EDM loss of arXiv 2206.00364."""

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, EDMEulerScheduler

from diffusers_specreg.noise import NoiseSpectrum
from diffusers_specreg.objectives import DDPMObjective, EDMObjective, build_objective


def clean_batch(batch_size=4, channels=1, size=8):
    return torch.rand(batch_size, channels, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddpm_batch_and_loss_match_train_unconditional(prediction_type):
    scheduler = DDPMScheduler(num_train_timesteps=100, prediction_type=prediction_type)
    objective = DDPMObjective(scheduler)
    clean = clean_batch()
    batch = objective.noise_batch(clean, torch.Generator().manual_seed(0))
    # the anchor: noisy = add_noise(clean, noise, t); the UNet sees (noisy, t)
    torch.testing.assert_close(batch.noisy, scheduler.add_noise(clean, batch.noise, batch.timesteps))
    assert torch.equal(batch.model_input, batch.noisy) and torch.equal(batch.model_timesteps, batch.timesteps)
    model_output = torch.randn_like(clean)
    base = objective.base_loss(model_output, batch)
    assert base.shape == (4,)
    if prediction_type == "epsilon":
        expected = F.mse_loss(model_output, batch.noise, reduction="none").mean((1, 2, 3))
    elif prediction_type == "v_prediction":
        velocity = scheduler.get_velocity(clean, batch.noise, batch.timesteps)
        expected = F.mse_loss(model_output, velocity, reduction="none").mean((1, 2, 3))
    else:  # SNR-weighted MSE on x0, as train_unconditional.py
        alpha = scheduler.alphas_cumprod[batch.timesteps]
        expected = (alpha / (1 - alpha)) * F.mse_loss(model_output, clean, reduction="none").mean((1, 2, 3))
    torch.testing.assert_close(base, expected)
    # the anchor's scalar loss is the mean of these per-sample values
    if prediction_type == "epsilon":
        torch.testing.assert_close(base.mean(), F.mse_loss(model_output, batch.noise))


def test_seeded_generator_reproduces_noise_and_timesteps():
    objective = DDPMObjective(DDPMScheduler(num_train_timesteps=100))
    a = objective.noise_batch(clean_batch(), torch.Generator().manual_seed(3))
    b = objective.noise_batch(clean_batch(), torch.Generator().manual_seed(3))
    assert torch.equal(a.noise, b.noise) and torch.equal(a.timesteps, b.timesteps)


def test_coloured_noise_is_the_epsilon_target():
    spectrum = NoiseSpectrum.parse("powerlaw:alpha=-1")
    objective = DDPMObjective(
        DDPMScheduler(num_train_timesteps=100),
        noise_fn=lambda shape, gen, device: spectrum.sample(shape, generator=gen, device=device),
    )
    batch = objective.noise_batch(clean_batch(size=16), torch.Generator().manual_seed(0))
    assert torch.equal(batch.target, batch.noise)
    # low frequencies carry more energy than high ones for alpha < 0
    power = torch.fft.fft2(batch.noise, norm="ortho").abs() ** 2
    assert power[..., 1, 1].mean() > 5 * power[..., 8, 8].mean()


def test_edm_loss_is_weighted_denoiser_error():
    scheduler = EDMEulerScheduler(sigma_data=0.5)
    objective = EDMObjective(scheduler)
    clean = clean_batch()
    batch = objective.noise_batch(clean, torch.Generator().manual_seed(0))
    sigma = batch.timesteps.view(-1, 1, 1, 1)
    torch.testing.assert_close(batch.noisy, clean + sigma * batch.noise)
    torch.testing.assert_close(batch.model_input, batch.noisy / (sigma**2 + 0.25).sqrt())
    torch.testing.assert_close(batch.model_timesteps, 0.25 * batch.timesteps.log())
    model_output = torch.randn_like(clean)
    denoised = scheduler.precondition_outputs(batch.noisy, model_output, sigma)
    weight = (batch.timesteps**2 + 0.25) / (batch.timesteps * 0.5) ** 2
    expected = weight * ((denoised - clean) ** 2).mean((1, 2, 3))
    torch.testing.assert_close(objective.base_loss(model_output, batch), expected)


def test_unknown_formulation_names_the_choices():
    with pytest.raises(ValueError, match="'ddpm', 'ddim', 'edm' or 'flow'"):
        build_objective("consistency", DDPMScheduler())
