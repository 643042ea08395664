"""Issue 19 (cases 9, 13, 14, 17 and part of 19): checkpoint rotation after resuming an older checkpoint, signals
during sampling and evaluation, fp16 loss-scaler skips, EMA flags, mixed precision, data set and run length on resume.
Real checkpoints, real accelerators, in-process runs of the training scripts on tiny data."""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, write_image_folder

from diffusers_specreg import run_settings, training

sys.path.insert(0, str(REPO))
from test_train_spectral import tiny_run  # noqa: E402

import train_autoencoder  # noqa: E402
import train_spectral  # noqa: E402

QUIET = dict(save_images_epochs=100, eval_num_samples=0, lr_scheduler="constant")


class Calls:
    """Counts this thread's calls of `functions` (`sys.setprofile` only observes) and, with `sigterm_at`, sends this
    process a real SIGTERM at the first call of that function, as a job scheduler would at that moment."""

    def __init__(self, *functions, sigterm_at=None):
        self.names = {inspect.unwrap(f).__code__: f.__qualname__ for f in functions}  # under a @torch.no_grad()
        self.counts = dict.fromkeys(self.names.values(), 0)
        self.sigterm_at = inspect.unwrap(sigterm_at).__code__ if sigterm_at is not None else None
        self.sent = False

    def _profile(self, frame, event, arg):
        if event != "call":
            return
        if frame.f_code in self.names:
            self.counts[self.names[frame.f_code]] += 1
        if frame.f_code is self.sigterm_at and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)

    def __enter__(self) -> Calls:
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)


def checkpoint_names(out: Path) -> list[str]:
    return sorted((p.name for p in out.glob("checkpoint-*")), key=lambda name: int(name.split("-")[1]))


# --- 9. rotation after resuming an older checkpoint -----------------------------------------------------------------


def _accelerator_with_a_model():
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer


def test_prune_after_resuming_an_older_checkpoint_keeps_what_this_run_wrote(tmp_path):
    accelerator, _, _ = _accelerator_with_a_model()

    def save(step, limit):
        training.save_checkpoint(accelerator, str(tmp_path), step, {"global_step": step}, limit)

    save(200, None)  # a first run: checkpoint-200, checkpoint-500
    save(500, None)
    # a second run resumed checkpoint-200 (500 was a diverged branch) with --checkpoints_total_limit 1
    save(300, 1)
    assert checkpoint_names(tmp_path) == ["checkpoint-300"]  # was: checkpoint-300 deleted right after its write
    assert training.resolve_resume(str(tmp_path), "latest") == str(tmp_path / "checkpoint-300")
    save(350, 1)  # the SIGTERM checkpoint
    assert checkpoint_names(tmp_path) == ["checkpoint-350"]


def test_latest_is_the_newest_written_not_the_highest_step(tmp_path):
    accelerator, _, _ = _accelerator_with_a_model()
    for step in (200, 500, 300):  # 300 written last: a run resumed from checkpoint-200
        training.save_checkpoint(accelerator, str(tmp_path), step, {"global_step": step}, 2)
    assert checkpoint_names(tmp_path) == ["checkpoint-300", "checkpoint-500"]  # checkpoint-200 written longest ago
    assert training.resolve_resume(str(tmp_path), "latest") == str(tmp_path / "checkpoint-300")
    (tmp_path / "checkpoint-300" / "training_state.json").write_text('{"global_st')  # damaged: the one before
    assert training.resolve_resume(str(tmp_path), "latest") == str(tmp_path / "checkpoint-500")


# --- 13. signals during sampling, evaluation and on a checkpoint step ----------------------------------------------


def test_sigterm_while_sampling_stops_within_a_step_and_saves_the_checkpoint_first(
    tmp_path, image_folder, tiny_config
):
    from diffusers import DDIMScheduler

    out = tmp_path / "out"
    args = tiny_run(image_folder, tiny_config, out, max_train_steps=6, checkpointing_steps=100, **QUIET)
    args += ["--save_images_epochs", "1", "--ddpm_num_steps", "200", "--ddpm_num_inference_steps", "200"]
    with Calls(DDIMScheduler.step, sigterm_at=DDIMScheduler.step) as calls:  # the samples of epoch 0 (3 steps)
        assert train_spectral.main(args) == 143
    assert calls.counts["DDIMScheduler.step"] <= 2  # not the 200 sampling steps
    assert checkpoint_names(out) == ["checkpoint-3"]  # the step it stopped at, not one more
    assert not (out / "model_index.json").exists()  # the pipeline save (and a push) after the samples skipped


