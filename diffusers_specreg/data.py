"""Training data: image folders, `datasets` datasets, and built-in synthetic data that needs no download.

Every dataset here yields dicts `{"input": Tensor[C, H, W]}` with values in [-1, 1], like the batches of Diffusers'
`train_unconditional.py` (resize, crop, optional flip, normalise with mean 0.5 and std 0.5).
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
BUILTIN_DATASETS = ("checkerboards", "digits", "photos", "fashion_mnist")
# Debian's `dataset-fashion-mnist` package (`apt-get install dataset-fashion-mnist`) installs the IDX files here
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(ValueError):
    """Raised before training when the training data cannot be used; the message says how to fix it."""


# ---------------------------------------------------------------------------------------------------------------
# Built-in synthetic data
# ---------------------------------------------------------------------------------------------------------------


def make_checkerboards(num_images: int, resolution: int, seed: int = 0, channels: int = 1) -> torch.Tensor:
    """Grayscale checkerboards, the toy data of arXiv 2603.02447 (Figs. 1-2).

    Each image is a ±1 checkerboard whose square size is drawn from the divisors-friendly set {4, 8, 16} pixels
    (clipped to the resolution) and whose pattern is shifted by a random offset, so the set has sharp edges at
    many positions and a power spectrum concentrated on odd harmonics: exactly what an MSE-trained model blurs.

    Args:
        num_images (`int`): number of images.
        resolution (`int`): height and width in pixels.
        seed (`int`, defaults to 0): seed of the numpy generator; the same seed gives the same set.
        channels (`int`, defaults to 1): channels (the same pattern repeated).

    Returns:
        `torch.Tensor` of shape `[N, C, H, W]` with values in {-1, 1}.
    """
    if num_images < 1 or resolution < 2:
        raise DataError(f"checkerboards need num_images >= 1 and resolution >= 2, got {num_images}, {resolution}.")
    rng = np.random.default_rng(seed)
    sizes = [s for s in (4, 8, 16) if s <= resolution // 2] or [1]
    coords = np.arange(resolution)
    images = np.empty((num_images, resolution, resolution), dtype=np.float32)
    for i in range(num_images):
        size = int(rng.choice(sizes))
        dy, dx = rng.integers(0, 2 * size, size=2)
        rows = ((coords + dy) // size) % 2
        cols = ((coords + dx) // size) % 2
        images[i] = np.where((rows[:, None] + cols[None, :]) % 2 == 0, 1.0, -1.0)
    tensor = torch.from_numpy(images)[:, None]
    return tensor.repeat(1, channels, 1, 1)


def make_digits(resolution: int, channels: int = 1) -> torch.Tensor:
    """scikit-learn's 1,797 handwritten 8x8 digits (installed with scikit-learn, no download), upsampled.

    Args:
        resolution (`int`): output height and width (bilinear upsampling from 8x8).
        channels (`int`, defaults to 1): channels (the digit repeated).

    Returns:
        `torch.Tensor` of shape `[1797, C, H, W]` in [-1, 1].
    """
    from sklearn.datasets import load_digits

    digits = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0)[:, None]
    digits = torch.nn.functional.interpolate(
        digits, size=(resolution, resolution), mode="bilinear", align_corners=False
    )
    return (digits.clamp(0, 1) * 2 - 1).repeat(1, channels, 1, 1)


def make_photo_crops(
    num_images: int, resolution: int, seed: int = 0, channels: int = 3, downscale: int = 4
) -> torch.Tensor:
    """Natural-image crops: random squares of scikit-learn's two sample photos (`load_sample_images`, no download).

    The 427x640 photos (a temple, a flower) are first shrunk by `downscale` (box filter), so a crop holds a
    recognisable part of the scene rather than a patch of texture; crops are drawn uniformly at random.

    Args:
        num_images (`int`): number of crops.
        resolution (`int`): height and width of a crop.
        seed (`int`, defaults to 0): seed of the numpy generator; the same seed gives the same crops.
        channels (`int`, defaults to 3): 3 for RGB, 1 for the luminance.
        downscale (`int`, defaults to 4): integer shrink factor of the photos before cropping.

    Returns:
        `torch.Tensor` of shape `[N, C, H, W]` in [-1, 1].
    """
    from sklearn.datasets import load_sample_images

    photos = []
    for photo in load_sample_images().images:
        image = Image.fromarray(photo)
        image = image.resize((image.width // downscale, image.height // downscale), Image.BOX)
        photos.append(np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 127.5 - 1)
    if min(min(p.shape[:2]) for p in photos) < resolution:
        raise DataError(f"photos are too small for --resolution {resolution} after a {downscale}x shrink.")
    rng = np.random.default_rng(seed)
    crops = np.empty((num_images, resolution, resolution, channels), dtype=np.float32)
    for i in range(num_images):
        photo = photos[int(rng.integers(len(photos)))]
        y = int(rng.integers(photo.shape[0] - resolution + 1))
        x = int(rng.integers(photo.shape[1] - resolution + 1))
        crop = photo[y : y + resolution, x : x + resolution]
        crops[i] = crop[..., None] if crop.ndim == 2 else crop
    return torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    r"""
    Read an IDX file (the MNIST / Fashion-MNIST format), gzipped (`.gz`) or not.

    The format: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E
    float64), the number of dimensions, then one big-endian uint32 per dimension and the values in C order.

    Args:
        path (`str` or `os.PathLike`): the file.

    Returns:
        `np.ndarray` of the stored type and shape (e.g. uint8 `[60000, 28, 28]` for images, `[60000]` for labels).

    Raises:
        `DataError`: the file is not a valid IDX file (bad magic number or a size that does not match its header).
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as file:
            data = file.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:  # a truncated or corrupt download
        raise DataError(
            f"{str(path)!r} is damaged ({type(error).__name__}: {error}). Reinstall it "
            "(apt-get install --reinstall dataset-fashion-mnist)."
        ) from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DataError(f"{str(path)!r} is not an IDX file (magic number {data[:4].hex()}).")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">u4")) if ndim else ()
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{str(path)!r} holds {len(data) - header} bytes of values, its header {list(shape)} needs {expected}: "
            "the file is truncated or damaged. Reinstall it (apt-get install --reinstall dataset-fashion-mnist)."
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def load_fashion_mnist(
    split: str = "train", resolution: int = 32, channels: int = 1, folder: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    Fashion-MNIST (Xiao et al. 2017, arXiv 1708.07747) from the IDX files of Debian's `dataset-fashion-mnist`.

    The 28x28 garments are padded (not resampled, so no interpolation blur) to `resolution` with the background
    value (0, i.e. -1 after scaling), centred.

    Args:
        split (`"train"` or `"test"`, defaults to `"train"`): the 60,000 training or the 10,000 test images.
        resolution (`int`, defaults to 32): output height and width, at least 28.
        channels (`int`, defaults to 1): channels (the image repeated for 3).
        folder (`str`, *optional*): folder of the four `*-ubyte.gz` files; defaults to `FASHION_MNIST_DIR`
            (overridable with the environment variable `SPECREG_FASHION_MNIST_DIR`).

    Returns:
        `tuple`: images `[N, C, resolution, resolution]` float32 in [-1, 1] and labels int64 `[N]` (0-9, names in
        `FASHION_MNIST_CLASSES`).

    Raises:
        `DataError`: the files are missing (the message names the `apt-get install` command) or the size is too small.
    """
    if split not in ("train", "test"):
        raise DataError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}.")
    if resolution < 28:
        raise DataError(
            f"--builtin_dataset fashion_mnist needs --resolution >= 28 (its images are 28x28 and are padded, not "
            f"resized), got {resolution}. Use 32, the default."
        )
    folder = folder or os.environ.get("SPECREG_FASHION_MNIST_DIR") or FASHION_MNIST_DIR
    prefix = "train" if split == "train" else "t10k"
    paths = [os.path.join(folder, f"{prefix}-{kind}-ubyte.gz") for kind in ("images-idx3", "labels-idx1")]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(
            f"Fashion-MNIST is not installed: {missing[0]!r} does not exist. Install Debian's package with "
            "`sudo apt-get install dataset-fashion-mnist` (31 MB, no other download), or set "
            "SPECREG_FASHION_MNIST_DIR to a folder holding the four *-ubyte.gz files."
        )
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DataError(f"Fashion-MNIST files in {folder!r} disagree: images {images.shape}, labels {labels.shape}.")
    pad = resolution - images.shape[1]
    before, after = pad // 2, pad - pad // 2
    padded = np.pad(images, ((0, 0), (before, after), (before, after)), constant_values=0)
    tensor = torch.from_numpy(padded.astype(np.float32) / 127.5 - 1.0)[:, None]
    return tensor.repeat(1, channels, 1, 1), torch.from_numpy(labels.astype(np.int64))


def write_image_folder(images: torch.Tensor, folder: str | os.PathLike, labels: Sequence[int] | None = None) -> int:
    r"""
    Write `[N, C, H, W]` images in [-1, 1] as PNG files, the `--train_data_dir` layout (one subfolder per label
    when `labels` are given, as `datasets`' imagefolder expects).

    Args:
        images (`torch.Tensor`): `[N, 1 or 3, H, W]` in [-1, 1].
        folder (`str` or `os.PathLike`): created if needed; existing files of the same names are replaced.
        labels (`Sequence[int]`, *optional*): one class index per image, written as `class_<k>/` subfolders.

    Returns:
        `int`: the number of files written.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(f"write_image_folder needs images [N, 1 or 3, H, W], got {list(images.shape)}.")
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i, array in enumerate(pixels):
        sub = os.path.join(str(folder), f"class_{int(labels[i])}") if labels is not None else str(folder)
        os.makedirs(sub, exist_ok=True)
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(os.path.join(sub, f"{i:05d}.png"))
    return len(pixels)


class AugmentationSeeds:
    """Random augmentations that are a function of (seed, epoch, index): no global RNG, no state to save.

    Drawing crops and flips from the global RNG broke exact resume: Accelerate restores it from the checkpoint and
    then advances it again while it skips the batches already consumed. A generator per sample, seeded from the
    run's seed, the epoch (`set_epoch`, called by the training loop) and the sample's index, gives every sample the
    augmentation it had in the uninterrupted run, on every process and in every data-loader worker.
    """

    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def augmentation_rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed % 2**63, self.epoch, int(index)])


