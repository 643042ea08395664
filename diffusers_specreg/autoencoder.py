"""Stage 1 of latent diffusion with Spectrum Matching (arXiv 2603.14645): the autoencoder, its loss and measurements.

Used by `train_autoencoder.py`; importable on its own:

    from diffusers_specreg.autoencoder import AutoencoderLoss, evaluate_autoencoder

    loss_fn = AutoencoderLoss(regularizers=("esm",))
    terms = loss_fn(vae, images, generator)          # dict of per-sample terms, terms["loss"] is [B]
    evaluate_autoencoder(vae, held_out_images)       # {"psnr": ..., "latent_slope": ..., "image_slope": ...}

The autoencoder is Diffusers' `AutoencoderKL` (the SD-VAE architecture the authors use). The base loss is theirs
without the GAN: L1 reconstruction plus, optionally, LPIPS (VGG) with weight 0.5; their PatchGAN only starts late in
training (step 50k of 500k) and is not built here.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .pipelines_io import save_model
from .spectrum_matching import DSM_BLOCK, DSM_KS, DSMSampler, EncodingSpectrumMatching, apply_dsm, radial_dct_spectrum

LATENT_REGULARIZERS = ("kl", "esm", "dsm")
AUTOENCODER_PRESETS = ("tiny", "sd")
DEFAULT_KL_WEIGHT = 1e-6  # SD-VAE (the authors' config comment: "set 0.000001 for SDVAE")
DEFAULT_ESM_WEIGHT = 0.01  # the authors' ESM-AE setting (configs/train_vae_celeba256.yaml, SDVAE_and_ESM branch)
DEFAULT_LPIPS_WEIGHT = 0.5  # the authors' lpips_weight


# ---------------------------------------------------------------------------------------------------------------
# Model configs
# ---------------------------------------------------------------------------------------------------------------


def autoencoder_config(preset: str, channels: int, resolution: int) -> dict:
    r"""
    `AutoencoderKL` keyword arguments for a new autoencoder.

    Args:
        preset (`str`): `"tiny"` (3 blocks of 32/64/64 channels, one layer each, 4 latent channels, downsampling 4:
            8x8x4 latents at 32x32; trains on a CPU in minutes) or `"sd"` (the SD-VAE: 128/256/512/512 channels, two
            layers per block, 4 latent channels, downsampling 8).
        channels (`int`): image channels (1 or 3).
        resolution (`int`): training image size (the config's `sample_size`).
    """
    if preset == "tiny":
        blocks, layers, groups = (32, 64, 64), 1, 16
    elif preset == "sd":
        blocks, layers, groups = (128, 256, 512, 512), 2, 32
    else:
        raise ValueError(f"Unknown autoencoder preset {preset!r}; choose from {list(AUTOENCODER_PRESETS)}.")
    return dict(
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks),
        block_out_channels=blocks,
        layers_per_block=layers,
        latent_channels=4,
        norm_num_groups=groups,
        sample_size=resolution,
    )


def downsampling_factor(config: Mapping) -> int:
    """Spatial downsampling of an `AutoencoderKL` config: 2 per down block but the last."""
    return 2 ** (len(config["block_out_channels"]) - 1)


# ---------------------------------------------------------------------------------------------------------------
# LPIPS (VGG), loaded from a local file only
# ---------------------------------------------------------------------------------------------------------------

_VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_LPIPS_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))  # torchvision vgg16.features indices per LPIPS tap


class _LinearHead(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    r"""
    LPIPS perceptual distance with a VGG16 trunk (Zhang et al. 2018, arXiv 1801.03924), the perceptual loss of the
    authors' autoencoder, in plain PyTorch (no torchvision). Weights are never downloaded: `from_file` loads a local
    file holding the state dict of `lpips.LPIPS(net="vgg")` (keys `scaling_layer.*`, `net.slice1.0.weight`, ...,
    `lin0.model.1.weight`, ...), saved with `torch.save` or as safetensors.

    Returns per-sample distances `[B]`; inputs in [-1, 1], 1-channel images are repeated to RGB. The network is
    frozen (`requires_grad=False`) but passes gradients to its inputs.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        layers, channels, widths = [], 3, []
        for item in _VGG16_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU()]
                channels = item
        self.net = nn.Module()
        for number, (start, end) in enumerate(_LPIPS_SLICES, start=1):
            part = nn.Sequential()
            for index in range(start, end):
                part.add_module(str(index), layers[index])
            self.net.add_module(f"slice{number}", part)
            widths.append([m for m in part if isinstance(m, nn.Conv2d)][-1].out_channels)
        self.lins = nn.ModuleList(_LinearHead(width) for width in widths)
        self.requires_grad_(False)
        self.eval()

    def _load_key(self, key: str) -> str:
        if key.startswith("scaling_layer."):
            return key.replace("scaling_layer.", "")
        if key.startswith("lin") and key[3].isdigit():
            return f"lins.{key[3:]}"
        return key

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> LPIPS:
        """Load the weights of `lpips.LPIPS(net="vgg")` from a local `.safetensors`, `.pt` or `.pth` file."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"LPIPS weights not found at {path!r}.")
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        model = cls()
        renamed = {model._load_key(k): v for k, v in state.items()}
        missing, unexpected = model.load_state_dict(renamed, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path!r} is not a full lpips.LPIPS(net='vgg') state dict: missing {missing[:4]}, unexpected "
                f"{unexpected[:4]}. Save `lpips.LPIPS(net='vgg').state_dict()` (VGG trunk and linear heads)."
            )
        return model

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        r"""
        Args:
            prediction (`torch.Tensor`): `[B, C, H, W]` in [-1, 1], `C` 1 or 3.
            target (`torch.Tensor`): same shape.

        Returns:
            `torch.Tensor`: `[B]`.
        """
        if prediction.shape[1] == 1:
            prediction, target = prediction.repeat(1, 3, 1, 1), target.repeat(1, 3, 1, 1)
        a, b = (prediction - self.shift) / self.scale, (target - self.shift) / self.scale
        total = prediction.new_zeros(prediction.shape[0])
        for number, lin in enumerate(self.lins, start=1):
            part = getattr(self.net, f"slice{number}")
            a, b = part(a), part(b)
            na = a / (a.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            nb = b / (b.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + lin.model((na - nb) ** 2).mean(dim=(1, 2, 3))
        return total


# ---------------------------------------------------------------------------------------------------------------
# The training loss
# ---------------------------------------------------------------------------------------------------------------


class AutoencoderLoss(nn.Module):
    r"""
    The autoencoder loss of Spectrum Matching (arXiv 2603.14645) without the GAN: L1 reconstruction, optional
    perceptual loss, and the latent regularisers named in `regularizers`.

    - `"kl"`: the VAE's KL to N(0, I), summed over the latent (the authors' and Diffusers' `kl()`), times
      `kl_weight` (1e-6 as SD-VAE).
    - `"esm"`: Encoding Spectrum Matching on the sampled latent (`EncodingSpectrumMatching`), times `esm_weight`
      (0.01 as the authors' ESM-AE, which uses no KL term).
    - `"dsm"`: Decoding Spectrum Matching: a k drawn per step from `dsm_ks` low-passes the sampled latent and the
      image (`apply_dsm`); the decoder decodes the masked latent and the L1 and perceptual terms compare with the
      masked image. No extra term.

    Each term is per sample `[B]`: `forward` returns `{"l1", "perceptual"?, "kl"?, "esm"?, "loss"}` (unweighted
    terms and the weighted total) and, with DSM, the k of this step (`"dsm_k"`, a 0-d tensor, for logging).

    Args:
        regularizers (`Sequence[str]`, defaults to `("kl",)`): any of `"kl"`, `"esm"`, `"dsm"`; empty: a plain
            autoencoder with a sampled latent.
        kl_weight (`float`, defaults to 1e-6): weight of the KL term.
        esm_weight (`float`, defaults to 0.01): weight of the ESM term.
        esm (`EncodingSpectrumMatching`, *optional*): the ESM loss (default: blur 7 / σ 1.2, 16 bins, δ = 1).
        dsm_ks (`Sequence[int]`, defaults to `(0, 8, 10, 12)`): DSM strengths drawn uniformly per step.
        perceptual (`nn.Module`, *optional*): a per-sample perceptual distance such as `LPIPS`.
        perceptual_weight (`float`, defaults to 0.5): its weight (the authors' LPIPS weight).
    """

    def __init__(
        self,
        regularizers: Sequence[str] = ("kl",),
        kl_weight: float = DEFAULT_KL_WEIGHT,
        esm_weight: float = DEFAULT_ESM_WEIGHT,
        esm: EncodingSpectrumMatching | None = None,
        dsm_ks: Sequence[int] = DSM_KS,
        perceptual: nn.Module | None = None,
        perceptual_weight: float = DEFAULT_LPIPS_WEIGHT,
    ):
        super().__init__()
        unknown = [name for name in regularizers if name not in LATENT_REGULARIZERS]
        if unknown:
            raise ValueError(f"Unknown latent regularizer(s) {unknown}; choose from {list(LATENT_REGULARIZERS)}.")
        if len(set(regularizers)) != len(regularizers):
            raise ValueError(f"A latent regularizer is named twice: {list(regularizers)}.")
        self.regularizers = tuple(regularizers)
        self.kl_weight, self.esm_weight, self.perceptual_weight = kl_weight, esm_weight, perceptual_weight
        self.esm = esm if esm is not None else EncodingSpectrumMatching()
        self.dsm_sampler = DSMSampler(dsm_ks) if "dsm" in self.regularizers else None
        self.perceptual = perceptual

    def forward(self, model, images: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        r"""
        Args:
            model (`EncodeDecode` or `AutoencoderKL`): the autoencoder; under DDP pass the prepared `EncodeDecode`,
                so that each step is one forward of the wrapped module.
            images (`torch.Tensor`): `[B, C, H, W]` in [-1, 1].
            generator (`torch.Generator`, *optional*): draws the DSM k and the latent sample.
        """
        if not isinstance(getattr(model, "module", model), EncodeDecode):
            model = EncodeDecode(model)
        # DSM: one k per step for image and latent; the masked latent is decoded, the masked image is the target
        k = self.dsm_sampler(generator) if self.dsm_sampler is not None else 0
        mean, logvar, latents, reconstruction = model(images, generator, k)
        target = apply_dsm(images, k) if k else images
        terms = {"l1": (reconstruction.float() - target.float()).abs().mean(dim=(1, 2, 3))}
        loss = terms["l1"]
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(reconstruction.float(), target.float())
            loss = loss + self.perceptual_weight * terms["perceptual"]
        if "kl" in self.regularizers:
            # KL(N(μ, σ²) || N(0, I)) summed over the latent, as Diffusers' DiagonalGaussianDistribution.kl()
            mean, logvar = mean.float(), logvar.float()
            terms["kl"] = 0.5 * (mean**2 + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3))
            loss = loss + self.kl_weight * terms["kl"]
        if "esm" in self.regularizers:
            terms["esm"] = self.esm(images, latents)  # on the sampled latent, before any DSM mask (as the authors)
            loss = loss + self.esm_weight * terms["esm"]
        terms["loss"] = loss
        if self.dsm_sampler is not None:
            terms["dsm_k"] = torch.tensor(float(k))
        return terms


class EncodeDecode(nn.Module):
    r"""
    One training forward of an `AutoencoderKL` as a module (so that DDP wraps a single forward): encode, sample the
    latent, optionally low-pass it with DSM strength `dsm_k`, decode.

    `forward(images, generator=None, dsm_k=0)` returns `(mean, logvar, latents, reconstruction)`: the posterior's
    mean and log-variance `[B, c, h, w]`, the sampled latent (before the DSM mask) and the decoded image.
    """

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None, dsm_k: int = 0):
        posterior = self.vae.encode(images).latent_dist
        latents = posterior.sample(generator)
        decoded = apply_dsm(latents, dsm_k).to(latents.dtype) if dsm_k else latents
        return posterior.mean, posterior.logvar, latents, self.vae.decode(decoded).sample


# ---------------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------------


def _batches(images: torch.Tensor | Iterable[torch.Tensor], batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size]
    else:
        for batch in images:
            yield batch["input"] if isinstance(batch, Mapping) else batch


@torch.no_grad()
def measure_scaling_factor(
    vae, images: torch.Tensor | Iterable[torch.Tensor], generator: torch.Generator | None = None, batch_size: int = 32
) -> float:
    r"""
    `1 / std` of sampled latents `vae.encode(x).latent_dist.sample()` over all their values (the authors'
    `extract_VAE_latents.py`; SD's 0.18215 was measured the same way), the `scaling_factor` that gives the diffusion
    model unit-variance latents.

    Args:
        vae (`AutoencoderKL`): the trained autoencoder.
        images (`torch.Tensor` or iterable): `[N, C, H, W]` in [-1, 1], or batches of them (or of `{"input": ...}`).
        generator (`torch.Generator`, *optional*): for the latent samples.
    """
    device, dtype = vae.device, vae.dtype
    total, total_sq, count = 0.0, 0.0, 0
    for batch in _batches(images, batch_size):
        latents = vae.encode(batch.to(device, dtype)).latent_dist.sample(generator).double()
        total += latents.sum().item()
        total_sq += (latents**2).sum().item()
        count += latents.numel()
    if count == 0:
        raise ValueError("measure_scaling_factor needs at least one image.")
    variance = max(total_sq / count - (total / count) ** 2, 0.0)
    if not variance > 0:
        raise ValueError("The sampled latents have zero variance; cannot set a scaling factor.")
    return 1.0 / math.sqrt(variance)


def fit_slope(spectrum: np.ndarray) -> float:
    """Least-squares slope of `log s_f` against `log f` over the bins `f = 2..num_bins` (1-based; bin 1 holds the
    removed DC term) with positive power: the power-law exponent of a radial spectrum (about -2 for images)."""
    spectrum = np.asarray(spectrum, dtype=np.float64)
    f = np.arange(1, spectrum.shape[-1] + 1, dtype=np.float64)
    keep = (f > 1) & (spectrum > 1e-7)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(f[keep]), np.log(spectrum[keep]), 1)[0])


@torch.no_grad()
def evaluate_autoencoder(
    vae,
    images: torch.Tensor,
    batch_size: int = 32,
    num_bins: int = 16,
    kernel_size: int = 7,
    sigma: float = 1.2,
) -> dict:
    r"""
    Reconstruction quality and latent spectrum of an autoencoder on held-out images.

    The latent is the posterior mean (deterministic); its channel-averaged radial DCT spectrum (`radial_dct_spectrum`,
    as ESM measures it) is compared with the image's, blurred and resized to the latent grid as in ESM, without the
    `f^δ` flattening.

    Args:
        vae (`AutoencoderKL`): the autoencoder.
        images (`torch.Tensor` or `np.ndarray`): `[N, C, H, W]` in [-1, 1].
        batch_size (`int`, defaults to 32): images per forward pass.
        num_bins (`int`, defaults to 16): radial bins.
        kernel_size (`int`, defaults to 7), sigma (`float`, defaults to 1.2): the ESM blur for the image spectrum.

    Returns:
        `dict`: `psnr` (dB, images mapped to [0, 1], reconstructions clipped, mean over images), `latent_slope` and
        `image_slope` (fitted log-log slopes, `fit_slope`), `latent_spectrum` and `image_spectrum` (mean spectra,
        lists of `num_bins` floats), `latent_shape` (`[c, h, w]`).
    """
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"evaluate_autoencoder needs images [N, C, H, W] with N >= 1, got {list(images.shape)}.")
    device, dtype = vae.device, vae.dtype
    esm = EncodingSpectrumMatching(kernel_size=kernel_size, sigma=sigma, num_bins=num_bins, delta=0.0)
    psnrs, latent_spectra, image_spectra, latent_shape = [], [], [], None
    for batch in _batches(images, batch_size):
        batch = batch.to(device, dtype)
        latents = vae.encode(batch).latent_dist.mode()
        reconstruction = vae.decode(latents).sample.float().clamp(-1, 1)
        mse = (((reconstruction - batch.float()) / 2) ** 2).mean(dim=(1, 2, 3))
        psnrs.append(-10 * torch.log10(mse.clamp_min(1e-10)).cpu())
        latent_spectra.append(radial_dct_spectrum(latents.float(), num_bins).cpu())
        image_spectra.append(esm.image_spectrum(batch.float(), tuple(latents.shape[-2:]), flatten=False).cpu())
        latent_shape = list(latents.shape[1:])
    latent_spectrum = torch.cat(latent_spectra).mean(0).numpy()
    image_spectrum = torch.cat(image_spectra).mean(0).numpy()
    return dict(
        psnr=float(torch.cat(psnrs).mean()),
        latent_slope=fit_slope(latent_spectrum),
        image_slope=fit_slope(image_spectrum),
        latent_spectrum=latent_spectrum.tolist(),
        image_spectrum=image_spectrum.tolist(),
        latent_shape=latent_shape,
    )


def plot_latent_spectrum(result: Mapping, path: str | os.PathLike | None = None):
    r"""
    The ESM plot: mean radial DCT spectrum of the latent vs the image's (on the latent grid), log-log, each normalised
    to sum 1, with fitted slopes in the legend. `result` is `evaluate_autoencoder`'s output. Returns the `Figure`
    (saved to `path` when given).
    """
    from .plots import new_figure, save_figure

    figure = new_figure((6.0, 4.5), 100)
    axes = figure.add_subplot(1, 1, 1)
    for name, key, slope, style in (
        ("image (blurred, latent grid)", "image_spectrum", result["image_slope"], "k-"),
        ("latent", "latent_spectrum", result["latent_slope"], "C1-"),
    ):
        spectrum = np.asarray(result[key], dtype=np.float64)
        f = np.arange(1, spectrum.shape[0] + 1)
        keep = (f > 1) & (spectrum > 0)
        axes.loglog(
            f[keep], spectrum[keep] / spectrum[keep].sum(), style, marker="o", label=f"{name}, slope {slope:.2f}"
        )
    axes.set_xlabel("radial DCT bin")
    axes.set_ylabel("normalised power")
    axes.set_title("Latent vs image spectrum (ESM, arXiv 2603.14645)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    save_figure(figure, path)
    return figure


def save_and_evaluate(
    vae,
    batches: Sequence[torch.Tensor],
    held_out: torch.Tensor,
    output_dir: str,
    seed: int = 0,
    log: logging.Logger | None = None,
) -> dict:
    """The end of an autoencoder run: measure the scaling factor (1/std of sampled latents of `batches`) into `vae`'s
    config, save `vae` to `output_dir` (whole or not at all: a full disk or a kill leaves the previous model), evaluate
    it on `held_out`, plot the latent spectrum (`latent_spectrum.png`) and write `evaluation/autoencoder.json`.

    Args:
        vae (`AutoencoderKL`): the trained autoencoder.
        batches (`list[torch.Tensor]`): training batches `[N x C x H x W]` in [-1, 1] to measure the latents' std on.
        held_out (`torch.Tensor`): held-out images `[N x C x H x W]` for the PSNR and the spectra.
        output_dir (`str`): where the model and its evaluation go.
        seed (`int`, defaults to 0): seed of the latent samples.
        log (`logging.Logger`, *optional*): where the scaling factor and the PSNR are reported; this module's logger
            by default.

    Returns:
        `dict`: `evaluate_autoencoder`'s result with `scaling_factor`.
    """
    log = log or logging.getLogger(__name__)
    vae.eval()
    generator = torch.Generator(device=vae.device).manual_seed(seed)
    scaling_factor = measure_scaling_factor(vae, batches, generator)
    log.info(f"scaling_factor = 1/std of sampled latents = {scaling_factor:.6f}")
    vae.register_to_config(scaling_factor=scaling_factor)
    save_model(vae, output_dir)
    result = evaluate_autoencoder(vae, held_out)
    plot_latent_spectrum(result, os.path.join(output_dir, "latent_spectrum.png"))
    result["scaling_factor"] = scaling_factor
    log.info(
        f"Held-out PSNR {result['psnr']:.2f} dB; latent slope {result['latent_slope']:.3f}, image slope "
        f"{result['image_slope']:.3f}"
    )
    os.makedirs(os.path.join(output_dir, "evaluation"), exist_ok=True)
    with open(os.path.join(output_dir, "evaluation", "autoencoder.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


__all__ = [
    "AUTOENCODER_PRESETS",
    "AutoencoderLoss",
    "DSM_BLOCK",
    "EncodeDecode",
    "LATENT_REGULARIZERS",
    "LPIPS",
    "autoencoder_config",
    "downsampling_factor",
    "evaluate_autoencoder",
    "fit_slope",
    "measure_scaling_factor",
    "plot_latent_spectrum",
    "save_and_evaluate",
]
