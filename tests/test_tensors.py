"""The shared compute-dtype rule and per-sample shapes of `diffusers_specreg.tensors`."""

import pytest
import torch

from diffusers_specreg.tensors import as_per_sample, compute_dtype, per_sample


@pytest.mark.parametrize(
    "dtypes, expected",
    [
        ((torch.float16,), torch.float32),
        ((torch.bfloat16,), torch.float32),
        ((torch.float32,), torch.float32),
        ((torch.float64,), torch.float64),
        ((torch.int64,), torch.float32),
        ((torch.bool,), torch.float32),
        ((torch.complex64,), torch.float32),
        ((torch.float16, torch.float64), torch.float64),
        ((torch.int64, torch.bfloat16), torch.float32),
    ],
)
def test_compute_dtype_is_float32_at_least_and_keeps_float64(dtypes, expected):
    assert compute_dtype(*(torch.zeros(1, dtype=dtype) for dtype in dtypes)) == expected
    assert compute_dtype() == torch.float32
    assert compute_dtype(1.5, None) == torch.float32


def test_as_per_sample_shapes():
    assert torch.equal(as_per_sample(3, 4), torch.full((4,), 3))
    assert torch.equal(as_per_sample(torch.tensor([2.0]), 3), torch.full((3,), 2.0))
    assert as_per_sample(0.5).shape == (1,)
    values = torch.arange(4.0)
    assert torch.equal(as_per_sample(values, 4), values)
    assert torch.equal(as_per_sample(values.reshape(4, 1, 1, 1), 4), values)
    assert as_per_sample(torch.arange(4), 4, dtype=torch.float64).dtype == torch.float64
    assert as_per_sample(torch.arange(4), 4).dtype == torch.int64
    with pytest.raises(ValueError, match=r"Expected sigmas as a scalar, a \[B\] = \[2\] tensor"):
        as_per_sample(torch.arange(3), 2, name="sigmas")
    with pytest.raises(ValueError, match=r"a \[B\] tensor"):
        as_per_sample(torch.zeros(2, 3))


def test_per_sample_broadcasts_against_the_batch():
    values = torch.arange(2.0)
    assert per_sample(values, torch.zeros(2, 3, 4, 5)).shape == (2, 1, 1, 1)
    assert per_sample(values, torch.zeros(2, 1, 8)).shape == (2, 1, 1)