class TensorImageDataset(AugmentationSeeds, torch.utils.data.Dataset):
    """A dataset over a `[N, C, H, W]` tensor in [-1, 1], with an optional horizontal flip."""

    def __init__(self, images: torch.Tensor, random_flip: bool = False, seed: int = 0):
        self.images = images
        self.random_flip = random_flip
        self.seed = seed

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict:
        image = self.images[index]
        if self.random_flip and self.augmentation_rng(index).random() < 0.5:
            image = image.flip(-1)
        return {"input": image}


# ---------------------------------------------------------------------------------------------------------------
# Image preprocessing, as in train_unconditional.py: Resize(bilinear) -> Center/RandomCrop -> flip -> [-1, 1]
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ImageTransform:
    """PIL image -> `Tensor[C, H, W]` in [-1, 1].

    Args:
        resolution (`int`): the shorter side is resized to this (bilinear), then cropped to a square.
        channels (`int`): 1 converts to grayscale ("L"), 3 to "RGB".
        center_crop (`bool`, defaults to `False`): center crop instead of a random crop.
        random_flip (`bool`, defaults to `False`): flip horizontally with probability 0.5.
        preserve_input_precision (`bool`, defaults to `False`): keep 16-bit / float images at full precision
            instead of quantising them to 8 bits.
    """

    resolution: int
    channels: int
    center_crop: bool = False
    random_flip: bool = False
    preserve_input_precision: bool = False

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        """`rng` draws the crop and flip (`AugmentationSeeds.augmentation_rng`); a fresh unseeded one by default."""
        rng = rng if rng is not None else np.random.default_rng()
        array = self._to_array(image)  # [H, W, C] float32 in [0, 1]
        tensor = torch.from_numpy(array).permute(2, 0, 1)[None]
        h, w = tensor.shape[-2:]
        scale = self.resolution / min(h, w)
        new_h, new_w = max(self.resolution, round(h * scale)), max(self.resolution, round(w * scale))
        if (new_h, new_w) != (h, w):
            tensor = torch.nn.functional.interpolate(tensor, size=(new_h, new_w), mode="bilinear", antialias=True)
        if self.center_crop:
            top, left = (new_h - self.resolution) // 2, (new_w - self.resolution) // 2
        else:
            top = int(rng.integers(0, new_h - self.resolution + 1))
            left = int(rng.integers(0, new_w - self.resolution + 1))
        tensor = tensor[0, :, top : top + self.resolution, left : left + self.resolution]
        if self.random_flip and rng.random() < 0.5:
            tensor = tensor.flip(-1)
        return (tensor.clamp(0, 1) * 2 - 1).contiguous()

    def _to_array(self, image: Image.Image) -> np.ndarray:
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            # PIL's convert("L") clips 16-bit values at 255 (nearly every pixel white): scale them instead
            array = np.asarray(image, dtype=np.float32)
            array = np.clip(array / (65535.0 if image.mode != "F" else max(float(array.max()), 1.0)), 0, 1)
            if not self.preserve_input_precision:  # what an 8-bit image of the same picture would hold
                array = np.round(array * 255.0) / 255.0
            array = array[..., None]
            return np.repeat(array, self.channels, axis=-1) if self.channels == 3 else array
        mode = "L" if self.channels == 1 else "RGB"
        array = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
        return array[..., None] if array.ndim == 2 else array


