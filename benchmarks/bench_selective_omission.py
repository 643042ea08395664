"""Selective omission with spectrally anisotropic forward noise (SAGD, arXiv 2510.09660), measured side by side.

The training data carry Gaussian noise confined to a radial frequency band [a_c, b_c] (`train_spectral.py
--corrupt_band a_c-b_c --corrupt_strength s`, a fresh draw every time an image is seen). Two models are trained on
them with the same budget (steps, seed, model, optimiser), one at a time:

    (a) white forward noise                      --noise_spectrum white
    (b) forward noise with no support there      --noise_spectrum band:0-a_c

Both are sampled with their saved pipelines (`DDPMPipeline` for (a), `SAGDPipeline` for (b), DDPM ancestral
sampling, the same seeds), and every set of images is measured on the full 2-D FFT grid with the band definition of
`diffusers_specreg.noise` (normalised radius, 1 at the corner): the energy per pixel in the corrupted band and its
share of the non-DC energy. The RAPSD (`metrics.rapsd`, up to the axis Nyquist) of every set is plotted, and the
log-RAPSD distance to the clean data is split into the pass band (below a_c) and the stop band.

Reference rows: the clean data, the corrupted data (as trained on, and clamped to [-1, 1] as the pipelines clamp
their output), and (a) with its samples low-pass filtered after the fact (the band zeroed), a baseline that costs
nothing.

Reading the result: see `READING` below (also written into the JSON).

    python benchmarks/bench_selective_omission.py                          # ~11 min on 2 CPU cores
    python benchmarks/bench_selective_omission.py --max_train_steps 4 --num_samples 4 --num_inference_steps 4 \\
        --output /tmp/smoke.json                                           # plumbing check, ~1 min

Writes `benchmarks/results/selective_omission_<device>.json`, a RAPSD plot (`.png`) and a sample grid
(`_samples.png`) next to it; the trained models go to `benchmarks/results/tmp/` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import diffusers
import numpy as np
import torch
from diffusers import DDPMScheduler

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(ROOT))

from diffusers_specreg import metrics, plots  # noqa: E402
from diffusers_specreg.data import make_checkerboards, make_digits  # noqa: E402
from diffusers_specreg.noise import NoiseSpectrum, corrupt_band  # noqa: E402

DATASETS = ("digits", "checkerboards")
READING = (
    "With `band:0-a_c`, Σ_w is rank-deficient and the model only learns the score projected onto range(Σ_w) (arXiv "
    "2510.09660). Along the forward process the band of x_t is √ᾱ_t times that of x_0, noise-free, and the ε-target "
    "is zero there. The sampler draws x_T and every injected noise from N(0, Σ_w), so the band starts at exactly zero "
    "(instead of √ᾱ_T x_0) and no noise is injected there; with a perfect network (zero ε̂ in the band) it stays zero "
    "to the end. A sample's band energy can only come from the network's residual output in the band (amplified by "
    "1/√ᾱ_t in x̂₀ at high noise) and from the clipping of x̂₀ (a nonlinearity that mixes bands). Model (b) therefore "
    "removes the band from its samples whatever the data hold there, the clean content included: a lower band energy "
    "for (b) is expected by construction and does not by itself show that it learnt the clean data better. What the "
    "experiment can show is the pass band: does (b) reproduce the clean data below a_c at least as well as (a), and "
    "better than (a) low-pass filtered after sampling? Both are reported."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits", choices=DATASETS, help="built-in data (default: digits)")
    parser.add_argument("--resolution", type=int, default=32, help="image side (default: 32)")
    parser.add_argument("--corrupt_band", default="0.6-1", help="corrupted radial band A-B in [0, 1] (default: 0.6-1)")
    parser.add_argument("--corrupt_strength", type=float, default=0.5, help="std of the band noise (default: 0.5)")
    parser.add_argument("--max_train_steps", type=int, default=900, help="steps per model (default: 900)")
    parser.add_argument("--train_batch_size", type=int, default=16, help="batch size (default: 16)")
    parser.add_argument("--learning_rate", type=float, default=3e-4, help="peak learning rate (default: 3e-4)")
    parser.add_argument("--lr_warmup_steps", type=int, default=50, help="warm-up steps (default: 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of training, corruption and sampling (default: 0)")
    parser.add_argument("--num_samples", type=int, default=64, help="samples per model (default: 64)")
    parser.add_argument("--num_inference_steps", type=int, default=100, help="DDPM sampling steps (default: 100)")
    parser.add_argument("--num_reference", type=int, default=512, help="data images measured (default: 512)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default: 1)")
    parser.add_argument("--output", default=None, help="JSON path (default: results/selective_omission_<dev>.json)")
    parser.add_argument("--work_dir", default=None, help="where the models go (default: results/tmp/...)")
    return parser.parse_args(argv)


def parse_band(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split("-"))
    except ValueError:
        raise ValueError(f"--corrupt_band {text!r} must look like 'A-B' with 0 <= A < B <= 1, e.g. 0.6-1.") from None
    if not 0 < low < high <= 1:
        raise ValueError(f"--corrupt_band {text!r} needs 0 < A < B <= 1 (band:0-A must be a non-empty band).")
    return low, high


# ---------------------------------------------------------------------------------------------------- records


def git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        return head.stdout.strip() + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def machine_info(device: str, threads: int) -> dict:
    import accelerate

    name = torch.cuda.get_device_name(0) if device == "cuda" else (platform.processor() or platform.machine())
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "device_name": f"{name} ({os.cpu_count()} cores, {threads} torch threads per process)",
        "machine": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "accelerate": accelerate.__version__,
        "numpy": np.__version__,
        "git_commit": git_commit(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# ---------------------------------------------------------------------------------------------------- training


def training_command(args, spectrum: str, output_dir: Path, device: str) -> list[str]:
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1"]
    launcher += ["--dynamo_backend", "no", "--mixed_precision", "no"] + (["--cpu"] if device == "cpu" else [])
    options = {
        "--builtin_dataset": args.dataset,
        "--resolution": args.resolution,
        "--model_preset": "small",
        "--max_train_steps": args.max_train_steps,
        "--train_batch_size": args.train_batch_size,
        "--learning_rate": args.learning_rate,
        "--lr_warmup_steps": args.lr_warmup_steps,
        "--seed": args.seed,
        "--corrupt_band": args.corrupt_band,
        "--corrupt_strength": args.corrupt_strength,
        "--noise_spectrum": spectrum,
        "--output_dir": output_dir,
        # the script's own sample log and evaluation are not needed: keep them minimal
        "--eval_num_samples": 0,
        "--eval_batch_size": 2,
        "--ddpm_num_inference_steps": 2,
        "--save_images_epochs": 10_000,
        "--save_model_epochs": 10_000,
        "--checkpointing_steps": 10_000_000,
    }
    argv = [str(ROOT / "train_spectral.py")] + [str(v) for item in options.items() for v in item]
    return launcher + argv + ["--overwrite_output_dir"]


def train(command: list[str], log_path: Path, threads: int) -> float:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    with open(log_path, "w") as log:
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"training failed ({result.returncode}); see {log_path}:\n{shlex.join(command)}")
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------- measuring


def load_pipeline(folder: Path, device: str):
    from diffusers_specreg import evaluate
    from diffusers_specreg.formulations import class_name

    name = class_name(json.loads((folder / "model_index.json").read_text())["_class_name"])
    if name not in ("SAGDPipeline", "DDPMPipeline"):
        raise ValueError(f"{folder} holds a {name}; expected DDPMPipeline or SAGDPipeline.")
    pipeline = evaluate.load_pipeline(str(folder), device=device)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def generate(pipeline, num_samples: int, steps: int, seed: int, batch_size: int = 64) -> torch.Tensor:
    """`[N, C, H, W]` samples in [-1, 1] (the pipelines clamp their output), one generator per image."""
    images = []
    for start in range(0, num_samples, batch_size):
        count = min(batch_size, num_samples - start)
        generators = [torch.Generator().manual_seed(seed * 100_003 + start + i) for i in range(count)]
        out = pipeline(batch_size=count, generator=generators, num_inference_steps=steps, output_type="pt").images
        images.append(out.float().cpu() * 2 - 1)
    return torch.cat(images)


def band_mask(band: tuple[float, float], shape: tuple[int, int]) -> torch.Tensor:
    """The band's frequencies on the full FFT grid, exactly as `corrupt_band` and `band:a-b` define them."""
    return NoiseSpectrum.band(*band).weights(shape, dtype=torch.float64) > 0


