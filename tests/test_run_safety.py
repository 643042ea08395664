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
from test_train_spectral import tiny_run  # noqa: E402

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
