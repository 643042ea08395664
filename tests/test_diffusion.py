"""The objectives of `diffusers_specreg.diffusion` give the numbers the pre-issue-20 code gave, bit for bit."""

import pytest
import torch
from diffusers import DDPMScheduler, EDMDPMSolverMultistepScheduler, EDMEulerScheduler

from diffusers_specreg import SpectralRegularizer
from diffusers_specreg.diffusion.ddpm import MIN_ALPHA_BAR, DDPMObjective, vp_noise_levels
from diffusers_specreg.diffusion.edm import EDMObjective, edm_x0_hat
from diffusers_specreg.diffusion.schedulers import (
    low_noise_gate,
    predict_original_sample,
    sigma_from_timesteps,
    snr,
    timestep_weight,
)
from diffusers_specreg.diffusion.weighting import WEIGHTINGS, noise_gate, spectral_weight
from diffusers_specreg.pipeline_kernels import predicted_original_sample


def old_edm_x0_hat(scheduler, model_output, noisy, sigma):
    """The hand-written EDM denoiser of `reconstruction.py` at 3769971 (before issue 20)."""
    dtype = torch.promote_types(torch.promote_types(torch.float32, model_output.dtype), noisy.dtype)
    sigma = torch.as_tensor(sigma, device=noisy.device).to(dtype).reshape(-1, *([1] * (noisy.ndim - 1)))
    sigma_data = float(scheduler.config.sigma_data)
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2) ** 0.5
    if scheduler.config.prediction_type == "v_prediction":
        c_out = -c_out
    return c_skip * noisy.to(dtype) + c_out * model_output.to(dtype)


@pytest.mark.parametrize("scheduler_class", [EDMEulerScheduler, EDMDPMSolverMultistepScheduler])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_edm_x0_hat_through_precondition_outputs_equals_the_old_formula(scheduler_class, prediction_type, dtype):
    scheduler = scheduler_class(sigma_data=0.5, prediction_type=prediction_type)
    generator = torch.Generator().manual_seed(0)
    noisy = (torch.randn(5, 3, 8, 8, generator=generator) * 3).to(dtype)
    model_output = torch.randn(5, 3, 8, 8, generator=generator).to(dtype)
    sigma = (torch.randn(5, generator=generator) * 1.2 - 1.2).exp()
    new = edm_x0_hat(scheduler, model_output, noisy, sigma)
    assert torch.equal(new, old_edm_x0_hat(scheduler, model_output, noisy, sigma))  # bit-identical, not 1 ulp
    assert torch.equal(predict_original_sample(scheduler, model_output, noisy, sigma), new)


