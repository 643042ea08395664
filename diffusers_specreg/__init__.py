"""diffusers-specreg: frequency-aware diffusion training for Hugging Face Diffusers.

Implements spectral regularization of the diffusion loss (arXiv 2603.02447), spectrally anisotropic forward noise
(arXiv 2510.09660) and spectral metrics, as small building blocks that plug into any Diffusers training loop.
"""

__version__ = "0.1.0"
