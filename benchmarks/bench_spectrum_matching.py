"""Spectrum Matching at equal budget: plain KL vs ESM vs DSM autoencoders, then the same latent UNet on each.

Stage 1 trains one small `AutoencoderKL` per latent regulariser with `train_autoencoder.py` (same data, steps, seed
and everything else; only `--latent_regularizer` differs) and measures it on held-out data: reconstruction PSNR and
the radial spectrum slopes of its latents and of the images (`diffusers_specreg.autoencoder.evaluate_autoencoder`).
Stage 2 trains the same latent UNet on each autoencoder with `train_spectral.py --vae_name_or_path` (the built-in
demo's spectral loss and schedule, applied to latent x̂₀), samples it with DDIM-50 from the same initial noise, decodes
and compares the images with fresh data: log-RAPSD distance (floored at 1e-4 of the data's peak power, as in
`bench_default_run.py`) and Fréchet Wavelet Distance.

    python benchmarks/bench_spectrum_matching.py                    # kl esm dsm, seeds 0 1 (about 50 min, 2 cores)
    python benchmarks/bench_spectrum_matching.py --seeds 0 --ae_steps 200 --unet_steps 200   # a quick look

Data: `--builtin_dataset photos` (32x32 crops of scikit-learn's sample photos), natural images with a power-law
spectrum, which is the case Spectrum Matching is about. Each run's result is written as soon as it is measured
(`benchmarks/results/spectrum_matching/<run>.json`; a rerun skips finished runs unless `--fresh`), the summary is
`benchmarks/results/spectrum_matching.{json,txt}`.

Target (issue 12): ESM or DSM latents give better decoded samples than the KL baseline (lower log-RAPSD distance and
FWD) with a reconstruction PSNR no more than 1 dB lower.
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

REGULARIZERS = ("kl", "esm", "dsm")
FLOOR_OF_PEAK = 1e-4
MAX_PSNR_LOSS_DB = 1.0
RESOLUTION = 32
AE_SCRIPT = ROOT / "train_autoencoder.py"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regularizers", nargs="+", default=list(REGULARIZERS), choices=REGULARIZERS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (0 1)")
    parser.add_argument("--dataset", default="photos", choices=["photos", "checkerboards"], help="built-in data")
    parser.add_argument("--ae_steps", type=int, default=1500, help="autoencoder steps (1500)")
    parser.add_argument("--ae_learning_rate", type=float, default=1e-3, help="autoencoder learning rate (1e-3)")
    parser.add_argument("--unet_steps", type=int, default=1500, help="latent UNet steps (1500, the demo's)")
    parser.add_argument("--num_samples", type=int, default=256, help="decoded samples per model (256)")
    parser.add_argument("--num_held_out", type=int, default=512, help="held-out images for PSNR and slopes (512)")
    parser.add_argument("--threads", type=int, default=None, help="threads of the trainings and evaluation (2)")
    parser.add_argument("--work_dir", default=None, help="trained models (default: benchmarks/runs/spectrum_matching)")
    parser.add_argument("--results_dir", default=str(RESULTS_DIR), help="where the JSONs go (benchmarks/results)")
    parser.add_argument("--fresh", action="store_true", help="retrain runs that already have a result")
    parser.add_argument("--summary_only", action="store_true", help="print the tables of the results on disk")
    return parser.parse_args(argv)


def held_out_images(dataset: str, count: int) -> torch.Tensor:
    """Fresh data of the built-in set (another seed than the training set's), `[N, 3, 32, 32]` in [-1, 1]."""
    from diffusers_specreg.data import make_checkerboards, make_photo_crops

    make = make_photo_crops if dataset == "photos" else make_checkerboards
    return make(count, RESOLUTION, seed=12345)


def autoencoder_command(output_dir: Path, regularizer: str, args, seed: int) -> list[str]:
    return [
        sys.executable, str(AE_SCRIPT), "--output_dir", str(output_dir), "--overwrite_output_dir",
        "--builtin_dataset", args.dataset, "--resolution", str(RESOLUTION), "--model_preset", "tiny",
        "--latent_regularizer", regularizer, "--max_train_steps", str(args.ae_steps), "--seed", str(seed),
        "--learning_rate", str(args.ae_learning_rate),
        "--checkpointing_steps", "100000000", "--validation_steps", "100000000",
    ]  # fmt: skip


def measure_autoencoder(folder: Path, images: torch.Tensor) -> dict:
    from diffusers import AutoencoderKL

    from diffusers_specreg.autoencoder import evaluate_autoencoder

    vae = AutoencoderKL.from_pretrained(folder).eval()
    with torch.no_grad():
        measured = evaluate_autoencoder(vae, images)
    return {
        "psnr": float(measured["psnr"]),
        "latent_slope": float(measured["latent_slope"]),
        "image_slope": float(measured["image_slope"]),
        "scaling_factor": float(vae.config.scaling_factor),
    }


def run_and_evaluate(regularizer: str, seed: int, args, work_dir: Path, held_out: torch.Tensor) -> dict:
    name = f"{regularizer}-seed{seed}"
    result_path = Path(args.results_dir) / "spectrum_matching" / f"{name}.json"
    if result_path.is_file() and not args.fresh:
        print(f"[skip {name}] {result_path.relative_to(ROOT)} exists", flush=True)
        return json.loads(result_path.read_text())
    ae_dir, ldm_dir = work_dir / f"ae-{name}", work_dir / f"ldm-{name}"
    ae_argv = autoencoder_command(ae_dir, regularizer, args, seed)
    print(f"[autoencoder {name}] {printable_command(ae_argv)}", flush=True)
    ae_seconds = run_training(ae_argv, work_dir / f"ae-{name}.log", args.threads)
    autoencoder = measure_autoencoder(ae_dir, held_out)
    print(
        f"[autoencoder {name}] {ae_seconds:.0f} s; PSNR {autoencoder['psnr']:.2f} dB, latent slope "
        f"{autoencoder['latent_slope']:.2f} (images {autoencoder['image_slope']:.2f})",
        flush=True,
    )
    options = ["--builtin_dataset", args.dataset, "--resolution", str(RESOLUTION), "--vae_name_or_path", str(ae_dir),
               "--max_train_steps", str(args.unet_steps), "--seed", str(seed)]  # fmt: skip
    unet_argv = training_command(ldm_dir, options)
    print(f"[latent unet {name}] {printable_command(unet_argv)}", flush=True)
    unet_seconds = run_training(unet_argv, work_dir / f"ldm-{name}.log", args.threads)
    evaluation = evaluate_models(
        {name: ldm_dir}, held_out, Path(args.results_dir) / "spectrum_matching", num_samples=args.num_samples,
        num_inference_steps=50, seed=0, prefix=f"{name}_",
    )  # fmt: skip
    metrics = evaluation["models"][name]
    spectra = evaluation["spectra"]
    data_power = np.asarray(spectra["data"])
    distance = log_rapsd_distance(np.asarray(spectra[name]), data_power, floor=FLOOR_OF_PEAK * data_power[1:].max())
    record = {
        "name": name, "regularizer": regularizer, "seed": seed, "dataset": args.dataset,
        "ae_steps": args.ae_steps, "unet_steps": args.unet_steps,
        "commands": {"autoencoder": printable_command(ae_argv), "latent_unet": printable_command(unet_argv)},
        "seconds": {"autoencoder": ae_seconds, "latent_unet": unet_seconds},
        "autoencoder": autoencoder,
        "log_rapsd_distance": distance, "fwd": metrics["fwd"], "sample_grid": metrics["sample_grid"],
        "spectra": {"frequencies": spectra["frequencies"], "data": data_power, "model": spectra[name]},
        "evaluation": {k: v for k, v in public(evaluation).items() if k not in ("spectra", "models")},
    }  # fmt: skip
    print(f"[result {name}] log-RAPSD {distance['all']:.4f} (high {distance['high']:.4f}), FWD {record['fwd']:.4g}")
    write_json(result_path, record)
    return json.loads(result_path.read_text())


def all_results(args) -> list[dict]:
    """Every result on disk at this budget, in the order kl, esm, dsm and by seed."""
    results = [
        json.loads(p.read_text()) for p in sorted((Path(args.results_dir) / "spectrum_matching").glob("*.json"))
    ]
    results = [r for r in results if (r["ae_steps"], r["unet_steps"], r["dataset"]) ==
               (args.ae_steps, args.unet_steps, args.dataset)]  # fmt: skip
    order = {r: i for i, r in enumerate(REGULARIZERS)}
    return sorted(results, key=lambda r: (order[r["regularizer"]], r["seed"]))


FIELDS = (
    ("PSNR dB", lambda r: r["autoencoder"]["psnr"]),
    ("latent slope", lambda r: r["autoencoder"]["latent_slope"]),
    ("log-RAPSD all", lambda r: r["log_rapsd_distance"]["all"]),
    ("high band", lambda r: r["log_rapsd_distance"]["high"]),
    ("FWD", lambda r: r["fwd"]),
)


def summary(results: list[dict]) -> tuple[dict, list[str]]:
    by_regularizer: dict[str, list[dict]] = {}
    for r in results:
        by_regularizer.setdefault(r["regularizer"], []).append(r)
    lines = [f"{'autoencoder':<12}{'seeds':>6}" + "".join(f"{name:>20}" for name, _ in FIELDS)]
    table = {}
    for regularizer, rs in by_regularizer.items():
        table[regularizer] = {name: summarize([get(r) for r in rs]) for name, get in FIELDS}
        table[regularizer]["seeds"] = [r["seed"] for r in rs]
        table[regularizer]["image_slope"] = summarize([r["autoencoder"]["image_slope"] for r in rs])
        lines.append(
            f"{regularizer:<12}{len(rs):>6}"
            + "".join(
                f"{table[regularizer][n]['mean']:>12.4f} ± {table[regularizer][n]['std']:<5.3f}" for n, _ in FIELDS
            )
        )
    if by_regularizer:
        first = next(iter(by_regularizer.values()))
        lines.append(f"image spectrum slope (held-out data): {first[0]['autoencoder']['image_slope']:.3f}")
    verdict = {}
    if "kl" in table:
        base = table["kl"]
        for regularizer in (r for r in table if r != "kl"):
            entry = table[regularizer]
            psnr_drop = base["PSNR dB"]["mean"] - entry["PSNR dB"]["mean"]
            rapsd_ratio = entry["log-RAPSD all"]["mean"] / base["log-RAPSD all"]["mean"]
            fwd_ratio = entry["FWD"]["mean"] / base["FWD"]["mean"]
            met = rapsd_ratio < 1.0 and fwd_ratio < 1.0 and psnr_drop <= MAX_PSNR_LOSS_DB
            verdict[regularizer] = {"log_rapsd_ratio_to_kl": rapsd_ratio, "fwd_ratio_to_kl": fwd_ratio,
                                    "psnr_drop_db": psnr_drop, "target_met": met}  # fmt: skip
            lines.append(
                f"{regularizer} vs kl: log-RAPSD {rapsd_ratio:.3f}x, FWD {fwd_ratio:.3f}x, PSNR {-psnr_drop:+.2f} dB "
                f"(target: both < 1x, PSNR >= -{MAX_PSNR_LOSS_DB:g} dB): {'met' if met else 'missed'}"
            )
    return {"table": table, "verdict": verdict}, lines


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    work_dir = Path(args.work_dir) if args.work_dir else ROOT / "benchmarks" / "runs" / "spectrum_matching"
    held_out = held_out_images(args.dataset, max(args.num_held_out, args.num_samples))
    if not args.summary_only:
        for seed in args.seeds:
            for regularizer in args.regularizers:
                run_and_evaluate(regularizer, seed, args, work_dir, held_out)
    results = all_results(args)
    table, lines = summary(results)
    print("\n" + "\n".join(lines))
    record = {
        "benchmark": "spectrum_matching",
        **machine_info("cpu"),
        "command": "python benchmarks/bench_spectrum_matching.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "floor": f"{FLOOR_OF_PEAK} x the data's peak non-DC power",
        "sampler": "DDIM (eta 0), 50 steps, same initial noise for every model; decoded by each model's autoencoder",
        **table,
        "runs": [{k: v for k, v in r.items() if k != "spectra"} for r in results],
        "printed": lines,
    }
    output = write_json(Path(args.results_dir) / "spectrum_matching.json", record)
    (Path(args.results_dir) / "spectrum_matching.txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {output}")
    return record


if __name__ == "__main__":
    main()
