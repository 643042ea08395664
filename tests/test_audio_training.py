"""End-to-end audio training (issue 5): `train_spectral.py --modality audio` under `accelerate launch` on generated
audio files and on the built-in synthetic audio. Checks the saved `AudioDiffusionPipeline`, the tensorboard audio and
spectrogram summaries, the evaluation files, the model card (audio metrics, figure, WAV links, a usage snippet that
runs, an evaluation command that reproduces the metrics), and that bad audio is rejected before training with counts
in the message. 8 kHz, 16x16 mel images (n_fft 128, hop 32: a slice is 511 samples), a 0.2 M-parameter UNet; offline.
"""

from __future__ import annotations

import io
import json
import math
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import REPO, launch, write_unet_config
from huggingface_hub import ModelCard
from PIL import Image

from diffusers_specreg.data import DataError

sys.path.insert(0, str(REPO))
import train_spectral  # noqa: E402

SR, RES, N_FFT, HOP = 8000, 16, 128, 32
SLICE = RES * HOP - 1  # Mel.slice_size
CLIP = HOP * (RES - 1)  # samples of the audio Griffin-Lim gives for one mel image
AUDIO = [
    "--modality",
    "audio",
    "--resolution",
    str(RES),
    "--sample_rate",
    str(SR),
    "--n_fft",
    str(N_FFT),
    "--hop_length",
    str(HOP),
    "--train_batch_size",
    "4",
    "--eval_batch_size",
    "2",
    "--eval_num_samples",
    "4",
    "--ddpm_num_steps",
    "50",
    "--ddpm_num_inference_steps",
    "2",
    "--max_train_steps",
    "2",
    "--spectral_loss",
    "amplitude",
    "--lr_warmup_steps",
    "1",
    "--seed",
    "0",
]
AUDIO_METRICS = {
    "mr-stft-distance": "mrstft",
    "log-spectral-distance": "log_spectral_distance",
    "frechet-log-mel-distance": "frechet_log_mel",
    "ndb-k": "ndb_k",
    "ndb-js": "ndb_js",
}


def sine(num_samples: int, freq: float, sample_rate: int = SR, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(num_samples) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def chirp(num_samples: int, f0: float, f1: float, sample_rate: int = SR) -> np.ndarray:
    t = np.arange(num_samples) / sample_rate
    duration = num_samples / sample_rate
    return (0.6 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration)))).astype(np.float32)


def write_audio_folder(folder: Path) -> Path:
    """11 usable slices in 4 files (one at 16 kHz), plus one unreadable, one empty and one too short file."""
    (folder / "sub").mkdir(parents=True)
    soundfile.write(folder / "a440.wav", sine(3 * SLICE, 440.0), SR)
    soundfile.write(folder / "sub" / "chirp.flac", chirp(3 * SLICE, 200.0, 3000.0), SR)
    soundfile.write(folder / "two_tones.wav", sine(2 * SLICE, 1000.0) + sine(2 * SLICE, 2500.0, amplitude=0.2), SR)
    soundfile.write(folder / "at_16k.wav", sine(6 * SLICE, 700.0, 16000), 16000)  # resampled: 3 slices
    soundfile.write(folder / "short.wav", sine(SLICE - 10, 440.0), SR)
    soundfile.write(folder / "empty.wav", np.zeros(0, dtype=np.float32), SR)
    (folder / "broken.wav").write_bytes(b"RIFF....WAVE but nothing else")
    return folder


def tensorboard_tags(log_dir: Path) -> dict[str, set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: dict[str, set[str]] = {"audio": set(), "images": set(), "scalars": set()}
    events = []
    for path in log_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(path), size_guidance={"audio": 0, "images": 0, "scalars": 0})
        accumulator.Reload()
        for kind in tags:
            tags[kind] |= set(accumulator.Tags()[kind])
        events += [event for tag in accumulator.Tags()["audio"] for event in accumulator.Audio(tag)]
    return tags, events


def run_snippet(text: str, cwd: Path, monkeypatch) -> None:
    snippet = re.search(r"```python\n(.*?)```", text, flags=re.S).group(1)
    monkeypatch.chdir(cwd)
    exec(compile(snippet, "usage", "exec"), {})


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """One run on an audio folder: 2 steps, evaluation of 4 samples, the model card."""
    root = tmp_path_factory.mktemp("audio_run")
    folder = write_audio_folder(root / "clips")
    config = write_unet_config(root / "config", channels=1, sample_size=RES)
    out = root / "audio-model"
    result = launch(
        [
            *AUDIO,
            "--train_data_dir",
            str(folder),
            "--model_config_name_or_path",
            str(config),
            "--output_dir",
            str(out),
            "--save_images_epochs",
            "1",
        ]
    )
    return out, result


@pytest.fixture(scope="module")
def builtin_run(tmp_path_factory):
    """One run on the built-in synthetic audio (no data named): 2 clips of 4 slices."""
    root = tmp_path_factory.mktemp("builtin_run")
    config = write_unet_config(root / "config", channels=1, sample_size=RES)
    out = root / "audio-builtin"
    result = launch(
        [*AUDIO, "--builtin_num_clips", "2", "--model_config_name_or_path", str(config), "--output_dir", str(out)]
    )
    return out, result


