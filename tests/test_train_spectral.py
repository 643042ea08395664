"""End-to-end tests of train_spectral.py: the real script under `accelerate launch`, tiny data, offline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, launch, launch_in_background, wait_until_training, write_image_folder, write_unet_config
from diffusers import DDIMPipeline, DDPMPipeline, DiffusionPipeline, UNet2DModel
from PIL import Image

from diffusers_specreg.train import arguments
from diffusers_specreg.train.settings import spectral_weights

sys.path.insert(0, str(REPO))
import train_spectral  # noqa: E402

FAST = [
    "--resolution",
    "16",
    "--train_batch_size",
    "4",
    "--eval_batch_size",
    "2",
    "--ddpm_num_steps",
    "50",
    "--ddpm_num_inference_steps",
    "2",
    "--lr_warmup_steps",
    "1",
    "--seed",
    "0",
]


def scalar_and_image_tags(log_dir: Path) -> tuple[set[str], set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars, images = set(), set()
    for events in log_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events.parent), size_guidance={"images": 0, "scalars": 0})
        accumulator.Reload()
        scalars |= set(accumulator.Tags()["scalars"])
        images |= set(accumulator.Tags()["images"])
    return scalars, images


def flags(**options) -> list[str]:
    """`flags(output_dir=out, spectral_loss=["a", "b"], use_ema=True)` -> CLI arguments."""
    args = []
    for name, value in options.items():
        if value is True:
            args.append(f"--{name}")
        else:
            args += [f"--{name}", *(map(str, value) if isinstance(value, (list, tuple)) else [str(value)])]
    return args


def tiny_run(images, config, out, **options) -> list[str]:
    """FAST settings on a tiny image folder and UNet config, plus `options`."""
    return [*FAST, *flags(train_data_dir=images, model_config_name_or_path=config, output_dir=out, **options)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One regularized run shared by several tests: 6 steps, EMA, checkpoints every 2 steps, keep 2."""
    root = tmp_path_factory.mktemp("trained")
    images = write_image_folder(root / "images", count=12)
    config = write_unet_config(root / "config")
    out = root / "out"
    options = dict(max_train_steps=6, checkpointing_steps=2, checkpoints_total_limit=2, use_ema=True)
    spectral = dict(spectral_loss=["amplitude_phase", "wavelet"], spectral_weight=[0.1, 1.0], wavelet_levels=2)
    launch(tiny_run(images, config, out, **options, **spectral, save_images_epochs=1))
    return out


def test_output_loads_into_stock_pipelines_and_generates(trained):
    assert (trained / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    for cls in (DDPMPipeline, DDIMPipeline, DiffusionPipeline):
        pipeline = cls.from_pretrained(trained)
        generator = torch.Generator().manual_seed(0)
        images = pipeline(batch_size=2, num_inference_steps=2, output_type="np", generator=generator).images
        assert images.shape == (2, 16, 16, 1)  # 1-channel data inferred, no config needed for channels
        assert 0 <= images.min() and images.max() <= 1


def test_checkpoint_rotation_keeps_the_newest(trained):
    checkpoints = sorted(p.name for p in trained.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-4", "checkpoint-6"]
    assert not list(trained.glob(".tmp-checkpoint-*"))
    assert json.loads((trained / "checkpoint-6" / "training_state.json").read_text())["global_step"] == 6


def test_tensorboard_logs_every_term_samples_and_spectrum(trained):
    scalars, images = scalar_and_image_tags(trained / "logs")
    assert {"loss", "base", "amplitude_phase", "wavelet", "lr", "ema_decay"} <= scalars
    assert {"lambda/amplitude_phase", "lambda/wavelet"} <= scalars
    assert {"samples", "rapsd"} <= images


def test_finetune_from_saved_pipeline_in_bf16(trained, tmp_path):
    out = tmp_path / "finetuned"
    options = dict(pretrained_model_name_or_path=trained, output_dir=out, max_train_steps=2, builtin_num_samples=8)
    launch([*FAST, *flags(**options, spectral_loss="amplitude", mixed_precision="bf16")])  # bf16 autocast: CPU too
    before = UNet2DModel.from_pretrained(trained, subfolder="unet")
    after = UNet2DModel.from_pretrained(out, subfolder="unet")
    assert after.config.block_out_channels == before.config.block_out_channels
    assert any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters()))
    DDPMPipeline.from_pretrained(out)
    card = (out / "README.md").read_text()
    assert str(trained) in card  # the card records the base model (a local path: in the text, not the metadata)


