"""Training data: built-in sets, image folders, `datasets` datasets, preprocessing like train_unconditional.py."""

import os

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


# --- issue 19: what the readers take from the disk ------------------------------------------------------------------


def _halves(width: int, height: int) -> np.ndarray:
    """A `[height, width]` uint8 array: the left half white, the right half black."""
    array = np.zeros((height, width), dtype=np.uint8)
    array[:, : width // 2] = 255
    return array


def test_exif_orientation_is_applied_as_datasets_does(tmp_path):
    import datasets

    folder = tmp_path / "phone"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display (a phone held upright)
    Image.fromarray(_halves(32, 16), mode="L").save(folder / "photo.jpg", exif=exif, quality=100)
    built = data.build_image_dataset(
        dataset_name=None,
        dataset_config_name=None,
        train_data_dir=str(folder),
        cache_dir=None,
        resolution=16,
        center_crop=True,
        random_flip=False,
        preserve_input_precision=False,
    )
    image = built.dataset[0]["input"][0]  # displayed upright: 16 wide, 32 tall, the white half on top
    assert image[:6].mean() > 0.9 and image[-6:].mean() < -0.9
    assert torch.allclose(image[:, 0], image[:, -1], atol=0.05)  # no left/right difference left
    # the same file read by `datasets` (as train_unconditional.py's imagefolder reads it) gives the same tensor
    hf = datasets.Dataset.from_dict({"image": [str(folder / "photo.jpg")]}).cast_column("image", datasets.Image())
    expected = data.HFImageDataset(hf, "image", built.dataset.transform)[0]["input"]
    assert torch.equal(built.dataset[0]["input"], expected)


def write_png_bomb(path, side: int = 14_000) -> None:
    """A valid 1-bit PNG of `side`x`side` black pixels (196 M pixels: over twice PIL's default MAX_IMAGE_PIXELS of
    89.5 M, the size it refuses to open) in about 25 kB."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    compressor = zlib.compressobj(9)
    row = bytes(1 + (side + 7) // 8)  # filter byte 0, then the row's bits
    stream = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b""))


def test_decompression_bomb_is_skipped_and_named(tmp_path, caplog):
    folder = write_image_folder(tmp_path / "images", count=2)
    write_png_bomb(folder / "bomb.png")
    scan = data.scan_image_folder(str(folder))
    assert len(scan.files) == 2 and scan.unreadable == [str(folder / "bomb.png")]
    assert "bomb.png" in caplog.text and "MAX_IMAGE_PIXELS" in caplog.text
    only = tmp_path / "only"
    only.mkdir()
    write_png_bomb(only / "bomb.png")
    with pytest.raises(data.DataError, match=r"bomb\.png.*more pixels than PIL opens"):
        data.scan_image_folder(str(only))
    # a file that turned into one after the scan: a DataError naming it, not a raw traceback
    dataset = data.ImageFolderDataset([str(only / "bomb.png")], data.ImageTransform(16, 1))
    with pytest.raises(data.DataError, match="Cannot read training image"):
        dataset[0]


def test_symlinked_subfolders_are_followed_once(tmp_path, caplog):
    root = tmp_path / "images"
    write_image_folder(root / "own", count=2)  # own/img_0.png (in own/sub) and own/img_1.png
    write_image_folder(tmp_path / "elsewhere", count=2)
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "own" / "loop").symlink_to(root, target_is_directory=True)  # a loop back to the top
    (root / "zz_again").symlink_to(root / "own", target_is_directory=True)  # a folder already read
    scan = data.scan_image_folder(str(root))
    names = sorted(os.path.relpath(path, root) for path in scan.files)
    assert names == [
        os.path.join("linked", "img_1.png"),
        os.path.join("linked", "sub", "img_0.png"),
        os.path.join("own", "img_1.png"),
        os.path.join("own", "sub", "img_0.png"),
    ]
    assert "own/loop" in caplog.text and "zz_again" in caplog.text


def test_hub_dataset_takes_the_image_column_as_the_anchor(tmp_path):
    import datasets

    black = [Image.fromarray(np.zeros((16, 16), dtype=np.uint8), mode="L")] * 3
    white = [Image.fromarray(np.full((16, 16), 255, dtype=np.uint8), mode="L")] * 3
    table = datasets.Dataset.from_dict({"mask": black, "image": white, "label": [0, 1, 2]})
    table = table.cast_column("mask", datasets.Image()).cast_column("image", datasets.Image())
    table.to_parquet(str(tmp_path / "two_images" / "train.parquet"))

    def build(image_column=None):
        return data.build_image_dataset(
            dataset_name=str(tmp_path / "two_images"),
            dataset_config_name=None,
            train_data_dir=None,
            cache_dir=str(tmp_path / "cache"),
            resolution=16,
            center_crop=True,
            random_flip=False,
            preserve_input_precision=False,
            image_column=image_column,
        )

    built = build()  # train_unconditional.py reads examples["image"], whatever other image columns come first
    assert float(built.dataset[0]["input"].min()) == 1.0 and "column 'image'" in built.description
    assert float(build("mask").dataset[0]["input"].max()) == -1.0
    with pytest.raises(data.DataError, match=r"--image_column 'nope'.*\['mask', 'image', 'label'\]"):
        build("nope")
    with pytest.raises(data.DataError, match="--image_column 'label' is not an image column"):
        build("label")
    # no 'image' column: the only image column is taken; with two, the user must choose
    loaded = data.load_hf_dataset(str(tmp_path / "two_images"), cache_dir=str(tmp_path / "cache"))
    assert data.choose_image_column(loaded.rename_column("image", "picture").remove_columns("mask")) == "picture"
    with pytest.raises(data.DataError, match=r"several image columns \['mask', 'picture'\].*--image_column"):
        data.choose_image_column(loaded.rename_column("image", "picture"))
    with pytest.raises(data.DataError, match="no image column"):
        data.choose_image_column(loaded.remove_columns(["mask", "image"]))
