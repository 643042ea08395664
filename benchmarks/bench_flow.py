"""Flow matching (issue 21): MSE vs the default spectral loss, Euler vs Heun, and flow vs DDPM at equal budget.

Three studies, each one resumable command (a finished training or evaluation is skipped, so a study can run over
several sessions; every evaluation is written as it finishes):

    python benchmarks/bench_flow.py --study demo             # 1. the built-in demo (checkerboards), 3 seeds
    python benchmarks/bench_flow.py --study sweep            # 2. λ × weighting of the spectral term on flow (seed 0)
    python benchmarks/bench_flow.py --study fashion_mnist    # 3. Fashion-MNIST from scratch, 3 seeds
    python benchmarks/bench_flow.py --summary_only           # the tables of what is on disk

1. **demo**: `train_spectral.py` as the README's first command runs it (32x32 checkerboards, small UNet, 1,500 steps,
   lr 5e-4), four models per seed with every other flag equal: `--formulation flow` with `--spectral_loss none`
   (MSE) and with the default spectral term (amplitude_phase, λ = 1, ᾱ analogue SNR/(1 + SNR)), and the same two
   with DDPM (the equal-budget comparison). Compared with 256 fresh checkerboards: log-RAPSD distance (all / high
   third), FWD and the sharp-pixel fraction (|x| > 0.9; 1.0 for the data).
2. **sweep**: flow + amplitude_phase at λ in 0.3 / 1 / 3 × weighting alpha_bar / min_sqrt_snr / constant on the demo,
   seed 0, Euler-50, against the flow MSE run of study 1: the flow default is chosen from this table, not copied
   from DDPM.
3. **fashion_mnist**: `bench_fashion_mnist.py`'s from-scratch recipe (2,000 steps, batch 32, lr 5e-4, small UNet,
   32x32) with `--formulation flow`, MSE and amplitude_phase, its evaluator (500 test images, the same sampling seed,
   FD_cls of its classifier, FWD, high band, class coverage, confidence) and, side by side, its DDPM evaluations of
   the same recipe and seeds (DDIM-50, DPM-Solver++ 20; read from `benchmarks/results/fashion_mnist/evals/scratch/`,
   not retrained).

Every flow model is sampled from the same initial noise with Euler at 20 and 50 steps
(`FlowMatchEulerDiscreteScheduler`, the saved pipeline) and Heun at 10 and 25 steps (`FlowMatchHeunDiscreteScheduler`,
19 and 49 UNet evaluations: the equal-evaluation comparison that decides Euler vs Heun); the DDPM models of study 1
with DDIM (eta 0) at 20 and 50 steps.

Files: runs in `benchmarks/runs/flow/` (git-ignored); one JSON per evaluation in `benchmarks/results/flow/evals/`,
tables in `benchmarks/results/flow/<study>.txt`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, machine_info, sharp_fraction, write_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "flow"
RUNS = ROOT / "benchmarks" / "runs" / "flow"
FASHION_EVALS = ROOT / "benchmarks" / "results" / "fashion_mnist" / "evals" / "scratch"
# name -> (solver, steps, UNet evaluations)
FLOW_SAMPLERS = {
    "euler20": ("euler", 20, 20),
    "euler50": ("euler", 50, 50),
    "heun10": ("heun", 10, 19),
    "heun25": ("heun", 25, 49),
}
DDPM_SAMPLERS = {"ddim20": ("ddim", 20, 20), "ddim50": ("ddim", 50, 50)}
FLOW = ["--formulation", "flow"]
DEMO_VARIANTS = {  # name -> train_spectral.py flags on top of the demo's (the built-in preset)
    "flow-mse": [*FLOW, "--spectral_loss", "none"],
    "flow-default": FLOW,
    "ddpm-mse": ["--spectral_loss", "none"],
    "ddpm-default": [],
}
SWEEP_WEIGHTS = (0.3, 1.0, 3.0)
SWEEP_WEIGHTINGS = ("alpha_bar", "min_sqrt_snr", "constant")
FASHION_VARIANTS = ("none", "amplitude_phase")
SEEDS = (0, 1, 2)
DEMO_SAMPLES = 256
METRICS = ("fd_cls", "fwd", "log_rapsd_high", "log_rapsd_all", "sharp_fraction", "class_coverage", "confidence")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", choices=["demo", "sweep", "fashion_mnist"], default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds to run (default: 0 1 2)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the trainings (default 1)")
    parser.add_argument("--summary_only", action="store_true", help="only print the tables of what is on disk")
    parser.add_argument("--max_runs", type=int, default=None, help="stop after this many new trainings")
    # smoke tests only: a shorter run and fewer samples (the results then go under --results_dir)
    parser.add_argument("--max_train_steps", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--num_samples", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--samplers", nargs="+", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--results_dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--runs_dir", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------
# Runs: (study, variant, seed, train_spectral.py options)
# ---------------------------------------------------------------------------------------------------------------


def study_runs(study: str, seeds) -> list[tuple[str, int, list[str]]]:
    if study == "demo":
        return [(name, seed, ["--seed", str(seed), *flags]) for seed in seeds for name, flags in DEMO_VARIANTS.items()]
    if study == "sweep":
        runs = []
        for weighting in SWEEP_WEIGHTINGS:
            for weight in SWEEP_WEIGHTS:
                flags = [*FLOW, "--spectral_loss", "amplitude_phase", "--spectral_weight", str(weight)]
                runs.append(
                    (f"flow-{weighting}-{weight:g}", 0, ["--seed", "0", *flags, "--spectral_weighting", weighting])
                )
        return runs
    from bench_fashion_mnist import SCRATCH, common_options

    return [
        (f"flow-{variant}", seed, [*common_options(SCRATCH, seed), "--max_train_steps", str(SCRATCH["steps"]), *FLOW,
                                   "--spectral_loss", variant])
        for seed in seeds
        for variant in FASHION_VARIANTS
    ]  # fmt: skip


def samplers_of(variant: str, study: str, only=None) -> dict:
    table = FLOW_SAMPLERS if variant.startswith("flow") else DDPM_SAMPLERS
    if study == "sweep":
        table = {"euler50": FLOW_SAMPLERS["euler50"]}
    return {k: v for k, v in table.items() if only is None or k in only}


def eval_path(results: Path, study: str, variant: str, seed: int, sampler: str) -> Path:
    return results / "evals" / study / f"{variant}-s{seed}-{sampler}.json"


# ---------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------


def load_pipeline(run_dir: Path, solver: str):
    """The saved pipeline, loaded as the evaluation loads it; Heun swaps a `FlowMatchHeunDiscreteScheduler` of the
    same σ grid into the flow pipeline."""
    from diffusers import FlowMatchHeunDiscreteScheduler

    from diffusers_specreg.evaluate.sampling import load_pipeline as load_saved

    pipeline = load_saved(str(run_dir))  # a flow folder's pipeline.py is the shipped file: trusted
    if solver == "heun":
        config = pipeline.scheduler.config
        heun = FlowMatchHeunDiscreteScheduler(num_train_timesteps=config.num_train_timesteps, shift=config.shift)
        pipeline = type(pipeline)(unet=pipeline.unet, scheduler=heun)
    return pipeline


class DemoReference:
    """256 fresh checkerboards (another seed than the training set's) and their statistics."""

    def __init__(self, num_samples: int) -> None:
        from bench_default_run import reference_images

        from diffusers_specreg.evaluate import ReferenceStatistics

        self.num_samples = num_samples
        self.real = reference_images("checkerboards", num_samples)
        self.reference = ReferenceStatistics.from_images(self.real, num_samples, 64, progress=False)

    def evaluate(self, pipeline, kind: str, steps: int) -> dict:
        from diffusers_specreg.evaluate import evaluate_against

        sharp = []
        run = evaluate_against(
            pipeline, self.reference, num_samples=self.num_samples, batch_size=64, num_inference_steps=steps,
            seed=0, grid_size=64, progress=False, on_samples=lambda x: sharp.append((sharp_fraction(x), len(x))),
            sampler=kind,
        )  # fmt: skip
        metrics = run.metrics
        return {
            "sampler": metrics.sampler,
            "log_rapsd_all": metrics.log_rapsd_distance.all,
            "log_rapsd_high": metrics.log_rapsd_distance.high,
            "fwd": metrics.fwd,
            "sharp_fraction": sum(f * n for f, n in sharp) / sum(n for _, n in sharp),
            "grid": run.grid,
        }


class FashionReference:
    """`bench_fashion_mnist.Evaluator` (its test images, classifier and sampling seed), any sampler."""

    def __init__(self, num_samples: int, log) -> None:
        from bench_fashion_mnist import Evaluator

        self.evaluator = Evaluator(num_samples, log)
        self.num_samples = num_samples

    def evaluate(self, pipeline, kind: str, steps: int) -> dict:
        from bench_fashion_mnist import SAMPLING_SEED
        from fashion_classifier import ClassifierScores

        from diffusers_specreg.evaluate import evaluate_against

        evaluator = self.evaluator
        scores = ClassifierScores(evaluator.classifier)
        features = torch.no_grad()(lambda images: evaluator.classifier.features(images).double())
        run = evaluate_against(
            pipeline, evaluator.reference, num_samples=self.num_samples, batch_size=250, num_inference_steps=steps,
            seed=SAMPLING_SEED, grid_size=64, fid_extractor=features, progress=False, on_samples=scores.update,
            sampler=kind,
        )  # fmt: skip
        metrics = run.metrics
        summary = {k: v for k, v in scores.summary(evaluator.real_scores).items() if k != "fd_cls"}
        return {
            "sampler": metrics.sampler,
            "log_rapsd_all": metrics.log_rapsd_distance.all,
            "log_rapsd_high": metrics.log_rapsd_distance.high,
            "fwd": metrics.fwd,
            "fd_cls": metrics.fid,
            **summary,
            "grid": run.grid,
        }


def evaluate_run(reference, results: Path, study: str, variant: str, seed: int, run_dir: Path, samplers, log):
    from diffusers_specreg.plots import save_image_grid

    for sampler, (solver, steps, evaluations) in samplers.items():
        path = eval_path(results, study, variant, seed, sampler)
        if path.is_file():
            continue
        start = time.perf_counter()
        result = reference.evaluate(load_pipeline(run_dir, solver), "fast" if solver == "ddim" else "pipeline", steps)
        grid = result.pop("grid")
        (results / "grids" / study).mkdir(parents=True, exist_ok=True)
        save_image_grid(grid, results / "grids" / study / f"{variant}-s{seed}-{sampler}.png")
        result.update(study=study, variant=variant, seed=seed, sampler_key=sampler, steps=steps)
        result.update(unet_evaluations=evaluations, num_samples=reference.num_samples)
        result["seconds"] = time.perf_counter() - start
        write_json(path, result)
        log(f"  {study} {variant} s{seed} {sampler}: FWD {result['fwd']:.3f} high {result['log_rapsd_high']:.4f}")


# ---------------------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------------------


def load_evals(results: Path, study: str) -> list[dict]:
    folder = results / "evals" / study
    evals = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    if study == "fashion_mnist" and FASHION_EVALS.is_dir():  # DDPM, same recipe and evaluator (bench_fashion_mnist)
        for path in sorted(FASHION_EVALS.glob("*-step2000-*.json")):
            record = json.loads(path.read_text())
            if record["variant"] in FASHION_VARIANTS and record["sampler_key"] in ("ddim50", "dpm20"):
                evals.append(dict(record, variant=f"ddpm-{record['variant']}"))
    return evals


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4g} ± {std:.2g}"