def low_pass(images: torch.Tensor, band: tuple[float, float]) -> torch.Tensor:
    """Zero the band (an ideal filter on the DFT grid)."""
    keep = (~band_mask(band, tuple(images.shape[-2:]))).to(torch.float64)
    spectrum = torch.fft.fft2(images.double(), norm="ortho") * keep
    return torch.fft.ifft2(spectrum, norm="ortho").real.float()


def measure(images: torch.Tensor, band: tuple[float, float], clean_psd: np.ndarray | None) -> dict:
    """Band energy on the full grid, its share of the non-DC energy, and RAPSD distances to the clean data."""
    height, width = images.shape[-2:]
    power = torch.fft.fft2(images.double(), norm="ortho").abs().square().mean(dim=1)  # [N, H, W], Parseval: Σ = Σx²
    mask = band_mask(band, (height, width))
    pixels = height * width
    band_energy = power[:, mask].sum(-1) / pixels  # per pixel
    non_dc = (power.flatten(1).sum(-1) - power[:, 0, 0]) / pixels
    freqs, rapsd = metrics.rapsd(images)
    psd = rapsd.mean(0).numpy()
    result = {
        "band_energy_per_pixel": float(band_energy.mean()),
        "band_share_of_non_dc_energy": float((band_energy.sum() / non_dc.sum()).item()),
        "non_dc_energy_per_pixel": float(non_dc.mean()),
        "rapsd": psd.tolist(),
    }
    if clean_psd is not None:
        # RAPSD bins are fractions of the axis Nyquist; the normalised radius r is f / (√2 · 0.5): edge r·√2.
        edge = band[0] * math.sqrt(2)
        distance = metrics.log_rapsd_distance(psd, clean_psd, bands={"pass": (0.0, edge), "stop": (edge, 1.0)})
        result["log_rapsd_distance_to_clean"] = distance
    return result