def test_sigterm_during_the_final_evaluation_saves_a_checkpoint_that_finishes_the_run(
    tmp_path, image_folder, tiny_config
):
    from diffusers import DDPMScheduler

    from diffusers_specreg.evaluate import evaluate_pipeline

    out = tmp_path / "out"
    options = dict(QUIET, eval_num_samples=2)
    args = tiny_run(image_folder, tiny_config, out, max_train_steps=3, checkpointing_steps=100, **options)
    args += ["--ddpm_num_steps", "200", "--ddpm_num_inference_steps", "200"]
    with Calls(DDPMScheduler.step, sigterm_at=evaluate_pipeline) as calls:
        assert train_spectral.main(args) == 143  # was 0: the card's 200-step sampling ran to its end
    assert calls.counts["DDPMScheduler.step"] <= 1
    assert checkpoint_names(out) == ["checkpoint-3"] and not (out / "README.md").exists()
    assert train_spectral.main([*args, "--resume_from_checkpoint", "latest", "--ddpm_num_inference_steps", "2"]) == 0
    assert (out / "README.md").is_file() and (out / "evaluation" / "metrics.json").is_file()


AUTOENCODER_FAST = [
    "--builtin_num_samples",
    "12",
    "--num_validation_images",
    "4",
    "--train_batch_size",
    "4",
    "--lr_warmup_steps",
    "1",
    "--scaling_batches",
    "2",
    "--resolution",
    "16",
    "--seed",
    "0",
]


def _spectral(image_folder, tiny_config, out, **options):
    return tiny_run(image_folder, tiny_config, out, **dict(QUIET, **options))


def _autoencoder(image_folder, tiny_config, out, max_train_steps, checkpointing_steps):
    steps = ["--max_train_steps", str(max_train_steps), "--checkpointing_steps", str(checkpointing_steps)]
    return [*AUTOENCODER_FAST, "--output_dir", str(out), *steps]


@pytest.mark.parametrize("script", [train_spectral, train_autoencoder], ids=["train_spectral", "train_autoencoder"])
def test_sigterm_on_a_checkpoint_step_saves_that_step_once(tmp_path, image_folder, tiny_config, script):
    out = tmp_path / "out"
    build = _spectral if script is train_spectral else _autoencoder
    args = build(image_folder, tiny_config, out, max_train_steps=6, checkpointing_steps=2)
    with Calls(training.save_checkpoint, sigterm_at=training.save_checkpoint) as calls:
        assert script.main(args) == 143
    assert calls.counts["save_checkpoint"] == 1  # was 2: the second save of step 2 replaced the first
    assert checkpoint_names(out) == ["checkpoint-2"]


def test_autoencoder_sigterm_while_finishing_saves_a_checkpoint_that_finishes_the_run(tmp_path):
    from diffusers_specreg import autoencoder

    out = tmp_path / "ae"
    args = [*AUTOENCODER_FAST, "--output_dir", str(out), "--max_train_steps", "2", "--checkpointing_steps", "100"]
    with Calls(sigterm_at=autoencoder.measure_scaling_factor):  # the first of its end-of-run loops
        assert train_autoencoder.main(args) == 143  # was 0
    assert checkpoint_names(out) == ["checkpoint-2"] and not (out / "config.json").exists()
    assert train_autoencoder.main([*args, "--resume_from_checkpoint", "latest"]) == 0
    assert (out / "config.json").is_file() and (out / "README.md").is_file()


# --- 14. fp16: the loss scaler's skips ------------------------------------------------------------------------------


