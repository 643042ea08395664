import pytest
import torch
from diffusers import DDPMScheduler, EDMEulerScheduler
from torch import nn

from diffusers_specreg.reconstruction import predict_original_sample
from diffusers_specreg.regularizer import DEFAULT_WEIGHTS, SpectralRegularizer
from diffusers_specreg.weighting import timestep_weight


class PerSampleL1(nn.Module):
    """Tiny stand-in spectral loss: mean absolute error per sample."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, prediction, target):
        per_sample = (prediction - target).abs().flatten(1).mean(1)
        return per_sample if self.reduction == "none" else per_sample.mean()


def _batch(seed=0, shape=(4, 1, 8, 8)):
    generator = torch.Generator().manual_seed(seed)
    clean, noise, output = (torch.randn(shape, generator=generator) for _ in range(3))
    timesteps = torch.tensor([5, 100, 400, 800])[: shape[0]]
    scheduler = DDPMScheduler(clip_sample=False)
    noisy = scheduler.add_noise(clean, noise, timesteps)
    base = (output - noise).pow(2).flatten(1).mean(1)
    return scheduler, output, noisy, timesteps, clean, base


def test_no_term_is_identity():
    scheduler, output, noisy, timesteps, clean, base = _batch()
    regularizer = SpectralRegularizer({}, {})
    result = regularizer(scheduler, output, noisy, timesteps, clean, base)
    assert set(result) == {"base", "loss"}
    assert torch.equal(result["loss"], base) and result["loss"].dtype == base.dtype
    assert regularizer.current_weights() == {}
    assert SpectralRegularizer.from_names([], [])(scheduler, output, noisy, timesteps, clean, base)["loss"] is base


def test_constant_weight_arithmetic():
    scheduler, output, noisy, timesteps, clean, base = _batch()
    regularizer = SpectralRegularizer({"l1": PerSampleL1()}, {"l1": 0.3}, weighting="constant")
    result = regularizer(scheduler, output, noisy, timesteps, clean, base)
    term = (predict_original_sample(scheduler, output, noisy, timesteps) - clean).abs().flatten(1).mean(1)
    torch.testing.assert_close(result["l1"], term)
    torch.testing.assert_close(result["loss"], base + 0.3 * term)
    assert regularizer.current_weights() == {"l1": 0.3}


def test_timestep_weight_and_gate_arithmetic():
    scheduler, output, noisy, timesteps, clean, base = _batch()
    regularizer = SpectralRegularizer(
        {"a": PerSampleL1(), "b": PerSampleL1()}, {"a": 0.5, "b": 2.0}, weighting="min_snr", gate_t_max=400
    )
    result = regularizer(scheduler, output, noisy, timesteps, clean, base)
    w = timestep_weight("min_snr", scheduler, timesteps) * torch.tensor([1.0, 1.0, 1.0, 0.0])
    torch.testing.assert_close(result["loss"], base + 0.5 * w * result["a"] + 2.0 * w * result["b"])
    # the gated-off sample (t = 800 > 400) keeps exactly its base loss; its term is still logged unweighted
    assert result["loss"][3] == base[3] and result["a"][3] > 0


def test_reduction_is_set_on_a_copy():
    user_loss = PerSampleL1(reduction="mean")
    regularizer = SpectralRegularizer({"l1": user_loss}, {"l1": 1.0})
    assert user_loss.reduction == "mean" and regularizer.losses["l1"].reduction == "none"


def test_loss_without_per_sample_output_rejected():
    scheduler, output, noisy, timesteps, clean, base = _batch()

    class Scalar(nn.Module):
        def forward(self, prediction, target):
            return (prediction - target).abs().mean()

    with pytest.raises(ValueError, match=r"shape \[B\]"):
        SpectralRegularizer({"s": Scalar()}, {"s": 1.0})(scheduler, output, noisy, timesteps, clean, base)
    with pytest.raises(ValueError, match="base_loss"):
        SpectralRegularizer({}, {})(scheduler, output, noisy, timesteps, clean, base.mean())


@pytest.mark.parametrize(
    "weights, match",
    [
        ({"l1": -0.1}, "finite float >= 0"),
        ({"l1": float("nan")}, "finite float >= 0"),
        ({"l1": float("inf")}, "finite float >= 0"),
        ({"l1": "Auto"}, "'auto' was removed"),
        ({"l1": True}, "float >= 0"),
        ({"l1": 1.0, "l2": 1.0}, "unknown"),
        ({}, "missing"),
    ],
)
def test_invalid_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        SpectralRegularizer({"l1": PerSampleL1()}, weights)


def test_invalid_options():
    with pytest.raises(ValueError, match="alpha_bar, sqrt_snr, min_sqrt_snr, constant, edm, snr, min_snr"):
        SpectralRegularizer({"l1": PerSampleL1()}, {"l1": 1.0}, weighting="p2")
    with pytest.raises(ValueError, match="base, loss"):
        SpectralRegularizer({"loss": PerSampleL1()}, {"loss": 1.0})
    with pytest.raises(ValueError, match="min_snr_gamma"):
        SpectralRegularizer({"l1": PerSampleL1()}, {"l1": 1.0}, min_snr_gamma=0.0)


def test_default_weighting_is_alpha_bar_and_loss_is_closed_form():
    scheduler, output, noisy, timesteps, clean, base = _batch()
    regularizer = SpectralRegularizer({"l1": PerSampleL1()}, {"l1": 0.5})
    assert regularizer.weighting == "alpha_bar"
    result = regularizer(scheduler, output, noisy, timesteps, clean, base)
    alpha_bar = scheduler.alphas_cumprod[timesteps]
    term = (predict_original_sample(scheduler, output, noisy, timesteps) - clean).abs().flatten(1).mean(1)
    torch.testing.assert_close(result["loss"], base + 0.5 * alpha_bar * term)
    assert regularizer.current_weights() == {"l1": 0.5}
    assert regularizer.state_dict() == {}  # a fixed λ: nothing to checkpoint


def test_fully_gated_batch_is_the_base_loss():
    scheduler, output, noisy, timesteps, clean, base = _batch()
    regularizer = SpectralRegularizer({"l1": PerSampleL1()}, {"l1": 1.0}, gate_t_max=0)
    result = regularizer(scheduler, output, noisy, timesteps, clean, base)
    assert torch.equal(result["loss"], base)


def test_gradient_flows_into_model_output():
    scheduler, output, noisy, timesteps, clean, base = _batch()
    output = output.clone().requires_grad_(True)
    regularizer = SpectralRegularizer({"l1": PerSampleL1()}, {"l1": 1.0}, weighting="edm")
    result = regularizer(scheduler, output, noisy, timesteps, clean, base)
    result["loss"].mean().backward()
    assert torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0


def test_edm_scheduler_path():
    scheduler = EDMEulerScheduler()
    clean, noise, output = torch.randn(3, 3, 2, 8, 8).unbind(0)
    sigmas = torch.tensor([0.05, 1.0, 20.0])
    noisy = clean + sigmas.view(3, 1, 1, 1) * noise
    output.requires_grad_(True)
    regularizer = SpectralRegularizer({"l1": PerSampleL1()}, {"l1": 1e-2}, weighting="edm", gate_sigma_max=2.0)
    result = regularizer(scheduler, output, noisy, sigmas, clean, torch.zeros(3))
    denoised = scheduler.precondition_outputs(noisy, output, sigmas.view(3, 1, 1, 1))
    term = (denoised - clean).abs().flatten(1).mean(1)
    weight = (sigmas**2 + 0.25) / (sigmas * 0.5) ** 2 * torch.tensor([1.0, 1.0, 0.0])
    torch.testing.assert_close(result["loss"], 1e-2 * weight * term)
    result["loss"].sum().backward()
    assert torch.isfinite(output.grad).all()


def test_with_fourier_loss():
    from diffusers_specreg.losses import FourierLoss

    scheduler, output, noisy, timesteps, clean, base = _batch()
    output = output.clone().requires_grad_(True)
    fourier = FourierLoss(mode="amplitude_weighted_phase")
    regularizer = SpectralRegularizer({"fourier": fourier}, {"fourier": 0.25}, weighting="min_snr")
    result = regularizer(scheduler, output, noisy, timesteps, clean, base)
    pred = predict_original_sample(scheduler, output, noisy, timesteps)
    expected_term = FourierLoss(mode="amplitude_weighted_phase", reduction="none")(pred, clean)
    torch.testing.assert_close(result["fourier"], expected_term)
    weight = timestep_weight("min_snr", scheduler, timesteps)
    torch.testing.assert_close(result["loss"], base + 0.25 * weight * expected_term)
    result["loss"].mean().backward()
    assert torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0


def test_from_names_builds_losses_and_broadcasts_weight():
    from diffusers_specreg.losses import FourierLoss, WaveletLoss

    regularizer = SpectralRegularizer.from_names(
        ["amplitude", "wavelet"], None, wave="bior1.3", levels=1, weighting="edm", gate_t_max=500
    )
    assert isinstance(regularizer.losses["amplitude"], FourierLoss)
    assert isinstance(regularizer.losses["wavelet"], WaveletLoss)
    assert all(loss.reduction == "none" for loss in regularizer.losses.values())
    assert regularizer.weights == {"amplitude": DEFAULT_WEIGHTS["amplitude"], "wavelet": DEFAULT_WEIGHTS["wavelet"]}
    assert regularizer.losses["wavelet"].wave == "bior1.3" and regularizer.losses["wavelet"].levels == 1
    assert regularizer.weighting == "edm" and regularizer.gate_t_max == 500
    scheduler, output, noisy, timesteps, clean, base = _batch(shape=(4, 1, 16, 16))
    result = regularizer(scheduler, output, noisy, timesteps, clean, base)
    assert set(result) == {"base", "amplitude", "wavelet", "loss"}
    assert all(result[key].shape == (4,) for key in result)
    assert torch.isfinite(result["loss"]).all()
    # the loss at the gated-off timestep (800 > 500) is the base loss
    assert result["loss"][3] == base[3]

    regularizer = SpectralRegularizer.from_names(["amplitude", "amplitude_phase"], [0.1, 0.0])
    assert regularizer.current_weights() == {"amplitude": 0.1, "amplitude_phase": 0.0}
    regularizer = SpectralRegularizer.from_names(["amplitude", "amplitude_phase"], [0.3, None])
    assert regularizer.current_weights() == {"amplitude": 0.3, "amplitude_phase": DEFAULT_WEIGHTS["amplitude_phase"]}
    with pytest.raises(ValueError, match="'auto' was removed"):
        SpectralRegularizer.from_names(["amplitude"], "auto")
    with pytest.raises(ValueError, match="one weight per name"):
        SpectralRegularizer.from_names(["amplitude", "wavelet"], [0.1])
    with pytest.raises(ValueError, match="Duplicate"):
        SpectralRegularizer.from_names(["amplitude", "amplitude"], 0.1)
