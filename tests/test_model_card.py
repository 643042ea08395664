"""Tests for `diffusers_specreg.model_card`: Hub metadata read back by `huggingface_hub.ModelCard`, the body, a usage
snippet that runs, no token in any written file, the update after an evaluation, and audio cards (audio metrics in the
model-index and body, spectrogram figure, links to existing WAVs only, an audio snippet that runs). Offline, tiny
models."""

import json
import math
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from conftest import tiny_unet
from diffusers import DDPMPipeline, DDPMScheduler
from huggingface_hub import ModelCard

from diffusers_specreg.evaluate import EvaluationResult
from diffusers_specreg.model_card import (
    AUDIO_METRIC_ROWS,
    AUDIO_TASK,
    IMAGE_TASK,
    METRIC_ROWS,
    evaluation_command,
    is_hub_id,
    render_usage,
    update_model_card,
    write_model_card,
)

TOKEN = "hf_notARealTokenButSecret123"
METRICS = {
    "log_rapsd_distance": {"all": 0.25, "low": 0.125, "mid": 0.5, "high": float("nan")},
    "slope": {"data": -2.5, "model": -2.0, "gap": 0.5},
    "fwd": 3.75,
    "num_samples": 8,
    "num_real": 8,
    "num_inference_steps": 5,
    "seed": 0,
    "sampler": "DDIM (eta 0), 5 steps",
    "dataset": {"type": "checkerboards", "name": "built-in checkerboards"},
}


def training_config(**overrides):
    config = dict(
        spectral_loss=["amplitude_phase", "wavelet"],
        spectral_weight=[0.1, None],
        final_spectral_weights={"amplitude_phase": 0.1, "wavelet": 1.0},
        spectral_weighting="edm",
        spectral_max_timestep=None,
        wavelet="bior1.3",
        wavelet_levels=3,
        formulation="ddpm",
        prediction_type="epsilon",
        resolution=16,
        learning_rate=1e-4,
        train_batch_size=16,
        max_train_steps=100,
        seed=0,
        hub_token=TOKEN,
        hub_model_id="me/specreg-tiny",
        dataset_name="me/checkers",
        pretrained_model_name_or_path="google/ddpm-cifar10-32",
        ddpm_num_inference_steps=50,
        noise_spectrum=None,
    )
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory):
    unet = tiny_unet(0)
    folder = tmp_path_factory.mktemp("cards") / "specreg-tiny"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50)).save_pretrained(folder)
    return folder


def test_metadata_round_trips_through_model_card_load(tmp_path):
    path = write_model_card(tmp_path, config=training_config(), metrics=METRICS, pipeline_class="DDPMPipeline")
    data = ModelCard.load(path).data
    assert data.library_name == "diffusers" and data.pipeline_tag == IMAGE_TASK
    for tag in ("diffusers", "diffusers-specreg", "spectral-regularization", IMAGE_TASK):
        assert tag in data.tags
    assert "spectral-loss-amplitude-phase" in data.tags and "spectral-loss-wavelet" in data.tags
    assert data.base_model == "google/ddpm-cifar10-32"
    assert data.datasets == ["me/checkers"]
    read = {r.metric_type: r.metric_value for r in data.eval_results}
    assert read == {
        "log-rapsd-distance": 0.25,
        "log-rapsd-distance-low": 0.125,
        "log-rapsd-distance-mid": 0.5,
        "spectral-slope": -2.0,
        "spectral-slope-gap": 0.5,
        "fwd": 3.75,
    }  # the NaN band is left out: YAML metadata must hold finite numbers
    first = data.eval_results[0]
    assert first.task_type == IMAGE_TASK and first.dataset_type == "checkerboards"
    assert first.dataset_name == "built-in checkerboards" and first.metric_name == "log-RAPSD distance (all)"
    assert data.model_name == "specreg-tiny"


def test_token_is_never_written(tmp_path):
    config = training_config(tracker_config={"wandb_api_key": TOKEN, "project": "p"}, output_dir=tmp_path)
    write_model_card(tmp_path, config=config, metrics=METRICS)
    for name in os.listdir(tmp_path):
        with open(tmp_path / name, encoding="utf-8") as f:
            text = f.read()
        assert TOKEN not in text and "hub_token" not in text, name
    saved = json.loads((tmp_path / "training_args.json").read_text())
    assert saved["hub_model_id"] == "me/specreg-tiny" and saved["output_dir"] == "."  # relative to the card
    assert saved["tracker_config"] == {"project": "p"}


