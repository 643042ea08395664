"""Sampling pipelines, one self-contained file each (installed as `diffusers_specreg.pipelines`).

Each file imports only `torch` and `diffusers`, and is copied into a saved model folder or Hub repo as `pipeline.py`
(see `diffusers_specreg.pipelines_io.save_pipeline`), so `DiffusionPipeline.from_pretrained(folder,
trust_remote_code=True)` loads it without this package.
"""

from .pipeline_edm import EDMPipeline
from .pipeline_flow import FlowMatchPipeline
from .pipeline_sagd import ColouredNoise, SAGDPipeline, ddpm_step_with_noise, spectrum_weights

__all__ = [
    "ColouredNoise",
    "EDMPipeline",
    "FlowMatchPipeline",
    "SAGDPipeline",
    "ddpm_step_with_noise",
    "spectrum_weights",
]
