"""The typed result of evaluating one pipeline."""

from __future__ import annotations

import platform
from dataclasses import dataclass

import numpy as np
import torch

from .. import __version__
from ..metrics import (
    PowerSpectrum,
)

BANDS = ("all", "low", "mid", "high")
# WAV files written per pipeline (and of the data), and mel images per row of the spectrogram figure.
AUDIO_FILES = 4


def library_versions() -> dict[str, str]:
    """Versions of the packages the numbers depend on."""
    import diffusers
    import huggingface_hub

    return {
        "diffusers_specreg": __version__,
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "huggingface_hub": huggingface_hub.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


@dataclass
class PipelineResult:
    """What evaluating one pipeline gives: the JSON metrics, the sample spectrum and the first samples (grid); for
    audio also the first generated clips (float32 `[N, T]`, for WAV files) and their mel images (uint8 `[N, H, W]`)."""

    name: str
    metrics: dict
    spectrum: PowerSpectrum
    grid: torch.Tensor
    audio: np.ndarray | None = None
    mel_images: np.ndarray | None = None
