"""Fast checks of the helpers shared by the benchmark scripts (the studies themselves are too slow for tests)."""

import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import common  # noqa: E402


def test_sharp_fraction_counts_saturated_pixels():
    images = torch.tensor([1.0, -1.0, 0.95, -0.91, 0.9, 0.0, 0.5, -0.2]).reshape(2, 1, 2, 2)
    # |x| > 0.9: 1, -1, 0.95, -0.91 -> 4 of 8; 0.9 itself is not counted
    assert common.sharp_fraction(images) == pytest.approx(0.5)
    assert common.sharp_fraction(images, threshold=0.0) == pytest.approx(7 / 8)


def test_sharp_fraction_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        common.sharp_fraction(torch.zeros(4, 4))


def test_summarize_mean_and_sample_std():
    summary = common.summarize([1.0, 2.0, 3.0])
    assert summary["mean"] == pytest.approx(2.0)
    assert summary["std"] == pytest.approx(1.0)
    assert (summary["min"], summary["max"]) == (1.0, 3.0)
    assert common.summarize([5.0])["std"] == 0.0
    with pytest.raises(ValueError):
        common.summarize([])


def test_steady_rate_skips_warmup_steps():
    # step 1 is slow (warm-up), then 0.5 s per step of 16 images -> 32 images/s
    times = {1: 0.0, 2: 10.0, 3: 10.5, 4: 11.0, 5: 11.5}
    rate = common.steady_rate(times, skip=2, batch_size=16)
    assert rate["images_per_second"] == pytest.approx(32.0)
    assert rate["seconds_per_step"] == pytest.approx(0.5)
    assert rate["steps_timed"] == 3
    with pytest.raises(ValueError, match="at least 3"):
        common.steady_rate(times, skip=4, batch_size=16)


def test_training_command_is_quiet_and_ends_with_options(tmp_path):
    argv = common.training_command(tmp_path / "run", ["--seed", "3", "--eval_num_samples", "8"])
    assert argv[1] == str(common.TRAIN_SCRIPT)
    assert argv[argv.index("--output_dir") + 1] == str(tmp_path / "run")
    # the caller's options come last, so they override the quiet defaults (argparse keeps the last value)
    assert argv[-4:] == ["--seed", "3", "--eval_num_samples", "8"]
    assert argv.index("--eval_num_samples") < len(argv) - 2
    line = common.printable_command(argv)
    assert line.startswith("python train_spectral.py --output_dir")


def test_write_json_turns_nan_into_null(tmp_path):
    path = common.write_json(tmp_path / "a" / "r.json", {"x": float("nan"), "y": [1.5, float("inf")], "z": Path("p")})
    assert json.loads(path.read_text()) == {"x": None, "y": [1.5, None], "z": "p"}


def test_throughput_skips_a_missing_or_broken_stock_script(tmp_path):
    import bench_throughput

    assert "none given" in bench_throughput.stock_problem("none")
    assert "is missing" in bench_throughput.stock_problem(str(tmp_path / "missing.py"))
    broken = tmp_path / "train_unconditional.py"
    broken.write_text("import a_module_that_does_not_exist_here\n")
    assert "ModuleNotFoundError" in bench_throughput.stock_problem(str(broken))


def test_throughput_defaults_to_the_shared_stock_script_and_all_image_losses():
    import bench_throughput

    from diffusers_specreg.losses import LOSS_NAMES

    args = bench_throughput.parse_args([])
    assert Path(args.stock_script) == common.ROOT.parent / "shared" / "stock" / "train_unconditional.py"
    assert set(args.losses) == set(LOSS_NAMES) - {"mrstft"}
    args = bench_throughput.parse_args(["--device", "cuda", "--mixed_precision", "bf16", "--model_preset", "default"])
    assert (args.device, args.mixed_precision, args.model_preset) == ("cuda", "bf16", "default")


def test_throughput_paired_ratios_are_per_round():
    import bench_throughput

    rates = {"a": [{"images_per_second": 10.0}, {"images_per_second": 30.0}, {"images_per_second": 8.0}]}
    rates["b"] = [{"images_per_second": 5.0}, {"images_per_second": 30.0}, {"images_per_second": 2.0}]
    # per round b/a: 0.5, 1.0, 0.25 -> median 0.5 (the ratio of medians would be 5/10)
    assert bench_throughput.paired_ratios(rates, "a") == {"a": 1.0, "b": 0.5}


def test_step_overhead_fits_wavelet_levels_to_resolution():
    import bench_step_overhead

    assert bench_step_overhead.fit_levels({"wave": "bior1.3", "levels": 3}, 32)["levels"] == 2
    assert bench_step_overhead.fit_levels({"wave": "haar", "levels": 3}, 32)["levels"] == 3
    assert bench_step_overhead.fit_levels({}, 32) == {}


def test_metric_throughput_worker_streams_and_reports(tmp_path):
    import bench_metric_throughput

    args = bench_metric_throughput.parse_args(
        ["--resolution", "16", "--batch_size", "7", "--fwd_level", "1", "--python_memory"]
    )
    row = bench_metric_throughput.run_one(args, 30)
    assert row["num_images"] == 30 and row["fwd_level"] == 1
    assert row["update_seconds"] > 0 and row["images_per_second_updates"] > 0
    assert row["fwd"] > 0 and row["log_rapsd_all"] >= 0  # two different seeds: the sets differ
    assert row["peak_rss_mib"] > 0 and row["python_peak_mib"] is not None
    batches = list(bench_metric_throughput.image_batches(30, 7, 3, 16, seed=0))
    assert [len(b) for b in batches] == [7, 7, 7, 7, 2] and all(b.abs().max() <= 1 for b in batches)


