"""The Hub metadata of a model card (tags, `base_model`, `datasets`, the `model-index`) and what may be published:
Hub ids, credential keys, local paths as a model folder shows them."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping

from ..kinds import kind_of
from ..metrics.results import EvaluationResult
from .tables import AUDIO_METRIC_ROWS, AUDIO_TASK, BASE_TAGS, IMAGE_TASK, METRIC_ROWS, SECRET_KEY_PARTS

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def is_hub_id(name: str | None) -> bool:
    """`True` for a Hub repo id (`"user/name"` or a legacy `"name"`) that is not an existing local path."""
    return bool(name) and _HUB_ID.match(name) is not None and not os.path.exists(name) and ".." not in name


def is_secret_key(key: str) -> bool:
    """`True` for configuration keys that may hold a credential (`hub_token`, ...); these are never written."""
    lowered = key.lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


# a home folder at the start of a path: /home/<user>, /Users/<user>, /root, C:\Users\<user>
_HOME_FOLDER = re.compile(r"^(?:/home/[^/]+|/Users/[^/]+|/root|[A-Za-z]:[\\/]Users[\\/][^\\/]+)(?=$|[\\/])")


def publishable_path(value, output_dir: str | os.PathLike | None = None):
    r"""
    A local path as the files a model folder publishes show it (card, `training_args.json`, `metrics.json`): inside
    `output_dir` relative to it (`"."`, `"./unet.json"`), else with the home folder written `~` (`"~/data/imgs"`,
    also for another user's `/home/<user>` or `/Users/<user>`), so that no local folder name above the model's own
    is published. Relative paths, Hub ids and other values are returned as they are.

    Args:
        value: a configuration value; only strings that are absolute paths (or start with `~`) change.
        output_dir (`str` or `os.PathLike`, *optional*, defaults to `None`): the model folder.
    """
    if not isinstance(value, str) or not value:
        return value
    path = os.path.expanduser(value) if value.startswith("~") else value
    if not (os.path.isabs(path) or _HOME_FOLDER.match(path)):
        return value
    if output_dir is not None:
        folder, absolute = os.path.abspath(os.fspath(output_dir)), os.path.abspath(path)
        if absolute == folder or absolute.startswith(folder.rstrip(os.sep) + os.sep):
            relative = os.path.relpath(absolute, folder).replace(os.sep, "/")
            return "." if relative == "." else f"./{relative}"  # "./": never read as a Hub repo id
    home = os.path.expanduser("~").rstrip(os.sep)
    if home and (path == home or path.startswith(home + os.sep)):
        return "~" + path[len(home) :].replace(os.sep, "/")
    return _HOME_FOLDER.sub("~", path)


def redact_config(config: Mapping, output_dir: str | os.PathLike | None = None) -> dict:
    """The configuration without credential keys (at any depth), with values made JSON-friendly (paths and other
    objects as strings, tuples as lists) and local paths as [`publishable_path`] writes them (relative to
    `output_dir` inside it, the home folder as `~`)."""
    clean = {}
    for key, value in config.items():
        if is_secret_key(str(key)):
            continue
        if isinstance(value, Mapping):
            value = redact_config(value, output_dir)
        elif isinstance(value, (list, tuple)):
            value = [v if v is None or isinstance(v, (bool, int, float, str)) else str(v) for v in value]
            value = [publishable_path(v, output_dir) for v in value]
        elif not (value is None or isinstance(value, (bool, int, float, str))):
            value = str(value)
        clean[str(key)] = publishable_path(value, output_dir)
    return clean


def is_finite_number(value) -> bool:
    """`True` for an `int` or `float` (not a `bool`) that is finite: a metric the card shows with its value."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def modality_of(pipeline_class: str | list) -> str:
    """The modality of a saved pipeline class's formulation (`"audio"` for `AudioDiffusionPipeline`), else
    `"image"`."""
    entry = kind_of(pipeline_class)
    return entry.modality if entry is not None else "image"


def uses_spectrum_matching(config: Mapping) -> bool:
    """`True` when the training configuration turned on spectrum matching (ESM / DSM, arXiv 2603.14645)."""
    return any(
        ("spectrum_matching" in key or key in ("esm", "dsm", "esm_weight", "dsm_weight")) and bool(value)
        for key, value in config.items()
    )


def card_tags(config: Mapping, pipeline_class: str) -> list[str]:
    """The card's tags: library, project, task, one `spectral-loss-<name>` per loss, the formulation's tags
    (`edm`, `sagd`, `audio`, ...)."""
    entry = kind_of(pipeline_class)
    tags = list(BASE_TAGS)
    if modality_of(pipeline_class) != "audio":
        tags.append(IMAGE_TASK)
    for name in config.get("spectral_loss") or []:
        tags.append("spectral-loss-" + str(name).replace("_", "-"))
    tags += list(entry.tags) if entry is not None else []
    if uses_spectrum_matching(config):
        tags.append("spectrum-matching")
    return list(dict.fromkeys(tags))


def _dataset_of(
    metrics: EvaluationResult | None, dataset_name: str | None, config: Mapping, audio: bool = False
) -> tuple[str, str]:
    """(`dataset_type`, `dataset_name`) for the model-index."""
    recorded = metrics.dataset if metrics is not None else None
    if isinstance(recorded, Mapping) and recorded.get("type"):
        return str(recorded["type"]), str(recorded.get("name") or recorded["type"])
    if dataset_name:
        return dataset_name, dataset_name
    kind = "audio" if audio else "image"
    if config.get("train_data_dir"):
        return f"{kind}folder", f"{kind} folder {os.path.basename(os.path.normpath(str(config['train_data_dir'])))}"
    if audio:
        return "synthetic_audio", "built-in synthetic audio"
    builtin = config.get("builtin_dataset") or "checkerboards"
    return builtin, f"built-in {builtin}"


def eval_results(metrics: EvaluationResult | Mapping, task_type: str, dataset_type: str, dataset_name: str) -> list:
    r"""
    The finite metrics of an evaluation as `huggingface_hub.EvalResult`s (the card's `model-index`).

    Args:
        metrics (`EvaluationResult` or `Mapping`): one pipeline's result of `evaluate_pipeline` (or its
            `metrics.json` dict).
        task_type (`str`): the Hub task, e.g. `"unconditional-image-generation"`.
        dataset_type (`str`): Hub dataset id or a short name (`"imagefolder"`, `"checkerboards"`).
        dataset_name (`str`): display name of the dataset.

    Returns:
        `list[EvalResult]`: one per metric of `METRIC_ROWS` and `AUDIO_METRIC_ROWS` present with a finite value.
    """
    from huggingface_hub import EvalResult

    metrics = EvaluationResult.from_dict(metrics)
    results = []
    for value_of, metric_type, metric_name, _ in METRIC_ROWS + AUDIO_METRIC_ROWS:
        value = value_of(metrics)
        if is_finite_number(value):
            results.append(
                EvalResult(
                    task_type=task_type,
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_value=float(value),
                )
            )
    return results


def model_card_data(
    *,
    config: Mapping,
    metrics: EvaluationResult | None,
    base_model: str | None,
    dataset_name: str | None,
    pipeline_class: str,
    model_name: str,
    license: str | None = None,
):
    """The `huggingface_hub.ModelCardData` of a card (see `write_model_card`)."""
    from huggingface_hub import ModelCardData

    audio = modality_of(pipeline_class) == "audio"
    task = AUDIO_TASK if audio else IMAGE_TASK
    results = None
    if metrics:
        dataset_type, dataset_display = _dataset_of(metrics, dataset_name, config, audio)
        results = eval_results(metrics, task, dataset_type, dataset_display) or None
    return ModelCardData(
        library_name="diffusers",
        pipeline_tag=task,
        tags=card_tags(config, pipeline_class),
        base_model=base_model if is_hub_id(base_model) else None,
        datasets=[dataset_name] if is_hub_id(dataset_name) else None,
        license=license,
        model_name=model_name if results else None,
        eval_results=results,
    )
