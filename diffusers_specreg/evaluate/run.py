"""Evaluating one pipeline against reference statistics in one streaming pass."""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch

from ..metrics import (
    RAPSD,
    FrechetWaveletDistance,
    PowerSpectrum,
    RunningMoments,
    frechet_from_moments,
    log_rapsd_distance,
    spectral_slope,
)
from ..metrics.results import (
    AUDIO_FILES,
    BANDS,
    AudioScores,
    BandDistances,
    EvaluationResult,
    PipelineResult,
    SpectralSlopes,
    library_versions,
)
from .report import write_report
from .sampling import generate_images, image_shape, is_audio_pipeline, make_sampler, mel_settings
from .statistics import (
    ImageBatches,
    InceptionFeatures,
    ReferenceStatistics,
    audio_dataset_info,
    audio_sample_limit,
    mel_images_to_uint8,
)

logger = logging.getLogger("diffusers_specreg.evaluate")


def evaluate_against(
    pipeline,
    reference: ReferenceStatistics,
    name: str = "model",
    num_samples: int = 1000,
    batch_size: int = 16,
    num_inference_steps: int = 50,
    seed: int = 0,
    grid_size: int = 64,
    fid_extractor: InceptionFeatures | None = None,
    progress: bool = True,
    audio_num_samples: int | None = None,
    num_audio_files: int = AUDIO_FILES,
    on_samples: Callable[[torch.Tensor], None] | None = None,
    sampler: str = "fast",
) -> PipelineResult:
    r"""
    Evaluate one pipeline against reference statistics computed before, in one streaming pass over its samples.

    Args:
        pipeline (`DiffusionPipeline`): see [`evaluate_pipeline`].
        reference (`ReferenceStatistics`): the data's statistics, `ReferenceStatistics.from_images`.
        name (`str`, defaults to `"model"`): the pipeline's name in reports and plots.
        num_samples (`int`, defaults to `1000`): images to generate.
        batch_size (`int`, defaults to `16`): images per pipeline call.
        num_inference_steps (`int`, defaults to `50`): denoising steps.
        seed (`int`, defaults to `0`): image `i` is drawn with the generator of `image_generators(seed, i, 1)`.
        grid_size (`int`, defaults to `64`): images in the sample grid.
        fid_extractor (`InceptionFeatures`, *optional*, defaults to `None`): also compute FID.
        progress (`bool`, defaults to `True`): show progress bars.
        audio_num_samples (`int`, *optional*, defaults to `None`): clips per side for the audio metrics, `None` for
            `min(num_samples, 32)`; Griffin-Lim is the slow part.
        num_audio_files (`int`, defaults to `4`): generated (and data) clips written as WAV files.
        on_samples (`Callable[[torch.Tensor], None]`, *optional*): called with every batch of samples `[B, C, H, W]`
            in `[-1, 1]`, for statistics of the caller's own (the benchmarks count saturated pixels with it).
        sampler (`"fast"` or `"pipeline"`, defaults to `"fast"`): DDIM (eta 0) or the pipeline's own sampler (DDPM:
            ancestral), see `sampling.make_sampler`.

    Returns:
        [`PipelineResult`]: the typed metrics ([`EvaluationResult`]), the sample spectrum, the grid (and audio).
    """
    with_audio = _check_pipeline(pipeline, reference, name)
    audio_limit = audio_sample_limit(num_samples, audio_num_samples) if with_audio else 0
    _, sampler_description = make_sampler(pipeline, num_inference_steps, sampler)
    batches = generate_images(
        pipeline, num_samples, batch_size, num_inference_steps, seed, progress, f"sampling {name}", sampler
    )
    streamed = _stream_samples(batches, reference, name, fid_extractor, grid_size, audio_limit, on_samples)
    metrics = EvaluationResult(
        name=name,
        pipeline_class=type(pipeline).__name__,
        sampler=sampler_description,
        num_samples=num_samples,
        num_real=reference.num_samples,
        num_inference_steps=num_inference_steps,
        batch_size=batch_size,
        seed=seed,
        sampling_seconds=streamed.seconds,
        dataset=dict(reference.dataset),
        versions=library_versions(),
    )
    psd = streamed.spectrum.compute()
    metrics = _spectral_metrics(metrics, psd, streamed, reference)
    if not with_audio:
        return PipelineResult(name, metrics, psd, torch.cat(streamed.grid)[:grid_size])
    scores, clips, mel_images = _audio_scores(pipeline, reference, streamed.mel_images, seed)
    metrics = dataclasses.replace(metrics, audio=scores)
    grid = torch.cat(streamed.grid)[:grid_size]
    return PipelineResult(name, metrics, psd, grid, clips[:num_audio_files], mel_images[:AUDIO_FILES])


