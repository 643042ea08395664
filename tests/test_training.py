"""Checkpoint bookkeeping, run guards and model presets used by train_spectral.py."""

import json
import os
import signal
import time

import pytest
import torch
from diffusers import UNet2DModel
from safetensors.torch import save_file

from diffusers_specreg import training
from diffusers_specreg.train import checkpoint


def make_checkpoint(root, step, complete=True):
    path = root / f"checkpoint-{step}"
    path.mkdir()
    save_file({"weight": torch.zeros(2)}, str(path / "model.safetensors"))  # a damaged one is skipped
    if complete:
        (path / "training_state.json").write_text(json.dumps({"global_step": step}))
    return path


def test_latest_skips_half_written_checkpoints(tmp_path):
    make_checkpoint(tmp_path, 2)
    make_checkpoint(tmp_path, 10)
    make_checkpoint(tmp_path, 12, complete=False)  # a crash before the final rename would leave no such folder,
    (tmp_path / ".tmp-checkpoint-14").mkdir()  # but a temporary one: neither may be resumed from
    assert [step for step, _ in training.list_checkpoints(str(tmp_path))] == [2, 10]
    assert training.resolve_resume(str(tmp_path), "latest").endswith("checkpoint-10")
    assert training.resolve_resume(str(tmp_path), "checkpoint-2").endswith("checkpoint-2")
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        training.resolve_resume(str(tmp_path), "checkpoint-12")
    assert training.resolve_resume(str(tmp_path / "empty"), "latest") is None


def test_prune_keeps_the_newest(tmp_path):
    for step in (5, 10, 15, 20):
        make_checkpoint(tmp_path, step)
    removed = training.prune_checkpoints(str(tmp_path), total_limit=2)
    assert sorted(os.path.basename(p) for p in removed) == ["checkpoint-10", "checkpoint-5"]
    assert [step for step, _ in training.list_checkpoints(str(tmp_path))] == [15, 20]
    assert training.prune_checkpoints(str(tmp_path), None) == []


def test_non_finite_guard_skips_then_stops():
    guard = training.NonFiniteGuard(max_consecutive=3)
    assert guard.check(True, 0)
    assert not guard.check(False, 1) and not guard.check(False, 2)
    assert guard.check(True, 3) and guard.consecutive == 2  # a finite loss alone does not end the run of bad steps
    assert guard.check(True, 3, what="gradient") and guard.consecutive == 0  # an update taken does
    assert not guard.check(False, 4) and not guard.check(False, 5)
    with pytest.raises(training.NonFiniteLossError, match="3 batches in a row"):
        guard.check(False, 6)
    assert guard.skipped == 5


def test_interrupt_flag_catches_sigterm():
    flag = training.InterruptFlag().install()
    try:
        assert not flag.raised
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.raised and flag.signal_name == "SIGTERM"
    finally:
        flag.uninstall()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_duplicated_stop_signal_is_one_stop_and_only_a_later_ctrl_c_kills(monkeypatch):
    flag = training.InterruptFlag().install()
    monkeypatch.setattr(training.InterruptFlag, "REPEAT_WINDOW_SECONDS", 0.2)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # the group's SIGTERM and a forwarded copy: still one stop
        assert flag.raised and flag.signal_name == "SIGTERM"
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGTERM)  # a resent SIGTERM seconds later (e.g. during sampling): same stop
        assert flag.raised and flag.signal_name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C a moment later: the user insists
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        flag.uninstall()


def test_the_launchers_death_then_the_group_signal_is_one_stop_named_by_the_signal():
    flag = training.InterruptFlag().install()
    try:
        os.kill(os.getpid(), training.LAUNCHER_DIED_SIGNAL)  # delivered first: lower signal number than SIGTERM
        assert flag.raised and flag.signal_name == "SIGTERM to the launcher"
        os.kill(os.getpid(), signal.SIGTERM)  # the group's SIGTERM: same stop, named by it, no kill
        assert flag.signal_name == "SIGTERM" and flag.exit_code == 143
    finally:
        flag.uninstall()


def test_checkpointed_generator_round_trip():
    rng = training.CheckpointedGenerator(torch.device("cpu"), seed=7)
    state = rng.state_dict()
    first = torch.randn(4, generator=rng.generator)
    rng.load_state_dict(state)
    assert torch.equal(first, torch.randn(4, generator=rng.generator))


@pytest.mark.parametrize("channels", [1, 3])
def test_small_preset_builds_for_any_channel_count(channels):
    model = UNet2DModel(**training.unet_config("small", 32, channels))
    out = model(torch.zeros(1, channels, 32, 32), 10).sample
    assert out.shape == (1, channels, 32, 32)
    assert training.unet_downsampling_factor(model.config) == 4


def test_default_preset_is_train_unconditional_model():
    config = training.unet_config("default", 64, 3)
    assert config["block_out_channels"] == (128, 128, 256, 256, 512, 512)
    assert config["down_block_types"][4] == "AttnDownBlock2D" and config["up_block_types"][1] == "AttnUpBlock2D"
    with pytest.raises(ValueError, match="'default' or 'small'"):
        training.unet_config("huge", 64, 3)


def test_fp16_on_cpu_is_refused_up_front():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert "bf16" in training.mixed_precision_error("fp16")
    assert training.mixed_precision_error("bf16") is None
    assert training.mixed_precision_error("no") is None