def test_resume_continues_at_the_same_step_and_data_position(tmp_path, image_folder, tiny_config):
    options = dict(lr_scheduler="constant", checkpointing_steps=2, save_images_epochs=100, spectral_loss="amplitude")
    # 12 images / batch 4 = 3 steps an epoch: step 4 stops mid-epoch, so resuming must skip consumed batches.
    launch(tiny_run(image_folder, tiny_config, tmp_path / "a", max_train_steps=7, **options))
    launch(tiny_run(image_folder, tiny_config, tmp_path / "b", max_train_steps=4, **options))
    resumed = tiny_run(image_folder, tiny_config, tmp_path / "b", max_train_steps=7, **options)
    result = launch([*resumed, "--resume_from_checkpoint", "latest"])
    assert "Resumed from" in result.stderr and "at step 4" in result.stderr
    a = UNet2DModel.from_pretrained(tmp_path / "a", subfolder="unet")
    b = UNet2DModel.from_pretrained(tmp_path / "b", subfolder="unet")
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6)


def test_two_process_ddp_with_gradient_accumulation(tmp_path, image_folder, tiny_config):
    out = tmp_path / "ddp"
    options = dict(max_train_steps=2, gradient_accumulation_steps=2, use_ema=True, eval_num_samples=8)
    result = launch(
        tiny_run(image_folder, tiny_config, out, **options, spectral_loss="wavelet", wavelet_levels=2), num_processes=2
    )
    assert "2 processes" in result.stderr
    DDIMPipeline.from_pretrained(out)(batch_size=1, num_inference_steps=2, output_type="np")
    # the card's grid and metrics come from the ancestral DDPM sampler, named in the card; FWD fits its 8 samples
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "*Samples drawn with DDPM (ancestral)," in card and "--sampler pipeline" in card
    assert "noisy; compare FWD values only at equal sample counts" not in result.stderr


# sitecustomize.py for the launched processes: the process group's default collective timeout (gloo: 30 minutes,
# NCCL: 10) shortened to TEST_COLLECTIVE_TIMEOUT seconds, so that a test can outlast it in seconds
SHORT_COLLECTIVE_TIMEOUT = """
import os

if os.environ.get("TEST_COLLECTIVE_TIMEOUT"):
    import datetime

    import torch.distributed.distributed_c10d as c10d

    c10d.default_pg_timeout = datetime.timedelta(seconds=float(os.environ["TEST_COLLECTIVE_TIMEOUT"]))
"""


@pytest.mark.launch
def test_other_processes_wait_for_an_evaluation_longer_than_the_collective_timeout(
    tmp_path, image_folder, tiny_config
):
    # the second process waits at the end while the main one evaluates and writes the card: with the collective
    # timeout cut to 5 s and an evaluation longer than that, a plain barrier times out and the job dies
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SHORT_COLLECTIVE_TIMEOUT)
    paths = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {"PYTHONPATH": os.pathsep.join(paths), "TEST_COLLECTIVE_TIMEOUT": "5"}
    out = tmp_path / "ddp"
    options = dict(max_train_steps=2, eval_num_samples=192, eval_batch_size=16, ddpm_num_inference_steps=50)
    result = launch(tiny_run(image_folder, tiny_config, out, **options), num_processes=2, extra_env=env, check=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("[rank1]")][-4:]
    assert result.returncode == 0, "\n".join([*errors, result.stderr[-2000:]])
    (metrics,) = json.loads((out / "evaluation" / "metrics.json").read_text())["pipelines"].values()
    assert metrics["num_samples"] == 192 and (out / "README.md").is_file()
    assert metrics["sampling_seconds"] > 5, "the evaluation must outlast the collective timeout for the test to count"


