"""Reports: comparison tables, plots, WAV files, `metrics.json` and the model-card update."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from ..card import card_update_error, publishable_path, update_model_card
from ..metrics.results import AUDIO_FILES, EvaluationResult, PipelineResult, library_versions
from ..plots import new_figure, plot_band_errors, plot_rapsd, save_figure, save_image_grid
from .statistics import ReferenceStatistics

SPECTROGRAM_FIGURE = "spectrograms.png"
AUDIO_FOLDER = "audio"
AUDIO_COLUMNS = (
    ("MR-STFT", "mrstft"),
    ("LSD (dB)", "log_spectral_distance"),
    ("Fréchet log-mel", "frechet_log_mel"),
    ("NDB/K", "ndb_k"),
    ("NDB JS", "ndb_js"),
)


def _safe_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
    return safe if safe.strip(".") else "model"  # never "", "." or "..": a name becomes a folder of audio/


def file_stems(names: Sequence[str]) -> dict[str, str]:
    r"""
    The part of the file names (`samples_<stem>.png`, `spectrograms_<stem>.png`, `audio/<stem>/`) of each result
    name, distinct for distinct names, also on a case-insensitive file system: a name that is a safe file name is
    kept; any other is sanitised and tagged with a hash of the name (`"λ=1"` -> `"1-<8 hex digits>"`), so that
    names which sanitise alike (`"λ=1"` and `"μ=1"`, `"MSE"` and `"MSE*"`) never share a file; names equal but for
    case get `-2`, `-3`, ....

    Args:
        names (`Sequence[str]`): the result names, unique.

    Returns:
        `dict[str, str]`: name -> stem.
    """
    stems: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        safe = _safe_name(name)
        stem = safe if safe == name else f"{safe}-{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"
        base, i = stem, 2
        while stem.lower() in taken:
            stem, i = f"{base}-{i}", i + 1
        taken.add(stem.lower())
        stems[name] = stem
    return stems


def json_ready(value):
    """`value` with mappings, sequences, arrays and paths turned into JSON types and NaN / inf into `None` (JSON has no
    NaN); used for `metrics.json` and the benchmark records."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_ready(v) for v in value.tolist()]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def comparison_table(results: Sequence[EvaluationResult | Mapping], data_slope: float | None = None) -> str:
    r"""
    Markdown table comparing pipelines; the best value of each metric column is in bold.

    Args:
        results (`Sequence[EvaluationResult]`): results of `evaluate_pipeline` (or their `metrics.json` dicts).
        data_slope (`float`, *optional*, defaults to `None`): adds a "data" row with the data's spectral slope.

    Returns:
        `str`: the table, one row per pipeline.
    """
    results = [EvaluationResult.from_dict(r) for r in results]
    columns = [
        ("log-RAPSD all", lambda r: r.log_rapsd_distance.all, abs),
        ("low", lambda r: r.log_rapsd_distance.low, abs),
        ("mid", lambda r: r.log_rapsd_distance.mid, abs),
        ("high", lambda r: r.log_rapsd_distance.high, abs),
        ("slope", lambda r: r.slope.model, None),
        ("slope gap", lambda r: r.slope.gap, abs),
        ("FWD", lambda r: r.fwd, abs),
    ]
    if any(r.fid is not None for r in results):
        extractors = {r.feature_extractor for r in results if r.fid is not None}
        label = (
            "FID" if extractors == {None} else "FD[" + ", ".join(sorted(e or "Inception" for e in extractors)) + "]"
        )
        columns.append((label, lambda r: r.fid, abs))
    header = "| model | " + " | ".join(c[0] for c in columns) + " | samples | steps |"
    lines = [header, "|" + " --- |" * (len(columns) + 3)]
    values = [[_finite_or_nan(getter(r)) for _, getter, _ in columns] for r in results]
    best = []
    for j, (_, _, key) in enumerate(columns):
        scores = [key(row[j]) if key is not None and math.isfinite(row[j]) else math.nan for row in values]
        finite = [s for s in scores if math.isfinite(s)]
        best.append(min(finite) if finite and len(results) > 1 else None)
    for r, row in zip(results, values):
        cells = []
        for j, (_, _, key) in enumerate(columns):
            text = f"{row[j]:.4g}" if math.isfinite(row[j]) else "n/a"
            if best[j] is not None and key is not None and math.isfinite(row[j]) and key(row[j]) == best[j]:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {r.name} | " + " | ".join(cells) + f" | {r.num_samples} | {r.num_inference_steps} |")
    if data_slope is not None and math.isfinite(data_slope):
        cells = ["—"] * len(columns)
        cells[4] = f"{data_slope:.4g}"
        lines.append("| data | " + " | ".join(cells) + " | | |")
    return "\n".join(lines)