def summary_table(results: Path, study: str) -> str:
    evals = load_evals(results, study)
    metrics = [m for m in METRICS if any(m in e for e in evals)]
    rows = sorted({(e["variant"], e["sampler_key"]) for e in evals})
    lines = [f"study {study}: mean ± sample std over seeds", f"{'model':24} {'sampler':8} {'seeds':>5} "
             + " ".join(f"{m:>18}" for m in metrics)]  # fmt: skip
    for variant, sampler in rows:
        cell = [e for e in evals if e["variant"] == variant and e["sampler_key"] == sampler]
        values = " ".join(f"{mean_std([e[m] for e in cell if e.get(m) is not None]):>18}" for m in metrics)
        lines.append(f"{variant:24} {sampler:8} {len(cell):>5} {values}")
    lines += ["", "paired per-seed ratios, spectral / MSE of the same formulation, seed and sampler"]
    by = {(e["variant"], e["seed"], e["sampler_key"]): e for e in evals}
    for (variant, seed, sampler), e in sorted(by.items()):
        base_name = variant.rsplit("-", 1)[0] + ("-mse" if study != "fashion_mnist" else "-none")
        if study == "sweep":
            base_name = "flow-mse"
        base = by.get((base_name, seed, sampler)) or load_demo_mse(results, seed, sampler, study)
        if base is None or base is e or variant == base_name:
            continue
        ratios = " ".join(f"{m}/MSE {e[m] / base[m]:.3f}" for m in ("fwd", "log_rapsd_high", "fd_cls") if m in e)
        lines.append(f"{variant:24} {sampler:8} s{seed} {ratios}")
    return "\n".join(lines)


