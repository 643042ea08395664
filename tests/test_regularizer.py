import math

import pytest
import torch
from diffusers import DDPMScheduler, EDMEulerScheduler
from torch import nn

from diffusers_specreg.reconstruction import predict_original_sample
from diffusers_specreg.regularizer import SpectralRegularizer
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
    regularizer = SpectralRegularizer({"l1": PerSampleL1()}, {"l1": 0.3})
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
        ({"l1": "Auto"}, "auto"),
        ({"l1": True}, "float >= 0"),
        ({"l1": 1.0, "l2": 1.0}, "unknown"),
        ({}, "missing"),
    ],
)
def test_invalid_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        SpectralRegularizer({"l1": PerSampleL1()}, weights)


def test_invalid_options():
    with pytest.raises(ValueError, match="constant, edm, snr, min_snr"):
        SpectralRegularizer({"l1": PerSampleL1()}, {"l1": 1.0}, weighting="p2")
    with pytest.raises(ValueError, match="base, loss"):
        SpectralRegularizer({"loss": PerSampleL1()}, {"loss": 1.0})
    with pytest.raises(ValueError, match="auto_momentum"):
        SpectralRegularizer({"l1": PerSampleL1()}, {"l1": "auto"}, auto_momentum=1.0)


def test_auto_weight_converges_to_fraction_of_base():
    regularizer = SpectralRegularizer(
        {"l1": PerSampleL1()}, {"l1": "auto"}, weighting="snr", auto_fraction=0.2, auto_momentum=0.9
    ).train()
    # first a few very different batches, so the running means start far from the final ratio
    for seed in range(5):
        scheduler, output, noisy, timesteps, clean, base = _batch(seed)
        regularizer(scheduler, 10.0 * output, noisy, timesteps, clean, 0.01 * base)
    scheduler, output, noisy, timesteps, clean, base = _batch(seed=42)
    ratios = []
    for _ in range(200):
        result = regularizer(scheduler, output, noisy, timesteps, clean, base)
        weighted = (result["loss"] - result["base"]).mean()
        ratios.append((weighted / base.mean()).item())
    assert abs(ratios[0] - 0.2) > 0.05  # started away from the target
    assert math.isclose(ratios[-1], 0.2, rel_tol=1e-3)
    lam = regularizer.current_weights()["l1"]
    w = timestep_weight("snr", scheduler, timesteps)
    assert math.isclose(lam * (w * result["l1"]).mean().item(), 0.2 * base.mean().item(), rel_tol=1e-3)


def test_auto_weight_updates_only_in_training_mode():
    scheduler, output, noisy, timesteps, clean, base = _batch()
    regularizer = SpectralRegularizer({"l1": PerSampleL1()}, {"l1": "auto"}).eval()
    result = regularizer(scheduler, output, noisy, timesteps, clean, base)
    assert int(regularizer.auto_steps) == 0 and float(regularizer.auto_base_ema) == 0.0
    # with no running mean yet, eval uses the batch itself: weighted term = fraction · base on average
    torch.testing.assert_close((result["loss"] - base).mean(), 0.1 * base.mean())
    regularizer.train()
    regularizer(scheduler, output, noisy, timesteps, clean, base)
    regularizer(scheduler, output, noisy, timesteps, clean, base)
    assert int(regularizer.auto_steps) == 2


def test_auto_weight_zero_term_is_finite():
    scheduler = DDPMScheduler(prediction_type="sample")
    clean = torch.randn(2, 1, 4, 4)
    timesteps = torch.tensor([1, 2])
    output = clean.clone().requires_grad_(True)  # perfect prediction: spectral term exactly 0
    base = torch.ones(2)
    regularizer = SpectralRegularizer({"l1": PerSampleL1()}, {"l1": "auto"})
    result = regularizer(scheduler, output, torch.randn(2, 1, 4, 4), timesteps, clean, base)
    assert torch.isfinite(result["loss"]).all() and math.isfinite(regularizer.current_weights()["l1"])
    torch.testing.assert_close(result["loss"], base)
    result["loss"].sum().backward()
    assert torch.isfinite(output.grad).all()


