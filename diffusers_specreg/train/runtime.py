"""Where a training run executes: CPU threads, the `Accelerator`, mixed precision, and waiting for the main
process's own work (sampling, evaluation, saving, the Hub upload) without the collective timeout."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from accelerate import Accelerator


def choose_cpu_threads(env: dict, local_processes: int, cpu_count: int | None) -> tuple[int, str]:
    """How many CPU threads each process should use, and why (for the log).

    `accelerate launch` on a machine without a GPU sets `OMP_NUM_THREADS=1` in its children unless told otherwise, so
    a plain `accelerate launch train_spectral.py` would train on one core of many. The order: `SPECREG_NUM_THREADS`
    (always wins); `OMP_NUM_THREADS` when the user set it (a value other than accelerate's default 1, or any value
    outside `accelerate launch`); otherwise the cores divided among the processes on this machine.

    Args:
        env (`dict`): the environment (`os.environ`).
        local_processes (`int`): processes of this run on this machine.
        cpu_count (`int`, *optional*): usable cores (`os.sched_getaffinity` / `os.cpu_count`); `None` counts as 1.

    Returns:
        `tuple[int, str]`: the thread count (>= 1) and where it came from.
    """
    if env.get("SPECREG_NUM_THREADS"):
        return max(1, int(env["SPECREG_NUM_THREADS"])), "SPECREG_NUM_THREADS"
    launched = "ACCELERATE_MIXED_PRECISION" in env  # set by `accelerate launch` for its children
    omp = env.get("OMP_NUM_THREADS")
    if omp and not (launched and omp.strip() == "1"):
        return max(1, int(omp)), "OMP_NUM_THREADS"
    threads = max(1, (cpu_count or 1) // max(1, local_processes))
    return threads, f"{cpu_count or 1} cores / {max(1, local_processes)} process(es) on this machine"


def make_accelerator(
    *,
    logger,
    output_dir: str,
    logging_dir: str = "logs",
    gradient_accumulation_steps: int = 1,
    mixed_precision: str = "no",
    log_with: str | None = "tensorboard",
    seed: int | None = None,
) -> Accelerator:
    """The `Accelerator` of a training script, with logging set up, the CPU threads chosen (logged to `logger`) and
    the seed set.

    Args:
        logger (`logging.Logger`): where the CPU thread count is logged (the script's logger).
        output_dir (`str`): `--output_dir`, the project folder.
        logging_dir (`str`, defaults to `"logs"`): `--logging_dir`, the trackers' folder, relative to `output_dir`.
        gradient_accumulation_steps (`int`, defaults to 1): `--gradient_accumulation_steps`.
        mixed_precision (`str`, defaults to `"no"`): `--mixed_precision` ("no", "fp16" or "bf16").
        log_with (`str`, *optional*, defaults to `"tensorboard"`): `--logger`, the tracker ("tensorboard", "wandb").
        seed (`int`, *optional*): `--seed`; when given, `set_seed(seed, device_specific=True)`.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    accelerator = Accelerator(
        gradient_accumulation_steps=gradient_accumulation_steps,
        mixed_precision=mixed_precision,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=output_dir, logging_dir=os.path.join(output_dir, logging_dir)),
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    threads = configure_cpu_threads(int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes)))
    if threads:
        logger.info(threads)
    if seed is not None:
        set_seed(seed, device_specific=True)
    return accelerator


def configure_cpu_threads(local_processes: int = 1) -> str | None:
    """Set torch's intra-op threads by `choose_cpu_threads` when no GPU is used; returns the line to log (or None)."""
    if torch.cuda.is_available():
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count()
    threads, reason = choose_cpu_threads(dict(os.environ), local_processes, cores)
    torch.set_num_threads(threads)
    return f"CPU threads per process: {threads} ({reason}; set SPECREG_NUM_THREADS to choose)."


