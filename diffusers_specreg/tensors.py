"""The compute-dtype rule and the per-sample shapes that every module of the package shares.

Each loss, transform and x̂₀ reconstruction computes in float32 at least (half and bfloat16 inputs are upcast, so the
spectra and their gradients do not lose precision) and keeps float64 (so `torch.autograd.gradcheck` works). A noise
level or weight is one value per sample, `[B]`, and is broadcast against a batch `[B, C, ...]` as `[B, 1, ..., 1]`.

The self-contained pipeline files in `pipelines/` keep their own copies of these few lines, because a saved pipeline
folder must load without this package.
"""

from __future__ import annotations

import torch


def compute_dtype(*tensors) -> torch.dtype:
    """The floating dtype to compute in for `tensors`: float32 at least, float64 kept.

    Args:
        *tensors (`torch.Tensor` or any):
            The inputs. Floating tensors are promoted together with float32 (half and bfloat16 give float32, float64
            gives float64); integer, boolean and complex tensors and non-tensors do not change the result.

    Returns:
        `torch.dtype`: `torch.float32` or a wider floating dtype (`torch.float64`).
    """
    dtype = torch.float32
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def as_per_sample(
    values,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    name: str = "values",
) -> torch.Tensor:
    """One value per sample, `[B]`: a scalar is expanded, a `[B, 1, ..., 1]` tensor is flattened.

    Args:
        values (`torch.Tensor`, `float` or `int`):
            A scalar, a one-element tensor, a `[B]` tensor or a `[B, 1, ..., 1]` tensor (the shape the Diffusers
            scripts' `get_sigmas` returns).
        batch_size (`int`, *optional*):
            B; a scalar is expanded to it and a tensor must match it. Without it a scalar gives `[1]`.
        device (`torch.device` or `str`, *optional*):
            Device of the result; that of `values` (CPU for a Python number) if `None`.
        dtype (`torch.dtype`, *optional*):
            Dtype of the result; that of `values` if `None` (integer timesteps stay integers).
        name (`str`, defaults to `"values"`):
            What `values` holds, for the error message ("timesteps / sigmas", "sigmas").

    Returns:
        `torch.Tensor` of shape `[B]` (`[1]` for a scalar without `batch_size`).
    """
    values = torch.as_tensor(values, device=device)
    if dtype is not None:
        values = values.to(dtype)
    if values.ndim > 1 and all(size == 1 for size in values.shape[1:]):
        values = values.reshape(values.shape[0])
    if values.ndim == 0 or (values.numel() == 1 and batch_size not in (None, 1)):
        return values.reshape(1).expand(batch_size or 1)
    if values.ndim != 1 or (batch_size is not None and values.shape[0] != batch_size):
        expected = "[B]" if batch_size is None else f"[B] = [{batch_size}]"
        raise ValueError(
            f"Expected {name} as a scalar, a {expected} tensor or a [B, 1, ..., 1] tensor, got shape"
            f" {list(values.shape)}."
        )
    return values


def per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`[B]` -> `[B, 1, ..., 1]` with the rank of `like`, so that one value per sample broadcasts over a batch.

    Args:
        values (`torch.Tensor` of shape `[B]`): one value per sample.
        like (`torch.Tensor` of shape `[B, C, ...]`): the batch it is broadcast against.

    Returns:
        `torch.Tensor` of shape `[B, 1, ..., 1]`, `like.ndim` dimensions, a view of `values`.
    """
    return values.reshape(values.shape[0], *([1] * (like.ndim - 1)))


def check_output_shape(model_output: torch.Tensor, noisy_sample: torch.Tensor) -> None:
    """Raise a `ValueError` unless the network output has the noisy sample's shape `[B, C, ...]`.

    Args:
        model_output (`torch.Tensor`): the network output.
        noisy_sample (`torch.Tensor` of shape `[B, C, ...]`): the noisy input x_t.
    """
    if model_output.shape != noisy_sample.shape:
        raise ValueError(
            f"Expected model_output of the noisy sample's shape {list(noisy_sample.shape)}, got"
            f" {list(model_output.shape)}."
        )
