"""Reusable parts of `train_spectral.py`: model presets, pretrained loading, checkpoints, and run guards."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
from dataclasses import dataclass

import torch
from diffusers import UNet2DModel

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


def unet_config(preset: str, resolution: int, channels: int) -> dict:
    """`UNet2DModel` keyword arguments of a named size.

    Args:
        preset (`str`): "default" is the model of Diffusers' `train_unconditional.py` (block widths
            128,128,256,256,512,512, attention in the 5th down and 2nd up block, ~114 M parameters at 3 channels);
            "small" (~1.1 M parameters, three levels) trains at a few steps per second on a CPU.
        resolution (`int`): `sample_size`.
        channels (`int`): input and output channels (inferred from the data, so 1-channel data needs no config
            file).
    """
    if preset == "default":
        return dict(
            sample_size=resolution,
            in_channels=channels,
            out_channels=channels,
            layers_per_block=2,
            block_out_channels=(128, 128, 256, 256, 512, 512),
            down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
        )
    if preset == "small":
        return dict(
            sample_size=resolution,
            in_channels=channels,
            out_channels=channels,
            layers_per_block=1,
            block_out_channels=(32, 64, 64),
            down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
        )
    raise ValueError(f"Unknown model preset {preset!r}; choose 'default' or 'small'.")


def unet_downsampling_factor(config) -> int:
    """How many times a UNet2DModel halves its input: 2 ** (number of down blocks - 1)."""
    return 2 ** (len(config["down_block_types"]) - 1)


@dataclass
class Pretrained:
    """A model loaded for fine-tuning: the UNet and, when the source was a pipeline, its scheduler config."""

    unet: UNet2DModel
    scheduler_config: dict | None
    source: str


def _has_file(name_or_path: str, filename: str, subfolder: str | None = None) -> bool:
    if os.path.isdir(name_or_path):
        return os.path.isfile(os.path.join(name_or_path, subfolder or "", filename))
    from huggingface_hub import file_exists

    try:
        path = f"{subfolder}/{filename}" if subfolder else filename
        return file_exists(name_or_path, path)
    except Exception:
        return False


def load_pretrained(name_or_path: str, cache_dir: str | None = None) -> Pretrained:
    """Load a UNet2DModel from a pipeline (model_index.json with `unet/`) or a bare UNet folder / Hub repo.

    Raises `ValueError` with what was looked for when neither layout is found.
    """
    try:
        if _has_file(name_or_path, "model_index.json"):
            unet = UNet2DModel.from_pretrained(name_or_path, subfolder="unet", cache_dir=cache_dir)
            scheduler_config = None
            if _has_file(name_or_path, "scheduler_config.json", "scheduler"):
                from diffusers import DDPMScheduler

                scheduler_config = dict(
                    DDPMScheduler.load_config(name_or_path, subfolder="scheduler", cache_dir=cache_dir)
                )
            return Pretrained(unet, scheduler_config, name_or_path)
        return Pretrained(UNet2DModel.from_pretrained(name_or_path, cache_dir=cache_dir), None, name_or_path)
    except OSError as error:
        raise ValueError(
            f"--pretrained_model_name_or_path {name_or_path!r}: found neither a pipeline (model_index.json with a "
            f"unet/ folder) nor a UNet2DModel (config.json + weights). Offline, pass a local folder. ({error})"
        ) from error


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints: atomic writes, rotation, resume
# ---------------------------------------------------------------------------------------------------------------


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints in `output_dir` as (step, path), oldest first. Partial writes are never listed."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = CHECKPOINT_PATTERN.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isfile(os.path.join(path, "training_state.json")):
            found.append((int(match.group(1)), path))
    return sorted(found)


def prune_checkpoints(output_dir: str, total_limit: int | None, keep_slots: int = 0) -> list[str]:
    """Delete the oldest checkpoints so that at most `total_limit - keep_slots` remain; returns what it deleted."""
    if total_limit is None:
        return []
    checkpoints = list_checkpoints(output_dir)
    excess = len(checkpoints) - max(total_limit - keep_slots, 0)
    removed = []
    for _, path in checkpoints[: max(excess, 0)]:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def save_checkpoint(
    accelerator,
    output_dir: str,
    step: int,
    state: dict,
    total_limit: int | None = None,
    rank_state: dict | None = None,
) -> str:
    """Write `checkpoint-{step}` atomically with `accelerator.save_state`.

    The state goes to a temporary folder first, then one `os.replace` on the main process makes it visible, so a
    crash mid-save never leaves a half checkpoint that `--resume_from_checkpoint latest` would pick. The oldest
    checkpoints beyond `total_limit` are deleted only after the new one is complete. Call on every process.

    Args:
        state (`dict`): JSON-serialisable run state (e.g. the global step), written by the main process.
        rank_state (`dict`, *optional*): state that differs per process (e.g. its noise generator), saved as
            `rank_state_{process_index}.pt` by every process; read back with `load_rank_state`.
    """
    final = os.path.join(output_dir, f"checkpoint-{step}")
    tmp = os.path.join(output_dir, f".tmp-checkpoint-{step}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    if rank_state is not None:
        torch.save(rank_state, os.path.join(tmp, f"rank_state_{accelerator.process_index}.pt"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(os.path.join(tmp, "training_state.json"), "w") as f:
            json.dump(state, f, indent=2)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


def load_rank_state(checkpoint: str, process_index: int) -> dict | None:
    """This process's `rank_state` of a checkpoint (None when it was written by fewer processes)."""
    path = os.path.join(checkpoint, f"rank_state_{process_index}.pt")
    return torch.load(path, weights_only=False) if os.path.isfile(path) else None


