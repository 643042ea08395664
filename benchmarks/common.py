"""Shared helpers of the benchmark scripts: machine facts, running `train_spectral.py`, and side-by-side evaluation.

Every study script in `benchmarks/` records the same machine block (`machine_info`), runs trainings one at a time as
separate processes (`run_training`, never in parallel: the numbers are compared with each other), and evaluates the
saved pipelines against one shared set of data statistics (`evaluate_models`): log-RAPSD distance (all / low / mid /
high thirds of the frequencies), spectral slope gap, Fréchet Wavelet Distance (arXiv 2312.15289) and a sharpness
number, the fraction of pixels with |x| > 0.9 (the checkerboards of arXiv 2603.02447 are ±1 everywhere; blurry
samples sit near 0).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
TRAIN_SCRIPT = ROOT / "train_spectral.py"
SHARPNESS_THRESHOLD = 0.9

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from diffusers_specreg.evaluate.report import json_ready  # noqa: E402

# ---------------------------------------------------------------------------------------------------------------
# Machine and record keeping
# ---------------------------------------------------------------------------------------------------------------


def git_commit() -> str | None:
    """The checked-out commit of the repository (with `+dirty` when files differ from it), or `None`."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        return commit + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def device_description(device: str | torch.device = "cpu") -> str:
    """GPU name, or the CPU with its core and thread counts (as `bench_loss_overhead.py` prints it)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def machine_info(device: str | torch.device = "cpu") -> dict:
    """Date, machine, device and library versions, the block every result JSON starts with."""
    import diffusers

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(torch.device(device)),
        "device_name": device_description(device),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "numpy": np.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "git_commit": git_commit(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def summarize(values: Sequence[float]) -> dict:
    """`{"mean", "std", "min", "max", "values"}` of a list of numbers (std is the sample std, 0 for one value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("summarize() needs at least one value.")
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def write_json(path: str | os.PathLike, record: Mapping) -> Path:
    """Write `record` as indented JSON (NaN -> null), creating the folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_ready(record), indent=2) + "\n")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------------------------------------------


def preset_options(preset: dict, train_batch_size: int, seed: int) -> list[str]:
    """The `train_spectral.py` options every study shares: size, model, schedule, sampling steps and seed."""
    return [
        "--resolution", str(preset["resolution"]),
        "--model_preset", preset["model_preset"],
        "--train_batch_size", str(train_batch_size),
        "--max_train_steps", str(preset["max_train_steps"]),
        "--learning_rate", str(preset["learning_rate"]),
        "--lr_warmup_steps", str(preset["lr_warmup_steps"]),
        "--ddpm_num_inference_steps", str(preset["num_inference_steps"]),
        "--seed", str(seed),
    ]  # fmt: skip


def training_command(output_dir: str | os.PathLike, options: Sequence[str]) -> list[str]:
    r"""
    The `python train_spectral.py ...` command of one benchmark run.

    Args:
        output_dir (`str` or `os.PathLike`): `--output_dir` (replaced if it exists).
        options (`Sequence[str]`): every other argument, e.g. `["--builtin_dataset", "digits", "--seed", "0"]`.

    Returns:
        `list[str]`: the argv, starting with `sys.executable`. No evaluation at the end (`--eval_num_samples 0`), no
        intermediate sample grids, pipelines or checkpoints, unless `options` says otherwise (later options win).
    """
    quiet = [
        "--eval_num_samples",
        "0",
        "--save_images_epochs",
        "100000",
        "--save_model_epochs",
        "100000",
        "--checkpointing_steps",
        "100000000",
    ]
    return (
        [sys.executable, str(TRAIN_SCRIPT), "--output_dir", str(output_dir), "--overwrite_output_dir"]
        + quiet
        + [str(o) for o in options]
    )


def printable_command(argv: Sequence[str]) -> str:
    """A shell line reproducing `argv` from the repository root (`python train_spectral.py ...`)."""
    parts = list(argv)
    if parts and parts[0] == sys.executable:
        parts[0] = "python"
    parts = [os.path.relpath(p, ROOT) if os.path.isabs(p) and p.startswith(str(ROOT)) else p for p in parts]
    return shlex.join(parts)


def run_training(
    argv: Sequence[str],
    log_path: str | os.PathLike,
    threads: int | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> float:
    r"""
    Run one training process to completion (never in parallel with another), its output in `log_path`.

    Args:
        argv (`Sequence[str]`): the command (see `training_command`).
        log_path (`str` or `os.PathLike`): file receiving stdout and stderr.
        threads (`int`, *optional*, defaults to `None`): `OMP_NUM_THREADS` of the child; `None` keeps the parent's
            value, or 2 when the parent has none.
        extra_env (`Mapping[str, str]`, *optional*, defaults to `None`): more environment variables of the child
            (e.g. `CUDA_VISIBLE_DEVICES=""` to keep a CPU run off a GPU).

    Returns:
        `float`: wall seconds of the whole process.

    Raises:
        `RuntimeError`: the process failed; the message holds the end of its log.
    """
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads or env.get("OMP_NUM_THREADS") or 2)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TQDM_MININTERVAL", "5")
    env.update(extra_env or {})
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.run(list(argv), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"Training failed with exit code {code}: {printable_command(argv)}\n{tail}")
    return seconds


def tensorboard_step_times(logdir: str | os.PathLike, tag: str | None = None) -> dict[int, float]:
    r"""
    Wall time of every logged training step, read from the tensorboard event files under `logdir`.

    Both `train_spectral.py` and Diffusers' `train_unconditional.py` call `accelerator.log` once per optimiser step,
    so the spacing of these wall times is the training-loop speed, without start-up, sampling or saving.

    Args:
        logdir (`str` or `os.PathLike`): searched recursively for `events.out.tfevents.*`.
        tag (`str`, *optional*, defaults to `None`): scalar tag to read; `None` picks "loss" (or the first tag seen).

    Returns:
        `dict[int, float]`: step -> wall time (seconds since the epoch), the first event of each step.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    times: dict[int, float] = {}
    for path in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        tags = accumulator.Tags().get("scalars", [])
        chosen = tag if tag is not None else ("loss" if "loss" in tags else (tags[0] if tags else None))
        if chosen is None or chosen not in tags:
            continue
        for event in accumulator.Scalars(chosen):
            times.setdefault(int(event.step), float(event.wall_time))
    return times


def steady_rate(step_times: Mapping[int, float], skip: int, batch_size: int) -> dict:
    r"""
    Images per second between step `skip` and the last logged step (the first steps include warm-up).

    Args:
        step_times (`Mapping[int, float]`): step -> wall time, from `tensorboard_step_times`.
        skip (`int`): steps ignored at the start.
        batch_size (`int`): images per optimiser step.

    Returns:
        `dict`: `images_per_second`, `seconds_per_step` (mean) and `median_seconds_per_step`, `steps_timed`.
    """
    steps = sorted(s for s in step_times if s >= skip)
    if len(steps) < 3:
        raise ValueError(f"Need at least 3 logged steps after step {skip}, got {len(steps)}.")
    gaps = [(step_times[b] - step_times[a]) / (b - a) for a, b in zip(steps, steps[1:])]
    elapsed = step_times[steps[-1]] - step_times[steps[0]]
    count = steps[-1] - steps[0]
    return {
        "images_per_second": batch_size * count / elapsed,
        "seconds_per_step": elapsed / count,
        "median_seconds_per_step": statistics.median(gaps),
        "steps_timed": count,
    }


# ---------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------


def sharp_fraction(images: torch.Tensor, threshold: float = SHARPNESS_THRESHOLD) -> float:
    r"""
    Fraction of pixels with `|x| > threshold`: how "binary" images in `[-1, 1]` are.

    The checkerboards of arXiv 2603.02447 are ±1 everywhere (fraction 1); blurry grey samples have a small fraction.

    Args:
        images (`torch.Tensor`): `[B, C, H, W]` in `[-1, 1]`.
        threshold (`float`, defaults to `0.9`): magnitude above which a pixel counts as saturated.

    Returns:
        `float`: the fraction, in `[0, 1]`.
    """
    if images.ndim != 4:
        raise ValueError(f"`images` must have shape [B, C, H, W], got {list(images.shape)}.")
    return float((images.abs() > threshold).double().mean())


class _SharpCounter:
    def __init__(self, threshold: float, bins: int = 41) -> None:
        self.threshold, self.sharp, self.total = threshold, 0, 0
        self.edges = np.linspace(-1.0, 1.0, bins + 1)
        self.histogram = np.zeros(bins, dtype=np.int64)

    def update(self, images: torch.Tensor) -> None:
        self.sharp += int((images.abs() > self.threshold).sum())
        self.total += images.numel()
        self.histogram += np.histogram(images.clamp(-1, 1).numpy().ravel(), bins=self.edges)[0]

    def fraction(self) -> float:
        return self.sharp / max(self.total, 1)


def evaluate_models(
    models: Mapping[str, str | os.PathLike],
    real_images: torch.Tensor,
    output_dir: str | os.PathLike,
    num_samples: int = 256,
    num_inference_steps: int = 50,
    batch_size: int = 64,
    seed: int = 0,
    fwd_level: int | None = None,
    grid_size: int = 32,
    prefix: str = "",
    plot_title: str | None = None,
) -> dict:
    r"""
    Sample every saved pipeline and compare it with the same data statistics; write grids and a RAPSD plot.

    Sampling is `diffusers_specreg.evaluate.generate_images` (DDIM, eta 0; image `i` depends only on `seed` and `i`),
    so every model starts from the same initial noise.

    Args:
        models (`Mapping[str, str | os.PathLike]`): display name -> saved pipeline folder.
        real_images (`torch.Tensor`): data images `[N, C, H, W]` in `[-1, 1]`; the first `num_samples` are used.
        output_dir (`str` or `os.PathLike`): where the PNGs go (`<prefix>samples_<name>.png`, `<prefix>rapsd.png`).
        num_samples (`int`, defaults to `256`): generated images per model (and data images at most).
        num_inference_steps (`int`, defaults to `50`): DDIM steps.
        batch_size (`int`, defaults to `64`): images per sampling call.
        seed (`int`, defaults to `0`): sampling seed.
        fwd_level (`int`, *optional*, defaults to `None`): FWD packet level, `None` for packets of about 16×16.
        grid_size (`int`, defaults to `32`): images per sample grid.
        prefix (`str`, defaults to `""`): file-name prefix of the PNGs.
        plot_title (`str`, *optional*, defaults to `None`): title of the RAPSD plot.

    Returns:
        `dict`: `"data"` (`num_samples`, `sharp_fraction`, `slope`, `histogram`), `"models"` (name -> metrics:
        `log_rapsd_distance` {all, low, mid, high}, `slope` {model, gap}, `fwd`, `sharp_fraction`, `histogram`,
        `sampling_seconds`), `"spectra"` (frequencies, data, one curve per model) and `"files"`.
    """
    from diffusers_specreg.evaluate import ReferenceStatistics, evaluate_against, load_pipeline
    from diffusers_specreg.metrics import spectral_slope
    from diffusers_specreg.plots import plot_rapsd, save_image_grid

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    real = real_images[:num_samples].float()
    reference = ReferenceStatistics.from_images(real, num_samples, batch_size, fwd_level=fwd_level, progress=False)
    data_sharp = _SharpCounter(SHARPNESS_THRESHOLD)
    data_sharp.update(real)
    files = {"data_grid": f"{prefix}samples_data.png", "rapsd": f"{prefix}rapsd.png"}
    save_image_grid(real[:grid_size], output_dir / files["data_grid"])
    slope_data = spectral_slope(reference.spectrum.frequencies, reference.spectrum)
    results, curves, grids, sampler = {}, {"data": reference.spectrum}, {"data": real[:grid_size]}, None
    for name, path in models.items():
        sharp = _SharpCounter(SHARPNESS_THRESHOLD)
        pipeline = load_pipeline(str(path))
        run = evaluate_against(
            pipeline,
            reference,
            name=name,
            num_samples=num_samples,
            batch_size=batch_size,
            num_inference_steps=num_inference_steps,
            seed=seed,
            grid_size=grid_size,
            progress=False,
            on_samples=sharp.update,
        )
        metrics = run.metrics  # the typed EvaluationResult
        grid_file = f"{prefix}samples_{name}.png"
        save_image_grid(run.grid, output_dir / grid_file)
        results[name] = {
            "pipeline": str(path),
            "log_rapsd_distance": dataclasses.asdict(metrics.log_rapsd_distance),
            "slope": {"model": metrics.slope.model, "gap": metrics.slope.gap},
            "fwd": metrics.fwd,
            "sharp_fraction": sharp.fraction(),
            "histogram": sharp.histogram.tolist(),
            "sampling_seconds": metrics.sampling_seconds,
            "sample_grid": grid_file,
        }
        curves[name], grids[name], sampler = run.spectrum, run.grid, metrics.sampler
    plot_rapsd(curves, output_dir / files["rapsd"], reference="data", title=plot_title or "RAPSD: data vs models")
    return {
        "num_samples": num_samples,
        "num_inference_steps": num_inference_steps,
        "sampler": sampler,
        "sampling_seed": seed,
        "fwd_wavelet": reference.fwd.wavelet if reference.fwd is not None else None,
        "fwd_level": reference.fwd.level if reference.fwd is not None else None,
        "sharpness_threshold": SHARPNESS_THRESHOLD,
        "data": {
            "num_samples": reference.num_samples,
            "sharp_fraction": data_sharp.fraction(),
            "slope": slope_data,
            "histogram": data_sharp.histogram.tolist(),
        },
        "histogram_edges": data_sharp.edges.tolist(),
        "models": results,
        "spectra": {
            "frequencies": reference.spectrum.frequencies,
            "data": reference.spectrum.power,
            **{name: curve.power for name, curve in curves.items() if name != "data"},
        },
        "files": files,
        "_grids": grids,
    }


def plot_overview(evaluation: Mapping, path: str | os.PathLike, title: str, nrow: int = 8) -> Path:
    r"""
    One figure: sample grids (data, then each model), the RAPSD curves and the pixel-value histograms.

    Args:
        evaluation (`Mapping`): what `evaluate_models` returned (it needs `"_grids"`).
        path (`str` or `os.PathLike`): PNG to write.
        title (`str`): figure title.
        nrow (`int`, defaults to `8`): images per grid row.

    Returns:
        `Path`: the written file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffusers_specreg.plots import image_grid

    grids = evaluation["_grids"]
    names = list(grids)
    columns = len(names)
    figure = plt.figure(figsize=(3.2 * columns, 7.0), dpi=100)
    spec = figure.add_gridspec(2, columns, height_ratios=[1.1, 1.0])
    for j, name in enumerate(names):
        axis = figure.add_subplot(spec[0, j])
        array = image_grid(grids[name][:32], nrow=nrow)
        axis.imshow(array.squeeze(), cmap="gray" if array.ndim == 2 or array.shape[-1] == 1 else None)
        sharp = (
            evaluation["data"]["sharp_fraction"] if name == "data" else evaluation["models"][name]["sharp_fraction"]
        )
        label = (
            name
            if name == "data"
            else f"{name}\nlog-RAPSD {evaluation['models'][name]['log_rapsd_distance']['all']:.3f}"
        )
        axis.set_title(f"{label}\n|x|>0.9: {sharp:.2f}", fontsize=9)
        axis.axis("off")
    half = max(columns // 2, 1)
    axis = figure.add_subplot(spec[1, :half])
    frequencies = np.asarray(evaluation["spectra"]["frequencies"])
    for name in names:
        power = np.asarray(evaluation["spectra"][name])
        style = {"color": "black", "linewidth": 2.5} if name == "data" else {"linewidth": 1.5}
        axis.loglog(frequencies[1:], np.maximum(power[1:], 1e-12), label=name, **style)
    axis.set_xlabel("frequency (cycles / pixel)")
    axis.set_ylabel("mean power")
    axis.set_title("RAPSD", fontsize=10)
    axis.legend(fontsize=8)
    axis = figure.add_subplot(spec[1, half:])
    edges = np.asarray(evaluation["histogram_edges"])
    centers = (edges[1:] + edges[:-1]) / 2
    for name in names:
        counts = np.asarray(
            evaluation["data"]["histogram"] if name == "data" else evaluation["models"][name]["histogram"]
        )
        style = {"color": "black", "linewidth": 2.5} if name == "data" else {"linewidth": 1.5}
        axis.semilogy(centers, np.maximum(counts / max(counts.sum(), 1), 1e-6), label=name, **style)
    axis.set_xlabel("pixel value")
    axis.set_ylabel("fraction of pixels")
    axis.set_title("pixel-value histogram (sharpness)", fontsize=10)
    axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def public(evaluation: Mapping) -> dict:
    """`evaluate_models`'s result without the in-memory image grids (what goes into JSON)."""
    return {k: v for k, v in evaluation.items() if not k.startswith("_")}
