"""Evaluation throughput: the spectral metrics of N generated 64x64 images against N data images, sampling excluded.

What `python -m diffusers_specreg.evaluate` computes once the images exist, in the same streaming pass: the data
statistics (`ReferenceStatistics.from_images`: RAPSD sums and FWD packet moments), the generated images' RAPSD and
FWD moments, then the log-RAPSD distances, spectral slopes and the FWD (one `D x D` Fréchet distance per packet).
Images are synthetic (seeded smoothed noise in [-1, 1], made batch by batch and not timed), so nothing is stored:
memory should not grow with N. Each N runs in a fresh process, which reports

- seconds of the streaming updates (both sets) and of the final `compute` (the per-packet Fréchet distances),
  and images/s over the updates (2N images: data and generated);
- peak RSS of that process (`resource.getrusage`, torch's tensors included) and its growth over the peak after the
  imports; with `--python_memory` also the peak of Python-level allocations (`tracemalloc`, which does not see
  torch's buffers and slows the run, so the timings of such a run are not the ones to report).

    python benchmarks/bench_metric_throughput.py                         # N = 1000 and 10000, 64x64 RGB
    python benchmarks/bench_metric_throughput.py --num_images 200 1000   # quick check

The FWD level is fixed (`--fwd_level`, default 2: 16x16 packets, 768 features per packet for RGB) so that both N
compute the same statistics; the evaluate command's own default level depends on N (deeper for fewer samples).
Writes `benchmarks/results/metric_throughput_<device>.json`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, machine_info, write_json  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_images", type=int, nargs="+", default=[1000, 10000], help="N per run (1000 10000)")
    parser.add_argument("--resolution", type=int, default=64, help="image side (default: 64)")
    parser.add_argument("--channels", type=int, default=3, help="image channels (default: 3)")
    parser.add_argument("--batch_size", type=int, default=100, help="images per update (default: 100)")
    parser.add_argument("--fwd_level", type=int, default=2, help="FWD packet level (default: 2)")
    parser.add_argument("--device", default="cpu", help="where the statistics are accumulated (default: cpu)")
    parser.add_argument("--output", default=None, help="JSON path (default: results/metric_throughput_<device>.json)")
    parser.add_argument(
        "--python_memory", action="store_true", help="also trace Python allocations (tracemalloc; slows the run)"
    )
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # one N, in a fresh process
    return parser.parse_args(argv)


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def image_batches(num_images: int, batch_size: int, channels: int, resolution: int, seed: int):
    """Seeded batches of smoothed noise in [-1, 1] (a falling spectrum, like images), made on the fly."""
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, num_images, batch_size):
        count = min(batch_size, num_images - start)
        x = torch.randn(count, channels, resolution, resolution, generator=generator)
        x = (x + x.roll(1, -1) + x.roll(1, -2) + x.roll((1, 1), (-2, -1))) / 4.0
        yield x.clamp(-1.0, 1.0)


def run_one(args: argparse.Namespace, num_images: int) -> dict:
    """The metrics of one N in this process: seconds, images/s, memory."""
    import copy

    from diffusers_specreg.evaluate.statistics import ReferenceStatistics
    from diffusers_specreg.metrics import RAPSD, log_rapsd_distance, spectral_slope

    rss_start = peak_rss_mib()
    if args.python_memory:
        tracemalloc.start()
    shape = (args.channels, args.resolution)

    # 1. data statistics: one streaming pass (the time spent making the synthetic images is not counted)
    make_seconds = 0.0

    def made(batches):
        nonlocal make_seconds
        iterator = iter(batches)
        while True:
            tick = time.perf_counter()
            batch = next(iterator, None)
            make_seconds += time.perf_counter() - tick
            if batch is None:
                return
            yield batch.to(args.device)

    start = time.perf_counter()
    reference = ReferenceStatistics.from_images(
        made(image_batches(num_images, args.batch_size, *shape, seed=0)),
        num_images,
        args.batch_size,
        fwd_level=args.fwd_level,
        progress=False,
    )
    # 2. generated images: the same accumulators as evaluate_against
    spectrum = RAPSD()
    fwd = copy.deepcopy(reference.fwd)
    for batch in made(image_batches(num_images, args.batch_size, *shape, seed=1)):
        spectrum.update(batch)
        fwd.update(batch, real=False)
    update_seconds = time.perf_counter() - start - make_seconds

    # 3. the distances: log-RAPSD, slopes, FWD (per-packet Fréchet distances)
    start = time.perf_counter()
    psd = spectrum.compute()
    distances = log_rapsd_distance(psd, reference.spectrum)
    gap = spectral_slope(psd.frequencies, psd) - spectral_slope(reference.spectrum.frequencies, reference.spectrum)
    fwd_value = fwd.compute()
    compute_seconds = time.perf_counter() - start
    python_peak = None
    if args.python_memory:
        python_peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    rss_peak = peak_rss_mib()
    return {
        "num_images": num_images,
        "update_seconds": update_seconds,
        "compute_seconds": compute_seconds,
        "total_seconds": update_seconds + compute_seconds,
        "images_per_second_updates": 2 * num_images / update_seconds,
        "images_per_second_total": 2 * num_images / (update_seconds + compute_seconds),
        "peak_rss_mib": rss_peak,
        "rss_growth_mib": rss_peak - rss_start,
        "python_peak_mib": python_peak,
        "fwd_level": fwd.level,
        "fwd": fwd_value,
        "log_rapsd_all": distances["all"],
        "slope_gap": gap,
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(run_one(args, args.worker)), flush=True)
        return {}
    rows = []
    for num_images in args.num_images:
        command = [sys.executable, __file__, "--worker", str(num_images)]
        for key in ("resolution", "channels", "batch_size", "fwd_level", "device"):
            command += [f"--{key}", str(getattr(args, key))]
        command += ["--python_memory"] if args.python_memory else []
        print(f"[N = {num_images}] running in a fresh process ...", flush=True)
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"worker for N = {num_images} failed:\n{result.stderr[-3000:]}")
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(
        f"\n{args.channels}x{args.resolution}x{args.resolution} images, FWD Haar level {args.fwd_level}, "
        f"batch {args.batch_size}, device {args.device}, torch threads {torch.get_num_threads()}"
    )
    header = (
        f"{'N':>7}{'update s':>10}{'compute s':>11}{'images/s':>10}{'peak RSS MiB':>14}{'RSS growth MiB':>16}"
        f"{'python peak MiB':>17}"
    )
    print(header)
    for row in rows:
        print(
            f"{row['num_images']:>7}{row['update_seconds']:>10.1f}{row['compute_seconds']:>11.1f}"
            f"{row['images_per_second_total']:>10.1f}{row['peak_rss_mib']:>14.0f}{row['rss_growth_mib']:>16.0f}"
            + (f"{row['python_peak_mib']:>17.1f}" if row["python_peak_mib"] is not None else f"{'n/a':>17}")
        )
    print("images/s counts data and generated images (2N) over updates + compute; sampling is not included.")
    record = {
        "benchmark": "metric_throughput",
        **machine_info(args.device),
        "command": "python benchmarks/bench_metric_throughput.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: getattr(args, k) for k in ("resolution", "channels", "batch_size", "fwd_level", "device")},
        "runs": rows,
    }
    output = Path(args.output) if args.output else RESULTS_DIR / f"metric_throughput_{args.device}.json"
    write_json(output, record)
    print(f"wrote {output}")
    return record


if __name__ == "__main__":
    main()