def load_demo_mse(results: Path, seed: int, sampler: str, study: str) -> dict | None:
    """The sweep's baseline: study 1's flow MSE run of the same seed and sampler."""
    path = eval_path(results, "demo", "flow-mse", seed, sampler)
    return json.loads(path.read_text()) if study == "sweep" and path.is_file() else None


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------


def train(run_dir: Path, options: list[str], threads: int, max_train_steps: int | None, log) -> None:
    from common import printable_command, run_training, training_command

    if (run_dir / "model_index.json").is_file() and (run_dir / "bench_done.json").is_file():
        return
    options = options + (["--max_train_steps", str(max_train_steps)] if max_train_steps else [])
    argv = training_command(run_dir, options)
    log(f"training {run_dir.name}: {printable_command(argv)}")
    seconds = run_training(argv, run_dir.parent / f"{run_dir.name}.log", threads=threads)
    (run_dir / "bench_done.json").write_text(json.dumps({"command": printable_command(argv), "seconds": seconds}))
    log(f"  done in {seconds:.0f} s")


def main(argv=None) -> int:
    args = parse_args(argv)
    results, runs_dir = args.results_dir or RESULTS, args.runs_dir or RUNS
    results.mkdir(parents=True, exist_ok=True)
    logfile = open(results / "progress.log", "a")

    def log(message: str) -> None:
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}"
        print(line, flush=True)
        logfile.write(line + "\n")
        logfile.flush()

    studies = ("demo", "sweep", "fashion_mnist") if args.summary_only else (args.study,)
    if not args.summary_only:
        torch.set_num_threads(args.threads)
        write_json(results / f"machine_{args.study}.json", machine_info())
        if args.study == "fashion_mnist":
            reference = FashionReference(args.num_samples or 500, log)
        else:
            reference = DemoReference(args.num_samples or DEMO_SAMPLES)
        new_runs = 0
        for variant, seed, options in study_runs(args.study, args.seeds or (SEEDS if args.study != "sweep" else (0,))):
            samplers = samplers_of(variant, args.study, args.samplers)
            if all(eval_path(results, args.study, variant, seed, s).is_file() for s in samplers):
                continue
            run_dir = runs_dir / args.study / f"{variant}-s{seed}"
            if not (run_dir / "bench_done.json").is_file():
                if args.max_runs is not None and new_runs >= args.max_runs:
                    break
                new_runs += 1
            train(run_dir, options, args.threads, args.max_train_steps, log)
            evaluate_run(reference, results, args.study, variant, seed, run_dir, samplers, log)
    for study in studies:
        text = summary_table(results, study)
        (results / f"{study}.txt").write_text(text + "\n")
        log(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
