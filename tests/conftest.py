"""Shared fixtures: tiny models and data written to temporary folders, and a runner for the real script."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_UNET = dict(
    sample_size=16,
    in_channels=1,
    out_channels=1,
    layers_per_block=1,
    block_out_channels=[16, 32],
    down_block_types=["DownBlock2D", "AttnDownBlock2D"],
    up_block_types=["AttnUpBlock2D", "UpBlock2D"],
    norm_num_groups=8,
)


def tiny_unet(seed: int = 0, sample_size: int = 16, channels: int = 1):
    """The tiny `UNet2DModel` of `TINY_UNET`, seeded."""
    import torch
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(**dict(TINY_UNET, sample_size=sample_size, in_channels=channels, out_channels=channels))


@contextlib.contextmanager
def diffusers_log():
    """Collect the records that reach the `diffusers` logger (it does not propagate to the root logger)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Collect(level=logging.DEBUG)
    diffusers_logger = logging.getLogger("diffusers")
    diffusers_logger.addHandler(handler)
    try:
        yield records
    finally:
        diffusers_logger.removeHandler(handler)


def write_unet_config(folder: Path, channels: int = 1, sample_size: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = dict(TINY_UNET, in_channels=channels, out_channels=channels, sample_size=sample_size)
    config["_class_name"] = "UNet2DModel"
    (folder / "config.json").write_text(json.dumps(config))
    return folder


TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=[8, 16],
    down_block_types=["DownEncoderBlock2D"] * 2,
    up_block_types=["UpDecoderBlock2D"] * 2,
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=16,
)


def write_vae(folder: Path, scaling_factor: float = 1.5, seed: int = 0, **overrides) -> Path:
    """A tiny `AutoencoderKL` (downsampling factor 2, 4 latent channels), seeded, saved with `save_pretrained`."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    AutoencoderKL(**dict(TINY_VAE, scaling_factor=scaling_factor, **overrides)).save_pretrained(folder)
    return folder


def write_image_folder(folder: Path, count: int = 12, size: int = 16, mode: str = "L", seed: int = 0) -> Path:
    """Random checkerboard-like PNGs (in a nested subfolder too, as imagefolder allows)."""
    rng = np.random.default_rng(seed)
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        period = int(rng.choice([2, 4]))
        grid = ((np.arange(size)[:, None] // period + np.arange(size)[None, :] // period) % 2) * 255
        array = np.clip(grid + rng.normal(0, 10, grid.shape), 0, 255).astype(np.uint8)
        image = Image.fromarray(array, mode="L").convert(mode)
        image.save(folder / ("sub" if i % 3 == 0 else ".") / f"img_{i}.png")
    return folder


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    return write_unet_config(tmp_path / "tiny_unet")


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "images")


def launch_in_background(script_args: list[str], stdout=None, stderr=None, omp_threads: str | None = "1"):
    """`accelerate launch train_spectral.py *script_args` (one CPU process) in the background, in a process group of
    its own (a terminal's: a group signal reaches the launcher and the training; the test kills the group at the end).

    Returns:
        `subprocess.Popen` with text pipes where `stdout` / `stderr` are `subprocess.PIPE`.
    """
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu"]
    launcher += ["--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "no"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", **({"OMP_NUM_THREADS": omp_threads} if omp_threads else {}))
    return subprocess.Popen(
        [*launcher, str(REPO / "train_spectral.py"), *script_args],
        cwd=REPO,
        env=env,
        stdout=stdout,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )


def wait_until_training(log_dir: Path, process, timeout: float = 300) -> None:
    """Block until a run launched in the background has logged its first step's scalars to TensorBoard.

    Its signal handlers are installed before the first step, so a signal sent after this returns is the training
    loop's to catch. (The events file alone is not enough: `init_trackers` writes the hparams before the setup ends.)
    """
    import time

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        for events in Path(log_dir).rglob("events.out.tfevents.*"):
            accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
            accumulator.Reload()
            if accumulator.Tags()["scalars"]:
                return
        time.sleep(1)
    raise AssertionError(f"The run logged no step to {log_dir} (exit code {process.poll()}) within {timeout} s")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def launch(
    args: list[str],
    num_processes: int = 1,
    timeout: int = 600,
    check: bool = True,
    extra_env=None,
    script: str = "train_spectral.py",
):
    """Run `accelerate launch SCRIPT ARGS` on the CPU, offline (2 processes: gloo DDP); returns the CompletedProcess."""
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_machines",
        "1",
        "--dynamo_backend",
        "no",
        "--mixed_precision",
        "no",
    ]
    if num_processes > 1:
        launcher += ["--multi_gpu", "--num_processes", str(num_processes), "--main_process_port", str(free_port())]
    else:
        launcher += ["--num_processes", "1", "--cpu"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    if num_processes > 1 and not _has_gpu():
        env["ACCELERATE_USE_CPU"] = "true"  # --multi_gpu on a CPU-only machine: MULTI_CPU (gloo) DDP
    env.update(extra_env or {})
    result = subprocess.run(
        launcher + [str(REPO / script), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{script} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result
