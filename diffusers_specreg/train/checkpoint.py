"""Checkpoints: atomic writes, rotation in write order, integrity checks, resume, and the generator of the
training noise whose state they carry. Nothing of ours is pickled."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


TRAINING_STATE_FILE = "training_state.json"  # the run state (global step), as before
CHECKPOINT_MANIFEST_FILE = "checkpoint.json"  # the completeness marker: written last, lists every file with its size
RUN_SETTINGS_FILE = "run_settings.json"  # the run's settings, compared on resume (see `train.manifest`)


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
            resume (`diffusers_specreg.train.manifest.compare_settings`).
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
