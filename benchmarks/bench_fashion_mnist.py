"""Real images: Fashion-MNIST from scratch and fine-tuning, MSE vs the default spectral losses, under three samplers.

Two studies, each one resumable command (a finished training or evaluation is skipped, so the studies can run over
several sessions; results are written as each finishes):

    python benchmarks/bench_fashion_mnist.py --study scratch     # 1. from scratch: none / amplitude_phase / wavelet
    python benchmarks/bench_fashion_mnist.py --study finetune    # 2. fine-tuning one long MSE model: none / default
    python benchmarks/bench_fashion_mnist.py --summary_only      # the tables and figures of what is on disk

Every training is `train_spectral.py --builtin_dataset fashion_mnist` (Fashion-MNIST's 60,000 training images padded
to 32x32) with every flag equal except `--spectral_loss` (spectral settings at their defaults: λ = 1, ᾱ_t weighting).
The models of one seed share that seed's data order, noise and initialisation. Each saved model (and each checkpoint
of study 1, for the quality-vs-steps curve) is sampled from the same initial noise with

- DDIM, 50 steps, eta 0 (`--sampler fast`),
- DPM-Solver++, 20 steps (`DPMSolverMultistepScheduler`, `--sampler dpm_solver`),
- DDPM ancestral, 100 steps (`--sampler pipeline`),

and compared with 500 of Fashion-MNIST's 10,000 held-out test images (500 samples per model: one model's three
samplers take ~170 UNet calls per image on the CPU): log-RAPSD distance (all, and the high third of the
frequencies; spectra floored as in section 0), Fréchet Wavelet Distance (FWD), and the semantic scores of a CNN
trained on the training labels (`fashion_classifier.py`, >= 90 % test accuracy): FD_cls (Fréchet distance on its
penultimate features), class coverage and mean confidence. Means ± sample std over seeds, and paired per-seed ratios
to the MSE model of the same seed. The quality-vs-steps curve (checkpoints at 500, 1,000, 1,500 and 2,000 steps) uses DDIM-50.

Files: trained runs in `benchmarks/runs/fashion_mnist/` (git-ignored); one JSON per evaluation in
`benchmarks/results/fashion_mnist/evals/`, tables (`*.txt`), grids and plots in `benchmarks/results/fashion_mnist/`.
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

from common import ROOT, machine_info, printable_command, run_training, training_command, write_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "fashion_mnist"
RUNS = ROOT / "benchmarks" / "runs" / "fashion_mnist"
SAMPLERS = {  # name -> (evaluate sampler, steps)
    "ddim50": ("fast", 50),
    "dpm20": ("dpm_solver", 20),
    "ddpm100": ("pipeline", 100),
}
SCRATCH = dict(steps=2000, checkpoints=4, learning_rate=5e-4, warmup=50, batch_size=32, seeds=[0, 1, 2])
SCRATCH_VARIANTS = ("none", "amplitude_phase", "wavelet")
FINETUNE = dict(
    base_steps=6000, base_seed=100, steps=1000, learning_rate=1e-4, warmup=0, batch_size=32, seeds=[0, 1, 2]
)
FINETUNE_VARIANTS = ("none", "amplitude_phase")
CURVE_SAMPLERS = ("ddim50",)  # also evaluated at the intermediate checkpoints of study 1 (CPU budget)
NUM_SAMPLES = 500
SAMPLING_SEED = 1234


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", choices=["scratch", "finetune"], default="scratch")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds to run (default: 0 1 2)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the trainings (default 1)")
    parser.add_argument("--summary_only", action="store_true", help="only print the tables of what is on disk")
    parser.add_argument("--max_runs", type=int, default=None, help="stop after this many new trainings")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------
# Trainings
# ---------------------------------------------------------------------------------------------------------------


def common_options(config: dict, seed: int) -> list[str]:
    return [
        "--builtin_dataset", "fashion_mnist",
        "--resolution", "32",
        "--model_preset", "small",
        "--train_batch_size", str(config["batch_size"]),
        "--learning_rate", str(config["learning_rate"]),
        "--lr_warmup_steps", str(config["warmup"]),
        "--lr_scheduler", "cosine",
        "--seed", str(seed),
        "--dataloader_num_workers", "0",
    ]  # fmt: skip


def is_finished(run_dir: Path) -> bool:
    return (run_dir / "model_index.json").is_file() and (run_dir / "bench_done.json").is_file()


def train(run_dir: Path, options: list[str], threads: int, log) -> dict:
    """Train unless `run_dir` holds a finished run; returns the run's record (command, seconds)."""
    if is_finished(run_dir):
        return json.loads((run_dir / "bench_done.json").read_text())
    argv = training_command(run_dir, options)
    log(f"training {run_dir.relative_to(ROOT)}: {printable_command(argv)}")
    seconds = run_training(argv, run_dir.parent / f"{run_dir.name}.log", threads=threads)
    record = {"command": printable_command(argv), "seconds": seconds}
    (run_dir / "bench_done.json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"  done in {seconds:.0f} s")
    return record


def scratch_runs(seeds) -> list[tuple[str, int, Path, list[str]]]:
    config = SCRATCH
    every = config["steps"] // config["checkpoints"]
    runs = []
    for seed in seeds:
        for variant in SCRATCH_VARIANTS:
            options = common_options(config, seed) + [
                "--max_train_steps", str(config["steps"]),
                "--checkpointing_steps", str(every),
                "--spectral_loss", variant,
            ]  # fmt: skip
            runs.append((variant, seed, RUNS / "scratch" / f"{variant}-s{seed}", options))
    return runs


def finetune_base() -> tuple[Path, list[str]]:
    config = FINETUNE
    options = common_options(dict(SCRATCH), config["base_seed"]) + [
        "--max_train_steps", str(config["base_steps"]),
        "--spectral_loss", "none",
    ]  # fmt: skip
    return RUNS / "finetune" / "base-mse", options


def finetune_runs(seeds) -> list[tuple[str, int, Path, list[str]]]:
    config = FINETUNE
    base, _ = finetune_base()
    runs = []
    for seed in seeds:
        for variant in FINETUNE_VARIANTS:
            options = common_options(config, seed) + [
                "--pretrained_model_name_or_path", str(base),
                "--max_train_steps", str(config["steps"]),
                "--spectral_loss", variant,
            ]  # fmt: skip
            runs.append((variant, seed, RUNS / "finetune" / f"{variant}-s{seed}", options))
    return runs


# ---------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------


class Evaluator:
    """Test-set statistics (RAPSD, FWD, classifier moments) computed once; each model sampled and scored against
    them."""

    def __init__(self, num_samples: int, log) -> None:
        from fashion_classifier import ClassifierScores, load_or_train

        from diffusers_specreg.data import load_fashion_mnist
        from diffusers_specreg.evaluate import ReferenceStatistics

        self.log, self.num_samples = log, num_samples
        self.classifier, self.classifier_record = load_or_train(log=log)
        test, _ = load_fashion_mnist("test", 32)
        order = torch.randperm(test.shape[0], generator=torch.Generator().manual_seed(0))
        self.real = test[order[:num_samples]]
        self.reference = ReferenceStatistics.from_images(
            self.real, num_samples, 250, fid_extractor=self._features, progress=False
        )
        self.real_scores = ClassifierScores(self.classifier)
        for start in range(0, num_samples, 250):
            self.real_scores.update(self.real[start : start + 250])
        self.data_summary = self.real_scores.summary(self.real_scores)
        from diffusers_specreg.plots import save_image_grid

        (RESULTS / "grids").mkdir(parents=True, exist_ok=True)
        save_image_grid(self.real[:64], RESULTS / "grids" / "data.png")

    @torch.no_grad()
    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images).double()

    def evaluate(self, pipeline, sampler: str, grid_path: Path | None) -> dict:
        from fashion_classifier import ClassifierScores

        from diffusers_specreg.evaluate import evaluate_against
        from diffusers_specreg.plots import save_image_grid

        kind, steps = SAMPLERS[sampler]
        scores = ClassifierScores(self.classifier)
        start = time.perf_counter()
        run = evaluate_against(
            pipeline,
            self.reference,
            name=sampler,
            num_samples=self.num_samples,
            batch_size=250,
            num_inference_steps=steps,
            seed=SAMPLING_SEED,
            grid_size=64,
            fid_extractor=self._features,
            progress=False,
            on_samples=scores.update,
            sampler=kind,
        )
        metrics = run.metrics
        if grid_path is not None:
            grid_path.parent.mkdir(parents=True, exist_ok=True)
            save_image_grid(run.grid, grid_path)
        return {
            "sampler": metrics.sampler,
            "log_rapsd_all": metrics.log_rapsd_distance.all,
            "log_rapsd_high": metrics.log_rapsd_distance.high,
            "fwd": metrics.fwd,
            "fd_cls": metrics.fid,
            **{k: v for k, v in scores.summary(self.real_scores).items() if k != "fd_cls"},
            "seconds": time.perf_counter() - start,
        }


