"""The model card of an autoencoder trained with `train_autoencoder.py` (Spectrum Matching, arXiv 2603.14645): what
was trained, the held-out PSNR and spectral slopes, the latent spectrum plot and how to use it."""

from __future__ import annotations

import os
from collections.abc import Mapping

from .metadata import is_hub_id, publishable_path, redact_config
from .sections import render_config_table
from .tables import CITATIONS


def write_autoencoder_card(
    output_dir: str,
    config: Mapping,
    result: Mapping,
    scaling_factor: float,
    data_description: str,
    steps: int,
) -> str:
    r"""
    Write `output_dir/README.md` for a trained `AutoencoderKL`.

    Args:
        output_dir (`str`): the model folder.
        config (`Mapping`): the training arguments (`vars(args)` of `train_autoencoder.py`: `latent_regularizer`,
            `kl_weight`, `esm_weight`, `esm_delta`, `dsm_ks`, `perceptual_loss`, `perceptual_weight`,
            `pretrained_model_name_or_path`, `train_data_dir`, `dataset_name`, `resolution`, `scaling_batches`,
            `num_validation_images`, `hub_model_id`); all of them but `local_rank` and credentials go into the
            configuration table.
        result (`Mapping`): `autoencoder.evaluate_autoencoder` of the held-out images (`psnr`, `latent_slope`,
            `image_slope`, `latent_shape`).
        scaling_factor (`float`): the measured `scaling_factor`.
        data_description (`str`): what the model was trained on; local paths in it are shown as
            [`publishable_path`] writes them.
        steps (`int`): optimiser steps trained.

    Returns:
        `str`: the path of the written `README.md`.
    """
    regularizers, weights, perceptual = _training_summary(config)
    base = config["pretrained_model_name_or_path"]
    shown_base = publishable_path(base, output_dir)  # local paths relative to the folder, the home folder as ~
    for source in (config["train_data_dir"], config["dataset_name"]):
        if source:
            data_description = data_description.replace(source, publishable_path(source, output_dir))
    table = redact_config({k: v for k, v in config.items() if k != "local_rank"}, output_dir)
    repo = config["hub_model_id"] or os.path.basename(os.path.abspath(output_dir))
    card = f"""---
library_name: diffusers
tags:
- diffusers
- diffusers-specreg
- autoencoder
- spectrum-matching
{f"base_model: {base}" if is_hub_id(base) and "/" in base else ""}
---

# AutoencoderKL with Spectrum Matching ({regularizers})

An `AutoencoderKL` for latent diffusion trained with `train_autoencoder.py` of diffusers-specreg
{f"(fine-tuned from `{shown_base}`) " if base else ""}on {data_description}, {steps} steps at {config["resolution"]}x{config["resolution"]}.
Latent regularizers: **{regularizers}** ({"; ".join(weights) or "none"}); reconstruction loss L1, perceptual
loss {perceptual}; no PatchGAN.

`scaling_factor` = **{scaling_factor:.5f}** (1/std of sampled latents on {config["scaling_batches"]} training batches).

## Evaluation ({config["num_validation_images"]} held-out images)

| Metric | Value |
| --- | --- |
| Reconstruction PSNR (dB) | {result["psnr"]:.2f} |
| Latent spectral slope | {result["latent_slope"]:.3f} |
| Image spectral slope (blurred, latent grid) | {result["image_slope"]:.3f} |
| Latent shape | {" x ".join(map(str, result["latent_shape"]))} |

![latent vs image spectrum](latent_spectrum.png)

{_usage_and_configuration(repo, table)}"""

    path = os.path.join(output_dir, "README.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(card)
    return path


def _training_summary(config: Mapping) -> tuple[str, list[str], str]:
    """The latent regularizers (`"esm, kl"` or `"none"`), the text of their weights, and the perceptual loss."""
    regularizers = ", ".join(config["latent_regularizer"]) or "none"
    weights = []
    if "kl" in config["latent_regularizer"]:
        weights.append(f"KL weight {config['kl_weight']:g}")
    if "esm" in config["latent_regularizer"]:
        weights.append(f"ESM weight {config['esm_weight']:g} (δ = {config['esm_delta']:g})")
    if "dsm" in config["latent_regularizer"]:
        weights.append(f"DSM k drawn from {config['dsm_ks']}")
    perceptual = f"LPIPS (weight {config['perceptual_weight']:g})" if config["perceptual_loss"] == "lpips" else "none"
    return regularizers, weights, perceptual


def _usage_and_configuration(repo: str, table: Mapping) -> str:
    """The card's usage snippet (`repo` loads the model), its configuration table and the citation."""
    key = "2603.14645"
    return f"""## Usage

```python
from diffusers import AutoencoderKL

vae = AutoencoderKL.from_pretrained("{repo}")
latents = vae.encode(images).latent_dist.sample() * vae.config.scaling_factor  # images in [-1, 1]
images = vae.decode(latents / vae.config.scaling_factor).sample
```

Stage 2: `accelerate launch train_spectral.py --vae_name_or_path {repo} ...`

## Training configuration

{render_config_table(table)}

## Citation

{CITATIONS[key][0]} (arXiv {key}):

```bibtex
{CITATIONS[key][1]}
```
"""