def _check_pipeline(pipeline, reference: ReferenceStatistics, name: str) -> bool:
    """`ValueError` for a pipeline whose samples cannot be compared with the data (shape, Mel settings); `True` when
    it is evaluated as audio too (an `AudioDiffusionPipeline` and reference statistics with audio)."""
    shape = image_shape(pipeline)
    if shape != reference.shape:
        raise ValueError(
            f"Pipeline {name!r} generates [B, {', '.join(map(str, shape))}] images but the data images have shape "
            f"[B, {', '.join(map(str, reference.shape))}]; pass --resolution / data with the model's size and channels."
        )
    with_audio = is_audio_pipeline(pipeline) and reference.audio is not None
    if is_audio_pipeline(pipeline) and reference.audio is None:
        logger.warning(
            "%s is an AudioDiffusionPipeline but the reference statistics hold no audio (computed without `mel`): "
            "no audio metrics.",
            name,
        )
    if with_audio and mel_settings(pipeline.mel) != reference.mel:
        raise ValueError(
            f"Pipeline {name!r} has the Mel settings {mel_settings(pipeline.mel)} but the reference audio was made "
            f"with {reference.mel}; compare like with like."
        )
    return with_audio


@dataclasses.dataclass
class _Streamed:
    """What one pass over the samples accumulated: the spectrum sums, the FWD and FID statistics, the first images,
    and the seconds it took."""

    spectrum: RAPSD
    fwd: FrechetWaveletDistance | None
    fid_moments: RunningMoments | None
    grid: list[torch.Tensor]
    mel_images: list[np.ndarray]
    seconds: float


def _stream_samples(
    batches: Iterable[torch.Tensor],
    reference: ReferenceStatistics,
    name: str,
    fid_extractor: InceptionFeatures | None,
    grid_size: int,
    audio_limit: int,
    on_samples: Callable[[torch.Tensor], None] | None,
) -> _Streamed:
    """1. One streaming pass over the samples: spectrum sums, FWD packet moments, FID moments, the first images (and
    the first `audio_limit` mel images as uint8)."""
    spectrum = RAPSD()
    fwd = copy.deepcopy(reference.fwd) if reference.fwd is not None else None
    fid_moments = RunningMoments() if reference.fid_moments is not None and fid_extractor is not None else None
    grid: list[torch.Tensor] = []
    mel_kept: list[np.ndarray] = []
    kept = 0
    start = time.perf_counter()
    for images in batches:
        if not torch.isfinite(images).all():
            raise ValueError(f"Pipeline {name!r} produced non-finite samples.")
        spectrum.update(images)
        if on_samples is not None:
            on_samples(images)
        if fwd is not None:
            fwd.update(images, real=False)
        if fid_moments is not None:
            fid_moments.update(fid_extractor(images))
        if kept < grid_size:
            grid.append(images[: grid_size - kept])
            kept += grid[-1].shape[0]
        mel_count = sum(len(m) for m in mel_kept)
        if mel_count < audio_limit:
            mel_kept.append(mel_images_to_uint8(images[: audio_limit - mel_count]))
    return _Streamed(spectrum, fwd, fid_moments, grid, mel_kept, time.perf_counter() - start)


