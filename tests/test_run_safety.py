"""Issue 13: nothing the user has is lost or silently replaced, nothing runs that should not (output folders,
resume and checkpoints under hostile conditions). In-process runs of train_spectral.main on tiny data."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, launch_in_background, wait_until_training, write_image_folder, write_unet_config
from diffusers import UNet2DModel

from diffusers_specreg import training
from diffusers_specreg.train.lock import LOCK_FILE

sys.path.insert(0, str(REPO))
from test_train_spectral import FAST, tiny_run  # noqa: E402

import train_spectral  # noqa: E402

QUIET = dict(save_images_epochs=100, eval_num_samples=0, lr_scheduler="constant")


def run(images, config, out, *extra, **options) -> int:
    return train_spectral.main([*tiny_run(images, config, out, **options), *extra])


def unet_weights(folder: Path) -> dict[str, torch.Tensor]:
    return UNet2DModel.from_pretrained(folder, subfolder="unet").state_dict()


def assert_identical(a: Path, b: Path) -> None:
    wa, wb = unet_weights(a), unet_weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


class RunsCode:
    """Unpickling this writes a marker file: what a crafted checkpoint file could do with any code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


# --- 3. checkpoints hold no pickle we load --------------------------------------------------------------------------


def test_crafted_pickles_in_a_checkpoint_are_never_loaded(tmp_path, image_folder, tiny_config):
    options = dict(QUIET, use_ema=True, spectral_loss="amplitude", checkpointing_steps=2)
    assert run(image_folder, tiny_config, tmp_path / "straight", max_train_steps=3, **options) == 0
    out = tmp_path / "resumed"
    assert run(image_folder, tiny_config, out, max_train_steps=2, **options) == 0
    checkpoint = out / "checkpoint-2"
    marker = tmp_path / "marker"
    for name in ("rank_state_0.pt", "custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl"):  # what older versions read
        torch.save({"state": RunsCode(marker)}, checkpoint / name)
    resume = ["--resume_from_checkpoint", "latest"]
    with pytest.raises(Exception) as refused:
        run(image_folder, tiny_config, out, *resume, max_train_steps=3, **options)
    assert not marker.exists()
    assert "custom_checkpoint_0.pkl, custom_checkpoint_1.pkl: pickled state" in str(refused.value)
    for name in ("custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl"):
        (checkpoint / name).unlink()
    assert run(image_folder, tiny_config, out, *resume, max_train_steps=3, **options) == 0
    assert not marker.exists()  # rank_state_0.pt is ignored: the rank state is read from safetensors
    files = {p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*") if p.is_file()} - {"rank_state_0.pt"}
    assert {"regularizer.safetensors", "rank_state_0.safetensors", "run_settings.json", "checkpoint.json"} <= files
    assert "ema_unet/diffusion_pytorch_model.safetensors" in files
    assert not [f for f in files if f.startswith("custom_checkpoint") or f.endswith(".pt")]
    assert_identical(tmp_path / "straight", out)  # EMA and regularizer state restored from safetensors, exactly


# --- 2, 4, 5. output folders: a finished pipeline, a previous run, a user's files ----------------------------------


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_latest_into_a_finished_folder_stops(tmp_path):
    from conftest import tiny_unet
    from diffusers import DDPMPipeline, DDPMScheduler

    out = tmp_path / "finished"
    DDPMPipeline(unet=tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=50)).save_pretrained(out)
    (out / "README.md").write_text("---\ntags:\n- diffusers-specreg\n---\nThe model I trained for a week.\n")
    before = snapshot(out)
    args = ["--output_dir", str(out), "--resume_from_checkpoint", "latest", "--max_train_steps", "1"]
    with pytest.raises(ValueError, match="holds a trained pipeline but no checkpoint-N/ folder to resume from"):
        train_spectral.main([*FAST, *args, "--builtin_num_samples", "8", "--eval_num_samples", "0"])
    assert snapshot(out) == before


