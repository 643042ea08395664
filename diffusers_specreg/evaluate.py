"""Evaluate saved pipelines with spectral metrics that need no pretrained network; compare several side by side.

Command line:

```bash
python -m diffusers_specreg.evaluate --pipeline ddpm-mse --pipeline ddpm-amplitude-phase \
    --builtin_dataset checkerboards --num_samples 1000 --num_inference_steps 50 --output_dir eval
```

For every pipeline: `num_samples` images are drawn in batches (seeded per image, so a sample does not depend on the
batch size), compared with `num_samples` data images in one streaming pass each, and reported in `metrics.json`:
log-RAPSD distance (all / low / mid / high thirds of the frequencies), spectral slopes (data / model / gap), Fréchet
Wavelet Distance, and FID when `--fid_weights` names a local Inception TorchScript file. PNGs: one sample grid per
pipeline (`samples_<name>.png`), `rapsd.png` (the data and every pipeline, log-log) and `band_errors.png`; a markdown
table `comparison.md` (also printed). `--update_model_card` copies each local pipeline's grid, spectrum plot and
metrics into `<pipeline>/evaluation/` and rewrites its `README.md` with them.

Sampling (Diffusers 0.42):

- `DDPMPipeline` / `DDIMPipeline`: a `DDIMPipeline` built from the saved UNet and `DDIMScheduler.from_config` of the
  saved scheduler, `eta = 0`, `--num_inference_steps` steps (as `train_spectral.py` samples during training);
- `SAGDPipeline` (coloured noise, arXiv 2510.09660): the same pipeline class with a `DDIMScheduler`, `eta = 0`, so x_T
  is drawn from N(0, Σ_w);
- `AudioDiffusionPipeline`: its mel-spectrogram images, with a `DDIMScheduler` and `eta = 0` (without a VQ-VAE drawn
  by `DDIMPipeline` on its UNet and quantised to uint8: the same images, without the pipeline's own unseeded
  Griffin-Lim of every image);
- anything else, e.g. `EDMPipeline`: the pipeline itself with `num_inference_steps`.

A folder holding `pipeline.py` loads with `custom_pipeline=<folder>, trust_remote_code=True`, as its model card says.
Data images are read like training data (`diffusers_specreg.data.build_image_dataset`) with a centre crop and no
flip; when the data set is larger than `num_samples`, a subset drawn with `--seed` is used.

Audio (an `AudioDiffusionPipeline`; `--modality auto` recognises it, `--modality audio` insists on it):

```bash
python -m diffusers_specreg.evaluate --pipeline my-audio-model --builtin_dataset synthetic_audio \
    --num_samples 256 --num_inference_steps 50 --output_dir eval
```

The metrics above are computed on the mel-spectrogram images. In addition, the first `--audio_num_samples` (default
32) generated and data mel images are turned into audio by the same seeded Griffin-Lim (`audio.mel_images_to_audio`
with the pipeline's `Mel`), so that vocoder artefacts are common to both sides, and compared with
`audio.audio_metrics`: MR-STFT distance, log-spectral distance, Fréchet distance of log-mel statistics, NDB/K and
its Jensen-Shannon divergence (`"audio"` in `metrics.json`, a second table in `comparison.md`). Files:
`spectrograms.png` (a few generated mel images above data ones) and WAVs of the first `--num_audio_files` generated
clips (`audio/sample_<i>.wav`) and data clips (`audio/data_<i>.wav`), peak-normalised to 0.9 for listening (the
metrics use the raw Griffin-Lim output). The data are read with the Mel settings saved with the pipeline
(`mel/mel_config.json`: sample rate, n_fft, hop length, x_res, y_res, top_db) from `--train_data_dir` (a folder of
audio files), `--dataset_name` (a dataset with an audio column) or `--builtin_dataset synthetic_audio`
(`audio.synthetic_audio`, seeded with `--seed` as `train_spectral.py` seeds it), slices counted and skipped as in
training (`audio.build_audio_dataset`). Only 32 clips by default because Griffin-Lim costs about 5 s per clip at the
default 256×256 Mel on one CPU core.

In-process (e.g. at the end of `train_spectral.py`): `evaluate_pipeline(pipeline, real_images, ...)`; for an
`AudioDiffusionPipeline`, `real_images` are mel images (`{"input": [1, H, W]}` in `[-1, 1]`, as
`audio.build_audio_dataset(...).dataset` yields them) and the audio metrics are added.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from .formulations import default_sampler, formulation_of
from .metrics import (
    RAPSD,
    FrechetWaveletDistance,
    PowerSpectrum,
    _frechet_from_moments,
    _RunningMoments,
    log_rapsd_distance,
    spectral_slope,
)
from .pipelines_io import DYNAMIC_PIPELINE_MODULE
from .plots import REFERENCE_NAMES, _new_figure, _save, plot_band_errors, plot_rapsd, save_image_grid

logger = logging.getLogger(__name__)

BANDS = ("all", "low", "mid", "high")
# FWD packets of about 16x16 pixels, as the paper's Haar level 4 on 256x256 images (arXiv 2312.15289).
FWD_PACKET_SIZE = 16
MODALITIES = ("auto", "image", "audio")
BUILTIN_IMAGE_DATASETS = ("checkerboards", "digits")
BUILTIN_AUDIO_DATASET = "synthetic_audio"
# Clips per side of the audio metrics: Griffin-Lim costs about 5 s a clip at the default 256x256 Mel on a CPU core.
AUDIO_METRIC_SAMPLES = 32
# WAV files written per pipeline (and of the data), and mel images per row of the spectrogram figure.
AUDIO_FILES = 4
SPECTROGRAM_FIGURE = "spectrograms.png"
AUDIO_FOLDER = "audio"
MEL_KEYS = ("x_res", "y_res", "sample_rate", "n_fft", "hop_length", "top_db", "n_iter")

ImageBatches = torch.Tensor | np.ndarray | Iterable


# ---------------------------------------------------------------------------------------------------------------
# Loading and sampling
# ---------------------------------------------------------------------------------------------------------------


def load_pipeline(name_or_path: str, device: str | torch.device | None = None, cache_dir: str | None = None):
    r"""
    Load a saved pipeline (local folder or Hub id) the way its model card says: `DiffusionPipeline.from_pretrained`,
    with `trust_remote_code=True` for a folder that carries its own `pipeline.py` (`_class_name` such as
    `["pipeline", "SAGDPipeline"]`, see `diffusers_specreg.pipelines_io.save_pipeline`). Folders written before that
    convention (`_class_name` a class Diffusers does not ship) load with `custom_pipeline=name_or_path`.

    Args:
        name_or_path (`str`): folder written by `save_pretrained`, or a Hub repo id.
        device (`str` or `torch.device`, *optional*, defaults to `None`): moved there; `None` keeps the CPU.
        cache_dir (`str`, *optional*, defaults to `None`): Hub cache folder.

    Returns:
        `DiffusionPipeline`: the loaded pipeline.
    """
    import diffusers
    from diffusers import DiffusionPipeline

    name = DiffusionPipeline.load_config(name_or_path, cache_dir=cache_dir).get("_class_name", "")
    kwargs = {}
    if isinstance(name, (list, tuple)) or not hasattr(diffusers, name):
        # every local pipeline.py is imported as the same module: forget the previous one (pipelines_io docs)
        sys.modules.pop(DYNAMIC_PIPELINE_MODULE, None)
        kwargs["trust_remote_code"] = True
        if isinstance(name, str):
            kwargs["custom_pipeline"] = name_or_path
    pipeline = DiffusionPipeline.from_pretrained(name_or_path, cache_dir=cache_dir, **kwargs)
    if device is not None:
        pipeline.to(device)
    return pipeline


def _unet_of(pipeline):
    unet = getattr(pipeline, "unet", None)
    if unet is None:
        raise ValueError(f"{type(pipeline).__name__} has no `unet`; expected an unconditional UNet pipeline.")
    return unet


def image_shape(pipeline) -> tuple[int, int, int]:
    """`(C, H, W)` of the images a pipeline generates (from its UNet config)."""
    config = _unet_of(pipeline).config
    size = config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return int(config.in_channels), int(height), int(width)


def is_audio_pipeline(pipeline) -> bool:
    """`True` for a pipeline of an audio formulation, an `AudioDiffusionPipeline` (mel-spectrogram images turned
    into audio by its `mel`)."""
    entry = formulation_of(pipeline)
    return entry is not None and entry.modality == "audio"


def mel_settings(mel) -> dict[str, int]:
    r"""
    The settings of a Diffusers `Mel` that define its images and its Griffin-Lim inversion.

    Args:
        mel (`diffusers.Mel`): e.g. `pipeline.mel` of an `AudioDiffusionPipeline` (saved as `mel/mel_config.json`).

    Returns:
        `dict[str, int]`: `x_res` (frames), `y_res` (mel bands), `sample_rate`, `n_fft`, `hop_length`, `top_db`,
        `n_iter` (Griffin-Lim iterations).
    """
    values = {key: getattr(mel, key, None) for key in MEL_KEYS if key != "sample_rate"}
    values["sample_rate"] = mel.get_sample_rate()
    return {key: int(values[key]) for key in MEL_KEYS}


def make_sampler(pipeline, num_inference_steps: int) -> tuple[Callable[[list[torch.Generator]], torch.Tensor], str]:
    r"""
    A function drawing a batch of images, and a description of the sampler: the fast sampler of the pipeline's
    formulation (`diffusers_specreg.formulations`; DDIM with eta 0 for DDPM, SAGD and audio), else the pipeline
    itself.

    Args:
        pipeline (`DiffusionPipeline`): the loaded pipeline.
        num_inference_steps (`int`): denoising steps.

    Returns:
        `tuple`: `sample(generators) -> torch.Tensor` of shape `[len(generators), C, H, W]` in `[-1, 1]` on the CPU
        (one generator per image), and a one-line description such as `"DDIM (eta 0), 50 steps"`.
    """
    if num_inference_steps < 1:
        raise ValueError(f"`num_inference_steps` must be >= 1, got {num_inference_steps}.")
    entry = formulation_of(pipeline)
    sampler = entry.make_sampler if entry is not None else default_sampler
    sample, description = sampler(pipeline, num_inference_steps)
    return _to_tensor(sample), description


def _to_tensor(sample: Callable) -> Callable[[list[torch.Generator]], torch.Tensor]:
    """Wrap a sampler returning `[B, H, W, C]` in `[0, 1]` (array or tensor) into one returning `[B, C, H, W]` in
    `[-1, 1]` float32 on the CPU."""

    def wrapped(generators: list[torch.Generator]) -> torch.Tensor:
        images = sample(generators)
        images = images.detach().cpu() if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
        return images.float().permute(0, 3, 1, 2).contiguous() * 2.0 - 1.0

    return wrapped


def image_generators(seed: int, start: int, count: int) -> list[torch.Generator]:
    """One CPU generator per image, image `i` of `seed` seeded with `numpy.random.SeedSequence([seed, i])` (the CPU
    generator keeps 32 bits of a seed, so `seed * 2**32 + i` would collide)."""
    if seed < 0:
        raise ValueError(f"`seed` must be >= 0, got {seed}.")
    seeds = [int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) for i in range(start, start + count)]
    return [torch.Generator().manual_seed(s) for s in seeds]


def generate_images(
    pipeline,
    num_samples: int,
    batch_size: int = 16,
    num_inference_steps: int = 50,
    seed: int = 0,
    progress: bool = True,
    description: str = "sampling",
) -> Iterator[torch.Tensor]:
    r"""
    Draw `num_samples` images in batches; image `i` depends only on `seed` and `i`, not on `batch_size`.

    Args:
        pipeline (`DiffusionPipeline`): the pipeline (its modules are put in eval mode while sampling).
        num_samples (`int`): number of images.
        batch_size (`int`, defaults to `16`): images per pipeline call.
        num_inference_steps (`int`, defaults to `50`): denoising steps.
        seed (`int`, defaults to `0`): seed, `>= 0`.
        progress (`bool`, defaults to `True`): show a progress bar.
        description (`str`, defaults to `"sampling"`): progress bar label.

    Yields:
        `torch.Tensor`: `[B, C, H, W]` float32 in `[-1, 1]` on the CPU.
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"`num_samples` and `batch_size` must be >= 1, got {num_samples} and {batch_size}.")
    sample, _ = make_sampler(pipeline, num_inference_steps)
    with _eval_mode(pipeline), tqdm(total=num_samples, desc=description, unit="img", disable=not progress) as bar:
        for start in range(0, num_samples, batch_size):
            count = min(batch_size, num_samples - start)
            images = sample(image_generators(seed, start, count))
            bar.update(count)
            yield images


