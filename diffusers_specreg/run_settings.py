"""What a training run owns and what it was asked to do: the output folder's ownership record and the settings
manifest that checkpoints carry.

Output folder (`check_output_dir` before anything is built, `claim_output_dir` on the main process before the first
file is written):

- one run at a time: `OutputDirLock` (the main process holds `.train_spectral.lock` for the whole run);
- a run records the top-level names it writes, and only those (its pipeline's files, `README.md`,
  `training_args.json`, `evaluation/` when it evaluates, the logging folder), in `.train_spectral_outputs.json`;
- a second run into a folder with a finished pipeline or checkpoints stops, unless `--resume_from_checkpoint`
  finds a checkpoint to continue or `--overwrite_output_dir` is given; `--resume_from_checkpoint latest` into a
  folder with a pipeline but no checkpoint stops too (it would start over and replace the pipeline);
- `--overwrite_output_dir` removes everything the previous run wrote (its record, or for folders without one the
  component folders `model_index.json` names inside the folder, and the card, `pipeline.py`, evaluation and logs
  when their contents show them to be ours) and its checkpoints, and nothing else;
- a file or folder the run would write that no run wrote (a user's `README.md`, `unet/`, `logs/`, `pipeline.py` or
  `evaluation/`, ...) stops the run, with or without `--overwrite_output_dir`;
- what the run reads is never what it writes or deletes (`check_inputs`): the model being fine-tuned, its
  autoencoder or the training data at or inside such a name, or `--output_dir` inside the training data, stop it.

Settings (`settings_of` when saving a checkpoint, `check_resume_settings` when resuming): each flag is
`INCOMPATIBLE` (resuming with another value cannot work or would silently mean something else: an error naming
the flag), `UNCHECKED` (where the run writes, what it logs: no message) or anything else (a warning naming the flag;
the new value takes effect, e.g. `--learning_rate`). The training data are compared by `dataset_fingerprint`: another
number of images is an error, other files of the same number a warning. A new `--max_train_steps` is named, with
the learning rate it moves, when the LR schedule depends on the run length (`LENGTH_DEPENDENT_SCHEDULES`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Mapping, Sequence

import torch

from diffusers_specreg import training

logger = logging.getLogger(__name__)

OUTPUTS_FILE = ".train_spectral_outputs.json"
LOCK_FILE = ".train_spectral.lock"
CARD_MARKER = "diffusers-specreg"  # a tag of every model card we write
# names a run writes (besides the logging folder) that could also be a user's own file: never replaced unless ours
REPLACED_FILES = ("README.md", "training_args.json", "pipeline.py", "evaluation")
# what a DDPM run writes besides the logging folder (the scripts pass their own list: `outputs=`)
DDPM_OUTPUTS = ("model_index.json", "unet", "scheduler", "README.md", "training_args.json", "evaluation")
# temporary folders of an interrupted save (`pipelines_io.write_atomically`) or checkpoint (`training.save_checkpoint`)
TEMPORARY_PREFIXES = (".tmp-checkpoint-", ".tmp-save")
# the files `diffusers_specreg.evaluate` and train_autoencoder.py write into `evaluation/`
EVALUATION_SUFFIXES = (".json", ".md", ".png", ".wav")

# Flags that cannot change on resume: the model's shapes or meaning, the state the checkpoint holds, or the mapping
# from optimiser steps to data position.
INCOMPATIBLE = (
    "formulation",
    "prediction_type",
    "modality",
    "resolution",
    "unet_config",  # the UNet's config (from --model_config_name_or_path, --model_preset or the pretrained model)
    "use_ema",
    "spectral_loss",
    "noise_spectrum",
    "train_batch_size",
    "gradient_accumulation_steps",
    "num_processes",
    "ddpm_num_steps",
    "ddpm_beta_schedule",
    "edm_sigma_data",
    "flow_shift",  # the flow σ grid: a new shift trains another schedule than the one saved
    "sample_rate",
    "n_fft",
    "hop_length",
    "top_db",
)
# Flags that may change silently: where the run writes, how long it runs, what and how often it logs or samples.
UNCHECKED = (
    "output_dir",
    "overwrite_output_dir",
    "resume_from_checkpoint",
    "num_epochs",  # the run length is compared as max_train_steps (derived from it), see LENGTH_DEPENDENT_SCHEDULES
    "checkpointing_steps",
    "checkpoints_total_limit",
    "save_images_epochs",
    "save_model_epochs",
    "eval_batch_size",
    "eval_num_samples",
    "ddpm_num_inference_steps",
    "logger",
    "logging_dir",
    "push_to_hub",
    "hub_model_id",
    "hub_private_repo",
    "dataloader_num_workers",
    "cache_dir",
    "max_nonfinite_steps",
)
# LR schedules of Diffusers' `get_scheduler` whose rate at a step depends on --max_train_steps: a new run length is
# named on resume (with the rate it moves); under the others it changes nothing and goes unmentioned.
LENGTH_DEPENDENT_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial")
# Not settings: the secret, the launcher's rank, and values `fill_defaults` derives.
NOT_SETTINGS = ("hub_token", "local_rank", "resolution_from_user", "prediction_type_from_user", "builtin")


# ---------------------------------------------------------------------------------------------------------------
# Settings manifest
# ---------------------------------------------------------------------------------------------------------------


def _jsonable(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def dataset_fingerprint(dataset, root: str | None = None) -> dict:
    """What resume compares of the training data: `count`, the number of examples, and `sha256`, a hash of the image
    files' names (relative to `root`, e.g. `--train_data_dir`, so a moved folder is the same data) and sizes, of the
    examples themselves for data held in memory (built-in, mel slices), or of a `datasets` dataset's fingerprint;
    `sha256` is None when the dataset exposes none of these. A `torch.utils.data.Subset` counts its own examples."""
    indices = list(dataset.indices) if isinstance(dataset, torch.utils.data.Subset) else None
    source = dataset.dataset if indices is not None else dataset
    digest = hashlib.sha256()
    files, images = getattr(source, "files", None), getattr(source, "images", None)
    hf_fingerprint = getattr(getattr(source, "dataset", None), "_fingerprint", None)
    if files is not None:
        for path in files if indices is None else [files[i] for i in indices]:
            name = os.path.relpath(path, root) if root else os.path.basename(path)
            digest.update(f"{name.replace(os.sep, '/')}\0{os.path.getsize(path)}\n".encode())
    elif isinstance(images, torch.Tensor):
        selected = images if indices is None else images[indices]
        digest.update(selected.detach().cpu().contiguous().view(torch.uint8).numpy())  # any dtype, no copy
    elif isinstance(hf_fingerprint, str):
        digest.update(f"{hf_fingerprint}\0{indices}".encode())
    else:
        return {"count": len(dataset), "sha256": None}
    return {"count": len(dataset), "sha256": digest.hexdigest()}


def settings_of(config, num_processes: int, unet_config: dict | None = None, dataset: dict | None = None) -> dict:
    """The run's settings as JSON: every flag (a parsed `argparse.Namespace`, or a mapping such as
    `RunSettings.config(args)` with the derived values filled in) but the token, the number of processes, the
    UNet's config (compared by content: the config file or pretrained model may have moved) and the training data's
    `dataset_fingerprint`."""
    items = config.items() if isinstance(config, Mapping) else vars(config).items()
    settings = {
        key: _jsonable(value)
        for key, value in sorted(items)
        if key not in NOT_SETTINGS and not key.endswith("_parsed")
    }
    settings["num_processes"] = num_processes
    if unet_config is not None:
        settings["unet_config"] = {k: _jsonable(v) for k, v in sorted(unet_config.items()) if not k.startswith("_")}
    if dataset is not None:
        settings["dataset"] = dict(dataset)
    return settings


def _flag(key: str) -> str:
    if key == "num_processes":
        return "accelerate launch --num_processes"
    if key.startswith("unet_config."):
        return f"the UNet config's {key.split('.', 1)[1]}"
    return f"--{key}"


def _flatten(settings: dict) -> dict:
    flat = {k: v for k, v in settings.items() if k not in ("unet_config", "dataset")}
    flat.update({f"unet_config.{k}": v for k, v in (settings.get("unet_config") or {}).items()})
    return flat


def _dataset_changes(saved: dict | None, current: dict | None) -> tuple[list[str], list[str]]:
    """(errors, warnings) of two `dataset_fingerprint`s; nothing for a checkpoint of a version that saved none."""
    if not isinstance(saved, dict) or not isinstance(current, dict):
        return [], []
    if saved.get("count") != current.get("count"):
        # the resumed position (epoch, batch) is computed from the number of examples: it would be another one
        return [f"the data set's size: {saved.get('count')} images in the checkpoint, {current.get('count')} now"], []
    if saved.get("sha256") and current.get("sha256") and saved["sha256"] != current["sha256"]:
        return [], ["the data set's files (names and sizes, or the images themselves) differ from the checkpoint's"]
    return [], []


def _rate_at(settings: dict, max_train_steps, step: int) -> float | None:
    """The learning rate of `settings` (schedule, rate, warm-up, processes) at `step` of a `max_train_steps` run, as
    the training scripts build it with Diffusers' `get_scheduler`; None when it cannot be computed."""
    from diffusers.optimization import get_scheduler

    try:
        learning_rate, processes = float(settings["learning_rate"]), int(settings.get("num_processes") or 1)
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=learning_rate)
        scheduler = get_scheduler(
            settings["lr_scheduler"],
            optimizer=optimizer,
            num_warmup_steps=int(settings.get("lr_warmup_steps") or 0) * processes,
            num_training_steps=int(max_train_steps) * processes,
        )
        return learning_rate * scheduler.lr_lambdas[0](step * processes)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        return None


