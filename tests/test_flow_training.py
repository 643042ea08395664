"""`--formulation flow`: the flow-matching objective (`diffusion/flow.py`), its saved `FlowMatchPipeline`
(`pipelines/pipeline_flow.py`), training, resume and fine-tuning with `train_spectral.py`, and the per-band spectral
error every run logs to tensorboard (`metrics.spectral_band_errors`).

The flow maths itself (`flow_matching`, `FlowSpectralRegularizer`) is tested in test_flow.py; this file tests the
objective seam and the training script on top of it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import REPO, write_image_folder, write_unet_config
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler, UNet2DModel
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

from diffusers_specreg.diffusion.base import SchedulerSettings
from diffusers_specreg.diffusion.flow import FlowObjective, flow_scheduler
from diffusers_specreg.diffusion.registry import build_objective
from diffusers_specreg.kinds import PIPELINE_KINDS, render_usage, select_kind
from diffusers_specreg.metrics import spectral_band_errors
from diffusers_specreg.regularizer import SpectralRegularizer
from diffusers_specreg.train.manifest import INCOMPATIBLE
from diffusers_specreg.transforms import radial_frequency

sys.path.insert(0, str(REPO))
import train_spectral  # noqa: E402

SPECTRAL_LOSSES = ("amplitude", "amplitude_phase", "amplitude_weighted_phase", "wavelet")


def objective(shift: float = 1.0, num_train_timesteps: int = 1000, **options) -> FlowObjective:
    scheduler = flow_scheduler(SchedulerSettings("flow_prediction", num_train_timesteps, shift=shift))
    return FlowObjective(scheduler, **options)


# ---------------------------------------------------------------------------------------------------------------
# The objective
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_noise_batch_is_the_sd3_scripts_draw_and_path(shift):
    flow = objective(shift)
    clean = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    batch = flow.noise_batch(clean, torch.Generator().manual_seed(0))
    # the scripts' order: noise first, then u by compute_density_for_timestep_sampling, σ = sigmas[(u·N).long()]
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(clean.shape, generator=generator)
    u = compute_density_for_timestep_sampling("logit_normal", 6, 0.0, 1.0, 1.29, generator=generator)
    reference = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    sigmas = reference.sigmas[(u * 1000).long()]
    assert torch.equal(batch.noise, noise) and torch.equal(batch.levels.t, sigmas)
    assert torch.equal(batch.model_timesteps, reference.timesteps[(u * 1000).long()])  # σ·N, the UNet's timestep
    sigma = sigmas.view(-1, 1, 1, 1)
    torch.testing.assert_close(batch.noisy, (1 - sigma) * clean + sigma * noise, rtol=0, atol=1e-6)
    assert torch.equal(batch.target, noise - clean) and torch.equal(batch.model_input, batch.noisy)
    assert batch.alpha_bar is None
    torch.testing.assert_close(batch.levels.sigma, sigmas / (1 - sigmas))
    torch.testing.assert_close(batch.levels.snr, ((1 - sigmas) / sigmas) ** 2)


def test_x0_hat_by_hand_and_by_one_euler_step_to_zero():
    flow = objective()
    clean = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    batch = flow.noise_batch(clean, torch.Generator().manual_seed(3))
    velocity = torch.randn(clean.shape, generator=torch.Generator().manual_seed(4))
    x0_hat = flow.x0_hat(velocity, batch)
    sigma = batch.levels.t.view(-1, 1, 1, 1)
    torch.testing.assert_close(x0_hat, batch.noisy - sigma * velocity, rtol=0, atol=0)
    # the stock scheduler's Euler step from σ to 0 (σ_next = 0: `set_timesteps(sigmas=[σ])` appends it) is x̂₀
    for i in range(4):
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
        scheduler.set_timesteps(sigmas=[float(batch.levels.t[i])])
        step = scheduler.step(velocity[i : i + 1], scheduler.timesteps[0], batch.noisy[i : i + 1]).prev_sample
        torch.testing.assert_close(step, x0_hat[i : i + 1], rtol=0, atol=1e-6)
        # the perfect velocity lands on x₀
        perfect = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
        perfect.set_timesteps(sigmas=[float(batch.levels.t[i])])
        landed = perfect.step(batch.target[i : i + 1], perfect.timesteps[0], batch.noisy[i : i + 1]).prev_sample
        torch.testing.assert_close(landed, clean[i : i + 1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("scheme", ["none", "sigma_sqrt", "logit_normal", "mode", "cosmap"])
def test_base_loss_is_the_sd3_scripts_weighted_mse(scheme):
    flow = objective(3.0, weighting_scheme=scheme)
    clean = torch.randn(5, 2, 8, 8, generator=torch.Generator().manual_seed(5))
    batch = flow.noise_batch(clean, torch.Generator().manual_seed(6))
    model_pred = torch.randn(clean.shape, generator=torch.Generator().manual_seed(7))
    sigmas = batch.levels.t.view(-1, 1, 1, 1)
    weighting = compute_loss_weighting_for_sd3(scheme, sigmas)
    # the scripts' loss before the batch mean
    expected = torch.mean((weighting.float() * (model_pred.float() - batch.target.float()) ** 2).reshape(5, -1), 1)
    torch.testing.assert_close(flow.base_loss(model_pred, batch), expected)
    closed_form = {
        "sigma_sqrt": batch.levels.t**-2,
        "cosmap": 2 / (math.pi * (1 - 2 * batch.levels.t + 2 * batch.levels.t**2)),
    }
    mse = ((model_pred - batch.target) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(flow.base_loss(model_pred, batch), closed_form.get(scheme, 1.0) * mse)


@pytest.mark.parametrize("name", SPECTRAL_LOSSES)
def test_each_spectral_term_is_zero_with_zero_gradient_at_the_perfect_velocity(name):
    # dyadic x₀, ε and σ (N = 4: σ in {1, 3/4, 1/2, 1/4}) make x_t − σ·(ε − x₀) == x₀ bit for bit in float64, so the
    # L1-type terms are exactly 0 and so is their gradient (a rounding-level error would give a full sign gradient)
    generator = torch.Generator().manual_seed(8)
    clean = torch.randint(-8, 9, (4, 1, 8, 8), generator=generator).double() / 8
    noise = torch.randint(-16, 17, (4, 1, 8, 8), generator=generator).double() / 8
    flow = objective(num_train_timesteps=4, weighting_scheme="mode", noise_fn=lambda shape, gen, device: noise)
    batch = flow.noise_batch(clean, torch.Generator().manual_seed(9))
    velocity = batch.target.clone().requires_grad_(True)
    x0_hat = flow.x0_hat(velocity, batch)
    assert torch.equal(x0_hat.detach(), clean)
    regularizer = SpectralRegularizer.from_names([name], 1.0, levels=2, weighting="constant")
    terms = regularizer.terms(batch, x0_hat, flow.base_loss(velocity, batch))
    assert torch.all(terms[name] == 0) and torch.all(terms["loss"] == 0)
    terms["loss"].sum().backward()
    assert torch.all(velocity.grad == 0)
    # and away from it the term and its gradient are not zero
    wrong = (batch.target + 0.25 * torch.randn(clean.shape, generator=generator, dtype=torch.float64)).requires_grad_(
        True
    )
    terms = regularizer.terms(batch, flow.x0_hat(wrong, batch), flow.base_loss(wrong, batch))
    terms["loss"].sum().backward()
    assert torch.all(terms[name] > 0) and wrong.grad.abs().sum() > 0


def test_options_capabilities_and_the_registry():
    flow = build_objective("flow", objective().scheduler, weighting_scheme="cosmap", logit_std=2.0)
    assert isinstance(flow, FlowObjective) and flow.weighting_scheme == "cosmap" and flow.logit_std == 2.0
    flags = ["weighting_scheme", "logit_mean", "logit_std", "mode_scale", "flow_shift"]
    assert [o.flag for o in FlowObjective.options] == flags
    assert FlowObjective.options[0].default == "logit_normal"  # Diffusers' scripts' default
    assert not FlowObjective.integer_timesteps and not FlowObjective.supports_audio
    assert not FlowObjective.supports_noise_spectrum
    with pytest.raises(ValueError, match="weighting_scheme must be one of"):
        objective(weighting_scheme="logitnormal")
    with pytest.raises(ValueError, match="mode_scale"):
        objective(weighting_scheme="mode", mode_scale=3.0)
    with pytest.raises(ValueError, match="FlowObjective needs"):
        FlowObjective(DDPMScheduler())
    with pytest.raises(ValueError, match="prediction_type 'flow_prediction'"):
        flow_scheduler(SchedulerSettings("epsilon"))
    with pytest.raises(ValueError, match="fine-tunes flow-matching pipelines"):
        flow_scheduler(SchedulerSettings("flow_prediction", pretrained_config=dict(DDPMScheduler().config)))
    # a fine-tuned flow scheduler keeps its shift unless one is given
    # a saved scheduler_config.json, as load_config reads it (with its _class_name)
    pretrained = dict(FlowMatchEulerDiscreteScheduler(num_train_timesteps=100, shift=3.0).config)
    pretrained["_class_name"] = "FlowMatchEulerDiscreteScheduler"
    kept = flow_scheduler(SchedulerSettings("flow_prediction", pretrained_config=pretrained))
    assert kept.config.shift == 3.0 and kept.config.num_train_timesteps == 100
    assert (
        flow_scheduler(SchedulerSettings("flow_prediction", shift=2.0, pretrained_config=pretrained)).config.shift == 2
    )
    kind = select_kind("flow")
    assert kind is PIPELINE_KINDS["flow"] and kind.pipeline_class == "FlowMatchPipeline" and kind.is_custom
    usage = render_usage(["pipeline", "FlowMatchPipeline"], "me/flow", 50, 1000)
    assert "trust_remote_code=True" in usage and "FlowMatchEulerDiscreteScheduler" in usage and "$" not in usage


# ---------------------------------------------------------------------------------------------------------------
# Per-band spectral error
# ---------------------------------------------------------------------------------------------------------------


def test_band_errors_partition_the_mse_and_find_the_band():
    x, y = torch.randn(3, 2, 16, 16), torch.randn(3, 2, 16, 16)
    errors = spectral_band_errors(x, y)
    assert list(errors) == ["low", "mid", "high"]
    fraction = radial_frequency((16, 16)) / 0.5
    counts = [((fraction >= 0) & (fraction < 1 / 3)).sum(), ((fraction >= 1 / 3) & (fraction < 2 / 3)).sum()]
    counts.append(256 - sum(counts))
    total = sum(e * c for e, c in zip(errors.values(), counts)) / 256
    torch.testing.assert_close(total, ((x - y) ** 2).mean())  # Parseval: the bands partition the pixel MSE
    assert all(v == 0 for v in spectral_band_errors(x, x).values())
    # a pixel checkerboard error is all at the grid corner (Nyquist on both axes): the high band only
    checker = (torch.arange(16).view(-1, 1) + torch.arange(16)).remainder(2).float().mul(2).sub(1).expand(3, 2, 16, 16)
    errors = spectral_band_errors(y + checker, y)
    assert errors["low"] < 1e-6 * errors["high"] and errors["mid"] < 1e-6 * errors["high"]
    waveform = spectral_band_errors(torch.randn(2, 1, 64), torch.zeros(2, 1, 64))
    assert set(waveform) == {"low", "mid", "high"} and all(v > 0 for v in waveform.values())
    # a grid too small for a band to hold a bin (2x2: frequencies 0 and Nyquist only): that band is left out, not
    # nan, so the training log never shows nan; the bands that are there still partition the MSE
    small = torch.randn(2, 1, 2, 2)
    errors = spectral_band_errors(small, torch.zeros_like(small))
    assert list(errors) == ["low", "high"] and all(math.isfinite(v) for v in errors.values())
    fraction = radial_frequency((2, 2)) / 0.5
    counts = [int((fraction < 1 / 3).sum()), int((fraction >= 2 / 3).sum())]
    torch.testing.assert_close(sum(e * c for e, c in zip(errors.values(), counts)) / 4, small.square().mean())


# ---------------------------------------------------------------------------------------------------------------
# train_spectral.py --formulation flow
# ---------------------------------------------------------------------------------------------------------------

COMMON = (
    "--train_batch_size 4 --eval_batch_size 2 --ddpm_num_steps 50 --ddpm_num_inference_steps 2 --resolution 16 "
    "--save_images_epochs 100 --save_model_epochs 100 --lr_warmup_steps 1 --lr_scheduler constant --seed 0"
).split()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flow_data")
    return {"images": write_image_folder(root / "images", count=12), "config": write_unet_config(root / "config")}


def run(data, out: Path, *flags: str, steps: int = 2) -> int:
    argv = [*COMMON, "--train_data_dir", str(data["images"]), "--model_config_name_or_path", str(data["config"])]
    return train_spectral.main([*argv, "--output_dir", str(out), "--max_train_steps", str(steps), *flags])


@pytest.fixture(scope="module")
def flow_run(data, tmp_path_factory) -> Path:
    """Two steps of `--formulation flow` with an amplitude term and SD3's shift 3, evaluated on 4 samples."""
    out = tmp_path_factory.mktemp("flow_run") / "out"
    flags = "--formulation flow --flow_shift 3 --spectral_loss amplitude --eval_num_samples 4 --eval_sampler fast"
    assert run(data, out, *flags.split()) == 0
    return out