def test_body_lists_every_setting_and_the_metrics(tmp_path):
    config = training_config()
    path = write_model_card(
        tmp_path, config=config, metrics=METRICS, sample_grid="evaluation/samples.png", spectrum_plot="rapsd.png"
    )
    text = open(path, encoding="utf-8").read()
    body = text.split("\n---\n", 1)[1]
    table = body[body.index("### Configuration") : body.index("## Evaluation")]
    for key in config:
        if key != "hub_token":
            assert f"| `{key}` |" in table, key
    # spectral settings come first
    assert table.index("`spectral_loss`") < table.index("`learning_rate`") < table.index("`train_batch_size`")
    assert "`amplitude_phase` (λ = 0.1)" in body and "`wavelet` (λ = 1 (default))" in body
    assert "timestep weighting `edm`" in body
    assert "![Samples from the model](evaluation/samples.png)" in body and "](rapsd.png)" in body
    assert "| log-RAPSD distance (all) | 0.25 |" in body and "| Fréchet Wavelet Distance | 3.75 |" in body
    assert "| log-RAPSD distance (high) | n/a |" in body
    assert "| Spectral slope (data) | -2.5 |" in body
    assert "arXiv:2603.02447" in body and "2312.15289" in body
    assert "arXiv:2510.09660" not in body  # white noise: no SAGD citation
    assert "--builtin_dataset checkerboards --num_samples 8 --num_inference_steps 5 --seed" in body
    assert "*Samples drawn with DDIM (eta 0), 5 steps.*" in body  # the grid says which sampler drew it


def test_card_names_the_ancestral_sampler_and_its_command_reproduces_it(tmp_path):
    metrics = dict(METRICS, sampler="DDPM (ancestral), 50 steps", num_inference_steps=50)
    path = write_model_card(tmp_path, config=training_config(), metrics=metrics, sample_grid="evaluation/samples.png")
    body = open(path, encoding="utf-8").read().split("\n---\n", 1)[1]
    assert (
        "![Samples from the model](evaluation/samples.png)\n\n*Samples drawn with DDPM (ancestral), 50 steps.*" in body
    )
    assert "--num_samples 8 --num_inference_steps 50 --sampler pipeline --seed 0" in body


def test_card_without_metrics_has_no_model_index_and_says_how_to_evaluate(tmp_path):
    path = write_model_card(tmp_path, config=training_config(spectral_loss=[], dataset_name=None), metrics=None)
    card = ModelCard.load(path)
    assert card.data.eval_results is None and "model-index" not in card.content
    assert card.data.datasets is None
    assert "Not evaluated yet" in card.text and "--update_model_card" in card.text
    assert "No spectral loss term was used" in card.text


def test_local_paths_stay_out_of_the_metadata(tmp_path):
    base = tmp_path / "my-base-model"
    base.mkdir()
    config = training_config(pretrained_model_name_or_path=str(base), dataset_name=None, train_data_dir="/data/imgs")
    card = ModelCard.load(write_model_card(tmp_path / "out", config=config, metrics=METRICS))
    assert card.data.base_model is None and card.data.datasets is None
    assert f"Fine-tuned from `{base}`" in card.text
    assert not is_hub_id(str(base)) and is_hub_id("google/ddpm-cifar10-32") and not is_hub_id("../x")


def test_local_paths_are_published_relative_to_the_folder_or_with_the_home_as_tilde(tmp_path, monkeypatch):
    home = tmp_path / "home" / "alice"
    monkeypatch.setenv("HOME", str(home))
    out = home / "runs" / "my-model"
    config = training_config(
        output_dir=str(out),
        logging_dir="logs",
        train_data_dir=str(home / "data" / "imgs"),
        model_config_name_or_path=str(out / "unet.json"),
        cache_dir="/home/bob/.cache/huggingface",  # another user's home folder
        vae_name_or_path="~/vaes/f4",
        dataset_name=None,
        pretrained_model_name_or_path=str(home / "models" / "base"),
    )
    base = str(home / "models" / "base")
    metrics = dict(METRICS, dataset={"type": str(home / "ds"), "name": str(home / "ds")})
    write_model_card(out, config=config, metrics=metrics, base_model=base)  # as train_spectral.py passes it
    card = (out / "README.md").read_text(encoding="utf-8")
    text = (out / "training_args.json").read_text(encoding="utf-8")
    for written in (card, text):
        assert "alice" not in written and "bob" not in written and str(tmp_path) not in written
    saved = json.loads(text)
    assert saved["output_dir"] == "." and saved["model_config_name_or_path"] == "./unet.json"
    assert saved["train_data_dir"] == "~/data/imgs" and saved["cache_dir"] == "~/.cache/huggingface"
    assert saved["pretrained_model_name_or_path"] == "~/models/base" and saved["vae_name_or_path"] == "~/vaes/f4"
    assert saved["logging_dir"] == "logs" and saved["hub_model_id"] == "me/specreg-tiny"  # not paths: as they were
    assert "Fine-tuned from `~/models/base`" in card and "| `train_data_dir` | `~/data/imgs` |" in card
    data = ModelCard.load(out / "README.md").data
    assert data.base_model is None and data.eval_results[0].dataset_type == "~/ds"


