"""End-to-end tests of train_autoencoder.py: the real script under `accelerate launch` and in-process `main(argv)`,
tiny AutoencoderKL on built-in data, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import conftest
import pytest
import torch
from conftest import REPO
from diffusers import AutoencoderKL

sys.path.insert(0, str(REPO))
import train_autoencoder  # noqa: E402
from diffusers_specreg.autoencoder import autoencoder_config, measure_scaling_factor  # noqa: E402
from diffusers_specreg.card.autoencoder import write_autoencoder_card  # noqa: E402
from diffusers_specreg.data import build_image_dataset  # noqa: E402

FAST = [
    "--builtin_num_samples",
    "24",
    "--num_validation_images",
    "4",
    "--train_batch_size",
    "4",
    "--lr_warmup_steps",
    "1",
    "--scaling_batches",
    "2",
    "--seed",
    "0",
]


def launch(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return conftest.launch(args, script="train_autoencoder.py", **kwargs)


def tags(log_dir) -> tuple[set[str], set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars, images = set(), set()
    for events in log_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events.parent), size_guidance={"images": 0, "scalars": 0})
        accumulator.Reload()
        scalars |= set(accumulator.Tags()["scalars"])
        images |= set(accumulator.Tags()["images"])
    return scalars, images


@pytest.mark.launch
def test_launch_saves_an_autoencoder_with_its_measured_scaling_factor(tmp_path):
    out = tmp_path / "ae"
    launch([*FAST, "--output_dir", str(out), "--max_train_steps", "8", "--checkpointing_steps", "4"])
    vae = AutoencoderKL.from_pretrained(out)
    assert vae.config.block_out_channels == [32, 64, 64] and vae.config.in_channels == 3  # tiny preset, RGB photos
    factor = vae.config.scaling_factor
    assert factor != pytest.approx(0.18215, rel=0.05)
    # the same training batches (the first 2 of the 20 training images, unshuffled) give 1/std again
    data = build_image_dataset(
        dataset_name=None,
        dataset_config_name=None,
        train_data_dir=None,
        cache_dir=None,
        resolution=32,
        center_crop=False,
        random_flip=False,
        preserve_input_precision=False,
        builtin_dataset="photos",
        builtin_num_samples=24,
        seed=0,
    )
    images = torch.stack([data.dataset[i]["input"] for i in range(8)])
    again = measure_scaling_factor(vae, images, torch.Generator().manual_seed(0), batch_size=4)
    assert factor == pytest.approx(again, rel=1e-4)
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.sample(torch.Generator().manual_seed(123))
    assert factor == pytest.approx(1 / latents.std().item(), rel=0.1)  # other noise draws: close, not equal
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    card = (out / "README.md").read_text()
    assert "diffusers-specreg" in card and "Reconstruction PSNR" in card and "latent_spectrum.png" in card
    assert (out / "latent_spectrum.png").stat().st_size > 1000
    evaluation = json.loads((out / "evaluation" / "autoencoder.json").read_text())
    assert evaluation["scaling_factor"] == pytest.approx(factor) and 0 < evaluation["psnr"] < 100
    scalars, image_tags = tags(out / "logs")
    assert {"l1", "kl", "loss", "lr", "scaling_factor", "eval/psnr"} <= scalars
    assert "reconstructions" in image_tags
    # a second run into the finished folder stops before training
    with pytest.raises(ValueError, match="already holds"):
        train_autoencoder.main([*FAST, "--output_dir", str(out), "--max_train_steps", "2"])
    # stage 2 on this folder: a latent UNet trains on its scaled latents and saves a pipeline that samples images
    import train_spectral

    ldm = tmp_path / "ldm"
    stage2 = ["--builtin_dataset", "photos", "--builtin_num_samples", "16", "--resolution", "32", "--train_batch_size",
              "4", "--max_train_steps", "1", "--lr_warmup_steps", "0", "--eval_num_samples", "0",
              "--ddpm_num_inference_steps", "2", "--vae_name_or_path", str(out), "--output_dir", str(ldm)]  # fmt: skip
    assert train_spectral.main(stage2) == 0
    from diffusers import DiffusionPipeline

    pipeline = DiffusionPipeline.from_pretrained(ldm)
    images = pipeline(batch_size=1, num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 32, 32, 3)


def test_esm_and_dsm_in_process_with_resume(tmp_path):
    out = tmp_path / "sm"
    common = [*FAST, "--output_dir", str(out), "--latent_regularizer", "esm", "dsm", "--checkpointing_steps", "2"]
    assert train_autoencoder.main([*common, "--max_train_steps", "2", "--logging_dir", "logs"]) == 0
    first = AutoencoderKL.from_pretrained(out)
    assert json.loads((out / "checkpoint-2" / "training_state.json").read_text())["global_step"] == 2
    with pytest.raises(ValueError, match="latent_regularizer"):
        train_autoencoder.main([*FAST, "--output_dir", str(out), "--latent_regularizer", "esm",
                                "--resume_from_checkpoint", "latest", "--max_train_steps", "4"])  # fmt: skip
    assert train_autoencoder.main([*common, "--max_train_steps", "4", "--resume_from_checkpoint", "latest"]) == 0
    assert json.loads((out / "checkpoint-4" / "training_state.json").read_text())["global_step"] == 4
    second = AutoencoderKL.from_pretrained(out)
    assert any(not torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))
    scalars, _ = tags(out / "logs")
    assert {"l1", "esm", "dsm_k", "loss"} <= scalars and "kl" not in scalars


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--latent_regularizer", "foo"], "Unknown --latent_regularizer"),
        (["--latent_regularizer", "dsm", "--resolution", "16"], "multiple of 32"),
        (["--resolution", "30"], "not divisible by 4"),
        (["--perceptual_loss", "lpips"], "needs local weights"),
        (["--dsm_ks", "0", "20", "--latent_regularizer", "dsm"], "--dsm_ks"),
        (["--num_validation_images", "24"], "held out"),
        (["--latent_regularizer", "esm", "--esm_delta", "nan"], "--esm_delta"),
        (["--latent_regularizer", "esm", "--esm_kernel_size", "4"], "--esm_kernel_size"),
    ],
)
def test_bad_input_fails_before_training(tmp_path, extra, message):
    out = tmp_path / "bad"
    with pytest.raises(ValueError, match=message):
        train_autoencoder.main([*FAST, "--output_dir", str(out), "--max_train_steps", "1", *extra])
    assert not list(out.glob("checkpoint-*")) and not (out / "config.json").exists()


def test_logging_dir_that_is_the_output_folder_is_refused_before_a_push(tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(ValueError, match=r"--logging_dir '\.' is the output folder itself"):
        train_autoencoder.main(
            [*FAST, "--output_dir", str(out), "--max_train_steps", "1", "--push_to_hub", "--logging_dir", "."]
        )
    assert not out.exists()


def test_image_column_is_checked_before_training(tmp_path):
    import datasets
    import numpy as np
    from PIL import Image

    images = [Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8))] * 2
    table = datasets.Dataset.from_dict({"picture": images}).cast_column("picture", datasets.Image())
    table.to_parquet(str(tmp_path / "local" / "train.parquet"))
    out = tmp_path / "bad"
    with pytest.raises(ValueError, match=r"--image_column 'image'.*\['picture'\]"):
        train_autoencoder.main(
            [*FAST, "--output_dir", str(out), "--dataset_name", str(tmp_path / "local"), "--image_column", "image"]
        )
    assert not out.exists()


def test_bad_input_on_the_command_line_exits_with_code_2(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "train_autoencoder.py"),
            "--latent_regularizer",
            "kl",
            "foo",
            "--output_dir",
            str(tmp_path / "x"),
        ],  # fmt: skip
        cwd=REPO,
        env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "train_autoencoder.py: error: Unknown --latent_regularizer ['foo']" in result.stderr


def test_finetune_a_vae_in_a_pipeline_subfolder(tmp_path):
    torch.manual_seed(0)
    base = AutoencoderKL(**autoencoder_config("tiny", channels=1, resolution=16))
    base.save_pretrained(tmp_path / "pipeline" / "vae")
    out = tmp_path / "ft"
    argv = [*FAST, "--builtin_dataset", "checkerboards", "--output_dir", str(out), "--max_train_steps", "2"]
    argv += ["--pretrained_model_name_or_path", str(tmp_path / "pipeline"), "--subfolder", "vae"]
    assert train_autoencoder.main([*argv, "--latent_regularizer", "kl", "esm"]) == 0
    tuned = AutoencoderKL.from_pretrained(out)
    assert tuned.config.in_channels == 1 and tuned.config.sample_size == 16  # the base's channels and size
    assert any(not torch.equal(a, b) for a, b in zip(base.parameters(), tuned.parameters()))
    assert str(tmp_path / "pipeline") in (out / "README.md").read_text()
    with pytest.raises(ValueError, match="--subfolder vae"):
        train_autoencoder.main([*argv[:-2], "--output_dir", str(tmp_path / "other")])


@pytest.mark.launch
def test_two_process_ddp_run(tmp_path):
    out = tmp_path / "ddp"
    args = [*FAST, "--output_dir", str(out), "--max_train_steps", "2", "--latent_regularizer", "esm", "dsm"]
    launch(args, num_processes=2)
    assert AutoencoderKL.from_pretrained(out).config.scaling_factor != pytest.approx(0.18215, rel=0.05)


def test_the_model_being_fine_tuned_and_foreign_weights_are_never_replaced(tmp_path):
    """Fine-tuning in place would delete the source weights before training; weights no run wrote stay too."""
    base = tmp_path / "base"
    AutoencoderKL(**autoencoder_config("tiny", 3, 32)).save_pretrained(base)
    before = (base / "diffusion_pytorch_model.safetensors").read_bytes()
    for extra in ([], ["--overwrite_output_dir"]):
        argv = [
            *FAST,
            "--pretrained_model_name_or_path",
            str(base),
            "--output_dir",
            str(base),
            "--max_train_steps",
            "1",
        ]
        with pytest.raises(ValueError, match="being fine-tuned|already holds"):
            train_autoencoder.main([*argv, *extra])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "diffusion_pytorch_model.safetensors").write_bytes(before)
    with pytest.raises(ValueError, match="no training run wrote"):
        train_autoencoder.main(
            [*FAST, "--output_dir", str(foreign), "--overwrite_output_dir", "--max_train_steps", "1"]
        )
    assert (base / "diffusion_pytorch_model.safetensors").read_bytes() == before
    assert (foreign / "diffusion_pytorch_model.safetensors").read_bytes() == before


def test_the_card_shows_local_paths_relative_to_the_folder_or_with_the_home_as_tilde(tmp_path, monkeypatch):
    home = tmp_path / "home" / "alice"
    monkeypatch.setenv("HOME", str(home))
    out = home / "runs" / "vae-f4"
    out.mkdir(parents=True)
    base = home / "models" / "base-vae"
    argv = ["--output_dir", str(out), "--train_data_dir", str(home / "imgs"), "--pretrained_model_name_or_path"]
    args = train_autoencoder.parse_args([*argv, str(base)])
    result = {"psnr": 30.0, "latent_slope": -2.0, "image_slope": -2.5, "latent_shape": [4, 8, 8]}
    write_autoencoder_card(str(out), vars(args), result, 0.5, f"12 images from {home / 'imgs'}", 10)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "alice" not in card and str(tmp_path) not in card
    assert "12 images from ~/imgs" in card and "(fine-tuned from `~/models/base-vae`)" in card
    assert 'AutoencoderKL.from_pretrained("vae-f4")' in card and "| `output_dir` | `.` |" in card


def test_a_new_autoencoder_trained_twice_with_one_seed_gives_the_same_weights(tmp_path):
    # from scratch: --seed must seed the new AutoencoderKL's initial weights too, not only the data order and noise
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        argv = [*FAST, "--output_dir", str(tmp_path / name), "--max_train_steps", "1", "--validation_steps", "100"]
        assert train_autoencoder.main([*argv, "--seed", seed]) == 0
    a, b, c = (AutoencoderKL.from_pretrained(tmp_path / name) for name in ("a", "b", "c"))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))  # another seed, other weights
