"""The numerical kernels that the library shares with the self-contained SAGD pipeline file.

`pipelines/pipeline_sagd.py` is copied beside the weights of every saved SAGD folder and must load with Diffusers
alone, so the kernels that its sampler and the training code must agree on are written there once, and the library
imports them from there, through this module only:

- `predicted_original_sample(sample, model_output, alpha_prod_t, prediction_type)`: x̂₀ from ε̂, v̂ or x̂₀ on the
  VP path (Eq. 15 of arXiv 2006.11239), used by `diffusion.ddpm.vp_x0_hat`;
- `radial_frequency_grid(shape)`: the normalised radial frequency of every DFT bin, used by `transforms`;
- `ColouredNoise`, `band_profile`, `spectrum_weights`: the coloured forward noise of arXiv 2510.09660 and its
  spectral profiles, used by `noise`.

Training and sampling then use the same operations by construction. Importing these names from here, rather than
from the pipeline file, keeps the one dependency of the library on `pipelines/` in a single, documented place; the
pipeline file itself is never edited for the library's sake (a saved folder trusts only a byte-identical copy).
"""

from diffusers_specreg.pipelines.pipeline_sagd import (
    ColouredNoise,
    band_profile,
    predicted_original_sample,
    radial_frequency_grid,
    spectrum_weights,
)

__all__ = ["ColouredNoise", "band_profile", "predicted_original_sample", "radial_frequency_grid", "spectrum_weights"]