def image_channels(image: Image.Image) -> int:
    """1 for grayscale images (modes L, LA, 1, I, I;16, F), else 3."""
    return 1 if image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F") else 3


# ---------------------------------------------------------------------------------------------------------------
# Image folders (the `--train_data_dir` of train_unconditional.py, which uses datasets' "imagefolder")
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class FolderScan:
    """What `scan_image_folder` found: the readable files, the unreadable ones and the inferred channels."""

    files: list[str]
    unreadable: list[str]
    channels: int


def _walk_following_links(folder: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """`os.walk(folder, followlinks=True)`, every real folder once: `[(root, file names)]` and the symlinked folders
    not followed because they lead to a folder already read (a loop back up the tree, or a second link)."""
    walked, skipped, seen = [], [], {os.path.realpath(folder)}
    for root, dirs, names in os.walk(folder, followlinks=True):
        kept = []
        for name in sorted(dirs):
            real = os.path.realpath(os.path.join(root, name))
            if real in seen:
                skipped.append(os.path.relpath(os.path.join(root, name), folder))
            else:
                seen.add(real)
                kept.append(name)
        dirs[:] = kept
        walked.append((root, sorted(names)))
    return sorted(walked), skipped


def list_files(folder: str, extensions: Sequence[str]) -> list[str]:
    """The files under `folder` whose names end with one of `extensions` (any case), sorted by folder then name.

    Symlinked sub-folders are followed, each real folder once: a link back up the tree, or a second link to a folder
    already read, is skipped with a warning naming it.
    """
    walked, loops = _walk_following_links(folder)
    if loops:
        logger.warning(
            "Not following %d symlinked folder(s) in %s that lead to a folder already read: %s.",
            len(loops),
            folder,
            ", ".join(loops),
        )
    suffixes = tuple(extensions)
    return [os.path.join(root, n) for root, names in walked for n in names if n.lower().endswith(suffixes)]


def scan_image_folder(folder: str, max_check: int | None = None) -> FolderScan:
    """List the images under `folder` (recursively) and check that PIL can read them.

    Symlinked sub-folders are followed, each real folder once (a link back up the tree or a second link to a folder
    is skipped with a warning naming it). Unreadable files, and images with more pixels than PIL opens (its
    decompression-bomb guard, twice `PIL.Image.MAX_IMAGE_PIXELS`), are skipped and counted (a warning says how many
    and names a few); a missing folder, a folder with no image file, or one where no image can be read raises
    `DataError` naming the folder.

    Args:
        folder (`str`): the folder to scan.
        max_check (`int`, *optional*): verify at most this many files (all by default).
    """
    if not os.path.isdir(folder):
        raise DataError(f"--train_data_dir {folder!r} does not exist or is not a folder. Pass a folder of images.")
    files = list_files(folder, IMAGE_EXTENSIONS)
    if not files:
        raise DataError(
            f"--train_data_dir {folder!r} contains no image files ({', '.join(IMAGE_EXTENSIONS)}). "
            "Put images in it, or leave out --train_data_dir and --dataset_name to train on built-in data."
        )
    readable, unreadable, too_large, modes = [], [], [], set()
    for i, path in enumerate(files):
        if max_check is not None and i >= max_check:
            readable.append(path)
            continue
        try:
            with Image.open(path) as image:  # header, mode and (PNG) checksums
                modes.add(image_channels(image))
                image.verify()
            with Image.open(path) as image:  # verify() does not decode JPEGs: a truncated one only fails here
                upright(image).load()  # and read the EXIF orientation as training will
            readable.append(path)
        except Image.DecompressionBombError:  # not an OSError: PIL's guard against images that fill the memory
            unreadable.append(path)
            too_large.append(path)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            unreadable.append(path)
    limit = (
        f"{len(too_large)} of them with more pixels than PIL opens (2 x PIL.Image.MAX_IMAGE_PIXELS = "
        f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,}, its guard against decompression bombs; shrink them), e.g. "
        f"{too_large[0]!r}"
        if too_large
        else ""
    )
    if not readable:
        raise DataError(
            f"None of the {len(files)} image files in {folder!r} can be read by PIL (for example "
            f"{unreadable[0]!r}){'; ' + limit if limit else ''}. Check that they are valid images."
        )
    if unreadable:
        shown = ", ".join(os.path.relpath(p, folder) for p in unreadable[:3])
        logger.warning(
            "Skipping %d of %d files in %s that PIL cannot read (%s%s)%s.",
            len(unreadable),
            len(files),
            folder,
            shown,
            ", ..." if len(unreadable) > 3 else "",
            "; " + limit if limit else "",
        )
    return FolderScan(files=readable, unreadable=unreadable, channels=max(modes) if modes else 3)


