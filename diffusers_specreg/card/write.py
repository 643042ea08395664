"""Writing model cards: `write_model_card` fills `model_cards/template.md` with the metadata of `card.metadata` and the
sections of `card.sections`; `update_model_card` rewrites a card with new metrics. A card never replaces files that no
training run wrote ([`foreign_card_files`])."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import posixpath
import string
from collections.abc import Mapping, Sequence

from ..kinds import class_name, read_card_file, render_usage
from ..metrics.results import EvaluationResult
from .metadata import is_hub_id, model_card_data, publishable_path, redact_config
from .sections import (
    audio_files,
    render_audio,
    render_citations,
    render_config_table,
    render_evaluation,
    render_samples,
    render_summary,
    render_training,
)
from .tables import CARD_UPDATE_FILES, TEMPLATE_NAME, TRAINING_ARGS_FILE

logger = logging.getLogger(__name__)


def load_template(template_path: str | os.PathLike | None = None) -> string.Template:
    """The card template: `template_path`, else `model_cards/template.md` (installed or in the checkout)."""
    if template_path is not None:
        with open(template_path, encoding="utf-8") as f:
            return string.Template(f.read())
    return string.Template(read_card_file(TEMPLATE_NAME))


def write_model_card(
    output_dir: str | os.PathLike,
    *,
    config: Mapping,
    metrics: EvaluationResult | Mapping | None = None,
    base_model: str | None = None,
    dataset_name: str | None = None,
    pipeline_class: str = "DDPMPipeline",
    sample_grid: str | None = None,
    spectrum_plot: str | None = None,
    usage: str | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    template_path: str | os.PathLike | None = None,
    evaluation_dir: str | None = None,
    write_training_args: bool = True,
) -> str:
    r"""
    Write `output_dir/README.md` (Hub metadata + body) and `output_dir/training_args.json` (the redacted config).
    Both show local paths (of the configuration, `base_model`, `dataset_name`, the metrics' data set) relative to
    `output_dir` when inside it and with the home folder as `~` otherwise ([`publishable_path`]).

    Args:
        output_dir (`str` or `os.PathLike`): the saved pipeline folder (created if missing).
        config (`Mapping`): the full training arguments (`vars(args)`); keys containing "token", "password",
            "secret", "api_key" or "credential" are dropped. Optional extra key `final_spectral_weights`
            (`{loss name: λ}`) shows the λ reached with `--spectral_weight auto`.
        metrics (`EvaluationResult` or `Mapping`, *optional*, defaults to `None`): one pipeline's result of
            `evaluate_pipeline` (or its `metrics.json` dict).
        base_model (`str`, *optional*, defaults to `None`): the model fine-tuned from; `None` uses
            `config["pretrained_model_name_or_path"]`. Only Hub ids go into the metadata.
        dataset_name (`str`, *optional*, defaults to `None`): the training dataset; `None` uses
            `config["dataset_name"]`. Only Hub ids go into the `datasets` metadata.
        pipeline_class (`str` or `list`, defaults to `"DDPMPipeline"`): the saved pipeline class, e.g.
            `"EDMPipeline"`, `["pipeline", "SAGDPipeline"]` (a `model_index.json` `_class_name`),
            `"AudioDiffusionPipeline"`; its pipeline kind (`diffusers_specreg.kinds`) gives the usage snippet,
            tags and citations.
        sample_grid (`str`, *optional*, defaults to `None`): path of a sample grid image, relative to `output_dir`.
        spectrum_plot (`str`, *optional*, defaults to `None`): path of a RAPSD plot, relative to `output_dir`.
        usage (`str`, *optional*, defaults to `None`): markdown replacing the generated usage snippet.
        repo_id (`str`, *optional*, defaults to `None`): the id the snippets load; `None` uses
            `config["hub_model_id"]`, else the folder name.
        license (`str`, *optional*, defaults to `None`): a Hub license id for the metadata.
        template_path (`str` or `os.PathLike`, *optional*, defaults to `None`): another `string.Template` file with
            the placeholders of `model_cards/template.md`.
        evaluation_dir (`str`, *optional*, defaults to `None`): the folder, relative to `output_dir`, of the
            evaluation's `metrics.json`; the audio files named in `metrics.audio` (spectrogram figure, WAVs) are
            relative to it. `None` takes the folder of `sample_grid` (`"evaluation"` for `"evaluation/samples.png"`).
        write_training_args (`bool`, defaults to `True`): also write `training_args.json`.

    Returns:
        `str`: the path of the written `README.md`.
    """
    from huggingface_hub import ModelCard

    output_dir = os.fspath(output_dir)
    pipeline_class = class_name(pipeline_class)
    evaluation_dir = _evaluation_dir(sample_grid, spectrum_plot, evaluation_dir)
    config = redact_config(dict(config), output_dir)
    metrics, base_model, dataset_name = _published_sources(metrics, base_model, dataset_name, config, output_dir)
    if repo_id is None:
        repo_id = config.get("hub_model_id") or os.path.basename(os.path.normpath(os.path.abspath(output_dir)))
    template = load_template(template_path)
    fields = _card_fields(
        config,
        metrics,
        base_model=base_model,
        dataset_name=dataset_name,
        pipeline_class=pipeline_class,
        repo_id=repo_id,
        license=license,
        output_dir=output_dir,
        evaluation_dir=evaluation_dir,
        sample_grid=sample_grid,
        spectrum_plot=spectrum_plot,
        usage=usage,
    )
    card = ModelCard(template.substitute(**fields))  # parses and checks the YAML metadata
    return _save_card(card, config, output_dir, write_training_args)


def _evaluation_dir(sample_grid: str | None, spectrum_plot: str | None, evaluation_dir: str | None) -> str:
    """The folder of the evaluation files (`None`: the sample grid's, else `""`), after checking that each of the
    three is a path relative to the model folder (`ValueError` for an absolute one or one that leaves it)."""
    if evaluation_dir is None:
        evaluation_dir = posixpath.dirname(sample_grid.replace("\\", "/")) if sample_grid else ""
    for name, value in (
        ("sample_grid", sample_grid),
        ("spectrum_plot", spectrum_plot),
        ("evaluation_dir", evaluation_dir or None),
    ):
        if value is not None and (os.path.isabs(value) or value.startswith("..")):
            raise ValueError(f"`{name}` must be a path relative to output_dir (a Hub repo file), got {value!r}.")
    return evaluation_dir


def _save_card(card, config: dict, output_dir: str, write_training_args: bool) -> str:
    """Save `README.md` (and `training_args.json`, the redacted `config`) in `output_dir`, created if missing."""
    os.makedirs(output_dir, exist_ok=True)
    if write_training_args:
        with open(os.path.join(output_dir, TRAINING_ARGS_FILE), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True, default=str)
    path = os.path.join(output_dir, "README.md")
    card.save(path)
    return path


def _published_sources(
    metrics: EvaluationResult | Mapping | None,
    base_model: str | None,
    dataset_name: str | None,
    config: Mapping,
    output_dir: str,
) -> tuple[EvaluationResult | None, str | None, str | None]:
    """The metrics, base model and dataset as the card shows them: local paths as [`publishable_path`] writes them, a
    Hub id as it is (it is looked up as a path first); `None` takes the (redacted) configuration's."""
    metrics = EvaluationResult.from_dict(metrics) if metrics else None
    if metrics is not None and isinstance(metrics.dataset, Mapping):
        metrics = dataclasses.replace(metrics, dataset=redact_config(metrics.dataset, output_dir))
    if base_model is None:
        base_model = config.get("pretrained_model_name_or_path") or None
    elif not is_hub_id(base_model):
        base_model = publishable_path(base_model, output_dir)
    if dataset_name is None:
        dataset_name = config.get("dataset_name") or None
    elif not is_hub_id(dataset_name):
        dataset_name = publishable_path(dataset_name, output_dir)
    return metrics, base_model, dataset_name


def _card_fields(
    config: Mapping,
    metrics: EvaluationResult | None,
    *,
    base_model: str | None,
    dataset_name: str | None,
    pipeline_class: str,
    repo_id: str,
    license: str | None,
    output_dir: str,
    evaluation_dir: str,
    sample_grid: str | None,
    spectrum_plot: str | None,
    usage: str | None,
) -> dict[str, str]:
    """The template's placeholders (see `write_model_card`), each a rendered section."""
    num_steps = config.get("ddpm_num_inference_steps")
    train_steps = config.get("ddpm_num_steps")
    data = model_card_data(
        config=config,
        metrics=metrics,
        base_model=base_model,
        dataset_name=dataset_name,
        pipeline_class=pipeline_class,
        model_name=repo_id.split("/")[-1],
        license=license,
    )
    return dict(
        metadata=data.to_yaml(),
        title=repo_id.split("/")[-1],
        summary=render_summary(config, base_model, dataset_name, pipeline_class),
        samples=render_samples(sample_grid, spectrum_plot, metrics.sampler if metrics else None),
        audio=render_audio(audio_files(metrics, output_dir, evaluation_dir)),
        usage=usage if usage is not None else render_usage(pipeline_class, repo_id, num_steps, train_steps),
        training=render_training(config),
        config_table=render_config_table(config),
        evaluation=render_evaluation(metrics, repo_id, pipeline_class, config),
        citations=render_citations(config, metrics, pipeline_class),
    )


def update_model_card(
    output_dir: str | os.PathLike,
    metrics: EvaluationResult | Mapping,
    *,
    sample_grid: str | None = None,
    spectrum_plot: str | None = None,
    evaluation_dir: str | None = None,
) -> str:
    r"""
    Rewrite `output_dir/README.md` with new metrics (and images), keeping what the previous card recorded.

    The training configuration comes from `output_dir/training_args.json` (written by `write_model_card`),
    `base_model` and `datasets` from the existing card's metadata, the pipeline class from `model_index.json`. A
    `README.md`, `training_args.json` or `evaluation/` that no training run wrote (see [`foreign_card_files`]) is
    never replaced: `ValueError`, and nothing is written. A folder without `training_args.json` does not get one.

    Args:
        output_dir (`str` or `os.PathLike`): the saved pipeline folder.
        metrics (`EvaluationResult` or `Mapping`): one pipeline's result of `evaluate_pipeline`.
        sample_grid (`str`, *optional*, defaults to `None`): sample grid path relative to `output_dir`.
        spectrum_plot (`str`, *optional*, defaults to `None`): RAPSD plot path relative to `output_dir`.
        evaluation_dir (`str`, *optional*, defaults to `None`): folder of the evaluation files named in
            `metrics.audio`, relative to `output_dir` (see `write_model_card`).

    Returns:
        `str`: the path of the rewritten `README.md`.
    """
    from huggingface_hub import ModelCard

    output_dir = os.fspath(output_dir)
    error = card_update_error(output_dir)
    if error is not None:
        raise ValueError(error)
    config: dict = {}
    args_path = os.path.join(output_dir, TRAINING_ARGS_FILE)
    if os.path.isfile(args_path):
        with open(args_path, encoding="utf-8") as f:
            config = json.load(f)
    else:
        logger.warning(
            "%s has no %s; the card will not list the training configuration.", output_dir, TRAINING_ARGS_FILE
        )
    base_model = dataset_name = None
    readme = os.path.join(output_dir, "README.md")
    if os.path.isfile(readme):
        previous = ModelCard.load(readme).data
        base_model = previous.base_model if isinstance(previous.base_model, str) else None
        datasets = previous.datasets
        dataset_name = (
            datasets[0] if isinstance(datasets, Sequence) and datasets and not isinstance(datasets, str) else datasets
        )
    pipeline_class = "DDPMPipeline"
    index = os.path.join(output_dir, "model_index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            pipeline_class = json.load(f).get("_class_name", pipeline_class)
    return write_model_card(
        output_dir,
        config=config,
        metrics=metrics,
        base_model=base_model,
        dataset_name=dataset_name,
        pipeline_class=pipeline_class,
        sample_grid=sample_grid,
        spectrum_plot=spectrum_plot,
        evaluation_dir=evaluation_dir,
        write_training_args=os.path.isfile(args_path),
    )


def foreign_card_files(output_dir: str | os.PathLike) -> list[str]:
    r"""
    The files of a model folder that a card update would replace but no training run wrote there: `README.md`,
    `training_args.json` and `evaluation/`, unless the run's record (`.train_spectral_outputs.json`) lists them or,
    for folders of older versions, they are ours by their content (a card tagged `diffusers-specreg`, training
    arguments with `spectral_loss` and `formulation`); `diffusers_specreg.run_settings` decides, as for a training
    run into the folder.

    Args:
        output_dir (`str` or `os.PathLike`): the model folder.

    Returns:
        `list[str]`: the names, in the order above; empty when the update may go ahead.
    """
    from ..train.output_dir import previous_outputs

    output_dir = os.fspath(output_dir)
    ours = set(previous_outputs(output_dir, None))
    return [n for n in CARD_UPDATE_FILES if os.path.exists(os.path.join(output_dir, n)) and n not in ours]


def card_update_error(output_dir: str | os.PathLike) -> str | None:
    """Why the model card of `output_dir` may not be updated (files no run wrote, [`foreign_card_files`]), or `None`."""
    foreign = foreign_card_files(output_dir)
    if not foreign:
        return None
    return (
        f"{os.fspath(output_dir)} holds {', '.join(foreign)}, which no training run wrote; updating its model card "
        "(--update_model_card) would replace it. Move it elsewhere, or evaluate without --update_model_card (the "
        "results stay in --output_dir)."
    )
