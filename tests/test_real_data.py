"""Issue 18: Fashion-MNIST (IDX reader, padding, the missing-package error, the same data as an image folder), the
Fréchet distance on any feature extractor (closed form for Gaussian features; the evaluate CLI's
`--feature_extractor`), and the DPM-Solver++ evaluation sampler. Tiny IDX files written by the tests; offline."""

import gzip
import json
import math
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from conftest import tiny_unet
from diffusers import DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler
from scipy import linalg

from diffusers_specreg.data import (
    DataError,
    build_image_dataset,
    load_fashion_mnist,
    read_idx,
    write_image_folder,
)
from diffusers_specreg.evaluate import FeatureExtractor, main
from diffusers_specreg.evaluate.sampling import make_sampler
from diffusers_specreg.metrics import feature_frechet_distance


def write_idx(path, array: np.ndarray, compress: bool = True) -> None:
    """The IDX format: 0, 0, type byte (0x08 = uint8), ndim, big-endian uint32 sizes, the values."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(data)


@pytest.fixture
def fashion_folder(tmp_path):
    """Four tiny IDX files in the layout of Debian's dataset-fashion-mnist: 6 training and 3 test garments."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for prefix, count in (("train", 6), ("t10k", 3)):
        images = rng.integers(1, 256, size=(count, 28, 28)).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count, dtype=np.uint8) % 10)
    return folder


