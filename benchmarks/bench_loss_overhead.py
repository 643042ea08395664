"""Cost of each spectral loss relative to one UNet training step, measured side by side in one run.

arXiv 2603.02447 calls the overhead of its spectral losses "negligible" without a figure. This script measures it:
forward + backward of each loss on an x̂₀-sized batch (`[B, 3, R, R]`, gradient w.r.t. the prediction) against one
forward + backward of the default `train_unconditional.py` `UNet2DModel` (block widths 128,128,256,256,512,512,
attention in the 5th down / 2nd up block) on the same batch with an MSE loss. Timings are interleaved round by round
(UNet step, then every loss) and the median over rounds is reported, so drifting machine load affects all of them
alike; compare the ratios, not the absolute times, between machines.

    python benchmarks/bench_loss_overhead.py --device cpu --repeats 3
    python benchmarks/bench_loss_overhead.py --device cuda --repeats 20

Writes `benchmarks/results/loss_overhead_<device>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers_specreg.losses import FourierLoss, WaveletLoss  # noqa: E402

LOSSES = {
    "amplitude": lambda: FourierLoss(mode="amplitude"),
    "amplitude_phase": lambda: FourierLoss(mode="amplitude_phase"),
    "amplitude_weighted_phase": lambda: FourierLoss(mode="amplitude_weighted_phase"),
    "wavelet_haar_L3": lambda: WaveletLoss(wave="haar", levels=3),
    "wavelet_bior1.3_L3": lambda: WaveletLoss(wave="bior1.3", levels=3),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. 'cpu' or 'cuda' (default: cpu)")
    parser.add_argument("--batch_size", type=int, default=16, help="batch size (default: 16, as train_unconditional)")
    parser.add_argument("--resolution", type=int, default=64, help="image side (default: 64, as train_unconditional)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds; the median is reported (default: 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default: 1)")
    parser.add_argument(
        "--loss_iterations", type=int, default=5, help="loss steps per round, averaged, as they are short (default: 5)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--output", default=None, help="JSON path (default: benchmarks/results/loss_overhead_<device>.json)"
    )
    return parser.parse_args(argv)


def build_unet(resolution: int):
    from diffusers import UNet2DModel

    # the default model of Diffusers' examples/unconditional_image_generation/train_unconditional.py
    return UNet2DModel(
        sample_size=resolution,
        in_channels=3,
        out_channels=3,
        layers_per_block=2,
        block_out_channels=(128, 128, 256, 256, 512, 512),
        down_block_types=(
            "DownBlock2D",
            "DownBlock2D",
            "DownBlock2D",
            "DownBlock2D",
            "AttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(function, device: torch.device, iterations: int = 1) -> float:
    """Mean wall time of `function()` in milliseconds over `iterations` calls."""
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        function()
    _synchronize(device)
    return (time.perf_counter() - start) * 1000.0 / iterations


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch.cuda.is_available() is False.")
    torch.manual_seed(args.seed)

    shape = (args.batch_size, 3, args.resolution, args.resolution)
    unet = build_unet(args.resolution).to(device)
    unet.train()
    clean = torch.randn(shape, device=device)
    noise = torch.randn(shape, device=device)
    timesteps = torch.randint(0, 1000, (args.batch_size,), device=device)

    def unet_step():
        unet.zero_grad(set_to_none=True)
        prediction = unet(clean + noise, timesteps).sample
        torch.nn.functional.mse_loss(prediction, noise).backward()

    prediction = torch.randn(shape, device=device, requires_grad=True)
    losses = {name: factory().to(device) for name, factory in LOSSES.items()}

    def loss_step(loss):
        prediction.grad = None
        loss(prediction, clean).backward()

    timings = {"unet_step": []} | {name: [] for name in losses}
    for round_index in range(args.warmup + args.repeats):
        unet_ms = time_call(unet_step, device)
        loss_ms = {
            name: time_call(lambda ls=loss: loss_step(ls), device, args.loss_iterations)
            for name, loss in losses.items()
        }
        if round_index >= args.warmup:
            timings["unet_step"].append(unet_ms)
            for name, value in loss_ms.items():
                timings[name].append(value)

    medians = {name: statistics.median(values) for name, values in timings.items()}
    unet_ms = medians["unet_step"]
    print(
        f"device: {device_description(device)} | torch {torch.__version__} | batch {args.batch_size} | "
        f"{args.resolution}x{args.resolution} | {args.repeats} rounds (median)"
    )
    print(f"{'term':<36}{'ms':>12}{'% of UNet step':>18}")
    print(f"{'UNet2DModel fwd+bwd':<36}{unet_ms:>12.2f}{100.0:>18.2f}")
    results = {}
    for name in losses:
        ratio = 100.0 * medians[name] / unet_ms
        results[name] = {"ms": medians[name], "percent_of_unet_step": ratio, "all_ms": timings[name]}
        print(f"{name + ' fwd+bwd':<36}{medians[name]:>12.3f}{ratio:>18.2f}")

    import diffusers

    record = {
        "benchmark": "loss_overhead",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": device_description(device),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "batch_size": args.batch_size,
        "resolution": args.resolution,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "loss_iterations": args.loss_iterations,
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "unet_step_ms": unet_ms,
        "unet_step_all_ms": timings["unet_step"],
        "losses": results,
    }
    output = (
        Path(args.output)
        if args.output
        else (Path(__file__).resolve().parent / "results" / f"loss_overhead_{device.type}.json")
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {output}")
    return record


if __name__ == "__main__":
    main()
