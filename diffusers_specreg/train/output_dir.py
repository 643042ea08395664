"""What a training run owns in its output folder: the record of the names it writes, the checks before it
writes (`check_output_dir`, `check_inputs`) and the claim (`claim_output_dir`).

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
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence

from diffusers_specreg.kinds import PIPELINE_KINDS, PipelineKind
from diffusers_specreg.pipelines_io import CUSTOM_PIPELINE_FILE_NAME
from diffusers_specreg.train.checkpoint import CHECKPOINT_PATTERN, list_checkpoints

logger = logging.getLogger(__name__)

OUTPUTS_FILE = ".train_spectral_outputs.json"


CARD_MARKER = "diffusers-specreg"  # a tag of every model card we write
# names a run writes (besides the logging folder) that could also be a user's own file: never replaced unless ours
REPLACED_FILES = ("README.md", "training_args.json", "pipeline.py", "evaluation")
# what a DDPM run writes besides the logging folder (the scripts pass their own list: `outputs=`)
DDPM_OUTPUTS = ("model_index.json", "unet", "scheduler", "README.md", "training_args.json", "evaluation")
# an autoencoder's files in --output_dir (train_autoencoder.py: a finished one stops the run unless
# --overwrite_output_dir), and the top-level names its run writes besides the logging folder and checkpoints
AUTOENCODER_FILES = (
    "config.json",
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "latent_spectrum.png",
)
AUTOENCODER_OUTPUTS = (
    "config.json",
    "diffusion_pytorch_model.safetensors",
    "latent_spectrum.png",
    "evaluation",
    "README.md",
)
# temporary folders of an interrupted save (`pipelines_io.write_atomically`) or checkpoint (`checkpoint.save_checkpoint`)
TEMPORARY_PREFIXES = (".tmp-checkpoint-", ".tmp-save")
# the files `diffusers_specreg.evaluate` and train_autoencoder.py write into `evaluation/`
EVALUATION_SUFFIXES = (".json", ".md", ".png", ".wav")


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
    name = (index or {}).get("_class_name")
    ours = {kind.pipeline_class for kind in PIPELINE_KINDS.values() if kind.is_custom}
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
    if names or list_checkpoints(output_dir):
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
    return resume_from_checkpoint != "latest" or bool(list_checkpoints(output_dir))


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
    has_checkpoints = bool(list_checkpoints(output_dir))
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


def pipeline_run_outputs(kind: PipelineKind, latent: bool, evaluates: bool) -> list[str]:
    """The top-level names a `train_spectral.py` run writes in --output_dir besides the logging folder and
    checkpoints: the pipeline (`model_index.json`, a folder per component: `mel/` for audio, `vqvae/` for latent
    diffusion; `pipeline.py` for a custom pipeline), the card and `training_args.json`, and `evaluation/` when it
    evaluates.

    Args:
        kind (`PipelineKind`): the run's pipeline kind.
        latent (`bool`): latent diffusion (`--vae_name_or_path`): the pipeline carries its autoencoder.
        evaluates (`bool`): the run evaluates its pipeline (`--eval_num_samples` > 0).
    """
    names = ["model_index.json", "unet", "scheduler"]
    names += ["mel"] if kind.modality == "audio" else []
    names += ["vqvae"] if latent else []
    names += [CUSTOM_PIPELINE_FILE_NAME] if kind.is_custom else []
    names += ["README.md", "training_args.json"]
    return names + (["evaluation"] if evaluates else [])


def check_model_files(
    output_dir: str,
    resume_from_checkpoint: str | None,
    overwrite_output_dir: bool,
    files: Sequence[str] = AUTOENCODER_FILES,
) -> None:
    """Refuse a run (not resuming) into a folder that holds a finished model (`files`, a bare model's files), unless
    `overwrite_output_dir`; even then refuse model files no run of ours wrote. Reads only; call after
    `check_output_dir`."""
    if resume_from_checkpoint and list_checkpoints(output_dir):
        return
    present = [name for name in files if os.path.exists(os.path.join(output_dir, name))]
    if not present:
        return
    if not overwrite_output_dir:
        raise ValueError(
            f"--output_dir {output_dir!r} already holds a model ({', '.join(present)}). Pass "
            "--overwrite_output_dir to replace a previous run's model, or pick another --output_dir (to fine-tune "
            "it, pass it as --pretrained_model_name_or_path with another --output_dir)."
        )
    ours = read_outputs(output_dir) or []
    foreign = [name for name in present if name not in ours]
    if foreign:
        raise ValueError(
            f"--output_dir {output_dir!r} holds {', '.join(foreign)}, which no training run wrote there; "
            "--overwrite_output_dir replaces only a previous run's files. Move them or pick another --output_dir."
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
        doomed += [path for _, path in list_checkpoints(output_dir)]
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
    if name in managed or CHECKPOINT_PATTERN.match(name) or name.startswith(TEMPORARY_PREFIXES):
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
