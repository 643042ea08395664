"""Issue 19 (cases 4-8, 10-12): a run deletes only what it wrote, writes into a folder no other run is using, never
replaces the model or data it reads, and saves its pipeline whole or not at all. Real files, real saves, real runs of
the scripts on tiny data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_unet, write_vae
from diffusers import DDPMPipeline, DDPMScheduler, DiffusionPipeline

from diffusers_specreg import run_settings

sys.path.insert(0, str(REPO))
from test_train_spectral import tiny_run  # noqa: E402

import train_spectral  # noqa: E402

QUIET = dict(save_images_epochs=100, eval_num_samples=0, lr_scheduler="constant")


def run(images, config, out, *extra, **options) -> int:
    return train_spectral.main([*tiny_run(images, config, out, **options), *extra])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def recorded(out: Path) -> list[str]:
    return json.loads((out / run_settings.OUTPUTS_FILE).read_text())["outputs"]


def save_ddpm(folder: Path, seed: int = 0) -> None:
    DDPMPipeline(unet=tiny_unet(seed), scheduler=DDPMScheduler(num_train_timesteps=50)).save_pretrained(folder)


# --- 11. a pipeline save is whole or not at all ---------------------------------------------------------------------


SAVE_UNDER_LIMIT = """
import os, resource, signal, sys
from conftest import tiny_unet, write_vae
from diffusers import DDPMPipeline, DDPMScheduler
from safetensors import SafetensorError
from diffusers_specreg import pipelines_io

kind, folder = sys.argv[1:3]
if kind == "pipeline":
    model, save = DDPMPipeline(unet=tiny_unet(1), scheduler=DDPMScheduler(num_train_timesteps=50)), "save_pipeline"
else:
    from diffusers import AutoencoderKL
    model = AutoencoderKL.from_pretrained(write_vae(__import__("pathlib").Path(folder + "-new"), seed=1))
    save = "save_model"
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
# room for part of the first file saved (a config.json; safetensors itself writes a temporary file and renames it)
resource.setrlimit(resource.RLIMIT_FSIZE, (256, resource.RLIM_INFINITY))
# 1. a write past the limit fails (EFBIG), as one on a full disk does (ENOSPC)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
try:
    getattr(pipelines_io, save)(model, folder)
except (OSError, SafetensorError) as error:
    print(f"save failed: {type(error).__name__}", flush=True)
print("left:", sorted(name for name in os.listdir(folder) if name.startswith(".tmp-save")), flush=True)
# 2. the kernel kills the process at that write (SIGXFSZ, which Python ignores by default), as a kill -9 would
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
getattr(pipelines_io, save)(model, folder)
"""


@pytest.mark.parametrize("kind", ["pipeline", "autoencoder"])
def test_a_save_cut_short_leaves_the_previous_model_whole(tmp_path, kind):
    from diffusers import AutoencoderKL

    from diffusers_specreg import pipelines_io

    out = tmp_path / "out"
    if kind == "pipeline":
        pipelines_io.save_pipeline(
            DDPMPipeline(unet=tiny_unet(0), scheduler=DDPMScheduler(num_train_timesteps=50)), out
        )
    else:
        write_vae(out, seed=0)
    before = snapshot(out)
    child = subprocess.run(
        [sys.executable, "-c", SAVE_UNDER_LIMIT, kind, str(out)],
        cwd=REPO / "tests",
        env=dict(os.environ, PYTHONPATH=str(REPO / "tests"), OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGXFSZ, child.stdout + child.stderr[-3000:]
    assert child.stdout.splitlines()[:2] == ["save failed: OSError", "left: []"]  # the failed save cleaned up
    after = {k: v for k, v in snapshot(out).items() if not k.startswith(".tmp-save")}
    assert after == before  # the previous model, every byte; the kill left at most the temporary folder
    if kind == "autoencoder":
        assert AutoencoderKL.from_pretrained(out).config.block_out_channels == [8, 16]  # loads
        return
    loaded = DiffusionPipeline.from_pretrained(out).unet.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(loaded.values(), tiny_unet(0).state_dict().values()))
    # the next save replaces the leftovers of the killed one and is complete
    pipelines_io.save_pipeline(DDPMPipeline(unet=tiny_unet(2), scheduler=DDPMScheduler(num_train_timesteps=50)), out)
    assert sorted(p.name for p in out.iterdir()) == ["model_index.json", "scheduler", "unet"]
    new = DiffusionPipeline.from_pretrained(out).unet.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(new.values(), tiny_unet(2).state_dict().values()))