def test_overwrite_replaces_the_whole_previous_run_and_nothing_else(tmp_path, image_folder, tiny_config):
    out = tmp_path / "out"
    options = dict(max_train_steps=1, eval_num_samples=2, save_images_epochs=100)
    assert run(image_folder, tiny_config, out, formulation="edm", **options) == 0
    assert (out / "pipeline.py").is_file() and (out / "evaluation" / "metrics.json").is_file()
    edm_logs = {p for p in (out / "logs").rglob("*") if p.is_file()}
    (out / "notes.txt").write_text("my notes on the EDM run")
    (out / "figures").mkdir()
    (out / "figures" / "plot.png").write_bytes(b"mine")
    assert run(image_folder, tiny_config, out, "--overwrite_output_dir", **options) == 0  # DDPM now
    assert not (out / "pipeline.py").exists()  # the EDM pipeline file would be loaded with the DDPM weights
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"
    assert json.loads((out / "training_args.json").read_text())["formulation"] == "ddpm"
    assert "- edm" not in (out / "README.md").read_text()
    assert not any(p.exists() for p in edm_logs)  # the EDM run's tensorboard files went with it
    assert (out / "notes.txt").read_text() == "my notes on the EDM run"
    assert (out / "figures" / "plot.png").read_bytes() == b"mine"


@pytest.mark.parametrize("name", ["README.md", "training_args.json"])
def test_a_users_readme_or_training_args_is_never_replaced(tmp_path, image_folder, tiny_config, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text('{"my": "notes"}' if name.endswith(".json") else "# Notes on this experiment\n")
    before = snapshot(out)
    for extra in ([], ["--overwrite_output_dir"]):
        with pytest.raises(ValueError, match=f"holds {name}, which no training run wrote there"):
            run(image_folder, tiny_config, out, *extra, max_train_steps=1, **QUIET)
    assert snapshot(out) == before


# --- 1. a model config that does not fit the data ------------------------------------------------------------------


def test_config_sample_size_must_match_resolution_before_training(tmp_path, image_folder):
    config = write_unet_config(tmp_path / "config32", sample_size=32)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="--resolution 16 differs from the model config's sample_size 32"):
        run(image_folder, config, out, max_train_steps=1, eval_num_samples=0)  # FAST passes --resolution 16
    assert not list(out.rglob("events.out.tfevents.*"))  # stopped before training
    flags = [a for a in tiny_run(image_folder, config, out, max_train_steps=1, **QUIET) if a != "--resolution"]
    flags.remove("16")  # no --resolution: the config's sample_size is the training resolution
    assert train_spectral.main(flags) == 0
    assert UNet2DModel.load_config(out / "unet")["sample_size"] == 32


# --- 11. a damaged newest checkpoint -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A run of 4 steps with checkpoint-2 and checkpoint-4."""
    root = tmp_path_factory.mktemp("two_checkpoints")
    images, config, out = write_image_folder(root / "images"), write_unet_config(root / "config"), root / "out"
    assert run(images, config, out, max_train_steps=4, checkpointing_steps=2, **QUIET) == 0
    return images, config, out


def damaged_copy(out: Path, tmp_path: Path, damage) -> Path:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    damage(copy / "checkpoint-4")
    return copy


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {
    "model.safetensors": lambda c: truncate(c / "model.safetensors"),
    "optimizer.bin": lambda c: truncate(c / "optimizer.bin"),
    "training_state.json": lambda c: (c / "training_state.json").write_text('{"global_st'),
    "rank_state_0.safetensors": lambda c: (c / "rank_state_0.safetensors").unlink(),
}


@pytest.mark.parametrize("damaged", list(DAMAGES))
def test_damaged_newest_checkpoint_is_named_and_the_previous_one_used(two_checkpoints, tmp_path, caplog, damaged):
    out = damaged_copy(two_checkpoints[2], tmp_path, DAMAGES[damaged])
    with caplog.at_level(logging.WARNING):
        assert training.resolve_resume(str(out), "latest") == str(out / "checkpoint-2")
    assert f"checkpoint-4/{damaged}" in caplog.text and "checkpoint-2" in caplog.text
    with pytest.raises(ValueError, match=f"checkpoint-4/{damaged}.*previous intact checkpoint is checkpoint-2"):
        training.resolve_resume(str(out), "checkpoint-4")


def test_resume_latest_skips_a_truncated_newest_checkpoint(two_checkpoints, tmp_path):
    images, config, out = two_checkpoints
    out = damaged_copy(out, tmp_path, DAMAGES["model.safetensors"])
    resume = ["--resume_from_checkpoint", "latest"]
    assert run(images, config, out, *resume, max_train_steps=5, checkpointing_steps=2, **QUIET) == 0
    assert json.loads((out / "checkpoint-4" / "training_state.json").read_text())["global_step"] == 4  # rewritten
    assert not training.checkpoint_problems(str(out / "checkpoint-4"))


# --- 9. resume compares the run's settings --------------------------------------------------------------------------