def _run_length_change(saved: dict, current: dict, step: int | None) -> str | None:
    """The warning for a new --max_train_steps under a schedule that depends on it, else None."""
    old, new = saved.get("max_train_steps"), current.get("max_train_steps")
    schedule = current.get("lr_scheduler")
    if old is None or new is None or old == new or schedule not in LENGTH_DEPENDENT_SCHEDULES:
        return None
    line = f"--max_train_steps: {old} in the checkpoint, {new} now: the {schedule} schedule is recomputed for it"
    before, after = (_rate_at(current, total, step) if step is not None else None for total in (old, new))
    if before is None or after is None:
        return line
    return f"{line}, which moves the learning rate at step {step} from {before:.3g} to {after:.3g}"


def compare_settings(saved: dict, current: dict, step: int | None = None) -> tuple[list[str], list[str]]:
    """(errors, warnings): one line per changed flag, `INCOMPATIBLE` ones in errors, `UNCHECKED` ones left out; the
    data set (`_dataset_changes`) and the run length (`_run_length_change`, at the checkpoint's `step`) too."""
    errors, warnings = _dataset_changes(saved.get("dataset"), current.get("dataset"))
    run_length = _run_length_change(saved, current, step)
    warnings += [run_length] if run_length else []
    saved, current = _flatten(saved), _flatten(current)
    for key in sorted(set(saved) | set(current)):
        if key in UNCHECKED or key in NOT_SETTINGS or key == "max_train_steps":
            continue
        old, new = saved.get(key), current.get(key)
        if json.dumps(old) == json.dumps(new):
            continue
        line = f"{_flag(key)}: {json.dumps(old)} in the checkpoint, {json.dumps(new)} now"
        incompatible = key in INCOMPATIBLE or key.split(".")[0] == "unet_config"
        (errors if incompatible else warnings).append(line)
    return errors, warnings