def test_sagd_edm_and_audio_variants(tmp_path):
    sagd = ModelCard.load(
        write_model_card(
            tmp_path / "sagd",
            config=training_config(noise_spectrum="powerlaw:alpha=-0.5"),
            pipeline_class="SAGDPipeline",
        )
    )
    assert "sagd" in sagd.data.tags and "arXiv:2510.09660" in sagd.text
    assert 'DiffusionPipeline.from_pretrained("me/specreg-tiny", trust_remote_code=True)' in sagd.text
    edm = ModelCard.load(
        write_model_card(tmp_path / "edm", config=training_config(formulation="edm"), pipeline_class="EDMPipeline")
    )
    assert "edm" in edm.data.tags and "Karras" in edm.text and "num_inference_steps=40" in edm.text
    audio = ModelCard.load(
        write_model_card(tmp_path / "audio", config=training_config(), pipeline_class="AudioDiffusionPipeline")
    )
    assert audio.data.pipeline_tag == AUDIO_TASK
    assert {"audio", "mel-spectrogram", "unconditional-audio-generation"} <= set(audio.data.tags)
    assert IMAGE_TASK not in audio.data.tags and "DiffusionPipeline.from_pretrained" in audio.text
    assert "# an AudioDiffusionPipeline" in audio.text and "soundfile.write(" in audio.text


def test_image_paths_must_be_relative(tmp_path):
    with pytest.raises(ValueError, match="relative"):
        write_model_card(tmp_path, config={}, sample_grid=str(tmp_path / "samples.png"))
    with pytest.raises(ValueError, match="relative"):
        write_model_card(tmp_path, config={}, spectrum_plot="../rapsd.png")


def test_usage_snippet_runs(tiny_pipeline_dir, tmp_path, monkeypatch):
    path = write_model_card(
        tiny_pipeline_dir, config=training_config(), pipeline_class="DDPMPipeline", repo_id=str(tiny_pipeline_dir)
    )
    text = open(path, encoding="utf-8").read()
    snippet = re.search(r"```python\n(.*?)```", text, flags=re.S).group(1)
    assert f'DiffusionPipeline.from_pretrained("{tiny_pipeline_dir}")' in snippet
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    exec(compile(snippet, "usage", "exec"), {})
    from PIL import Image

    with Image.open(tmp_path / "sample.png") as image:
        assert image.size == (16, 16)


def test_usage_override_and_snippets_for_every_class():
    assert 'DiffusionPipeline.from_pretrained("me/x")  # the saved DDPMPipeline' in render_usage(
        "DDPMPipeline", "me/x", 1000
    )
    assert "num_inference_steps=1000" in render_usage("DDPMPipeline", "me/x", 1000)
    for kind in ("EDMPipeline", ["pipeline", "SAGDPipeline"], "SomeOtherPipeline"):
        usage = render_usage(kind, "me/x")
        assert 'DiffusionPipeline.from_pretrained("me/x", trust_remote_code=True)' in usage
        assert "custom_pipeline" not in usage and "$" not in usage
    assert "coloured noise" in render_usage("SAGDPipeline", "me/x")


def test_update_model_card_keeps_config_and_metadata(tiny_pipeline_dir):
    write_model_card(tiny_pipeline_dir, config=training_config(), pipeline_class="DDPMPipeline")
    new_metrics = dict(METRICS, fwd=1.5, log_rapsd_distance=dict(METRICS["log_rapsd_distance"], all=0.0625))
    path = update_model_card(tiny_pipeline_dir, new_metrics, sample_grid="evaluation/samples.png")
    card = ModelCard.load(path)
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values["fwd"] == 1.5 and values["log-rapsd-distance"] == 0.0625
    assert card.data.base_model == "google/ddpm-cifar10-32" and card.data.datasets == ["me/checkers"]
    assert "| `wavelet` | `bior1.3` |" in card.text and "evaluation/samples.png" in card.text
    assert "# the saved DDPMPipeline" in card.text  # pipeline class read from model_index.json


