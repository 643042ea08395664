import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    EulerDiscreteScheduler,
)

from diffusers_specreg.reconstruction import (
    edm_loss_weight,
    predict_original_sample,
    sigma_from_timesteps,
    snr,
)

PREDICTION_TYPES = ["epsilon", "v_prediction", "sample"]
SHAPES = [(3, 2, 4, 4), (3, 1, 8)]  # images [B, C, H, W] and waveforms [B, C, T]


def _inputs(shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_ddpm_matches_step_per_sample(prediction_type, shape):
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type, clip_sample=False)
    model_output, noisy = _inputs(shape)
    timesteps = torch.tensor([0, 417, 999])
    pred = predict_original_sample(scheduler, model_output, noisy, timesteps)
    assert pred.shape == noisy.shape and pred.dtype == torch.float32
    for i, t in enumerate(timesteps.tolist()):
        expected = scheduler.step(model_output[i : i + 1], t, noisy[i : i + 1]).pred_original_sample
        torch.testing.assert_close(pred[i : i + 1], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_ddim_matches_step_per_sample(prediction_type, shape):
    scheduler = DDIMScheduler(prediction_type=prediction_type, clip_sample=False, beta_schedule="scaled_linear")
    scheduler.set_timesteps(10)
    model_output, noisy = _inputs(shape, seed=1)
    timesteps = scheduler.timesteps[[0, 4, 9]]
    pred = predict_original_sample(scheduler, model_output, noisy, timesteps)
    for i, t in enumerate(timesteps.tolist()):
        expected = scheduler.step(model_output[i : i + 1], t, noisy[i : i + 1]).pred_original_sample
        torch.testing.assert_close(pred[i : i + 1], expected, rtol=1e-5, atol=1e-5)


def test_scalar_timestep_equals_full_batch_step():
    scheduler = DDIMScheduler(prediction_type="epsilon", clip_sample=False)
    scheduler.set_timesteps(5)
    model_output, noisy = _inputs((2, 3, 4, 4))
    t = int(scheduler.timesteps[2])
    expected = scheduler.step(model_output, t, noisy).pred_original_sample
    for timestep in (t, torch.tensor(t), torch.tensor([t])):
        torch.testing.assert_close(predict_original_sample(scheduler, model_output, noisy, timestep), expected)


def test_epsilon_reconstruction_recovers_clean_sample():
    # with the true noise, Eq. 15 of arXiv 2006.11239 inverts add_noise exactly
    scheduler = DDPMScheduler()
    clean, noise = _inputs((4, 1, 8, 8), seed=2)
    timesteps = torch.tensor([1, 100, 500, 900])
    noisy = scheduler.add_noise(clean, noise, timesteps)
    torch.testing.assert_close(predict_original_sample(scheduler, noise, noisy, timesteps), clean, atol=2e-4, rtol=0)


def test_half_precision_inputs_give_float32():
    scheduler = DDPMScheduler(clip_sample=False)
    model_output, noisy = _inputs((2, 1, 4, 4))
    timesteps = torch.tensor([3, 700])
    pred = predict_original_sample(scheduler, model_output.half(), noisy.half(), timesteps)
    assert pred.dtype == torch.float32
    expected = predict_original_sample(scheduler, model_output.half().float(), noisy.half().float(), timesteps)
    torch.testing.assert_close(pred, expected)


def test_learned_variance_output_is_split():
    scheduler = DDPMScheduler(variance_type="learned_range", clip_sample=False)
    model_output, noisy = _inputs((2, 3, 4, 4))
    extra = torch.randn(2, 3, 4, 4)
    timesteps = torch.tensor([10, 20])
    pred = predict_original_sample(scheduler, torch.cat([model_output, extra], dim=1), noisy, timesteps)
    torch.testing.assert_close(pred, predict_original_sample(scheduler, model_output, noisy, timesteps))


def test_zero_terminal_snr_stays_finite():
    scheduler = DDPMScheduler(rescale_betas_zero_snr=True)
    assert float(scheduler.alphas_cumprod[-1]) == 0.0
    model_output, noisy = _inputs((2, 1, 4, 4))
    pred = predict_original_sample(scheduler, model_output, noisy, torch.tensor([999, 0]))
    assert torch.isfinite(pred).all()


@pytest.mark.parametrize("scheduler_class", [EDMEulerScheduler, EDMDPMSolverMultistepScheduler])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("shape", SHAPES)
def test_edm_matches_precondition_outputs(scheduler_class, prediction_type, shape):
    scheduler = scheduler_class(prediction_type=prediction_type, sigma_data=0.6)
    model_output, noisy = _inputs(shape, seed=3)
    sigmas = torch.tensor([0.002, 1.3, 80.0])
    pred = predict_original_sample(scheduler, model_output, noisy, sigmas)
    for i, sigma in enumerate(sigmas):
        expected = scheduler.precondition_outputs(noisy[i : i + 1], model_output[i : i + 1], sigma)
        torch.testing.assert_close(pred[i : i + 1], expected, rtol=1e-5, atol=1e-5)
    # a scalar σ applies to the whole batch
    pred = predict_original_sample(scheduler, model_output, noisy, 0.7)
    torch.testing.assert_close(pred, scheduler.precondition_outputs(noisy, model_output, 0.7), rtol=1e-5, atol=1e-5)


def test_unsupported_scheduler_names_supported_ones():
    model_output, noisy = _inputs((2, 1, 4, 4))
    with pytest.raises(ValueError, match="DDPMScheduler.*DDIMScheduler.*EDMEulerScheduler"):
        predict_original_sample(EulerDiscreteScheduler(), model_output, noisy, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="EDMDPMSolverMultistepScheduler"):
        predict_original_sample(object(), model_output, noisy, 1)
    # EDM has no "sample" parametrisation in Diffusers' precondition_outputs
    with pytest.raises(ValueError, match="epsilon, v_prediction"):
        predict_original_sample(EDMDPMSolverMultistepScheduler(prediction_type="sample"), model_output, noisy, 1.0)


def test_shape_errors():
    scheduler = DDPMScheduler()
    model_output, noisy = _inputs((2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\[B\] = \[2\]"):
        predict_original_sample(scheduler, model_output, noisy, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="shape"):
        predict_original_sample(scheduler, model_output[:, :, :2], noisy, torch.tensor([1, 2]))


def test_sigma_and_snr_ddpm():
    scheduler = DDPMScheduler()
    timesteps = torch.tensor([0, 250, 999])
    alpha_bar = scheduler.alphas_cumprod[timesteps]
    torch.testing.assert_close(sigma_from_timesteps(scheduler, timesteps), ((1 - alpha_bar) / alpha_bar).sqrt())
    torch.testing.assert_close(snr(scheduler, timesteps), alpha_bar / (1 - alpha_bar))
    torch.testing.assert_close(
        snr(scheduler, timesteps), sigma_from_timesteps(scheduler, timesteps) ** -2, rtol=1e-4, atol=0
    )
    # VP sample divided by √ᾱ is x₀ + σ·ε (the EDM view of the same noise level)
    clean, noise = _inputs((3, 1, 4, 4))
    noisy = scheduler.add_noise(clean, noise, timesteps)
    sigma = sigma_from_timesteps(scheduler, timesteps).view(3, 1, 1, 1)
    torch.testing.assert_close(noisy / alpha_bar.sqrt().view(3, 1, 1, 1), clean + sigma * noise, rtol=1e-4, atol=1e-4)


def test_sigma_and_snr_edm():
    scheduler = EDMEulerScheduler()
    sigmas = torch.tensor([0.01, 1.0, 40.0])
    torch.testing.assert_close(sigma_from_timesteps(scheduler, sigmas), sigmas)
    torch.testing.assert_close(snr(scheduler, sigmas), 1 / sigmas**2)


def test_edm_loss_weight_is_one_over_c_out_squared():
    sigmas = torch.tensor([0.05, 1.0, 30.0])
    # λ(σ) = 1 / c_out², so λ·‖D − x₀‖² = ‖F − target‖² (NVlabs EDMLoss)
    c_out = sigmas * 0.5 / (sigmas**2 + 0.25).sqrt()
    torch.testing.assert_close(edm_loss_weight(sigmas, 0.5), 1 / c_out**2)