def pipeline_at(run_dir: Path, step: int | None):
    """The run's saved `DDPMPipeline`, or one with the UNet weights of `checkpoint-{step}` (no EMA in these runs)."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    from safetensors.torch import load_file

    if step is None:
        return DDPMPipeline.from_pretrained(run_dir)
    unet = UNet2DModel.from_config(UNet2DModel.load_config(run_dir / "unet"))
    unet.load_state_dict(load_file(run_dir / f"checkpoint-{step}" / "model.safetensors"))
    return DDPMPipeline(unet=unet.eval(), scheduler=DDPMScheduler.from_pretrained(run_dir / "scheduler"))


def eval_path(study: str, variant: str, seed: int, step: int, sampler: str) -> Path:
    return RESULTS / "evals" / study / f"{variant}-s{seed}-step{step}-{sampler}.json"


def evaluations_done(study: str, variant: str, seed: int, steps: list, final: int) -> bool:
    """Every evaluation of a run is on disk (committed): the run needs no training, even where its folder is gone
    (`benchmarks/runs/` is not committed)."""
    return all(
        eval_path(study, variant, seed, step, sampler).is_file()
        for step in steps
        for sampler in (SAMPLERS if step == final else CURVE_SAMPLERS)
    )


def evaluate_run(evaluator, study: str, variant: str, seed: int, run_dir: Path, steps: list, final: int, log):
    """Evaluate every (step, sampler) of a run whose JSON is not on disk yet."""
    for step in steps:
        samplers = list(SAMPLERS) if step == final else list(CURVE_SAMPLERS)
        for sampler in samplers:
            path = eval_path(study, variant, seed, step, sampler)
            if path.is_file():
                continue
            pipeline = pipeline_at(run_dir, None if step == final else step)
            grid = RESULTS / "grids" / study / f"{variant}-s{seed}-{sampler}.png" if step == final else None
            result = evaluator.evaluate(pipeline, sampler, grid)
            result.update(
                study=study,
                variant=variant,
                seed=seed,
                step=step,
                sampler_key=sampler,
                num_samples=evaluator.num_samples,
            )
            write_json(path, result)
            log(
                f"  {study} {variant} s{seed} step {step} {sampler}: FD_cls {result['fd_cls']:.2f} "
                f"FWD {result['fwd']:.3f} high {result['log_rapsd_high']:.4f} ({result['seconds']:.0f} s)"
            )


# ---------------------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------------------

METRICS = ("fd_cls", "fwd", "log_rapsd_high", "log_rapsd_all", "class_coverage", "confidence")


def load_evals(study: str) -> list[dict]:
    folder = RESULTS / "evals" / study
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4g} ± {std:.2g}"


def summary_table(study: str, variants, final: int) -> str:
    evals = [e for e in load_evals(study) if e["step"] == final]
    by = {(e["variant"], e["seed"], e["sampler_key"]): e for e in evals}
    lines = [f"study {study}: final models ({final} steps), {NUM_SAMPLES} samples each vs the test split"]
    header = f"{'sampler':8} {'model':16} {'seeds':>5} " + " ".join(f"{m:>18}" for m in METRICS)
    lines += [header]
    for sampler in SAMPLERS:
        for variant in variants:
            rows = [e for (v, _, s), e in by.items() if v == variant and s == sampler]
            cells = [mean_std([r[m] for r in rows]) for m in METRICS]
            lines.append(f"{sampler:8} {variant:16} {len(rows):>5} " + " ".join(f"{c:>18}" for c in cells))
    lines.append("")
    lines.append(
        "paired per-seed ratios to the MSE model (mean ± std over seeds; target FWD <= 0.9, high <= 0.7, FD_cls <= 1.0)"
    )
    for sampler in SAMPLERS:
        for variant in variants:
            if variant in ("none", "base"):  # "base": the fine-tuning's starting model, no paired MSE run
                continue
            ratios = {m: [] for m in ("fwd", "log_rapsd_high", "fd_cls")}
            for (v, seed, s), e in by.items():
                base = by.get(("none", seed, s))
                if v == variant and s == sampler and base is not None:
                    for m in ratios:
                        ratios[m].append(e[m] / base[m])
            cells = " ".join(f"{m}/MSE {mean_std(r):>16}" for m, r in ratios.items())
            lines.append(f"{sampler:8} {variant:16} n={len(ratios['fwd'])} {cells}")
    return "\n".join(lines)


def _key(e: dict) -> str:
    return e["sampler_key"]


def steps_to_reach(study: str, variants, steps: list[int]) -> str:
    """For each seed and sampler of the curve: the first checkpoint at which a regularized model reaches the MSE
    model's final FWD and FD_cls."""
    evals = load_evals(study)
    table = {(e["variant"], e["seed"], _key(e), e["step"]): e for e in evals}
    lines = [
        "steps for the regularized model to reach the MSE model's final value "
        "(per seed; '>' = not reached, '-' = not evaluated)"
    ]
    for sampler in CURVE_SAMPLERS:
        for variant in variants:
            if variant == "none":
                continue
            for metric in ("fwd", "fd_cls"):
                reached = []
                for seed in sorted({s for (_, s, _, _) in table}):
                    base = table.get(("none", seed, sampler, steps[-1]))
                    if base is None:
                        continue
                    if (variant, seed, sampler, steps[-1]) not in table:  # not evaluated (yet): no claim either way
                        reached.append("-")
                        continue
                    hit = next(
                        (
                            n
                            for n in steps
                            if (e := table.get((variant, seed, sampler, n))) and e[metric] <= base[metric]
                        ),
                        None,
                    )
                    reached.append(str(hit) if hit else f">{steps[-1]}")
                lines.append(f"{sampler:8} {variant:16} {metric:7} " + " ".join(reached))
    return "\n".join(lines)


