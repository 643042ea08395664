"""Wall time of the README's main command, before and after the CPU thread choice, measured side by side.

`accelerate launch train_spectral.py` on a machine without a GPU runs the script with `OMP_NUM_THREADS=1` unless told
otherwise. Before issue 14 the script kept that, so the demo trained on one core however many the machine had; now it
picks cores ÷ local processes (`training.configure_cpu_threads`). "before" reproduces the old behaviour with
`SPECREG_NUM_THREADS=1`; "after" is the command exactly as the README prints it. The two are run one after the other,
alternating over `--rounds`, each into its own temporary output folder, and the whole process's wall time is measured
(start-up, training, the card's evaluation and saving included).

    python benchmarks/bench_first_run.py                          # the full demo, 1 round (about 15 min on 2 cores)
    python benchmarks/bench_first_run.py --max_train_steps 300    # a shorter look

Writes `benchmarks/results/first_run_cpu.json`. Run it alone: any other job on the machine changes both numbers.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, ROOT, machine_info, write_json  # noqa: E402

VARIANTS = {
    "before (1 thread, accelerate's default)": {"SPECREG_NUM_THREADS": "1"},
    "after (this package's choice)": {},
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (1)")
    parser.add_argument("--max_train_steps", type=int, default=None, help="shorten the demo (default: its 1,500)")
    return parser.parse_args(argv)


def accelerate_executable() -> str:
    found = Path(sys.executable).with_name("accelerate")
    return str(found) if found.exists() else (shutil.which("accelerate") or "accelerate")


def run_once(extra_env: dict, max_train_steps: int | None) -> dict:
    env = {
        k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SPECREG_NUM_THREADS", "MKL_NUM_THREADS")
    }
    env.update(extra_env, HF_HUB_OFFLINE="1", TQDM_MININTERVAL="5")
    with tempfile.TemporaryDirectory() as tmp:
        argv = [accelerate_executable(), "launch", "train_spectral.py", "--output_dir", str(Path(tmp) / "run")]
        if max_train_steps:
            argv += ["--max_train_steps", str(max_train_steps)]
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    log = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{log[-3000:]}")
    threads = re.search(r"CPU threads per process: (\d+)", log)
    return {"seconds": seconds, "threads": int(threads.group(1)) if threads else None}


def main(argv=None) -> dict:
    args = parse_args(argv)
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for round_index in range(args.rounds):
        for name, extra_env in VARIANTS.items():
            result = run_once(extra_env, args.max_train_steps)
            runs[name].append(result)
            print(f"[round {round_index}] {name}: {result['seconds']:.1f} s ({result['threads']} threads)", flush=True)
    medians = {name: statistics.median(r["seconds"] for r in rs) for name, rs in runs.items()}
    before, after = medians.values()
    steps = args.max_train_steps or "the demo's 1,500"
    lines = [f"accelerate launch train_spectral.py ({steps} steps), wall time, median of {args.rounds} round(s):"]
    lines += [f"  {name:<42}{seconds:>8.1f} s  ({seconds / 60:.1f} min)" for name, seconds in medians.items()]
    lines.append(f"  after / before: {after / before:.3f}  (speed-up {before / after:.2f}x)")
    print("\n".join(lines))
    record = {
        "benchmark": "first_run",
        **machine_info("cpu"),
        "command": "python benchmarks/bench_first_run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "max_train_steps": args.max_train_steps,
        "runs": runs,
        "median_seconds": medians,
        "after_over_before": after / before,
        "printed": lines,
    }
    output = write_json(RESULTS_DIR / "first_run_cpu.json", record)
    print(f"wrote {output}")
    return record


if __name__ == "__main__":
    main()