class _eval_mode:
    """Put every `nn.Module` component in eval mode and restore the training flags afterwards."""

    def __init__(self, pipeline):
        self.modules = [m for m in getattr(pipeline, "components", {}).values() if isinstance(m, torch.nn.Module)]

    def __enter__(self):
        self.flags = [m.training for m in self.modules]
        for module in self.modules:
            module.eval()

    def __exit__(self, *exc):
        for module, flag in zip(self.modules, self.flags):
            module.train(flag)


# ---------------------------------------------------------------------------------------------------------------
# Reference data
# ---------------------------------------------------------------------------------------------------------------


def iterate_real_images(
    real: ImageBatches, num_samples: int, batch_size: int = 16, seed: int = 0
) -> Iterator[torch.Tensor]:
    r"""
    Batches of at most `num_samples` data images in `[-1, 1]`.

    Args:
        real (`torch.Tensor`, `np.ndarray`, `torch.utils.data.Dataset` or iterable): images `[N, C, H, W]`, a dataset
            of `{"input": [C, H, W]}` items (as `diffusers_specreg.data` builds) or of `[C, H, W]` tensors, or an
            iterable of batches (`[B, C, H, W]` tensors or `{"input": ...}` dicts, e.g. a `DataLoader`).
        num_samples (`int`): stop after this many images. Arrays and iterables give their first `num_samples`; a
            dataset with more items gives a random subset drawn with `seed` (read in index order).
        batch_size (`int`, defaults to `16`): batch size for arrays and datasets.
        seed (`int`, defaults to `0`): seed of the dataset subset.

    Yields:
        `torch.Tensor`: `[B, C, H, W]` float32.
    """
    if isinstance(real, np.ndarray):
        real = torch.from_numpy(real)
    if isinstance(real, torch.Tensor):
        if real.ndim != 4:
            raise ValueError(f"Real images must have shape [N, C, H, W], got {list(real.shape)}.")
        batches: Iterable = (real[i : i + batch_size] for i in range(0, min(len(real), num_samples), batch_size))
    elif isinstance(real, torch.utils.data.Dataset) and hasattr(real, "__len__"):
        if len(real) > num_samples:
            order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
            real = torch.utils.data.Subset(real, sorted(order[:num_samples].tolist()))
        batches = torch.utils.data.DataLoader(real, batch_size=batch_size, shuffle=False, num_workers=0)
    else:
        batches = real
    seen = 0
    for batch in batches:
        if isinstance(batch, Mapping):
            batch = batch["input"]
        batch = torch.as_tensor(batch).detach().float().cpu()
        if batch.ndim != 4:
            raise ValueError(f"Real image batches must have shape [B, C, H, W], got {list(batch.shape)}.")
        batch = batch[: num_samples - seen]
        seen += batch.shape[0]
        yield batch
        if seen >= num_samples:
            return