def audio_comparison_table(results: Sequence[EvaluationResult | Mapping]) -> str:
    r"""
    Markdown table of the audio metrics (`"audio"` of `evaluate_pipeline`), lower is better, the best in bold.

    Args:
        results (`Sequence[EvaluationResult]`): results of `evaluate_pipeline` (or their `metrics.json` dicts); those
            without audio metrics are left out.

    Returns:
        `str`: the table, or `""` when no result has audio metrics.
    """
    rows = [r for r in map(EvaluationResult.from_dict, results) if r.audio is not None]
    if not rows:
        return ""
    lines = ["| model | " + " | ".join(c[0] for c in AUDIO_COLUMNS) + " | clips | s per clip |"]
    lines.append("|" + " --- |" * (len(AUDIO_COLUMNS) + 3))
    values = [[_finite_or_nan(getattr(r.audio, key)) for _, key in AUDIO_COLUMNS] for r in rows]
    best = []
    for j in range(len(AUDIO_COLUMNS)):
        finite = [row[j] for row in values if math.isfinite(row[j])]
        best.append(min(finite) if finite and len(rows) > 1 else None)
    for r, row in zip(rows, values):
        cells = []
        for j, value in enumerate(row):
            text = f"{value:.4g}" if math.isfinite(value) else "n/a"
            cells.append(f"**{text}**" if best[j] is not None and value == best[j] else text)
        clips = f"{r.audio.num_fake if r.audio.num_fake is not None else '?'} vs "
        clips += f"{r.audio.num_real if r.audio.num_real is not None else '?'}"
        seconds = _finite_or_nan(r.audio.clip_seconds)
        lines.append(f"| {r.name} | " + " | ".join(cells) + f" | {clips} | {seconds:.3g} |")
    return "\n".join(lines)