def test_read_idx_reads_gzipped_and_plain_files(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "a", array, compress=False)
    for name in ("a.gz", "a"):
        out = read_idx(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
        np.testing.assert_array_equal(out, array)


def test_read_idx_rejects_bad_magic_and_truncated_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    header = bytes([0, 0, 0x08, 2]) + np.asarray([4, 4], dtype=">u4").tobytes()
    (tmp_path / "short").write_bytes(header + b"\x00" * 10)
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_is_padded_with_the_background_not_resampled(fashion_folder):
    images, labels = load_fashion_mnist("train", 32, folder=str(fashion_folder))
    raw = read_idx(fashion_folder / "train-images-idx3-ubyte.gz")
    assert images.shape == (6, 1, 32, 32) and labels.tolist() == [0, 1, 2, 3, 4, 5]
    # the 28x28 garment sits unchanged in the centre; the 2-pixel border is the background value 0 (-1)
    np.testing.assert_allclose(images[:, 0, 2:30, 2:30].numpy(), raw / 127.5 - 1, atol=1e-6)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (images[:, 0][:, border] == -1).all()
    test, test_labels = load_fashion_mnist("test", 32, folder=str(fashion_folder))
    assert test.shape == (3, 1, 32, 32) and test_labels.tolist() == [0, 1, 2]
    odd, _ = load_fashion_mnist("train", 31, channels=3, folder=str(fashion_folder))
    assert odd.shape == (6, 3, 31, 31)
    np.testing.assert_allclose(odd[:, 1, 1:29, 1:29].numpy(), raw / 127.5 - 1, atol=1e-6)


def test_missing_package_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECREG_FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with pytest.raises(DataError, match=r"apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train")
    with pytest.raises(DataError, match="resolution >= 28"):
        load_fashion_mnist("train", 16, folder=str(tmp_path))


def test_missing_package_stops_the_training_script_before_training(tmp_path):
    from conftest import launch

    result = launch(
        ["--builtin_dataset", "fashion_mnist", "--output_dir", str(tmp_path / "out"), "--max_train_steps", "1"],
        check=False,
        extra_env={"SPECREG_FASHION_MNIST_DIR": str(tmp_path / "absent")},
    )
    assert result.returncode != 0
    assert "apt-get install dataset-fashion-mnist" in result.stdout + result.stderr
    assert not (tmp_path / "out" / "model_index.json").exists()


def test_builtin_and_image_folder_give_the_same_images(fashion_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("SPECREG_FASHION_MNIST_DIR", str(fashion_folder))
    options = dict(
        dataset_name=None, dataset_config_name=None, cache_dir=None, resolution=32, center_crop=True, random_flip=False
    )
    builtin = build_image_dataset(
        **options, train_data_dir=None, preserve_input_precision=False, builtin_dataset="fashion_mnist"
    )
    assert builtin.channels == 1 and "fashion_mnist (6 images, train split)" in builtin.description
    images = torch.stack([builtin.dataset[i]["input"] for i in range(len(builtin.dataset))])
    _, labels = load_fashion_mnist("train", 32)
    assert write_image_folder(images, tmp_path / "folder", labels=labels.tolist()) == 6
    assert sorted(os.listdir(tmp_path / "folder")) == [f"class_{k}" for k in range(6)]
    folder = build_image_dataset(**options, train_data_dir=str(tmp_path / "folder"), preserve_input_precision=False)
    assert folder.channels == 1 and len(folder.dataset) == 6
    from_folder = torch.stack([folder.dataset[i]["input"] for i in range(6)])
    # the folder is sorted by class, class k holds image k: the same pixels, 8-bit levels both ways
    torch.testing.assert_close(from_folder, images, atol=1e-6, rtol=0)
    test = build_image_dataset(
        **options,
        train_data_dir=None,
        preserve_input_precision=False,
        builtin_dataset="fashion_mnist",
        builtin_split="test",
    )
    assert len(test.dataset) == 3


# ---------------------------------------------------------------------------------------------------------------
# Fréchet distance on a given extractor
# ---------------------------------------------------------------------------------------------------------------


def closed_form(mu1, s1, mu2, s2) -> float:
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_feature_frechet_distance_equals_the_closed_form_of_the_feature_moments():
    rng = np.random.default_rng(0)
    dim = 4
    a, b = rng.normal(size=(dim, dim)), rng.normal(size=(dim, dim))
    real = rng.normal(size=(3000, dim)) @ a.T + 1.0
    fake = rng.normal(size=(2500, dim)) @ b.T - 0.5
    projection = torch.tensor(rng.normal(size=(3, dim)))  # the extractor: a linear map to 3 features

    def extractor(images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1).double() @ projection.T

    def as_images(x):
        return torch.tensor(x, dtype=torch.float32)[:, :, None, None]  # [N, D, 1, 1]

    distance = feature_frechet_distance(as_images(real), as_images(fake), extractor, batch_size=700)
    # exactly the Fréchet distance of the sample moments of the features (float32 inputs)
    fr = as_images(real).flatten(1).double().numpy() @ projection.numpy().T
    ff = as_images(fake).flatten(1).double().numpy() @ projection.numpy().T
    exact = closed_form(fr.mean(0), np.cov(fr, rowvar=False), ff.mean(0), np.cov(ff, rowvar=False))
    assert distance == pytest.approx(exact, rel=1e-6)
    # and close to the closed form of the Gaussians the samples come from, pushed through the linear map
    p = projection.numpy()
    population = closed_form(p @ np.ones(dim), p @ a @ a.T @ p.T, p @ np.full(dim, -0.5), p @ b @ b.T @ p.T)
    assert distance == pytest.approx(population, rel=0.1)
    assert abs(feature_frechet_distance(as_images(real), as_images(real), extractor)) < 1e-6 * exact


def _tiny_ddpm(seed: int = 0) -> DDPMPipeline:
    return DDPMPipeline(unet=tiny_unet(seed), scheduler=DDPMScheduler(num_train_timesteps=50))


@pytest.fixture
def saved_pipeline(tmp_path):
    torch.set_num_threads(1)
    folder = tmp_path / "mse"
    _tiny_ddpm().save_pretrained(folder)
    return folder


COMMON = ["--builtin_dataset", "checkerboards", "--num_samples", "8", "--num_inference_steps", "3"]
COMMON += ["--batch_size", "4", "--no_progress"]


def test_cli_feature_extractor_from_module_callable_and_torchscript(saved_pipeline, tmp_path, monkeypatch):
    (tmp_path / "my_features.py").write_text(
        "import torch\n\n"
        "def extract(images):\n"
        "    return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3)), images.amax(dim=(2, 3))], dim=1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "eval"
    argv = ["--pipeline", str(saved_pipeline), "--output_dir", str(out), *COMMON]
    assert main([*argv, "--feature_extractor", "my_features:extract"]) == 0
    entry = json.loads((out / "metrics.json").read_text())["pipelines"]["mse"]
    assert math.isfinite(entry["fid"]) and entry["fid"] > 0 and entry["feature_extractor"] == "extract"
    assert "| FD[extract] |" in (out / "comparison.md").read_text()

    # the same network as a TorchScript file gives the same distance
    import my_features

    class Module(torch.nn.Module):
        def forward(self, images):
            return my_features.extract(images)

    script = tmp_path / "features.pt"
    torch.jit.script(Module()).save(str(script))
    out2 = tmp_path / "eval2"
    assert (
        main(
            ["--pipeline", str(saved_pipeline), "--output_dir", str(out2), *COMMON, "--feature_extractor", str(script)]
        )
        == 0
    )
    entry2 = json.loads((out2 / "metrics.json").read_text())["pipelines"]["mse"]
    assert entry2["fid"] == pytest.approx(entry["fid"], rel=1e-6)
    sys.modules.pop("my_features", None)


def test_cli_feature_extractor_errors_name_the_problem(saved_pipeline, tmp_path):
    argv = ["--pipeline", str(saved_pipeline), "--output_dir", str(tmp_path / "e"), *COMMON]
    with pytest.raises(ValueError, match="cannot import 'no_such_module_xyz'"):
        main([*argv, "--feature_extractor", "no_such_module_xyz:f"])
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        main([*argv, "--feature_extractor", "math:nope"])
    with pytest.raises(ValueError, match="neither a file nor module:callable"):
        main([*argv, "--feature_extractor", "missing.pt"])
    with pytest.raises(ValueError, match="one row per image"):
        FeatureExtractor("torch:sum")(torch.zeros(2, 1, 4, 4))


def test_dpm_solver_sampler_is_the_stock_scheduler_and_refuses_other_pipelines():
    torch.set_num_threads(1)
    pipeline = _tiny_ddpm()
    sample, description = make_sampler(pipeline, 5, "dpm_solver")
    assert description == "DPM-Solver++ (2nd order multistep, linspace timesteps), 5 steps"
    images = sample([torch.Generator().manual_seed(i) for i in range(2)])
    assert images.shape == (2, 1, 16, 16) and images.min() >= -1 and images.max() <= 1
    # the same images as Diffusers' own DPMSolverMultistepScheduler in a DDPMPipeline, from the same generators
    scheduler = DPMSolverMultistepScheduler.from_config(
        pipeline.scheduler.config, algorithm_type="dpmsolver++", timestep_spacing="linspace"
    )
    reference = DDPMPipeline(unet=pipeline.unet, scheduler=scheduler)(
        batch_size=2,
        generator=[torch.Generator().manual_seed(i) for i in range(2)],
        num_inference_steps=5,
        output_type="np",
    ).images
    torch.testing.assert_close(images, torch.from_numpy(reference).permute(0, 3, 1, 2) * 2 - 1)
    # the first step is at the last training timestep even for a saved DDPM config ("leading" spacing)
    saved = DDPMScheduler(num_train_timesteps=50, timestep_spacing="leading")
    solver = DPMSolverMultistepScheduler.from_config(saved.config, timestep_spacing="linspace")
    solver.set_timesteps(5)
    assert int(solver.timesteps[0]) == 49
    ddim, _ = make_sampler(pipeline, 5, "fast")
    assert not torch.allclose(ddim([torch.Generator().manual_seed(0)]), images[:1])

    from diffusers import DDIMPipeline, DDIMScheduler

    other = DDIMPipeline(unet=pipeline.unet, scheduler=DDIMScheduler(num_train_timesteps=50))
    with pytest.raises(ValueError, match="dpm_solver samples DDPM-trained pipelines"):
        make_sampler(other, 5, "dpm_solver")


def test_a_damaged_gzip_idx_file_is_a_data_error(tmp_path):
    array = np.arange(64, dtype=np.uint8).reshape(1, 8, 8)
    write_idx(tmp_path / "a.gz", array)
    data = (tmp_path / "a.gz").read_bytes()
    (tmp_path / "a.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="damaged.*reinstall"):
        read_idx(tmp_path / "a.gz")
