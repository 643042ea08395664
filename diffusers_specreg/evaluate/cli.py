"""The command line, `python -m diffusers_specreg.evaluate`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
from collections.abc import Sequence

import torch

from ..card import card_update_error
from ..metrics.results import AUDIO_FILES, PipelineResult
from ..plots import REFERENCE_NAMES
from .report import audio_comparison_table, comparison_table, update_pipeline_card, write_report
from .run import evaluate_against
from .sampling import image_shape, is_audio_pipeline, load_pipeline, mel_settings
from .statistics import (
    AUDIO_METRIC_SAMPLES,
    BUILTIN_AUDIO_DATASET,
    BUILTIN_IMAGE_DATASETS,
    FeatureExtractor,
    InceptionFeatures,
    ReferenceStatistics,
    dataset_info,
)

logger = logging.getLogger("diffusers_specreg.evaluate")

MODALITIES = ("auto", "image", "audio")


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
    parser.add_argument(
        "--sampler",
        choices=["fast", "pipeline", "dpm_solver"],
        default="fast",
        help="fast: DDIM (eta 0); pipeline: the pipeline's own sampler (DDPM: ancestral, the model card's choice); "
        "dpm_solver: DPM-Solver++ (DDPM pipelines).",
    )
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", type=str, required=True)
    parser.add_argument("--grid_size", type=int, default=64, help="Images in each sample grid.")
    parser.add_argument("--fwd_wavelet", type=str, default="haar")
    parser.add_argument(
        "--fwd_level",
        type=int,
        default=None,
        help="FWD packet level (default: ~16x16 packets, deeper when --num_samples is under twice the features per packet).",
    )
    parser.add_argument(
        "--fid_weights",
        type=str,
        default=None,
        help="Optional local Inception TorchScript file (inception-2015-12-05.pt) to also compute FID.",
    )
    parser.add_argument(
        "--feature_extractor",
        type=str,
        default=None,
        help="Fréchet distance on the features of your own network instead of Inception: module:callable (images "
        "[B, C, H, W] in [-1, 1] -> [B, D]) or a TorchScript file. Reported as FD[<name>].",
    )
    parser.add_argument("--device", type=str, default=None, help="Default: cuda if available, else cpu.")
    parser.add_argument(
        "--trust_remote_code",
        action="store_true",
        help="Run the code a pipeline folder or Hub repo carries (a pipeline.py that is not a copy of this package's "
        "own, custom component modules), as Diffusers' flag of the same name. Only for sources you trust.",
    )
    parser.add_argument(
        "--update_model_card",
        action="store_true",
        help="Copy each local pipeline's results into <pipeline>/evaluation/ and rewrite its README.md (a README.md, "
        "training_args.json or evaluation/ there that no training run wrote stops the command first).",
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
    from ..audio import BUILTIN_SLICES_PER_CLIP, build_audio_dataset

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
    from ..data import build_image_dataset

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
        builtin_split="test",  # Fashion-MNIST: held-out images, not those the model was trained on
    )
    return data.dataset, dataset_info(args.dataset_name, args.train_data_dir, args.builtin_dataset)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation command; returns the exit code (0)."""
    args = build_parser().parse_args(argv)
    _validate(args)
    names = _names(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        from ..train.runtime import configure_cpu_threads

        logger.info(configure_cpu_threads(1))
    if args.fid_weights and args.feature_extractor:
        raise ValueError("Pass --fid_weights (Inception FID) or --feature_extractor (your network's FD), not both.")
    if args.update_model_card:  # before anything is loaded or sampled
        errors = [card_update_error(path) for path in args.pipeline if os.path.isdir(path)]
        if any(errors):
            raise ValueError(" ".join(e for e in errors if e))
    fid_extractor = InceptionFeatures(args.fid_weights, device) if args.fid_weights else None
    if args.feature_extractor:
        fid_extractor = FeatureExtractor(args.feature_extractor, device)
    progress = not args.no_progress

    pipelines, shape = _load_pipelines(args, device)
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
        result = evaluate_against(
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
            sampler=args.sampler,
        )
        result.metrics = dataclasses.replace(result.metrics, pipeline=path)
        if isinstance(fid_extractor, FeatureExtractor):
            result.metrics = dataclasses.replace(result.metrics, feature_extractor=fid_extractor.name)
        results.append(result)
    write_report(args.output_dir, results, reference)
    print(comparison_table([r.metrics for r in results], data_slope=results[0].metrics.slope.data))
    if audio:
        print("\n" + audio_comparison_table([r.metrics for r in results]))
    print(f"\nWrote {os.path.join(args.output_dir, 'metrics.json')} and the plots.")
    if args.update_model_card:
        _update_cards(args, results, reference)
    return 0


def _load_pipelines(args, device: str) -> tuple[list, tuple[int, ...]]:
    """Every `--pipeline`, loaded, and the image shape `(C, H, W)` they all generate (`ValueError` if they differ)."""
    pipelines = []
    for path in args.pipeline:
        try:
            pipelines.append(
                load_pipeline(path, device=device, cache_dir=args.cache_dir, trust_remote_code=args.trust_remote_code)
            )
        except OSError as error:  # missing folder, no model_index.json, Hub unreachable
            raise ValueError(f"Cannot load the pipeline {path!r}: {error}") from error
    shapes = {image_shape(p) for p in pipelines}
    if len(shapes) != 1:
        raise ValueError(f"The pipelines generate different image shapes {sorted(shapes)}; compare like with like.")
    return pipelines, shapes.pop()


def _update_cards(args, results: list[PipelineResult], reference: ReferenceStatistics) -> None:
    """`--update_model_card`: every local pipeline's evaluation copied into its folder and its card rewritten."""
    for path, result in zip(args.pipeline, results):
        if not os.path.isdir(path):
            logger.warning("--update_model_card: %s is not a local folder; its card was not changed.", path)
            continue
        card = update_pipeline_card(path, result, reference)
        print(f"Updated the model card {card}")
