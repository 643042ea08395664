"""Model cards (`README.md` with Hub metadata) for models trained with `train_spectral.py`.

`write_model_card` renders `model_cards/template.md` (plain `string.Template` placeholders such as `$usage`: no Jinja,
so no dependency beyond `huggingface_hub`) and validates the result with `huggingface_hub.ModelCard`. The YAML
metadata holds:

- `library_name: diffusers`, a `pipeline_tag`, `tags` (`diffusers`, `diffusers-specreg`, `spectral-regularization`,
  the task, one `spectral-loss-<name>` per spectral loss, `edm` / `sagd` where used);
- `base_model` when the model was fine-tuned from a Hub model, `datasets` when it was trained on a Hub dataset
  (local paths are left out of the metadata: the Hub accepts only repo ids there);
- a `model-index` with the evaluation metrics as `EvalResult`s, which the Hub shows on the model page.

The body says what the model is, gives a usage snippet that runs, the sample grid and spectrum plot (relative image
links), the full training configuration as a table, the metrics table and the citations of the papers used.

Pipeline tag of audio models: the Hub has no unconditional audio generation task. `text-to-audio` and
`audio-to-audio` would promise an input the model does not take, and `unconditional-image-generation` would list an
audio model among image generators, so `AudioDiffusionPipeline` models get `pipeline_tag: other` with the tags
`audio`, `mel-spectrogram` and `unconditional-audio-generation` to be found by.

The metrics are the typed `diffusers_specreg.evaluate.EvaluationResult` of `evaluate_pipeline` (a `metrics.json`
dict is read into one with `EvaluationResult.from_dict`): `log_rapsd_distance` (all, low, mid, high), `slope` (data,
model, gap), `fwd`, `fid` (optional), `num_samples`, `num_inference_steps`, `seed`, `sampler`, `dataset` ({"type",
"name"}), and for audio models `audio` (`AudioScores`: mrstft, log_spectral_distance, frechet_log_mel, ndb_k, ndb_js,
num_real, num_fake, sample_rate, clip_seconds, vocoder, spectrogram_figure, samples, data_samples). The audio metrics go
into the model-index and a second table; the spectrogram figure and links to the WAV files (paths relative to the
evaluation folder, the folder of `metrics.json`) into an "Audio samples" section. Files that do not exist in the
model folder are left out of the card rather than linked broken.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import posixpath
import re
import string
from collections.abc import Mapping, Sequence

from .evaluate.result import AudioScores, EvaluationResult
from .formulations import class_name, formulation_of, read_card_file, render_usage

logger = logging.getLogger(__name__)

TEMPLATE_NAME = "template.md"
TRAINING_ARGS_FILE = "training_args.json"
IMAGE_TASK = "unconditional-image-generation"
AUDIO_TASK = "other"  # no Hub task fits unconditional audio generation, see the module docstring
BASE_TAGS = ("diffusers", "diffusers-specreg", "spectral-regularization")
MODALITIES = ("image", "audio")

# Settings listed first in the configuration table, in this order.
SPECTRAL_KEYS = (
    "spectral_loss",
    "spectral_weight",
    "final_spectral_weights",
    "spectral_weighting",
    "min_snr_gamma",
    "spectral_max_timestep",
    "spectral_max_sigma",
    "wavelet",
    "wavelet_levels",
    "noise_spectrum",
    "formulation",
    "edm_sigma_data",
    "edm_p_mean",
    "edm_p_std",
    "prediction_type",
)
# A configuration key containing one of these is never written (e.g. `hub_token`).
SECRET_KEY_PARTS = ("token", "password", "secret", "api_key", "apikey", "credential")

# (the value in an `EvaluationResult`, model-index metric type, display name, meaning); the data's slope is a property of
# the data and goes into the table only.
METRIC_ROWS = (
    (
        lambda r: r.log_rapsd_distance.all,
        "log-rapsd-distance",
        "log-RAPSD distance (all)",
        "mean abs. log10 power gap, lower is better",
    ),
    (
        lambda r: r.log_rapsd_distance.low,
        "log-rapsd-distance-low",
        "log-RAPSD distance (low)",
        "lowest third of frequencies",
    ),
    (lambda r: r.log_rapsd_distance.mid, "log-rapsd-distance-mid", "log-RAPSD distance (mid)", "middle third"),
    (
        lambda r: r.log_rapsd_distance.high,
        "log-rapsd-distance-high",
        "log-RAPSD distance (high)",
        "highest third, up to Nyquist",
    ),
    (
        lambda r: r.slope.model,
        "spectral-slope",
        "Spectral slope (samples)",
        "power-law exponent of the samples' spectrum",
    ),
    (
        lambda r: r.slope.gap,
        "spectral-slope-gap",
        "Spectral slope gap",
        "samples - data; 0 is best, < 0: missing high frequencies",
    ),
    (lambda r: r.fwd, "fwd", "Fréchet Wavelet Distance", "arXiv 2312.15289, lower is better"),
    (
        lambda r: r.fid if r.feature_extractor is None else None,
        "fid",
        "FID",
        "Inception features (user-supplied weights), lower is better",
    ),
    (
        lambda r: r.fid if r.feature_extractor is not None else None,
        "frechet-distance",
        "Fréchet distance (your features)",
        "on the features of the evaluation's --feature_extractor network (not Inception), lower is better",
    ),
)
DATA_ROWS = ((lambda r: r.slope.data, "Spectral slope (data)", "power-law exponent of the data's spectrum"),)
# Audio metrics of `evaluate_pipeline` for an AudioDiffusionPipeline (`diffusers_specreg.audio.audio_metrics`): set
# distances between Griffin-Lim clips of generated and of data mel images, all lower is better.
AUDIO_METRIC_ROWS = (
    (
        lambda r: r.audio.mrstft if r.audio else None,
        "mr-stft-distance",
        "MR-STFT distance",
        "spectral convergence + log-magnitude distance of the mean spectra, 3 resolutions (arXiv 1910.11480)",
    ),
    (
        lambda r: r.audio.log_spectral_distance if r.audio else None,
        "log-spectral-distance",
        "Log-spectral distance (dB)",
        "RMS dB gap between the mean power spectra",
    ),
    (
        lambda r: r.audio.frechet_log_mel if r.audio else None,
        "frechet-log-mel-distance",
        "Fréchet log-mel distance",
        "Fréchet distance of log-mel frame statistics (no pretrained network)",
    ),
    (
        lambda r: r.audio.ndb_k if r.audio else None,
        "ndb-k",
        "NDB/K",
        "share of k-means bins of log-mel frames with a significantly different proportion (arXiv 1805.12462)",
    ),
    (
        lambda r: r.audio.ndb_js if r.audio else None,
        "ndb-js",
        "NDB JS divergence",
        "Jensen-Shannon divergence of the bin histograms",
    ),
)

CITATIONS = {
    "2603.02447": (
        "Spectral regularization of the diffusion loss",
        "@article{papalexakis2026spectral,\n"
        "  title   = {Spectral Regularization for Diffusion Models},\n"
        "  author  = {Papalexakis and {Ver Steeg} and {Roque dos Santos} and Chandran and Wu},\n"
        "  journal = {arXiv preprint arXiv:2603.02447},\n"
        "  year    = {2026}\n"
        "}",
    ),
    "2510.09660": (
        "Spectrally anisotropic forward noise (SAGD)",
        "@article{scimeca2025learning,\n"
        "  title   = {Learning What Matters: Steering Diffusion via Spectrally Anisotropic Forward Noise},\n"
        "  author  = {Scimeca and Jiralerspong and Earnshaw and Hartford and Bengio},\n"
        "  journal = {arXiv preprint arXiv:2510.09660},\n"
        "  year    = {2025}\n"
        "}",
    ),
    "2603.14645": (
        "Spectrum matching",
        "@article{ning2026spectrum,\n"
        "  title   = {Spectrum Matching: a Unified Perspective for Superior Diffusability in Latent Diffusion},\n"
        "  author  = {Ning and Li and Zhang and Liu and Blaschko and Salah and {Onal Ertugrul}},\n"
        "  journal = {arXiv preprint arXiv:2603.14645},\n"
        "  year    = {2026}\n"
        "}",
    ),
    "2206.00364": (
        "EDM formulation",
        "@inproceedings{karras2022elucidating,\n"
        "  title     = {Elucidating the Design Space of Diffusion-Based Generative Models},\n"
        "  author    = {Karras, Tero and Aittala, Miika and Aila, Timo and Laine, Samuli},\n"
        "  booktitle = {Advances in Neural Information Processing Systems},\n"
        "  year      = {2022}\n"
        "}",
    ),
    "2209.03003": (
        "Rectified flow (flow matching)",
        "@inproceedings{liu2023flow,\n"
        "  title     = {Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow},\n"
        "  author    = {Liu, Xingchao and Gong, Chengyue and Liu, Qiang},\n"
        "  booktitle = {International Conference on Learning Representations},\n"
        "  year      = {2023}\n"
        "}",
    ),
    "2403.03206": (
        "Timestep sampling and loss weighting of flow matching (SD3)",
        "@inproceedings{esser2024scaling,\n"
        "  title     = {Scaling Rectified Flow Transformers for High-Resolution Image Synthesis},\n"
        '  author    = {Esser, Patrick and Kulal, Sumith and Blattmann, Andreas and Entezari, Rahim and M{\\"u}ller, Jonas'
        " and others},\n"
        "  booktitle = {International Conference on Machine Learning},\n"
        "  year      = {2024}\n"
        "}",
    ),
    "1910.11480": (
        "Multi-resolution STFT distance (audio evaluation)",
        "@inproceedings{yamamoto2020parallel,\n"
        "  title     = {Parallel {WaveGAN}: A Fast Waveform Generation Model Based on Generative Adversarial Networks "
        "with Multi-Resolution Spectrogram},\n"
        "  author    = {Yamamoto, Ryuichi and Song, Eunwoo and Kim, Jae-Min},\n"
        "  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},\n"
        "  year      = {2020}\n"
        "}",
    ),
    "1805.12462": (
        "Number of statistically different bins, NDB (audio evaluation)",
        "@inproceedings{richardson2018gans,\n"
        "  title     = {On {GANs} and {GMMs}},\n"
        "  author    = {Richardson, Eitan and Weiss, Yair},\n"
        "  booktitle = {Advances in Neural Information Processing Systems},\n"
        "  year      = {2018}\n"
        "}",
    ),
    "2312.15289": (
        "Fréchet Wavelet Distance (evaluation)",
        "@inproceedings{veeramacheneni2025fwd,\n"
        "  title     = {Fr{\\'e}chet Wavelet Distance: A Domain-Agnostic Metric for Image Generation},\n"
        "  author    = {Veeramacheneni, Lokesh and Wolter, Moritz and Kuehne, Hildegard and Gall, Juergen},\n"
        "  booktitle = {International Conference on Learning Representations},\n"
        "  year      = {2025}\n"
        "}",
    ),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


# ---------------------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------------------


def is_hub_id(name: str | None) -> bool:
    """`True` for a Hub repo id (`"user/name"` or a legacy `"name"`) that is not an existing local path."""
    return bool(name) and _HUB_ID.match(name) is not None and not os.path.exists(name) and ".." not in name


def is_secret_key(key: str) -> bool:
    """`True` for configuration keys that may hold a credential (`hub_token`, ...); these are never written."""
    lowered = key.lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


# a home folder at the start of a path: /home/<user>, /Users/<user>, /root, C:\Users\<user>
_HOME_FOLDER = re.compile(r"^(?:/home/[^/]+|/Users/[^/]+|/root|[A-Za-z]:[\\/]Users[\\/][^\\/]+)(?=$|[\\/])")


def publishable_path(value, output_dir: str | os.PathLike | None = None):
    r"""
    A local path as the files a model folder publishes show it (card, `training_args.json`, `metrics.json`): inside
    `output_dir` relative to it (`"."`, `"./unet.json"`), else with the home folder written `~` (`"~/data/imgs"`,
    also for another user's `/home/<user>` or `/Users/<user>`), so that no local folder name above the model's own
    is published. Relative paths, Hub ids and other values are returned as they are.

    Args:
        value: a configuration value; only strings that are absolute paths (or start with `~`) change.
        output_dir (`str` or `os.PathLike`, *optional*, defaults to `None`): the model folder.
    """
    if not isinstance(value, str) or not value:
        return value
    path = os.path.expanduser(value) if value.startswith("~") else value
    if not (os.path.isabs(path) or _HOME_FOLDER.match(path)):
        return value
    if output_dir is not None:
        folder, absolute = os.path.abspath(os.fspath(output_dir)), os.path.abspath(path)
        if absolute == folder or absolute.startswith(folder.rstrip(os.sep) + os.sep):
            relative = os.path.relpath(absolute, folder).replace(os.sep, "/")
            return "." if relative == "." else f"./{relative}"  # "./": never read as a Hub repo id
    home = os.path.expanduser("~").rstrip(os.sep)
    if home and (path == home or path.startswith(home + os.sep)):
        return "~" + path[len(home) :].replace(os.sep, "/")
    return _HOME_FOLDER.sub("~", path)


def redact_config(config: Mapping, output_dir: str | os.PathLike | None = None) -> dict:
    """The configuration without credential keys (at any depth), with values made JSON-friendly (paths and other
    objects as strings, tuples as lists) and local paths as [`publishable_path`] writes them (relative to
    `output_dir` inside it, the home folder as `~`)."""
    clean = {}
    for key, value in config.items():
        if is_secret_key(str(key)):
            continue
        if isinstance(value, Mapping):
            value = redact_config(value, output_dir)
        elif isinstance(value, (list, tuple)):
            value = [v if v is None or isinstance(v, (bool, int, float, str)) else str(v) for v in value]
            value = [publishable_path(v, output_dir) for v in value]
        elif not (value is None or isinstance(value, (bool, int, float, str))):
            value = str(value)
        clean[str(key)] = publishable_path(value, output_dir)
    return clean


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _format_value(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(v) for v in value) if value else "—"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_format_value(v)}" for k, v in value.items()) if value else "—"
    return str(value)


def _cell(value) -> str:
    text = _format_value(value).replace("|", "\\|").replace("\n", " ")
    return f"`{text}`" if text != "—" else text


def modality_of(pipeline_class: str | list) -> str:
    """The modality of a saved pipeline class's formulation (`"audio"` for `AudioDiffusionPipeline`), else
    `"image"`."""
    entry = formulation_of(pipeline_class)
    return entry.modality if entry is not None else "image"


def _is_coloured(noise_spectrum) -> bool:
    return bool(noise_spectrum) and str(noise_spectrum).strip().lower() not in ("white", "none", "powerlaw:alpha=0")


def _uses_spectrum_matching(config: Mapping) -> bool:
    return any(
        ("spectrum_matching" in key or key in ("esm", "dsm", "esm_weight", "dsm_weight")) and bool(value)
        for key, value in config.items()
    )


def load_template(template_path: str | os.PathLike | None = None) -> string.Template:
    """The card template: `template_path`, else `model_cards/template.md` (installed or in the checkout)."""
    if template_path is not None:
        with open(template_path, encoding="utf-8") as f:
            return string.Template(f.read())
    return string.Template(read_card_file(TEMPLATE_NAME))


# ---------------------------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------------------------


def card_tags(config: Mapping, pipeline_class: str) -> list[str]:
    """The card's tags: library, project, task, one `spectral-loss-<name>` per loss, the formulation's tags
    (`edm`, `sagd`, `audio`, ...)."""
    entry = formulation_of(pipeline_class)
    tags = list(BASE_TAGS)
    if modality_of(pipeline_class) != "audio":
        tags.append(IMAGE_TASK)
    for name in config.get("spectral_loss") or []:
        tags.append("spectral-loss-" + str(name).replace("_", "-"))
    tags += list(entry.tags) if entry is not None else []
    if _uses_spectrum_matching(config):
        tags.append("spectrum-matching")
    return list(dict.fromkeys(tags))


def _dataset_of(
    metrics: EvaluationResult | None, dataset_name: str | None, config: Mapping, audio: bool = False
) -> tuple[str, str]:
    """(`dataset_type`, `dataset_name`) for the model-index."""
    recorded = metrics.dataset if metrics is not None else None
    if isinstance(recorded, Mapping) and recorded.get("type"):
        return str(recorded["type"]), str(recorded.get("name") or recorded["type"])
    if dataset_name:
        return dataset_name, dataset_name
    kind = "audio" if audio else "image"
    if config.get("train_data_dir"):
        return f"{kind}folder", f"{kind} folder {os.path.basename(os.path.normpath(str(config['train_data_dir'])))}"
    if audio:
        return "synthetic_audio", "built-in synthetic audio"
    builtin = config.get("builtin_dataset") or "checkerboards"
    return builtin, f"built-in {builtin}"


def eval_results(metrics: EvaluationResult | Mapping, task_type: str, dataset_type: str, dataset_name: str) -> list:
    r"""
    The finite metrics of an evaluation as `huggingface_hub.EvalResult`s (the card's `model-index`).

    Args:
        metrics (`EvaluationResult` or `Mapping`): one pipeline's result of `evaluate_pipeline` (or its
            `metrics.json` dict).
        task_type (`str`): the Hub task, e.g. `"unconditional-image-generation"`.
        dataset_type (`str`): Hub dataset id or a short name (`"imagefolder"`, `"checkerboards"`).
        dataset_name (`str`): display name of the dataset.

    Returns:
        `list[EvalResult]`: one per metric of `METRIC_ROWS` and `AUDIO_METRIC_ROWS` present with a finite value.
    """
    from huggingface_hub import EvalResult

    metrics = EvaluationResult.from_dict(metrics)
    results = []
    for value_of, metric_type, metric_name, _ in METRIC_ROWS + AUDIO_METRIC_ROWS:
        value = value_of(metrics)
        if _finite(value):
            results.append(
                EvalResult(
                    task_type=task_type,
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    metric_type=metric_type,
                    metric_name=metric_name,
                    metric_value=float(value),
                )
            )
    return results


def model_card_data(
    *,
    config: Mapping,
    metrics: EvaluationResult | None,
    base_model: str | None,
    dataset_name: str | None,
    pipeline_class: str,
    model_name: str,
    license: str | None = None,
):
    """The `huggingface_hub.ModelCardData` of a card (see `write_model_card`)."""
    from huggingface_hub import ModelCardData

    audio = modality_of(pipeline_class) == "audio"
    task = AUDIO_TASK if audio else IMAGE_TASK
    results = None
    if metrics:
        dataset_type, dataset_display = _dataset_of(metrics, dataset_name, config, audio)
        results = eval_results(metrics, task, dataset_type, dataset_display) or None
    return ModelCardData(
        library_name="diffusers",
        pipeline_tag=task,
        tags=card_tags(config, pipeline_class),
        base_model=base_model if is_hub_id(base_model) else None,
        datasets=[dataset_name] if is_hub_id(dataset_name) else None,
        license=license,
        model_name=model_name if results else None,
        eval_results=results,
    )


# ---------------------------------------------------------------------------------------------------------------
# Body sections
# ---------------------------------------------------------------------------------------------------------------


def _lambda_text(config: Mapping) -> str:
    """`name` (λ = value) per spectral loss: the effective λ the run used (`final_spectral_weights`), else the flag."""
    losses = list(config.get("spectral_loss") or [])
    weights = config.get("spectral_weight")
    if weights is None or isinstance(weights, (str, int, float)):
        weights = [weights] * len(losses)
    weights = list(weights)
    if len(weights) == 1:
        weights = weights * len(losses)
    effective = config.get("final_spectral_weights") or {}
    parts = []
    for i, name in enumerate(losses):
        given = weights[i] if i < len(weights) else None
        value = effective.get(name) if isinstance(effective, Mapping) else None
        if _finite(value):
            text = f"λ = {value:.4g}" + (" (default)" if given is None else "")
        elif given is not None:
            text = f"λ = {given}"
        else:
            text = "λ not recorded"
        parts.append(f"`{name}` ({text})")
    return ", ".join(parts)


def _data_text(dataset_name: str | None, config: Mapping, audio: bool = False) -> str:
    if dataset_name:
        link = (
            f"[{dataset_name}](https://huggingface.co/datasets/{dataset_name})"
            if is_hub_id(dataset_name)
            else f"`{dataset_name}`"
        )
        return f"the dataset {link}"
    if config.get("train_data_dir"):
        return "a local audio folder" if audio else "a local image folder"
    if audio:
        count = config.get("builtin_num_clips")
        return (
            f"built-in synthetic audio{f' ({count} clips)' if count else ''}: tones, linear and exponential chirps and "
            "vowel-like harmonic notes with envelopes, plus noise bursts and clicks"
        )
    builtin = config.get("builtin_dataset") or "checkerboards"
    count = config.get("builtin_num_samples")
    if builtin == "checkerboards":
        return f"built-in grayscale checkerboards{f' ({count} images)' if count else ''}, the toy data of arXiv 2603.02447"
    if builtin == "digits":
        return "scikit-learn's 1,797 handwritten digits (built in)"
    if builtin == "fashion_mnist":
        return (
            "Fashion-MNIST's 60,000 training images (28x28 garments padded to 32x32; Debian's dataset-fashion-mnist)"
        )
    return f"built-in `{builtin}` data"


def _mel_text(config: Mapping) -> str:
    """One sentence on the mel images of an audio model, from the training arguments."""
    resolution, rate, hop = config.get("resolution"), config.get("sample_rate"), config.get("hop_length")
    if not (resolution and rate and hop):
        return "Audio is cut into slices, each a mel-spectrogram image; samples become audio by Griffin-Lim."
    seconds = (resolution * hop - 1) / rate
    return (
        f"Every image is one {seconds:.3g} s slice of audio at {rate} Hz: {resolution} mel bands × {resolution} STFT "
        f"frames (n_fft {config.get('n_fft', '?')}, hop {hop}, {config.get('top_db', '?')} dB range); generated "
        "images become audio by Griffin-Lim inversion (the pipeline's `mel`)."
    )


def _latent_text(config: Mapping) -> str:
    """What a latent model is: which autoencoder, its scaling factor, where the spectral losses applied."""
    vae = str(config["vae_name_or_path"])
    if config.get("vae_subfolder"):
        vae += f"` (subfolder `{config['vae_subfolder']}`)"
        vae = f"`{vae}"
    else:
        vae = f"[{vae}](https://huggingface.co/{vae})" if is_hub_id(vae) else f"`{vae}`"
    scaling = config.get("vae_scaling_factor")
    scaling = f"{float(scaling):.6g}" if scaling is not None else "?"
    space = config.get("spectral_space") or "latent"
    where = (
        "on the predicted clean latent x̂₀"
        if space == "latent"
        else "on images decoded from the predicted clean latent x̂₀ by the frozen decoder, with gradients through it"
    )
    losses = f"The spectral losses apply {where} (`--spectral_space {space}`). " if config.get("spectral_loss") else ""
    return (
        f"This is a latent diffusion model: the UNet denoises `vae.encode(x).latent_dist.sample() * scaling_factor` "
        f"of the frozen `AutoencoderKL` {vae} (scaling_factor {scaling}), saved with the model in `vqvae/`; the "
        f"pipeline divides sampled latents by the scaling factor and decodes them to images. {losses}The resolution "
        "above is the image resolution, and the metrics below compare decoded samples with the data images."
    )


def render_summary(config: Mapping, base_model: str | None, dataset_name: str | None, pipeline_class: str) -> str:
    """The opening paragraph: what the model is, what it was trained on and with which spectral settings."""
    audio = modality_of(pipeline_class) == "audio"
    kind = "unconditional mel-spectrogram (audio) diffusion model" if audio else "unconditional image diffusion model"
    if config.get("vae_name_or_path"):
        kind = "unconditional latent image diffusion model"
    resolution = config.get("resolution")
    size = f" at {resolution}×{resolution}" if resolution else ""
    formulation = str(config.get("formulation") or "ddpm").upper()
    text = (
        f"An {kind} (`{pipeline_class}` with a `UNet2DModel`, {formulation} formulation) trained with "
        f"diffusers-specreg{size} on {_data_text(dataset_name, config, audio)}."
    )
    if audio:
        text += " " + _mel_text(config)
    if base_model:
        link = f"[{base_model}](https://huggingface.co/{base_model})" if is_hub_id(base_model) else f"`{base_model}`"
        text += f" Fine-tuned from {link}."
    losses = config.get("spectral_loss") or []
    if losses:
        weighting = config.get("spectral_weighting") or "alpha_bar"
        text += (
            f"\n\nThe ordinary diffusion loss was regularised with frequency-domain penalties on the predicted clean "
            f"sample (Eq. 17 of arXiv 2603.02447): {_lambda_text(config)}, timestep weighting `{weighting}`."
        )
    else:
        text += "\n\nNo spectral loss term was used (a baseline for the spectrally regularised models)."
    if config.get("vae_name_or_path"):
        text += "\n\n" + _latent_text(config)
    if _is_coloured(config.get("noise_spectrum")):
        text += (
            f" The forward noise is spectrally anisotropic (SAGD, arXiv 2510.09660), spectrum "
            f"`{config['noise_spectrum']}`; sample it with the pipeline below, which draws the same coloured noise."
        )
    return text


def render_samples(sample_grid: str | None, spectrum_plot: str | None, sampler: str | None = None) -> str:
    """Markdown image links (paths relative to the card) for the sample grid and the spectrum plot; the grid's caption
    names the sampler and steps that drew it (e.g. `"DDPM (ancestral), 50 steps"`) when known."""
    parts = []
    if sample_grid:
        caption = f"\n\n*Samples drawn with {sampler}.*" if sampler else ""
        parts.append(f"![Samples from the model]({sample_grid}){caption}")
    if spectrum_plot:
        parts.append(
            f"![Radially averaged power spectrum of the samples and the data]({spectrum_plot})\n\n"
            "*Radially averaged power spectral density (log-log) of generated samples and training data: the closer "
            "the curves, especially at high frequencies, the better the model reproduces fine detail.*"
        )
    return "\n\n".join(parts)


def render_training(config: Mapping) -> str:
    """Bullet list of the main training facts."""
    items = []
    steps = config.get("max_train_steps")
    epochs = config.get("num_epochs")
    if steps or epochs:
        items.append(f"- Length: {steps if steps else '?'} optimiser steps ({epochs if epochs else '?'} epochs)")
    batch = config.get("train_batch_size")
    if batch:
        accumulation = config.get("gradient_accumulation_steps") or 1
        items.append(f"- Batch: {batch} per process × {accumulation} accumulation step(s)")
    if config.get("learning_rate") is not None:
        items.append(
            f"- Optimiser: AdamW, learning rate {config['learning_rate']}, schedule `{config.get('lr_scheduler', '?')}`"
            f" with {config.get('lr_warmup_steps', '?')} warm-up steps"
        )
    if config.get("use_ema"):
        items.append(
            f"- EMA of the weights (max decay {config.get('ema_max_decay', '?')}), used for sampling and saving"
        )
    if config.get("mixed_precision") not in (None, "no"):
        items.append(f"- Mixed precision: `{config['mixed_precision']}` (FFTs in float32)")
    if config.get("seed") is not None:
        items.append(f"- Seed: {config['seed']}")
    losses = config.get("spectral_loss") or []
    items.append(f"- Spectral terms: {_lambda_text(config) if losses else 'none'}")
    if config.get("spectral_max_timestep") is not None or config.get("spectral_max_sigma") is not None:
        gate = config.get("spectral_max_timestep")
        gate = f"t ≤ {gate}" if gate is not None else f"σ ≤ {config.get('spectral_max_sigma')}"
        items.append(f"- Spectral terms applied only at low noise: {gate}")
    return "\n".join(items)


def render_config_table(config: Mapping) -> str:
    """Markdown table of every configuration entry (spectral settings first, credentials never)."""
    config = redact_config(config)
    keys = [k for k in SPECTRAL_KEYS if k in config] + sorted(k for k in config if k not in SPECTRAL_KEYS)
    if not keys:
        return "*Not recorded.*"
    rows = ["| Argument | Value |", "| --- | --- |"]
    rows += [f"| `{key}` | {_cell(config[key])} |" for key in keys]
    return "\n".join(rows)


def _is_audio_evaluation(metrics: EvaluationResult, pipeline_class: str | None) -> bool:
    if pipeline_class is not None:
        return modality_of(pipeline_class) == "audio"
    return metrics.audio is not None or modality_of(metrics.pipeline_class or "") == "audio"


def evaluation_command(
    metrics: EvaluationResult | Mapping | None,
    repo_id: str,
    pipeline_class: str | None = None,
    config: Mapping | None = None,
) -> str:
    """The `python -m diffusers_specreg.evaluate` command that (re)produces the card's metrics (for built-in
    synthetic audio with the training run's `builtin_num_clips` from `config`, so that the data are the same)."""
    metrics, config = EvaluationResult.from_dict(metrics or {}), config or {}
    audio = _is_audio_evaluation(metrics, pipeline_class)
    dataset = metrics.dataset if isinstance(metrics.dataset, Mapping) else {}
    kind = dataset.get("type")
    if kind in ("checkerboards", "digits", "photos", "fashion_mnist", "synthetic_audio"):
        source = f"--builtin_dataset {kind}"
    elif kind and kind not in ("imagefolder", "audiofolder"):
        source = f"--dataset_name {kind}"
    else:
        source = "--train_data_dir <audio folder>" if audio else "--train_data_dir <image folder>"
    if audio:
        source = "--modality audio " + (source if kind else "--builtin_dataset synthetic_audio")
        if "synthetic_audio" in source and config.get("builtin_num_clips"):
            source += f" --builtin_num_clips {config['builtin_num_clips']}"
    clips = metrics.audio.num_fake if metrics.audio is not None else None
    num_samples = metrics.num_samples if metrics.num_samples is not None else 1000
    steps = metrics.num_inference_steps if metrics.num_inference_steps is not None else 50
    return (
        f"python -m diffusers_specreg.evaluate --pipeline {repo_id} {source} "
        f"--num_samples {num_samples} --num_inference_steps {steps} "
        # the samples were drawn by the pipeline's own sampler (DDPM ancestral), not the default fast DDIM
        + ("--sampler pipeline " if metrics.sampler and "DDIM" not in metrics.sampler else "")
        + (f"--audio_num_samples {clips} " if clips else "")
        + f"--seed {metrics.seed if metrics.seed is not None else 0} --output_dir eval --update_model_card"
    )


def _metric_table(metrics: EvaluationResult, rows_spec: Sequence) -> list[str]:
    rows = ["| Metric | Value | Meaning |", "| --- | --- | --- |"]
    for value_of, _, name, meaning in rows_spec:
        value = value_of(metrics)
        if value is not None:
            rows.append(f"| {name} | {_format_value(float(value)) if _finite(value) else 'n/a'} | {meaning} |")
    return rows


def render_audio_metrics(metrics: EvaluationResult | Mapping) -> str:
    """The audio metrics table with how the clips were made, or `""` without audio metrics."""
    metrics = EvaluationResult.from_dict(metrics)
    audio = metrics.audio
    if audio is None:
        return ""
    rate, seconds = audio.sample_rate, audio.clip_seconds
    clip = f"{seconds:.3g} s clips at {rate} Hz" if _finite(seconds) and rate else "clips"
    vocoder = f" ({audio.vocoder})" if audio.vocoder else " (Griffin-Lim)"
    fake = audio.num_fake if audio.num_fake is not None else "?"
    real = audio.num_real if audio.num_real is not None else "?"
    return (
        f"Audio metrics: {fake} generated and {real} data mel images were "
        f"turned into {clip} by the same vocoder{vocoder}, so that its artefacts are common to both sets, "
        "and the two sets of clips compared with distances that need no pretrained network "
        "(`diffusers_specreg.audio.audio_metrics`; lower is better, 0 for a set against itself). No FAD: no VGGish "
        "weights are used.\n\n" + "\n".join(_metric_table(metrics, AUDIO_METRIC_ROWS))
    )


def render_evaluation(
    metrics: EvaluationResult | Mapping | None,
    repo_id: str,
    pipeline_class: str | None = None,
    config: Mapping | None = None,
) -> str:
    """The metrics tables (spectral, and audio for audio models) with the evaluation settings, or how to produce
    them."""
    command = evaluation_command(metrics, repo_id, pipeline_class, config)
    if not metrics:
        return f"Not evaluated yet. To add spectral metrics to this card:\n\n```bash\n{command}\n```"
    metrics = EvaluationResult.from_dict(metrics)
    audio = _is_audio_evaluation(metrics, pipeline_class)
    rows = _metric_table(metrics, METRIC_ROWS)
    for value_of, name, meaning in DATA_ROWS:
        value = value_of(metrics)
        if _finite(value):
            rows.append(f"| {name} | {_format_value(float(value))} | {meaning} |")
    dataset = metrics.dataset if isinstance(metrics.dataset, Mapping) else {}
    settings = [
        f"{metrics.num_samples} generated samples" if metrics.num_samples else None,
        f"{metrics.num_real} data images" if metrics.num_real else None,
        f"data: {dataset['name']}" if dataset.get("name") else None,
        f"sampler: {metrics.sampler}" if metrics.sampler else None,
        f"{metrics.num_inference_steps} steps" if metrics.num_inference_steps and not metrics.sampler else None,
        f"seed {metrics.seed}" if metrics.seed is not None else None,
    ]
    settings_text = ", ".join(s for s in settings if s)
    audio_text = render_audio_metrics(metrics)
    return (
        "Spectral metrics computed without any pretrained network (`diffusers_specreg.metrics`): "
        + ("on the mel-spectrogram images, " if audio else "")
        + "radially averaged power spectra of samples and data, their per-band log distance and power-law slopes, "
        "and the Fréchet Wavelet Distance."
        + (f" Settings: {settings_text}." if settings_text else "")
        + "\n\n"
        + "\n".join(rows)
        + (f"\n\n{audio_text}" if audio_text else "")
        + f"\n\nReproduce with:\n\n```bash\n{command}\n```"
    )


def _card_path(evaluation_dir: str, name) -> str | None:
    """`evaluation_dir/name` as a relative POSIX path, `None` for anything that is not a relative path."""
    if not isinstance(name, str) or not name or os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
        return None
    return posixpath.join(evaluation_dir, name) if evaluation_dir else name


def audio_files(
    metrics: EvaluationResult | Mapping | None, output_dir: str | os.PathLike, evaluation_dir: str = ""
) -> dict:
    r"""
    The audio evaluation files named in `metrics.audio` that exist in `output_dir`, as card paths.

    Args:
        metrics (`Mapping`, *optional*): one pipeline's metrics from `evaluate_pipeline`.
        output_dir (`str` or `os.PathLike`): the model folder the card is written to.
        evaluation_dir (`str`, defaults to `""`): folder of `metrics.json` relative to `output_dir`; the file names in
            `metrics.audio` are relative to it.

    Returns:
        `dict`: `spectrogram_figure` (`str` or `None`), `samples` and `data_samples` (`list[str]`), paths relative to
        `output_dir`; missing files are left out (with a warning).
    """
    audio = EvaluationResult.from_dict(metrics or {}).audio
    found: dict = {"spectrogram_figure": None, "samples": [], "data_samples": []}
    if audio is None:
        return found
    missing = []

    def existing(name):
        path = _card_path(evaluation_dir, name)
        if path is not None and os.path.isfile(os.path.join(os.fspath(output_dir), path)):
            return path
        missing.append(str(name))
        return None

    if audio.spectrogram_figure:
        found["spectrogram_figure"] = existing(audio.spectrogram_figure)
    found["samples"] = [path for path in map(existing, audio.samples) if path]
    found["data_samples"] = [path for path in map(existing, audio.data_samples) if path]
    if missing:
        logger.warning(
            "Left out of the model card, not found in %s: %s", os.fspath(output_dir), ", ".join(missing[:5])
        )
    return found


def render_audio(files: Mapping) -> str:
    """The "Audio samples" section: the spectrogram figure and links to the WAV files; `""` without them."""
    parts = []
    if files.get("spectrogram_figure"):
        parts.append(
            f"![Mel spectrograms of generated samples (top) and data (bottom)]({files['spectrogram_figure']})\n\n"
            "*Mel spectrograms (low frequencies at the bottom, time to the right) of generated samples (top row) and "
            "training data (bottom row).*"
        )
    if files.get("samples"):
        links = " · ".join(f"[sample {i}]({path})" for i, path in enumerate(files["samples"]))
        parts.append(f"Generated audio (WAV, Griffin-Lim from the generated mel images): {links}")
    if files.get("data_samples"):
        links = " · ".join(f"[data {i}]({path})" for i, path in enumerate(files["data_samples"]))
        parts.append(f"Training data through the same vocoder, for comparison: {links}")
    if not parts:
        return ""
    return "## Audio samples\n\n" + "\n\n".join(parts) + "\n\n*WAV files are peak-normalised to 0.9 for listening.*"


def render_citations(
    config: Mapping, metrics: EvaluationResult | Mapping | None, pipeline_class: str | list = "DDPMPipeline"
) -> str:
    """BibTeX of the papers this model used: always arXiv 2603.02447, plus the formulation's (SAGD, EDM), spectrum
    matching, FWD, and MR-STFT and NDB for audio metrics."""
    entry = formulation_of(pipeline_class)
    keys = ["2603.02447", *(entry.citations if entry is not None else ())]
    if _uses_spectrum_matching(config):
        keys.append("2603.14645")
    metrics = EvaluationResult.from_dict(metrics or {})
    audio = metrics.audio or AudioScores()
    if _finite(metrics.fwd):
        keys.append("2312.15289")
    if _finite(audio.mrstft):
        keys.append("1910.11480")
    if _finite(audio.ndb_k):
        keys.append("1805.12462")
    blocks = [f"{CITATIONS[key][0]} (arXiv {key}):\n\n```bibtex\n{CITATIONS[key][1]}\n```" for key in keys]
    return "\n\n".join(blocks)


# ---------------------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------------------


def write_model_card(
    output_dir: str | os.PathLike,
    *,
    config: Mapping,
    metrics: EvaluationResult | Mapping | None = None,
    base_model: str | None = None,
    dataset_name: str | None = None,
    pipeline_class: str = "DDPMPipeline",
    sample_grid: str | None = None,
    spectrum_plot: str | None = None,
    usage: str | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    template_path: str | os.PathLike | None = None,
    evaluation_dir: str | None = None,
    write_training_args: bool = True,
) -> str:
    r"""
    Write `output_dir/README.md` (Hub metadata + body) and `output_dir/training_args.json` (the redacted config).
    Both show local paths (of the configuration, `base_model`, `dataset_name`, the metrics' data set) relative to
    `output_dir` when inside it and with the home folder as `~` otherwise ([`publishable_path`]).

    Args:
        output_dir (`str` or `os.PathLike`): the saved pipeline folder (created if missing).
        config (`Mapping`): the full training arguments (`vars(args)`); keys containing "token", "password",
            "secret", "api_key" or "credential" are dropped. Optional extra key `final_spectral_weights`
            (`{loss name: λ}`) shows the λ reached with `--spectral_weight auto`.
        metrics (`EvaluationResult` or `Mapping`, *optional*, defaults to `None`): one pipeline's result of
            `evaluate_pipeline` (or its `metrics.json` dict).
        base_model (`str`, *optional*, defaults to `None`): the model fine-tuned from; `None` uses
            `config["pretrained_model_name_or_path"]`. Only Hub ids go into the metadata.
        dataset_name (`str`, *optional*, defaults to `None`): the training dataset; `None` uses
            `config["dataset_name"]`. Only Hub ids go into the `datasets` metadata.
        pipeline_class (`str` or `list`, defaults to `"DDPMPipeline"`): the saved pipeline class, e.g.
            `"EDMPipeline"`, `["pipeline", "SAGDPipeline"]` (a `model_index.json` `_class_name`),
            `"AudioDiffusionPipeline"`; its formulation (`diffusers_specreg.formulations`) gives the usage snippet,
            tags and citations.
        sample_grid (`str`, *optional*, defaults to `None`): path of a sample grid image, relative to `output_dir`.
        spectrum_plot (`str`, *optional*, defaults to `None`): path of a RAPSD plot, relative to `output_dir`.
        usage (`str`, *optional*, defaults to `None`): markdown replacing the generated usage snippet.
        repo_id (`str`, *optional*, defaults to `None`): the id the snippets load; `None` uses
            `config["hub_model_id"]`, else the folder name.
        license (`str`, *optional*, defaults to `None`): a Hub license id for the metadata.
        template_path (`str` or `os.PathLike`, *optional*, defaults to `None`): another `string.Template` file with
            the placeholders of `model_cards/template.md`.
        evaluation_dir (`str`, *optional*, defaults to `None`): the folder, relative to `output_dir`, of the
            evaluation's `metrics.json`; the audio files named in `metrics.audio` (spectrogram figure, WAVs) are
            relative to it. `None` takes the folder of `sample_grid` (`"evaluation"` for `"evaluation/samples.png"`).
        write_training_args (`bool`, defaults to `True`): also write `training_args.json`.

    Returns:
        `str`: the path of the written `README.md`.
    """
    from huggingface_hub import ModelCard

    output_dir = os.fspath(output_dir)
    pipeline_class = class_name(pipeline_class)
    if evaluation_dir is None:
        evaluation_dir = posixpath.dirname(sample_grid.replace("\\", "/")) if sample_grid else ""
    for name, value in (
        ("sample_grid", sample_grid),
        ("spectrum_plot", spectrum_plot),
        ("evaluation_dir", evaluation_dir or None),
    ):
        if value is not None and (os.path.isabs(value) or value.startswith("..")):
            raise ValueError(f"`{name}` must be a path relative to output_dir (a Hub repo file), got {value!r}.")
    config = redact_config(dict(config), output_dir)
    metrics = EvaluationResult.from_dict(metrics) if metrics else None
    if metrics is not None and isinstance(metrics.dataset, Mapping):
        metrics = dataclasses.replace(metrics, dataset=redact_config(metrics.dataset, output_dir))
    # local paths as publishable_path writes them (a Hub id stays as it is: it is looked up as a path first)
    if base_model is None:
        base_model = config.get("pretrained_model_name_or_path") or None
    elif not is_hub_id(base_model):
        base_model = publishable_path(base_model, output_dir)
    if dataset_name is None:
        dataset_name = config.get("dataset_name") or None
    elif not is_hub_id(dataset_name):
        dataset_name = publishable_path(dataset_name, output_dir)
    folder_name = os.path.basename(os.path.normpath(os.path.abspath(output_dir)))
    if repo_id is None:
        repo_id = config.get("hub_model_id") or folder_name
    num_steps = config.get("ddpm_num_inference_steps")
    train_steps = config.get("ddpm_num_steps")

    data = model_card_data(
        config=config,
        metrics=metrics,
        base_model=base_model,
        dataset_name=dataset_name,
        pipeline_class=pipeline_class,
        model_name=repo_id.split("/")[-1],
        license=license,
    )
    body = load_template(template_path).substitute(
        metadata=data.to_yaml(),
        title=repo_id.split("/")[-1],
        summary=render_summary(config, base_model, dataset_name, pipeline_class),
        samples=render_samples(sample_grid, spectrum_plot, metrics.sampler if metrics else None),
        audio=render_audio(audio_files(metrics, output_dir, evaluation_dir)),
        usage=usage if usage is not None else render_usage(pipeline_class, repo_id, num_steps, train_steps),
        training=render_training(config),
        config_table=render_config_table(config),
        evaluation=render_evaluation(metrics, repo_id, pipeline_class, config),
        citations=render_citations(config, metrics, pipeline_class),
    )
    card = ModelCard(body)  # parses and checks the YAML metadata
    os.makedirs(output_dir, exist_ok=True)
    if write_training_args:
        with open(os.path.join(output_dir, TRAINING_ARGS_FILE), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True, default=str)
    path = os.path.join(output_dir, "README.md")
    card.save(path)
    return path


def update_model_card(
    output_dir: str | os.PathLike,
    metrics: EvaluationResult | Mapping,
    *,
    sample_grid: str | None = None,
    spectrum_plot: str | None = None,
    evaluation_dir: str | None = None,
) -> str:
    r"""
    Rewrite `output_dir/README.md` with new metrics (and images), keeping what the previous card recorded.

    The training configuration comes from `output_dir/training_args.json` (written by `write_model_card`),
    `base_model` and `datasets` from the existing card's metadata, the pipeline class from `model_index.json`. A
    `README.md`, `training_args.json` or `evaluation/` that no training run wrote (see [`foreign_card_files`]) is
    never replaced: `ValueError`, and nothing is written. A folder without `training_args.json` does not get one.

    Args:
        output_dir (`str` or `os.PathLike`): the saved pipeline folder.
        metrics (`EvaluationResult` or `Mapping`): one pipeline's result of `evaluate_pipeline`.
        sample_grid (`str`, *optional*, defaults to `None`): sample grid path relative to `output_dir`.
        spectrum_plot (`str`, *optional*, defaults to `None`): RAPSD plot path relative to `output_dir`.
        evaluation_dir (`str`, *optional*, defaults to `None`): folder of the evaluation files named in
            `metrics.audio`, relative to `output_dir` (see `write_model_card`).

    Returns:
        `str`: the path of the rewritten `README.md`.
    """
    from huggingface_hub import ModelCard

    output_dir = os.fspath(output_dir)
    error = card_update_error(output_dir)
    if error is not None:
        raise ValueError(error)
    config: dict = {}
    args_path = os.path.join(output_dir, TRAINING_ARGS_FILE)
    if os.path.isfile(args_path):
        with open(args_path, encoding="utf-8") as f:
            config = json.load(f)
    else:
        logger.warning(
            "%s has no %s; the card will not list the training configuration.", output_dir, TRAINING_ARGS_FILE
        )
    base_model = dataset_name = None
    readme = os.path.join(output_dir, "README.md")
    if os.path.isfile(readme):
        previous = ModelCard.load(readme).data
        base_model = previous.base_model if isinstance(previous.base_model, str) else None
        datasets = previous.datasets
        dataset_name = (
            datasets[0] if isinstance(datasets, Sequence) and datasets and not isinstance(datasets, str) else datasets
        )
    pipeline_class = "DDPMPipeline"
    index = os.path.join(output_dir, "model_index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            pipeline_class = json.load(f).get("_class_name", pipeline_class)
    return write_model_card(
        output_dir,
        config=config,
        metrics=metrics,
        base_model=base_model,
        dataset_name=dataset_name,
        pipeline_class=pipeline_class,
        sample_grid=sample_grid,
        spectrum_plot=spectrum_plot,
        evaluation_dir=evaluation_dir,
        write_training_args=os.path.isfile(args_path),
    )


# what a card update writes into a model folder
CARD_UPDATE_FILES = ("README.md", TRAINING_ARGS_FILE, "evaluation")


def foreign_card_files(output_dir: str | os.PathLike) -> list[str]:
    r"""
    The files of a model folder that a card update would replace but no training run wrote there: `README.md`,
    `training_args.json` and `evaluation/`, unless the run's record (`.train_spectral_outputs.json`) lists them or,
    for folders of older versions, they are ours by their content (a card tagged `diffusers-specreg`, training
    arguments with `spectral_loss` and `formulation`); `diffusers_specreg.run_settings` decides, as for a training
    run into the folder.

    Args:
        output_dir (`str` or `os.PathLike`): the model folder.

    Returns:
        `list[str]`: the names, in the order above; empty when the update may go ahead.
    """
    from .run_settings import previous_outputs

    output_dir = os.fspath(output_dir)
    ours = set(previous_outputs(output_dir, None))
    return [n for n in CARD_UPDATE_FILES if os.path.exists(os.path.join(output_dir, n)) and n not in ours]


def card_update_error(output_dir: str | os.PathLike) -> str | None:
    """Why the model card of `output_dir` may not be updated (files no run wrote, [`foreign_card_files`]), or `None`."""
    foreign = foreign_card_files(output_dir)
    if not foreign:
        return None
    return (
        f"{os.fspath(output_dir)} holds {', '.join(foreign)}, which no training run wrote; updating its model card "
        "(--update_model_card) would replace it. Move it elsewhere, or evaluate without --update_model_card (the "
        "results stay in --output_dir)."
    )


__all__ = [
    "AUDIO_METRIC_ROWS",
    "AUDIO_TASK",
    "IMAGE_TASK",
    "METRIC_ROWS",
    "audio_files",
    "card_tags",
    "card_update_error",
    "eval_results",
    "foreign_card_files",
    "is_hub_id",
    "load_template",
    "model_card_data",
    "publishable_path",
    "redact_config",
    "render_audio",
    "render_audio_metrics",
    "render_usage",
    "update_model_card",
    "write_model_card",
]
