"""Sampling pipelines, one self-contained file each (installed as `diffusers_specreg.pipelines`).

Each file also works copied alone into a saved model folder or Hub repo as `pipeline.py`, see
`diffusers_specreg.pipelines_io.write_custom_pipeline_file`.
"""

from .pipeline_edm import EDMPipeline
from .pipeline_sagd import SAGDPipeline, ddpm_step_with_noise

__all__ = ["EDMPipeline", "SAGDPipeline", "ddpm_step_with_noise"]