def upright(image: Image.Image) -> Image.Image:
    """The image as it is displayed: rotated / mirrored by its EXIF orientation (a phone photo held upright), as
    `datasets.Image` decodes it for train_unconditional.py's imagefolder; the image itself when it has none."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


class ImageFolderDataset(AugmentationSeeds, torch.utils.data.Dataset):
    """The images of a folder (recursively), upright (`upright`), transformed with an `ImageTransform`."""

    def __init__(self, files: Sequence[str], transform: ImageTransform, seed: int = 0):
        self.files = list(files)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        try:
            with Image.open(path) as image:
                return {"input": self.transform(upright(image), self.augmentation_rng(index))}
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:  # changed after the scan
            raise DataError(f"Cannot read training image {path!r}: {error}. Remove or replace it.") from error


# ---------------------------------------------------------------------------------------------------------------
# `datasets` datasets (the `--dataset_name` of train_unconditional.py)
# ---------------------------------------------------------------------------------------------------------------


def choose_image_column(dataset, requested: str | None = None) -> str:
    """The column of `datasets.Image` values to train on: `requested` (`--image_column`), else `"image"`, the column
    train_unconditional.py reads (`examples["image"]`), else the dataset's only image column.

    Raises `DataError` listing the columns when `requested` is missing or holds no images, or when the dataset has
    no `"image"` column and not exactly one image column.
    """
    from datasets import Image as ImageFeature

    columns = list(dataset.column_names)
    images = [name for name, feature in dataset.features.items() if isinstance(feature, ImageFeature)]
    if requested is not None:
        if requested not in columns:
            raise DataError(
                f"--image_column {requested!r} is not a column of the dataset (columns: {columns}; image columns: "
                f"{images}). Pass one of its image columns."
            )
        if requested not in images:
            raise DataError(
                f"--image_column {requested!r} is not an image column (it holds {dataset.features[requested]}); "
                f"the image columns are {images}."
            )
        return requested
    if "image" in images:
        return "image"
    if len(images) == 1:
        return images[0]
    if images:
        raise DataError(
            f"The dataset has several image columns {images} and none named 'image': choose one with --image_column."
        )
    raise DataError(
        f"The dataset has no image column (columns: {columns}): it needs a column of datasets.Image values. Cast "
        "one with dataset.cast_column(name, datasets.Image())."
    )


class HFImageDataset(AugmentationSeeds, torch.utils.data.Dataset):
    """A `datasets.Dataset` with an image column, transformed with an `ImageTransform`."""

    def __init__(self, dataset, column: str, transform: ImageTransform, seed: int = 0):
        self.dataset = dataset
        self.column = column
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return {"input": self.transform(self.dataset[index][self.column], self.augmentation_rng(index))}


def load_hf_dataset(name: str, config_name: str | None = None, cache_dir: str | None = None):
    """`datasets.load_dataset(name, config_name, split="train")` with an error that says what to do offline."""
    import datasets

    try:
        dataset = datasets.load_dataset(name, config_name, cache_dir=cache_dir, split="train")
    except Exception as error:  # datasets raises many types (connection, file not found, config)
        raise DataError(
            f"Could not load dataset {name!r} (config {config_name!r}): {error}. Pass a Hub dataset id you can "
            "reach, a local dataset folder, or use --train_data_dir with a folder of images."
        ) from error
    if len(dataset) == 0:
        raise DataError(f"Dataset {name!r} has an empty 'train' split.")
    return dataset


# ---------------------------------------------------------------------------------------------------------------
# One entry point for the training script
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class TrainingData:
    """The dataset the training script uses, with what it inferred."""

    dataset: torch.utils.data.Dataset
    channels: int
    description: str
    name: str | None = None  # a Hub dataset id, for the model card's `datasets` metadata


def build_image_dataset(
    *,
    dataset_name: str | None,
    dataset_config_name: str | None,
    train_data_dir: str | None,
    cache_dir: str | None,
    resolution: int,
    center_crop: bool,
    random_flip: bool,
    preserve_input_precision: bool,
    builtin_dataset: str = "checkerboards",
    builtin_num_samples: int = 2048,
    channels: int | None = None,
    seed: int = 0,
    builtin_split: str = "train",
    image_column: str | None = None,
) -> TrainingData:
    """Build the training dataset from exactly one source: a `datasets` name, an image folder or built-in data.

    Args:
        channels (`int`, *optional*): force 1 or 3 channels (e.g. those of a pretrained UNet); by default they are
            inferred from the data (1 if every checked image is grayscale).
        builtin_dataset (`str`, defaults to `"checkerboards"`): used when neither `dataset_name` nor
            `train_data_dir` is given; one of `BUILTIN_DATASETS`.
        image_column (`str`, *optional*): the column of a `dataset_name` dataset to train on; by default `"image"`,
            as train_unconditional.py, else the only image column (`choose_image_column`).
        builtin_split (`str`, defaults to `"train"`): `"test"` takes Fashion-MNIST's 10,000 held-out test images
            (the evaluation CLI's choice); the synthetic sets have no split.
    """
    if dataset_name and train_data_dir:
        raise DataError("Pass either --dataset_name or --train_data_dir, not both.")
    if image_column is not None and not dataset_name:
        raise DataError(
            "--image_column applies to --dataset_name only (an image folder has one image per file); leave it out."
        )
    if channels is not None and channels not in (1, 3):
        raise DataError(f"Images must have 1 or 3 channels, got {channels}.")

    def transform(ch: int) -> ImageTransform:
        return ImageTransform(resolution, ch, center_crop, random_flip, preserve_input_precision)

    if train_data_dir:
        scan = scan_image_folder(train_data_dir)
        ch = channels or scan.channels
        skipped = f", {len(scan.unreadable)} unreadable skipped" if scan.unreadable else ""
        return TrainingData(
            ImageFolderDataset(scan.files, transform(ch), seed=seed),
            ch,
            f"{len(scan.files)} images from {train_data_dir}{skipped}",
        )
    if dataset_name:
        dataset = load_hf_dataset(dataset_name, dataset_config_name, cache_dir)
        column = choose_image_column(dataset, image_column)
        if channels is None:
            first = [dataset[i][column] for i in range(min(64, len(dataset)))]
            channels = max(image_channels(image) for image in first)
        return TrainingData(
            HFImageDataset(dataset, column, transform(channels), seed=seed),
            channels,
            f"{len(dataset)} images from dataset {dataset_name}, column {column!r}",
            name=dataset_name,
        )
    ch = channels or (3 if builtin_dataset == "photos" else 1)
    if builtin_dataset == "checkerboards":
        images = make_checkerboards(builtin_num_samples, resolution, seed=seed, channels=ch)
    elif builtin_dataset == "digits":
        images = make_digits(resolution, channels=ch)
    elif builtin_dataset == "photos":
        images = make_photo_crops(builtin_num_samples, resolution, seed=seed, channels=ch)
    elif builtin_dataset == "fashion_mnist":
        images, _ = load_fashion_mnist(builtin_split, resolution, channels=ch)
    else:
        raise DataError(f"Unknown built-in dataset {builtin_dataset!r}; choose one of {BUILTIN_DATASETS}.")
    split = f", {builtin_split} split" if builtin_dataset == "fashion_mnist" else ""
    return TrainingData(
        TensorImageDataset(images, random_flip, seed=seed),
        ch,
        f"built-in {builtin_dataset} ({images.shape[0]} images{split})",
    )
