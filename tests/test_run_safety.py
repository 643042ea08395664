"""Issue 13: nothing the user has is lost or silently replaced, nothing runs that should not (output folders,
resume and checkpoints under hostile conditions). In-process runs of train_spectral.main on tiny data."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, write_image_folder, write_unet_config
from diffusers import UNet2DModel

sys.path.insert(0, str(REPO))
import train_spectral  # noqa: E402
from test_train_spectral import FAST, tiny_run  # noqa: E402

QUIET = dict(save_images_epochs=100, eval_num_samples=0, lr_scheduler="constant")


def run(images, config, out, *extra, **options) -> int:
    return train_spectral.main([*tiny_run(images, config, out, **options), *extra])


def unet_weights(folder: Path) -> dict[str, torch.Tensor]:
    return UNet2DModel.from_pretrained(folder, subfolder="unet").state_dict()


def assert_identical(a: Path, b: Path) -> None:
    wa, wb = unet_weights(a), unet_weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


class RunsCode:
    """Unpickling this writes a marker file: what a crafted checkpoint file could do with any code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


# --- 3. checkpoints hold no pickle we load --------------------------------------------------------------------------


def test_crafted_pickles_in_a_checkpoint_are_never_loaded(tmp_path, image_folder, tiny_config):
    options = dict(QUIET, use_ema=True, spectral_loss="amplitude", checkpointing_steps=2)
    assert run(image_folder, tiny_config, tmp_path / "straight", max_train_steps=3, **options) == 0
    out = tmp_path / "resumed"
    assert run(image_folder, tiny_config, out, max_train_steps=2, **options) == 0
    checkpoint = out / "checkpoint-2"
    files = {p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*") if p.is_file()}
    assert {"regularizer.safetensors", "rank_state_0.safetensors", "run_settings.json", "checkpoint.json"} <= files
    assert "ema_unet/diffusion_pytorch_model.safetensors" in files
    assert not [f for f in files if f.startswith("custom_checkpoint") or f.endswith(".pt")]
    marker = tmp_path / "marker"
    for name in ("rank_state_0.pt", "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl"):  # what older versions read
        torch.save({"state": RunsCode(marker)}, checkpoint / name)
    resume = ["--resume_from_checkpoint", "latest"]
    with pytest.raises(ValueError, match="custom_checkpoint_0.pkl, custom_checkpoint_1.pkl: pickled state"):
        run(image_folder, tiny_config, out, *resume, max_train_steps=3, **options)
    assert not marker.exists()
    for name in ("custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl"):
        (checkpoint / name).unlink()
    assert run(image_folder, tiny_config, out, *resume, max_train_steps=3, **options) == 0
    assert not marker.exists()
    assert_identical(tmp_path / "straight", out)  # EMA and regularizer state restored from safetensors, exactly


# --- 2, 4, 5. output folders: a finished pipeline, a previous run, a user's files ----------------------------------


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_latest_into_a_finished_folder_stops(tmp_path):
    from conftest import tiny_unet
    from diffusers import DDPMPipeline, DDPMScheduler

    out = tmp_path / "finished"
    DDPMPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=50)).save_pretrained(out)
    (out / "README.md").write_text("---\ntags:\n- diffusers-specreg\n---\nThe model I trained for a week.\n")
    before = snapshot(out)
    args = ["--output_dir", str(out), "--resume_from_checkpoint", "latest", "--max_train_steps", "1"]
    with pytest.raises(ValueError, match="holds a trained pipeline but no checkpoint-N/ folder to resume from"):
        train_spectral.main([*FAST, *args, "--builtin_num_samples", "8", "--eval_num_samples", "0"])
    assert snapshot(out) == before


def test_overwrite_replaces_the_whole_previous_run_and_nothing_else(tmp_path, image_folder, tiny_config):
    out = tmp_path / "out"
    options = dict(max_train_steps=1, eval_num_samples=2, save_images_epochs=100)
    assert run(image_folder, tiny_config, out, formulation="edm", **options) == 0
    assert (out / "pipeline.py").is_file() and (out / "evaluation" / "metrics.json").is_file()
    edm_logs = {p for p in (out / "logs").rglob("*") if p.is_file()}
    (out / "notes.txt").write_text("my notes on the EDM run")
    (out / "figures").mkdir()
    (out / "figures" / "plot.png").write_bytes(b"mine")
    assert run(image_folder, tiny_config, out, "--overwrite_output_dir", **options) == 0  # DDPM now
    assert not (out / "pipeline.py").exists()  # the EDM pipeline file would be loaded with the DDPM weights
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"
    assert json.loads((out / "training_args.json").read_text())["formulation"] == "ddpm"
    assert "- edm" not in (out / "README.md").read_text()
    assert not any(p.exists() for p in edm_logs)  # the EDM run's tensorboard files went with it
    assert (out / "notes.txt").read_text() == "my notes on the EDM run"
    assert (out / "figures" / "plot.png").read_bytes() == b"mine"


@pytest.mark.parametrize("name", ["README.md", "training_args.json"])
def test_a_users_readme_or_training_args_is_never_replaced(tmp_path, image_folder, tiny_config, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text('{"my": "notes"}' if name.endswith(".json") else "# Notes on this experiment\n")
    before = snapshot(out)
    for extra in ([], ["--overwrite_output_dir"]):
        with pytest.raises(ValueError, match=f"holds {name}, which no training run wrote there"):
            run(image_folder, tiny_config, out, *extra, max_train_steps=1, **QUIET)
    assert snapshot(out) == before


# --- 1. a model config that does not fit the data ------------------------------------------------------------------


def test_config_sample_size_must_match_resolution_before_training(tmp_path, image_folder):
    config = write_unet_config(tmp_path / "config32", sample_size=32)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="--resolution 16 differs from the model config's sample_size 32"):
        run(image_folder, config, out, max_train_steps=1, eval_num_samples=0)  # FAST passes --resolution 16
    assert not list(out.rglob("events.out.tfevents.*"))  # stopped before training
    flags = [a for a in tiny_run(image_folder, config, out, max_train_steps=1, **QUIET) if a != "--resolution"]
    flags.remove("16")  # no --resolution: the config's sample_size is the training resolution
    assert train_spectral.main(flags) == 0
    assert UNet2DModel.load_config(out / "unet")["sample_size"] == 32