def test_skipped_files_are_counted_in_the_log(folder_run):
    _, result = folder_run
    assert "11 mel slices (16x16, 0.064 s at 8000 Hz) from 7 audio files" in result.stderr
    assert "(1 unreadable, 1 empty, 1 resampled, 1 too short)" in result.stderr
    assert "Skipping 1 of 7 audio files" in result.stderr and "broken.wav" in result.stderr
    assert "1 from 16000 Hz" in result.stderr


def test_saved_pipeline_loads_as_audio_diffusion_and_generates_audio(folder_run):
    from diffusers import AudioDiffusionPipeline, DiffusionPipeline

    from diffusers_specreg.audio import generate_audio

    out, _ = folder_run
    pipeline = DiffusionPipeline.from_pretrained(out)
    pipeline.set_progress_bar_config(disable=True)
    assert isinstance(pipeline, AudioDiffusionPipeline) and pipeline.vqvae is None
    assert pipeline.unet.config.in_channels == pipeline.unet.config.out_channels == 1
    mel = pipeline.mel
    assert (mel.get_sample_rate(), mel.n_fft, mel.hop_length, mel.x_res, mel.y_res) == (SR, N_FFT, HOP, RES, RES)
    output = pipeline(batch_size=2, steps=2, generator=torch.Generator().manual_seed(0))
    assert output.audios.shape == (2, 1, CLIP) and np.isfinite(output.audios).all()
    assert output.images[0].size == (RES, RES) and output.images[0].mode == "L"
    images, audios, rate = generate_audio(pipeline, 2, 2, torch.Generator().manual_seed(0), griffin_lim_seed=0)
    assert rate == SR and images.shape == (2, RES, RES) and audios.shape == (2, CLIP)
    assert np.abs(audios).max() > 0


def test_tensorboard_has_audio_and_spectrogram_images(folder_run):
    out, _ = folder_run
    tags, audio_events = tensorboard_tags(out / "logs")
    assert {"audio/0", "audio/1"} <= tags["audio"]  # eval_batch_size 2 clips
    assert {"samples", "rapsd"} <= tags["images"]  # the generated mel images and their spectrum vs the data
    assert {"loss", "base", "amplitude"} <= tags["scalars"]
    assert audio_events and all(e.sample_rate == SR and e.length_frames == CLIP for e in audio_events)
    # the samples are one grid with 2-pixel white gaps between and around the tiles (eval_batch_size 2 in a row)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for path in (out / "logs").rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(path), size_guidance={"images": 0})
        accumulator.Reload()
        if "samples" in accumulator.Tags()["images"]:
            event = accumulator.Images("samples")[-1]
            grid = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("L"))
            assert grid.shape == (RES + 4, 2 * (RES + 2) + 2)
            assert (grid[:2] == 255).all() and (grid[:, RES + 2 : RES + 4] == 255).all()


def test_evaluation_writes_audio_metrics_figure_and_wavs(folder_run):
    out, _ = folder_run
    report = json.loads((out / "evaluation" / "metrics.json").read_text())
    entry = report["pipelines"]["audio-model"]
    audio = entry["audio"]
    for key in AUDIO_METRICS.values():
        assert math.isfinite(audio[key]) and audio[key] >= 0, key
    assert audio["mrstft"] > 0 and audio["frechet_log_mel"] > 0  # 2 training steps: far from the data
    assert (audio["num_real"], audio["num_fake"], audio["sample_rate"]) == (4, 4, SR)
    assert audio["mel"] == {
        "x_res": RES,
        "y_res": RES,
        "sample_rate": SR,
        "n_fft": N_FFT,
        "hop_length": HOP,
        "top_db": 80,
        "n_iter": 32,
    }
    assert entry["dataset"] == {"type": "audiofolder", "name": "audio folder clips"}
    assert audio["spectrogram_figure"] == "spectrograms.png"
    with Image.open(out / "evaluation" / "spectrograms.png") as figure:
        assert figure.format == "PNG" and figure.size[0] > 400
    assert audio["samples"] == [f"audio/sample_{i}.wav" for i in range(4)]
    for name in audio["samples"] + audio["data_samples"]:
        clip, rate = soundfile.read(out / "evaluation" / name)
        assert rate == SR and clip.shape == (CLIP,) and np.abs(clip).max() == pytest.approx(0.9, abs=1e-3)


