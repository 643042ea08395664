"""What a new objective touches: one class that follows `diffusion.base.Objective`, registered in `diffusion.registry`.

`SampleVP` (x₀ prediction on the variance-preserving path, saved as a stock `DDPMPipeline`) is defined here, in the
test file only: `train_spectral.py` trains, checkpoints, saves and evaluates it without knowing its name, and the
training step computes its x̂₀ once per step.
"""

from __future__ import annotations

import ast
import json
import sys

import pytest
import torch
from conftest import REPO, write_image_folder, write_unet_config
from diffusers import DDPMPipeline, DDPMScheduler

from diffusers_specreg.diffusion.base import NoisyBatch, Option, per_sample_mse
from diffusers_specreg.diffusion.ddpm import DDPMObjective, vp_noise_levels
from diffusers_specreg.diffusion.registry import objective_class, register_objective
from diffusers_specreg.kinds import PIPELINE_KINDS, objective_choices
from diffusers_specreg.train.manifest import compare_settings

sys.path.insert(0, str(REPO))
import train_spectral  # noqa: E402


class SampleVP:
    """x₀ prediction on the VP path: the UNet's output is x̂₀ itself, the loss its MSE to x₀."""

    name = "sample_vp"
    other_names = ()
    prediction_types = ("sample",)
    integer_timesteps = True
    supports_noise_spectrum = False
    supports_audio = False
    options = ()
    pipeline = DDPMObjective.pipeline  # a stock DDPMPipeline samples it
    x0_hat_calls = 0

    def __init__(self, scheduler: DDPMScheduler, noise_fn=None):
        self.scheduler = scheduler

    @classmethod
    def make_scheduler(cls, settings) -> DDPMScheduler:
        return DDPMScheduler(
            num_train_timesteps=settings.num_train_timesteps,
            beta_schedule=settings.beta_schedule,
            prediction_type="sample",
        )

    def noise_batch(self, clean: torch.Tensor, generator: torch.Generator | None = None) -> NoisyBatch:
        noise = torch.randn(clean.shape, generator=generator, device=clean.device)
        t = torch.randint(
            0, self.scheduler.config.num_train_timesteps, (clean.shape[0],), generator=generator, device=clean.device
        )
        noisy = self.scheduler.add_noise(clean, noise, t)
        levels = vp_noise_levels(self.scheduler.alphas_cumprod.to(clean.device), t)
        return NoisyBatch(clean, noise, noisy, noisy, t, clean, levels)

    def model_inputs(self, batch: NoisyBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return batch.model_input, batch.model_timesteps

    def x0_hat(self, model_output: torch.Tensor, batch: NoisyBatch) -> torch.Tensor:
        type(self).x0_hat_calls += 1
        return model_output.float()

    def base_loss(self, model_output: torch.Tensor, batch: NoisyBatch, x0_hat: torch.Tensor | None = None):
        return per_sample_mse(model_output, batch.clean)


def test_a_registered_objective_trains_checkpoints_saves_and_samples(tmp_path):
    images = write_image_folder(tmp_path / "images", count=8)
    config = write_unet_config(tmp_path / "config")
    out = tmp_path / "out"
    tiny = ["--train_data_dir", str(images), "--model_config_name_or_path", str(config), "--resolution", "16"]
    tiny += ["--train_batch_size", "4", "--eval_batch_size", "2", "--ddpm_num_steps", "50", "--seed", "0"]
    tiny += ["--ddpm_num_inference_steps", "2", "--save_images_epochs", "100", "--lr_warmup_steps", "1"]
    SampleVP.x0_hat_calls = 0
    with register_objective(SampleVP):
        assert "sample_vp" in objective_choices() and objective_class("sample_vp") is SampleVP
        argv = [*tiny, "--output_dir", str(out), "--formulation", "sample_vp", "--max_train_steps", "2"]
        argv += ["--checkpointing_steps", "2", "--spectral_loss", "amplitude", "--eval_num_samples", "2"]
        assert train_spectral.main(argv) == 0
    assert SampleVP.x0_hat_calls == 2  # once per step, shared by the base loss and the spectral terms
    assert "sample_vp" not in objective_choices() and "sample_vp" not in PIPELINE_KINDS  # the registry restored
    with pytest.raises(ValueError, match="formulation must be"):
        objective_class("sample_vp")

    index = json.loads((out / "model_index.json").read_text())
    scheduler_config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert index["_class_name"] == "DDPMPipeline" and scheduler_config["prediction_type"] == "sample"
    assert (out / "checkpoint-2" / "checkpoint.json").is_file()
    assert json.loads((out / "training_args.json").read_text())["formulation"] == "sample_vp"
    pipeline = DDPMPipeline.from_pretrained(out)
    pipeline.set_progress_bar_config(disable=True)
    assert pipeline(batch_size=1, num_inference_steps=2, output_type="np").images.shape == (1, 16, 16, 1)


def test_registering_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="already registered as 'ddpm'"):
        with register_objective(DDPMObjective):
            pass


def _named(path) -> list[str]:
    """The string constants "ddpm" / "edm" and the names `is_edm_scheduler` in the code of `path` (not its prose)."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value in ("ddpm", "edm"):
            found.append(f"{path.name}:{node.lineno} {node.value!r}")
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        if name == "is_edm_scheduler":
            found.append(f"{path.name}:{node.lineno} is_edm_scheduler")
    return found


def test_no_objective_is_named_outside_its_file():
    files = ["train_spectral.py", "diffusers_specreg/regularizer.py", "diffusers_specreg/train/loop.py"]
    files += ["diffusers_specreg/kinds.py"]
    assert [hit for name in files for hit in _named(REPO / name)] == []


class SampleVPWithOptions(SampleVP):
    """`SampleVP` with two settings of its own: one a resumed run may not change (the default), one it may."""

    name = "sample_vp_options"
    options = (
        Option("toy_grid", int, 10, "A setting a resumed run may not change.", "grid"),
        Option("toy_rate", float, 0.5, "A setting a resumed run may change.", "rate", "compatible"),
    )

    def __init__(self, scheduler: DDPMScheduler, grid: int = 10, rate: float = 0.5, noise_fn=None):
        super().__init__(scheduler, noise_fn)
        self.grid, self.rate = grid, rate


def test_an_objectives_options_are_its_flags_refused_elsewhere_and_compared_on_resume():
    with register_objective(SampleVPWithOptions):
        args = train_spectral.parse_args(["--formulation", "sample_vp_options", "--toy_grid", "20"])
        assert (args.toy_grid, args.toy_rate) == (20, 0.5)
        with pytest.raises(ValueError, match="--toy_rate applies only to --formulation sample_vp_options, not ddpm"):
            train_spectral.parse_args(["--toy_rate", "0.5"])
        # Option.resume: "incompatible" (the default) refuses a change on resume, "compatible" warns
        saved = {"formulation": "sample_vp_options", "toy_grid": 10, "toy_rate": 0.5}
        errors, warnings = compare_settings(saved, dict(saved, toy_grid=20, toy_rate=0.25))
        assert errors == ["--toy_grid: 10 in the checkpoint, 20 now"]
        assert warnings == ["--toy_rate: 0.5 in the checkpoint, 0.25 now"]
    assert compare_settings(saved, dict(saved, toy_grid=20)) == ([], ["--toy_grid: 10 in the checkpoint, 20 now"])
