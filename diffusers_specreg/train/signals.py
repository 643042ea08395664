"""Signals of a training run: SIGINT / SIGTERM (and the launcher's death) become a flag the training loop polls,
so it saves a checkpoint and exits; data-loader workers ignore them; sampling stops within one step."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import torch

# What the kernel sends when the launcher dies (`stop_when_launcher_dies`); a signal of its own, so that the
# launcher's death right after a Ctrl-C or SIGTERM that reached the whole process group is not a second signal.
LAUNCHER_DIED_SIGNAL = signal.SIGUSR1


class InterruptFlag:
    """Turns SIGINT / SIGTERM (and SIGUSR1, e.g. Slurm's `--signal=USR1` or the launcher's death) into a flag the
    training loop polls, so it can save a checkpoint and exit cleanly.

    A second Ctrl-C (SIGINT) a moment after the first restores the default behaviour, so a double Ctrl-C still kills.
    A repeated SIGTERM never does: launchers and schedulers resend it (the group's signal, a forwarded copy, a retry
    seconds later while the run is sampling between steps), and SIGKILL is the way to force a stop.
    """

    REPEAT_WINDOW_SECONDS = 1.0

    def __init__(self):
        self._first_signal_time = 0.0
        self._from_launcher = False
        self.signal_name: str | None = None
        self.signum: int | None = None
        self._previous = {}

    def install(self) -> InterruptFlag:
        for sig in (signal.SIGINT, signal.SIGTERM, LAUNCHER_DIED_SIGNAL):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if signum == LAUNCHER_DIED_SIGNAL:  # the launcher is gone (prctl PDEATHSIG; getppid() may lag behind)
            release_orphaned_output()
            if self.signal_name is None:  # it was stopped alone (`kill <launcher pid>`): stop as for a SIGTERM
                self.signal_name, self.signum = "SIGTERM to the launcher", signal.SIGTERM
                self._from_launcher, self._first_signal_time = True, time.monotonic()
            return  # never a "second signal": a group SIGTERM also ends the launcher, which sends this one
        if self._from_launcher:
            # a group signal delivered after the launcher's (the kernel hands out pending signals lowest number
            # first, SIGUSR1 before SIGTERM): the same stop, now named by what the user sent
            self.signal_name, self.signum, self._from_launcher = signal.Signals(signum).name, signum, False
            return
        if self.signal_name is not None:
            # the same stop often arrives twice (the group's signal and a launcher forwarding it, within
            # milliseconds or, while the run samples between steps, seconds apart): only a second Ctrl-C a moment
            # later is a user insisting, which kills at once
            if signum != signal.SIGINT or time.monotonic() - self._first_signal_time < self.REPEAT_WINDOW_SECONDS:
                return
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self.signum = signum
        self._first_signal_time = time.monotonic()

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process ended by it (SIGINT 130, SIGTERM 143); 143 when
        the signal reached another process of the run."""
        return 128 + (self.signum if self.signum is not None else signal.SIGTERM)

    def uninstall(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def raised(self) -> bool:
        return self.signal_name is not None


def release_orphaned_output(fds=(1, 2)) -> list[int]:
    """Point stdout / stderr at /dev/null where they are pipes whose reader is gone (from Accelerate 1.16 the
    single-process launcher reads the training's stderr through a pipe: once it is killed, the next log line or
    progress-bar refresh would raise BrokenPipeError and end the run before its checkpoint is saved).

    Args:
        fds (`tuple[int, ...]`, defaults to `(1, 2)`): the file descriptors to check.

    Returns:
        `list[int]`: the descriptors that were redirected.
    """
    import select

    released = []
    for fd in fds:
        try:
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            broken = any(events & select.POLLERR for _, events in poller.poll(0))  # a pipe without a reader
            if broken:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)
                released.append(fd)
        except (OSError, ValueError):
            continue
    return released


class TrainingInterrupted(Exception):
    """Raised by `stop_on_interrupt` inside sampling or evaluation once SIGINT / SIGTERM arrived; the training script
    catches it, saves a checkpoint and exits with `InterruptFlag.exit_code`."""


@contextlib.contextmanager
def stop_on_interrupt(interrupt: InterruptFlag | None, *modules: torch.nn.Module):
    """Inside the block, every forward call of `modules` (the UNet of a sampling loop: one call per step) first checks
    `interrupt` and raises `TrainingInterrupted` once it is raised.

    A signal during a 1000-step sample or the card's evaluation is acted on within one step instead of after the
    whole loop, which can outlast a cluster's grace period before its SIGKILL. Nothing is checked when `interrupt` is
    None."""

    def check(module, inputs):
        if interrupt is not None and interrupt.raised:
            raise TrainingInterrupted(interrupt.signal_name)

    handles = [module.register_forward_pre_hook(check) for module in modules if module is not None]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def stop_when_launcher_dies(environ=os.environ) -> bool:
    """Under `accelerate launch` with one process, get `LAUNCHER_DIED_SIGNAL` when the launcher dies (Linux
    `PR_SET_PDEATHSIG`).

    Accelerate's single-process launcher forwards no signal: `kill <launcher pid>` ended the launcher and left the
    training running, orphaned. With this, `InterruptFlag` treats the launcher's death as a SIGTERM: the training
    saves a checkpoint and exits with 143. Multi-process launches go through torchrun, which forwards signals
    itself. Returns True when it was set up.
    """
    launched = any(key.startswith("ACCELERATE_") for key in environ) and "LOCAL_RANK" not in environ
    if not launched or not hasattr(os, "getppid") or not os.uname().sysname == "Linux":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        parent = os.getppid()
        if libc.prctl(1, int(LAUNCHER_DIED_SIGNAL), 0, 0, 0) != 0:  # 1 = PR_SET_PDEATHSIG
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the launcher died before the call
        os.kill(os.getpid(), LAUNCHER_DIED_SIGNAL)
    return True


def ignore_interrupts_in_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: workers ignore SIGINT / SIGTERM, so a signal sent to the whole process group
    reaches the training loop (which checkpoints and exits) instead of killing the workers under it."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def interrupted_anywhere(accelerator, interrupt: InterruptFlag) -> bool:
    """Whether this process or any other caught SIGINT/SIGTERM (a collective: every process calls it each step)."""
    interrupted = interrupt.raised
    if accelerator.num_processes > 1:
        flag = torch.tensor(float(interrupted), device=accelerator.device)
        interrupted = bool(accelerator.reduce(flag, "sum").item())
    return interrupted
