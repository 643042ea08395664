"""Training data: built-in sets, image folders, `datasets` datasets, preprocessing like train_unconditional.py."""

import numpy as np
import pytest
import torch
from conftest import write_image_folder, write_unet_config
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from PIL import Image

from diffusers_specreg import data, training


def test_checkerboards_are_sharp_deterministic_and_varied():
    a = data.make_checkerboards(32, 32, seed=0)
    assert a.shape == (32, 1, 32, 32)
    assert set(a.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(a, data.make_checkerboards(32, 32, seed=0))
    assert not torch.equal(a, data.make_checkerboards(32, 32, seed=1))
    assert len({tuple(img.flatten()[:64].tolist()) for img in a}) > 8  # offsets and square sizes vary
    assert data.make_checkerboards(2, 16, channels=3).shape == (2, 3, 16, 16)


def test_digits_are_upsampled_to_the_resolution():
    digits = data.make_digits(16)
    assert digits.shape == (1797, 1, 16, 16)
    assert digits.min() >= -1 and digits.max() <= 1 and digits.max() > 0.9


def test_transform_resizes_crops_and_normalises():
    image = Image.fromarray(np.tile(np.arange(48, dtype=np.uint8)[None, :] * 5, (32, 1)), mode="L")  # 32x48
    transform = data.ImageTransform(resolution=16, channels=1, center_crop=True)
    out = transform(image)
    assert out.shape == (1, 16, 16)
    assert -1 <= out.min() and out.max() <= 1
    # the centre crop of a left-to-right ramp is symmetric about the ramp's middle value
    assert abs(float(out.mean()) - (2 * (47 * 5 / 2) / 255 - 1)) < 0.05
    rgb = data.ImageTransform(resolution=16, channels=3)(image)
    assert rgb.shape == (3, 16, 16) and torch.allclose(rgb[0], rgb[1])


def test_sixteen_bit_images_keep_their_precision():
    array = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    image = Image.fromarray(array)  # uint16 -> mode "I;16"
    assert image.mode == "I;16"
    precise = data.ImageTransform(resolution=64, channels=1, preserve_input_precision=True)(image)
    quantised = data.ImageTransform(resolution=64, channels=1)(image)
    assert len(precise.unique()) > 1000  # 4096 levels survive; 8-bit conversion cannot hold them
    assert len(quantised.unique()) <= 256


def test_folder_channels_are_inferred(tmp_path):
    gray = data.build_image_dataset(
        dataset_name=None,
        dataset_config_name=None,
        train_data_dir=str(write_image_folder(tmp_path / "g")),
        cache_dir=None,
        resolution=16,
        center_crop=False,
        random_flip=True,
        preserve_input_precision=False,
    )
    assert gray.channels == 1 and gray.dataset[0]["input"].shape == (1, 16, 16) and len(gray.dataset) == 12
    rgb = data.build_image_dataset(
        dataset_name=None,
        dataset_config_name=None,
        train_data_dir=str(write_image_folder(tmp_path / "c", mode="RGB")),
        cache_dir=None,
        resolution=16,
        center_crop=False,
        random_flip=False,
        preserve_input_precision=False,
    )
    assert rgb.channels == 3 and rgb.dataset[0]["input"].shape == (3, 16, 16)


def test_local_datasets_dataset_by_name(tmp_path):
    import datasets

    images = [Image.fromarray(np.full((20, 20), 40 * i, dtype=np.uint8), mode="L") for i in range(5)]
    datasets.Dataset.from_dict({"img": images}).cast_column("img", datasets.Image()).to_parquet(
        str(tmp_path / "train.parquet")
    )
    built = data.build_image_dataset(
        dataset_name=str(tmp_path),
        dataset_config_name=None,
        train_data_dir=None,
        cache_dir=str(tmp_path / "cache"),
        resolution=16,
        center_crop=True,
        random_flip=False,
        preserve_input_precision=False,
    )
    assert len(built.dataset) == 5 and built.channels == 1
    assert built.dataset[4]["input"].shape == (1, 16, 16)
    assert torch.allclose(built.dataset[4]["input"], torch.full((1, 16, 16), 2 * 160 / 255 - 1), atol=1e-5)


def test_sources_are_exclusive_and_named(tmp_path):
    with pytest.raises(data.DataError, match="either --dataset_name or --train_data_dir"):
        data.build_image_dataset(
            dataset_name="x",
            dataset_config_name=None,
            train_data_dir=str(tmp_path),
            cache_dir=None,
            resolution=16,
            center_crop=False,
            random_flip=False,
            preserve_input_precision=False,
        )
    with pytest.raises(data.DataError, match="Could not load dataset"):
        data.load_hf_dataset(str(tmp_path / "no-such-dataset"))


def test_pretrained_pipeline_and_bare_unet_load(tmp_path):
    unet = UNet2DModel(**training.unet_config("small", 16, 1))
    scheduler = DDPMScheduler(num_train_timesteps=50, beta_schedule="squaredcos_cap_v2")
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipeline")
    unet.save_pretrained(tmp_path / "bare")
    from_pipeline = training.load_pretrained(str(tmp_path / "pipeline"))
    assert from_pipeline.scheduler_config["beta_schedule"] == "squaredcos_cap_v2"
    bare = training.load_pretrained(str(tmp_path / "bare"))
    assert bare.scheduler_config is None
    for a, b in zip(unet.parameters(), bare.unet.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="found neither a pipeline"):
        training.load_pretrained(str(write_unet_config(tmp_path / "config_only")))