def default_fwd_level(height: int, width: int) -> int:
    """Packet level giving packets of about 16×16 pixels (at least 1) that divides both sides; 0 if none does."""
    level = max(1, int(math.floor(math.log2(max(min(height, width), 1) / FWD_PACKET_SIZE))))
    while level > 0 and (height % 2**level or width % 2**level):
        level -= 1
    return level


class InceptionFeatures:
    r"""
    FID features from a local TorchScript Inception network (optional; nothing is downloaded).

    The file is the one StyleGAN2-ADA / StyleGAN3 and clean-fid use (`inception-2015-12-05.pt`, loaded with
    `torch.jit.load`): called as `model(images, return_features=True)` on uint8 `[B, 3, H, W]` images it resizes
    internally and returns `[B, 2048]` pool features. Grayscale images are repeated to 3 channels.

    Args:
        path (`str`): the TorchScript file.
        device (`str` or `torch.device`, defaults to `"cpu"`): where the network runs.
    """

    def __init__(self, path: str, device: str | torch.device = "cpu") -> None:
        if not os.path.isfile(path):
            raise ValueError(f"--fid_weights {path!r} is not a file; pass a local Inception TorchScript file.")
        self.device = torch.device(device)
        self.model = torch.jit.load(path, map_location=self.device).eval()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """`[B, C, H, W]` in `[-1, 1]` -> float64 `[B, D]` features."""
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        if images.shape[1] != 3:
            raise ValueError(f"FID needs 1- or 3-channel images [B, C, H, W], got {list(images.shape)}.")
        pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).to(self.device)
        features = self.model(pixels, return_features=True)
        return features.reshape(features.shape[0], -1).double().cpu()


