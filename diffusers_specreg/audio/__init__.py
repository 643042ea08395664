"""Audio as mel-spectrogram images: data, the `AudioDiffusionPipeline` and network-free audio metrics.

One module per concern: `synthetic` (built-in audio), `io` (folders and `datasets` columns), `mel` (the `Mel`
settings, slices and the training set), `pipeline` (the pipeline and sampling); the set metrics (`audio_metrics`)
live in `diffusers_specreg.metrics.audio`. Every name is importable from `diffusers_specreg.audio` as before the
split.

The recipe of teticio's audio-diffusion, on current Diffusers: audio is cut into slices, every slice becomes a
1-channel `[y_res, x_res]` mel-spectrogram image with Diffusers' (deprecated, still shipped) `Mel`, a `UNet2DModel`
learns the images, and `AudioDiffusionPipeline(vqvae=None, unet, mel, scheduler)` samples images and turns them back
into audio with Griffin-Lim.

Facts about `Mel` (diffusers 0.42.1) this module relies on:

- A slice is `slice_size = x_res * hop_length - 1` samples; its centred STFT has exactly `x_res` frames.
- `load_audio(raw_audio=...)` zero-pads a clip shorter than `x_res * hop_length`; `get_number_of_slices()` is
  `len(audio) // slice_size`, so the trailing partial slice of a longer clip is dropped.
- `audio_slice_to_image(i)` is `power_to_db(melspectrogram, ref=np.max, top_db)` scaled to `[0, 255]` uint8: every
  slice is normalised to its own loudest bin, so a near-silent slice looks as loud as a loud one, and a digitally
  silent slice becomes an image of one value (255).
- `image_to_audio(image)` inverts with `n_iter` Griffin-Lim iterations from a random phase that librosa draws from an
  unseeded generator, and returns `hop_length * (x_res - 1)` samples.

Our decisions:

- Clips shorter than one slice are skipped and counted (`too_short`) rather than zero-padded: a padded slice teaches
  the model a silent tail that real slices do not have. The trailing partial slice of a longer clip is dropped, as
  `Mel` does.
- A slice is silent, skipped and counted (`silent_slices`) when its peak amplitude is below `10 ** (-top_db / 20)`
  (-80 dBFS for `top_db=80`: the slice lies entirely below the dynamic range a full-scale spectrogram shows, and the
  per-slice normalisation would blow up its noise floor) or when its image has a single value (teticio's rule).
- Files whose sample rate differs from `sample_rate` are resampled with `librosa.resample` (soxr), and the log says how
  many were resampled from which rates. Multichannel audio is averaged to mono.
- `datasets` audio columns are read as stored bytes (`Audio(decode=False)`) and decoded with soundfile: datasets >= 4
  decodes audio with torchcodec, which has no build for every torch, and this way Hub datasets get the same
  resample-and-count policy as folders.
"""

from ..metrics.audio import MIN_METRIC_SAMPLES, audio_metrics, mrstft_resolutions
from .io import AUDIO_EXTENSIONS, AudioScan, load_audio_dataset, scan_audio_folder
from .mel import (
    AudioTrainingData,
    MelImageDataset,
    MelSlices,
    audio_to_mel_images,
    build_audio_dataset,
    check_mel_settings,
    make_mel,
    mel_audio_length,
    mel_slice_seconds,
    silence_threshold,
)
from .pipeline import generate_audio, make_audio_pipeline, mel_images_to_audio
from .synthetic import BUILTIN_SLICES_PER_CLIP, NOTE_KINDS, synthetic_audio

__all__ = [
    "AUDIO_EXTENSIONS",
    "BUILTIN_SLICES_PER_CLIP",
    "MIN_METRIC_SAMPLES",
    "NOTE_KINDS",
    "AudioScan",
    "AudioTrainingData",
    "MelImageDataset",
    "MelSlices",
    "audio_metrics",
    "audio_to_mel_images",
    "build_audio_dataset",
    "check_mel_settings",
    "generate_audio",
    "load_audio_dataset",
    "make_audio_pipeline",
    "make_mel",
    "mel_audio_length",
    "mel_images_to_audio",
    "mel_slice_seconds",
    "mrstft_resolutions",
    "scan_audio_folder",
    "silence_threshold",
    "synthetic_audio",
]