def test_update_model_card_adds_no_training_args_and_never_replaces_a_users_card(tmp_path):
    folder = tmp_path / "saved-by-hand"
    DDPMPipeline(unet=tiny_unet(0), scheduler=DDPMScheduler(num_train_timesteps=50)).save_pretrained(folder)
    update_model_card(folder, METRICS)  # no card yet: one is written, and no empty training_args.json
    assert ModelCard.load(folder / "README.md").data.eval_results and not (folder / "training_args.json").exists()
    update_model_card(folder, dict(METRICS, fwd=1.5))  # the card it wrote may be updated again
    (folder / "README.md").write_text("# My own notes\n")
    with pytest.raises(ValueError, match="README.md, which no training run wrote"):
        update_model_card(folder, METRICS)
    assert (folder / "README.md").read_text() == "# My own notes\n"


def test_metric_rows_read_the_typed_evaluation_result():
    result = EvaluationResult.from_dict(dict(METRICS, fid=7.5))
    values = {row[1]: row[0](result) for row in METRIC_ROWS}
    assert values["log-rapsd-distance"] == 0.25 and values["log-rapsd-distance-low"] == 0.125
    assert values["spectral-slope"] == -2.0 and values["spectral-slope-gap"] == 0.5
    assert values["fwd"] == 3.75 and values["fid"] == 7.5
    assert len(values) == len(METRIC_ROWS)  # metric types are unique in the model-index
    assert EvaluationResult.from_dict(result.to_dict()) == result and result["slope"]["gap"] == 0.5


# ---------------------------------------------------------------------------------------------------------------
# Audio models
# ---------------------------------------------------------------------------------------------------------------

AUDIO_METRICS = dict(
    METRICS,
    pipeline_class="AudioDiffusionPipeline",
    dataset={"type": "synthetic_audio", "name": "built-in synthetic audio"},
    audio={
        "mrstft": 1.25,
        "log_spectral_distance": 6.5,
        "frechet_log_mel": 42.0,
        "ndb_k": 0.25,
        "ndb_js": float("nan"),
        "num_real": 8,
        "num_fake": 8,
        "sample_rate": 8000,
        "clip_seconds": 0.06,
        "vocoder": "Griffin-Lim, 32 iterations, phases seeded with 0, on both sets",
        "spectrogram_figure": "spectrograms.png",
        "samples": ["audio/sample_0.wav", "audio/sample_1.wav", "audio/sample_2.wav", "/abs/sample.wav"],
        "data_samples": ["audio/data_0.wav", "../outside.wav"],
    },
)


def audio_config(**overrides):
    config = training_config(
        dataset_name=None, pretrained_model_name_or_path=None, hub_model_id=None, builtin_num_clips=6, sample_rate=8000
    )
    config.update(resolution=16, n_fft=128, hop_length=32, top_db=80, ddpm_num_steps=20, **overrides)
    return config


def write_evaluation_files(folder, names=("spectrograms.png", "audio/sample_0.wav", "audio/sample_1.wav")):
    for name in (*names, "audio/data_0.wav"):
        path = folder / "evaluation" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"stand-in")


def test_audio_card_shows_audio_metrics_figure_and_links_to_existing_wavs(tmp_path):
    write_evaluation_files(tmp_path)  # sample_2.wav is named in the metrics but missing
    path = write_model_card(
        tmp_path,
        config=audio_config(),
        metrics=AUDIO_METRICS,
        pipeline_class="AudioDiffusionPipeline",
        sample_grid="evaluation/samples.png",
        spectrum_plot="evaluation/rapsd.png",
    )
    card = ModelCard.load(path)
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values["mr-stft-distance"] == 1.25 and values["log-spectral-distance"] == 6.5
    assert values["frechet-log-mel-distance"] == 42.0 and values["ndb-k"] == 0.25
    assert "ndb-js" not in values and values["fwd"] == 3.75  # NaN left out; the mel-image metrics stay
    assert {r.dataset_type for r in card.data.eval_results} == {"synthetic_audio"}
    assert {r.task_type for r in card.data.eval_results} == {AUDIO_TASK}
    body = card.text
    assert "## Audio samples" in body
    assert "](evaluation/spectrograms.png)" in body  # paths relative to the evaluation folder (of sample_grid)
    assert re.findall(r"\]\((evaluation/audio/[^)]+)\)", body) == [
        "evaluation/audio/sample_0.wav",
        "evaluation/audio/sample_1.wav",
        "evaluation/audio/data_0.wav",
    ]  # missing, absolute and escaping paths are left out
    assert "| MR-STFT distance | 1.25 |" in body and "| NDB JS divergence | n/a |" in body
    assert "8 generated and 8 data mel images were turned into 0.06 s clips at 8000 Hz" in body
    assert "(arXiv 1910.11480)" in body and "(arXiv 1805.12462)" in body
    assert "built-in synthetic audio (6 clips)" in body and "checkerboards" not in body.split("## Usage")[0]
    assert "16 mel bands × 16 STFT frames (n_fft 128, hop 32" in body
    assert (
        "--modality audio --builtin_dataset synthetic_audio --builtin_num_clips 6 --num_samples 8 "
        "--num_inference_steps 5 --audio_num_samples 8" in body
    )
    # an explicit evaluation folder; the files are not there, so nothing is linked
    other = ModelCard.load(
        write_model_card(
            tmp_path / "other",
            config=audio_config(),
            metrics=AUDIO_METRICS,
            pipeline_class="AudioDiffusionPipeline",
            evaluation_dir="eval",
        )
    )
    assert "## Audio samples" not in other.text and "| MR-STFT distance | 1.25 |" in other.text
    with pytest.raises(ValueError, match="relative"):
        write_model_card(tmp_path, config={}, metrics=AUDIO_METRICS, evaluation_dir="../eval")