@dataclass
class ReferenceStatistics:
    r"""
    Streaming statistics of the data images, computed once and shared by every evaluated pipeline.

    Attributes:
        spectrum (`PowerSpectrum`): mean radially averaged power spectrum of the data.
        fwd (`FrechetWaveletDistance` or `None`): FWD accumulator holding the data moments (`None` if the image size
            allows no packet level).
        fid_moments (`_RunningMoments` or `None`): Inception feature moments when an extractor was given.
        shape (`tuple[int, int, int]`): `(C, H, W)`.
        num_samples (`int`): data images seen.
        dataset (`dict`): `{"type", "name"}` of the data, for reports and model cards.
        audio (`np.ndarray` or `None`): float32 `[N, T]` reference audio, the first `N` data mel images turned into
            audio by `audio.mel_images_to_audio` (only when computed with a `mel`).
        mel_images (`np.ndarray` or `None`): uint8 `[N, y_res, x_res]`, the mel images of `audio`.
        mel (`dict` or `None`): `mel_settings` of the `Mel` used for `audio`.
    """

    spectrum: PowerSpectrum
    fwd: FrechetWaveletDistance | None
    fid_moments: object | None
    shape: tuple[int, int, int]
    num_samples: int
    dataset: dict = field(default_factory=dict)
    audio: np.ndarray | None = None
    mel_images: np.ndarray | None = None
    mel: dict | None = None

    @classmethod
    def from_images(
        cls,
        real: ImageBatches,
        num_samples: int,
        batch_size: int = 16,
        fwd_wavelet: str = "haar",
        fwd_level: int | None = None,
        fid_extractor: InceptionFeatures | None = None,
        dataset: Mapping | None = None,
        progress: bool = True,
        seed: int = 0,
        *,
        mel=None,
        audio_num_samples: int | None = None,
    ) -> ReferenceStatistics:
        r"""
        One streaming pass over at most `num_samples` data images (see `iterate_real_images` for `real`).

        Args:
            fwd_wavelet (`str`, defaults to `"haar"`): FWD wavelet.
            fwd_level (`int`, *optional*, defaults to `None`): FWD packet level; `None` picks `default_fwd_level`.
            fid_extractor (`InceptionFeatures`, *optional*, defaults to `None`): also accumulate FID features.
            dataset (`Mapping`, *optional*, defaults to `None`): `{"type", "name"}` recorded in the reports (see
                `dataset_info`).
            progress (`bool`, defaults to `True`): show a progress bar.
            seed (`int`, defaults to `0`): seed of the subset of a larger dataset, and of the Griffin-Lim phases.
            mel (`diffusers.Mel`, *optional*, defaults to `None`): for mel images (`[B, 1, y_res, x_res]` in
                `[-1, 1]`, pixel `p` stored as `p / 255 * 2 - 1`): also turn the first `audio_num_samples` images into
                reference audio with `audio.mel_images_to_audio(images, mel, seed)`.
            audio_num_samples (`int`, *optional*, defaults to `None`): reference clips, `None` for
                `min(num_samples, AUDIO_METRIC_SAMPLES)` (32).
        """
        audio_limit = _audio_limit(num_samples, audio_num_samples)
        mel_kept: list[np.ndarray] = []
        spectrum, fwd, fid_moments, shape = RAPSD(), None, None, None
        with tqdm(total=num_samples, desc="data", unit="img", disable=not progress) as bar:
            for batch in iterate_real_images(real, num_samples, batch_size, seed):
                if shape is None:
                    shape = tuple(batch.shape[1:])
                    level = default_fwd_level(shape[1], shape[2]) if fwd_level is None else fwd_level
                    fwd = FrechetWaveletDistance(wavelet=fwd_wavelet, level=level) if level > 0 else None
                    fid_moments = _RunningMoments() if fid_extractor is not None else None
                spectrum.update(batch)
                if fwd is not None:
                    fwd.update(batch, real=True)
                if fid_moments is not None:
                    fid_moments.update(fid_extractor(batch))
                kept = sum(len(m) for m in mel_kept)
                if mel is not None and kept < audio_limit:
                    mel_kept.append(mel_images_to_uint8(batch[: audio_limit - kept]))
                bar.update(batch.shape[0])
        if shape is None or spectrum.num_samples < 2:
            raise ValueError("At least 2 data images are needed for the metrics; the data source gave fewer.")
        audio = mel_images = settings = None
        if mel is not None:
            from .audio import mel_images_to_audio

            # 1. reference audio: the data's mel images through the vocoder the samples go through (seeded phases)
            mel_images = np.concatenate(mel_kept)
            logger.info("Griffin-Lim of %d data mel images (reference audio).", len(mel_images))
            audio = mel_images_to_audio(mel_images, mel, seed=seed)
            settings = mel_settings(mel)
        return cls(
            spectrum.compute(),
            fwd,
            fid_moments,
            shape,
            spectrum.num_samples,
            dict(dataset or {}),
            audio,
            mel_images,
            settings,
        )


def _audio_limit(num_samples: int, audio_num_samples: int | None) -> int:
    limit = AUDIO_METRIC_SAMPLES if audio_num_samples is None else audio_num_samples
    if limit < 2:
        raise ValueError(f"`audio_num_samples` must be >= 2, got {audio_num_samples}.")
    return min(num_samples, limit)