def test_step_overhead_accepts_the_gpu_settings_and_names_its_result_file():
    import bench_step_overhead

    args = bench_step_overhead.parse_args(
        ["--device", "cuda", "--mixed_precision", "bf16", "--model_preset", "default", "--resolution", "64"]
    )
    assert bench_step_overhead.result_suffix(args, torch.device("cuda")) == "cuda_default_64_bf16"
    assert bench_step_overhead.result_suffix(bench_step_overhead.parse_args([]), torch.device("cpu")) == "cpu"
    assert bench_step_overhead.TARGET_PERCENT == {"small": 5.0, "default": 2.0}


def _write_eval(folder: Path, variant: str, seed: int, step: int, sampler: str, **metrics) -> None:
    values = dict(fd_cls=10.0, fwd=2.0, log_rapsd_high=0.1, log_rapsd_all=0.2, class_coverage=0.9, confidence=0.8)
    values.update(metrics)
    record = dict(values, study="scratch", variant=variant, seed=seed, step=step, sampler_key=sampler, sampler="x")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{variant}-s{seed}-step{step}-{sampler}.json").write_text(json.dumps(record))


def test_fashion_mnist_study_pairs_seeds_and_skips_what_is_committed(tmp_path, monkeypatch):
    import bench_fashion_mnist as study

    monkeypatch.setattr(study, "RESULTS", tmp_path)
    folder = tmp_path / "evals" / "scratch"
    final, steps = study.SCRATCH["steps"], [500, 1000, 1500, 2000]
    for seed, (base, spectral) in enumerate([(10.0, 8.0), (20.0, 10.0)]):
        for sampler in study.SAMPLERS:
            _write_eval(folder, "none", seed, final, sampler, fd_cls=base)
            _write_eval(folder, "amplitude_phase", seed, final, sampler, fd_cls=spectral)
    table = study.summary_table("scratch", ("none", "amplitude_phase"), final)
    # paired per-seed ratios 0.8 and 0.5: mean 0.65, sample std 0.21
    assert "fd_cls/MSE      0.65 ± 0.21" in table and "fwd/MSE            1 ± 0" in table
    assert "n=2" in table
    # a run is skipped only when every evaluation (curve points under DDIM-50, three samplers at the end) is on disk
    assert not study.evaluations_done("scratch", "none", 0, steps, final)
    for step in steps[:-1]:
        _write_eval(folder, "none", 0, step, "ddim50")
    assert study.evaluations_done("scratch", "none", 0, steps, final)


def test_classifier_scores_coverage_and_confidence():
    import fashion_classifier

    class OneHot(torch.nn.Module):  # class = the image's mean brightness bucket; features = the logits
        def features(self, images):
            return torch.nn.functional.one_hot(images.mean(dim=(1, 2, 3)).long(), 10).float() * 5

        def forward(self, images):
            return self.features(images)

    model = OneHot()
    balanced = torch.arange(10).repeat(3).float()[:, None, None, None].expand(-1, 1, 4, 4)
    scores = fashion_classifier.ClassifierScores(model)
    scores.update(balanced)
    single = fashion_classifier.ClassifierScores(model)
    single.update(torch.zeros(30, 1, 4, 4))
    summary = single.summary(scores)
    assert scores.summary(scores)["class_coverage"] == pytest.approx(1.0)
    assert summary["class_coverage"] == pytest.approx(0.1) and summary["class_counts"][0] == 30
    expected = torch.softmax(torch.tensor([5.0] + [0.0] * 9), 0)[0].item()
    assert summary["confidence"] == pytest.approx(expected) and summary["fd_cls"] > 1


def test_flow_study_runs_evaluates_and_skips_what_is_done(tmp_path):
    """A smoke run of bench_flow.py's demo study with tiny settings (2 steps, 8 samples), then a rerun that skips."""
    import bench_flow

    smoke = ["--study", "demo", "--seeds", "0", "--max_train_steps", "2", "--num_samples", "8"]
    smoke += ["--samplers", "euler20", "heun10", "ddim20", "--threads", "1"]
    smoke += ["--results_dir", str(tmp_path / "results"), "--runs_dir", str(tmp_path / "runs")]
    assert bench_flow.main(smoke) == 0
    evals = tmp_path / "results" / "evals" / "demo"
    names = sorted(p.name for p in evals.glob("*.json"))
    assert names == sorted(
        [f"{v}-s0-{s}.json" for v in ("flow-mse", "flow-default") for s in ("euler20", "heun10")]
        + [f"{v}-s0-ddim20.json" for v in ("ddpm-mse", "ddpm-default")]
    )
    heun = json.loads((evals / "flow-default-s0-heun10.json").read_text())
    assert heun["unet_evaluations"] == 19 and heun["sampler"] == "FlowMatchPipeline, 10 steps"
    assert 0 <= heun["sharp_fraction"] <= 1 and heun["fwd"] > 0
    args = json.loads((tmp_path / "runs" / "demo" / "flow-default-s0" / "training_args.json").read_text())
    assert args["formulation"] == "flow" and args["spectral_loss"] == ["amplitude_phase"]
    table = (tmp_path / "results" / "demo.txt").read_text()
    assert "flow-default" in table and "fwd/MSE" in table
    # a rerun trains and evaluates nothing (finished runs skipped)
    stamp = {p: p.stat().st_mtime_ns for p in evals.glob("*.json")}
    assert bench_flow.main(smoke) == 0
    assert {p: p.stat().st_mtime_ns for p in evals.glob("*.json")} == stamp
    assert [f"{v}-s0" for v, *_ in bench_flow.study_runs("sweep", [0])][:1] == ["flow-alpha_bar-0.3-s0"]
    assert len(bench_flow.study_runs("sweep", [0])) == 9 and len(bench_flow.study_runs("demo", [0, 1, 2])) == 12
