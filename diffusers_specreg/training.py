"""Reusable parts of `train_spectral.py`: model presets, pretrained loading, checkpoints, and run guards."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from diffusers import UNet2DModel

if TYPE_CHECKING:
    from accelerate import Accelerator

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


def resolution_for_config(config: dict, resolution: int, resolution_from_user: int | None) -> int:
    """The training resolution for a UNet config: its `sample_size` unless `--resolution` was given, and then they
    must agree (the pipeline samples at `sample_size`; a mismatch used to crash the sample logging after training).

    Raises `ValueError` naming both values and the fixes; also for a config whose `out_channels` differ from its
    `in_channels` (the denoising losses compare the output with the input).
    """
    size = config.get("sample_size")
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(
                f"The model config's sample_size {list(size)} is not square; training crops square images. Set "
                "sample_size to one number in the config."
            )
        size = size[0]
    in_channels, out_channels = config.get("in_channels"), config.get("out_channels")
    if in_channels is not None and out_channels is not None and in_channels != out_channels:
        raise ValueError(
            f"The model config has in_channels {in_channels} but out_channels {out_channels}; the losses compare the "
            "output with the input, so set out_channels to in_channels."
        )
    if size is None:
        return resolution
    if resolution_from_user is None:
        return int(size)
    if int(size) != resolution_from_user:
        raise ValueError(
            f"--resolution {resolution_from_user} differs from the model config's sample_size {size}: the model would "
            f"train on {resolution_from_user}x{resolution_from_user} images and sample at {size}x{size}. Leave out "
            f"--resolution (trains at {size}), pass --resolution {size}, or set sample_size to {resolution_from_user} "
            "in the config."
        )
    return resolution


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


TRAINING_STATE_FILE = "training_state.json"  # the run state (global step), as before
CHECKPOINT_MANIFEST_FILE = "checkpoint.json"  # the completeness marker: written last, lists every file with its size
RUN_SETTINGS_FILE = "run_settings.json"  # the run's settings, compared on resume (see `run_settings`)


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the file, the problem and the way out."""


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Checkpoints in `output_dir` as (step, path), oldest first. Partial writes (no `training_state.json`, or a
    `.tmp-checkpoint-N` folder) are never listed; damaged ones are, see `checkpoint_problems`."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = CHECKPOINT_PATTERN.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isfile(os.path.join(path, TRAINING_STATE_FILE)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def _write_sequence(checkpoint: str) -> int:
    """Where `checkpoint` stands in the order its folder's checkpoints were written (`checkpoint.json`); 0 for
    checkpoints of older versions, which record none."""
    try:
        sequence = _read_json(os.path.join(checkpoint, CHECKPOINT_MANIFEST_FILE)).get("sequence", 0)
    except (OSError, ValueError):
        return 0
    return sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else 0


def checkpoints_by_write_order(output_dir: str) -> list[tuple[int, str]]:
    """The checkpoints of `list_checkpoints`, written longest ago first: by the sequence number `save_checkpoint`
    records, then by step (checkpoints of older versions count as written before all others, in step order).

    After a run resumed an older checkpoint (`checkpoint-200` while `checkpoint-500` exists), what it writes is
    newer than the abandoned higher steps, whatever its step."""
    return sorted(list_checkpoints(output_dir), key=lambda item: (_write_sequence(item[1]), item[0]))


