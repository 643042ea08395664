"""Which sampler should draw the model card's samples? DDIM against DDPM (ancestral) on the same trained models.

The card's grid and quick metrics come from a fast sampler. DDIM-50 grids looked grainier than DDPM-50 grids of the
same model, so this script measures instead of guessing: for every saved pipeline of `--models` and every sampler
of `--samplers` (`ddim:50` = DDIM with eta 0 in 50 steps, `ddpm:50` = the DDPM ancestral sampler on 50 of the 1000
training timesteps, `ddpm:1000` = the full chain, the reference), it draws the same `--num_images` images (one seeded
generator per image) and reports against data of the model's kind (the built-in checkerboards at the model's size):

- log-RAPSD distance to the data, all frequencies and the high third (mean |Δ log10 P|, lower is better),
- spectral slope gap (model - data; < 0 means missing high frequencies, > 0 means excess, e.g. grain),
- sharp pixels: fraction with |x| > 0.9 (checkerboards are ±1 everywhere; blur sits near 0),
- seconds per image on this machine (the one timing here; compare within one run only).

and writes one grid per (model, sampler) to `--output_dir` to look at.

    python benchmarks/bench_card_sampler.py --models RUN/default-seed0 RUN/none-seed0
    python benchmarks/bench_card_sampler.py --models M --samplers ddim:50 ddpm:50 --num_images 8   # quick check

`--models` defaults to `benchmarks/runs/default_run/defaults/{default,none}-seed0`, the seed-0 runs that
`bench_default_run.py` trains (the built-in demo's settings with the default spectral loss and with none).
Writes `benchmarks/results/card_sampler.json`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS_DIR, ROOT, machine_info, sharp_fraction, write_json  # noqa: E402

DEFAULT_MODELS = [
    ROOT / "benchmarks" / "runs" / "default_run" / "defaults" / f"{n}-seed0" for n in ("default", "none")
]
SAMPLERS = ("ddim", "ddpm")


def parse_sampler(text: str) -> tuple[str, int]:
    """`"ddim:50"` -> `("ddim", 50)`; ValueError naming the allowed kinds."""
    kind, _, steps = text.partition(":")
    if kind not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
        raise ValueError(f"Unknown sampler {text!r}; expected KIND:STEPS with KIND in {SAMPLERS}, e.g. ddim:50.")
    return kind, int(steps)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[str(p) for p in DEFAULT_MODELS], help="saved pipelines")
    parser.add_argument(
        "--samplers", nargs="+", default=["ddim:50", "ddpm:50", "ddpm:1000"], help="KIND:STEPS (ddim:50 ...)"
    )
    parser.add_argument("--num_images", type=int, default=64, help="images per model and sampler (default: 64)")
    parser.add_argument("--batch_size", type=int, default=64, help="images per pipeline call (default: 64)")
    parser.add_argument("--num_data", type=int, default=1024, help="data images for the spectrum (default: 1024)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--output_dir", default="/tmp/card_sampler", help="grids (default: /tmp/card_sampler)")
    parser.add_argument("--output", default=None, help="JSON path (default: results/card_sampler.json)")
    args = parser.parse_args(argv)
    args.samplers = [parse_sampler(s) for s in args.samplers]
    return args


def make_pipeline(pipeline, kind: str):
    """The model's UNet with a DDIM (eta 0) or a DDPM (ancestral) scheduler built from its scheduler config."""
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler

    if kind == "ddim":
        return DDIMPipeline(unet=pipeline.unet, scheduler=DDIMScheduler.from_config(pipeline.scheduler.config))
    return DDPMPipeline(unet=pipeline.unet, scheduler=DDPMScheduler.from_config(pipeline.scheduler.config))


def draw(pipeline, kind: str, steps: int, num_images: int, batch_size: int, seed: int) -> torch.Tensor:
    """`[N, C, H, W]` samples in [-1, 1]; image i always comes from the same seeded generator."""
    from diffusers_specreg.evaluate.sampling import image_generators

    sampler = make_pipeline(pipeline, kind)
    sampler.set_progress_bar_config(disable=True)
    extra = {"eta": 0.0} if kind == "ddim" else {}
    batches = []
    for start in range(0, num_images, batch_size):
        generators = image_generators(seed, start, min(batch_size, num_images - start))
        images = sampler(
            batch_size=len(generators),
            generator=generators,
            num_inference_steps=steps,
            output_type="np",
            **extra,
        ).images
        batches.append(torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float() * 2.0 - 1.0)
    return torch.cat(batches)


