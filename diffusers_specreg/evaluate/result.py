"""The typed result of evaluating one pipeline; moved to `diffusers_specreg.metrics.results` (kept for old imports)."""

from ..metrics.results import (
    AUDIO_FILES,
    BANDS,
    AudioScores,
    BandDistances,
    EvaluationResult,
    PipelineResult,
    SpectralSlopes,
    library_versions,
)

__all__ = [
    "AUDIO_FILES",
    "BANDS",
    "AudioScores",
    "BandDistances",
    "EvaluationResult",
    "PipelineResult",
    "SpectralSlopes",
    "library_versions",
]