def mixed_precision_error(mixed_precision: str) -> str | None:
    """Why this machine cannot run `mixed_precision`, or None when it can."""
    if mixed_precision == "fp16" and not (torch.cuda.is_available() or torch.backends.mps.is_available()):
        return (
            "--mixed_precision fp16 needs a CUDA or MPS GPU; none was found. Use --mixed_precision bf16 or no on CPU."
        )
    if mixed_precision == "bf16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return "--mixed_precision bf16 is not supported by this GPU. Use --mixed_precision fp16 or no."
    return None


MAIN_PROCESS_TIMEOUT_ENV = "SPECREG_MAIN_PROCESS_TIMEOUT"
DEFAULT_MAIN_PROCESS_TIMEOUT = 6 * 3600.0
_main_process_waits = {"count": 0}


def main_process_timeout(environ=os.environ) -> float:
    """How long (seconds) the other processes wait for the main process: `SPECREG_MAIN_PROCESS_TIMEOUT`, default 6
    hours. A value that is not a number of seconds > 0 raises `ValueError` (the scripts check it before training)."""
    value = environ.get(MAIN_PROCESS_TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_MAIN_PROCESS_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not (seconds > 0 and seconds != float("inf")):
        raise ValueError(
            f"{MAIN_PROCESS_TIMEOUT_ENV}={value!r} must be a number of seconds > 0 (how long the other processes wait "
            f"for the main process's evaluation and upload); unset it for the default {DEFAULT_MAIN_PROCESS_TIMEOUT:g}."
        )
    return seconds


def wait_for_main_process(accelerator, timeout: float | None = None) -> None:
    r"""
    Wait on every process while the main process alone samples, evaluates, saves or uploads, then pass a barrier
    together. Call it on every process, the main one after its work.

    A plain barrier (`accelerator.wait_for_everyone()`) gives up after the process group's collective timeout (NCCL:
    10 minutes) and kills the job, so an end-of-run evaluation or a Hub upload longer than that lost the model card.
    Here the other processes poll a key of the process group's store, which the main process sets when done, for up to
    `timeout` seconds; the barrier after it is immediate.

    Args:
        accelerator (`Accelerator`): the run's accelerator.
        timeout (`float`, *optional*, defaults to `None`): seconds; `None` reads [`main_process_timeout`].
    """
    import torch.distributed as dist

    if accelerator.num_processes > 1 and dist.is_available() and dist.is_initialized():
        timeout = main_process_timeout() if timeout is None else timeout
        _main_process_waits["count"] += 1  # the same count on every process: one key per wait
        key = f"diffusers_specreg/main_process_done/{_main_process_waits['count']}"
        store = dist.distributed_c10d._get_default_store()
        if accelerator.is_main_process:
            store.set(key, "1")
        else:
            deadline, pause = time.monotonic() + timeout, 0.005
            while not store.check([key]):  # polled (not a blocking wait): signals are handled meanwhile
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Process {accelerator.process_index} waited {timeout:g} s for the main process (sampling, "
                        f"evaluation, saving, Hub upload) and gave up; set {MAIN_PROCESS_TIMEOUT_ENV} to more seconds."
                    )
                time.sleep(pause)
                pause = min(2 * pause, 0.5)
    accelerator.wait_for_everyone()


def release_distributed_models(accelerator) -> None:
    r"""
    Free the prepared (DDP-wrapped) models while every process is still running, then meet at a barrier.

    Call it on every process at the end of a successful run, after dropping the script's own references to the
    prepared model. A DDP wrapper holds the process group through its gradient reducer; freed only when its process
    exits, after another process had already left, gloo's destructor waited forever for its worker threads (the
    2-process `train_autoencoder.py` test hung at exit about one run in two).

    Args:
        accelerator (`Accelerator`): the run's accelerator (its references to models, optimizers, schedulers and data
            loaders are dropped, as `Accelerator.free_memory` does).
    """
    import gc

    accelerator.free_memory()
    gc.collect()
    accelerator.wait_for_everyone()