def mel_images_to_uint8(images: torch.Tensor) -> np.ndarray:
    r"""
    Mel images in `[-1, 1]` back to the uint8 pixels `Mel` writes (the inverse of `p / 255 * 2 - 1`).

    Args:
        images (`torch.Tensor`): `[B, 1, H, W]`; values outside `[-1, 1]` are clipped.

    Returns:
        `np.ndarray`: uint8 `[B, H, W]`.
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"Mel images must have shape [B, 1, H, W], got {list(images.shape)}.")
    return ((images[:, 0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


# ---------------------------------------------------------------------------------------------------------------
# Evaluation of one pipeline
# ---------------------------------------------------------------------------------------------------------------


def library_versions() -> dict[str, str]:
    """Versions of the packages the numbers depend on."""
    import diffusers
    import huggingface_hub

    return {
        "diffusers_specreg": __version__,
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "huggingface_hub": huggingface_hub.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


@dataclass
class PipelineResult:
    """What evaluating one pipeline gives: the JSON metrics, the sample spectrum and the first samples (grid); for
    audio also the first generated clips (float32 `[N, T]`, for WAV files) and their mel images (uint8 `[N, H, W]`)."""

    name: str
    metrics: dict
    spectrum: PowerSpectrum
    grid: torch.Tensor
    audio: np.ndarray | None = None
    mel_images: np.ndarray | None = None


def _evaluate(
    pipeline,
    reference: ReferenceStatistics,
    name: str,
    num_samples: int,
    batch_size: int,
    num_inference_steps: int,
    seed: int,
    grid_size: int,
    fid_extractor: InceptionFeatures | None,
    progress: bool,
    audio_num_samples: int | None = None,
    num_audio_files: int = AUDIO_FILES,
) -> PipelineResult:
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
    audio_limit = _audio_limit(num_samples, audio_num_samples) if with_audio else 0
    mel_kept: list[np.ndarray] = []
    _, sampler_description = make_sampler(pipeline, num_inference_steps)
    spectrum = RAPSD()
    fwd = copy.deepcopy(reference.fwd) if reference.fwd is not None else None
    fid_moments = _RunningMoments() if reference.fid_moments is not None and fid_extractor is not None else None
    grid: list[torch.Tensor] = []
    kept = 0
    start = time.perf_counter()
    # 1. one streaming pass over the samples: spectrum sums, FWD packet moments, FID moments, the first images
    batches = generate_images(
        pipeline, num_samples, batch_size, num_inference_steps, seed, progress, f"sampling {name}"
    )
    for images in batches:
        if not torch.isfinite(images).all():
            raise ValueError(f"Pipeline {name!r} produced non-finite samples.")
        spectrum.update(images)
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
    seconds = time.perf_counter() - start

    # 2. mean |Δ log10 P| of the radial spectra, overall and per third of [0, Nyquist]
    psd = spectrum.compute()
    distances = log_rapsd_distance(psd, reference.spectrum)
    # 3. power-law exponents; gap < 0 means the samples lack high frequencies (the blur of MSE training)
    slope_data = spectral_slope(reference.spectrum.frequencies, reference.spectrum)
    slope_model = spectral_slope(psd.frequencies, psd)
    metrics: dict = {
        "name": name,
        "pipeline_class": type(pipeline).__name__,
        "sampler": sampler_description,
        "num_samples": num_samples,
        "num_real": reference.num_samples,
        "num_inference_steps": num_inference_steps,
        "batch_size": batch_size,
        "seed": seed,
        "log_rapsd_distance": {band: distances[band] for band in BANDS},
        "slope": {"data": slope_data, "model": slope_model, "gap": slope_model - slope_data},
        "fwd": float(fwd.compute()) if fwd is not None else float("nan"),
        "fwd_wavelet": fwd.wavelet if fwd is not None else None,
        "fwd_level": fwd.level if fwd is not None else None,
        "sampling_seconds": seconds,
        "dataset": dict(reference.dataset),
        "versions": library_versions(),
    }
    # 4. Fréchet distances: per wavelet packet averaged (FWD, arXiv 2312.15289), Inception features (FID)
    if fid_moments is not None:
        metrics["fid"] = float(_frechet_from_moments(reference.fid_moments, fid_moments, "eigh", "FID"))
    if fwd is not None:
        features = int(np.prod(reference.shape)) // 4**fwd.level
        if min(num_samples, reference.num_samples) < 2 * features:
            logger.warning(
                "FWD of %s uses %d packet features with %d samples: covariances from fewer than 2x as many samples "
                "as features are noisy; compare FWD values only at equal sample counts.",
                name,
                features,
                min(num_samples, reference.num_samples),
            )
    if not with_audio:
        return PipelineResult(name, metrics, psd, torch.cat(grid)[:grid_size])
    from .audio import audio_metrics, mel_images_to_audio

    # 5. audio: the samples' mel images through the same seeded Griffin-Lim as the data's (ReferenceStatistics), then
    # set distances between the two sets of clips (MR-STFT arXiv 1910.11480, LSD, Fréchet log-mel, NDB arXiv 1805.12462)
    start = time.perf_counter()
    mel_images = np.concatenate(mel_kept)
    clips = mel_images_to_audio(mel_images, pipeline.mel, seed=seed)
    sample_rate = int(pipeline.mel.get_sample_rate())
    metrics["audio"] = {
        **audio_metrics(reference.audio, clips, sample_rate, seed=seed),
        "sample_rate": sample_rate,
        "clip_seconds": clips.shape[1] / sample_rate,
        "vocoder": f"Griffin-Lim, {pipeline.mel.n_iter} iterations, phases seeded with {seed}, on both sets",
        "mel": mel_settings(pipeline.mel),
        "seconds": time.perf_counter() - start,
    }
    return PipelineResult(
        name, metrics, psd, torch.cat(grid)[:grid_size], clips[:num_audio_files], mel_images[:AUDIO_FILES]
    )


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
) -> dict:
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
        batch_size (`int`, defaults to `16`): images per pipeline call.
        num_inference_steps (`int`, defaults to `50`): denoising steps.
        seed (`int`, defaults to `0`): image `i` is drawn with the generator of `image_generators(seed, i, 1)`.
        output_dir (`str` or `os.PathLike`, *optional*, defaults to `None`): where to write `metrics.json`,
            `samples.png`, `rapsd.png`, `band_errors.png` and `comparison.md`; `None` writes nothing.
        name (`str`, defaults to `"model"`): the pipeline's name in reports and plots.
        grid_size (`int`, defaults to `64`): images in the sample grid.
        fwd_wavelet (`str`, defaults to `"haar"`): FWD wavelet.
        fwd_level (`int`, *optional*, defaults to `None`): FWD packet level, `None` for packets of about 16×16.
        fid_extractor (`InceptionFeatures`, *optional*, defaults to `None`): also compute FID.
        dataset (`Mapping`, *optional*, defaults to `None`): `{"type", "name"}` of the data, for the model card (for
            an audio pipeline, image data types from `dataset_info` are renamed: see `audio_dataset_info`).
        progress (`bool`, defaults to `True`): show progress bars.
        audio_num_samples (`int`, *optional*, defaults to `None`): clips per side for the audio metrics, `None` for
            `min(num_samples, 32)`; Griffin-Lim is the slow part.
        num_audio_files (`int`, defaults to `4`): generated (and data) clips written as WAV files.

    Returns:
        `dict`: `"log_rapsd_distance"` (`{"all", "low", "mid", "high"}`), `"slope"` (`{"data", "model", "gap"}`),
        `"fwd"`, `"fid"` (with an extractor), `"num_samples"`, `"num_real"`, `"num_inference_steps"`, `"seed"`,
        `"sampler"`, `"dataset"`, `"versions"`, and `"sample_grid"` / `"spectrum_plot"` (file names in
        `output_dir`) when files were written. For audio also `"audio"`: `"mrstft"`, `"log_spectral_distance"`,
        `"frechet_log_mel"`, `"ndb_k"`, `"ndb_js"`, `"num_real"`, `"num_fake"`, `"sample_rate"`, `"clip_seconds"`,
        `"vocoder"`, `"mel"`, and when files were written `"spectrogram_figure"`, `"samples"` and `"data_samples"`
        (paths in `output_dir`). This dict is what `model_card.write_model_card(metrics=...)` takes.
    """
    audio = is_audio_pipeline(pipeline)
    if num_audio_files < 0:
        raise ValueError(f"`num_audio_files` must be >= 0, got {num_audio_files}.")
    if audio and dataset is not None:
        dataset = audio_dataset_info(dataset)
    if isinstance(real_images, ReferenceStatistics):
        reference = real_images
        if dataset is not None:
            reference = dataclasses.replace(reference, dataset=dict(dataset))
    else:
        reference = ReferenceStatistics.from_images(
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
    result = _evaluate(
        pipeline,
        reference,
        name,
        num_samples,
        batch_size,
        num_inference_steps,
        seed,
        grid_size,
        fid_extractor,
        progress,
        audio_num_samples,
        num_audio_files,
    )
    if output_dir is not None:
        write_report(output_dir, [result], reference, single=True)
    return result.metrics


# ---------------------------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------------------------


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def _json_ready(value):
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_json_ready(v) for v in value.tolist()]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None  # JSON has no NaN
    if isinstance(value, np.integer):
        return int(value)
    return value