def plot_curves(study: str, variants, steps: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = load_evals(study)
    figure, axes = plt.subplots(len(CURVE_SAMPLERS), 3, figsize=(13, 3.6 * len(CURVE_SAMPLERS)), squeeze=False)
    for i, sampler in enumerate(CURVE_SAMPLERS):
        for j, metric in enumerate(("fd_cls", "fwd", "log_rapsd_high")):
            axis = axes[i][j]
            for variant in variants:
                means, stds, xs = [], [], []
                for n in steps:
                    values = [
                        e[metric] for e in evals if e["variant"] == variant and e["step"] == n and _key(e) == sampler
                    ]
                    if values:
                        xs.append(n)
                        means.append(statistics.fmean(values))
                        stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
                if xs:
                    axis.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=variant)
            axis.set_title(f"{metric} ({sampler})", fontsize=10)
            axis.set_xlabel("training steps")
            axis.legend(fontsize=8)
    figure.suptitle("Fashion-MNIST from scratch: quality vs steps (mean ± std over seeds)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_grids(study: str, variants, seed: int, path: Path) -> None:
    """Data beside each model, one row per sampler, for one seed (the final models' grids)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["data", *variants]
    figure, axes = plt.subplots(len(SAMPLERS), len(columns), figsize=(2.8 * len(columns), 3.0 * len(SAMPLERS)))
    for i, sampler in enumerate(SAMPLERS):
        for j, name in enumerate(columns):
            axis = axes[i][j]
            axis.axis("off")
            file = RESULTS / "grids" / ("data.png" if name == "data" else f"{study}/{name}-s{seed}-{sampler}.png")
            if file.is_file():
                axis.imshow(plt.imread(file), cmap="gray")
            axis.set_title(f"{name}" + ("" if name == "data" else f" ({sampler})"), fontsize=9)
    figure.suptitle(f"Fashion-MNIST {study}, seed {seed}: test images and samples of each model, per sampler")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write_summary(log) -> None:
    every = SCRATCH["steps"] // SCRATCH["checkpoints"]
    steps = [every * (k + 1) for k in range(SCRATCH["checkpoints"])]
    text = (
        summary_table("scratch", SCRATCH_VARIANTS, SCRATCH["steps"])
        + "\n\n"
        + steps_to_reach("scratch", SCRATCH_VARIANTS, steps)
    )
    (RESULTS / "scratch.txt").write_text(text + "\n")
    log(text)
    if load_evals("scratch"):
        plot_curves("scratch", SCRATCH_VARIANTS, steps, RESULTS / "scratch_curves.png")
        plot_grids("scratch", SCRATCH_VARIANTS, SCRATCH["seeds"][0], RESULTS / "scratch_grids.png")
    if load_evals("finetune"):
        text = summary_table("finetune", ("base",) + FINETUNE_VARIANTS, FINETUNE["steps"])
        (RESULTS / "finetune.txt").write_text(text + "\n")
        plot_grids("finetune", FINETUNE_VARIANTS, FINETUNE["seeds"][0], RESULTS / "finetune_grids.png")
        log(text)


def run_study(evaluator, study: str, runs, steps: list[int], final: int, args, log) -> None:
    """Train and evaluate each run in turn (one training at a time), skipping what is finished or committed, and
    rewrite the summary after each; at most `--max_runs` new trainings."""
    new_runs = 0
    for variant, seed, run_dir, options in runs:
        if evaluations_done(study, variant, seed, steps, final):
            continue
        if not is_finished(run_dir):
            if args.max_runs is not None and new_runs >= args.max_runs:
                break
            new_runs += 1
        train(run_dir, options, args.threads, log)
        evaluate_run(evaluator, study, variant, seed, run_dir, steps, final, log)
        write_summary(log)


def main(argv=None) -> int:
    args = parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    logfile = open(RESULTS / "progress.log", "a")

    def log(message: str) -> None:
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}"
        print(line, flush=True)
        logfile.write(line + "\n")
        logfile.flush()

    if args.summary_only:
        write_summary(log)
        return 0
    torch.set_num_threads(args.threads)
    write_json(RESULTS / f"machine_{args.study}.json", machine_info())
    evaluator = Evaluator(NUM_SAMPLES, log)
    write_json(RESULTS / "classifier.json", evaluator.classifier_record | {"data_scores": evaluator.data_summary})
    if args.study == "scratch":
        every = SCRATCH["steps"] // SCRATCH["checkpoints"]
        steps = [every * (k + 1) for k in range(SCRATCH["checkpoints"])]
        runs = scratch_runs(args.seeds or SCRATCH["seeds"])
        run_study(evaluator, "scratch", runs, steps, SCRATCH["steps"], args, log)
    else:
        base_dir, base_options = finetune_base()
        train(base_dir, base_options, args.threads, log)
        final = FINETUNE["steps"]
        evaluate_run(evaluator, "finetune", "base", FINETUNE["base_seed"], base_dir, [final], final, log)
        runs = finetune_runs(args.seeds or FINETUNE["seeds"])
        run_study(evaluator, "finetune", runs, [final], final, args, log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