def measure(samples: torch.Tensor, data_spectrum) -> dict:
    from diffusers_specreg.metrics import RAPSD, log_rapsd_distance, spectral_slope

    spectrum = RAPSD()
    spectrum.update(samples)
    psd = spectrum.compute()
    distances = log_rapsd_distance(psd, data_spectrum)
    slope_gap = spectral_slope(psd.frequencies, psd) - spectral_slope(data_spectrum.frequencies, data_spectrum)
    return {
        "log_rapsd_all": float(distances["all"]),
        "log_rapsd_high": float(distances["high"]),
        "slope_gap": float(slope_gap),
        "sharp_fraction": sharp_fraction(samples),
    }


def main(argv=None) -> dict:
    from diffusers_specreg.data import make_checkerboards
    from diffusers_specreg.evaluate import load_pipeline
    from diffusers_specreg.metrics import RAPSD
    from diffusers_specreg.plots import save_image_grid

    args = parse_args(argv)
    missing = [m for m in args.models if not Path(m).is_dir()]
    if missing:
        raise SystemExit(
            f"No saved pipeline at {missing}: train them with benchmarks/bench_default_run.py or pass --models."
        )
    output_dir = Path(args.output_dir)
    rows = []
    data_spectra = {}
    for model in args.models:
        pipeline = load_pipeline(model, device=args.device)
        channels = pipeline.unet.config.in_channels
        size = pipeline.unet.config.sample_size
        size = size if isinstance(size, int) else size[0]
        if (channels, size) not in data_spectra:
            data = make_checkerboards(args.num_data, size, seed=1, channels=channels)
            spectrum = RAPSD()
            spectrum.update(data)
            data_spectra[(channels, size)] = spectrum.compute()
            save_image_grid(data[:64], output_dir / f"data_{size}.png")
        name = Path(model).name
        for kind, steps in args.samplers:
            start = time.perf_counter()
            samples = draw(pipeline, kind, steps, args.num_images, args.batch_size, args.seed)
            seconds = time.perf_counter() - start
            grid = output_dir / f"{name}_{kind}{steps}.png"
            save_image_grid(samples[:64], grid)
            row = {"model": name, "sampler": f"{kind}:{steps}", **measure(samples, data_spectra[(channels, size)])}
            row.update(seconds_per_image=seconds / args.num_images, grid=str(grid))
            rows.append(row)
            print(
                f"{name:<20}{row['sampler']:>10}  log-RAPSD all {row['log_rapsd_all']:.3f}  high "
                f"{row['log_rapsd_high']:.3f}  slope gap {row['slope_gap']:+.3f}  sharp {row['sharp_fraction']:.3f}  "
                f"{row['seconds_per_image']:.2f} s/img",
                flush=True,
            )
    print(f"\n{args.num_images} images per cell, seed {args.seed}, data: {args.num_data} built-in checkerboards")
    header = "| model | sampler | log-RAPSD all | log-RAPSD high | slope gap | sharp pixels | s / image |"
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['model']} | {row['sampler']} | {row['log_rapsd_all']:.3f} | {row['log_rapsd_high']:.3f} | "
            f"{row['slope_gap']:+.3f} | {row['sharp_fraction']:.3f} | {row['seconds_per_image']:.2f} |"
        )
    record = {
        "benchmark": "card_sampler",
        **machine_info(args.device),
        "command": "python benchmarks/bench_card_sampler.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {
            "num_images": args.num_images,
            "num_data": args.num_data,
            "seed": args.seed,
            "samplers": [f"{k}:{s}" for k, s in args.samplers],
            "models": args.models,
        },
        "rows": rows,
    }
    output = Path(args.output) if args.output else RESULTS_DIR / "card_sampler.json"
    write_json(output, record)
    print(f"wrote {output}; grids in {output_dir}")
    return record


if __name__ == "__main__":
    main()