def test_edm_objective_x0_hat_is_computed_once_and_reused_by_the_base_loss():
    scheduler = EDMEulerScheduler(sigma_data=0.5)
    objective = EDMObjective(scheduler)
    clean = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    batch = objective.noise_batch(clean, torch.Generator().manual_seed(0))
    model_output = torch.randn_like(clean)
    x0_hat = objective.x0_hat(model_output, batch)
    assert torch.equal(x0_hat, old_edm_x0_hat(scheduler, model_output, batch.noisy, batch.timesteps))
    assert torch.equal(objective.base_loss(model_output, batch, x0_hat), objective.base_loss(model_output, batch))
    assert torch.equal(batch.levels.t, batch.levels.sigma) and torch.equal(batch.sigma, batch.timesteps)
    assert torch.equal(batch.levels.snr, batch.sigma**-2) and batch.alpha_bar is None
    assert batch.levels.sigma_data == 0.5


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_ddpm_levels_and_x0_hat_equal_the_scheduler_facade(prediction_type):
    scheduler = DDPMScheduler(num_train_timesteps=100, prediction_type=prediction_type)
    objective = DDPMObjective(scheduler)
    clean = torch.rand(6, 2, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    batch = objective.noise_batch(clean, torch.Generator().manual_seed(0))
    model_output = torch.randn_like(clean)
    assert batch.timesteps.dtype == torch.int64 and torch.equal(batch.timesteps, batch.model_timesteps)
    assert torch.equal(batch.sigma, sigma_from_timesteps(scheduler, batch.timesteps))
    assert torch.equal(batch.levels.snr, snr(scheduler, batch.timesteps))
    assert torch.equal(batch.alpha_bar, scheduler.alphas_cumprod[batch.timesteps])
    x0_hat = objective.x0_hat(model_output, batch)
    assert torch.equal(x0_hat, predict_original_sample(scheduler, model_output, batch.noisy, batch.timesteps))
    alpha = scheduler.alphas_cumprod[batch.timesteps].reshape(-1, 1, 1, 1)
    assert torch.equal(x0_hat, predicted_original_sample(batch.noisy, model_output, alpha, prediction_type))


def test_vp_levels_floor_alpha_bar_for_sigma_and_snr_but_not_for_alpha_bar():
    scheduler = DDPMScheduler(num_train_timesteps=10, rescale_betas_zero_snr=True)
    timesteps = torch.tensor([0, 9])
    levels = vp_noise_levels(scheduler.alphas_cumprod, timesteps)
    assert levels.alpha_bar[1] == 0  # unfloored: the "sample" base loss weight ᾱ/(1−ᾱ) is 0 at the last step
    floored = torch.tensor(MIN_ALPHA_BAR)
    assert torch.equal(levels.sigma[1], ((1 - floored) / floored) ** 0.5)
    assert torch.equal(levels.sigma, sigma_from_timesteps(scheduler, timesteps))
    assert torch.equal(levels.snr, snr(scheduler, timesteps))


@pytest.mark.parametrize("kind", WEIGHTINGS)
@pytest.mark.parametrize("objective_class", [DDPMObjective, EDMObjective])
def test_weights_of_the_levels_equal_the_scheduler_forms(kind, objective_class):
    scheduler = DDPMScheduler(num_train_timesteps=100) if objective_class is DDPMObjective else EDMEulerScheduler()
    batch = objective_class(scheduler).noise_batch(torch.zeros(8, 1, 4, 4), torch.Generator().manual_seed(0))
    levels = batch.levels
    weight = spectral_weight(kind, levels.sigma, levels.snr, 3.0, levels.sigma_data)
    assert torch.equal(weight, timestep_weight(kind, scheduler, batch.timesteps, 3.0))
    sigma_max = float(levels.sigma.median())
    gate = noise_gate(levels, sigma_max=sigma_max)
    assert torch.equal(gate, low_noise_gate(scheduler, batch.timesteps, sigma_max=sigma_max))
    if objective_class is DDPMObjective:
        assert torch.equal(noise_gate(levels, t_max=50), low_noise_gate(scheduler, batch.timesteps, t_max=50))


@pytest.mark.parametrize("objective_class", [DDPMObjective, EDMObjective])
@pytest.mark.parametrize("gate", [{}, {"gate_sigma_max": 1.0}])
def test_regularizer_terms_from_the_batch_equal_the_scheduler_facade(objective_class, gate):
    scheduler = DDPMScheduler(num_train_timesteps=100) if objective_class is DDPMObjective else EDMEulerScheduler()
    objective = objective_class(scheduler)
    clean = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    batch = objective.noise_batch(clean, torch.Generator().manual_seed(0))
    model_output = torch.randn_like(clean)
    regularizer = SpectralRegularizer.from_names(["amplitude", "wavelet"], weighting="edm", **gate)
    x0_hat = objective.x0_hat(model_output, batch)
    base = objective.base_loss(model_output, batch, x0_hat)
    new = regularizer.terms(batch, x0_hat, base)
    old = regularizer(scheduler, model_output, batch.noisy, batch.timesteps, clean, base)
    assert new.keys() == old.keys() == {"base", "amplitude", "wavelet", "loss"}
    assert all(torch.equal(new[key], old[key]) for key in new)
    assert list(regularizer.state_dict()) == list(
        SpectralRegularizer.from_names(["amplitude", "wavelet"]).state_dict()
    )


def test_regularizer_gate_t_max_needs_variance_preserving_levels():
    objective = EDMObjective(EDMEulerScheduler())
    batch = objective.noise_batch(torch.zeros(2, 1, 8, 8), torch.Generator().manual_seed(0))
    regularizer = SpectralRegularizer.from_names(["amplitude"], gate_t_max=100)
    with pytest.raises(ValueError, match="use gate_sigma_max"):
        regularizer.term_weight(batch.levels)
    levels = (
        DDPMObjective(DDPMScheduler()).noise_batch(torch.zeros(8, 1, 8, 8), torch.Generator().manual_seed(0)).levels
    )
    assert torch.equal(regularizer.term_weight(levels) > 0, (levels.t <= 100) & (levels.sigma > -1))


def test_registry_builds_each_objective_with_its_options():
    from diffusers_specreg.diffusion.registry import build_objective, objective_class, objective_names

    assert objective_names() == ["ddpm", "ddim", "edm", "flow"]
    assert objective_class("ddim") is DDPMObjective
    assert type(build_objective("ddim", DDPMScheduler())) is DDPMObjective
    edm = build_objective("edm", EDMEulerScheduler(), edm_p_mean=-1.0, edm_p_std=0.5)
    assert (edm.p_mean, edm.p_std) == (-1.0, 0.5)
    assert [option.flag for option in EDMObjective.options] == ["edm_p_mean", "edm_p_std"]
    with pytest.raises(ValueError, match="formulation must be 'ddpm', 'ddim', 'edm' or 'flow', got 'consistency'"):
        objective_class("consistency")


def test_kinds_of_the_objectives_hold_what_the_formulation_registry_held():
    from diffusers_specreg import formulations
    from diffusers_specreg.diffusion.base import SchedulerSettings
    from diffusers_specreg.kinds import PIPELINE_KINDS, PipelineKind, objective_choices

    assert formulations.Formulation is PipelineKind and formulations.FORMULATIONS is PIPELINE_KINDS
    assert list(PIPELINE_KINDS) == ["ddpm", "edm", "flow", "sagd", "audio", "latent"] and objective_choices() == [
        "ddpm",
        "edm",
        "flow",
    ]
    ddpm, edm = PIPELINE_KINDS["ddpm"], PIPELINE_KINDS["edm"]
    assert (ddpm.pipeline_class, ddpm.aliases, ddpm.pipeline_file, ddpm.objective) == (
        "DDPMPipeline",
        ("DDIMPipeline",),
        None,
        "ddpm",
    )
    assert (edm.pipeline_class, edm.pipeline_file, edm.objective, edm.sample_steps) == (
        "EDMPipeline",
        "pipeline_edm.py",
        "edm",
        40,
    )
    assert (edm.tags, edm.citations, edm.aliases) == (("edm",), ("2206.00364",), ())
    assert all(PIPELINE_KINDS[name].objective == "ddpm" for name in ("sagd", "audio", "latent"))
    settings = SchedulerSettings(prediction_type="v_prediction", num_train_timesteps=50)
    assert type(ddpm.build_scheduler(settings)) is DDPMScheduler
    assert type(PIPELINE_KINDS["sagd"].build_scheduler(settings)).__name__ == "DDPMScheduler"
    scheduler = edm.build_scheduler(SchedulerSettings(sigma_data=0.25))
    assert type(scheduler) is EDMEulerScheduler and scheduler.config.sigma_data == 0.25