def comparison_table(results: Sequence[Mapping], data_slope: float | None = None) -> str:
    r"""
    Markdown table comparing pipelines; the best value of each metric column is in bold.

    Args:
        results (`Sequence[Mapping]`): metric dicts of `evaluate_pipeline` (with `"name"`).
        data_slope (`float`, *optional*, defaults to `None`): adds a "data" row with the data's spectral slope.

    Returns:
        `str`: the table, one row per pipeline.
    """
    with_fid = any("fid" in r for r in results)
    columns = [
        ("log-RAPSD all", lambda r: r["log_rapsd_distance"]["all"], abs),
        ("low", lambda r: r["log_rapsd_distance"]["low"], abs),
        ("mid", lambda r: r["log_rapsd_distance"]["mid"], abs),
        ("high", lambda r: r["log_rapsd_distance"]["high"], abs),
        ("slope", lambda r: r["slope"]["model"], None),
        ("slope gap", lambda r: r["slope"]["gap"], abs),
        ("FWD", lambda r: r["fwd"], abs),
    ]
    if with_fid:
        columns.append(("FID", lambda r: r.get("fid", float("nan")), abs))
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
        lines.append(f"| {r['name']} | " + " | ".join(cells) + f" | {r['num_samples']} | {r['num_inference_steps']} |")
    if data_slope is not None and math.isfinite(data_slope):
        cells = ["—"] * len(columns)
        cells[4] = f"{data_slope:.4g}"
        lines.append("| data | " + " | ".join(cells) + " | | |")
    return "\n".join(lines)


AUDIO_COLUMNS = (
    ("MR-STFT", "mrstft"),
    ("LSD (dB)", "log_spectral_distance"),
    ("Fréchet log-mel", "frechet_log_mel"),
    ("NDB/K", "ndb_k"),
    ("NDB JS", "ndb_js"),
)


def audio_comparison_table(results: Sequence[Mapping]) -> str:
    r"""
    Markdown table of the audio metrics (`"audio"` of `evaluate_pipeline`), lower is better, the best in bold.

    Args:
        results (`Sequence[Mapping]`): metric dicts of `evaluate_pipeline` (with `"name"`); those without `"audio"`
            are left out.

    Returns:
        `str`: the table, or `""` when no result has audio metrics.
    """
    rows = [r for r in results if isinstance(r.get("audio"), Mapping)]
    if not rows:
        return ""
    lines = ["| model | " + " | ".join(c[0] for c in AUDIO_COLUMNS) + " | clips | s per clip |"]
    lines.append("|" + " --- |" * (len(AUDIO_COLUMNS) + 3))
    values = [[_finite_or_nan(r["audio"].get(key)) for _, key in AUDIO_COLUMNS] for r in rows]
    best = []
    for j in range(len(AUDIO_COLUMNS)):
        finite = [row[j] for row in values if math.isfinite(row[j])]
        best.append(min(finite) if finite and len(rows) > 1 else None)
    for r, row in zip(rows, values):
        cells = []
        for j, value in enumerate(row):
            text = f"{value:.4g}" if math.isfinite(value) else "n/a"
            cells.append(f"**{text}**" if best[j] is not None and value == best[j] else text)
        audio = r["audio"]
        clips = f"{audio.get('num_fake', '?')} vs {audio.get('num_real', '?')}"
        seconds = _finite_or_nan(audio.get("clip_seconds"))
        lines.append(f"| {r['name']} | " + " | ".join(cells) + f" | {clips} | {seconds:.3g} |")
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
    figure = _new_figure((2.4 * columns + 0.8, 2.2 * len(rows) + 0.7), dpi=100)
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
    _save(figure, path)
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
    audio = result.metrics["audio"]
    sample_rate = audio["sample_rate"]
    plot_mel_images(
        result.mel_images,
        reference.mel_images[:AUDIO_FILES] if reference.mel_images is not None else None,
        audio.get("mel"),
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
    `audio/sample_<i>.wav` (`audio/<name>/sample_<i>.wav` unless `single`) and `audio/data_<i>.wav`.

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
    for result in results:
        grid_name = "samples.png" if single else f"samples_{_safe_name(result.name)}.png"
        save_image_grid(result.grid, os.path.join(output_dir, grid_name))
        result.metrics["sample_grid"] = grid_name
        result.metrics["spectrum_plot"] = "rapsd.png"
        curves[result.name] = result.spectrum
        if result.audio is not None and reference.audio is not None:
            figure = SPECTROGRAM_FIGURE if single else f"spectrograms_{_safe_name(result.name)}.png"
            folder = AUDIO_FOLDER if single else f"{AUDIO_FOLDER}/{_safe_name(result.name)}"
            result.metrics["audio"].update(_write_audio_files(output_dir, result, reference, figure, folder))
    plot_rapsd(
        curves, os.path.join(output_dir, "rapsd.png"), reference="data", title="Radially averaged power spectra"
    )
    plot_band_errors(
        {r.name: r.metrics["log_rapsd_distance"] for r in results},
        os.path.join(output_dir, "band_errors.png"),
        title="log-RAPSD distance to the data, per band",
    )
    table = comparison_table([r.metrics for r in results], data_slope=results[0].metrics["slope"]["data"])
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
            "slope": results[0].metrics["slope"]["data"],
        },
        "pipelines": {r.name: r.metrics for r in results},
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
        json.dump(_json_ready(report), f, indent=2)
    return report


