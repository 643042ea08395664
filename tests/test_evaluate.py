"""Tests for `diffusers_specreg.evaluate`: the command end to end in-process, the in-process API, sampling
determinism, agreement with `metrics.compare_image_sets`, custom (EDM) pipelines, FID with a local TorchScript
network, the model-card update, and AudioDiffusionPipelines (audio metrics equal to `audio.audio_metrics` of the
Griffin-Lim clips, WAVs, spectrogram figure, audio data sources). Tiny 16×16 UNets saved into temporary folders;
offline."""

import importlib.util
import json
import math
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from conftest import tiny_unet
from diffusers import DDPMPipeline, DDPMScheduler, EDMEulerScheduler
from huggingface_hub import ModelCard
from PIL import Image

from diffusers_specreg import evaluate
from diffusers_specreg.data import make_checkerboards
from diffusers_specreg.evaluate import (
    ReferenceStatistics,
    default_fwd_level,
    evaluate_pipeline,
    generate_images,
    load_pipeline,
    main,
)
from diffusers_specreg.metrics import compare_image_sets
from diffusers_specreg.model_card import write_model_card
from diffusers_specreg.noise import NoiseSpectrum

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMMON = ["--builtin_dataset", "checkerboards", "--num_samples", "8", "--num_inference_steps", "3"]
COMMON += ["--batch_size", "4", "--no_progress"]


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    # two threads on two shared cores make tiny UNet forwards much slower; restore afterwards
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Two DDPM pipelines with different weights."""
    root = tmp_path_factory.mktemp("pipelines")
    folders = []
    for seed, name in ((0, "mse"), (1, "amplitude")):
        folder = root / name
        DDPMPipeline(unet=tiny_unet(seed), scheduler=DDPMScheduler(num_train_timesteps=50)).save_pretrained(folder)
        folders.append(folder)
    return folders


def read_metrics(folder):
    with open(folder / "metrics.json", encoding="utf-8") as f:
        return json.load(f)


def test_command_end_to_end(saved, tmp_path):
    out = tmp_path / "eval"
    assert main(["--pipeline", str(saved[0]), "--output_dir", str(out), *COMMON]) == 0
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    report = json.loads(text)
    entry = report["pipelines"]["mse"]
    for band in ("all", "low", "mid", "high"):
        assert math.isfinite(entry["log_rapsd_distance"][band]) and entry["log_rapsd_distance"][band] >= 0
    assert all(math.isfinite(entry["slope"][k]) for k in ("data", "model", "gap"))
    assert entry["slope"]["gap"] == pytest.approx(entry["slope"]["model"] - entry["slope"]["data"])
    assert math.isfinite(entry["fwd"]) and entry["fwd"] > 0
    assert (entry["num_samples"], entry["num_real"], entry["num_inference_steps"], entry["seed"]) == (8, 8, 3, 0)
    # 8 samples of 1x16x16: the level rises until a packet has at most 4 features (level 3: 2x2 packets)
    assert entry["sampler"] == "DDIM (eta 0), 3 steps" and entry["fwd_level"] == 3
    assert entry["versions"]["diffusers"] and entry["versions"]["torch"] == torch.__version__
    assert report["data"]["shape"] == [1, 16, 16] and report["data"]["type"] == "checkerboards"
    assert len(report["spectra"]["frequencies"]) == len(report["spectra"]["mse"]) == 9
    # 8 images of 16x16 in one row with 2-pixel padding; the plots are real PNGs
    with Image.open(out / "samples_mse.png") as grid:
        assert grid.size == (8 * 18 + 2, 20)
    for name in ("rapsd.png", "band_errors.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 100


def test_two_pipelines_give_one_comparison(saved, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["--pipeline", str(saved[0]), "--pipeline", str(saved[1]), "--name", "mse", "--name", "amplitude"]
    assert main([*argv, "--output_dir", str(out), *COMMON]) == 0
    printed = capsys.readouterr().out
    table = (out / "comparison.md").read_text()
    rows = [line for line in table.splitlines() if not line.startswith(("| model", "| ---"))]
    assert [row.split("|")[1].strip() for row in rows] == ["mse", "amplitude", "data"]
    assert table.strip() in printed
    report = read_metrics(out)
    assert set(report["pipelines"]) == {"mse", "amplitude"}
    # different weights, same data statistics
    a, b = report["pipelines"]["mse"], report["pipelines"]["amplitude"]
    assert a["log_rapsd_distance"]["all"] != b["log_rapsd_distance"]["all"]
    assert a["slope"]["data"] == b["slope"]["data"]
    assert {"mse", "amplitude", "data", "frequencies"} == set(report["spectra"])
    for name in ("samples_mse.png", "samples_amplitude.png", "rapsd.png", "band_errors.png"):
        assert (out / name).is_file()


def test_samples_depend_on_seed_and_index_not_batch_size(saved):
    pipeline = load_pipeline(str(saved[0]))
    by_4 = torch.cat(list(generate_images(pipeline, 6, batch_size=4, num_inference_steps=2, seed=3, progress=False)))
    by_6 = torch.cat(list(generate_images(pipeline, 6, batch_size=6, num_inference_steps=2, seed=3, progress=False)))
    other = torch.cat(list(generate_images(pipeline, 6, batch_size=6, num_inference_steps=2, seed=4, progress=False)))
    assert by_4.shape == (6, 1, 16, 16) and by_4.min() >= -1 and by_4.max() <= 1
    torch.testing.assert_close(by_4, by_6, atol=1e-5, rtol=0)
    assert (by_4 - other).abs().max() > 0.1


def test_evaluate_pipeline_in_process_agrees_with_compare_image_sets(saved, tmp_path):
    pipeline = DDPMPipeline.from_pretrained(saved[0])
    pipeline.unet.train()  # as at the end of a training loop
    real = make_checkerboards(10, 16, seed=1)  # more data than samples: the first 8 are used
    metrics = evaluate_pipeline(pipeline, real, 8, 4, 3, 0, tmp_path / "quick", name="quick", progress=False)
    assert pipeline.unet.training  # the training flag is restored
    fake = torch.cat(list(generate_images(pipeline, 8, batch_size=4, num_inference_steps=3, seed=0, progress=False)))
    expected = compare_image_sets(real[:8], fake, level=metrics["fwd_level"])
    assert metrics["fwd_level"] == default_fwd_level(16, 16, 1, 8) == 3
    assert metrics["log_rapsd_distance"]["all"] == pytest.approx(expected["log_rapsd_all"], rel=1e-6)
    assert metrics["log_rapsd_distance"]["high"] == pytest.approx(expected["log_rapsd_high"], rel=1e-6)
    assert metrics["slope"]["gap"] == pytest.approx(expected["slope_gap"], rel=1e-6)
    assert metrics["fwd"] == pytest.approx(expected["fwd"], rel=1e-6)
    assert metrics["num_real"] == 8 and metrics["sample_grid"] == "samples.png"
    for name in ("metrics.json", "samples.png", "rapsd.png", "band_errors.png", "comparison.md"):
        assert (tmp_path / "quick" / name).is_file()
    # statistics computed once can be reused for another pipeline
    reference = ReferenceStatistics.from_images(real, 8, 4, progress=False)
    again = evaluate_pipeline(pipeline, reference, 8, 4, 3, 0, progress=False)
    assert again["fwd"] == pytest.approx(metrics["fwd"], rel=1e-9)


def test_real_images_from_a_dataset_of_dicts():
    images = torch.arange(20.0).reshape(20, 1, 1, 1).expand(20, 1, 16, 16) / 20  # image i has the value i / 20

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return {"input": images[i]}

    def rows(seed):
        batches = list(evaluate.iterate_real_images(Items(), num_samples=5, batch_size=4, seed=seed))
        assert [b.shape[0] for b in batches] == [4, 1]
        chosen = torch.cat(batches)
        # a seeded subset of the dataset, read in index order
        index = (chosen[:, 0, 0, 0] * 20).round().long().tolist()
        assert index == sorted(index)
        return index

    assert rows(0) == rows(0) and rows(0) != rows(1)
    # tensors give their first images
    first = torch.cat(list(evaluate.iterate_real_images(images, num_samples=5, batch_size=4)))
    torch.testing.assert_close(first, images[:5])


def test_bad_inputs_raise_value_errors(saved, tmp_path):
    with pytest.raises(ValueError, match="one per pipeline"):
        main(["--pipeline", str(saved[0]), "--name", "a", "--name", "b", "--output_dir", str(tmp_path), *COMMON])
    with pytest.raises(ValueError, match=r"\[B, 1, 16, 16\]"):
        evaluate_pipeline(
            DDPMPipeline.from_pretrained(saved[0]), torch.zeros(4, 1, 32, 32), 4, 4, 2, 0, progress=False
        )
    with pytest.raises(ValueError, match="seed"):
        main(["--pipeline", str(saved[0]), "--output_dir", str(tmp_path), *COMMON, "--seed", "-1"])
    with pytest.raises(ValueError, match="Cannot load the pipeline"):
        main(["--pipeline", str(tmp_path / "missing"), "--output_dir", str(tmp_path), *COMMON])
    with pytest.raises(SystemExit):  # exactly one data source
        main(["--pipeline", str(saved[0]), "--output_dir", str(tmp_path), "--train_data_dir", "x", *COMMON])


def test_default_fwd_level():
    assert [default_fwd_level(s, s) for s in (16, 32, 64, 128, 256)] == [1, 1, 2, 3, 4]
    assert default_fwd_level(24, 24) == 1 and default_fwd_level(15, 15) == 0 and default_fwd_level(64, 96) == 2
    # with the sample count: deeper until 2 * (C*H*W / 4**level) <= samples, as far as the sides allow
    assert default_fwd_level(64, 64, 3, 2000) == 2 and default_fwd_level(64, 64, 3, 1000) == 3
    assert default_fwd_level(32, 32, 3, 64) == 4 and default_fwd_level(24, 24, 3, 10) == 3


@pytest.mark.parametrize("channels,side", [(3, 64), (1, 64), (3, 32), (1, 32)])
def test_default_fwd_level_has_enough_samples_at_the_project_defaults(channels, side):
    # the FWD warning (fewer than 2x as many samples as packet features) must not fire on the project's own defaults:
    # the evaluate CLI's --num_samples and the model card's --eval_num_samples of train_spectral.py
    import train_spectral
    from diffusers_specreg.evaluate.cli import build_parser

    for num_samples in (
        build_parser().get_default("num_samples"),
        train_spectral.parse_args([]).eval_num_samples,
    ):
        level = default_fwd_level(side, side, channels, num_samples)
        assert 2 * channels * side * side // 4**level <= num_samples, (num_samples, level)


def test_update_model_card_rewrites_the_card(saved, tmp_path):
    folder = tmp_path / "model"
    DDPMPipeline.from_pretrained(saved[0]).save_pretrained(folder)
    # the card and training arguments of a training run (foreign ones are never replaced: see the tests below)
    write_model_card(
        folder, config={"spectral_loss": ["amplitude"], "spectral_weight": ["0.5"], "formulation": "ddpm"}
    )
    argv = ["--pipeline", str(folder), "--output_dir", str(tmp_path / "eval"), "--update_model_card", *COMMON]
    assert main(argv) == 0
    metrics = read_metrics(tmp_path / "eval")["pipelines"]["model"]
    card = ModelCard.load(folder / "README.md")
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values["fwd"] == pytest.approx(metrics["fwd"])
    assert values["log-rapsd-distance"] == pytest.approx(metrics["log_rapsd_distance"]["all"])
    assert card.data.eval_results[0].dataset_type == "checkerboards"
    assert (
        "![Samples from the model](evaluation/samples.png)" in card.text
        and "| `spectral_weight` | `0.5` |" in card.text
    )
    for name in ("samples.png", "rapsd.png", "metrics.json"):
        assert (folder / "evaluation" / name).is_file()
    # the copy in the folder names the folder itself, not the local path it was evaluated at
    assert json.loads((folder / "evaluation" / "metrics.json").read_text())["pipeline"] == "."
    # the folder still loads as a pipeline
    assert isinstance(load_pipeline(str(folder)), DDPMPipeline)


def _own_pipelines():
    try:
        from diffusers_specreg import pipelines
    except ImportError:  # plain checkout: map pipelines/ as `pip install -e .` does
        spec = importlib.util.spec_from_file_location(
            "diffusers_specreg.pipelines",
            ROOT / "pipelines" / "__init__.py",
            submodule_search_locations=[str(ROOT / "pipelines")],
        )
        pipelines = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = pipelines
        spec.loader.exec_module(pipelines)
    return pipelines


def test_custom_edm_pipeline_folder(tmp_path):
    from diffusers_specreg.pipelines_io import save_pipeline

    EDMPipeline = _own_pipelines().EDMPipeline
    folder = tmp_path / "edm"
    save_pipeline(EDMPipeline(unet=tiny_unet(2), scheduler=EDMEulerScheduler()), folder)
    sys.modules.pop(evaluate.DYNAMIC_PIPELINE_MODULE, None)
    try:
        assert main(["--pipeline", str(folder), "--output_dir", str(tmp_path / "eval"), *COMMON]) == 0
    finally:
        sys.modules.pop(evaluate.DYNAMIC_PIPELINE_MODULE, None)
    entry = read_metrics(tmp_path / "eval")["pipelines"]["edm"]
    assert entry["pipeline_class"] == "EDMPipeline" and entry["sampler"] == "EDMPipeline, 3 steps"
    assert math.isfinite(entry["log_rapsd_distance"]["all"])


def test_sagd_and_audio_pipelines_in_process():
    from diffusers import AudioDiffusionPipeline, Mel

    real = make_checkerboards(8, 16, seed=3)
    SAGDPipeline = _own_pipelines().SAGDPipeline
    sagd = SAGDPipeline(
        tiny_unet(3), DDPMScheduler(num_train_timesteps=50), noise_spectrum=NoiseSpectrum.powerlaw(-0.5)
    )
    metrics = evaluate_pipeline(sagd, real, 8, 4, 3, 0, progress=False)
    assert metrics["sampler"] == "SAGD DDIM (eta 0, noise powerlaw:alpha=-0.5), 3 steps"
    assert isinstance(sagd.scheduler, DDPMScheduler)  # the evaluated pipeline is left as it was
    assert math.isfinite(metrics["log_rapsd_distance"]["all"]) and math.isfinite(metrics["fwd"])
    mel = Mel(x_res=16, y_res=16, hop_length=64, n_fft=256, n_iter=2)
    audio = AudioDiffusionPipeline(
        vqvae=None, unet=tiny_unet(4), mel=mel, scheduler=DDPMScheduler(num_train_timesteps=50)
    )
    metrics = evaluate_pipeline(audio, real, 4, 4, 3, 0, progress=False)
    assert (
        metrics["sampler"].startswith("AudioDiffusion DDIM") and metrics["pipeline_class"] == "AudioDiffusionPipeline"
    )
    assert math.isfinite(metrics["slope"]["model"])


class _ToyFeatures(torch.nn.Module):
    """Stands in for the Inception TorchScript file: same call convention, 6 features."""

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = images.float() / 255.0
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def test_fid_with_local_torchscript_weights(saved, tmp_path):
    weights = tmp_path / "features.pt"
    torch.jit.script(_ToyFeatures()).save(str(weights))
    out = tmp_path / "eval"
    assert main(["--pipeline", str(saved[0]), "--output_dir", str(out), "--fid_weights", str(weights), *COMMON]) == 0
    entry = read_metrics(out)["pipelines"]["mse"]
    assert math.isfinite(entry["fid"]) and entry["fid"] > 0
    assert " FWD | FID | samples |" in (out / "comparison.md").read_text()
    with pytest.raises(ValueError, match="not a file"):
        main(
            ["--pipeline", str(saved[0]), "--output_dir", str(out), "--fid_weights", str(tmp_path / "no.pt"), *COMMON]
        )


# ---------------------------------------------------------------------------------------------------------------
# Audio: AudioDiffusionPipeline evaluated as mel images and as Griffin-Lim audio
# ---------------------------------------------------------------------------------------------------------------

SR, RES, N_FFT, HOP = 8000, 16, 128, 32
AUDIO_KEYS = ("mrstft", "log_spectral_distance", "frechet_log_mel", "ndb_k", "ndb_js")
AUDIO_COMMON = ["--num_samples", "4", "--num_inference_steps", "2", "--batch_size", "2", "--no_progress"]


def audio_pipeline(seed: int):
    from diffusers_specreg.audio import make_audio_pipeline, make_mel

    mel = make_mel(RES, SR, N_FFT, HOP)
    mel.n_iter = 4  # Griffin-Lim iterations: few, the test checks the wiring
    return make_audio_pipeline(tiny_unet(seed), mel, DDPMScheduler(num_train_timesteps=50))


@pytest.fixture(scope="module")
def audio_saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio_pipelines")
    folders = []
    for seed, name in ((5, "audio-a"), (6, "audio-b")):
        audio_pipeline(seed).save_pretrained(root / name)
        folders.append(root / name)
    return folders


def test_audio_pipeline_metrics_are_audio_metrics_of_griffin_lim_clips(tmp_path, caplog):
    import soundfile

    from diffusers_specreg.audio import audio_metrics, build_audio_dataset, mel_images_to_audio

    pipeline = audio_pipeline(5)
    data = build_audio_dataset(
        dataset_name=None,
        dataset_config_name=None,
        train_data_dir=None,
        cache_dir=None,
        resolution=RES,
        sample_rate=SR,
        n_fft=N_FFT,
        hop_length=HOP,
        builtin_num_clips=2,
    )
    info = evaluate.dataset_info(None, None, "checkerboards")  # as train_spectral.py records it
    out = tmp_path / "eval"
    metrics = evaluate_pipeline(
        pipeline, data.dataset, 4, 2, 2, 0, out, name="tiny", dataset=info, progress=False, num_audio_files=2
    )
    # the same numbers from the parts: data subset and samples as uint8 mel images, one seeded vocoder for both
    real = torch.cat(list(evaluate.iterate_real_images(data.dataset, 4, 2, seed=0)))
    fake = torch.cat(list(generate_images(pipeline, 4, batch_size=2, num_inference_steps=2, seed=0, progress=False)))
    real_audio = mel_images_to_audio(evaluate.mel_images_to_uint8(real), pipeline.mel, seed=0)
    fake_audio = mel_images_to_audio(evaluate.mel_images_to_uint8(fake), pipeline.mel, seed=0)
    expected = audio_metrics(real_audio, fake_audio, SR, seed=0)
    for key in AUDIO_KEYS:
        assert metrics["audio"][key] == pytest.approx(expected[key], rel=1e-6, abs=1e-12), key
    assert metrics["audio"]["mrstft"] > 0 and metrics["audio"]["sample_rate"] == SR
    assert metrics["audio"]["clip_seconds"] == pytest.approx(HOP * (RES - 1) / SR)
    assert metrics["dataset"] == {"type": "synthetic_audio", "name": "built-in synthetic audio"}
    # files: figure, 2 generated and 2 data WAVs (the data ones are the reference clips, peak-normalised)
    assert metrics["audio"]["spectrogram_figure"] == "spectrograms.png"
    assert metrics["audio"]["samples"] == ["audio/sample_0.wav", "audio/sample_1.wav"]
    clip, rate = soundfile.read(out / "audio" / "data_1.wav")
    assert rate == SR and clip == pytest.approx(0.9 * real_audio[1] / abs(real_audio[1]).max(), abs=1e-4)
    with Image.open(out / "spectrograms.png") as figure:
        assert figure.format == "PNG"
    assert "| tiny | " in (out / "comparison.md").read_text().split("MR-STFT")[1]
    saved = read_metrics(out)
    assert saved["pipelines"]["tiny"]["audio"]["num_fake"] == 4 and saved["data"]["audio"]["num_clips"] == 4
    # the audio metrics cap: fewer clips than samples
    fewer = evaluate_pipeline(pipeline, data.dataset, 4, 2, 2, 0, progress=False, audio_num_samples=2)
    assert fewer["audio"]["num_fake"] == fewer["audio"]["num_real"] == 2
    # reference statistics without audio: image metrics only, with a warning
    reference = ReferenceStatistics.from_images(data.dataset, 4, 2, progress=False)
    assert "audio" not in evaluate_pipeline(pipeline, reference, 4, 2, 2, 0, progress=False)
    assert "no audio metrics" in caplog.text


def test_audio_command_compares_pipelines_and_updates_the_card(audio_saved, tmp_path):
    from diffusers import AudioDiffusionPipeline

    out = tmp_path / "eval"
    argv = ["--pipeline", str(audio_saved[0]), "--pipeline", str(audio_saved[1]), "--output_dir", str(out)]
    assert main([*argv, "--builtin_dataset", "synthetic_audio", "--audio_num_samples", "3", *AUDIO_COMMON]) == 0
    report = read_metrics(out)
    a, b = report["pipelines"]["audio-a"]["audio"], report["pipelines"]["audio-b"]["audio"]
    assert a["num_fake"] == a["num_real"] == 3 and a["mrstft"] != b["mrstft"]
    assert report["data"]["type"] == "synthetic_audio" and report["data"]["audio"]["mel"]["n_fft"] == N_FFT
    assert a["samples"][0] == "audio/audio-a/sample_0.wav" and a["spectrogram_figure"] == "spectrograms_audio-a.png"
    for name in ("spectrograms_audio-a.png", "spectrograms_audio-b.png", "audio/data_0.wav", b["samples"][2]):
        assert (out / name).is_file(), name
    assert [r.split("|")[1].strip() for r in (out / "comparison.md").read_text().splitlines()[-2:]] == [
        "audio-a",
        "audio-b",
    ]
    # --update_model_card: the files go to <pipeline>/evaluation/, the card links them
    folder = tmp_path / "model"
    AudioDiffusionPipeline.from_pretrained(audio_saved[0]).save_pretrained(folder)
    argv = ["--pipeline", str(folder), "--output_dir", str(tmp_path / "eval2"), "--update_model_card"]
    assert main([*argv, "--builtin_dataset", "synthetic_audio", "--num_audio_files", "1", *AUDIO_COMMON]) == 0
    card = ModelCard.load(folder / "README.md")
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    metrics = read_metrics(tmp_path / "eval2")["pipelines"]["model"]["audio"]
    assert values["mr-stft-distance"] == pytest.approx(metrics["mrstft"])
    assert card.data.eval_results[0].dataset_type == "synthetic_audio"
    assert "](evaluation/spectrograms.png)" in card.text and "[sample 0](evaluation/audio/sample_0.wav)" in card.text
    assert "sample_1.wav" not in card.text
    copied = json.loads((folder / "evaluation" / "metrics.json").read_text())
    assert copied["sample_grid"] == "samples.png" and copied["audio"]["samples"] == ["audio/sample_0.wav"]
    for name in ("spectrograms.png", "audio/sample_0.wav", "audio/data_0.wav", "samples.png"):
        assert (folder / "evaluation" / name).is_file(), name
    assert isinstance(load_pipeline(str(folder)), AudioDiffusionPipeline)


def test_audio_command_rejects_mismatched_data_and_modality(saved, audio_saved, tmp_path):
    audio, image = ["--pipeline", str(audio_saved[0])], ["--pipeline", str(saved[0])]
    out = ["--output_dir", str(tmp_path / "never"), *AUDIO_COMMON]
    with pytest.raises(ValueError, match="needs audio.*--builtin_dataset synthetic_audio"):
        main([*audio, "--builtin_dataset", "checkerboards", *out])
    with pytest.raises(ValueError, match="is audio, but the pipeline is not an AudioDiffusionPipeline"):
        main([*image, "--builtin_dataset", "synthetic_audio", *out])
    with pytest.raises(ValueError, match="--modality audio but the pipeline is not an AudioDiffusionPipeline"):
        main([*image, "--modality", "audio", "--builtin_dataset", "checkerboards", *out])
    with pytest.raises(ValueError, match="--resolution does not apply to audio"):
        main([*audio, "--builtin_dataset", "synthetic_audio", "--resolution", "16", *out])
    with pytest.raises(ValueError, match="mix AudioDiffusionPipelines and image pipelines"):
        main([*audio, *image, "--builtin_dataset", "synthetic_audio", *out])
    with pytest.raises(ValueError, match="--audio_num_samples must be >= 2"):
        main([*audio, "--builtin_dataset", "synthetic_audio", "--audio_num_samples", "1", *out])
    assert not (tmp_path / "never").exists()


def test_audio_dataset_info():
    assert evaluate.dataset_info(None, "/data/clips/", modality="audio") == {
        "type": "audiofolder",
        "name": "audio folder clips",
    }
    assert evaluate.dataset_info(None, None, "checkerboards", modality="audio")["type"] == "synthetic_audio"
    assert evaluate.dataset_info("me/speech", None, modality="audio")["type"] == "me/speech"
    recorded = evaluate.dataset_info(None, "/data/clips", "checkerboards")  # train_spectral.py's call
    assert evaluate.audio_dataset_info(recorded) == {"type": "audiofolder", "name": "audio folder clips"}
    assert evaluate.audio_dataset_info({"type": "me/speech", "name": "me/speech"})["type"] == "me/speech"
    with pytest.raises(ValueError, match="Unknown modality"):
        evaluate.dataset_info(modality="video")


def test_a_local_dataset_is_recorded_with_the_home_folder_as_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "alice"))
    assert evaluate.dataset_info(str(tmp_path / "alice" / "my-data")) == {"type": "~/my-data", "name": "~/my-data"}
    assert evaluate.dataset_info("me/checkers")["type"] == "me/checkers"


def test_audio_samples_are_the_audio_pipeline_images_without_its_griffin_lim():
    from diffusers import DDIMScheduler

    pipeline = audio_pipeline(7)
    images = torch.cat(list(generate_images(pipeline, 3, batch_size=3, num_inference_steps=3, seed=2, progress=False)))
    own = type(pipeline)(
        vqvae=None,
        unet=pipeline.unet,
        mel=pipeline.mel,
        scheduler=DDIMScheduler.from_config(pipeline.scheduler.config),
    )
    own.set_progress_bar_config(disable=True)
    output = own(batch_size=3, generator=evaluate.image_generators(2, 0, 3), steps=3, eta=0.0)
    expected = torch.from_numpy(np.stack([np.asarray(image) for image in output.images]))
    assert torch.equal(torch.from_numpy(evaluate.mel_images_to_uint8(images)), expected)


def test_pipeline_sampler_is_ancestral_ddpm_and_named(saved, tmp_path):
    pipeline = load_pipeline(str(saved[0]))
    fast, fast_name = evaluate.make_sampler(pipeline, 3)
    ancestral, ancestral_name = evaluate.make_sampler(pipeline, 3, "pipeline")
    assert fast_name == "DDIM (eta 0), 3 steps" and ancestral_name == "DDPM (ancestral), 3 steps"
    generators = lambda: evaluate.image_generators(0, 0, 2)  # noqa: E731
    a, b = ancestral(generators()), ancestral(generators())
    torch.testing.assert_close(a, b)  # seeded per image: reproducible
    assert a.shape == (2, 1, 16, 16) and (a - fast(generators())).abs().max() > 1e-3
    with pytest.raises(ValueError, match="allowed values"):
        evaluate.make_sampler(pipeline, 3, "ddpm")
    real = make_checkerboards(8, 16, seed=1)
    metrics = evaluate_pipeline(pipeline, real, 4, 4, 3, 0, None, progress=False, sampler="pipeline")
    assert metrics.sampler == "DDPM (ancestral), 3 steps"


# ---------------------------------------------------------------------------------------------------------------
# Issue 19: code that a pipeline folder or Hub repo carries runs only when the user allows it (--trust_remote_code),
# unless it is a byte-identical copy of a pipeline file this package ships
# ---------------------------------------------------------------------------------------------------------------

# appended to a pipeline.py (or written as a component module): leaves a file behind when Python imports it
HOSTILE_CODE = "\n\nimport pathlib as _pathlib\n\n_pathlib.Path({marker!r}).write_text('ran')\n"


def _edm_folder(folder: pathlib.Path) -> pathlib.Path:
    """A tiny EDM pipeline saved as train_spectral.py saves it: `pipeline.py` is the package's own file."""
    from diffusers_specreg.pipelines_io import save_pipeline

    save_pipeline(_own_pipelines().EDMPipeline(unet=tiny_unet(2), scheduler=EDMEulerScheduler()), folder)
    return folder


