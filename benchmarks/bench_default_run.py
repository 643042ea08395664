"""Does the default spectral term make samples sharper than MSE? The built-in demo run, as a newcomer would rerun it.

Study 1 (`--study defaults`): `python train_spectral.py` exactly as the README's first command trains it (built-in
32x32 checkerboards, 1,500 steps, the paper's amplitude+phase loss with the default λ and ᾱ_t weighting), against
the same command with `--spectral_loss none` (the MSE baseline), and with `amplitude`, `amplitude_weighted_phase`
and `wavelet` at their defaults; several seeds, mean ± std.

Study 2 (`--study sweep`): λ × timestep weighting of `amplitude_phase` on the checkerboards and on natural-image
crops (`--builtin_dataset photos`: 32x32 crops of scikit-learn's two sample photos), one seed, against the MSE run
of the same data, so the default can be checked against its neighbours.

    python benchmarks/bench_default_run.py                       # study 1, seeds 0 1 2 (about 75 min on 2 cores)
    python benchmarks/bench_default_run.py --study sweep         # study 2 (about 45 min)

Every model is sampled with DDIM-50 from the same initial noise (256 images) and compared with fresh data:
log-RAPSD distance (all / low / mid / high thirds of the frequencies; both spectra floored at 1e-4 of the data's peak
power, so rings where the data have no power do not dominate), Fréchet Wavelet Distance, and the fraction of pixels
with |x| > 0.9 (1.0 for the ±1 checkerboards; a blurry model sits near 0). Each run's result is written as soon as it
is evaluated (`benchmarks/results/default_run/<study>/<run>.json`), so an interrupted study keeps what it measured and
a rerun skips finished runs (`--fresh` retrains them); the summary table is `benchmarks/results/default_run_<study>.*`.

Targets (issue 10): the default run's log-RAPSD distance at most 0.5x the baseline's, and its sharp-pixel fraction at
least 0.3 higher.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    RESULTS_DIR,
    ROOT,
    evaluate_models,
    machine_info,
    printable_command,
    public,
    run_training,
    summarize,
    training_command,
    write_json,
)

from diffusers_specreg.metrics import log_rapsd_distance  # noqa: E402

VARIANTS = ("default", "none", "amplitude", "amplitude_weighted_phase", "wavelet")
SWEEP_DATASETS = ("checkerboards", "photos")
SWEEP_WEIGHTS = (0.3, 1.0, 3.0)
SWEEP_WEIGHTINGS = ("alpha_bar", "min_sqrt_snr")
TARGET_RATIO, TARGET_SHARP_GAIN = 0.5, 0.3
FLOOR_OF_PEAK = 1e-4


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default="defaults", choices=["defaults", "sweep"], help="which study (defaults)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (study 1: 0 1 2)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, help="study 1 runs")
    parser.add_argument("--datasets", nargs="+", default=list(SWEEP_DATASETS), choices=SWEEP_DATASETS)
    parser.add_argument("--weights", type=float, nargs="+", default=list(SWEEP_WEIGHTS), help="study 2 λ values")
    parser.add_argument("--weightings", nargs="+", default=list(SWEEP_WEIGHTINGS), help="study 2 weightings")
    parser.add_argument("--max_train_steps", type=int, default=None, help="override the demo's 1,500 steps")
    parser.add_argument("--num_samples", type=int, default=256, help="samples per model (256)")
    parser.add_argument("--threads", type=int, default=None, help="threads of the trainings and evaluation (2)")
    parser.add_argument("--work_dir", default=None, help="trained models (default: benchmarks/runs/default_run)")
    parser.add_argument("--fresh", action="store_true", help="retrain runs that already have a result")
    parser.add_argument("--summary_only", action="store_true", help="print the tables of the results on disk")
    return parser.parse_args(argv)


def study_runs(args) -> list[dict]:
    """Each run: name, dataset, seed and the train_spectral.py options that differ from the demo run."""
    runs = _study_runs(args)
    for run in runs:  # another budget is another run: never reused for, or summarised with, the demo's
        run["max_train_steps"] = args.max_train_steps  # None: the demo's own 1,500 steps
        if args.max_train_steps:
            run["name"] += f"-steps{args.max_train_steps}"
    return runs


def _study_runs(args) -> list[dict]:
    runs = []
    if args.study == "defaults":
        for seed in args.seeds:
            for variant in args.variants:
                options = [] if variant == "default" else ["--spectral_loss", variant]
                runs.append(dict(name=f"{variant}-seed{seed}", variant=variant, dataset="checkerboards", seed=seed,
                                 options=options))  # fmt: skip
        return runs
    seed = args.seeds[0]
    suffix = f"-seed{seed}" if seed else ""  # seed 0 is the sweep's own seed
    for dataset in args.datasets:
        runs.append(dict(name=f"{dataset}-none{suffix}", variant="none", dataset=dataset, seed=seed,
                         options=["--spectral_loss", "none"]))  # fmt: skip
        for weighting in args.weightings:
            for weight in args.weights:
                runs.append(dict(
                    name=f"{dataset}-{weighting}-{weight:g}{suffix}", variant="amplitude_phase", dataset=dataset,
                    seed=seed,
                    weighting=weighting, weight=weight,
                    options=["--spectral_loss", "amplitude_phase", "--spectral_weight", f"{weight:g}",
                             "--spectral_weighting", weighting],
                ))  # fmt: skip
    return runs


def reference_images(dataset: str, count: int) -> torch.Tensor:
    """Fresh data of the built-in set (another seed than the training set's), `[N, C, 32, 32]` in [-1, 1]."""
    from diffusers_specreg.data import make_checkerboards, make_photo_crops

    if dataset == "photos":
        return make_photo_crops(count, 32, seed=12345)
    return make_checkerboards(count, 32, seed=12345)


def evaluate_run(run: dict, output_dir: Path, args) -> dict:
    real = reference_images(run["dataset"], args.num_samples)
    evaluation = evaluate_models(
        {run["name"]: output_dir}, real, RESULTS_DIR / "default_run" / args.study, num_samples=args.num_samples,
        num_inference_steps=50, seed=0, prefix=f"{run['name']}_",
    )  # fmt: skip
    metrics = evaluation["models"][run["name"]]
    spectra = evaluation["spectra"]
    data_power = np.asarray(spectra["data"])
    floor = FLOOR_OF_PEAK * float(data_power[1:].max())
    distance = log_rapsd_distance(np.asarray(spectra[run["name"]]), data_power, floor=floor)
    return {
        "log_rapsd_distance": distance,
        "log_rapsd_distance_relative_floor": metrics["log_rapsd_distance"],
        "fwd": metrics["fwd"],
        "sharp_fraction": metrics["sharp_fraction"],
        "data_sharp_fraction": evaluation["data"]["sharp_fraction"],
        "slope_gap": metrics["slope"]["gap"],
        "sample_grid": metrics["sample_grid"],
        "spectra": {"frequencies": spectra["frequencies"], "data": data_power, "model": spectra[run["name"]]},
        "evaluation": {k: v for k, v in public(evaluation).items() if k not in ("spectra", "models")},
    }


def run_and_evaluate(run: dict, args, work_dir: Path) -> dict:
    result_path = RESULTS_DIR / "default_run" / args.study / f"{run['name']}.json"
    if result_path.is_file() and not args.fresh:
        print(f"[skip {run['name']}] {result_path.relative_to(ROOT)} exists", flush=True)
        return json.loads(result_path.read_text())
    same = study1_equivalent(run) if args.study == "sweep" else None
    demo = RESULTS_DIR / "default_run" / "defaults" / f"{same}-seed{run['seed']}.json"
    if same and demo.is_file() and not args.max_train_steps:
        # a checkerboard cell of the sweep at the demo's settings is a study-1 run (same command): reuse its result
        print(f"[reuse {run['name']}] = {demo.relative_to(ROOT)}", flush=True)
        record = {**json.loads(demo.read_text()), **{k: v for k, v in run.items() if k != "options"}}
        write_json(result_path, record)
        return record
    options = ["--builtin_dataset", run["dataset"], "--seed", str(run["seed"]), *run["options"]]
    if args.max_train_steps:
        options += ["--max_train_steps", str(args.max_train_steps)]
    argv = training_command(work_dir / args.study / run["name"], options)
    print(f"[train {run['name']}] {printable_command(argv)}", flush=True)
    seconds = run_training(argv, work_dir / args.study / f"{run['name']}.log", args.threads)
    print(f"[train {run['name']}] {seconds:.0f} s; evaluating", flush=True)
    record = {**run, "command": printable_command(argv), "train_seconds": seconds}
    record.update(evaluate_run(run, work_dir / args.study / run["name"], args))
    d = record["log_rapsd_distance"]
    print(
        f"[result {run['name']}] log-RAPSD {d['all']:.4f} (high {d['high']:.4f}), FWD {record['fwd']:.4g}, "
        f"|x|>0.9 {record['sharp_fraction']:.3f}",
        flush=True,
    )
    write_json(result_path, record)
    return json.loads(result_path.read_text())


def study1_equivalent(run: dict) -> str | None:
    """The study-1 variant a sweep cell equals ("default" or "none" on the checkerboards), else None."""
    from diffusers_specreg.regularizer import DEFAULT_WEIGHTS
    from diffusers_specreg.weighting import DEFAULT_WEIGHTING

    if run["dataset"] != "checkerboards":
        return None
    if run["variant"] == "none":
        return "none"
    default = run.get("weighting") == DEFAULT_WEIGHTING and run.get("weight") == DEFAULT_WEIGHTS["amplitude_phase"]
    return "default" if default else None


def all_results(study: str, max_train_steps: int | None = None) -> list[dict]:
    """Every result of a study on disk at this budget (this invocation's and earlier ones'), in a stable order."""
    paths = sorted((RESULTS_DIR / "default_run" / study).glob("*.json"))
    results = [json.loads(p.read_text()) for p in paths]
    results = [r for r in results if r.get("max_train_steps") == max_train_steps]
    order = {v: i for i, v in enumerate(VARIANTS)}
    return sorted(results, key=lambda r: (r["dataset"], order.get(r["variant"], 9), r.get("weighting", ""),
                                          r.get("weight", 0), r["seed"]))  # fmt: skip


def summary_defaults(results: list[dict]) -> tuple[dict, list[str]]:
    by_variant: dict[str, list[dict]] = {}
    for r in results:
        by_variant.setdefault(r["variant"], []).append(r)
    table, lines = {}, []
    header = f"{'run':<26}{'seeds':>6}{'log-RAPSD all':>20}{'high band':>20}{'FWD':>18}{'|x|>0.9':>18}"
    lines.append(header)
    for variant, rs in by_variant.items():
        entry = {
            "seeds": [r["seed"] for r in rs],
            "log_rapsd_all": summarize([r["log_rapsd_distance"]["all"] for r in rs]),
            "log_rapsd_high": summarize([r["log_rapsd_distance"]["high"] for r in rs]),
            "fwd": summarize([r["fwd"] for r in rs]),
            "sharp_fraction": summarize([r["sharp_fraction"] for r in rs]),
        }
        table[variant] = entry
        label = "default (amplitude_phase)" if variant == "default" else variant
        lines.append(
            f"{label:<26}{len(rs):>6}"
            + "".join(
                f"{entry[k]['mean']:>11.4f} ± {entry[k]['std']:<6.4f}"
                for k in ("log_rapsd_all", "log_rapsd_high", "fwd", "sharp_fraction")
            )
        )
    verdict = {}
    if "none" in table:
        base = table["none"]
        for variant in (v for v in table if v != "none"):
            ratio = table[variant]["log_rapsd_all"]["mean"] / base["log_rapsd_all"]["mean"]
            gain = table[variant]["sharp_fraction"]["mean"] - base["sharp_fraction"]["mean"]
            met = ratio <= TARGET_RATIO and gain >= TARGET_SHARP_GAIN
            verdict[variant] = {"log_rapsd_ratio": ratio, "sharp_gain": gain, "target_met": met}
            lines.append(
                f"{variant}: log-RAPSD ratio to MSE {ratio:.3f} (target <= {TARGET_RATIO}), sharp-pixel gain "
                f"{gain:+.3f} (target >= +{TARGET_SHARP_GAIN}): {'met' if met else 'missed'}"
            )
    return {"table": table, "verdict": verdict}, lines


def summary_sweep(results: list[dict]) -> tuple[dict, list[str]]:
    table, lines = {}, []
    lines.append(f"{'dataset':<15}{'seed':>5} {'weighting':<14}{'λ':>6}{'log-RAPSD all':>15}{'high':>9}{'FWD':>10}"
                 f"{'|x|>0.9':>9}{'high/MSE':>10}{'FWD/MSE':>9}")  # fmt: skip
    baselines = {(r["dataset"], r["seed"]): r for r in results if r["variant"] == "none"}
    for r in results:
        base = baselines.get((r["dataset"], r["seed"]))
        d = r["log_rapsd_distance"]
        high_ratio = d["high"] / base["log_rapsd_distance"]["high"] if base else float("nan")
        all_ratio = d["all"] / base["log_rapsd_distance"]["all"] if base else float("nan")
        fwd_ratio = r["fwd"] / base["fwd"] if base else float("nan")
        key = f"{r['dataset']}/{r.get('weighting', '-')}/{r.get('weight', 0):g}/seed{r['seed']}"
        table[key] = {"log_rapsd": d, "fwd": r["fwd"], "sharp_fraction": r["sharp_fraction"],
                      "high_ratio_to_mse": high_ratio, "all_ratio_to_mse": all_ratio, "fwd_ratio_to_mse": fwd_ratio}  # fmt: skip
        weighting = r.get("weighting", "MSE")
        weight = f"{r['weight']:g}" if "weight" in r else "-"
        lines.append(
            f"{r['dataset']:<15}{r['seed']:>5} {weighting:<14}{weight:>6}{d['all']:>15.4f}{d['high']:>9.4f}{r['fwd']:>10.4g}"
            f"{r['sharp_fraction']:>9.3f}{high_ratio:>10.3f}{fwd_ratio:>9.3f}"
        )
    groups: dict[tuple, list[str]] = {}
    for key in table:
        dataset, weighting, weight, _ = key.split("/")
        groups.setdefault((dataset, weighting, weight), []).append(key)
    lines.append("")
    lines.append(
        f"{'dataset':<15}{'weighting':<14}{'λ':>6}{'seeds':>6}{'all/MSE':>18}{'high/MSE':>18}{'FWD/MSE':>18}"
        f"{'|x|>0.9':>18}"
    )
    aggregated = {}
    for (dataset, weighting, weight), keys in groups.items():
        if weighting == "-":
            continue
        rows = [table[k] for k in keys]
        entry = {name: summarize([r[field] for r in rows]) for name, field in
                 (("all_ratio", "all_ratio_to_mse"), ("high_ratio", "high_ratio_to_mse"),
                  ("fwd_ratio", "fwd_ratio_to_mse"), ("sharp", "sharp_fraction"))}  # fmt: skip
        aggregated[f"{dataset}/{weighting}/{weight}"] = entry
        lines.append(
            f"{dataset:<15}{weighting:<14}{weight:>6}{len(rows):>6}"
            + "".join(
                f"{entry[n]['mean']:>11.3f} ± {entry[n]['std']:<5.3f}"
                for n in ("all_ratio", "high_ratio", "fwd_ratio", "sharp")
            )
        )
    return {"table": table, "aggregated": aggregated}, lines


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:  # the evaluation in this process too (two single-threaded studies can share 2 cores)
        torch.set_num_threads(args.threads)
    work_dir = Path(args.work_dir) if args.work_dir else ROOT / "benchmarks" / "runs" / "default_run"
    for run in [] if args.summary_only else study_runs(args):
        run_and_evaluate(run, args, work_dir)
    results = all_results(args.study, args.max_train_steps)
    summary, lines = (summary_defaults if args.study == "defaults" else summary_sweep)(results)
    print("\n" + "\n".join(lines))
    record = {
        "benchmark": f"default_run_{args.study}",
        **machine_info("cpu"),
        "command": "python benchmarks/bench_default_run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "floor": f"{FLOOR_OF_PEAK} x the data's peak non-DC power",
        "sampler": "DDIM (eta 0), 50 steps, same initial noise for every model",
        "num_samples": args.num_samples,
        **summary,
        "runs": [{k: v for k, v in r.items() if k != "spectra"} for r in results],
        "printed": lines,
    }
    output = write_json(RESULTS_DIR / f"default_run_{args.study}.json", record)
    (RESULTS_DIR / f"default_run_{args.study}.txt").write_text("\n".join(lines) + "\n")
    plot_spectra(results, RESULTS_DIR / f"default_run_{args.study}.png")
    print(f"wrote {output}")
    return record


def plot_spectra(results: list[dict], path: Path) -> None:
    """RAPSD of the data and of each run (one panel per dataset)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in results})
    figure, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        runs = [r for r in results if r["dataset"] == dataset]
        frequencies = np.asarray(runs[0]["spectra"]["frequencies"])[1:]
        axis.loglog(frequencies, np.asarray(runs[0]["spectra"]["data"])[1:], color="black", lw=2.5, label="data")
        for r in runs:
            axis.loglog(frequencies, np.maximum(np.asarray(r["spectra"]["model"])[1:], 1e-12), lw=1, label=r["name"])
        axis.set_title(dataset)
        axis.set_xlabel("frequency (cycles / pixel)")
        axis.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


if __name__ == "__main__":
    main()
