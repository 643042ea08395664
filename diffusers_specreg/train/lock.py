"""One training run at a time in an output folder: `OutputDirLock`."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time

from diffusers_specreg.train.signals import LAUNCHER_DIED_SIGNAL

logger = logging.getLogger(__name__)

LOCK_FILE = ".train_spectral.lock"


def _process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot; Linux), None where unknown. With the pid it names one
    process: a pid is reused once its process has ended."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signal.SIGTERM)  # as a process ended by SIGTERM reports it; the `with` block cleans up


class OutputDirLock:
    r"""
    One training run at a time in an output folder: `LOCK_FILE` inside it, created atomically by the main process
    (environment `RANK` 0 or unset; the other processes of a distributed run take nothing and stop with it when it
    stops), holding the owner's pid, host, process start time and start date. Use it as a context manager.

    A second run stops with a `ValueError` naming the owner. A lock is stale, and taken over with a warning, when
    it was taken on this host and its process has ended, or its pid now names a process started at another time. A
    lock of another host is never taken over (its process cannot be checked from here): the message names the file
    to delete once that run is over, as for a lock that cannot be read.

    The lock goes when the block ends, normally or by an exception (Ctrl-C included); inside the block SIGTERM and
    the launcher's death signal (`LAUNCHER_DIED_SIGNAL`), where nothing else handles them, exit through it
    with code 143 (the training loop's own handler, installed later, checkpoints first). A lock left by a killed
    run (SIGKILL) is stale by the rule above.

    Args:
        output_dir (`str`): the folder; created if missing, and removed again on release if still empty.
        main_process (`bool`, *optional*): whether this process takes the lock; default: `RANK` is 0 or unset.
    """

    def __init__(self, output_dir: str, main_process: bool | None = None):
        self.output_dir = output_dir
        self.path = os.path.join(output_dir, LOCK_FILE)
        if main_process is None:
            main_process = int(os.environ.get("RANK") or 0) == 0
        self.main_process = main_process
        self._held = False
        self._made_dir = False
        self._handlers: dict = {}

    def __enter__(self) -> OutputDirLock:
        if not self.main_process:
            return self
        self._made_dir = not os.path.isdir(self.output_dir)
        os.makedirs(self.output_dir, exist_ok=True)
        try:
            self._acquire()
        except BaseException:
            self._remove_made_dir()
            raise
        self._held = True
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, LAUNCHER_DIED_SIGNAL):
                if signal.getsignal(sig) == signal.SIG_DFL:
                    self._handlers[sig] = signal.signal(sig, _exit_on_signal)
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False

    def release(self) -> None:
        """Remove the lock if this process holds it (and the folder, if the lock made it and it is empty)."""
        if not self._held:
            return
        self._held = False
        for sig, handler in self._handlers.items():
            signal.signal(sig, handler)
        self._handlers = {}
        owner = self._read()
        if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        self._remove_made_dir()

    def _remove_made_dir(self) -> None:
        if self._made_dir:
            try:
                os.rmdir(self.output_dir)  # only if empty: a run that stopped before writing anything
            except OSError:
                pass

    def _acquire(self) -> None:
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _process_start(os.getpid()),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        }
        for _ in range(3):
            if self._create(me):
                return
            owner = self._read()
            reason = self._stale(owner)
            if reason is None:
                raise ValueError(self._message(owner))
            logger.warning("Taking over the stale lock %s: %s.", self.path, reason)
            if self._read() == owner:  # not replaced meanwhile by a run that took it over first
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
        raise ValueError(
            f"--output_dir {self.output_dir!r}: could not take {self.path}; other runs are starting there."
        )

    def _create(self, owner: dict) -> bool:
        """Write the lock whole, then make it appear at once (a hard link fails if the lock exists); False if it
        exists."""
        staged = f"{self.path}.{os.getpid()}.tmp"
        with open(staged, "w") as f:
            json.dump(owner, f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(staged, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive creation
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                json.dump(owner, f)
            return True
        finally:
            os.remove(staged)

    def _read(self) -> dict | None:
        try:
            with open(self.path) as f:
                owner = json.load(f)
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None

    @staticmethod
    def _stale(owner: dict | None) -> str | None:
        """Why the lock of `owner` is stale, None when its run may be alive (or cannot be checked from here)."""
        if owner is None or owner.get("host") != socket.gethostname():
            return None
        pid = owner["pid"]
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return f"its run (pid {pid}) has ended"
        except OSError:  # PermissionError: alive, another user's
            return None
        started, now = owner.get("started"), _process_start(pid)
        if started is not None and now is not None and started != now:
            return f"pid {pid} now names another process"
        return None

    def _message(self, owner: dict | None) -> str:
        if owner is None:
            return (
                f"--output_dir {self.output_dir!r} may be in use by another training run: its lock {self.path} "
                f"cannot be read. If no run is using the folder, delete {self.path}; or pick another --output_dir."
            )
        who = f"pid {owner['pid']} on {owner.get('host')}, since {owner.get('since')}"
        message = (
            f"--output_dir {self.output_dir!r} is in use by another training run ({who}); two runs in one folder "
            "would delete each other's checkpoints and overwrite each other's pipeline. Wait for it to finish, stop "
            "it, or pick another --output_dir."
        )
        if owner.get("host") != socket.gethostname():
            message += f" Its process cannot be checked from this machine: if that run is over, delete {self.path}."
        return message