@pytest.fixture
def fresh_accelerator_state():
    """Accelerate keeps one state per process: reset it so an Accelerator can take another mixed precision."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_fp16_loss_scaler_skips_are_counted_and_stop_the_run(fresh_accelerator_state):
    # fp16 mixed precision needs a GPU (Accelerate gives a CPU accelerator no GradScaler and no autocast); the
    # decision is tested with a real Accelerator that says fp16 and a real torch.amp.GradScaler on the CPU.
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, mixed_precision="fp16")
    accelerator.scaler = torch.amp.GradScaler("cpu")  # what Accelerate creates for fp16 on a GPU
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    guard = training.NonFiniteGuard(max_consecutive=3)

    def step(number, poison):
        accelerator.backward(model(torch.ones(3, 4)).square().mean())
        if poison:  # a finite loss with a NaN gradient: the scaler sees it as an overflow and skips the step
            model.weight.grad[0, 0] = float("nan")
        try:
            return training.clip_and_step(accelerator, model, optimizer, scheduler, guard, number)
        finally:
            optimizer.zero_grad()

    assert step(0, poison=False)
    weights, lr, scale = model.weight.detach().clone(), scheduler.get_last_lr(), accelerator.scaler.get_scale()
    assert not step(1, poison=True)  # was True: the EMA stepped on it and the guard never counted it
    assert torch.equal(model.weight, weights) and scheduler.get_last_lr() == lr
    assert accelerator.scaler.get_scale() == scale / 2 and guard.skipped == guard.skipped_gradients == 1
    assert not step(2, poison=True)
    assert step(3, poison=False) and guard.consecutive == 0  # an update taken ends the run of skips
    assert not step(4, poison=True) and not step(5, poison=True)
    with pytest.raises(training.NonFiniteLossError, match="gradient was not finite for 3 batches"):
        step(6, poison=True)


# --- 17. EMA flags on resume ----------------------------------------------------------------------------------------


def logged_scalars(log_dir: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values = {}
    for events in sorted(log_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            values.update({event.step: event.value for event in accumulator.Scalars(tag)})
    return values


def test_changed_ema_flags_take_effect_on_resume(tmp_path, image_folder, tiny_config, caplog):
    out = tmp_path / "out"
    options = dict(QUIET, use_ema=True, checkpointing_steps=2)
    assert train_spectral.main(tiny_run(image_folder, tiny_config, out, max_train_steps=2, **options)) == 0
    resume = ["--resume_from_checkpoint", "latest", "--ema_power", "0.5", "--ema_max_decay", "0.45"]
    with caplog.at_level(logging.WARNING):
        assert (
            train_spectral.main([*tiny_run(image_folder, tiny_config, out, max_train_steps=4, **options), *resume])
            == 0
        )
    assert "--ema_power: 0.75 in the checkpoint, 0.5 now" in caplog.text
    decay = logged_scalars(out / "logs", "ema_decay")
    # EMAModel's warm-up 1 - (1 + (n - 1) / inv_gamma) ** -power, capped at the max decay (n: the EMA's own step count)
    assert decay[2] == pytest.approx(1 - 2**-0.75)  # the first run
    assert decay[3] == pytest.approx(1 - 3**-0.5)  # was 1 - 3 ** -0.75 = 0.561: the checkpoint's power
    assert decay[4] == pytest.approx(0.45)  # was 0.646: the checkpoint's max decay 0.9999


# --- 19. mixed precision, data set and run length on resume -------------------------------------------------------


def test_resuming_a_checkpoint_without_loss_scale_under_fp16_starts_a_fresh_scale(tmp_path, caplog):
    # a checkpoint of --mixed_precision no (no scaler.pt) resumed by an fp16 run, whose GradScaler (a GPU's, here a
    # real torch.amp.GradScaler on the CPU) has nothing to load
    accelerator, model, _ = _accelerator_with_a_model()
    training.save_checkpoint(accelerator, str(tmp_path), 2, {"global_step": 2})
    assert not (tmp_path / "checkpoint-2" / "scaler.pt").exists()
    saved = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    scaler = torch.amp.GradScaler("cpu")
    accelerator.scaler = scaler
    try:
        with caplog.at_level(logging.WARNING):
            resumed = training.load_checkpoint(accelerator, str(tmp_path / "checkpoint-2"))  # was FileNotFoundError
    finally:
        accelerator.scaler = None
    assert resumed.global_step == 2 and torch.equal(model.weight, saved)
    assert "no scaler.pt" in caplog.text and "--mixed_precision no" in caplog.text
    assert scaler.get_scale() == 2.0**16  # the GradScaler's initial scale, as a new fp16 run starts


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file but the tensorboard logs (a resumed run opens a new event file before it compares settings)."""
    files = (p for p in sorted(out.rglob("*")) if p.is_file() and "logs" not in p.relative_to(out).parts)
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in files}