def prune_checkpoints(
    output_dir: str, total_limit: int | None, keep_slots: int = 0, keep: str | None = None
) -> list[str]:
    """Delete the checkpoints written longest ago (`checkpoints_by_write_order`) so that at most
    `total_limit - keep_slots` remain, never `keep` (the checkpoint just written); returns what it deleted."""
    if total_limit is None:
        return []
    checkpoints = [path for _, path in checkpoints_by_write_order(output_dir)]
    excess = len(checkpoints) - max(total_limit - keep_slots, 0)
    kept = os.path.abspath(keep) if keep else None
    removed = []
    for path in [p for p in checkpoints if os.path.abspath(p) != kept][: max(excess, 0)]:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _flatten_tensors(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """{"noise_rng": {"state": t}} -> {"noise_rng.state": t}; anything but tensors and dicts is refused."""
    flat = {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten_tensors(value, name + "."))
        elif isinstance(value, torch.Tensor):
            flat[name] = value.detach().cpu().contiguous().clone()
        else:
            raise TypeError(f"Checkpoint state {name!r} is a {type(value).__name__}; only tensors are saved.")
    return flat


def _unflatten_tensors(flat: dict[str, torch.Tensor]) -> dict:
    state: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = state
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return state


def _is_ema(obj) -> bool:
    from diffusers.training_utils import EMAModel

    return isinstance(obj, EMAModel)


def _save_extra_state(obj, folder: str, name: str) -> None:
    """An EMA model as a `UNet2DModel` folder (`save_pretrained`, as Diffusers' training scripts); any other
    object's `state_dict()` (e.g. the spectral regularizer's buffers, whichever it has) as `{name}.safetensors`,
    with its non-tensor entries (a module's `get_extra_state`, numbers) in `{name}.json`."""
    from safetensors.torch import save_file

    if _is_ema(obj):
        obj.save_pretrained(os.path.join(folder, name))
        return
    state = obj.state_dict()
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    others = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    save_file(_flatten_tensors(tensors), os.path.join(folder, f"{name}.safetensors"))
    if others:
        try:
            text = json.dumps(others, indent=2)
        except TypeError as error:
            raise TypeError(f"The {name} state holds values that are neither tensors nor JSON: {error}") from error
        with open(os.path.join(folder, f"{name}.json"), "w") as f:
            f.write(text)


def _load_extra_state(obj, folder: str, name: str, device) -> None:
    from safetensors.torch import load_file

    if _is_ema(obj):  # the folder EMAModel.save_pretrained writes: weights, and the EMA's settings in config.json
        path = os.path.join(folder, name)
        config = obj.model_cls.load_config(path)
        # the weights and the step count only: decay, inv_gamma and power stay the object's (this run's flags), so a
        # changed --ema_max_decay / --ema_power / --ema_inv_gamma takes effect as the resume warning says
        state = {key: config[key] for key in ("optimization_step",) if key in config}
        state["shadow_params"] = [p.detach() for p in obj.model_cls.from_pretrained(path).parameters()]
        obj.load_state_dict(state)
        obj.to(device)
    else:
        path = os.path.join(folder, f"{name}.safetensors")
        state = load_file(path)
        if os.path.isfile(os.path.join(folder, f"{name}.json")):
            state.update(_read_json(os.path.join(folder, f"{name}.json")))
        try:
            obj.load_state_dict(state)  # copied onto the buffers' device
        except RuntimeError as error:  # other keys or shapes: written by another version or settings
            raise CheckpointError(f"{path} does not fit this run's {name}: {error}") from error


def _file_sizes(folder: str) -> dict[str, int]:
    sizes = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            sizes[os.path.relpath(path, folder).replace(os.sep, "/")] = os.path.getsize(path)
    return dict(sorted(sizes.items()))


def save_checkpoint(
    accelerator,
    output_dir: str,
    step: int,
    state: dict,
    total_limit: int | None = None,
    rank_state: dict | None = None,
    extra_state: dict | None = None,
    settings: dict | None = None,
) -> str:
    """Write `checkpoint-{step}` atomically: `accelerator.save_state` plus safetensors / JSON files of ours.

    The state goes to a temporary folder first, then one `os.replace` on the main process makes it visible, so a
    crash mid-save never leaves a half checkpoint that `--resume_from_checkpoint latest` would pick. The
    checkpoints written longest ago beyond `total_limit` are deleted only after the new one is complete, never the
    new one (`prune_checkpoints`). Call on every process.

    Nothing of ours is pickled: Accelerate's `custom_checkpoint_*.pkl` (which it always unpickles with
    `weights_only=False`) is not used, and what we add is safetensors or JSON. `checkpoint.json`, written last,
    lists every file with its size, so that a truncated file is found before resuming (`checkpoint_problems`).

    Args:
        state (`dict`): JSON-serialisable run state (e.g. the global step), written by the main process.
        rank_state (`dict`, *optional*): tensors that differ per process (e.g. its noise generator state), as
            `{"name": {"key": tensor}}`; saved as `rank_state_{process_index}.safetensors` by every process and read
            back with `load_rank_state`.
        extra_state (`dict`, *optional*): `{name: object}` saved by the main process: an `EMAModel` with
            `save_pretrained` into `name/`, anything else with a `state_dict()` of tensors as `name.safetensors`.
            Read back with `load_checkpoint`.
        settings (`dict`, *optional*): the run's settings (JSON), saved as `run_settings.json` and compared on
            resume (`diffusers_specreg.run_settings.compare_settings`).
    """
    from safetensors.torch import save_file

    final = os.path.join(output_dir, f"checkpoint-{step}")
    tmp = os.path.join(output_dir, f".tmp-checkpoint-{step}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    if rank_state is not None:
        path = os.path.join(tmp, f"rank_state_{accelerator.process_index}.safetensors")
        save_file(_flatten_tensors(rank_state), path)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for name, obj in (extra_state or {}).items():
            if obj is not None:
                _save_extra_state(obj, tmp, name)
        if settings is not None:
            _write_json(os.path.join(tmp, RUN_SETTINGS_FILE), settings)
        _write_json(os.path.join(tmp, TRAINING_STATE_FILE), state)
        manifest = {
            "format": 1,
            # the write order, which `latest` and the rotation follow (not the step: see checkpoints_by_write_order)
            "sequence": 1 + max((_write_sequence(path) for _, path in list_checkpoints(output_dir)), default=0),
            "num_processes": accelerator.num_processes,
            "extra_state": sorted(name for name, obj in (extra_state or {}).items() if obj is not None),
            "files": _file_sizes(tmp),
        }
        _write_json(os.path.join(tmp, CHECKPOINT_MANIFEST_FILE), manifest)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        prune_checkpoints(output_dir, total_limit, keep=final)
    accelerator.wait_for_everyone()
    return final


def _write_json(path: str, data) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


def _read_json(path: str) -> dict:
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def checkpoint_problems(checkpoint: str) -> list[str]:
    """What makes `checkpoint` unusable, one line per file ("checkpoint-4/model.safetensors: 1200 bytes, 5400
    expected"); empty when it is intact. Reads the JSON files and the safetensors headers, not the weights."""
    from safetensors import safe_open

    name = os.path.basename(os.path.normpath(checkpoint))
    problems = []
    try:
        if "global_step" not in _read_json(os.path.join(checkpoint, TRAINING_STATE_FILE)):
            problems.append(f"{name}/{TRAINING_STATE_FILE}: no global_step")
    except (OSError, ValueError) as error:
        problems.append(f"{name}/{TRAINING_STATE_FILE}: unreadable ({error})")
    manifest_path = os.path.join(checkpoint, CHECKPOINT_MANIFEST_FILE)
    if os.path.exists(manifest_path):  # checkpoints of older versions have none: only the checks below apply
        try:
            expected = _read_json(manifest_path)["files"]
        except (OSError, ValueError, KeyError) as error:
            return problems + [f"{name}/{CHECKPOINT_MANIFEST_FILE}: unreadable ({error})"]
        for relative, size in expected.items():
            path = os.path.join(checkpoint, relative)
            if not os.path.isfile(path):
                problems.append(f"{name}/{relative}: missing")
            elif os.path.getsize(path) != size:
                problems.append(f"{name}/{relative}: {os.path.getsize(path)} bytes, {size} expected (truncated?)")
    if os.path.exists(os.path.join(checkpoint, RUN_SETTINGS_FILE)):
        try:
            _read_json(os.path.join(checkpoint, RUN_SETTINGS_FILE))
        except (OSError, ValueError) as error:
            problems.append(f"{name}/{RUN_SETTINGS_FILE}: unreadable ({error})")
    for root, _, names in os.walk(checkpoint):
        for file_name in names:
            if file_name.endswith(".safetensors"):
                path = os.path.join(root, file_name)
                try:
                    with safe_open(path, "pt"):
                        pass
                except Exception as error:  # safetensors raises its own error type for a damaged header
                    relative = os.path.relpath(path, checkpoint).replace(os.sep, "/")
                    problem = f"{name}/{relative}: unreadable ({error})"
                    if problem.split(":")[0] not in {p.split(":")[0] for p in problems}:
                        problems.append(problem)
    return problems


def resolve_resume(output_dir: str, resume_from_checkpoint: str | None) -> str | None:
    """The checkpoint folder to resume from: a path, a `checkpoint-N` name in output_dir, or "latest".

    Returns None for "latest" when there is none (a fresh run). "latest" is the checkpoint written last (after a
    resume from an older checkpoint, that run's, not a higher step of the abandoned one); it skips a damaged newest
    checkpoint with a warning that names the damaged file and uses the newest intact one; a named checkpoint that is
    missing,
    incomplete or damaged raises `CheckpointError` naming the file and the intact checkpoints to use instead.
    """
    if not resume_from_checkpoint:
        return None
    checkpoints = checkpoints_by_write_order(output_dir)
    if resume_from_checkpoint == "latest":
        if not checkpoints:
            return None
        skipped = []
        for _, path in reversed(checkpoints):
            problems = checkpoint_problems(path)
            if not problems:
                if skipped:
                    logger.warning(
                        "The newest checkpoint is damaged: %s. Resuming from %s, the newest intact one (delete the "
                        "damaged one to silence this warning).",
                        "; ".join(skipped),
                        os.path.basename(path),
                    )
                return path
            skipped.extend(problems)
        raise CheckpointError(
            f"No intact checkpoint in {output_dir} to resume from: {'; '.join(skipped)}. Start a new run with "
            "--overwrite_output_dir, or another --output_dir."
        )
    for path in (resume_from_checkpoint, os.path.join(output_dir, os.path.basename(resume_from_checkpoint))):
        if os.path.isfile(os.path.join(path, TRAINING_STATE_FILE)):
            problems = checkpoint_problems(path)
            if problems:
                raise CheckpointError(
                    f"--resume_from_checkpoint {resume_from_checkpoint}: the checkpoint is damaged: "
                    f"{'; '.join(problems)}. {_intact_hint(output_dir, exclude=path)}"
                )
            return path
    raise CheckpointError(
        f"--resume_from_checkpoint {resume_from_checkpoint!r} is not a complete checkpoint (no training_state.json). "
        f"Available in {output_dir}: {[os.path.basename(p) for _, p in sorted(checkpoints)] or 'none'}; or pass "
        "'latest'."
    )


def _intact_hint(output_dir: str, exclude: str) -> str:
    intact = [
        os.path.basename(p)
        for _, p in reversed(checkpoints_by_write_order(output_dir))
        if os.path.abspath(p) != os.path.abspath(exclude) and not checkpoint_problems(p)
    ]
    if intact:
        return f"The previous intact checkpoint is {intact[0]}: pass --resume_from_checkpoint {intact[0]}."
    return "No other intact checkpoint is in the output folder."


def read_training_state(checkpoint: str) -> dict:
    return _read_json(os.path.join(checkpoint, TRAINING_STATE_FILE))


def read_run_settings(checkpoint: str) -> dict | None:
    """The settings saved with a checkpoint, or None for checkpoints of versions that did not save them."""
    path = os.path.join(checkpoint, RUN_SETTINGS_FILE)
    return _read_json(path) if os.path.isfile(path) else None


def load_rank_state(checkpoint: str, process_index: int) -> dict | None:
    """This process's `rank_state` of a checkpoint, read from safetensors (never unpickled).

    Returns None for a checkpoint of an older version (which pickled it as `rank_state_{i}.pt`: that file is
    ignored, it could run code); raises `CheckpointError` when the checkpoint says it was saved but it is missing.
    """
    from safetensors.torch import load_file

    path = os.path.join(checkpoint, f"rank_state_{process_index}.safetensors")
    if os.path.isfile(path):
        return _unflatten_tensors(load_file(path))
    manifest_path = os.path.join(checkpoint, CHECKPOINT_MANIFEST_FILE)
    if os.path.isfile(manifest_path) and any(n.startswith("rank_state_") for n in _read_json(manifest_path)["files"]):
        raise CheckpointError(
            f"{path} is missing: the checkpoint was written by more processes than this run uses, or damaged. "
            "Resume with the same number of processes, or from another checkpoint."
        )
    return None


@dataclass
class ResumedState:
    """What `load_checkpoint` restored besides the prepared objects: the run state and this process's rank state."""

    training_state: dict
    rank_state: dict | None

    @property
    def global_step(self) -> int:
        return int(self.training_state["global_step"])


def load_checkpoint(accelerator, checkpoint: str, extra_state: dict | None = None) -> ResumedState:
    """Restore a checkpoint written by `save_checkpoint`: `accelerator.load_state`, then our safetensors files.

    Args:
        extra_state (`dict`, *optional*): the same `{name: object}` as given to `save_checkpoint`; each object is
            restored in place (an EMA model is moved to `accelerator.device`).

    Raises `CheckpointError` naming the file when a part the run needs is missing (e.g. the EMA state of a
    checkpoint written by an older version, which pickled it). An EMA model gets its weights and step count back,
    not its decay settings (the object's stay). An fp16 run resuming a checkpoint saved without fp16 (no
    `scaler.pt`) starts with a fresh loss scale.
    """
    for name, obj in (extra_state or {}).items():
        if obj is None:
            continue
        found = os.path.exists(os.path.join(checkpoint, name)) or os.path.exists(
            os.path.join(checkpoint, f"{name}.safetensors")
        )
        if not found:
            raise CheckpointError(
                f"{checkpoint} has no {name} state ({name}/ or {name}.safetensors): it was written by an older "
                "version or without that part. Start a new run, or resume a checkpoint written by this version."
            )
    pickles = sorted(n for n in os.listdir(checkpoint) if n.startswith("custom_checkpoint_") and n.endswith(".pkl"))
    if pickles:  # Accelerate would refuse them (nothing is registered) with its own message; name them instead
        raise CheckpointError(
            f"{checkpoint} holds {', '.join(pickles)}: pickled state, which this version never loads (unpickling can "
            "run arbitrary code). It was written by an older version or placed there by someone else. Resume from a "
            "checkpoint written by this version, or start a new run."
        )
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None and not os.path.isfile(os.path.join(checkpoint, "scaler.pt")):
        # fp16 resuming a checkpoint of --mixed_precision no or bf16: Accelerate would fail on the missing file
        logger.warning(
            "%s has no scaler.pt (it was saved without fp16 mixed precision: --mixed_precision no or bf16); the fp16 "
            "loss scale starts afresh at %g, as in a new run.",
            os.path.basename(os.path.normpath(checkpoint)),
            scaler.get_scale(),
        )
        accelerator.scaler = None  # only for the loading; the prepared optimisers hold the scaler themselves
        try:
            accelerator.load_state(checkpoint)
        finally:
            accelerator.scaler = scaler
    else:
        accelerator.load_state(checkpoint)
    for name, obj in (extra_state or {}).items():
        if obj is not None:
            _load_extra_state(obj, checkpoint, name, accelerator.device)
    return ResumedState(read_training_state(checkpoint), load_rank_state(checkpoint, accelerator.process_index))


def apply_optimizer_settings(optimizer, lr_scheduler, learning_rate: float, **hyperparameters) -> None:
    """Make this run's optimiser settings win over the ones a checkpoint restored.

    `optimizer.load_state_dict` brings back the saved learning rate, betas, weight decay and epsilon, and the LR
    scheduler its saved base rates, so a changed `--learning_rate` would be silently ignored. This sets them from
    the current run and recomputes the learning rate at the restored scheduler position.

    Args:
        learning_rate (`float`): the base learning rate.
        hyperparameters: other param-group settings to set, e.g. `betas=(0.95, 0.999)`, `weight_decay=1e-6`.
    """
    inner_optimizer = getattr(optimizer, "optimizer", optimizer)
    scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)
    for group in inner_optimizer.param_groups:
        group.update(hyperparameters)
        group["initial_lr"] = learning_rate
    if scheduler is None:
        for group in inner_optimizer.param_groups:
            group["lr"] = learning_rate
        return
    old_base_lrs = list(scheduler.base_lrs)
    scheduler.base_lrs = [learning_rate] * len(inner_optimizer.param_groups)
    lambdas = getattr(scheduler, "lr_lambdas", None)  # Diffusers' get_scheduler: always a LambdaLR
    for i, group in enumerate(inner_optimizer.param_groups):
        if lambdas is not None:
            group["lr"] = learning_rate * lambdas[i](scheduler.last_epoch)
        elif old_base_lrs[i]:
            group["lr"] = group["lr"] * learning_rate / old_base_lrs[i]
    scheduler._last_lr = [group["lr"] for group in inner_optimizer.param_groups]


# ---------------------------------------------------------------------------------------------------------------
# Run guards
# ---------------------------------------------------------------------------------------------------------------


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
        """Returns True when the step may proceed; `what` ("loss" or "gradient") names the check.

        A finite loss only lets the step go on to its gradient check; the run of bad steps ends when an update is
        actually taken (a finite gradient), so finite losses with non-finite gradients still stop the run."""
        if finite:
            if what == "gradient":
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
    mixed precision (an `accelerator.scaler`) the step goes to the loss scaler, which skips a step whose gradient
    overflowed or is NaN and lowers its scale (and Accelerate then holds the LR schedule); that skip is counted by
    `guard` in the same way, so NaN gradients stop an fp16 run too. Between gradient-accumulation boundaries this
    only forwards to the (no-op) optimiser step. With DeepSpeed, which returns no norm, the gradient check does not
    apply.

    Returns:
        `bool`: whether the update was taken (True between accumulation boundaries); False for a skipped step, on
        which an EMA must not step either.
    """
    scaler = getattr(accelerator, "scaler", None) if accelerator.sync_gradients else None
    if accelerator.sync_gradients:
        norm = accelerator.clip_grad_norm_(model.parameters(), max_norm)
        finite = norm is None or bool(torch.isfinite(torch.as_tensor(norm)).all())
        # with a loss scaler the step must reach it even when not finite: its update lowers the scale
        if scaler is None and not guard.check(finite, step, {"grad_norm": norm}, "gradient"):
            return False
    optimizer.step()
    lr_scheduler.step()
    if scaler is not None:  # a step the scaler skipped counts as a non-finite gradient
        terms = {"grad_norm": torch.as_tensor(norm), "loss_scale": torch.tensor(scaler.get_scale())}
        if not guard.check(not getattr(optimizer, "step_was_skipped", False), step, terms, "gradient"):
            return False
    return True


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


def make_accelerator(args, logger) -> Accelerator:
    """The `Accelerator` of a training script (`--gradient_accumulation_steps`, `--mixed_precision`, `--logger`,
    `--output_dir`/`--logging_dir`), with logging set up, the CPU threads chosen (logged to `logger`) and `--seed`."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=args.logger,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    threads = configure_cpu_threads(int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes)))
    if threads:
        logger.info(threads)
    if args.seed is not None:
        set_seed(args.seed, device_specific=True)
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


def warmup_warning(lr_warmup_steps: int, max_train_steps: int) -> str | None:
    """A warning when the learning-rate warm-up is as long as the run: the rate would never reach its value."""
    if lr_warmup_steps >= max_train_steps:
        return (
            f"--lr_warmup_steps {lr_warmup_steps} is not shorter than the run's {max_train_steps} steps: the learning "
            f"rate never reaches --learning_rate. Lower --lr_warmup_steps (e.g. {max(1, max_train_steps // 10)})."
        )
    return None


def mixed_precision_error(mixed_precision: str) -> str | None:
    """Why this machine cannot run `mixed_precision`, or None when it can."""
    if mixed_precision == "fp16" and not (torch.cuda.is_available() or torch.backends.mps.is_available()):
        return (
            "--mixed_precision fp16 needs a CUDA or MPS GPU; none was found. Use --mixed_precision bf16 or no on CPU."
        )
    if mixed_precision == "bf16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return "--mixed_precision bf16 is not supported by this GPU. Use --mixed_precision fp16 or no."
    return None


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A fresh permutation each epoch from (seed, epoch): resuming at an epoch replays exactly its data order."""

    def __init__(self, num_samples: int, seed: int):
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


def interrupted_anywhere(accelerator, interrupt: InterruptFlag) -> bool:
    """Whether this process or any other caught SIGINT/SIGTERM (a collective: every process calls it each step)."""
    interrupted = interrupt.raised
    if accelerator.num_processes > 1:
        flag = torch.tensor(float(interrupted), device=accelerator.device)
        interrupted = bool(accelerator.reduce(flag, "sum").item())
    return interrupted


# seconds the other processes wait for the main process's own work (sampling, evaluation, saving, the Hub upload)
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
