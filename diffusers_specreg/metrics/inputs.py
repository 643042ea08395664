"""Input handling shared by the metrics: array conversion with shape checks, option checks and batch reductions.

Every metric takes `torch.Tensor` or `numpy.ndarray` inputs (`ArrayLike`). The conversions here detach, convert the
dtype and check the shape, with an error that names the argument; `PowerSpectrum` is here too because the 1-D
distances accept it wherever they accept an array (`as_1d_array` unwraps it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray

REDUCTIONS = ("none", "mean", "sum")


@dataclass
class PowerSpectrum:
    r"""
    A mean power spectrum over a set of samples.

    Args:
        frequencies (`np.ndarray`): `[K]` bin frequencies, in cycles per pixel / per sample (0 to 0.5), or in Hz
            where a sample rate was given. Index 0 is DC.
        power (`np.ndarray`): `[K]` mean power per bin over the samples (orthonormal DFT, channels averaged).
        num_samples (`int`): number of samples averaged.
    """

    frequencies: np.ndarray
    power: np.ndarray
    num_samples: int


def as_float_tensor(x: ArrayLike, name: str, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""
    A detached tensor of `dtype`, from a tensor or an array (on the tensor's device).

    Args:
        x (`torch.Tensor` or `np.ndarray`): any shape.
        name (`str`): the argument's name, for the error.
        dtype (`torch.dtype`, defaults to `torch.float64`): the result's dtype.

    Returns:
        `torch.Tensor`: `x` as `dtype`, same shape.

    Raises:
        `TypeError`: `x` is neither a tensor nor an array.
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor or a numpy.ndarray, got {type(x).__name__}.")
    return x.detach().to(dtype)


def as_images(x: ArrayLike, name: str = "images", dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""
    `as_float_tensor` of an image batch, checked to be `[B, C, H, W]`.

    Args:
        x (`torch.Tensor` or `np.ndarray`): `[B, C, H, W]` images, any range.
        name (`str`, defaults to `"images"`): the argument's name, for the error.
        dtype (`torch.dtype`, defaults to `torch.float64`): the result's dtype.

    Returns:
        `torch.Tensor`: `[B, C, H, W]` of `dtype`.
    """
    x = as_float_tensor(x, name, dtype)
    if x.ndim != 4:
        raise ValueError(f"`{name}` must have shape [B, C, H, W], got {list(x.shape)}.")
    return x


def as_waveforms(x: ArrayLike, name: str = "waveforms", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""
    `as_float_tensor` of a waveform batch with a channel axis: `[B, T]` or `[B, C, T]` -> `[B, C, T]`.

    Args:
        x (`torch.Tensor` or `np.ndarray`): `[B, T]` (mono) or `[B, C, T]` waveforms.
        name (`str`, defaults to `"waveforms"`): the argument's name, for the error.
        dtype (`torch.dtype`, defaults to `torch.float32`): the result's dtype.

    Returns:
        `torch.Tensor`: `[B, C, T]` of `dtype` (`C = 1` for `[B, T]` inputs).
    """
    x = as_float_tensor(x, name, dtype)
    if x.ndim == 2:
        x = x.unsqueeze(1)
    if x.ndim != 3:
        raise ValueError(f"`{name}` must have shape [B, T] or [B, C, T], got {list(x.shape)}.")
    return x


def as_1d_array(x: ArrayLike | PowerSpectrum, name: str) -> np.ndarray:
    r"""
    A float64 `[K]` array from a spectrum, a tensor or an array (a `PowerSpectrum` gives its `power`).

    Args:
        x (`np.ndarray`, `torch.Tensor` or `PowerSpectrum`): a 1-D spectrum or distribution.
        name (`str`): the argument's name, for the error.

    Returns:
        `np.ndarray`: float64 `[K]`.
    """
    if isinstance(x, PowerSpectrum):
        x = x.power
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D spectrum of shape [K], got shape {list(x.shape)}.")
    return x


def check_choice(value: str, allowed: Sequence[str], name: str) -> None:
    r"""
    Raise `ValueError` naming the allowed values when `value` is not one of them.

    Args:
        value (`str`): the option given.
        allowed (`Sequence[str]`): the options accepted.
        name (`str`): what the option is ("method", "reduction", ...), for the error.
    """
    if value not in allowed:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {list(allowed)}.")


def apply_reduction(values: torch.Tensor, reduction: str) -> torch.Tensor:
    r"""
    A torch-style reduction of per-sample values.

    Args:
        values (`torch.Tensor`): `[B]` per-sample values.
        reduction (`"none"`, `"mean"` or `"sum"`): what to return.

    Returns:
        `torch.Tensor`: `values` for `"none"`, else their mean or sum (a scalar).
    """
    check_choice(reduction, REDUCTIONS, "reduction")
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def iter_batches(x: ArrayLike | Iterable[ArrayLike], batch_size: int) -> Iterable[ArrayLike]:
    r"""
    Batches of a set given whole or as batches.

    Args:
        x (`torch.Tensor`, `np.ndarray` or an iterable of them): `[N, ...]` samples, or batches `[B, ...]`.
        batch_size (`int`): batch size when `x` is a whole tensor or array.

    Returns:
        `Iterable`: `x[i : i + batch_size]` slices of a whole set, else the given batches as they are.
    """
    if isinstance(x, (torch.Tensor, np.ndarray)):
        for start in range(0, x.shape[0], batch_size):
            yield x[start : start + batch_size]
    else:
        yield from x
