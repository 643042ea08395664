"""diffusers-specreg: frequency-aware diffusion training for Hugging Face Diffusers.

Implements spectral regularization of the diffusion loss (arXiv 2603.02447), spectrally anisotropic forward noise
(arXiv 2510.09660) and spectral metrics, as small building blocks that plug into any Diffusers training loop:

    from diffusers_specreg import SpectralRegularizer

    regularizer = SpectralRegularizer.from_names(["amplitude_phase"])  # default λ and ᾱ_t weighting
    terms = regularizer(noise_scheduler, model_output, noisy_images, timesteps, clean_images, base_loss)
    terms["loss"].mean().backward()
"""

from .diffusion.schedulers import low_noise_gate, predict_original_sample, timestep_weight
from .flow_regularizer import FlowSpectralRegularizer
from .losses import FourierLoss, MultiResolutionSTFTLoss, STFTLoss, WaveletLoss, build_loss
from .noise import NoiseSpectrum, corrupt_band
from .parametrisation import predict_x0
from .regularizer import SpectralRegularizer

__version__ = "0.1.0"

__all__ = [
    "FlowSpectralRegularizer",
    "FourierLoss",
    "MultiResolutionSTFTLoss",
    "NoiseSpectrum",
    "STFTLoss",
    "SpectralRegularizer",
    "WaveletLoss",
    "build_loss",
    "corrupt_band",
    "low_noise_gate",
    "predict_original_sample",
    "predict_x0",
    "timestep_weight",
]