def resolve_resume(output_dir: str, resume_from_checkpoint: str | None) -> str | None:
    """The checkpoint folder to resume from: a path, a `checkpoint-N` name in output_dir, or "latest".

    Returns None for "latest" when there is none (a fresh run); raises `ValueError` for a named checkpoint that
    does not exist or is incomplete.
    """
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1][1] if checkpoints else None
    for path in (resume_from_checkpoint, os.path.join(output_dir, os.path.basename(resume_from_checkpoint))):
        if os.path.isfile(os.path.join(path, "training_state.json")):
            return path
    raise ValueError(
        f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a complete checkpoint (no training_state.json). "
        f"Available in {output_dir}: {[os.path.basename(p) for _, p in list_checkpoints(output_dir)] or 'none'}; "
        "or pass 'latest'."
    )


def read_training_state(checkpoint: str) -> dict:
    with open(os.path.join(checkpoint, "training_state.json")) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------------------------
# Run guards
# ---------------------------------------------------------------------------------------------------------------


class InterruptFlag:
    """Turns SIGINT / SIGTERM into a flag the training loop polls, so it can save a checkpoint and exit cleanly.

    A second signal while the flag is set restores the default behaviour (so a double Ctrl-C still kills).
    """

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def install(self) -> InterruptFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal_name is not None:
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def uninstall(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def raised(self) -> bool:
        return self.signal_name is not None


class CheckpointedGenerator:
    """A `torch.Generator` for the training noise whose state is saved in checkpoints.

    The noise has its own generator so that nothing else that draws random numbers (data augmentation in a
    prefetching data loader, sampling for the logs) shifts it: a resumed run draws exactly the noise the
    uninterrupted run would have. Each process has its own, saved as its `rank_state` by `save_checkpoint`.

    Args:
        device (`torch.device`): where the noise is drawn.
        seed (`int`): the seed; give each process its own (e.g. seed + process index).
    """

    def __init__(self, device: torch.device, seed: int):
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])


def ignore_interrupts_in_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: workers ignore SIGINT / SIGTERM, so a signal sent to the whole process group
    reaches the training loop (which checkpoints and exits) instead of killing the workers under it."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


class NonFiniteLossError(RuntimeError):
    pass


class NonFiniteGuard:
    """Skips steps whose loss or gradient is not finite and stops after `max_consecutive` such steps in a row.

    Args:
        max_consecutive (`int`, defaults to 5): raise `NonFiniteLossError` after this many non-finite losses or
            gradient norms in a row (a single bad batch is skipped with a warning).
    """

    def __init__(self, max_consecutive: int = 5):
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.skipped = 0
        self.skipped_gradients = 0

    def check(self, finite: bool, step: int, terms: dict | None = None, what: str = "loss") -> bool:
        """Returns True when the step may proceed; `what` ("loss" or "gradient") names the failed check."""
        if finite:
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.skipped += 1
        self.skipped_gradients += what == "gradient"
        terms = {k: float(v.detach().float().mean()) for k, v in (terms or {}).items()}
        logger.warning("Non-finite %s at step %d %s: skipping this batch.", what, step, terms)
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteLossError(
                f"The {what} was not finite for {self.consecutive} batches in a row (last at step {step}; terms: "
                f"{terms}). Lower --learning_rate or the spectral weights (--spectral_weight), or use "
                "--mixed_precision no; the last checkpoint is intact and can be resumed."
            )
        return False


def clip_and_step(
    accelerator, model, optimizer, lr_scheduler, guard: NonFiniteGuard, step: int, max_norm: float = 1.0
):
    """Clip the gradient to `max_norm` and take the optimiser and LR-scheduler step, unless its norm is not finite.

    The total norm comes from `accelerator.clip_grad_norm_`, computed after the gradient all-reduce, so every process
    makes the same decision. A non-finite norm (a NaN / inf gradient with a finite loss, for example from an
    unbounded phase gradient) skips the update: weights, optimiser moments and the LR schedule stay exactly as they
    were, the skip is counted and logged by `guard`, and `guard` stops the run after too many in a row. Under fp16
    mixed precision an overflow is the loss scaler's business (it skips the step and lowers the scale), so the step
    goes to the scaler. Between gradient-accumulation boundaries this only forwards to the (no-op) optimiser step.

    Returns:
        `bool`: whether the update was taken (True between accumulation boundaries).
    """
    if accelerator.sync_gradients:
        norm = accelerator.clip_grad_norm_(model.parameters(), max_norm)
        finite = norm is None or bool(torch.isfinite(torch.as_tensor(norm)).all())
        if accelerator.mixed_precision != "fp16" and not guard.check(finite, step, {"grad_norm": norm}, "gradient"):
            return False
    optimizer.step()
    lr_scheduler.step()
    return True


def mixed_precision_error(mixed_precision: str) -> str | None:
    """Why this machine cannot run `mixed_precision`, or None when it can."""
    if mixed_precision == "fp16" and not (torch.cuda.is_available() or torch.backends.mps.is_available()):
        return (
            "--mixed_precision fp16 needs a CUDA or MPS GPU; none was found. Use --mixed_precision bf16 or no on CPU."
        )
    if mixed_precision == "bf16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return "--mixed_precision bf16 is not supported by this GPU. Use --mixed_precision fp16 or no."
    return None
