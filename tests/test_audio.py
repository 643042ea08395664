"""Tests of diffusers_specreg.audio: synthetic audio, folder and dataset loading, mel slices, the audio pipeline and
the audio set metrics. Tiny settings throughout: 8 kHz, 16x16 images, n_fft 128, hop 32 (a slice is 511 samples)."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import soundfile
import torch
from conftest import tiny_unet

from diffusers_specreg.audio import (
    audio_metrics,
    audio_to_mel_images,
    build_audio_dataset,
    generate_audio,
    make_audio_pipeline,
    make_mel,
    mel_audio_length,
    mel_images_to_audio,
    mel_slice_seconds,
    scan_audio_folder,
    silence_threshold,
    synthetic_audio,
)
from diffusers_specreg.data import DataError

SR, RES, N_FFT, HOP = 8000, 16, 128, 32
SLICE = RES * HOP - 1  # Mel.slice_size


def build(**kwargs):
    options = dict(
        dataset_name=None,
        dataset_config_name=None,
        train_data_dir=None,
        cache_dir=None,
        resolution=RES,
        sample_rate=SR,
        n_fft=N_FFT,
        hop_length=HOP,
    )
    options.update(kwargs)
    return build_audio_dataset(**options)


def tone(num_samples: int, sample_rate: int = SR, freq: float = 440.0) -> np.ndarray:
    t = np.arange(num_samples) / sample_rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# Synthetic audio
# ---------------------------------------------------------------------------------------------------------------


def test_synthetic_audio_is_deterministic_and_never_silent():
    clips = synthetic_audio(4, SR, 0.5, seed=3)
    again = synthetic_audio(4, SR, 0.5, seed=3)
    other = synthetic_audio(4, SR, 0.5, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(clips, again))
    assert not any(np.array_equal(a, b) for a, b in zip(clips, other))
    # clip i depends on (seed, i) only
    assert all(np.array_equal(a, b) for a, b in zip(synthetic_audio(2, SR, 0.5, seed=3), clips))
    threshold = silence_threshold(80)
    for clip in clips:
        assert clip.dtype == np.float32 and clip.shape == (4000,)
        assert 0.5 - 1e-6 <= np.abs(clip).max() <= 0.95 + 1e-6
        # every window of one mel slice is above the silence threshold
        peaks = [np.abs(clip[i : i + SLICE]).max() for i in range(0, clip.size - SLICE, SLICE // 2)]
        assert min(peaks) > threshold
        # sharp onsets: some sample-to-sample jump far above what the notes alone give
        assert np.abs(np.diff(clip)).max() > 0.1


def test_synthetic_audio_rejects_bad_arguments():
    with pytest.raises(DataError, match="num_clips"):
        synthetic_audio(0, SR, 1.0)
    with pytest.raises(DataError, match="duration_s"):
        synthetic_audio(1, SR, 0.0)


# ---------------------------------------------------------------------------------------------------------------
# Folders
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def audio_folder(tmp_path):
    folder = tmp_path / "audio"
    (folder / "sub").mkdir(parents=True)
    # 4 slices, the last one digitally silent
    with_silence = np.concatenate([tone(3 * SLICE), np.zeros(SLICE, dtype=np.float32)])
    soundfile.write(folder / "a.wav", with_silence, SR)
    soundfile.write(folder / "sub" / "b.flac", tone(2 * SLICE + 100, freq=660.0), SR)  # 2 slices, tail dropped
    soundfile.write(folder / "c_16k.wav", tone(6 * SLICE, 16000), 16000)  # resampled to 3 slices
    soundfile.write(folder / "short.wav", tone(SLICE - 1), SR)  # too short
    soundfile.write(folder / "empty.wav", np.zeros(0, dtype=np.float32), SR)
    (folder / "broken.wav").write_bytes(b"RIFF this is not audio")
    (folder / "notes.txt").write_text("ignored")
    return folder


def test_folder_counts_every_kind_of_skip(audio_folder, caplog):
    with caplog.at_level(logging.INFO, logger="diffusers_specreg.audio"):
        data = build(train_data_dir=str(audio_folder))
    assert data.stats == {
        "files": 6,
        "unreadable": 1,
        "empty": 1,
        "resampled": 1,
        "too_short": 1,
        "slices": 3 + 2 + 3,
        "silent_slices": 1,
    }
    assert len(data.dataset) == 8 and data.channels == 1 and data.name is None
    assert "broken.wav" in caplog.text and "empty.wav" in caplog.text and "16000 Hz" in caplog.text
    assert "1 unreadable" in data.description and "1 silent slices skipped" in data.description


def test_scan_resamples_to_the_target_rate(audio_folder):
    scan = scan_audio_folder(str(audio_folder), SR)
    assert scan.resampled_from == {16000: 1} and scan.resampled == 1
    clip = scan.clips[scan.sources.index("c_16k.wav")]
    assert clip.shape == (3 * SLICE,)
    # still a 440 Hz tone at the new rate
    spectrum = np.abs(np.fft.rfft(clip))
    assert np.fft.rfftfreq(clip.size, 1 / SR)[spectrum.argmax()] == pytest.approx(440.0, abs=SR / clip.size)


def test_symlinked_sub_folders_are_read_once(tmp_path, caplog):
    own, elsewhere = tmp_path / "sounds" / "own", tmp_path / "elsewhere"
    own.mkdir(parents=True)
    elsewhere.mkdir()
    soundfile.write(own / "a.wav", tone(SLICE), SR)
    soundfile.write(elsewhere / "b.wav", tone(SLICE, freq=660.0), SR)
    (tmp_path / "sounds" / "linked").symlink_to(elsewhere, target_is_directory=True)
    (own / "loop").symlink_to(tmp_path / "sounds", target_is_directory=True)
    scan = scan_audio_folder(str(tmp_path / "sounds"), SR)
    assert sorted(scan.sources) == ["linked/b.wav", "own/a.wav"]
    assert "own/loop" in caplog.text


def test_all_silent_folder_raises(tmp_path):
    for i in range(2):
        soundfile.write(tmp_path / f"quiet_{i}.wav", np.full(3 * SLICE, 1e-5, dtype=np.float32), SR)
    with pytest.raises(DataError, match="silent"):
        build(train_data_dir=str(tmp_path))


def test_folder_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build(train_data_dir=str(tmp_path / "missing"))
    (tmp_path / "readme.txt").write_text("no audio here")
    with pytest.raises(DataError, match="contains no audio files"):
        build(train_data_dir=str(tmp_path))
    (tmp_path / "bad.wav").write_bytes(b"garbage")
    with pytest.raises(DataError, match="None of the 1 audio files"):
        build(train_data_dir=str(tmp_path))
    soundfile.write(tmp_path / "short.wav", tone(100), SR)
    with pytest.raises(DataError, match=r"shorter than one mel slice of 0\.064 s.*--hop_length"):
        build(train_data_dir=str(tmp_path))


def test_resolution_must_fit_the_fft():
    with pytest.raises(DataError, match="n_fft >= 62"):
        build(resolution=32, n_fft=32)
    with pytest.raises(DataError, match="Pass either"):
        build(dataset_name="x", train_data_dir="y")


# ---------------------------------------------------------------------------------------------------------------
# Mel images
# ---------------------------------------------------------------------------------------------------------------


def test_builtin_mel_images_have_the_right_shape_and_range():
    data = build(builtin_num_clips=3)
    assert len(data.dataset) == data.stats["slices"] == 3 * 4
    assert data.stats["silent_slices"] == 0 and data.stats["too_short"] == 0
    assert data.mel.x_res == data.mel.y_res == RES and data.mel.get_sample_rate() == SR
    for i in range(len(data.dataset)):
        x = data.dataset[i]["input"]
        assert x.shape == (1, RES, RES) and x.dtype == torch.float32
        assert x.min() >= -1 and x.max() == 1.0  # Mel normalises every slice to its loudest bin (255)
        assert x.std() > 0.1


def test_mel_slicing_drops_partial_slices_and_counts_short_clips():
    mel = make_mel(RES, SR, N_FFT, HOP)
    assert mel.slice_size == SLICE and mel_slice_seconds(mel) == pytest.approx(SLICE / SR)
    slices = audio_to_mel_images([tone(2 * SLICE + SLICE // 2), tone(SLICE - 1), tone(SLICE)], mel)
    assert slices.images.shape == (2 + 1, RES, RES) and slices.images.dtype == np.uint8
    assert slices.too_short == 1 and slices.silent_slices == 0


def test_mel_images_to_audio_is_seeded_and_matches_the_stock_inversion():
    from PIL import Image

    mel = make_mel(RES, SR, N_FFT, HOP)
    images = audio_to_mel_images(synthetic_audio(2, SR, 4 * SLICE / SR, seed=0), mel).images
    audio = mel_images_to_audio(images, mel, seed=0)
    assert audio.shape == (len(images), mel_audio_length(mel)) and audio.dtype == np.float32
    assert np.array_equal(audio, mel_images_to_audio(images, mel, seed=0))
    assert not np.array_equal(audio, mel_images_to_audio(images, mel, seed=1))

    def round_trip_error(waveform, image):
        mel.load_audio(raw_audio=waveform)
        return np.abs(np.asarray(mel.audio_slice_to_image(0), dtype=float) - image).mean()

    ours = np.mean([round_trip_error(a, im) for a, im in zip(audio, images)])
    stock = np.mean([round_trip_error(mel.image_to_audio(Image.fromarray(im)), im) for im in images])
    assert mel.image_to_audio(Image.fromarray(images[0])).shape == audio.shape[1:]
    assert ours == pytest.approx(stock, rel=0.15)


# ---------------------------------------------------------------------------------------------------------------
# `datasets` dataset
# ---------------------------------------------------------------------------------------------------------------


def test_datasets_audio_column(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = []
    for data, rate in ((tone(3 * SLICE), SR), (tone(4 * SLICE, 16000), 16000)):
        buffer = io.BytesIO()
        soundfile.write(buffer, data, rate, format="WAV")
        rows.append({"bytes": buffer.getvalue(), "path": f"clip_{rate}.wav"})
    rows.append({"bytes": b"not audio", "path": "broken.wav"})
    table = datasets.Dataset.from_dict({"audio": rows})
    table = table.cast(datasets.Features({"audio": datasets.Audio()}))  # cast_storage: no torchcodec needed
    (tmp_path / "ds").mkdir()
    table.to_parquet(str(tmp_path / "ds" / "train.parquet"))
    data = build(dataset_name=str(tmp_path / "ds"), cache_dir=str(tmp_path / "cache"))
    assert data.stats["files"] == 3 and data.stats["unreadable"] == 1 and data.stats["resampled"] == 1
    assert data.stats["slices"] == 3 + 2
    assert data.name == str(tmp_path / "ds")


# ---------------------------------------------------------------------------------------------------------------
# Pipeline
# ---------------------------------------------------------------------------------------------------------------


def test_pipeline_saves_loads_and_generates_audio(tmp_path, monkeypatch):
    from diffusers import AudioDiffusionPipeline, DDIMScheduler, DDPMScheduler, DiffusionPipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mel = make_mel(RES, SR, N_FFT, HOP)
    make_audio_pipeline(tiny_unet(), mel, DDPMScheduler(num_train_timesteps=50)).save_pretrained(tmp_path)
    pipeline = DiffusionPipeline.from_pretrained(tmp_path)
    pipeline.set_progress_bar_config(disable=True)
    assert isinstance(pipeline, AudioDiffusionPipeline) and pipeline.vqvae is None
    assert pipeline.mel.get_sample_rate() == SR and pipeline.mel.hop_length == HOP

    images, audios, rate = generate_audio(pipeline, 2, 3, torch.Generator().manual_seed(0), griffin_lim_seed=0)
    expected_length = mel.hop_length * (mel.x_res - 1)
    assert rate == mel.get_sample_rate() == SR
    assert images.shape == (2, RES, RES) and images.dtype == np.uint8
    assert audios.shape == (2, expected_length) == (2, mel_audio_length(mel)) and audios.dtype == np.float32
    assert np.isfinite(audios).all() and np.abs(audios).max() > 0
    again = generate_audio(pipeline, 2, 3, torch.Generator().manual_seed(0), griffin_lim_seed=0)
    assert np.array_equal(images, again[0]) and np.array_equal(audios, again[1])

    # DDIM (eta 0) and the pipeline's own Griffin-Lim audio
    pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    images, audios, rate = generate_audio(pipeline, 1, 2, torch.Generator().manual_seed(1))
    assert images.shape == (1, RES, RES) and audios.shape == (1, expected_length) and rate == SR
    with pytest.raises(ValueError, match="num_train_timesteps"):
        generate_audio(pipeline, 1, 51)


def test_make_audio_pipeline_checks_its_parts():
    from diffusers import DDPMScheduler, EulerDiscreteScheduler

    mel = make_mel(RES, SR, N_FFT, HOP)
    with pytest.raises(ValueError, match=r"\[16, 16\]"):
        make_audio_pipeline(tiny_unet(sample_size=32), mel, DDPMScheduler(num_train_timesteps=50))
    with pytest.raises(ValueError, match="DDIMScheduler"):
        make_audio_pipeline(tiny_unet(), mel, EulerDiscreteScheduler(num_train_timesteps=50))


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------


def test_audio_metrics_zero_for_a_set_against_itself_and_grow_with_noise():
    real = synthetic_audio(6, SR, 0.25, seed=1)
    same = audio_metrics(real, [clip.copy() for clip in real], SR)
    assert same["mrstft"] == pytest.approx(0.0, abs=1e-9)
    assert same["log_spectral_distance"] == pytest.approx(0.0, abs=1e-9)
    assert same["frechet_log_mel"] == pytest.approx(0.0, abs=1e-6)
    assert same["ndb_k"] == 0.0 and same["ndb_js"] == pytest.approx(0.0, abs=1e-12)
    assert same["num_real"] == same["num_fake"] == 6

    rng = np.random.default_rng(0)
    noisy = {
        level: audio_metrics(real, [c + level * rng.standard_normal(c.size).astype(np.float32) for c in real], SR)
        for level in (0.01, 0.1)
    }
    for key in ("mrstft", "log_spectral_distance", "frechet_log_mel"):
        assert 0 < noisy[0.01][key] < noisy[0.1][key], key
    assert noisy[0.1]["ndb_k"] > 0 and noisy[0.1]["ndb_js"] > 0


def test_audio_metrics_accept_arrays_and_unequal_lengths():
    real = synthetic_audio(3, SR, 0.25, seed=2) + synthetic_audio(2, SR, 0.2, seed=5)
    fake = np.stack(synthetic_audio(4, SR, 0.1, seed=3))  # [B, T] array, other lengths
    result = audio_metrics(real, torch.from_numpy(fake), SR)
    assert result["num_real"] == 5 and result["num_fake"] == 4 and result["mrstft"] > 0
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        audio_metrics(real, np.zeros((2, 2, 3, 800)), SR)
    with pytest.raises(ValueError, match="at least 128 samples"):
        audio_metrics(real, [np.ones(100, dtype=np.float32)] * 2, SR)