def _hub_cache(cache: pathlib.Path, repo_id: str, folder: pathlib.Path) -> None:
    """Put `folder` into a Hugging Face cache as the `main` revision of the model repo `repo_id` (what a download of
    it leaves behind), so that offline loading by repo id reads it."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    shutil.copytree(folder, root / "snapshots" / commit)


@pytest.fixture
def fresh_dynamic_module():
    # every local pipeline.py is imported as the same module: forget it before and after (pipelines_io docs)
    sys.modules.pop(evaluate.DYNAMIC_PIPELINE_MODULE, None)
    yield
    sys.modules.pop(evaluate.DYNAMIC_PIPELINE_MODULE, None)


@pytest.mark.parametrize("class_name", [["pipeline", "EDMPipeline"], "EDMPipeline"], ids=["list", "legacy"])
def test_a_pipeline_py_of_its_own_runs_only_with_trust_remote_code(tmp_path, class_name, fresh_dynamic_module):
    folder = _edm_folder(tmp_path / "edm")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps(dict(index, _class_name=class_name)))
    marker = tmp_path / "ran"
    with open(folder / "pipeline.py", "a", encoding="utf-8") as f:
        f.write(HOSTILE_CODE.format(marker=str(marker)))
    out = tmp_path / "eval"
    with pytest.raises(ValueError, match=r"edm/pipeline\.py.*--trust_remote_code"):
        main(["--pipeline", str(folder), "--output_dir", str(out), *COMMON])
    assert not marker.exists() and not out.exists()
    # the user allows it: the file runs, and the pipeline is evaluated
    assert main(["--pipeline", str(folder), "--output_dir", str(out), "--trust_remote_code", *COMMON]) == 0
    assert marker.read_text() == "ran"
    assert read_metrics(out)["pipelines"]["edm"]["pipeline_class"] == "EDMPipeline"


def test_a_component_module_of_its_own_needs_trust_remote_code_too(tmp_path, fresh_dynamic_module):
    folder = _edm_folder(tmp_path / "edm")  # pipeline.py is the package's own: alone, it loads without the flag
    marker = tmp_path / "ran"
    # Diffusers imports `<component>/<library>.py` when the folder has one (a custom component)
    (folder / "unet" / "diffusers.py").write_text(HOSTILE_CODE.format(marker=str(marker)))
    with pytest.raises(ValueError, match=r"unet/diffusers\.py.*trust_remote_code"):
        load_pipeline(str(folder))
    assert not marker.exists()


def test_a_hub_repo_runs_no_code_of_its_own_without_trust_remote_code(tmp_path, fresh_dynamic_module):
    folder = _edm_folder(tmp_path / "edm")
    cache = tmp_path / "hub-cache"
    _hub_cache(cache, "me/edm", folder)  # the package's own pipeline.py: loads by repo id without the flag
    assert type(load_pipeline("me/edm", cache_dir=str(cache))).__name__ == "EDMPipeline"
    sys.modules.pop(evaluate.DYNAMIC_PIPELINE_MODULE, None)
    marker = tmp_path / "ran"
    with open(folder / "pipeline.py", "a", encoding="utf-8") as f:
        f.write(HOSTILE_CODE.format(marker=str(marker)))
    _hub_cache(cache, "me/hostile", folder)
    with pytest.raises(ValueError, match=r"pipeline\.py of the Hub repo me/hostile.*--trust_remote_code"):
        load_pipeline("me/hostile", cache_dir=str(cache))
    assert not marker.exists()


def test_names_that_sanitise_alike_get_files_of_their_own(saved, tmp_path):
    # "λ=1" and "μ=1" both sanitise to "1", "MSE*" to "MSE"; "mse" differs from "MSE" only in case
    names = ["λ=1", "μ=1", "MSE", "MSE*", "mse"]
    argv = []
    for i, name in enumerate(names):
        argv += ["--pipeline", str(saved[i % 2]), "--name", name]
    assert main([*argv, "--output_dir", str(tmp_path / "eval"), *COMMON]) == 0
    report = read_metrics(tmp_path / "eval")
    grids = [report["pipelines"][name]["sample_grid"] for name in names]
    assert len({grid.lower() for grid in grids}) == len(names)  # distinct, on a case-insensitive file system too
    assert all((tmp_path / "eval" / grid).is_file() and "/" not in grid for grid in grids)
    with Image.open(tmp_path / "eval" / grids[0]) as a, Image.open(tmp_path / "eval" / grids[1]) as b:
        assert np.asarray(a).tolist() != np.asarray(b).tolist()  # each grid shows its own model's samples
    assert grids[2] == "samples_MSE.png"  # a name that is already a safe file name is kept as it is


@pytest.mark.parametrize("name", ["README.md", "training_args.json"])
def test_update_model_card_never_replaces_a_card_no_run_wrote(saved, tmp_path, name):
    folder = tmp_path / "model"
    DDPMPipeline.from_pretrained(saved[0]).save_pretrained(folder)
    mine = "# My notes\n" if name == "README.md" else '{"my": "settings"}\n'
    (folder / name).write_text(mine)
    out = tmp_path / "eval"
    with pytest.raises(ValueError, match=rf"{name}, which no training run wrote.*--update_model_card"):
        main(["--pipeline", str(folder), "--output_dir", str(out), "--update_model_card", *COMMON])
    assert (folder / name).read_text() == mine
    assert not (folder / "evaluation").exists() and not out.exists()  # refused before anything was sampled
    # without --update_model_card the folder is only read
    assert main(["--pipeline", str(folder), "--output_dir", str(out), *COMMON]) == 0
    assert (folder / name).read_text() == mine and not (folder / "evaluation").exists()


def test_update_model_card_twice_on_a_run_folder_whose_record_has_no_evaluation(saved, tmp_path):
    # a training run with --eval_num_samples 0 (every benchmark run) records no evaluation/; the card update writes it
    folder = tmp_path / "model"
    DDPMPipeline.from_pretrained(saved[0]).save_pretrained(folder)
    write_model_card(folder, config={"spectral_loss": [], "formulation": "ddpm"})
    record = folder / ".train_spectral_outputs.json"
    record.write_text(
        json.dumps({"outputs": ["model_index.json", "unet", "scheduler", "README.md", "training_args.json"]})
    )
    for run in ("first", "second"):
        argv = ["--pipeline", str(folder), "--output_dir", str(tmp_path / run), "--update_model_card", *COMMON]
        assert main(argv) == 0
    assert "evaluation" in json.loads(record.read_text())["outputs"]
    assert (folder / "evaluation" / "metrics.json").is_file()
