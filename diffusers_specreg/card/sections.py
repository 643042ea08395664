"""The body of a model card, one function per section: summary, samples, audio samples, training facts, the
configuration table, the evaluation (metrics tables and the command that reproduces them) and the citations."""

from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Mapping, Sequence

from ..kinds import kind_of
from ..metrics.results import AudioScores, EvaluationResult
from .metadata import is_finite_number, is_hub_id, modality_of, redact_config, uses_spectrum_matching
from .tables import AUDIO_METRIC_ROWS, CITATIONS, DATA_ROWS, METRIC_ROWS, SPECTRAL_KEYS

logger = logging.getLogger(__name__)


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


def _is_coloured(noise_spectrum) -> bool:
    return bool(noise_spectrum) and str(noise_spectrum).strip().lower() not in ("white", "none", "powerlaw:alpha=0")


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
        if is_finite_number(value):
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
            rows.append(
                f"| {name} | {_format_value(float(value)) if is_finite_number(value) else 'n/a'} | {meaning} |"
            )
    return rows


def render_audio_metrics(metrics: EvaluationResult | Mapping) -> str:
    """The audio metrics table with how the clips were made, or `""` without audio metrics."""
    metrics = EvaluationResult.from_dict(metrics)
    audio = metrics.audio
    if audio is None:
        return ""
    rate, seconds = audio.sample_rate, audio.clip_seconds
    clip = f"{seconds:.3g} s clips at {rate} Hz" if is_finite_number(seconds) and rate else "clips"
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
        if is_finite_number(value):
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
    entry = kind_of(pipeline_class)
    keys = ["2603.02447", *(entry.citations if entry is not None else ())]
    if uses_spectrum_matching(config):
        keys.append("2603.14645")
    metrics = EvaluationResult.from_dict(metrics or {})
    audio = metrics.audio or AudioScores()
    if is_finite_number(metrics.fwd):
        keys.append("2312.15289")
    if is_finite_number(audio.mrstft):
        keys.append("1910.11480")
    if is_finite_number(audio.ndb_k):
        keys.append("1805.12462")
    blocks = [f"{CITATIONS[key][0]} (arXiv {key}):\n\n```bibtex\n{CITATIONS[key][1]}\n```" for key in keys]
    return "\n\n".join(blocks)