# ---------------------------------------------------------------------------------------------------- outputs


def print_table(rows: dict[str, dict]) -> None:
    header = f"{'set':<36} {'band E/px':>10} {'band share':>10} {'non-DC E/px':>11} {'dRAPSD pass':>11} {'stop':>7}"
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        distance = row.get("log_rapsd_distance_to_clean", {})
        passband = f"{distance['pass']:.3f}" if distance else "-"
        stopband = f"{distance['stop']:.3f}" if distance else "-"
        print(
            f"{name:<36} {row['band_energy_per_pixel']:>10.4f} {row['band_share_of_non_dc_energy']:>10.3f} "
            f"{row['non_dc_energy_per_pixel']:>11.4f} {passband:>11} {stopband:>7}"
        )


def plot_results(rows: dict[str, dict], freqs: np.ndarray, band: tuple[float, float], path: Path, title: str):
    curves = {name: (freqs, np.asarray(row["rapsd"])) for name, row in rows.items()}
    figure = plots.plot_rapsd(curves, reference="clean data", title=title, figsize=(7.0, 5.0))
    axes = figure.axes[0]
    # a band zeroed after sampling would pull the axis down to ~1e-16: show 2 decades below the clean data instead
    axes.set_ylim(bottom=float(np.min(np.asarray(rows["clean data"]["rapsd"])[1:])) / 100)
    axes.axvspan(band[0] * math.sqrt(0.5), min(band[1] * math.sqrt(0.5), 0.5), color="red", alpha=0.08)
    axes.text(
        band[0] * math.sqrt(0.5),
        0.03,
        "corrupted band ",
        color="red",
        fontsize=8,
        ha="right",
        transform=axes.get_xaxis_transform(),
    )
    figure.savefig(path)
    return path