@pytest.fixture
def checkpointed_run(tmp_path, tiny_config):
    images = write_image_folder(tmp_path / "images", count=12)
    out = tmp_path / "out"
    args = tiny_run(images, tiny_config, out, max_train_steps=2, checkpointing_steps=2, **QUIET)
    assert train_spectral.main(args) == 0
    return images, out


def test_resume_with_another_number_of_images_is_refused_before_training(checkpointed_run, tmp_path, tiny_config):
    images, out = checkpointed_run
    more = tmp_path / "more"
    shutil.copytree(images, more)
    shutil.copy(more / "img_1.png", more / "img_extra.png")
    before = snapshot(out)
    args = tiny_run(more, tiny_config, out, max_train_steps=4, checkpointing_steps=2, **QUIET)
    with pytest.raises(ValueError, match="the data set's size: 12 images in the checkpoint, 13 now"):
        train_spectral.main([*args, "--resume_from_checkpoint", "latest"])
    assert snapshot(out) == before  # nothing trained or saved


def test_resume_with_other_files_of_the_same_count_is_named(checkpointed_run, tmp_path, tiny_config, caplog):
    images, out = checkpointed_run
    moved = tmp_path / "moved"  # another folder with the same files: nothing to say
    shutil.copytree(images, moved)
    args = tiny_run(moved, tiny_config, out, max_train_steps=3, checkpointing_steps=100, **QUIET)
    with caplog.at_level(logging.WARNING):
        assert train_spectral.main([*args, "--resume_from_checkpoint", "latest"]) == 0
    assert "the data set's files" not in caplog.text
    (moved / "img_1.png").rename(moved / "img_1_renamed.png")
    args = tiny_run(moved, tiny_config, out, max_train_steps=4, checkpointing_steps=100, **QUIET)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert train_spectral.main([*args, "--resume_from_checkpoint", "checkpoint-2"]) == 0
    assert "the data set's files" in caplog.text and "differ" in caplog.text


def test_dataset_fingerprint_reads_names_and_sizes_relative_to_the_folder(tmp_path):
    from diffusers_specreg.data import build_image_dataset

    def fingerprint(folder):
        data = build_image_dataset(
            dataset_name=None,
            dataset_config_name=None,
            train_data_dir=str(folder),
            cache_dir=None,
            resolution=16,
            center_crop=False,
            random_flip=False,
            preserve_input_precision=False,
        )
        return run_settings.dataset_fingerprint(data.dataset, str(folder))

    images = write_image_folder(tmp_path / "images", count=4)
    first = fingerprint(images)
    assert first["count"] == 4 and len(first["sha256"]) == 64
    assert fingerprint(shutil.copytree(images, tmp_path / "elsewhere")) == first
    (images / "img_1.png").write_bytes((images / "img_1.png").read_bytes() + b"\0")  # one more byte
    assert fingerprint(images)["sha256"] != first["sha256"]


def _saved_settings(folder: Path, step: int, **settings) -> Path:
    folder.mkdir()
    (folder / "training_state.json").write_text(json.dumps({"global_step": step}))
    (folder / "run_settings.json").write_text(json.dumps(settings))
    return folder


def test_a_new_run_length_under_a_cosine_schedule_is_named_with_the_learning_rate(tmp_path, caplog):
    common = dict(lr_scheduler="cosine", learning_rate=1e-4, lr_warmup_steps=10, num_processes=1)
    checkpoint = _saved_settings(tmp_path / "checkpoint-500", 500, max_train_steps=1000, **common)
    with caplog.at_level(logging.WARNING):
        run_settings.check_resume_settings(str(checkpoint), dict(common, max_train_steps=2000))
    assert "--max_train_steps: 1000 in the checkpoint, 2000 now" in caplog.text
    assert "learning rate at step 500 from 5.08e-05 to 8.58e-05" in caplog.text
    constant = dict(common, lr_scheduler="constant")
    checkpoint = _saved_settings(tmp_path / "checkpoint-constant", 500, max_train_steps=1000, **constant)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run_settings.check_resume_settings(str(checkpoint), dict(constant, max_train_steps=2000))
    assert "max_train_steps" not in caplog.text  # a constant rate does not depend on the run length