def test_image_cards_have_no_audio_section(tmp_path):
    text = ModelCard.load(write_model_card(tmp_path, config=training_config(), metrics=METRICS)).text
    assert "Audio samples" not in text and "MR-STFT" not in text and "1910.11480" not in text


def test_audio_evaluation_commands():
    assert "--modality audio --builtin_dataset synthetic_audio " in evaluation_command(
        None, "me/x", "AudioDiffusionPipeline"
    )
    folder = dict(AUDIO_METRICS, dataset={"type": "audiofolder", "name": "audio folder clips"})
    assert "--modality audio --train_data_dir <audio folder> " in evaluation_command(folder, "me/x")
    hub = dict(AUDIO_METRICS, dataset={"type": "me/speech", "name": "me/speech"})
    assert "--modality audio --dataset_name me/speech " in evaluation_command(hub, "me/x")
    assert "--train_data_dir <image folder>" in evaluation_command(None, "me/x", "DDPMPipeline")


def test_audio_usage_snippet_runs(tmp_path, monkeypatch):
    import soundfile
    from diffusers import Mel

    from diffusers_specreg.audio import make_audio_pipeline

    unet = tiny_unet(0)
    mel = Mel(x_res=16, y_res=16, sample_rate=8000, n_fft=128, hop_length=32, n_iter=4)
    folder = tmp_path / "tiny-audio"
    make_audio_pipeline(unet, mel, DDPMScheduler(num_train_timesteps=20)).save_pretrained(folder)
    path = write_model_card(folder, config=audio_config(), pipeline_class="AudioDiffusionPipeline")
    text = open(path, encoding="utf-8").read()
    snippet = re.search(r"```python\n(.*?)```", text, flags=re.S).group(1)
    assert 'DiffusionPipeline.from_pretrained("tiny-audio")' in snippet and "steps=20" in snippet  # <= 20 steps
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    exec(compile(snippet, "usage", "exec"), {})
    clip, rate = soundfile.read(tmp_path / "sample.wav")
    assert rate == 8000 and clip.shape == (32 * 15,) and abs(abs(clip).max() - 0.9) < 1e-3


def test_audio_metric_types_are_unique_and_distinct_from_the_image_ones():
    types = [row[1] for row in METRIC_ROWS + AUDIO_METRIC_ROWS]
    assert len(set(types)) == len(types)
    result = EvaluationResult.from_dict(AUDIO_METRICS)
    assert [row[0](result) for row in AUDIO_METRIC_ROWS] == [1.25, 6.5, 42.0, 0.25, result.audio.ndb_js]
    assert math.isnan(result.audio.ndb_js) and all(row[0](EvaluationResult()) is None for row in AUDIO_METRIC_ROWS)


def test_a_custom_feature_distance_is_not_published_as_fid(tmp_path):
    from diffusers_specreg.evaluate import EvaluationResult
    from diffusers_specreg.model_card import eval_results

    inception = EvaluationResult(fid=3.5, fwd=1.0)
    custom = EvaluationResult(fid=3.5, fwd=1.0, feature_extractor="features")
    assert "fid" in [r.metric_type for r in eval_results(inception, "unconditional-image-generation", "x", "x")]
    types = [r.metric_type for r in eval_results(custom, "unconditional-image-generation", "x", "x")]
    assert "fid" not in types and "frechet-distance" in types