def test_a_bad_main_process_timeout_is_refused_before_training(tmp_path, monkeypatch, image_folder, tiny_config):
    monkeypatch.setenv("SPECREG_MAIN_PROCESS_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="SPECREG_MAIN_PROCESS_TIMEOUT='soon' must be a number of seconds"):
        train_spectral.main(
            tiny_run(image_folder, tiny_config, tmp_path / "out", max_train_steps=1, eval_num_samples=0)
        )
    assert not (tmp_path / "out").exists()


def test_sigterm_saves_a_resumable_checkpoint(tmp_path, image_folder, tiny_config):
    out = tmp_path / "interrupted"
    run = tiny_run(image_folder, tiny_config, out, max_train_steps=100000, checkpointing_steps=100000)
    process = launch_in_background(run, stdout=subprocess.PIPE, stderr=subprocess.PIPE, omp_threads=None)
    wait_until_training(out / "logs", process)  # its signal handlers are installed
    time.sleep(3)
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert "Interrupted (SIGTERM)" in stderr, stderr[-3000:]
    checkpoints = list(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1
    step = json.loads((checkpoints[0] / "training_state.json").read_text())["global_step"]
    assert step >= 1
    result = launch(
        [*tiny_run(image_folder, tiny_config, out, max_train_steps=step + 1), *flags(resume_from_checkpoint="latest")]
    )
    assert f"at step {step}" in result.stderr


# --- bad input: a clear error before training (in-process: same code path as the CLI, much faster) ---------------


def run_main(args: list[str], tmp_path: Path):
    return train_spectral.main([*FAST, "--output_dir", str(tmp_path / "never"), "--max_train_steps", "1", *args])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--spectral_loss", "spectral_magic"], "Unknown --spectral_loss"),
        (["--spectral_loss", "amplitude", "--spectral_weight", "-1"], "must be >= 0"),
        (["--spectral_loss", "amplitude", "wavelet", "--spectral_weight", "1", "2", "3"], "one value for all"),
        (["--spectral_loss", "wavelet", "--resolution", "20", "--wavelet_levels", "3"], r"divisible by 2\*\*levels"),
        (["--mixed_precision", "fp16"], "fp16 needs a CUDA"),
        (["--resolution", "18"], "not divisible by"),
        (["--formulation", "edm", "--prediction_type", "sample"], "epsilon or v_prediction"),
        (["--spectral_loss", "amplitude", "--spectral_weight", "auto"], "auto was removed"),
        (["--spectral_loss", "none", "amplitude"], "cannot be combined"),
        (["--learning_rate", "nan"], "finite number > 0"),
        (["--flow_shift", "3"], "--flow_shift applies only to --formulation flow, not ddpm"),
    ],
)
def test_bad_arguments_fail_before_training(tmp_path, args, message):
    if "fp16" in args and torch.cuda.is_available():
        pytest.skip("this machine can run fp16")
    with pytest.raises(ValueError, match=message):
        run_main(args, tmp_path)
    assert not (tmp_path / "never" / "logs").exists()


def test_missing_and_empty_data_folders(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        run_main(["--train_data_dir", str(tmp_path / "nowhere")], tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="contains no image files"):
        run_main(["--train_data_dir", str(tmp_path / "empty")], tmp_path)


def test_unreadable_images_are_counted_and_skipped(tmp_path, caplog):
    from diffusers_specreg.data import scan_image_folder

    folder = write_image_folder(tmp_path / "mixed", count=4)
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    scan = scan_image_folder(str(folder))
    assert len(scan.files) == 4 and len(scan.unreadable) == 2 and scan.channels == 1
    assert "Skipping 2 of 6 files" in caplog.text
    only_broken = tmp_path / "broken"
    only_broken.mkdir()
    (only_broken / "x.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match="None of the 1 image files"):
        run_main(["--train_data_dir", str(only_broken)], tmp_path)


def test_a_single_training_image_trains_and_writes_its_card(tmp_path, tiny_config, caplog):
    # the card's metrics compare samples with at least 2 data images: with 1, the run says so before training, skips
    # them and still writes the card and pushes (offline here: the push fails with its retry command)
    with pytest.raises(ValueError, match="--eval_num_samples 1"):
        run_main(["--eval_num_samples", "1"], tmp_path)
    folder = tmp_path / "one"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8), mode="L").save(
        folder / "only.png"
    )
    out = tmp_path / "out"
    args = flags(train_data_dir=folder, model_config_name_or_path=tiny_config, output_dir=out, max_train_steps=2)
    assert train_spectral.main([*FAST, *args, "--eval_num_samples", "4", "--push_to_hub"]) == 0
    messages = [record.getMessage() for record in caplog.records]
    warning = next(i for i, m in enumerate(messages) if "1 training image" in m)
    assert warning < next(i for i, m in enumerate(messages) if "***** Training" in m)
    assert "at least 2" in messages[warning]
    assert (out / "README.md").is_file() and not (out / "evaluation" / "metrics.json").exists()
    assert any("Retry with" in m for m in messages)