def logged_scalars(log_dir: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = {}
    for events in sorted(log_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            values.update({event.step: event.value for event in accumulator.Scalars(tag)})
    return values


def test_resume_names_changed_flags_and_a_new_learning_rate_takes_effect(two_checkpoints, tmp_path, caplog):
    images, config, out = two_checkpoints
    out = damaged_copy(out, tmp_path, lambda checkpoint: None)
    resume = ["--resume_from_checkpoint", "latest"]
    incompatible = [
        (["--formulation", "edm"], '--formulation: "ddpm" in the checkpoint, "edm" now'),
        (["--train_batch_size", "2"], "--train_batch_size: 4 in the checkpoint, 2 now"),
        (["--spectral_loss", "amplitude"], '--spectral_loss: \\[\\] in the checkpoint, \\["amplitude"\\] now'),
    ]
    for changed, message in incompatible:
        with pytest.raises(ValueError, match=message):
            run(images, config, out, *resume, *changed, max_train_steps=5, **QUIET)
    wider = tmp_path / "wider"  # another config file: compared by content, so a moved file would not matter
    wider.mkdir()
    (wider / "config.json").write_text(
        (config / "config.json")
        .read_text()
        .replace('"block_out_channels": [16, 32]', '"block_out_channels": [16, 48]')
    )
    with pytest.raises(ValueError, match=r"the UNet config's block_out_channels: \[16, 32\] in the checkpoint"):
        run(images, wider, out, *resume, max_train_steps=5, **QUIET)
    with caplog.at_level(logging.WARNING):
        assert run(images, config, out, *resume, "--learning_rate", "0.003", max_train_steps=5, **QUIET) == 0
    assert "--learning_rate: 0.0001 in the checkpoint, 0.003 now" in caplog.text
    lr = logged_scalars(out / "logs", "lr")
    assert lr[4] == pytest.approx(1e-4) and lr[5] == pytest.approx(3e-3)


# --- 6, 7, 8. data: truncated JPEGs, 16-bit PNGs, augmentations on resume ----------------------------------------


def test_truncated_jpeg_is_found_by_the_scan(tmp_path, caplog):
    import io

    import numpy as np
    from PIL import Image

    from diffusers_specreg.data import scan_image_folder

    folder = write_image_folder(tmp_path / "images", count=3)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buffer, "JPEG")
    (folder / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # a download cut short
    scan = scan_image_folder(str(folder))
    assert [Path(p).name for p in scan.unreadable] == ["cut.jpg"] and len(scan.files) == 3
    assert "cut.jpg" in caplog.text


def test_sixteen_bit_png_is_scaled_not_clipped_to_white(tmp_path):
    import numpy as np
    from PIL import Image

    from diffusers_specreg.data import ImageTransform

    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))  # black to white, left to right
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    with Image.open(tmp_path / "ramp16.png") as image:
        assert image.mode.startswith("I")
        out = ImageTransform(resolution=32, channels=1, center_crop=True)(image)
    assert float((out == 1).float().mean()) < 0.1  # was 97 % white: PIL's convert("L") clips at 255
    assert abs(float(out.mean())) < 0.02 and float(out.min()) == -1
    expected = torch.from_numpy(np.round(ramp / 65535 * 255) / 255 * 2 - 1).float()
    torch.testing.assert_close(out[0], expected, rtol=0, atol=1e-6)  # what an 8-bit copy holds


def test_mid_epoch_resume_with_random_flip_and_crop_is_bit_identical(tmp_path):
    images = write_image_folder(tmp_path / "images", count=12, size=20)  # 20 px, --resolution 16: random crops
    config = write_unet_config(tmp_path / "config")
    options = dict(
        QUIET, random_flip=True, checkpointing_steps=4, lr_scheduler="constant_with_warmup", lr_warmup_steps=5
    )
    # 12 images / batch 4 = 3 steps an epoch: checkpoint-4 is one batch into the second epoch
    assert run(images, config, tmp_path / "straight", max_train_steps=6, **options) == 0
    assert run(images, config, tmp_path / "resumed", max_train_steps=4, **options) == 0
    resume = ["--resume_from_checkpoint", "latest"]
    assert run(images, config, tmp_path / "resumed", *resume, max_train_steps=6, **options) == 0
    assert_identical(tmp_path / "straight", tmp_path / "resumed")


# --- 10, 12. the Hub token, signals, bad learning rates ---------------------------------------------------------