def test_model_card_has_audio_metrics_figure_links_and_a_snippet_that_runs(folder_run, tmp_path, monkeypatch):
    out, _ = folder_run
    card = ModelCard.load(out / "README.md")
    audio = json.loads((out / "evaluation" / "metrics.json").read_text())["pipelines"]["audio-model"]["audio"]
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    for metric_type, key in AUDIO_METRICS.items():
        assert values[metric_type] == pytest.approx(audio[key]), metric_type
    assert "log-rapsd-distance" in values  # the mel-image spectral metrics stay
    first = card.data.eval_results[0]
    assert first.task_type == "other" and first.dataset_type == "audiofolder"
    assert {"audio", "mel-spectrogram", "unconditional-audio-generation"} <= set(card.data.tags)
    assert "| MR-STFT distance |" in card.text and "| NDB/K |" in card.text
    assert "(arXiv 1910.11480)" in card.text and "(arXiv 1805.12462)" in card.text  # MR-STFT and NDB citations
    assert "![Mel spectrograms of generated samples (top) and data (bottom)](evaluation/spectrograms.png)" in card.text
    links = re.findall(r"\]\((evaluation/audio/[^)]+\.wav)\)", card.text)
    assert "evaluation/audio/sample_0.wav" in links and "evaluation/audio/data_0.wav" in links and len(links) == 8
    assert all((out / link).is_file() for link in links)
    assert "a local audio folder" in card.text and "--modality audio --train_data_dir <audio folder>" in card.text
    # the usage snippet loads the folder by its name ("audio-model") from its parent
    run_snippet(card.text, out.parent, monkeypatch)
    clip, rate = soundfile.read(out.parent / "sample.wav")
    assert rate == SR and clip.shape == (CLIP,)
    with Image.open(out.parent / "mel.png") as image:
        assert image.size == (RES, RES)


def test_builtin_audio_run_and_its_card_command_reproduces_the_metrics(builtin_run, monkeypatch):
    from diffusers import AudioDiffusionPipeline, DiffusionPipeline

    from diffusers_specreg import evaluate

    out, result = builtin_run
    assert "8 mel slices (16x16, 0.064 s at 8000 Hz) from 2 built-in synthetic clips" in result.stderr
    assert isinstance(DiffusionPipeline.from_pretrained(out), AudioDiffusionPipeline)
    trained = json.loads((out / "evaluation" / "metrics.json").read_text())["pipelines"]["audio-builtin"]
    card = ModelCard.load(out / "README.md")
    assert card.data.eval_results[0].dataset_type == "synthetic_audio"
    assert "built-in synthetic audio (2 clips)" in card.text and "checkerboards" not in card.text.split("## Usage")[0]
    # the card's "Reproduce with" command, run in-process from the model's parent folder, gives the same numbers
    command = re.search(r"(python -m diffusers_specreg\.evaluate [^\n]+)", card.text).group(1)
    argv = shlex.split(command)[3:]
    assert argv[argv.index("--builtin_num_clips") + 1] == "2"
    monkeypatch.chdir(out.parent)
    assert evaluate.main([*argv, "--no_progress"]) == 0
    again = json.loads((out.parent / "eval" / "metrics.json").read_text())["pipelines"]["audio-builtin"]
    for key in AUDIO_METRICS.values():
        assert again["audio"][key] == pytest.approx(trained["audio"][key], rel=1e-5, abs=1e-9), key
    assert again["fwd"] == pytest.approx(trained["fwd"], rel=1e-6)
    # --update_model_card rewrote the card with the same metrics and files under evaluation/
    updated = ModelCard.load(out / "README.md")
    values = {r.metric_type: r.metric_value for r in updated.data.eval_results}
    assert values["mr-stft-distance"] == pytest.approx(again["audio"]["mrstft"])
    assert all((out / link).is_file() for link in re.findall(r"\]\((evaluation/[^)]+)\)", updated.text))


# --- bad audio: a clear error before training (in-process: the same code path as the CLI) ------------------------


def run_main(tmp_path: Path, folder: Path):
    return train_spectral.main([*AUDIO, "--train_data_dir", str(folder), "--output_dir", str(tmp_path / "never")])


def test_all_silent_folder_is_rejected(tmp_path):
    folder = tmp_path / "silent"
    folder.mkdir()
    soundfile.write(folder / "zeros.wav", np.zeros(3 * SLICE, dtype=np.float32), SR)
    soundfile.write(folder / "hiss.wav", np.full(2 * SLICE, 1e-5, dtype=np.float32), SR)  # below -80 dBFS
    with pytest.raises(DataError, match=r"All 5 mel slices of the 2 clips are silent"):
        run_main(tmp_path, folder)
    assert not (tmp_path / "never" / "unet").exists()


def test_clips_shorter_than_one_slice_are_rejected(tmp_path):
    folder = tmp_path / "short"
    folder.mkdir()
    for i, length in enumerate((100, SLICE - 1)):
        soundfile.write(folder / f"short_{i}.wav", sine(length, 440.0), SR)
    with pytest.raises(DataError, match=r"Every one of the 2 clips .* shorter than one mel slice of 0\.064 s"):
        run_main(tmp_path, folder)


def test_only_empty_and_unreadable_files_are_counted_and_rejected(tmp_path):
    folder = tmp_path / "unusable"
    folder.mkdir()
    soundfile.write(folder / "empty.wav", np.zeros(0, dtype=np.float32), SR)
    (folder / "broken.flac").write_bytes(b"fLaC but truncated")
    with pytest.raises(DataError, match=r"None of the 2 audio files .*: 1 cannot be decoded and 1 have zero samples"):
        run_main(tmp_path, folder)