def _guarded_setup():
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    return accelerator, model, optimizer, scheduler


def _backward(accelerator, model, poison: bool = False):
    loss = model(torch.ones(3, 4)).square().mean()
    accelerator.backward(loss)
    if poison:  # a finite loss with a non-finite gradient, as an unbounded phase gradient gives
        model.weight.grad[0, 0] = float("nan")


def test_gradient_guard_skips_a_nan_gradient_and_leaves_everything_bit_identical():
    accelerator, model, optimizer, scheduler = _guarded_setup()
    guard = training.NonFiniteGuard(max_consecutive=2)
    _backward(accelerator, model)
    assert training.clip_and_step(accelerator, model, optimizer, scheduler, guard, step=0)
    optimizer.zero_grad()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {k: {n: t.clone() for n, t in v.items()} for k, v in optimizer.state_dict()["state"].items()}
    lr = scheduler.get_last_lr()

    _backward(accelerator, model, poison=True)
    assert not training.clip_and_step(accelerator, model, optimizer, scheduler, guard, step=1)
    optimizer.zero_grad()
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    for key, state in optimizer.state_dict()["state"].items():
        for name, tensor in state.items():
            assert torch.equal(tensor, moments[key][name]), (key, name)
    assert scheduler.get_last_lr() == lr
    assert guard.skipped == guard.skipped_gradients == 1 and guard.consecutive == 1

    _backward(accelerator, model)  # a good step resets the run of bad ones and updates the weights
    assert training.clip_and_step(accelerator, model, optimizer, scheduler, guard, step=2)
    assert guard.consecutive == 0 and not torch.equal(model.state_dict()["weight"], weights["weight"])
    optimizer.zero_grad()

    for step in (3, 4):  # max_consecutive non-finite gradients in a row stop the run, naming the gradient
        _backward(accelerator, model, poison=True)
        if step == 3:
            assert not training.clip_and_step(accelerator, model, optimizer, scheduler, guard, step=step)
            optimizer.zero_grad()
        else:
            with pytest.raises(training.NonFiniteLossError, match="gradient was not finite for 2 batches"):
                training.clip_and_step(accelerator, model, optimizer, scheduler, guard, step=step)


def test_extra_state_round_trips_tensors_and_json_without_pickle(tmp_path):
    class Counter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("ema", torch.zeros(3))
            self.count = 0

        def get_extra_state(self):
            return {"count": self.count}

        def set_extra_state(self, state):
            self.count = state["count"]

    saved = Counter()
    saved.ema += torch.tensor([1.0, 2.0, 3.0])
    saved.count = 7
    checkpoint._save_extra_state(saved, str(tmp_path), "regularizer")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["regularizer.json", "regularizer.safetensors"]
    loaded = Counter()
    checkpoint._load_extra_state(loaded, str(tmp_path), "regularizer", "cpu")
    assert torch.equal(loaded.ema, saved.ema) and loaded.count == 7
    torch.nn.Module.register_buffer(loaded, "added_later", torch.zeros(1))
    with pytest.raises(training.CheckpointError, match="regularizer.safetensors does not fit"):
        checkpoint._load_extra_state(loaded, str(tmp_path), "regularizer", "cpu")


def test_finite_losses_with_non_finite_gradients_still_stop_the_run():
    # the loop checks the loss first (finite here), then the gradient: the run of bad steps must not be reset by
    # the finite losses, or --max_nonfinite_steps would never stop a run whose gradients are all NaN
    accelerator, model, optimizer, scheduler = _guarded_setup()
    guard = training.NonFiniteGuard(max_consecutive=3)
    for step in range(3):
        assert guard.check(True, step, what="loss")
        _backward(accelerator, model, poison=True)
        if step < 2:
            assert not training.clip_and_step(accelerator, model, optimizer, scheduler, guard, step=step)
            optimizer.zero_grad()
        else:
            with pytest.raises(training.NonFiniteLossError, match="gradient was not finite for 3 batches"):
                training.clip_and_step(accelerator, model, optimizer, scheduler, guard, step=step)


@pytest.mark.parametrize(
    "env, processes, cores, expected",
    [
        ({}, 1, 8, 8),  # plain python: all cores
        ({"ACCELERATE_MIXED_PRECISION": "no", "OMP_NUM_THREADS": "1"}, 1, 2, 2),  # accelerate's default 1: replaced
        ({"ACCELERATE_MIXED_PRECISION": "no", "OMP_NUM_THREADS": "1"}, 2, 8, 4),  # cores shared by the processes
        ({"ACCELERATE_MIXED_PRECISION": "no", "OMP_NUM_THREADS": "3"}, 1, 8, 3),  # --num_cpu_threads_per_process 3
        ({"OMP_NUM_THREADS": "1"}, 1, 8, 1),  # set by the user outside accelerate: kept
        ({"SPECREG_NUM_THREADS": "5", "OMP_NUM_THREADS": "1"}, 1, 2, 5),  # always wins
        ({}, 4, 2, 1),  # never below one
    ],
)
def test_cpu_threads_are_chosen_deliberately(env, processes, cores, expected):
    threads, reason = training.choose_cpu_threads(env, processes, cores)
    assert threads == expected and reason


def test_warmup_longer_than_the_run_is_reported():
    assert training.warmup_warning(50, 1500) is None
    assert "never reaches --learning_rate" in training.warmup_warning(500, 300)