def scalars(log_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict[str, list[float]] = {}
    for events in sorted(log_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            values.setdefault(tag, []).extend(event.value for event in accumulator.Scalars(tag))
    return values


def test_flow_run_saves_its_pipeline_scheduler_and_card(flow_run):
    index = json.loads((flow_run / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "FlowMatchPipeline"]
    assert index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    assert (flow_run / "pipeline.py").read_bytes() == (REPO / "pipelines" / "pipeline_flow.py").read_bytes()
    scheduler = json.loads((flow_run / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["shift"] == 3.0 and scheduler["num_train_timesteps"] == 50
    args = json.loads((flow_run / "training_args.json").read_text())
    assert args["formulation"] == "flow" and args["weighting_scheme"] == "logit_normal"
    assert args["prediction_type"] == "flow_prediction" and args["flow_shift"] == 3.0
    card = (flow_run / "README.md").read_text()
    assert "- flow-matching" in card and "FLOW formulation" in card and "FlowMatchPipeline" in card
    assert "FlowMatchEulerDiscreteScheduler" in card and "2209.03003" in card and "2403.03206" in card
    metrics = json.loads((flow_run / "evaluation" / "metrics.json").read_text())["pipelines"]["out"]
    assert metrics["sampler"] == "Flow matching Euler (FlowMatchEulerDiscreteScheduler), 2 steps"
    assert f"*Samples drawn with {metrics['sampler']}.*" in card


def test_the_evaluation_loads_the_folder_and_samples_with_euler(flow_run):
    from diffusers_specreg.evaluate.sampling import load_pipeline, make_sampler

    pipeline = load_pipeline(str(flow_run))  # trusted: its pipeline.py is the shipped pipelines/pipeline_flow.py
    sample, description = make_sampler(pipeline, 2, "fast")
    assert description == "Flow matching Euler (FlowMatchEulerDiscreteScheduler), 2 steps"
    images = sample([torch.Generator().manual_seed(i) for i in range(2)])
    assert images.shape == (2, 1, 16, 16) and -1 <= images.min() and images.max() <= 1


def test_every_logging_step_has_the_per_band_error(flow_run, data, tmp_path):
    logged = scalars(flow_run / "logs")
    for band in ("low", "mid", "high"):
        values = logged[f"spectral_band/{band}"]
        assert len(values) == 2 and all(math.isfinite(v) and v > 0 for v in values)
    assert {"loss", "base", "amplitude", "lambda/amplitude"} <= set(logged)
    # a DDPM run (the default kind) logs them too
    assert run(data, tmp_path / "ddpm", "--eval_num_samples", "0", steps=1) == 0
    assert {"spectral_band/low", "spectral_band/mid", "spectral_band/high"} <= set(scalars(tmp_path / "ddpm" / "logs"))


LOADER = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("diffusers_specreg", "pipelines", "train_spectral"):
                raise ModuleNotFoundError(f"blocked: {name}")
            return None

    sys.meta_path.insert(0, Block())
    import torch
    from diffusers import DiffusionPipeline, FlowMatchHeunDiscreteScheduler

    torch.set_num_threads(1)
    pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    calls = []
    unet_forward = pipe.unet.forward
    pipe.unet.forward = lambda *a, **k: calls.append(float(a[1][0])) or unet_forward(*a, **k)
    euler = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    euler_calls, calls[:] = list(calls), []
    config = pipe.scheduler.config  # the card's Heun snippet
    pipe.scheduler = FlowMatchHeunDiscreteScheduler(num_train_timesteps=config.num_train_timesteps, shift=config.shift)
    heun = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    print("RESULT " + json.dumps({"class": type(pipe).__name__, "euler": list(euler.images.shape),
                                  "heun": list(heun.images.shape), "euler_t": euler_calls, "heun_t": calls}))
    """
)


def test_saved_folder_samples_in_a_fresh_process_without_the_package(flow_run, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-I", "-c", LOADER, str(flow_run)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert out["class"] == "FlowMatchPipeline" and out["euler"] == out["heun"] == [2, 16, 16, 1]
    # Euler: one UNet call per step from σ = 1 (t = N = 50); Heun: 2·3 − 1 calls on the same grid
    assert len(out["euler_t"]) == 3 and out["euler_t"][0] == 50.0 and len(out["heun_t"]) == 5
    assert out["heun_t"][0] == 50.0 and out["heun_t"][1] == out["heun_t"][2] == out["euler_t"][1]


def test_flow_resume_is_bit_identical_to_an_uninterrupted_run(data, tmp_path):
    flags = "--formulation flow --spectral_loss amplitude_phase --eval_num_samples 0 --checkpointing_steps 2".split()
    # 12 images / batch 4 = 3 steps an epoch: step 2 stops mid-epoch, so resuming must skip the consumed batch
    assert run(data, tmp_path / "a", *flags, steps=4) == 0
    assert run(data, tmp_path / "b", *flags, steps=2) == 0
    assert run(data, tmp_path / "b", *flags, "--resume_from_checkpoint", "latest", steps=4) == 0
    a = UNet2DModel.from_pretrained(tmp_path / "a", subfolder="unet")
    b = UNet2DModel.from_pretrained(tmp_path / "b", subfolder="unet")
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))


def test_flow_settings_may_not_change_on_resume_where_they_change_the_schedule(data, tmp_path, caplog):
    # --flow_shift is refused through its Option (resume "incompatible"), not a line of manifest.INCOMPATIBLE
    (shift,) = [option for option in FlowObjective.options if option.flag == "flow_shift"]
    assert shift.resume == "incompatible" and "flow_shift" not in INCOMPATIBLE
    flags = "--formulation flow --eval_num_samples 0 --checkpointing_steps 1".split()
    assert run(data, tmp_path / "c", *flags, steps=1) == 0
    with pytest.raises(ValueError, match="Cannot resume .*--flow_shift: null in the checkpoint, 3.0 now"):
        run(data, tmp_path / "c", *flags, "--flow_shift", "3", "--resume_from_checkpoint", "latest", steps=2)
    # a "compatible" Option resumes, with a warning naming it
    resume = ("--resume_from_checkpoint", "latest")
    with caplog.at_level(logging.WARNING):
        assert run(data, tmp_path / "c", *flags, "--logit_mean", "0.5", *resume, steps=2) == 0
    assert "--logit_mean: 0.0 in the checkpoint, 0.5 now" in caplog.text


@pytest.mark.parametrize("source", ["--model_config_name_or_path", "--pretrained_model_name_or_path"])
@pytest.mark.parametrize("formulation", ["flow", "edm"])
def test_a_unet_with_a_fourier_time_embedding_is_refused_before_training(data, tmp_path, formulation, source):
    # the saved FlowMatchPipeline / EDMPipeline feed the UNet real-valued timesteps: refused when the UNet is built,
    # not when the pipeline is first saved after an epoch
    config = json.loads((data["config"] / "config.json").read_text()) | {"time_embedding_type": "fourier"}
    folder = tmp_path / "fourier"
    if source == "--model_config_name_or_path":
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
    else:
        UNet2DModel.from_config(config).save_pretrained(folder)
    argv = [*COMMON, "--train_data_dir", str(data["images"]), source, str(folder), "--formulation", formulation]
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=f"{source} .*time_embedding_type 'fourier'.*--formulation {formulation}"):
        train_spectral.main([*argv, "--output_dir", str(out), "--max_train_steps", "1", "--eval_num_samples", "0"])
    assert not (out / "logs").exists()  # nothing trained or logged


FLOW_FLAGS = (("flow_shift", "3"), ("weighting_scheme", "logit_normal"), ("logit_mean", "0"), ("logit_std", "1"))


@pytest.mark.parametrize("flag, value", [*FLOW_FLAGS, ("mode_scale", "1.29")])
@pytest.mark.parametrize("formulation", ["ddpm", "edm"])
def test_a_flow_flag_given_with_another_formulation_is_refused(formulation, flag, value):
    # given explicitly, even at its default value: it would be silently ignored
    with pytest.raises(ValueError, match=f"--{flag} applies only to --formulation flow, not {formulation}"):
        train_spectral.parse_args(["--formulation", formulation, f"--{flag}", value])


def test_objective_flags_not_given_take_their_defaults_and_any_objective_may_own_them():
    args = train_spectral.parse_args(["--formulation", "edm"])  # flow's flags left out: their defaults, no error
    values = (args.weighting_scheme, args.logit_mean, args.flow_shift, args.edm_p_mean)
    assert values == ("logit_normal", 0.0, None, -1.2)
    assert train_spectral.parse_args(["--formulation", "flow", "--logit_mean", "0.5"]).logit_mean == 0.5
    with pytest.raises(ValueError, match="--edm_p_mean applies only to --formulation edm, not flow"):
        train_spectral.parse_args(["--formulation", "flow", "--edm_p_mean", "-1"])


def test_fine_tune_a_flow_model_and_refuse_what_does_not_fit(flow_run, data, tmp_path):
    out = tmp_path / "finetuned"
    assert run(data, out, "--formulation", "flow", "--pretrained_model_name_or_path", str(flow_run),
               "--eval_num_samples", "0") == 0  # fmt: skip
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["shift"] == 3.0  # kept
    before = UNet2DModel.from_pretrained(flow_run, subfolder="unet")
    after = UNet2DModel.from_pretrained(out, subfolder="unet")
    assert any(not torch.equal(p, q) for p, q in zip(before.parameters(), after.parameters()))
    with pytest.raises(ValueError, match="supports --prediction_type flow_prediction, not epsilon"):
        run(data, tmp_path / "x", "--formulation", "flow", "--prediction_type", "epsilon")
    with pytest.raises(ValueError, match="use --formulation ddpm"):
        run(data, tmp_path / "y", "--formulation", "flow", "--modality", "audio")
    with pytest.raises(ValueError, match="does not combine with --formulation flow"):
        run(data, tmp_path / "v", "--formulation", "flow", "--vae_name_or_path", str(tmp_path / "vae"))
    with pytest.raises(ValueError, match="--noise_spectrum needs --formulation ddpm"):
        run(data, tmp_path / "z", "--formulation", "flow", "--noise_spectrum", "powerlaw:alpha=-0.5")
