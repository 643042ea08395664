"""Reference data: real images (and audio) read like training data, and their streaming statistics."""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..card import publishable_path
from ..data import BUILTIN_DATASETS
from ..metrics import (
    RAPSD,
    FrechetWaveletDistance,
    PowerSpectrum,
    RunningMoments,
)
from .sampling import mel_settings

logger = logging.getLogger("diffusers_specreg.evaluate")

# FWD packets of about 16x16 pixels, as the paper's Haar level 4 on 256x256 images (arXiv 2312.15289).
FWD_PACKET_SIZE = 16
BUILTIN_IMAGE_DATASETS = BUILTIN_DATASETS
BUILTIN_AUDIO_DATASET = "synthetic_audio"
# Clips per side of the audio metrics: Griffin-Lim costs about 5 s a clip at the default 256x256 Mel on a CPU core.
AUDIO_METRIC_SAMPLES = 32
ImageBatches = torch.Tensor | np.ndarray | Iterable


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


def default_fwd_level(height: int, width: int, channels: int | None = None, num_samples: int | None = None) -> int:
    r"""
    FWD packet level: packets of about 16×16 pixels (at least level 1), deeper when there are too few samples.

    The per-packet covariance has `D = C·H·W / 4**level` features; it is estimated from `num_samples` images and is
    noisy below about `2·D` of them (the warning of `evaluate_with_reference`). Given `channels` and `num_samples`, the
    level is raised until `2·D <= num_samples` (e.g. 64×64 RGB: level 2, D = 768, from 1536 samples; level 3,
    D = 192, for the evaluate CLI's default 1000; 32×32 RGB with the model card's 64 samples: level 4, D = 12), as
    far as the image sides allow.

    Args:
        height (`int`): image height.
        width (`int`): image width.
        channels (`int`, *optional*, defaults to `None`): image channels (with `num_samples`: fit the level to them).
        num_samples (`int`, *optional*, defaults to `None`): images per set.

    Returns:
        `int`: a level whose `2**level` divides both sides; 0 if none does.
    """
    level = max(1, int(math.floor(math.log2(max(min(height, width), 1) / FWD_PACKET_SIZE))))
    while level > 0 and (height % 2**level or width % 2**level):
        level -= 1
    if level == 0 or channels is None or num_samples is None:
        return level
    while 2 * channels * height * width // 4**level > num_samples and not (
        height % 2 ** (level + 1) or width % 2 ** (level + 1)
    ):
        level += 1
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


class FeatureExtractor:
    r"""
    Features for a Fréchet distance from a network the user names: `module:callable` or a TorchScript file.

    - `package.module:name` imports `package.module` (from the current folder or `sys.path`); `name` is a function,
      or a class that is instantiated once with no argument; either maps images `[B, C, H, W]` in `[-1, 1]` to
      features `[B, D]`. This runs the user's own code, which they named.
    - a path to a file (`.pt`, `.pth`, `.ts`) is loaded with `torch.jit.load` (TorchScript: no pickle) and called
      on the same images.

    Args:
        spec (`str`): `module:callable` or a TorchScript file.
        device (`str` or `torch.device`, defaults to `"cpu"`): where images are sent before the call.
    """

    def __init__(self, spec: str, device: str | torch.device = "cpu") -> None:
        self.spec, self.device = spec, torch.device(device)
        if os.path.isfile(spec):
            self.function = torch.jit.load(spec, map_location=self.device).eval()
        elif ":" in spec and os.path.sep not in spec.split(":", 1)[0]:
            import importlib

            module_name, _, attribute = spec.partition(":")
            if os.getcwd() not in sys.path:  # as `python -m` does; the console script does not
                sys.path.insert(0, os.getcwd())
            try:
                module = importlib.import_module(module_name)
            except ImportError as error:
                raise ValueError(
                    f"--feature_extractor {spec!r}: cannot import {module_name!r} ({error}). Pass module:callable "
                    "with the module on PYTHONPATH, or a TorchScript file."
                ) from error
            target = module
            for part in attribute.split("."):
                if not hasattr(target, part):
                    raise ValueError(f"--feature_extractor {spec!r}: {module_name!r} has no attribute {attribute!r}.")
                target = getattr(target, part)
            if isinstance(target, type):
                target = target()
            if not callable(target):
                raise ValueError(f"--feature_extractor {spec!r} is not callable.")
            self.function = target
        else:
            raise ValueError(
                f"--feature_extractor {spec!r} is neither a file nor module:callable. Pass a TorchScript file or "
                "e.g. my_features:extract (a function from images [B, C, H, W] in [-1, 1] to features [B, D])."
            )
        if isinstance(self.function, torch.nn.Module):
            self.function.eval()

    @property
    def name(self) -> str:
        """A short label for reports: the callable or the file's name."""
        return os.path.basename(self.spec) if os.path.isfile(self.spec) else self.spec.rsplit(":", 1)[-1]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """`[B, C, H, W]` in `[-1, 1]` -> float64 `[B, D]` features on the CPU."""
        features = self.function(images.to(self.device))
        if not isinstance(features, torch.Tensor) or features.ndim < 1 or features.shape[0] != images.shape[0]:
            raise ValueError(
                f"--feature_extractor {self.spec!r} must return a tensor with one row per image ({images.shape[0]}), "
                f"got {type(features).__name__} {list(getattr(features, 'shape', []))}."
            )
        return features.reshape(features.shape[0], -1).double().cpu()


