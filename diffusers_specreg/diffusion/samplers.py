"""What an objective saves and how it samples: `PipelineSpec`, and the evaluation samplers built on a pipeline.

Each objective class holds a `PipelineSpec` (`DDPMObjective.pipeline`, `EDMObjective.pipeline`): the class of the
pipeline saved with the model, how to build it, its fast sampler for logged samples, its evaluation sampler, the file
of `pipelines/` it needs (if Diffusers does not ship the class), and what its model card says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

Sampler = Callable[[list[torch.Generator]], np.ndarray]


@dataclass(frozen=True)
class PipelineSpec:
    r"""
    The pipeline an objective saves, and how it samples.

    Args:
        pipeline_class (`str`): class of the saved pipeline (`model_index.json` `_class_name`).
        build_pipeline (`Callable`): `(unet, scheduler, spectrum=None, mel=None, vae=None) -> DiffusionPipeline`.
        fast_pipeline (`Callable`): `(saved pipeline) -> DiffusionPipeline` that samples quickly (DDIM where the
            saved one is ancestral), for logged samples.
        sampler (`Callable`, *optional*): `(pipeline, steps) -> (sample(generators), description)` for evaluation;
            `None` calls the pipeline itself (`default_sampler`).
        pipeline_file (`str`, *optional*): the file of `pipelines/` that defines `pipeline_class`; `None` for classes
            Diffusers ships.
        sample_steps (`int`, defaults to `50`): steps of the card's custom-pipeline snippet.
        tags (`tuple[str, ...]`): extra model-card tags.
        citations (`tuple[str, ...]`): arXiv ids cited by the model card (keys of `model_card.CITATIONS`).
        aliases (`tuple[str, ...]`): other saved classes that belong to this pipeline (e.g. `DDIMPipeline`).
    """

    pipeline_class: str
    build_pipeline: Callable[..., Any]
    fast_pipeline: Callable[[Any], Any]
    sampler: Callable[[Any, int], tuple[Sampler, str]] | None = field(default=None, repr=False)
    pipeline_file: str | None = None
    sample_steps: int = 50
    tags: tuple[str, ...] = ()
    citations: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


def ddim_of(scheduler):
    """A `DDIMScheduler` with the config of `scheduler` (the fast sampler of a DDPM-trained model)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(scheduler.config)


def same_pipeline(pipeline):
    """The fast pipeline of a kind whose saved pipeline is already fast: the pipeline itself."""
    return pipeline


def call_sampler(pipeline, num_inference_steps: int, quantise: bool = False, **call) -> Sampler:
    """`sample(generators)` calling `pipeline` with one generator per image (progress bar off).

    Args:
        pipeline (`DiffusionPipeline`): called with `batch_size`, `generator`, `num_inference_steps`, `output_type="np"`.
        num_inference_steps (`int`): sampling steps.
        quantise (`bool`, defaults to `False`): round the images to uint8 levels (as an audio pipeline does).
        **call: further arguments of the pipeline call (e.g. `eta=0.0`).

    Returns:
        `Callable`: `sample(generators) -> np.ndarray` of shape `[len(generators), H, W, C]` in `[0, 1]`.
    """
    pipeline.set_progress_bar_config(disable=True)

    def sample(generators: list[torch.Generator]) -> np.ndarray:
        images = pipeline(
            batch_size=len(generators),
            generator=generators,
            num_inference_steps=num_inference_steps,
            output_type="np",
            **call,
        ).images
        return np.round(images * 255.0) / 255.0 if quantise else images

    return sample


def default_sampler(pipeline, steps: int) -> tuple[Sampler, str]:
    """Call the pipeline itself with `num_inference_steps` (its progress-bar setting is restored after each call)."""

    def sample(generators: list[torch.Generator]) -> np.ndarray:
        previous = dict(getattr(pipeline, "_progress_bar_config", {}))
        try:
            return call_sampler(pipeline, steps)(generators)
        finally:
            pipeline._progress_bar_config = previous

    return sample, f"{type(pipeline).__name__}, {steps} steps"