def _update_card(path: str, result: PipelineResult, reference: ReferenceStatistics) -> str:
    """Copy the pipeline's evaluation into `<path>/evaluation/` and rewrite its model card with it."""
    from .model_card import update_model_card

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
    metrics = dict(result.metrics, sample_grid="samples.png", spectrum_plot="rapsd.png")
    if result.audio is not None and reference.audio is not None:
        files = _write_audio_files(folder, result, reference, SPECTROGRAM_FIGURE, AUDIO_FOLDER)
        metrics["audio"] = dict(metrics["audio"], **files)
    with open(os.path.join(folder, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(_json_ready(metrics), f, indent=2)
    return update_model_card(
        path,
        metrics,
        sample_grid="evaluation/samples.png",
        spectrum_plot="evaluation/rapsd.png",
        evaluation_dir="evaluation",
    )


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m diffusers_specreg.evaluate",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pipeline", action="append", required=True, help="Saved pipeline folder or Hub id (repeat).")
    parser.add_argument("--name", action="append", default=None, help="Display name per --pipeline (repeat).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--train_data_dir", type=str, help="A folder of images (audio files for audio), searched recursively."
    )
    source.add_argument(
        "--dataset_name", type=str, help="A `datasets` dataset (Hub id or local folder); an audio column for audio."
    )
    source.add_argument(
        "--builtin_dataset",
        type=str,
        choices=[*BUILTIN_IMAGE_DATASETS, BUILTIN_AUDIO_DATASET],
        help=f"Built-in data: images {list(BUILTIN_IMAGE_DATASETS)} or '{BUILTIN_AUDIO_DATASET}' for audio pipelines.",
    )
    parser.add_argument("--dataset_config_name", type=str, default=None)
    parser.add_argument("--cache_dir", type=str, default=None)
    parser.add_argument("--resolution", type=int, default=None, help="Data image size (default: the UNet's).")
    audio = parser.add_argument_group("audio (AudioDiffusionPipeline; Mel settings are read from the pipeline)")
    audio.add_argument(
        "--modality",
        type=str,
        default="auto",
        choices=list(MODALITIES),
        help="'auto' (default): audio for an AudioDiffusionPipeline, else image. 'audio' / 'image' insist on it.",
    )
    audio.add_argument(
        "--builtin_num_clips",
        type=int,
        default=None,
        help="Synthetic clips for --builtin_dataset synthetic_audio (default: enough slices for --num_samples).",
    )
    audio.add_argument(
        "--audio_num_samples",
        type=int,
        default=AUDIO_METRIC_SAMPLES,
        help="Generated and data clips for the audio metrics (Griffin-Lim is slow).",
    )
    audio.add_argument("--num_audio_files", type=int, default=AUDIO_FILES, help="Clips written as WAV files.")
    parser.add_argument("--num_samples", type=int, default=1000, help="Generated and data images per pipeline.")
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", type=str, required=True)
    parser.add_argument("--grid_size", type=int, default=64, help="Images in each sample grid.")
    parser.add_argument("--fwd_wavelet", type=str, default="haar")
    parser.add_argument("--fwd_level", type=int, default=None, help="FWD packet level (default: ~16x16 packets).")
    parser.add_argument(
        "--fid_weights",
        type=str,
        default=None,
        help="Optional local Inception TorchScript file (inception-2015-12-05.pt) to also compute FID.",
    )
    parser.add_argument("--device", type=str, default=None, help="Default: cuda if available, else cpu.")
    parser.add_argument(
        "--update_model_card",
        action="store_true",
        help="Copy each local pipeline's results into <pipeline>/evaluation/ and rewrite its README.md.",
    )
    parser.add_argument("--no_progress", action="store_true", help="Hide the progress bars.")
    return parser


def _names(args) -> list[str]:
    if args.name is None:
        names = [os.path.basename(os.path.normpath(p)) or p for p in args.pipeline]
    elif len(args.name) != len(args.pipeline):
        raise ValueError(f"Got {len(args.name)} --name for {len(args.pipeline)} --pipeline; give one per pipeline.")
    else:
        names = list(args.name)
    unique = []
    for name in names:
        candidate, i = name, 2
        while candidate in unique or candidate in REFERENCE_NAMES:
            candidate, i = f"{name}-{i}", i + 1
        unique.append(candidate)
    return unique


def _validate(args) -> None:
    for key in ("num_samples", "num_inference_steps", "batch_size", "grid_size"):
        if getattr(args, key) < 1:
            raise ValueError(f"--{key} must be >= 1, got {getattr(args, key)}.")
    if args.audio_num_samples < 2:
        raise ValueError(f"--audio_num_samples must be >= 2, got {args.audio_num_samples}.")
    if args.num_audio_files < 0:
        raise ValueError(f"--num_audio_files must be >= 0, got {args.num_audio_files}.")
    if args.builtin_num_clips is not None and args.builtin_num_clips < 1:
        raise ValueError(f"--builtin_num_clips must be >= 1, got {args.builtin_num_clips}.")
    if args.num_samples < 2:
        raise ValueError(f"--num_samples must be >= 2 for covariance-based metrics, got {args.num_samples}.")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}.")


def dataset_info(
    dataset_name: str | None = None,
    train_data_dir: str | None = None,
    builtin_dataset: str | None = "checkerboards",
    modality: str = "image",
) -> dict[str, str]:
    r"""
    `{"type", "name"}` of a data source, as reports and model cards record it (`type` is the model-index dataset type).

    Args:
        dataset_name (`str`, *optional*, defaults to `None`): a `datasets` name: type and name are the name.
        train_data_dir (`str`, *optional*, defaults to `None`): a folder: type `"imagefolder"` (`"audiofolder"`).
        builtin_dataset (`str`, *optional*, defaults to `"checkerboards"`): used when neither of the others is given
            (audio: always `"synthetic_audio"`, the only built-in audio).
        modality (`str`, defaults to `"image"`): `"image"` or `"audio"`.
    """
    if modality not in ("image", "audio"):
        raise ValueError(f"Unknown modality {modality!r}; expected one of ['image', 'audio'].")
    kind = "audio" if modality == "audio" else "image"
    if dataset_name:
        return {"type": dataset_name, "name": dataset_name}
    if train_data_dir:
        folder = os.path.basename(os.path.normpath(train_data_dir))
        return {"type": f"{kind}folder", "name": f"{kind} folder {folder}"}
    if modality == "audio":
        return {"type": BUILTIN_AUDIO_DATASET, "name": "built-in synthetic audio"}
    builtin = builtin_dataset or "checkerboards"
    return {"type": builtin, "name": f"built-in {builtin}"}


def audio_dataset_info(dataset: Mapping) -> dict:
    r"""
    The `dataset_info` of audio data, from one written without `modality="audio"` (as the training script calls it):
    an `"imagefolder"` becomes an `"audiofolder"`, a built-in image data set the built-in synthetic audio (the only
    built-in audio); other entries are kept.

    Args:
        dataset (`Mapping`): `{"type", "name"}`.

    Returns:
        `dict`: `{"type", "name"}` (and any other keys of `dataset`).
    """
    info = dict(dataset)
    kind = info.get("type")
    if kind == "imagefolder":
        name = str(info.get("name") or "")
        info.update(type="audiofolder", name="audio folder " + name.removeprefix("image folder ").strip())
    elif kind in BUILTIN_IMAGE_DATASETS:
        info.update(dataset_info(modality="audio"))
    return info


