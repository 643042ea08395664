"""Tests for `diffusers_specreg.evaluate`: the command end to end in-process, the in-process API, sampling
determinism, agreement with `metrics.compare_image_sets`, custom (EDM) pipelines, FID with a local TorchScript
network, and the model-card update. Tiny 16×16 UNets saved into temporary folders; offline."""

import importlib.util
import json
import math
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, EDMEulerScheduler, UNet2DModel
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


def tiny_unet(seed: int) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    )


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
    assert entry["sampler"] == "DDIM (eta 0), 3 steps" and entry["fwd_level"] == 1
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
    expected = compare_image_sets(real[:8], fake, level=1)
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


def test_update_model_card_rewrites_the_card(saved, tmp_path):
    folder = tmp_path / "model"
    DDPMPipeline.from_pretrained(saved[0]).save_pretrained(folder)
    write_model_card(folder, config={"spectral_loss": ["amplitude"], "spectral_weight": ["0.5"]})
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
    from diffusers_specreg.pipelines_io import write_custom_pipeline_file

    EDMPipeline = _own_pipelines().EDMPipeline
    folder = tmp_path / "edm"
    EDMPipeline(unet=tiny_unet(2), scheduler=EDMEulerScheduler()).save_pretrained(folder)
    write_custom_pipeline_file(EDMPipeline, folder)
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
    sagd = SAGDPipeline(tiny_unet(3), DDPMScheduler(num_train_timesteps=50), noise_spectrum="powerlaw:alpha=-0.5")
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
