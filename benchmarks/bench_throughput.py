"""Training throughput (images/s) of `train_spectral.py` against Diffusers' `train_unconditional.py`, same configuration.

Both scripts train the same `UNet2DModel` config (`--model_config_name_or_path`) on the same image folder (digits
written as RGB PNGs) for one epoch with the same batch size, optimiser, schedule, precision and device. Speed is read
from the tensorboard event files both scripts write once per optimiser step (`accelerator.log`), so start-up,
sampling and saving are not counted: images/s = batch x steps / wall time between step `--skip_steps` and the last
step. Runs are interleaved round by round (each configuration once per round, as separate processes one after
another, the order rotated every round) and the median over rounds is reported, with paired ratios: each run over
the same round's stock run (and over the same round's `train_spectral.py --spectral_loss none` run), median over
rounds, robust to load drift.

Configurations: the stock script; `train_spectral.py --spectral_loss none` (λ = 0, the MSE objective the stock
script trains); and `train_spectral.py --spectral_loss L` for every image loss L of `--losses` (default: all of
amplitude, amplitude_phase, amplitude_weighted_phase, wavelet) at its default λ and weighting.

    python benchmarks/bench_throughput.py                  # stock script from ../shared/stock/ when it exists
    python benchmarks/bench_throughput.py --rounds 1 --num_images 96 --losses amplitude   # quick end-to-end check
    python benchmarks/bench_throughput.py --device cuda --mixed_precision bf16 --model_preset default --resolution 64

`--stock_script` defaults to `../shared/stock/train_unconditional.py` next to the repository (Diffusers'
`examples/unconditional_image_generation/train_unconditional.py` with a torchvision stand-in, see its README); the
script is not part of the diffusers wheel. When it is missing or cannot start, the reason is printed and only
train_spectral.py's configurations are reported (`--stock_script none` skips it on purpose). `--device cpu` hides
any GPU from both scripts; `--device cuda` needs one. Writes `benchmarks/results/throughput_<device>.json`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    RESULTS_DIR,
    ROOT,
    TRAIN_SCRIPT,
    machine_info,
    printable_command,
    run_training,
    steady_rate,
    tensorboard_step_times,
    write_json,
)

IMAGE_LOSSES = ("amplitude", "amplitude_phase", "amplitude_weighted_phase", "wavelet")
STOCK = "train_unconditional"
REFERENCE = "train_spectral none"
DEFAULT_STOCK_SCRIPT = ROOT.parent / "shared" / "stock" / "train_unconditional.py"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stock_script",
        default=str(DEFAULT_STOCK_SCRIPT),
        help="Diffusers' train_unconditional.py ('none' to skip; default: ../shared/stock/train_unconditional.py)",
    )
    parser.add_argument(
        "--losses",
        nargs="*",
        default=list(IMAGE_LOSSES),
        choices=IMAGE_LOSSES,
        help="spectral losses timed besides --spectral_loss none (default: all image losses)",
    )
    parser.add_argument("--resolution", type=int, default=32, help="image side (default: 32)")
    parser.add_argument("--num_images", type=int, default=640, help="images in the folder = steps x batch (640)")
    parser.add_argument("--train_batch_size", type=int, default=16, help="batch size (default: 16)")
    parser.add_argument("--model_preset", default="small", choices=["small", "default"], help="UNet size (small)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds; medians reported (default: 4)")
    parser.add_argument("--skip_steps", type=int, default=5, help="first steps not timed (default: 5)")
    parser.add_argument(
        "--mixed_precision", default="no", choices=["no", "fp16", "bf16"], help="passed to both scripts (default: no)"
    )
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="cpu hides any GPU from both scripts (default: cpu)"
    )
    parser.add_argument("--output", default=None, help="JSON path (default: results/throughput_<device>.json)")
    parser.add_argument("--work_dir", default=None, help="folder for data and runs (default: a temporary folder)")
    return parser.parse_args(argv)


def write_image_folder(folder: Path, num_images: int, resolution: int) -> Path:
    """scikit-learn digits (repeated as needed) as RGB PNGs: data both scripts read the same way."""
    from PIL import Image

    from diffusers_specreg.data import make_digits

    folder.mkdir(parents=True, exist_ok=True)
    digits = make_digits(resolution, channels=3)
    for i in range(num_images):
        array = ((digits[i % digits.shape[0]].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        Image.fromarray(array).save(folder / f"{i:05d}.png")
    return folder


def write_model_config(folder: Path, preset: str, resolution: int) -> Path:
    from diffusers import UNet2DModel

    from diffusers_specreg.training import unet_config

    UNet2DModel(**unet_config(preset, resolution, 3)).save_config(folder)
    return folder


def stock_problem(script: str | None) -> str | None:
    """Why the stock script cannot run here, or `None` when `--help` works."""
    if script is None or script.lower() == "none":
        return "--stock_script none given"
    if not Path(script).is_file():
        return (
            f"the stock script {script} is missing (pass --stock_script PATH to Diffusers' "
            "examples/unconditional_image_generation/train_unconditional.py)"
        )
    result = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"{script} does not start here: {last}"
    return None


def child_environment(device: str) -> dict[str, str]:
    """`--device cpu` hides GPUs from the children; `--device cuda` checks that there is one."""
    if device == "cpu":
        return {"CUDA_VISIBLE_DEVICES": ""}
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible here.")
    return {}


def paired_ratios(rates: dict[str, list[dict]], reference: str) -> dict[str, float]:
    """Median over rounds of each run's images/s over the same round's `reference` run."""
    return {
        name: statistics.median(
            r["images_per_second"] / b["images_per_second"] for r, b in zip(runs, rates[reference])
        )
        for name, runs in rates.items()
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    extra_env = child_environment(args.device)
    temporary = None
    if args.work_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="specreg_throughput_")
        work = Path(temporary.name)
    else:
        work = Path(args.work_dir)
    data = write_image_folder(work / "images", args.num_images, args.resolution)
    config = write_model_config(work / "unet_config", args.model_preset, args.resolution)
    shared = [
        "--train_data_dir",
        str(data),
        "--resolution",
        str(args.resolution),
        "--model_config_name_or_path",
        str(config),
        "--train_batch_size",
        str(args.train_batch_size),
        "--num_epochs",
        "1",
        "--learning_rate",
        "1e-4",
        "--lr_warmup_steps",
        "10",
        "--ddpm_num_inference_steps",
        "10",
        "--eval_batch_size",
        "4",
        "--save_images_epochs",
        "1",
        "--save_model_epochs",
        "1",
        "--checkpointing_steps",
        "100000",
        "--logger",
        "tensorboard",
        "--mixed_precision",
        args.mixed_precision,
    ]
    ours = [str(TRAIN_SCRIPT), "--seed", "0", "--eval_num_samples", "0", "--spectral_loss"]
    scripts = {REFERENCE: ours + ["none"]} | {f"train_spectral {loss}": ours + [loss] for loss in args.losses}
    problem = stock_problem(args.stock_script)
    if problem is None:
        scripts = {STOCK: [args.stock_script]} | scripts
        print(f"stock script: {args.stock_script}", flush=True)
    else:
        print(f"[skip {STOCK}] {problem}. Reporting train_spectral.py only.", flush=True)

    rates: dict[str, list[dict]] = {name: [] for name in scripts}
    commands = {}
    order = list(scripts)
    for round_index in range(args.rounds):
        # the order rotates every round, so no configuration always runs first (or right after another one)
        shift = round_index % len(order)
        for name in order[shift:] + order[:shift]:
            script = scripts[name]
            output_dir = work / f"round{round_index}" / name.replace(" ", "_")
            argv_run = [sys.executable, script[0], *shared, "--output_dir", str(output_dir), *script[1:]]
            commands[name] = printable_command(argv_run).replace(str(work), "$WORK")
            print(f"[round {round_index}] {name}", flush=True)
            seconds = run_training(argv_run, output_dir.with_suffix(".log"), extra_env=extra_env)
            rate = steady_rate(tensorboard_step_times(output_dir / "logs"), args.skip_steps, args.train_batch_size)
            rate["process_seconds"] = seconds
            rates[name].append(rate)
            print(f"  {rate['images_per_second']:.1f} images/s ({rate['seconds_per_step']:.3f} s/step)", flush=True)

    medians = {name: statistics.median(r["images_per_second"] for r in runs) for name, runs in rates.items()}
    # paired: each run against the same round's reference run, then the median over rounds (robust to load drift)
    paired = paired_ratios(rates, REFERENCE)
    paired_stock = paired_ratios(rates, STOCK) if STOCK in rates else None
    header = f"{'configuration':<40}{'images/s (median)':>18}{'ratio to stock':>16}{'ratio to λ=0':>14}"
    print(f"\n{header}")
    for name, value in medians.items():
        to_stock = f"{paired_stock[name]:.3f}" if paired_stock else "n/a"
        print(f"{name:<40}{value:>18.2f}{to_stock:>16}{paired[name]:>14.3f}")
    if paired_stock:
        print(
            f"train_spectral.py at λ=0 / train_unconditional.py images/s (paired, target >= 1.0): "
            f"{paired_stock[REFERENCE]:.3f}"
        )
    record = {
        "benchmark": "throughput",
        **machine_info(args.device),
        "command": "python benchmarks/bench_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {
            "resolution": args.resolution,
            "num_images": args.num_images,
            "train_batch_size": args.train_batch_size,
            "model_preset": args.model_preset,
            "rounds": args.rounds,
            "skip_steps": args.skip_steps,
            "mixed_precision": args.mixed_precision,
            "losses": args.losses,
            "data": "scikit-learn digits as RGB PNGs",
        },
        "stock_script": args.stock_script,
        "stock_skipped_because": problem,
        "commands": commands,
        "runs": rates,
        "images_per_second_median": medians,
        "paired_ratio_to_train_spectral_none": paired,
        "paired_ratio_to_stock": paired_stock,
    }
    if paired_stock:
        record["train_spectral_none_over_stock_paired"] = paired_stock[REFERENCE]
    output = write_json(Path(args.output) if args.output else RESULTS_DIR / f"throughput_{args.device}.json", record)
    print(f"wrote {output}")
    if temporary is not None:
        temporary.cleanup()
    return record


if __name__ == "__main__":
    main()