def _finite_or_nan(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def plot_mel_images(
    generated: np.ndarray,
    data: np.ndarray | None = None,
    mel: Mapping | None = None,
    path: str | os.PathLike | None = None,
    columns: int = AUDIO_FILES,
    title: str | None = None,
):
    r"""
    A few generated mel-spectrogram images (top row) above data ones (bottom row), low frequencies at the bottom.

    Args:
        generated (`np.ndarray`): uint8 `[N, y_res, x_res]` generated mel images (row 0 = lowest mel band, as `Mel`
            writes them).
        data (`np.ndarray`, *optional*, defaults to `None`): uint8 `[M, y_res, x_res]` data mel images.
        mel (`Mapping`, *optional*, defaults to `None`): `mel_settings` of the `Mel`, for a time axis in seconds and
            the dB scale in the title.
        path (`str` or `os.PathLike`, *optional*, defaults to `None`): save the figure there (PNG).
        columns (`int`, defaults to `4`): images per row.
        title (`str`, *optional*, defaults to `None`): figure title.

    Returns:
        `matplotlib.figure.Figure`
    """
    rows = [("generated", np.asarray(generated))]
    if data is not None:
        rows.append(("data", np.asarray(data)))
    for label, images in rows:
        if images.ndim != 3 or len(images) == 0:
            raise ValueError(
                f"`{label}` mel images must have shape [N, y_res, x_res] with N >= 1, got {images.shape}."
            )
    columns = max(1, min(columns, max(len(images) for _, images in rows)))
    figure = new_figure((2.4 * columns + 0.8, 2.2 * len(rows) + 0.7), dpi=100)
    height, width = rows[0][1].shape[1:]
    seconds = width * mel["hop_length"] / mel["sample_rate"] if mel else None
    extent = (0.0, seconds if seconds else float(width), 0.0, float(height))
    for r, (label, images) in enumerate(rows):
        for c in range(columns):
            axes = figure.add_subplot(len(rows), columns, r * columns + c + 1)
            if c < len(images):
                axes.imshow(images[c], origin="lower", aspect="auto", cmap="magma", vmin=0, vmax=255, extent=extent)
                axes.set_title(f"{label} {c}", fontsize=9)
            else:
                axes.set_axis_off()
            axes.tick_params(labelsize=7)
            if c == 0:
                axes.set_ylabel("mel band", fontsize=8)
            if r == len(rows) - 1:
                axes.set_xlabel("time (s)" if seconds else "frame", fontsize=8)
    scale = f" (0 = -{mel['top_db']} dB, 255 = loudest bin)" if mel else ""
    figure.suptitle((title or "Mel spectrograms") + scale, fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)
    return figure


def write_wav(path: str | os.PathLike, clip: np.ndarray, sample_rate: int, peak: float = 0.9) -> None:
    r"""
    Write a clip as 16-bit PCM WAV (soundfile), scaled to a peak of `peak` for listening (a silent clip as it is).

    Args:
        path (`str` or `os.PathLike`): output file; its folder is created.
        clip (`np.ndarray`): float `[T]`.
        sample_rate (`int`): sample rate in Hz.
        peak (`float`, defaults to `0.9`): peak amplitude of the file.
    """
    import soundfile

    clip = np.asarray(clip, dtype=np.float32)
    if clip.ndim != 1:
        raise ValueError(f"`clip` must have shape [T], got {list(clip.shape)}.")
    largest = float(np.abs(clip).max()) if clip.size else 0.0
    if largest > 0:
        clip = clip * (peak / largest)
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    soundfile.write(os.fspath(path), clip, int(sample_rate), subtype="PCM_16")


def _write_audio_files(
    output_dir: str, result: PipelineResult, reference: ReferenceStatistics, figure: str, sample_folder: str
) -> dict[str, str | list[str]]:
    """Write the spectrogram figure and the WAVs of one audio result; returns their paths relative to `output_dir`
    (`spectrogram_figure`, `samples`, `data_samples`)."""
    sample_rate = result.metrics.audio.sample_rate
    plot_mel_images(
        result.mel_images,
        reference.mel_images[:AUDIO_FILES] if reference.mel_images is not None else None,
        result.metrics.audio.mel,
        os.path.join(output_dir, figure),
        title=f"Mel spectrograms: {result.name} (top) and data (bottom)",
    )
    samples = []
    for i, clip in enumerate(result.audio):
        name = f"{sample_folder}/sample_{i}.wav"
        write_wav(os.path.join(output_dir, name), clip, sample_rate)
        samples.append(name)
    data = []
    for i, clip in enumerate(reference.audio[: len(result.audio)]):
        name = f"{AUDIO_FOLDER}/data_{i}.wav"
        if not os.path.isfile(os.path.join(output_dir, name)):
            write_wav(os.path.join(output_dir, name), clip, sample_rate)
        data.append(name)
    return {"spectrogram_figure": figure, "samples": samples, "data_samples": data}


def write_report(
    output_dir: str | os.PathLike,
    results: Sequence[PipelineResult],
    reference: ReferenceStatistics,
    single: bool = False,
) -> dict:
    r"""
    Write `metrics.json`, sample grids, `rapsd.png`, `band_errors.png` and `comparison.md` into `output_dir`; for
    audio results also `spectrograms.png` (`spectrograms_<name>.png` unless `single`), the WAVs
    `audio/sample_<i>.wav` (`audio/<name>/sample_<i>.wav` unless `single`) and `audio/data_<i>.wav`. `<name>` is
    the result's name where it is a safe file name, else sanitised and tagged with a hash of it ([`file_stems`]):
    one model's files never replace another's; `metrics.json` names each model's files.

    Args:
        output_dir (`str` or `os.PathLike`): created if missing.
        results (`Sequence[PipelineResult]`): evaluated pipelines, names unique.
        reference (`ReferenceStatistics`): the data statistics they were compared with.
        single (`bool`, defaults to `False`): one pipeline, grid saved as `samples.png` (else `samples_<name>.png`).

    Returns:
        `dict`: the content of `metrics.json`.
    """
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    curves = {"data": reference.spectrum}
    stems = file_stems([r.name for r in results])
    for result in results:
        grid_name = "samples.png" if single else f"samples_{stems[result.name]}.png"
        save_image_grid(result.grid, os.path.join(output_dir, grid_name))
        files = {"sample_grid": grid_name, "spectrum_plot": "rapsd.png"}
        curves[result.name] = result.spectrum
        if result.audio is not None and reference.audio is not None:
            figure = SPECTROGRAM_FIGURE if single else f"spectrograms_{stems[result.name]}.png"
            folder = AUDIO_FOLDER if single else f"{AUDIO_FOLDER}/{stems[result.name]}"
            files.update(_write_audio_files(output_dir, result, reference, figure, folder))
        result.metrics = result.metrics.with_files(**files)
    plot_rapsd(
        curves, os.path.join(output_dir, "rapsd.png"), reference="data", title="Radially averaged power spectra"
    )
    plot_band_errors(
        {r.name: dataclasses.asdict(r.metrics.log_rapsd_distance) for r in results},
        os.path.join(output_dir, "band_errors.png"),
        title="log-RAPSD distance to the data, per band",
    )
    table = comparison_table([r.metrics for r in results], data_slope=results[0].metrics.slope.data)
    audio_table = audio_comparison_table([r.metrics for r in results])
    with open(os.path.join(output_dir, "comparison.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
        if audio_table:
            f.write(f"\nAudio (Griffin-Lim clips of the mel images):\n\n{audio_table}\n")
    report = {
        "data": {
            **reference.dataset,
            "num_samples": reference.num_samples,
            "shape": list(reference.shape),
            "slope": results[0].metrics.slope.data,
        },
        "pipelines": {r.name: r.metrics.to_dict() for r in results},
        "spectra": {
            "frequencies": reference.spectrum.frequencies,
            "data": reference.spectrum.power,
            **{r.name: r.spectrum.power for r in results},
        },
        "versions": library_versions(),
    }
    if reference.audio is not None:
        report["data"]["audio"] = {"num_clips": len(reference.audio), "mel": reference.mel}
    with open(os.path.join(output_dir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(json_ready(report), f, indent=2)
    return report


def update_pipeline_card(path: str, result: PipelineResult, reference: ReferenceStatistics) -> str:
    """Copy the pipeline's evaluation into `<path>/evaluation/` and rewrite its model card with it."""
    from ..train.output_dir import record_outputs

    error = card_update_error(path)  # before anything is written: a folder holding files no run wrote is refused
    if error is not None:
        raise ValueError(error)
    record_outputs(path, ["evaluation", "README.md"])  # what this update writes stays the run's
    folder = os.path.join(path, "evaluation")
    os.makedirs(folder, exist_ok=True)
    save_image_grid(result.grid, os.path.join(folder, "samples.png"))
    plot_rapsd(
        {"data": reference.spectrum, result.name: result.spectrum},
        os.path.join(folder, "rapsd.png"),
        reference="data",
        title="Radially averaged power spectra",
    )
    # paths inside metrics.json are relative to its folder, as evaluate_pipeline(output_dir=...) writes them
    files = {"sample_grid": "samples.png", "spectrum_plot": "rapsd.png"}
    if result.audio is not None and reference.audio is not None:
        files.update(_write_audio_files(folder, result, reference, SPECTROGRAM_FIGURE, AUDIO_FOLDER))
    # published with the folder: its own path is ".", not the local path it was evaluated at
    metrics = dataclasses.replace(result.metrics, pipeline=publishable_path(os.path.abspath(path), path))
    metrics = metrics.with_files(**files)
    with open(os.path.join(folder, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(json_ready(metrics.to_dict()), f, indent=2)
    return update_model_card(
        path,
        metrics,
        sample_grid="evaluation/samples.png",
        spectrum_plot="evaluation/rapsd.png",
        evaluation_dir="evaluation",
    )
