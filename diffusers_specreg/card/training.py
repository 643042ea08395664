"""The model card at the end of a `train_spectral.py` run: a quick evaluation of the saved pipeline, then the card.

This module imports the evaluation (which itself imports `diffusers_specreg.card`), so `card/__init__.py` does not
import it: `from diffusers_specreg.card.training import evaluate_and_write_card`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..evaluate import evaluate_pipeline, load_pipeline
from ..metrics.results import EvaluationResult
from ..train.signals import InterruptFlag, stop_on_interrupt
from .write import write_model_card

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CardEvaluation:
    r"""
    The quick evaluation whose metrics go into the card (`--eval_*` of `train_spectral.py`).

    Args:
        num_samples (`int`): samples to draw and data images to compare them with; `0` writes the card without
            metrics.
        batch_size (`int`): samples per pipeline call.
        num_inference_steps (`int`): denoising steps.
        seed (`int`, defaults to `0`): the evaluation's seed.
        sampler (`"fast"` or `"pipeline"`, defaults to `"fast"`): see `evaluate.make_sampler`.
        dataset (`Mapping`, *optional*, defaults to `None`): `{"type", "name"}` of the training data
            (`evaluate.dataset_info`), for the model-index.
    """

    num_samples: int
    batch_size: int
    num_inference_steps: int
    seed: int = 0
    sampler: str = "fast"
    dataset: Mapping | None = None


def card_evaluation_problem(num_samples: int, num_images: int) -> str | None:
    """Why the card's quick evaluation of `num_samples` samples cannot run on `num_images` training images (warned
    before training, then skipped), or `None`."""
    if num_samples > 0 and num_images < 2:
        return (
            f"The data holds {num_images} training image: the model card's spectral metrics compare samples "
            "with at least 2 data images, so this run skips them and writes the card without metrics. Add images "
            "to get them (or pass --eval_num_samples 0 to silence this)."
        )
    return None


def evaluate_and_write_card(
    output_dir: str,
    config: Mapping,
    evaluation: CardEvaluation,
    *,
    dataset: torch.utils.data.Dataset,
    dataset_name: str | None = None,
    device: torch.device | str = "cpu",
    base_model: str | None = None,
    final_spectral_weights: Mapping[str, float] | None = None,
    vae_scaling_factor: float | None = None,
    interrupt: InterruptFlag | None = None,
    log: logging.Logger | logging.LoggerAdapter | None = None,
) -> EvaluationResult | None:
    r"""
    Quick evaluation of the pipeline saved in `output_dir` (metrics, sample grid and spectrum in `evaluation/`), then
    its model card. A SIGINT / SIGTERM (`interrupt`) during the evaluation's sampling raises
    `training.TrainingInterrupted` within one step.

    Args:
        output_dir (`str`): the saved pipeline folder.
        config (`Mapping`): the training configuration the card records (the script's arguments with the values it
            derived).
        evaluation (`CardEvaluation`): the quick evaluation's settings.
        dataset (`torch.utils.data.Dataset`): the training data, the reference of the metrics.
        dataset_name (`str`, *optional*, defaults to `None`): the Hub dataset id, for the card's `datasets` metadata.
        device (`torch.device` or `str`, defaults to `"cpu"`): where the pipeline samples.
        base_model (`str`, *optional*, defaults to `None`): the model fine-tuned from.
        final_spectral_weights (`Mapping`, *optional*, defaults to `None`): `{loss name: λ}` the run ended with.
        vae_scaling_factor (`float`, *optional*, defaults to `None`): a latent model's autoencoder scaling factor.
        interrupt (`InterruptFlag`, *optional*, defaults to `None`): the run's SIGINT / SIGTERM flag.
        log (`logging.Logger` or `logging.LoggerAdapter`, *optional*, defaults to `None`): where the metrics line
            goes (the script's logger keeps the run's log lines as they were); `None` uses this module's.

    Returns:
        `EvaluationResult` or `None`: the metrics, `None` when the card has none.
    """
    metrics, grid, plot = None, None, None
    if evaluation.num_samples > 0 and card_evaluation_problem(evaluation.num_samples, len(dataset)) is None:
        pipeline = load_pipeline(output_dir, device=device)
        pipeline.set_progress_bar_config(disable=True)
        with stop_on_interrupt(interrupt, pipeline.unet):
            metrics = evaluate_pipeline(
                pipeline,
                dataset,
                evaluation.num_samples,
                evaluation.batch_size,
                evaluation.num_inference_steps,
                evaluation.seed,
                os.path.join(output_dir, "evaluation"),
                name=os.path.basename(os.path.abspath(output_dir)),
                dataset=evaluation.dataset,
                sampler=evaluation.sampler,
            )
        grid, plot = "evaluation/samples.png", "evaluation/rapsd.png"
        (log or logger).info(f"Spectral metrics of {evaluation.num_samples} samples: {metrics.log_rapsd_distance}")
    config = dict(config)
    config["final_spectral_weights"] = final_spectral_weights
    if vae_scaling_factor is not None:
        config["vae_scaling_factor"] = vae_scaling_factor
    with open(os.path.join(output_dir, "model_index.json")) as f:
        pipeline_class = json.load(f)["_class_name"]
    write_model_card(
        output_dir,
        config=config,
        metrics=metrics,
        base_model=base_model,
        dataset_name=dataset_name,
        pipeline_class=pipeline_class,
        sample_grid=grid,
        spectrum_plot=plot,
    )
    return metrics