def test_logging_dir_that_is_the_output_folder_is_refused_before_a_push(tmp_path):
    out = tmp_path / "out"
    for logging_dir in (".", str(out), "logs/.."):
        with pytest.raises(ValueError, match=r"--logging_dir .* is the output folder itself"):
            run_main(["--output_dir", str(out), "--push_to_hub", "--logging_dir", logging_dir], tmp_path)
    assert not out.exists()


def test_image_column_is_checked_before_training(tmp_path):
    import datasets

    images = [Image.fromarray(np.zeros((16, 16), dtype=np.uint8), mode="L")] * 2
    table = datasets.Dataset.from_dict({"picture": images}).cast_column("picture", datasets.Image())
    table.to_parquet(str(tmp_path / "local" / "train.parquet"))
    with pytest.raises(ValueError, match=r"--image_column 'image'.*\['picture'\]"):
        run_main(["--dataset_name", str(tmp_path / "local"), "--image_column", "image"], tmp_path)
    with pytest.raises(ValueError, match="--image_column applies to --dataset_name"):
        run_main(["--image_column", "image"], tmp_path)
    assert not (tmp_path / "never" / "logs").exists()


def test_existing_output_is_not_overwritten(trained, tmp_path):
    with pytest.raises(ValueError, match="already holds a trained pipeline"):
        train_spectral.main([*FAST, "--output_dir", str(trained), "--max_train_steps", "1"])


def test_cli_reports_bad_input_in_one_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "train_spectral.py"),
            "--spectral_loss",
            "amplitude",
            "--spectral_weight",
            "-2",
            "--output_dir",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        timeout=120,
    )
    assert result.returncode == 2
    assert "error: --spectral_weight must be >= 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_three_channel_config_converts_grayscale_data(tmp_path, image_folder):
    # an anchor command with a 3-channel model config and grayscale images keeps working (images become RGB)
    config = write_unet_config(tmp_path / "rgb_config", channels=3)
    out = tmp_path / "rgb"
    assert train_spectral.main(tiny_run(image_folder, config, out, max_train_steps=1, eval_num_samples=0)) == 0
    assert UNet2DModel.load_config(out / "unet")["in_channels"] == 3


def test_builtin_demo_trains_amplitude_phase_and_named_data_keep_the_anchor_defaults():
    def settings(*argv):
        args = train_spectral.parse_args(list(argv))
        return args, arguments.derived_settings(args)

    args, demo = settings()
    assert demo.spectral_loss == ["amplitude_phase"] and args.spectral_weighting == "alpha_bar"
    assert (demo.learning_rate, demo.lr_warmup_steps, demo.max_train_steps) == (5e-4, 50, 1500)
    assert spectral_weights(args.spectral_weight, demo.spectral_loss) == [None]  # the loss's default λ
    assert demo.config(vars(args))["learning_rate"] == 5e-4  # what the card and the trackers record
    _, baseline = settings("--spectral_loss", "none")
    assert baseline.spectral_loss == [] and baseline.learning_rate == 5e-4
    assert args.output_dir == "specreg-checkerboards-32"  # not the anchor's ddpm-model-64: it is a 32x32 model
    named_args, named = settings("--train_data_dir", "x")
    assert named_args.output_dir == "ddpm-model-64"
    assert named.spectral_loss == [] and (named.learning_rate, named.lr_warmup_steps) == (1e-4, 500)
    assert named.resolution == 64 and named.num_epochs == 100
    _, chosen = settings("--train_data_dir", "x", "--spectral_loss", "wavelet", "--learning_rate", "2e-4")
    assert chosen.spectral_loss == ["wavelet"] and chosen.learning_rate == 2e-4