def _spectral_metrics(
    metrics: EvaluationResult, psd: PowerSpectrum, streamed: _Streamed, reference: ReferenceStatistics
) -> EvaluationResult:
    """`metrics` with the spectral distances and slopes of the samples' spectrum `psd`, their FWD and FID."""
    # 2. mean |Δ log10 P| of the radial spectra, overall and per third of [0, Nyquist]
    fwd = streamed.fwd
    distances = log_rapsd_distance(psd, reference.spectrum)
    # 3. power-law exponents; gap < 0 means the samples lack high frequencies (the blur of MSE training)
    slope_data = spectral_slope(reference.spectrum.frequencies, reference.spectrum)
    slope_model = spectral_slope(psd.frequencies, psd)
    metrics = dataclasses.replace(
        metrics,
        log_rapsd_distance=BandDistances(**{band: distances[band] for band in BANDS}),
        slope=SpectralSlopes(data=slope_data, model=slope_model, gap=slope_model - slope_data),
        fwd=float(fwd.compute()) if fwd is not None else float("nan"),
        fwd_wavelet=fwd.wavelet if fwd is not None else None,
        fwd_level=fwd.level if fwd is not None else None,
    )
    # 4. Fréchet distances: per wavelet packet averaged (FWD, arXiv 2312.15289), Inception features (FID)
    if streamed.fid_moments is not None:
        fid = float(frechet_from_moments(reference.fid_moments, streamed.fid_moments, "eigh", "FID"))
        metrics = dataclasses.replace(metrics, fid=fid)
    if fwd is not None:
        features = int(np.prod(reference.shape)) // 4**fwd.level
        if min(metrics.num_samples, reference.num_samples) < 2 * features:
            logger.warning(
                "FWD of %s uses %d packet features with %d samples: covariances from fewer than 2x as many samples "
                "as features are noisy; compare FWD values only at equal sample counts.",
                metrics.name,
                features,
                min(metrics.num_samples, reference.num_samples),
            )
    return metrics


def _audio_scores(
    pipeline, reference: ReferenceStatistics, mel_kept: list[np.ndarray], seed: int
) -> tuple[AudioScores, np.ndarray, np.ndarray]:
    """5. Audio: the samples' mel images through the same seeded Griffin-Lim as the data's (ReferenceStatistics),
    then set distances between the two sets of clips (MR-STFT arXiv 1910.11480, LSD, Fréchet log-mel, NDB arXiv
    1805.12462). Returns the scores, the clips `[N, T]` and the mel images `[N, H, W]`."""
    from ..audio import audio_metrics, mel_images_to_audio

    start = time.perf_counter()
    mel_images = np.concatenate(mel_kept)
    clips = mel_images_to_audio(mel_images, pipeline.mel, seed=seed)
    sample_rate = int(pipeline.mel.get_sample_rate())
    scores = AudioScores(
        **audio_metrics(reference.audio, clips, sample_rate, seed=seed),
        sample_rate=sample_rate,
        clip_seconds=clips.shape[1] / sample_rate,
        vocoder=f"Griffin-Lim, {pipeline.mel.n_iter} iterations, phases seeded with {seed}, on both sets",
        mel=mel_settings(pipeline.mel),
        seconds=time.perf_counter() - start,
    )
    return scores, clips, mel_images


