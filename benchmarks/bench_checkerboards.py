"""The checkerboard experiment of arXiv 2603.02447 (Figs. 1-2): MSE alone vs MSE + a spectral loss, side by side.

Three DDPM models (epsilon prediction) are trained with `train_spectral.py` on the built-in grayscale ±1
checkerboards, with the same steps, seed, data order, noise and optimiser: the MSE baseline, `amplitude_phase`
(Eq. 15) and `wavelet` (Eq. 16, Haar). They are sampled from the same initial noise (DDIM, eta 0) and compared with
the data: sample grids, radially averaged power spectra (RAPSD), log-RAPSD distance to the data (overall and per third
of the frequencies), and sharpness, the fraction of pixels with |x| > 0.9 (1.0 for the data; the paper's MSE model
gives blurry grey samples).

    python benchmarks/bench_checkerboards.py --preset reduced     # 32x32, small UNet: a CPU run
    python benchmarks/bench_checkerboards.py --preset full        # 64x64, train_unconditional's UNet: for a GPU

Spectral settings (defaults): each loss's default λ and the default ᾱ_t weighting of train_spectral.py (see
`bench_default_run.py` for the study of the defaults themselves).
Models go to `--work_dir`; the JSON and PNGs to `benchmarks/results/checkerboards_<preset>[_<tag>].*`.
Target (issue 7): at equal budget a regularized model's log-RAPSD distance to the data is at most half the baseline's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    RESULTS_DIR,
    ROOT,
    evaluate_models,
    machine_info,
    plot_overview,
    preset_options,
    printable_command,
    public,
    run_training,
    training_command,
    write_json,
)

PRESETS = {
    # a CPU run: ~1.1 M-parameter UNet at 32x32 (0.3-0.5 s per step on 2 idle cores)
    "reduced": dict(
        resolution=32,
        model_preset="small",
        max_train_steps=500,
        learning_rate=5e-4,
        lr_warmup_steps=50,
        num_samples=256,
        num_inference_steps=50,
    ),
    # the paper's 64x64 toy with the default model of train_unconditional.py (~114 M parameters): for a GPU
    "full": dict(
        resolution=64,
        model_preset="default",
        max_train_steps=20000,
        learning_rate=1e-4,
        lr_warmup_steps=500,
        num_samples=1000,
        num_inference_steps=100,
    ),
}
VARIANTS = ("mse", "amplitude_phase", "wavelet")
TARGET_RATIO = 0.5


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="reduced", choices=sorted(PRESETS), help="run size (default: reduced)")
    parser.add_argument("--max_train_steps", type=int, default=None, help="override the preset's training steps")
    parser.add_argument("--num_samples", type=int, default=None, help="override the preset's evaluation samples")
    parser.add_argument("--seed", type=int, default=0, help="training and sampling seed (default: 0)")
    parser.add_argument("--train_batch_size", type=int, default=16, help="batch size (default: 16)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, help="models to train")
    parser.add_argument("--spectral_weight", default=None, help="λ (default: each loss's default)")
    parser.add_argument("--weighting", default="alpha_bar", help="spectral timestep weighting (default: alpha_bar)")
    parser.add_argument("--min_snr_gamma", type=float, default=5.0, help="γ of min_snr (default: 5)")
    parser.add_argument("--spectral_max_timestep", type=int, default=None, help="gate: spectral terms at t <= this")
    parser.add_argument("--wavelet", default="haar", help="wavelet of the wavelet loss (default: haar)")
    parser.add_argument("--wavelet_levels", type=int, default=3, help="levels of the wavelet loss (default: 3)")
    parser.add_argument("--device_threads", type=int, default=None, help="OMP_NUM_THREADS of the trainings")
    parser.add_argument("--work_dir", default=None, help="trained models (default: benchmarks/runs/checkerboards_*)")
    parser.add_argument("--tag", default=None, help="suffix of the result files, to keep several settings apart")
    parser.add_argument("--skip_training", action="store_true", help="evaluate models already in --work_dir")
    parser.add_argument(
        "--reuse_baseline",
        default=None,
        help="saved MSE pipeline of an earlier run with the same preset and seed: evaluated, not retrained",
    )
    return parser.parse_args(argv)


def spectral_options(args, loss: str) -> list[str]:
    options = ["--spectral_weight", str(args.spectral_weight)] if args.spectral_weight is not None else []
    options += [
        "--spectral_loss",
        loss,
        "--spectral_weighting",
        args.weighting,
        "--min_snr_gamma",
        str(args.min_snr_gamma),
    ]
    if args.spectral_max_timestep is not None:
        options += ["--spectral_max_timestep", str(args.spectral_max_timestep)]
    if loss == "wavelet":
        options += ["--wavelet", args.wavelet, "--wavelet_levels", str(args.wavelet_levels)]
    return options


def main(argv=None) -> dict:
    args = parse_args(argv)
    preset = dict(PRESETS[args.preset])
    if args.max_train_steps is not None:
        preset["max_train_steps"] = args.max_train_steps
    if args.num_samples is not None:
        preset["num_samples"] = args.num_samples
    name = f"checkerboards_{args.preset}" + (f"_{args.tag}" if args.tag else "")
    work_dir = Path(args.work_dir) if args.work_dir else ROOT / "benchmarks" / "runs" / name
    common = ["--builtin_dataset", "checkerboards", *preset_options(preset, args.train_batch_size, args.seed)]
    runs = {}
    for variant in args.variants:
        options = common + ([] if variant == "mse" else spectral_options(args, variant))
        argv_run = training_command(work_dir / variant, options)
        runs[variant] = {"command": printable_command(argv_run), "output_dir": str(work_dir / variant)}
        if variant == "mse" and args.reuse_baseline:
            runs[variant] = {"reused": True, "output_dir": str(Path(args.reuse_baseline).resolve())}
            print(f"[reuse mse] {runs[variant]['output_dir']}", flush=True)
            continue
        if args.skip_training:
            continue
        print(f"[train {variant}] {runs[variant]['command']}", flush=True)
        seconds = run_training(argv_run, work_dir / f"{variant}.log", args.device_threads)
        runs[variant]["train_seconds"] = seconds
        print(f"[train {variant}] done in {seconds:.0f} s", flush=True)

    from diffusers_specreg.data import make_checkerboards

    # reference: fresh checkerboards from another seed than the training set's (same distribution)
    real = make_checkerboards(preset["num_samples"], preset["resolution"], seed=12345)
    print(
        f"[evaluate] {preset['num_samples']} samples per model, DDIM {preset['num_inference_steps']} steps", flush=True
    )
    evaluation = evaluate_models(
        {variant: runs[variant]["output_dir"] for variant in args.variants},
        real,
        RESULTS_DIR,
        num_samples=preset["num_samples"],
        num_inference_steps=preset["num_inference_steps"],
        seed=args.seed,
        prefix=f"{name}_",
        plot_title=f"Checkerboards {preset['resolution']}x{preset['resolution']}, {preset['max_train_steps']} steps",
    )
    figure = plot_overview(
        evaluation,
        RESULTS_DIR / f"{name}.png",
        f"Checkerboards {preset['resolution']}x{preset['resolution']} ({args.preset}): "
        f"{preset['max_train_steps']} steps, seed {args.seed}",
    )

    # the table, and the target: best regularized log-RAPSD distance <= half the baseline's
    models = evaluation["models"]
    print(f"\n{'model':<18}{'log-RAPSD all':>14}{'low':>8}{'mid':>8}{'high':>8}{'slope gap':>11}{'|x|>0.9':>9}")
    print(f"{'data':<18}{'':>14}{'':>8}{'':>8}{'':>8}{'':>11}{evaluation['data']['sharp_fraction']:>9.3f}")
    for variant, m in models.items():
        d = m["log_rapsd_distance"]
        print(
            f"{variant:<18}{d['all']:>14.4f}{d['low']:>8.3f}{d['mid']:>8.3f}{d['high']:>8.3f}"
            f"{m['slope']['gap']:>11.3f}{m['sharp_fraction']:>9.3f}"
        )
    verdict = {}
    if "mse" in models:
        baseline = models["mse"]["log_rapsd_distance"]["all"]
        for variant in (v for v in models if v != "mse"):
            ratio = models[variant]["log_rapsd_distance"]["all"] / baseline
            verdict[variant] = {"ratio_to_baseline": ratio, "target_met": ratio <= TARGET_RATIO}
            met = "met" if ratio <= TARGET_RATIO else "missed"
            print(f"{variant}: log-RAPSD distance / baseline = {ratio:.3f} (target <= {TARGET_RATIO}: {met})")
    record = {
        "benchmark": "checkerboards",
        **machine_info("cpu"),
        "preset": args.preset,
        "settings": preset
        | {
            "seed": args.seed,
            "train_batch_size": args.train_batch_size,
            "spectral_weight": args.spectral_weight or "default",
            "weighting": args.weighting,
            "min_snr_gamma": args.min_snr_gamma,
            "spectral_max_timestep": args.spectral_max_timestep,
            "wavelet": args.wavelet,
            "wavelet_levels": args.wavelet_levels,
            "reference_data": "make_checkerboards(num_samples, resolution, seed=12345)",
        },
        "command": "python benchmarks/bench_checkerboards.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "runs": runs,
        "evaluation": public(evaluation),
        "target": {"rule": f"log-RAPSD(all) of a regularized model <= {TARGET_RATIO} x baseline", **verdict},
        "figure": figure.name,
    }
    output = write_json(RESULTS_DIR / f"{name}.json", record)
    print(f"wrote {output} and {figure}")
    return record


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
