"""Loading saved pipelines the stock way and drawing seeded images from them (the formulation's fast sampler)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ..diffusion.samplers import default_sampler
from ..kinds import PIPELINE_KINDS, kind_of
from ..pipelines_io import DYNAMIC_PIPELINE_MODULE

# "fast": the formulation's deterministic sampler (DDIM, eta 0); "pipeline": the pipeline's own call (DDPM: ancestral);
# "dpm_solver": DPM-Solver++ (2nd order multistep, `DPMSolverMultistepScheduler`), for DDPM-trained pipelines
SAMPLERS = ("fast", "pipeline", "dpm_solver")
MEL_KEYS = ("x_res", "y_res", "sample_rate", "n_fft", "hop_length", "top_db", "n_iter")


def load_pipeline(
    name_or_path: str,
    device: str | torch.device | None = None,
    cache_dir: str | None = None,
    trust_remote_code: bool = False,
):
    r"""
    Load a saved pipeline (local folder or Hub id) the way its model card says: `DiffusionPipeline.from_pretrained`,
    with `trust_remote_code=True` for a folder that carries its own `pipeline.py` (`_class_name` such as
    `["pipeline", "SAGDPipeline"]`, see `diffusers_specreg.pipelines_io.save_pipeline`). Folders written before that
    convention (`_class_name` a class Diffusers does not ship) load with `custom_pipeline=name_or_path`.

    Code the folder or repo carries runs only when the caller allows it, as in Diffusers: without
    `trust_remote_code`, a `pipeline.py` is loaded only when it is a byte-identical copy of a pipeline file this
    package ships (what `save_pipeline` writes, so no foreign code runs), and any other Python file that
    `from_pretrained` would import (another pipeline file, a custom component `<component>/<library>.py`) raises a
    `ValueError` naming the file and `--trust_remote_code`. A Hub repo's code files are fetched and checked first,
    then the pipeline is loaded at that same commit.

    Args:
        name_or_path (`str`): folder written by `save_pretrained`, or a Hub repo id.
        device (`str` or `torch.device`, *optional*, defaults to `None`): moved there; `None` keeps the CPU.
        cache_dir (`str`, *optional*, defaults to `None`): Hub cache folder.
        trust_remote_code (`bool`, defaults to `False`): run whatever code the folder or repo carries (Diffusers'
            flag of the same name); only for sources you trust.

    Returns:
        `DiffusionPipeline`: the loaded pipeline.
    """
    import diffusers
    from diffusers import DiffusionPipeline

    local = os.path.isdir(name_or_path)
    folder, kwargs = name_or_path, {}
    if not local and not trust_remote_code:
        # the repo's index and the code files it names, at one commit: the files checked are the files loaded
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError

        try:
            folder = snapshot_download(name_or_path, cache_dir=cache_dir, allow_patterns=["model_index.json"])
        except HFValidationError as error:  # e.g. a folder that does not exist: as from_pretrained, an OSError
            raise OSError(f"{name_or_path!r} is neither a folder nor a Hub repo id: {error}") from error
        kwargs["revision"] = os.path.basename(os.path.normpath(folder))  # .../snapshots/<commit>
        named = list(code_files(DiffusionPipeline.load_config(folder)))
        if named:
            snapshot_download(name_or_path, cache_dir=cache_dir, revision=kwargs["revision"], allow_patterns=named)
    index = DiffusionPipeline.load_config(folder, cache_dir=cache_dir)
    name = index.get("_class_name", "")
    custom = isinstance(name, (list, tuple)) or not hasattr(diffusers, name)
    foreign = [] if trust_remote_code else foreign_code_files(folder, index)
    if foreign:
        files = [os.path.join(name_or_path, f) for f in foreign] if local else foreign
        files = ", ".join(files) + ("" if local else f" of the Hub repo {name_or_path}")
        raise ValueError(
            f"{files}: Python code that loading the pipeline would run, and not a copy of a pipeline file that "
            "diffusers-specreg ships. Pass --trust_remote_code (load_pipeline(..., trust_remote_code=True) in Python) "
            "only if you trust its author."
        )
    if custom or trust_remote_code:
        kwargs["trust_remote_code"] = True
    if custom:
        # every local pipeline.py is imported as the same module: forget the previous one (pipelines_io docs)
        sys.modules.pop(DYNAMIC_PIPELINE_MODULE, None)
        if isinstance(name, str):
            kwargs["custom_pipeline"] = folder
    pipeline = DiffusionPipeline.from_pretrained(name_or_path, cache_dir=cache_dir, **kwargs)
    if device is not None:
        pipeline.to(device)
    return pipeline


def shipped_pipeline_sources() -> set[bytes]:
    """The bytes of every pipeline file this package ships (`pipelines/`, installed as `diffusers_specreg.pipelines`),
    which `save_pipeline` copies into a folder as `pipeline.py`."""
    from importlib import resources
    from pathlib import Path

    sources = set()
    for entry in PIPELINE_KINDS.values():
        if entry.pipeline_file is None:
            continue
        try:
            sources.add(resources.files("diffusers_specreg.pipelines").joinpath(entry.pipeline_file).read_bytes())
        except (ModuleNotFoundError, FileNotFoundError):  # a plain checkout: pipelines/ beside the package
            sources.add((Path(__file__).resolve().parents[2] / "pipelines" / entry.pipeline_file).read_bytes())
    return sources


def code_files(index: dict) -> dict[str, str]:
    r"""
    The Python files `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` imports from a folder when
    they exist, as its `model_index.json` names them (Diffusers 0.42, `pipeline_loading_utils`).

    Args:
        index (`dict`): the folder's `model_index.json`.

    Returns:
        `dict[str, str]`: path relative to the folder -> `"pipeline"` (`<_class_name[0]>.py`, or `pipeline.py` for a
        `_class_name` Diffusers does not ship, loaded with `custom_pipeline`) or `"component"` (a custom component
        module `<component>/<library>.py`).
    """
    import diffusers

    files = {}
    name = index.get("_class_name", "")
    if isinstance(name, (list, tuple)) and name and isinstance(name[0], str):
        files[f"{name[0]}.py"] = "pipeline"
    elif isinstance(name, str) and not hasattr(diffusers, name):
        files["pipeline.py"] = "pipeline"
    for key, value in index.items():
        if not key.startswith("_") and isinstance(value, (list, tuple)) and len(value) == 2:
            if isinstance(value[0], str):
                files[f"{key}/{value[0]}.py"] = "component"
    return files


def foreign_code_files(folder: str, index: dict) -> list[str]:
    r"""
    The Python files of a pipeline folder that `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`
    would import ([`code_files`]) other than byte-identical copies of a pipeline file this package ships.

    Args:
        folder (`str`): the pipeline folder (or a Hub repo's snapshot).
        index (`dict`): its `model_index.json`.

    Returns:
        `list[str]`: paths relative to `folder`: a pipeline file of its own, every custom component module.
    """
    shipped = shipped_pipeline_sources()
    foreign = []
    for relative, kind in code_files(index).items():
        path = os.path.join(folder, relative)
        if not os.path.isfile(path):
            continue
        if kind == "pipeline":
            with open(path, "rb") as f:
                if f.read() in shipped:
                    continue
        foreign.append(relative)
    return foreign


def _unet_of(pipeline):
    unet = getattr(pipeline, "unet", None)
    if unet is None:
        raise ValueError(f"{type(pipeline).__name__} has no `unet`; expected an unconditional UNet pipeline.")
    return unet


def image_shape(pipeline) -> tuple[int, int, int]:
    """`(C, H, W)` of the images a pipeline generates (from its UNet config; for a latent pipeline, `LDMPipeline`,
    the decoded images: the autoencoder's output channels, the latent size times its upsampling factor)."""
    config = _unet_of(pipeline).config
    size = config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    autoencoder = getattr(pipeline, "vqvae", None) or getattr(pipeline, "vae", None)
    if autoencoder is not None and kind_of(pipeline) is not None and not is_audio_pipeline(pipeline):
        from ..autoencoder import downsampling_factor

        factor = downsampling_factor(autoencoder.config)
        return int(autoencoder.config.out_channels), int(height) * factor, int(width) * factor
    return int(config.in_channels), int(height), int(width)


def is_audio_pipeline(pipeline) -> bool:
    """`True` for a pipeline of an audio formulation, an `AudioDiffusionPipeline` (mel-spectrogram images turned
    into audio by its `mel`)."""
    entry = kind_of(pipeline)
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


def make_sampler(
    pipeline, num_inference_steps: int, sampler: str = "fast"
) -> tuple[Callable[[list[torch.Generator]], torch.Tensor], str]:
    r"""
    A function drawing a batch of images, and a description of the sampler.

    Args:
        pipeline (`DiffusionPipeline`): the loaded pipeline.
        num_inference_steps (`int`): denoising steps.
        sampler (`"fast"`, `"pipeline"` or `"dpm_solver"`, defaults to `"fast"`): `"fast"`: the deterministic
            sampler of the pipeline's formulation (`diffusers_specreg.formulations`; DDIM with eta 0 for DDPM, SAGD
            and audio), else the pipeline itself. `"pipeline"`: the pipeline's own `__call__` with
            `num_inference_steps` (for a `DDPMPipeline` the ancestral DDPM sampler on that many of the training
            timesteps, which gave less grainy and sharper samples than DDIM at 50 steps in
            `benchmarks/bench_card_sampler.py`). `"dpm_solver"`: a `DDPMPipeline`'s UNet sampled with Diffusers'
            `DPMSolverMultistepScheduler` (DPM-Solver++, order 2, arXiv 2211.01095) built from its scheduler config.

    Returns:
        `tuple`: `sample(generators) -> torch.Tensor` of shape `[len(generators), C, H, W]` in `[-1, 1]` on the CPU
        (one generator per image), and a one-line description such as `"DDIM (eta 0), 50 steps"`.
    """
    if num_inference_steps < 1:
        raise ValueError(f"`num_inference_steps` must be >= 1, got {num_inference_steps}.")
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}; allowed values are {SAMPLERS}.")
    entry = kind_of(pipeline)
    if sampler == "dpm_solver":
        return _to_tensor(_dpm_solver_sampler(pipeline, num_inference_steps)), (
            f"DPM-Solver++ (2nd order multistep, linspace timesteps), {num_inference_steps} steps"
        )
    if sampler == "pipeline" or entry is None:
        sample, description = default_sampler(pipeline, num_inference_steps)
        if type(pipeline).__name__ == "DDPMPipeline":
            description = f"DDPM (ancestral), {num_inference_steps} steps"
        elif type(pipeline).__name__ == "LDMPipeline":
            scheduler = type(pipeline.scheduler).__name__
            description = f"LDMPipeline ({scheduler}), {num_inference_steps} steps, decoded by the autoencoder"
    else:
        sample, description = entry.make_sampler(pipeline, num_inference_steps)
    return _to_tensor(sample), description


def _dpm_solver_sampler(pipeline, num_inference_steps: int) -> Callable[[list[torch.Generator]], np.ndarray]:
    """DPM-Solver++ on the UNet of a `DDPMPipeline` (same initial noise as the pipeline: `randn` per generator)."""
    from diffusers import DDPMPipeline, DPMSolverMultistepScheduler

    if type(pipeline).__name__ != "DDPMPipeline":
        raise ValueError(
            f"--sampler dpm_solver samples DDPM-trained pipelines (DDPMPipeline); this one is {type(pipeline).__name__}. "
            "Use --sampler fast or pipeline for it."
        )
    # timestep_spacing: a saved DDPMScheduler config says "leading", which would start 20 steps at t = 940 and treat
    # pure noise as x_940; "linspace" (DPMSolverMultistepScheduler's own default) starts at t = 999
    scheduler = DPMSolverMultistepScheduler.from_config(
        pipeline.scheduler.config, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="linspace"
    )
    solver = DDPMPipeline(unet=pipeline.unet, scheduler=scheduler)
    solver.set_progress_bar_config(disable=True)

    def sample(generators: list[torch.Generator]) -> np.ndarray:
        return solver(
            batch_size=len(generators), generator=generators, num_inference_steps=num_inference_steps, output_type="np"
        ).images

    return sample


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
    sampler: str = "fast",
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
        sampler (`"fast"`, `"pipeline"` or `"dpm_solver"`, defaults to `"fast"`): see [`make_sampler`].

    Yields:
        `torch.Tensor`: `[B, C, H, W]` float32 in `[-1, 1]` on the CPU.
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"`num_samples` and `batch_size` must be >= 1, got {num_samples} and {batch_size}.")
    sample, _ = make_sampler(pipeline, num_inference_steps, sampler)
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