def evaluate_pipeline(
    pipeline,
    real_images: ImageBatches | ReferenceStatistics,
    num_samples: int,
    batch_size: int = 16,
    num_inference_steps: int = 50,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
    *,
    name: str = "model",
    grid_size: int = 64,
    fwd_wavelet: str = "haar",
    fwd_level: int | None = None,
    fid_extractor: InceptionFeatures | None = None,
    dataset: Mapping | None = None,
    progress: bool = True,
    audio_num_samples: int | None = None,
    num_audio_files: int = AUDIO_FILES,
    sampler: str = "fast",
) -> EvaluationResult:
    r"""
    Sample a pipeline and compare its samples with data images using network-free spectral metrics.

    Usable in-process (the training script calls it at the end of training); no argument parsing, no global state.
    The pipeline's modules are switched to eval mode while sampling and restored afterwards.

    An `AudioDiffusionPipeline` is also evaluated as audio (see the module docstring): the first `audio_num_samples`
    generated and data mel images go through the same seeded Griffin-Lim (`pipeline.mel`) and `audio.audio_metrics`
    compares the clips; `output_dir` then also gets `spectrograms.png`, `audio/sample_<i>.wav` and
    `audio/data_<i>.wav`.

    Args:
        pipeline (`DiffusionPipeline`): e.g. a `DDPMPipeline` (sampled with DDIM, `eta = 0`), an `EDMPipeline` or an
            `AudioDiffusionPipeline`.
        real_images (`torch.Tensor`, `np.ndarray`, `Dataset`, iterable of batches, or `ReferenceStatistics`): data
            images `[N, C, H, W]` in `[-1, 1]` (see `iterate_real_images`), or statistics computed before (for an
            audio pipeline, with `mel=pipeline.mel`). For audio, mel images `[N, 1, y_res, x_res]`, e.g. the dataset
            of `audio.build_audio_dataset` (`{"input": [1, H, W]}` items).
        num_samples (`int`): images to generate, and data images to read at most.
        output_dir (`str` or `os.PathLike`, *optional*, defaults to `None`): where to write `metrics.json`,
            `samples.png`, `rapsd.png`, `band_errors.png` and `comparison.md`; `None` writes nothing.
        fwd_wavelet (`str`, defaults to `"haar"`): FWD wavelet.
        fwd_level (`int`, *optional*, defaults to `None`): FWD packet level, `None` for packets of about 16×16.
        dataset (`Mapping`, *optional*, defaults to `None`): `{"type", "name"}` of the data, for the model card (for
            an audio pipeline, image data types from `dataset_info` are renamed: see `audio_dataset_info`).
        batch_size, num_inference_steps, seed, name, grid_size, fid_extractor, progress, audio_num_samples,
            num_audio_files, sampler: see [`evaluate_against`].

    Returns:
        [`EvaluationResult`]: `log_rapsd_distance` (all, low, mid, high), `slope` (data, model, gap), `fwd`, `fid`
        (with an extractor), `num_samples`, `num_real`, `num_inference_steps`, `seed`, `sampler`, `dataset`,
        `versions`, and `sample_grid` / `spectrum_plot` (file names in `output_dir`) when files were written; for
        audio also `audio` ([`AudioScores`], with the file names when written). It is what
        `card.write_model_card(metrics=...)` takes; `to_dict()` is its `metrics.json` form.
    """
    if num_audio_files < 0:
        raise ValueError(f"`num_audio_files` must be >= 0, got {num_audio_files}.")
    shared = dict(  # the settings of both passes: over the data, then over the samples
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        fid_extractor=fid_extractor,
        progress=progress,
        audio_num_samples=audio_num_samples,
    )
    reference = _reference_statistics(pipeline, real_images, dataset, fwd_wavelet, fwd_level, **shared)
    result = evaluate_against(
        pipeline,
        reference,
        name,
        num_inference_steps=num_inference_steps,
        grid_size=grid_size,
        num_audio_files=num_audio_files,
        sampler=sampler,
        **shared,
    )
    if output_dir is not None:
        write_report(output_dir, [result], reference, single=True)
    return result.metrics


def _reference_statistics(
    pipeline,
    real_images: ImageBatches | ReferenceStatistics,
    dataset: Mapping | None,
    fwd_wavelet: str,
    fwd_level: int | None,
    *,
    num_samples: int,
    batch_size: int,
    seed: int,
    fid_extractor: InceptionFeatures | None,
    progress: bool,
    audio_num_samples: int | None,
) -> ReferenceStatistics:
    """The data's statistics for [`evaluate_pipeline`]: `real_images` when they are statistics already (with
    `dataset` recorded), else computed from the images (with the pipeline's Mel for an audio pipeline); an audio
    pipeline's `dataset` is renamed by `audio_dataset_info`."""
    audio = is_audio_pipeline(pipeline)
    if audio and dataset is not None:
        dataset = audio_dataset_info(dataset)
    if isinstance(real_images, ReferenceStatistics):
        reference = real_images
        if dataset is not None:
            reference = dataclasses.replace(reference, dataset=dict(dataset))
        return reference
    return ReferenceStatistics.from_images(
        real_images,
        num_samples,
        batch_size,
        fwd_wavelet,
        fwd_level,
        fid_extractor,
        dataset,
        progress,
        seed,
        mel=pipeline.mel if audio else None,
        audio_num_samples=audio_num_samples,
    )