def check_resume_settings(checkpoint: str, current: dict) -> None:
    """Compare this run's settings with the checkpoint's; raise `ValueError` naming every incompatible change, log a
    warning naming every other change (which takes effect from the resumed step)."""
    saved = training.read_run_settings(checkpoint)
    name = os.path.basename(os.path.normpath(checkpoint))
    if saved is None:
        logger.warning(
            "%s has no %s (an older version wrote it): the settings cannot be compared.", name, "run_settings.json"
        )
        return
    try:
        step = int(training.read_training_state(checkpoint)["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        step = None
    errors, warnings = compare_settings(saved, current, step)
    if errors:
        raise ValueError(
            f"Cannot resume from {name} with changed settings: {'; '.join(errors)}. Resume with the checkpoint's "
            "values, or start a new run in another --output_dir (--pretrained_model_name_or_path can start it from a "
            "saved pipeline)."
        )
    if warnings:
        logger.warning("Resuming from %s with changed settings, which take effect now: %s.", name, "; ".join(warnings))


# ---------------------------------------------------------------------------------------------------------------
# Output folder ownership
# ---------------------------------------------------------------------------------------------------------------


def _top_name(output_dir: str, logging_dir: str | None) -> str | None:
    """The top-level name of the logging folder inside `output_dir`, None when it is elsewhere."""
    if not logging_dir:
        return None
    path = os.path.relpath(os.path.abspath(os.path.join(output_dir, logging_dir)), os.path.abspath(output_dir))
    if path.startswith(os.pardir) or path == os.curdir:
        return None
    return path.split(os.sep)[0]


def run_outputs(output_dir: str, logging_dir: str | None, outputs: Sequence[str] = DDPM_OUTPUTS) -> list[str]:
    """The top-level names in `output_dir` that a run writes: `outputs` and the logging folder."""
    logs = _top_name(output_dir, logging_dir)
    return list(dict.fromkeys([*outputs, *([logs] if logs else [])]))


def _plain_name(name) -> bool:
    """A name of an entry of the folder itself: no separator, no `..`, not absolute."""
    separators = [os.sep, *([os.altsep] if os.altsep else []), "/", "\\"]
    return isinstance(name, str) and name not in ("", ".", "..") and not any(s in name for s in separators)


def read_outputs(output_dir: str) -> list[str] | None:
    """The names a previous run recorded as its own, None when no run recorded any (an older version or none)."""
    path = os.path.join(output_dir, OUTPUTS_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return list(json.load(f)["outputs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_outputs(output_dir: str, names) -> None:
    """Add `names` to the record of a folder that has one (what `--update_model_card` writes into a run's folder:
    `evaluation/`, `README.md`), so that they stay the run's: replaced by the next update and removed with the run by
    `--overwrite_output_dir`. A folder without a record is left without one (its files are ours by their content)."""
    recorded = read_outputs(output_dir)
    if recorded is None:
        return
    merged = list(dict.fromkeys([*recorded, *(n for n in names if _plain_name(n))]))
    if merged != recorded:
        with open(os.path.join(output_dir, OUTPUTS_FILE), "w") as f:
            json.dump({"outputs": merged}, f, indent=2)


def _read_index(output_dir: str) -> dict | None:
    try:
        with open(os.path.join(output_dir, "model_index.json")) as f:
            index = json.load(f)
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) else None


def _index_components(index: dict) -> list[str]:
    """The component folders a `model_index.json` names: keys with a `[library, class]` value (a `[null, null]`
    one was not saved), and only plain names, so that no key reaches outside the folder (`"../x"`, `"/x"`)."""
    return [
        key
        for key, value in index.items()
        if _plain_name(key)
        and not key.startswith(("_", "."))
        and isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, str) for v in value)
    ]


def _is_our_card(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return head.startswith("---") and CARD_MARKER in head


def _is_our_training_args(path: str) -> bool:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "spectral_loss" in data and "formulation" in data


def _is_our_pipeline_file(output_dir: str, index: dict | None) -> bool:
    """`pipeline.py` is the pipeline's own when `model_index.json` loads it (`"_class_name": ["pipeline", C]`), C is
    one of our custom pipelines and the file defines it."""
    from diffusers_specreg.formulations import FORMULATIONS

    name = (index or {}).get("_class_name")
    ours = {entry.pipeline_class for entry in FORMULATIONS.values() if entry.is_custom}
    if not (isinstance(name, list) and len(name) == 2 and name[0] == "pipeline" and name[1] in ours):
        return False
    try:
        with open(os.path.join(output_dir, "pipeline.py"), encoding="utf-8") as f:
            return f"class {name[1]}(" in f.read()
    except (OSError, UnicodeDecodeError):
        return False


def _is_our_evaluation(output_dir: str) -> bool:
    """`evaluation/` is ours when its `metrics.json` (a comparison of evaluate, or one pipeline's result as a training
    run or `--update_model_card` copies it) or `autoencoder.json` (train_autoencoder.py) is and every file in it is of
    a kind they write."""
    folder = os.path.join(output_dir, "evaluation")
    shapes = (
        ("metrics.json", ("pipelines", "data")),
        ("metrics.json", ("log_rapsd_distance", "sampler")),
        ("autoencoder.json", ("psnr", "latent_slope")),
    )
    for name, keys in shapes:
        try:
            with open(os.path.join(folder, name)) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and all(key in data for key in keys):
            break
    else:
        return False
    return all(name.endswith(EVALUATION_SUFFIXES) for _, _, names in os.walk(folder) for name in names)


def previous_outputs(output_dir: str, logging_dir: str | None) -> list[str]:
    """What the previous run in `output_dir` wrote: its record, or (no record: an older version, or another script
    such as Diffusers' train_unconditional.py) what its files show."""
    recorded = read_outputs(output_dir)
    if recorded is not None:  # only plain names inside the folder, whatever the file says
        return [name for name in recorded if _plain_name(name)]
    names = []
    index = _read_index(output_dir)
    if index is not None:
        names += ["model_index.json", *_index_components(index)]
        if _is_our_pipeline_file(output_dir, index):
            names.append("pipeline.py")
    elif os.path.isfile(os.path.join(output_dir, "model_index.json")):
        names.append("model_index.json")  # unreadable: a pipeline save cut short
    if names or training.list_checkpoints(output_dir):
        if _is_our_evaluation(output_dir):
            names.append("evaluation")
        logs = _top_name(output_dir, logging_dir)
        names += [logs] if logs else []
    if _is_our_card(os.path.join(output_dir, "README.md")):
        names.append("README.md")
    if _is_our_training_args(os.path.join(output_dir, "training_args.json")):
        names.append("training_args.json")
    return names


def _resuming(output_dir: str, resume_from_checkpoint: str | None) -> bool:
    if not resume_from_checkpoint:
        return False
    return resume_from_checkpoint != "latest" or bool(training.list_checkpoints(output_dir))


def check_output_dir(
    output_dir: str,
    resume_from_checkpoint: str | None,
    overwrite_output_dir: bool,
    logging_dir: str | None = "logs",
    outputs: Sequence[str] = DDPM_OUTPUTS,
) -> None:
    """Refuse, before anything is built, a run that would replace a finished pipeline, checkpoints or user files.

    `outputs` are the top-level names the run writes besides the logging folder. Raises `ValueError` naming what is
    in the way and the flag or folder that resolves it. Reads only.
    """
    if not os.path.isdir(output_dir):
        return
    has_pipeline = os.path.isfile(os.path.join(output_dir, "model_index.json"))
    has_checkpoints = bool(training.list_checkpoints(output_dir))
    if _resuming(output_dir, resume_from_checkpoint):
        return
    if resume_from_checkpoint and has_pipeline and not overwrite_output_dir:
        raise ValueError(
            f"--resume_from_checkpoint {resume_from_checkpoint}: {output_dir!r} holds a trained pipeline but no "
            "checkpoint-N/ folder to resume from, so the run would start over and replace it. Pass "
            "--overwrite_output_dir to replace it, fine-tune it with --pretrained_model_name_or_path "
            f"{output_dir} and another --output_dir, or pick another --output_dir."
        )
    if (has_pipeline or has_checkpoints) and not overwrite_output_dir:
        raise ValueError(
            f"--output_dir {output_dir!r} already holds a trained pipeline or checkpoints. Pass "
            "--resume_from_checkpoint latest to continue that run, --overwrite_output_dir to replace it, or "
            "another --output_dir."
        )
    ours = set(previous_outputs(output_dir, logging_dir))
    written = dict.fromkeys([*REPLACED_FILES, *run_outputs(output_dir, logging_dir, outputs)])
    foreign = [name for name in written if os.path.lexists(os.path.join(output_dir, name)) and name not in ours]
    if foreign:
        logs = _top_name(output_dir, logging_dir)
        raise ValueError(
            f"--output_dir {output_dir!r} holds {', '.join(foreign)}, which no training run wrote there; this run "
            "would write into it or replace it (--overwrite_output_dir only replaces a previous run's outputs). Move "
            f"it elsewhere{', pass another --logging_dir' if logs in foreign else ''}, or pick another --output_dir."
        )


def claim_output_dir(
    output_dir: str,
    resume_from_checkpoint: str | None,
    overwrite_output_dir: bool,
    logging_dir: str | None = "logs",
    outputs: Sequence[str] = DDPM_OUTPUTS,
) -> list[str]:
    """Create `output_dir` and record this run's outputs (`outputs`, the top-level names it writes besides the
    logging folder); with `overwrite_output_dir` (and nothing to resume), first delete everything the previous run
    wrote there, checkpoints included, and nothing else. Call on the main process after `check_output_dir`, before
    the first file is written. Returns the deleted paths."""
    os.makedirs(output_dir, exist_ok=True)
    resuming = _resuming(output_dir, resume_from_checkpoint)
    previous = previous_outputs(output_dir, logging_dir)
    removed = []
    if overwrite_output_dir and not resuming:
        doomed = [os.path.join(output_dir, name) for name in previous]
        doomed += [path for _, path in training.list_checkpoints(output_dir)]
        doomed += [os.path.join(output_dir, n) for n in os.listdir(output_dir) if n.startswith(TEMPORARY_PREFIXES)]
        for path in doomed:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
            else:
                continue
            removed.append(path)
        if removed:
            logger.info(
                "--overwrite_output_dir: removed the previous run's outputs: %s",
                ", ".join(os.path.relpath(p, output_dir) for p in removed),
            )
        previous = []
    # only what this run writes and no one else's: a name already there is recorded only if a run wrote it
    mine = [n for n in run_outputs(output_dir, logging_dir, outputs) if n in previous or not _exists(output_dir, n)]
    names = list(dict.fromkeys([*previous, *mine]))
    with open(os.path.join(output_dir, OUTPUTS_FILE), "w") as f:
        json.dump({"outputs": names}, f, indent=2)
    return removed


def _exists(folder: str, name: str) -> bool:
    return os.path.lexists(os.path.join(folder, name))


# ---------------------------------------------------------------------------------------------------------------
# What the run reads is not what it writes
# ---------------------------------------------------------------------------------------------------------------


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def _within(path: str, folder: str) -> bool:
    """Whether the real `path` is `folder` or below it (both real paths)."""
    return path == folder or os.path.commonpath([path, folder]) == folder


def _managed_name(output_dir: str, path: str, outputs: Sequence[str], logging_dir: str | None) -> str | None:
    """The top-level entry of `output_dir` that holds `path` if the run writes or may delete it (its outputs, the
    logging folder, the previous run's outputs, checkpoints, temporary folders); `""` for `output_dir` itself;
    None when `path` is outside `output_dir` or in a folder the run never touches."""
    out, real = _real(output_dir), _real(path)
    if not _within(real, out):
        return None
    if real == out:
        return ""
    name = os.path.relpath(real, out).split(os.sep)[0]
    managed = set(run_outputs(output_dir, logging_dir, outputs)) | set(REPLACED_FILES)
    if os.path.isdir(output_dir):
        managed |= set(previous_outputs(output_dir, logging_dir))
    if name in managed or training.CHECKPOINT_PATTERN.match(name) or name.startswith(TEMPORARY_PREFIXES):
        return name
    return None


def check_inputs(
    output_dir: str,
    models: Mapping[str, str | None],
    data: Mapping[str, str | None],
    outputs: Sequence[str] = DDPM_OUTPUTS,
    logging_dir: str | None = "logs",
) -> None:
    """Refuse, before anything is built, a run whose inputs lie where it writes or deletes.

    Args:
        output_dir (`str`): `--output_dir`.
        models (`Mapping[str, str | None]`): flag -> local folder of a model the run loads (the model being
            fine-tuned, an autoencoder): refused at `output_dir` or inside a name the run writes or may delete
            there (the run replaces it before its final save, so an interrupt would lose it).
        data (`Mapping[str, str | None]`): flag -> local folder of training data: refused when `output_dir` lies in
            it (sample images would become training data on resume, and the overwrite would delete files the scan
            listed), and like a model inside what the run writes or deletes. Hub ids (no such folder) are skipped.
        outputs (`Sequence[str]`): the top-level names the run writes besides the logging folder.
        logging_dir (`str`, *optional*): `--logging_dir`.

    Raises `ValueError` naming the flag, the overlap and the fix. Reads only.
    """
    for flag, path in data.items():
        if path and os.path.isdir(path) and _within(_real(output_dir), _real(path)):
            raise ValueError(
                f"--output_dir {output_dir!r} lies in {flag} {path!r}: the run's sample images would become "
                "training data on resume, and --overwrite_output_dir would delete files the data scan listed. Pick "
                "an --output_dir outside the training data."
            )
    for is_model, inputs in ((True, models), (False, data)):
        for flag, path in inputs.items():
            if not (path and os.path.exists(path)):
                continue
            name = _managed_name(output_dir, path, outputs, logging_dir)
            if name is None:
                continue
            where = "is --output_dir itself" if name == "" else f"is inside --output_dir {output_dir!r} ({name})"
            if not is_model:
                what = "the training data would be written over or deleted while the run reads it"
            else:
                model = "model being fine-tuned" if flag == "--pretrained_model_name_or_path" else "model it loads"
                what = (
                    f"the {model} would be replaced or deleted before the final save, and an interrupt would lose it"
                )
            raise ValueError(
                f"{flag} {path!r} {where}, which this run writes or deletes: {what}. Pass another --output_dir, or "
                "move it out of this one first."
            )


# ---------------------------------------------------------------------------------------------------------------
# One run at a time
# ---------------------------------------------------------------------------------------------------------------


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
    the launcher's death signal (`training.LAUNCHER_DIED_SIGNAL`), where nothing else handles them, exit through it
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
            for sig in (signal.SIGTERM, training.LAUNCHER_DIED_SIGNAL):
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


__all__ = [
    "INCOMPATIBLE",
    "LOCK_FILE",
    "OUTPUTS_FILE",
    "record_outputs",
    "UNCHECKED",
    "OutputDirLock",
    "check_inputs",
    "check_output_dir",
    "check_resume_settings",
    "claim_output_dir",
    "compare_settings",
    "dataset_fingerprint",
    "read_outputs",
    "run_outputs",
    "settings_of",
]