@dataclass
class ReferenceStatistics:
    r"""
    Streaming statistics of the data images, computed once and shared by every evaluated pipeline.

    Attributes:
        spectrum (`PowerSpectrum`): mean radially averaged power spectrum of the data.
        fwd (`FrechetWaveletDistance` or `None`): FWD accumulator holding the data moments (`None` if the image size
            allows no packet level).
        fid_moments (`RunningMoments` or `None`): Inception feature moments when an extractor was given.
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
            fwd_level (`int`, *optional*, defaults to `None`): FWD packet level; `None` picks
                `default_fwd_level(H, W, C, num_samples)`: packets of about 16×16 pixels, deeper when `num_samples` is
                under twice the packet's feature count.
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
        audio_limit = audio_sample_limit(num_samples, audio_num_samples)
        mel_kept: list[np.ndarray] = []
        spectrum, fwd, fid_moments, shape = RAPSD(), None, None, None
        with tqdm(total=num_samples, desc="data", unit="img", disable=not progress) as bar:
            for batch in iterate_real_images(real, num_samples, batch_size, seed):
                if shape is None:
                    shape = tuple(batch.shape[1:])
                    level = fwd_level
                    if level is None:
                        level = default_fwd_level(shape[1], shape[2], shape[0], num_samples)
                    fwd = FrechetWaveletDistance(wavelet=fwd_wavelet, level=level) if level > 0 else None
                    fid_moments = RunningMoments() if fid_extractor is not None else None
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
            from ..audio import mel_images_to_audio

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


def audio_sample_limit(num_samples: int, audio_num_samples: int | None) -> int:
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


def dataset_info(
    dataset_name: str | None = None,
    train_data_dir: str | None = None,
    builtin_dataset: str | None = "checkerboards",
    modality: str = "image",
) -> dict[str, str]:
    r"""
    `{"type", "name"}` of a data source, as reports and model cards record it (`type` is the model-index dataset type).

    Args:
        dataset_name (`str`, *optional*, defaults to `None`): a `datasets` name: type and name are the name (a
            local path with the home folder as `~`).
        train_data_dir (`str`, *optional*, defaults to `None`): a folder: type `"imagefolder"` (`"audiofolder"`).
        builtin_dataset (`str`, *optional*, defaults to `"checkerboards"`): used when neither of the others is given
            (audio: always `"synthetic_audio"`, the only built-in audio).
        modality (`str`, defaults to `"image"`): `"image"` or `"audio"`.
    """
    if modality not in ("image", "audio"):
        raise ValueError(f"Unknown modality {modality!r}; expected one of ['image', 'audio'].")
    kind = "audio" if modality == "audio" else "image"
    if dataset_name:
        dataset_name = publishable_path(dataset_name)  # a local data set: the home folder as ~ (it is published)
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