def test_hub_token_is_never_written_and_its_flag_is_discouraged(tmp_path, image_folder, tiny_config, caplog):
    secret = "hf_NeverPrintThisToken123"
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert (
            run(image_folder, tiny_config, out, "--hub_token", secret, max_train_steps=2, checkpointing_steps=2) == 0
        )
    assert "set HF_TOKEN instead" in caplog.text and secret not in caplog.text
    leaked = [p for p in out.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaked


def test_interrupts_exit_with_the_shell_code_of_their_signal():
    import os
    import signal

    flag = training.InterruptFlag().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
    finally:
        flag.uninstall()
    assert flag.exit_code == 143  # 128 + 15, not 130 (Ctrl-C's)


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_non_finite_learning_rate_is_refused_up_front(tmp_path, value):
    with pytest.raises(ValueError, match="--learning_rate must be a finite number"):
        train_spectral.main([*FAST, "--output_dir", str(tmp_path / "x"), "--learning_rate", value])


def test_sigterm_to_the_launcher_alone_stops_the_training_with_a_checkpoint(tmp_path, image_folder, tiny_config):
    import os
    import signal
    import subprocess

    out = tmp_path / "out"
    args = tiny_run(image_folder, tiny_config, out, max_train_steps=100000, checkpointing_steps=100000)
    process = launch_in_background(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until_training(out / "logs", process)  # its signal handlers are installed
        process.send_signal(signal.SIGTERM)  # the launcher only, as `kill <pid>` or a job scheduler does
        _, stderr = process.communicate(timeout=300)  # the pipes close when the orphaned training exits too
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # Accelerate < 1.16 leaves the training orphaned (our PDEATHSIG names it "SIGTERM to the launcher"); from 1.16 the
    # launcher forwards the SIGTERM to its child (and kills it 5 s later): either way the run checkpoints and stops
    assert re.search(r"Interrupted \(SIGTERM( to the launcher)?\): saved checkpoint-", stderr), stderr[-3000:]
    assert len(list(out.glob("checkpoint-*"))) == 1


def test_a_launcher_killed_outright_leaves_a_resumable_checkpoint(tmp_path, image_folder, tiny_config):
    # SIGKILL cannot be forwarded: the training learns of its launcher's death from the kernel (PDEATHSIG), saves a
    # checkpoint and exits, although its stderr (a pipe the launcher was reading, from Accelerate 1.16) is gone
    import os
    import signal
    import subprocess

    out = tmp_path / "out"
    args = tiny_run(image_folder, tiny_config, out, max_train_steps=100000, checkpointing_steps=100000)
    process = launch_in_background(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_training(out / "logs", process)
        process.kill()
        process.wait(timeout=60)
        deadline = time.time() + 300
        while time.time() < deadline:  # the orphaned training is still in the group until it exits
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    checkpoints = list(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1, sorted(p.name for p in out.iterdir())
    assert json.loads((checkpoints[0] / "training_state.json").read_text())["global_step"] >= 1
    assert not (out / LOCK_FILE).exists()  # the run released its folder


def test_two_process_mid_epoch_resume_is_bit_identical(tmp_path):
    from conftest import launch

    images = write_image_folder(tmp_path / "images", count=12, size=20)
    config = write_unet_config(tmp_path / "config")
    options = dict(QUIET, random_flip=True, use_ema=True, spectral_loss="amplitude", checkpointing_steps=2)
    options.update(train_batch_size=2)  # 12 images / (2 x 2 processes) = 3 steps an epoch: checkpoint-2 is mid-epoch
    launch(tiny_run(images, config, tmp_path / "straight", max_train_steps=4, **options), num_processes=2)
    launch(tiny_run(images, config, tmp_path / "resumed", max_train_steps=2, **options), num_processes=2)
    assert {"rank_state_0.safetensors", "rank_state_1.safetensors"} <= {
        p.name for p in (tmp_path / "resumed" / "checkpoint-2").iterdir()
    }
    resume = [
        *tiny_run(images, config, tmp_path / "resumed", max_train_steps=4, **options),
        "--resume_from_checkpoint",
    ]
    result = launch([*resume, "latest"], num_processes=2)
    assert "at step 2" in result.stderr
    assert not (tmp_path / "resumed" / ".train_spectral.lock").exists()  # the main process released it (issue 19)
    assert_identical(tmp_path / "straight", tmp_path / "resumed")


def test_only_an_output_pipe_without_a_reader_is_sent_to_devnull():
    import os

    from diffusers_specreg.train.signals import release_orphaned_output

    read_end, write_end = os.pipe()
    spare = os.dup(write_end)
    try:
        assert release_orphaned_output((spare,)) == []  # its reader is alive: kept
        os.close(read_end)
        assert release_orphaned_output((spare,)) == [spare]  # the reader is gone: /dev/null from now on
        assert os.write(spare, b"a log line") == 10  # no BrokenPipeError
    finally:
        os.close(spare)
        os.close(write_end)
