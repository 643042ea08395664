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
pipeline (`samples_<name>.png`, the name made a distinct safe file name), `rapsd.png` (the data and every
pipeline, log-log) and `band_errors.png`; a markdown table `comparison.md` (also printed). `--update_model_card`
copies each local pipeline's grid, spectrum plot and metrics into `<pipeline>/evaluation/` and rewrites its
`README.md` with them; a `README.md`, `training_args.json` or `evaluation/` there that no training run wrote stops
the command before anything is sampled.

Sampling (Diffusers 0.42):

- `DDPMPipeline` / `DDIMPipeline`: a `DDIMPipeline` built from the saved UNet and `DDIMScheduler.from_config` of the
  saved scheduler, `eta = 0`, `--num_inference_steps` steps (as `train_spectral.py` samples during training);
- `SAGDPipeline` (coloured noise, arXiv 2510.09660): the same pipeline class with a `DDIMScheduler`, `eta = 0`, so x_T
  is drawn from N(0, Σ_w);
- `AudioDiffusionPipeline`: its mel-spectrogram images, with a `DDIMScheduler` and `eta = 0` (without a VQ-VAE drawn
  by `DDIMPipeline` on its UNet and quantised to uint8: the same images, without the pipeline's own unseeded
  Griffin-Lim of every image);
- anything else, e.g. `EDMPipeline`: the pipeline itself with `num_inference_steps`.

A folder holding `pipeline.py` loads with `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`, as its
model card says.
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

Modules: `sampling` (loading, seeded sampling), `statistics` (reference data and their statistics), `run` (one
pipeline's evaluation), `report` (tables, plots, files, card update), `cli` (`main`). The typed result is
`diffusers_specreg.metrics.results` (`result` here is its old path).
"""

from ..metrics.results import (
    BANDS,
    AudioScores,
    BandDistances,
    EvaluationResult,
    PipelineResult,
    SpectralSlopes,
    library_versions,
)
from ..pipelines_io import DYNAMIC_PIPELINE_MODULE
from .cli import main
from .report import audio_comparison_table, comparison_table, plot_mel_images, write_report, write_wav
from .run import evaluate_against, evaluate_pipeline
from .sampling import (
    generate_images,
    image_generators,
    image_shape,
    is_audio_pipeline,
    load_pipeline,
    make_sampler,
    mel_settings,
)
from .statistics import (
    FeatureExtractor,
    InceptionFeatures,
    ReferenceStatistics,
    audio_dataset_info,
    dataset_info,
    default_fwd_level,
    iterate_real_images,
    mel_images_to_uint8,
)

__all__ = [
    "AudioScores",
    "BandDistances",
    "EvaluationResult",
    "SpectralSlopes",
    "BANDS",
    "DYNAMIC_PIPELINE_MODULE",
    "FeatureExtractor",
    "InceptionFeatures",
    "PipelineResult",
    "ReferenceStatistics",
    "audio_comparison_table",
    "audio_dataset_info",
    "comparison_table",
    "dataset_info",
    "default_fwd_level",
    "evaluate_against",
    "evaluate_pipeline",
    "generate_images",
    "image_shape",
    "image_generators",
    "is_audio_pipeline",
    "iterate_real_images",
    "library_versions",
    "load_pipeline",
    "main",
    "make_sampler",
    "mel_images_to_uint8",
    "mel_settings",
    "plot_mel_images",
    "write_report",
    "write_wav",
]
