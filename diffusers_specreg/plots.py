"""Figures and image grids for the spectral metrics: RAPSD curves, per-band errors, sample grids.

Matplotlib is used through `matplotlib.figure.Figure` and the Agg canvas only (no `pyplot`, no global state, no
display needed), so the functions are safe in training loops, worker processes and headless machines. Every plot
function returns the `Figure` and saves it when a path is given; `figure_to_array` turns a figure into an
`[H, W, 3]` uint8 array for `SummaryWriter.add_image(..., dataformats="HWC")`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from PIL import Image

from .metrics import PowerSpectrum

# Curves with one of these names are the data and are drawn in black when `reference` is not given.
REFERENCE_NAMES = ("data", "real", "reference", "dataset", "train")


def new_figure(figsize: tuple[float, float], dpi: int) -> Figure:
    """A matplotlib `Figure` drawn off screen (Agg canvas, no pyplot state): safe in any thread or process."""
    figure = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike | None) -> None:
    """Write `figure` to `path` (its folder created), nothing when `path` is `None`."""
    if path is not None:
        directory = os.path.dirname(os.fspath(path))
        if directory:
            os.makedirs(directory, exist_ok=True)
        # no bbox_inches="tight": the file is exactly figsize * dpi pixels
        figure.savefig(path, dpi=figure.dpi)


def _curve(value) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(value, PowerSpectrum):
        return np.asarray(value.frequencies, dtype=np.float64), np.asarray(value.power, dtype=np.float64)
    freqs, power = value
    to_numpy = lambda v: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)  # noqa: E731
    return to_numpy(freqs).astype(np.float64), to_numpy(power).astype(np.float64)


def _decades(limits: tuple[float, float]) -> float:
    low, high = sorted(limits)
    return math.log10(high / low) if low > 0 else math.inf


def _power_of_ten_label(value: float, _=None) -> str:
    """`10^k` or `m×10^k` in mathtext, for the power axis."""
    if not value > 0:
        return ""
    exponent = math.floor(math.log10(value) + 1e-9)
    mantissa = round(value / 10.0**exponent, 6)
    power = f"10^{{{exponent}}}"
    return f"${power}$" if mantissa == 1 else f"${mantissa:g}\\times{power}$"


def _readable_log_ticks(axes) -> None:
    """Labelled ticks of a log-log plot that do not collide.

    Matplotlib labels the minor ticks of a log axis spanning less than about two decades, which on a RAPSD plot
    (32x32 images: 1/32 to 1/2 cycles per pixel) prints "3x10^-2" next to "4x10^-2" and the labels overlap. Here only
    major ticks are labelled: on x at 1, 2 and 5 times powers of ten in plain decimals ("0.05", "0.1"), at powers of
    ten alone beyond two decades; on y at powers of ten, with 2 and 5 added when the power spans under 1.5 decades
    and every integer multiple under one decade.
    """
    x_subs = (1.0, 2.0, 5.0) if _decades(axes.get_xlim()) <= 2.0 else (1.0,)
    axes.xaxis.set_major_locator(LogLocator(base=10.0, subs=x_subs))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    y_decades = _decades(axes.get_ylim())
    y_subs = tuple(range(1, 10)) if y_decades < 1.0 else (1.0, 2.0, 5.0) if y_decades < 1.5 else (1.0,)
    axes.yaxis.set_major_locator(LogLocator(base=10.0, subs=y_subs, numticks=8))
    axes.yaxis.set_major_formatter(FuncFormatter(_power_of_ten_label))
    axes.yaxis.set_minor_formatter(NullFormatter())


def plot_rapsd(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray] | PowerSpectrum],
    path: str | os.PathLike | None = None,
    reference: str | None = None,
    title: str | None = None,
    xlabel: str = "frequency (cycles / pixel)",
    figsize: tuple[float, float] = (6.0, 4.5),
    dpi: int = 100,
) -> Figure:
    r"""
    Log-log plot of radially averaged power spectra, the data curve in black.

    Args:
        curves (`dict[str, tuple[np.ndarray, np.ndarray] | PowerSpectrum]`): name -> `(frequencies [K], power [K])`
            or a `PowerSpectrum`. The DC bin (`f = 0`) and non-positive powers are not drawn.
        path (`str` or `os.PathLike`, *optional*, defaults to `None`): PNG (or any Matplotlib format) to write.
        reference (`str`, *optional*, defaults to `None`): name of the data curve, drawn thick and black; `None`
            picks the first name in `REFERENCE_NAMES` present in `curves`.
        title (`str`, *optional*, defaults to `None`): figure title.
        xlabel (`str`, defaults to `"frequency (cycles / pixel)"`): x-axis label.
        figsize (`tuple[float, float]`, defaults to `(6.0, 4.5)`): size in inches; the file is `figsize * dpi` pixels.
        dpi (`int`, defaults to `100`): resolution.

    Returns:
        `matplotlib.figure.Figure`: the figure.
    """
    if not curves:
        raise ValueError("`curves` is empty; expected at least one name -> (frequencies, power).")
    if reference is None:
        reference = next((name for name in REFERENCE_NAMES if name in curves), None)
    elif reference not in curves:
        raise ValueError(f"Unknown reference curve {reference!r}; expected one of {list(curves)}.")
    figure = new_figure(figsize, dpi)
    axes = figure.add_subplot(1, 1, 1)
    for name, value in curves.items():
        freqs, power = _curve(value)
        if freqs.shape != power.shape or freqs.ndim != 1:
            raise ValueError(f"Curve {name!r} must be two 1-D arrays of the same shape [K].")
        keep = (freqs > 0) & (power > 0)
        style = {"color": "black", "linewidth": 2.0, "zorder": 3} if name == reference else {"linewidth": 1.3}
        axes.loglog(freqs[keep], power[keep], label=name, **style)
    _readable_log_ticks(axes)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("power")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    if title:
        axes.set_title(title)
    figure.tight_layout()
    save_figure(figure, path)
    return figure


def plot_band_errors(
    table: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike | None = None,
    title: str | None = None,
    ylabel: str = "mean |Δ log10 P|",
    figsize: tuple[float, float] = (6.0, 4.0),
    dpi: int = 100,
) -> Figure:
    r"""
    Grouped bar chart of per-band errors (e.g. `log_rapsd_distance` of several models against the data).

    Args:
        table (`dict[str, dict[str, float]]`): model name -> band name -> value. Bands are grouped on the x axis
            in the order they first appear; a missing value is drawn as an empty slot.
        path (`str` or `os.PathLike`, *optional*, defaults to `None`): file to write.
        title (`str`, *optional*, defaults to `None`): figure title.
        ylabel (`str`, defaults to `"mean |Δ log10 P|"`): y-axis label.
        figsize (`tuple[float, float]`, defaults to `(6.0, 4.0)`): size in inches; the file is `figsize * dpi` pixels.
        dpi (`int`, defaults to `100`): resolution.

    Returns:
        `matplotlib.figure.Figure`: the figure.
    """
    if not table:
        raise ValueError("`table` is empty; expected name -> {band: value}.")
    bands: list[str] = []
    for row in table.values():
        bands.extend(band for band in row if band not in bands)
    figure = new_figure(figsize, dpi)
    axes = figure.add_subplot(1, 1, 1)
    positions = np.arange(len(bands), dtype=np.float64)
    width = 0.8 / len(table)
    for i, (name, row) in enumerate(table.items()):
        values = [float(row.get(band, math.nan)) for band in bands]
        axes.bar(positions + (i - (len(table) - 1) / 2) * width, values, width=width, label=name)
    axes.set_xticks(positions)
    axes.set_xticklabels(bands)
    axes.set_ylabel(ylabel)
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend()
    if title:
        axes.set_title(title)
    figure.tight_layout()
    save_figure(figure, path)
    return figure


def figure_to_array(figure: Figure) -> np.ndarray:
    r"""
    Render a figure to an RGB array (for TensorBoard's `add_image(..., dataformats="HWC")`).

    Args:
        figure (`matplotlib.figure.Figure`): the figure; it gets an Agg canvas if it has another one.

    Returns:
        `np.ndarray`: uint8 `[H, W, 3]`, `H, W = figsize * dpi`.
    """
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def image_grid(
    images: torch.Tensor | np.ndarray,
    nrow: int = 8,
    padding: int = 2,
    value_range: tuple[float, float] = (-1.0, 1.0),
    pad_value: int = 255,
) -> np.ndarray:
    r"""
    Tile a batch of images into one uint8 array.

    Args:
        images (`torch.Tensor` or `np.ndarray`): `[B, C, H, W]` with `C` 1 (grey), 3 (RGB) or 4 (RGBA).
        nrow (`int`, defaults to `8`): images per row.
        padding (`int`, defaults to `2`): pixels between and around the images.
        value_range (`tuple[float, float]`, defaults to `(-1.0, 1.0)`): input range mapped to 0..255; values
            outside are clipped.
        pad_value (`int`, defaults to `255`): grey level of the padding; white keeps the tiles apart on the dark
            backgrounds of digits and mel spectrograms, where black gaps would vanish.

    Returns:
        `np.ndarray`: uint8 `[rows * (H + padding) + padding, nrow' * (W + padding) + padding, C]` with
        `nrow' = min(nrow, B)` and `rows = ceil(B / nrow')`.
    """
    x = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[1] not in (1, 3, 4):
        raise ValueError(f"`images` must have shape [B, C, H, W] with C in (1, 3, 4), got {list(x.shape)}.")
    if nrow < 1 or padding < 0 or not 0 <= pad_value <= 255:
        raise ValueError(
            f"`nrow` must be >= 1, `padding` >= 0 and `pad_value` in 0..255, got nrow={nrow}, padding={padding}, "
            f"pad_value={pad_value}."
        )
    low, high = value_range
    pixels = np.round((np.clip(x, low, high) - low) / (high - low) * 255.0).astype(np.uint8)
    batch, channels, height, width = pixels.shape
    columns = min(nrow, batch)
    rows = math.ceil(batch / columns)
    grid = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels), pad_value, np.uint8
    )
    for index in range(batch):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[top : top + height, left : left + width] = pixels[index].transpose(1, 2, 0)
    return grid


def save_image_grid(
    images: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    nrow: int = 8,
    padding: int = 2,
    value_range: tuple[float, float] = (-1.0, 1.0),
    pad_value: int = 255,
) -> Image.Image:
    r"""
    Save a batch of images as one PNG grid (PIL only, no torchvision).

    Args:
        images (`torch.Tensor` or `np.ndarray`): `[B, C, H, W]` in `value_range`, `C` in (1, 3, 4).
        path (`str` or `os.PathLike`): output file.
        nrow (`int`, defaults to `8`): images per row.
        padding (`int`, defaults to `2`): pixels between and around the images.
        value_range (`tuple[float, float]`, defaults to `(-1.0, 1.0)`): input range mapped to 0..255.
        pad_value (`int`, defaults to `255`): grey level of the padding (see `image_grid`).

    Returns:
        `PIL.Image.Image`: the grid ("L", "RGB" or "RGBA").
    """
    grid = image_grid(images, nrow=nrow, padding=padding, value_range=value_range, pad_value=pad_value)
    image = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    image.save(path)
    return image


__all__ = [
    "REFERENCE_NAMES",
    "figure_to_array",
    "image_grid",
    "new_figure",
    "plot_band_errors",
    "plot_rapsd",
    "save_figure",
    "save_image_grid",
]
