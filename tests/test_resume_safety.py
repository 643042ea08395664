"""Issue 19 (cases 9, 13, 14, 17 and part of 19): checkpoint rotation after resuming an older checkpoint, signals
during sampling and evaluation, fp16 loss-scaler skips, EMA flags, mixed precision, data set and run length on resume.
Real checkpoints, real accelerators, in-process runs of the training scripts on tiny data."""

from __future__ import annotations

import inspect
import os
import signal
import sys
from pathlib import Path

import torch
from conftest import REPO

from diffusers_specreg import training

sys.path.insert(0, str(REPO))


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