def _modality(args, pipelines: Sequence) -> str:
    """`"image"` or `"audio"`: every pipeline must be of the same kind, and of `--modality` unless it is auto."""
    kinds = {"audio" if is_audio_pipeline(p) else "image" for p in pipelines}
    if len(kinds) != 1:
        raise ValueError("The pipelines mix AudioDiffusionPipelines and image pipelines; compare like with like.")
    kind = kinds.pop()
    if args.modality != "auto" and args.modality != kind:
        raise ValueError(
            f"--modality {args.modality} but the pipeline is {'an' if kind == 'audio' else 'not an'} "
            f"AudioDiffusionPipeline; pass --modality {kind} or auto."
        )
    if kind == "audio":
        settings = [mel_settings(p.mel) for p in pipelines]
        if any(s != settings[0] for s in settings):
            raise ValueError(f"The pipelines have different Mel settings {settings}; compare like with like.")
        if args.builtin_dataset in BUILTIN_IMAGE_DATASETS:
            raise ValueError(
                f"--builtin_dataset {args.builtin_dataset} is image data; an AudioDiffusionPipeline needs audio: "
                f"--train_data_dir <audio folder>, --dataset_name <dataset with an audio column> or "
                f"--builtin_dataset {BUILTIN_AUDIO_DATASET}."
            )
        if args.resolution is not None:
            raise ValueError(
                "--resolution does not apply to audio: the mel image size comes from the pipeline's Mel "
                f"(x_res={settings[0]['x_res']}, y_res={settings[0]['y_res']})."
            )
    elif args.builtin_dataset == BUILTIN_AUDIO_DATASET:
        raise ValueError(
            f"--builtin_dataset {BUILTIN_AUDIO_DATASET} is audio, but the pipeline is not an AudioDiffusionPipeline; "
            f"use one of {list(BUILTIN_IMAGE_DATASETS)}, --train_data_dir or --dataset_name."
        )
    return kind


def _reference_audio_dataset(args, mel):
    """Mel images of the audio data, sliced with the pipeline's Mel settings as `train_spectral.py` slices them."""
    from .audio import BUILTIN_SLICES_PER_CLIP, build_audio_dataset

    settings = mel_settings(mel)
    if settings["x_res"] != settings["y_res"]:
        raise ValueError(
            f"The pipeline's Mel makes {settings['y_res']}x{settings['x_res']} images; audio data can only be sliced "
            "into square mel images (x_res == y_res)."
        )
    clips = args.builtin_num_clips or math.ceil(args.num_samples / BUILTIN_SLICES_PER_CLIP)
    data = build_audio_dataset(
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        train_data_dir=args.train_data_dir,
        cache_dir=args.cache_dir,
        resolution=settings["x_res"],
        sample_rate=settings["sample_rate"],
        n_fft=settings["n_fft"],
        hop_length=settings["hop_length"],
        top_db=settings["top_db"],
        builtin_num_clips=clips,
        seed=args.seed,
    )
    return data.dataset, dataset_info(args.dataset_name, args.train_data_dir, modality="audio")


def _reference_dataset(args, shape: tuple[int, int, int]):
    from .data import build_image_dataset

    channels, height, width = shape
    resolution = args.resolution or height
    if args.resolution is None and height != width:
        raise ValueError(f"The UNet generates {height}x{width} images; data are read square. Pass --resolution.")
    data = build_image_dataset(
        dataset_name=args.dataset_name,
        dataset_config_name=args.dataset_config_name,
        train_data_dir=args.train_data_dir,
        cache_dir=args.cache_dir,
        resolution=resolution,
        center_crop=True,
        random_flip=False,
        preserve_input_precision=False,
        builtin_dataset=args.builtin_dataset or "checkerboards",
        builtin_num_samples=args.num_samples,
        channels=channels,
        seed=args.seed,
    )
    return data.dataset, dataset_info(args.dataset_name, args.train_data_dir, args.builtin_dataset)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation command; returns the exit code (0)."""
    args = build_parser().parse_args(argv)
    _validate(args)
    names = _names(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    fid_extractor = InceptionFeatures(args.fid_weights, device) if args.fid_weights else None
    progress = not args.no_progress

    pipelines = []
    for path in args.pipeline:
        try:
            pipelines.append(load_pipeline(path, device=device, cache_dir=args.cache_dir))
        except OSError as error:  # missing folder, no model_index.json, Hub unreachable
            raise ValueError(f"Cannot load the pipeline {path!r}: {error}") from error
    shapes = {image_shape(p) for p in pipelines}
    if len(shapes) != 1:
        raise ValueError(f"The pipelines generate different image shapes {sorted(shapes)}; compare like with like.")
    shape = shapes.pop()
    audio = _modality(args, pipelines) == "audio"
    if audio:
        dataset, info = _reference_audio_dataset(args, pipelines[0].mel)
    else:
        dataset, info = _reference_dataset(args, shape)
    reference = ReferenceStatistics.from_images(
        dataset,
        args.num_samples,
        args.batch_size,
        args.fwd_wavelet,
        args.fwd_level,
        fid_extractor,
        info,
        progress,
        args.seed,
        mel=pipelines[0].mel if audio else None,
        audio_num_samples=args.audio_num_samples,
    )
    results = []
    for path, name, pipeline in zip(args.pipeline, names, pipelines):
        result = _evaluate(
            pipeline,
            reference,
            name,
            args.num_samples,
            args.batch_size,
            args.num_inference_steps,
            args.seed,
            args.grid_size,
            fid_extractor,
            progress,
            args.audio_num_samples,
            args.num_audio_files,
        )
        result.metrics["pipeline"] = path
        results.append(result)
    write_report(args.output_dir, results, reference)
    print(comparison_table([r.metrics for r in results], data_slope=results[0].metrics["slope"]["data"]))
    if audio:
        print("\n" + audio_comparison_table([r.metrics for r in results]))
    print(f"\nWrote {os.path.join(args.output_dir, 'metrics.json')} and the plots.")
    if args.update_model_card:
        for path, result in zip(args.pipeline, results):
            if not os.path.isdir(path):
                logger.warning("--update_model_card: %s is not a local folder; its card was not changed.", path)
                continue
            card = _update_card(path, result, reference)
            print(f"Updated the model card {card}")
    return 0


__all__ = [
    "InceptionFeatures",
    "PipelineResult",
    "ReferenceStatistics",
    "audio_comparison_table",
    "audio_dataset_info",
    "comparison_table",
    "dataset_info",
    "default_fwd_level",
    "evaluate_pipeline",
    "generate_images",
    "image_generators",
    "is_audio_pipeline",
    "iterate_real_images",
    "load_pipeline",
    "main",
    "make_sampler",
    "mel_images_to_uint8",
    "mel_settings",
    "plot_mel_images",
    "write_report",
    "write_wav",
]


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    try:
        sys.exit(main())
    except ValueError as error:  # bad input (DataError is a ValueError): one line, exit code 2
        print(f"evaluate: error: {error}", file=sys.stderr)
        sys.exit(2)