def test_auto_weight_fully_gated_batch_is_finite():
    scheduler, output, noisy, timesteps, clean, base = _batch()
    regularizer = SpectralRegularizer({"l1": PerSampleL1()}, {"l1": "auto"}, gate_t_max=0)
    result = regularizer(scheduler, output, noisy, timesteps, clean, base)
    assert torch.equal(result["loss"], base) and math.isfinite(regularizer.current_weights()["l1"])


def test_state_dict_round_trip_keeps_running_stats():
    regularizer = SpectralRegularizer({"a": PerSampleL1(), "b": PerSampleL1()}, {"a": "auto", "b": 0.5})
    for seed in range(3):
        regularizer(*_batch(seed))
    state = regularizer.state_dict()
    assert {"auto_base_ema", "auto_term_ema", "auto_steps"} <= set(state)
    assert "_last_auto_weights" not in state
    restored = SpectralRegularizer({"a": PerSampleL1(), "b": PerSampleL1()}, {"a": "auto", "b": 0.5})
    restored.load_state_dict(state)
    assert int(restored.auto_steps) == 3
    assert restored.current_weights() == regularizer.current_weights()
    # the next training step gives the same loss in both
    batch = _batch(seed=7)
    torch.testing.assert_close(restored(*batch)["loss"], regularizer(*batch)["loss"])


def test_gradient_flows_into_model_output():
    scheduler, output, noisy, timesteps, clean, base = _batch()
    output = output.clone().requires_grad_(True)
    regularizer = SpectralRegularizer({"l1": PerSampleL1()}, {"l1": "auto"}, weighting="edm")
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
        ["amplitude", "wavelet"], "auto", wave="bior1.3", levels=1, weighting="edm", gate_t_max=500
    )
    assert isinstance(regularizer.losses["amplitude"], FourierLoss)
    assert isinstance(regularizer.losses["wavelet"], WaveletLoss)
    assert all(loss.reduction == "none" for loss in regularizer.losses.values())
    assert regularizer.weights == {"amplitude": "auto", "wavelet": "auto"}
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
    with pytest.raises(ValueError, match="one weight per name"):
        SpectralRegularizer.from_names(["amplitude", "wavelet"], [0.1])
    with pytest.raises(ValueError, match="Duplicate"):
        SpectralRegularizer.from_names(["amplitude", "amplitude"], 0.1)


def _distributed_worker(rank, world_size, init_file, queue):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        regularizer = SpectralRegularizer({"l1": PerSampleL1()}, {"l1": "auto"})
        # each process sees a different batch, as under DDP
        regularizer(*_batch(seed=rank))
        queue.put((rank, regularizer.current_weights()["l1"], float(regularizer.auto_base_ema)))
    finally:
        dist.destroy_process_group()


def test_auto_weight_is_synchronised_across_processes(tmp_path):
    import torch.multiprocessing as mp

    # fork: the children inherit the imported modules, which keeps this test fast
    context = mp.get_context("fork")
    queue = context.Queue()
    mp.start_processes(
        _distributed_worker, args=(2, str(tmp_path / "init"), queue), nprocs=2, join=True, start_method="fork"
    )
    results = sorted(queue.get(timeout=30) for _ in range(2))
    # the same λ on both ranks, from the mean of both ranks' batches
    assert results[0][1] == results[1][1]
    bases = [_batch(seed=rank)[-1].mean().item() for rank in range(2)]
    assert math.isclose(results[0][2], 0.01 * sum(bases) / 2, rel_tol=1e-5)


def test_a_non_finite_batch_does_not_poison_auto_lambda():
    regularizer = SpectralRegularizer({"l1": PerSampleL1()}, {"l1": "auto"})
    scheduler = DDPMScheduler(num_train_timesteps=10, clip_sample=False)
    x = torch.randn(2, 1, 4, 4)
    t = torch.tensor([1, 2])
    regularizer(scheduler, x, x + 0.1, t, x + 1.0, torch.ones(2))
    before = regularizer.current_weights()["l1"]
    bad = regularizer(scheduler, torch.full_like(x, float("nan")), x, t, x, torch.full((2,), float("nan")))
    assert not torch.isfinite(bad["loss"]).all()
    assert regularizer.current_weights()["l1"] == before  # the running means skipped the bad batch
    good = regularizer(scheduler, x, x + 0.1, t, x + 1.0, torch.ones(2))
    assert torch.isfinite(good["loss"]).all()