def plot_samples(sets: dict[str, torch.Tensor], path: Path, per_row: int = 8) -> Path:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(per_row * 0.9, len(sets) * 1.0 + 0.3), dpi=100)
    for row, (name, images) in enumerate(sets.items()):
        for col in range(min(per_row, images.shape[0])):
            axes = figure.add_subplot(len(sets), per_row, row * per_row + col + 1)
            axes.imshow(images[col, 0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
            axes.set_xticks([])
            axes.set_yticks([])
            if col == 0:
                axes.set_ylabel(name, fontsize=6, rotation=0, ha="right", va="center")
    figure.subplots_adjust(left=0.22, right=0.99, top=0.99, bottom=0.01, wspace=0.05, hspace=0.05)
    figure.savefig(path)
    return path


# ---------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    band = parse_band(args.corrupt_band)
    torch.set_num_threads(args.threads)
    diffusers.utils.logging.disable_progress_bar()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    output = Path(args.output) if args.output else RESULTS / f"selective_omission_{device}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir) if args.work_dir else RESULTS / "tmp" / "selective_omission"
    work.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "selective_omission",
        "paper": "arXiv 2510.09660",
        "machine": machine_info(device, args.threads),
    }
    record["config"] = {k: v for k, v in vars(args).items() if k not in ("output", "work_dir")}
    record["invocation"] = shlex.join([sys.executable, *sys.argv])

    # 1. the two trainings, one at a time, equal budget: only --noise_spectrum differs
    models = {"(a) white forward noise": "white", f"(b) forward noise band:0-{band[0]:g}": f"band:0-{band[0]:g}"}
    runs = {}
    for index, (name, spectrum) in enumerate(models.items()):
        folder = work / ("white" if spectrum == "white" else "omit")
        command = training_command(args, spectrum, folder, device)
        print(f"[{index + 1}/{len(models)}] training {name}: {args.max_train_steps} steps ...", flush=True)
        seconds = train(command, work / f"{folder.name}.log", args.threads)
        print(f"      done in {seconds:.0f} s", flush=True)
        runs[name] = {"noise_spectrum": spectrum, "folder": folder, "command": shlex.join(command), "seconds": seconds}

    # 2. the data: clean, and one draw of the corruption the models saw
    if args.dataset == "digits":
        data = make_digits(args.resolution)
    else:
        data = make_checkerboards(args.num_reference, args.resolution, seed=args.seed)
    subset = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(args.seed))[: args.num_reference]
    clean = data[subset]
    corrupted = corrupt_band(clean, band, args.corrupt_strength, torch.Generator().manual_seed(args.seed + 1))
    clean_psd = metrics.rapsd(clean)[1].mean(0).numpy()

    # 3. samples of both models (same seeds), measured like the data
    sets = {
        "clean data": clean,
        "corrupted data (trained on)": corrupted,
        "corrupted data, clamped to [-1, 1]": corrupted.clamp(-1, 1),
    }
    pipelines = {}
    for name, run in runs.items():
        start = time.perf_counter()
        pipelines[name] = load_pipeline(run["folder"], device)
        run["pipeline_class"] = type(pipelines[name]).__name__
        sets[name] = generate(pipelines[name], args.num_samples, args.num_inference_steps, args.seed)
        run["sampling_seconds"] = time.perf_counter() - start
    a_name, b_name = list(runs)
    # diagnostic: (b) without clipping x̂₀ to [-1, 1], the one step of the sampler that mixes bands
    unclipped = pipelines[b_name]
    unclipped.scheduler = DDPMScheduler.from_config(unclipped.scheduler.config, clip_sample=False)
    no_clip_name = f"{b_name[:3]} sampled without x0 clipping"
    sets[no_clip_name] = generate(unclipped, args.num_samples, args.num_inference_steps, args.seed)
    # baseline: (a) with the band removed after sampling, no training involved
    sets[f"{a_name[:3]} + band zeroed after sampling"] = low_pass(sets[a_name], band)
    rows = {name: measure(images, band, None if name == "clean data" else clean_psd) for name, images in sets.items()}

    # 4. report
    holds = rows[b_name]["band_energy_per_pixel"] < rows[a_name]["band_energy_per_pixel"]
    pass_a = rows[a_name]["log_rapsd_distance_to_clean"]["pass"]
    pass_b = rows[b_name]["log_rapsd_distance_to_clean"]["pass"]
    print()
    print(
        f"Selective omission, {args.dataset} {args.resolution}x{args.resolution}, corrupted band {band} "
        f"(normalised radius), strength {args.corrupt_strength}; {args.max_train_steps} steps per model, "
        f"{args.num_samples} samples, {args.num_inference_steps} DDPM steps"
    )
    print_table(rows)
    print()
    print(f"Expectation (b) band energy < (a): {'holds' if holds else 'does NOT hold'}")
    print(f"Pass band (below the corrupted band): dRAPSD to clean data (a) {pass_a:.3f}, (b) {pass_b:.3f}")
    print("(band E/px: energy per pixel in the corrupted band, full FFT grid; band share: of the non-DC energy;")
    print(" dRAPSD: mean |log10 P - log10 P_clean| over RAPSD bins below / above the band edge)")

    freqs = metrics.radial_frequencies(args.resolution, args.resolution)
    png = output.with_suffix(".png")
    plot_results(rows, freqs, band, png, f"RAPSD, corrupted band {band[0]:g}-{band[1]:g} shaded")
    grid = plot_samples(sets, output.with_name(output.stem + "_samples.png"))
    record["runs"] = {
        name: {k: (str(v) if isinstance(v, Path) else v) for k, v in run.items()} for name, run in runs.items()
    }
    record["rapsd_frequencies"] = freqs.tolist()
    record["results"] = rows
    record["expectation"] = {"statement": "(b) has less energy in the corrupted band than (a)", "holds": bool(holds)}
    record["pass_band_log_rapsd_distance_to_clean"] = {a_name: pass_a, b_name: pass_b}
    record["reading"] = READING
    record["plots"] = {"rapsd": png.name, "samples": grid.name}
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"Wrote {output}, {png.name} and {grid.name}")
    return record


if __name__ == "__main__":
    main()
