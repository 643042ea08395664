"""The settings manifest that checkpoints carry, and its comparison when a run resumes.

Settings (`settings_of` when saving a checkpoint, `check_resume_settings` when resuming): each flag is
`INCOMPATIBLE` or an objective's `Option` whose `resume` is "incompatible" (resuming with another value cannot work or
would silently mean something else: an error naming the flag), `UNCHECKED` (where the run writes, what it logs: no message) or anything else (a warning naming the flag;
the new value takes effect, e.g. `--learning_rate`). The training data are compared by `dataset_fingerprint`: another
number of images is an error, other files of the same number a warning. A new `--max_train_steps` is named, with
the learning rate it moves, when the LR schedule depends on the run length (`LENGTH_DEPENDENT_SCHEDULES`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence

import torch

from diffusers_specreg.diffusion.registry import objective_class, objective_options, resume_incompatible_flags
from diffusers_specreg.kinds import PIPELINE_KINDS
from diffusers_specreg.train.checkpoint import RUN_SETTINGS_FILE, read_run_settings, read_training_state

logger = logging.getLogger(__name__)


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
    `train.settings.DerivedSettings.config(vars(args))` with the derived values filled in) but the token, the number
    of processes, the UNet's config (compared by content: the config file or pretrained model may have moved) and the
    training data's `dataset_fingerprint`."""
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


def _is_new_default(key: str, value) -> bool:
    """An objective's flag that a checkpoint of an older version does not record, at its default: the old run
    trained with exactly that (e.g. flow's --weighting_scheme in a DDPM checkpoint written before flow existed)."""
    return any(
        option.flag == key and json.dumps(option.default) == json.dumps(value) for option in objective_options()
    )


def _foreign_option_flags(kind_name) -> set[str]:
    """The flags of the objectives' `Option`s that the run's own objective (that of its pipeline kind) does not own:
    they do not act on its training, so they are not compared (a DDPM checkpoint of an older version may record a
    `--flow_shift` it then ignored). Empty for a kind not registered (nothing is left out)."""
    kind = PIPELINE_KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        return set()
    own = {option.flag for option in objective_class(kind.objective).options}
    return {option.flag for option in objective_options()} - own


def compare_settings(
    saved: dict, current: dict, step: int | None = None, incompatible: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """(errors, warnings): one line per changed flag, `INCOMPATIBLE` ones, the objectives' "incompatible" `Option`s
    and those named in `incompatible` (a script's own, e.g. the autoencoder's `latent_regularizer`) in errors,
    `UNCHECKED` ones left out; the data set (`_dataset_changes`) and the run length (`_run_length_change`, at the
    checkpoint's `step`) too."""
    errors, warnings = _dataset_changes(saved.get("dataset"), current.get("dataset"))
    run_length = _run_length_change(saved, current, step)
    warnings += [run_length] if run_length else []
    saved, current = _flatten(saved), _flatten(current)
    objectives_incompatible = resume_incompatible_flags()  # e.g. --flow_shift
    foreign = _foreign_option_flags(current.get("formulation"))  # another objective's flags: no effect here
    for key in sorted(set(saved) | set(current)):
        if key in UNCHECKED or key in NOT_SETTINGS or key in foreign or key == "max_train_steps":
            continue
        old, new = saved.get(key), current.get(key)
        if json.dumps(old) == json.dumps(new) or (key not in saved and _is_new_default(key, new)):
            continue
        line = f"{_flag(key)}: {json.dumps(old)} in the checkpoint, {json.dumps(new)} now"
        refused = key in INCOMPATIBLE or key in incompatible or key in objectives_incompatible
        refused = refused or key.split(".")[0] == "unet_config"
        (errors if refused else warnings).append(line)
    return errors, warnings


def check_resume_settings(checkpoint: str, current: dict, incompatible: Sequence[str] = ()) -> None:
    """Compare this run's settings with the checkpoint's; raise `ValueError` naming every incompatible change, log a
    warning naming every other change (which takes effect from the resumed step).

    Args:
        checkpoint (`str`): the checkpoint folder (its `run_settings.json`).
        current (`dict`): this run's `settings_of`.
        incompatible (`Sequence[str]`, defaults to `()`): flags that cannot change besides `INCOMPATIBLE` and the
            objectives' "incompatible" `Option`s.
    """
    saved = read_run_settings(checkpoint)
    name = os.path.basename(os.path.normpath(checkpoint))
    if saved is None:
        logger.warning(
            "%s has no %s (an older version wrote it): the settings cannot be compared.", name, RUN_SETTINGS_FILE
        )
        return
    try:
        step = int(read_training_state(checkpoint)["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        step = None
    errors, warnings = compare_settings(saved, current, step, incompatible)
    if errors:
        raise ValueError(
            f"Cannot resume from {name} with changed settings: {'; '.join(errors)}. Resume with the checkpoint's "
            "values, or start a new run in another --output_dir (--pretrained_model_name_or_path can start it from a "
            "saved pipeline)."
        )
    if warnings:
        logger.warning("Resuming from %s with changed settings, which take effect now: %s.", name, "; ".join(warnings))
