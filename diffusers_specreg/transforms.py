"""Frequency transforms shared by the spectral losses, noise spectra and metrics.

All functions are pure: they hold no state apart from caches of constant grids, windows and filter banks
(`functools.lru_cache`, as k-diffusion caches its frequency weight maps). Every transform runs in float32 (float64
when the input is float64), also inside fp16/bf16 autocast: cuFFT has no bf16 kernels, fp16 FFTs need power-of-two
sizes, and the spectral losses of arXiv 2603.02447 are sums of many small differences that half precision loses.

Shapes: images are `[B, C, H, W]` (2-D transforms over `H, W`), waveforms are `[B, C, T]` (1-D transforms over `T`).
"""

from __future__ import annotations

import copy
import functools
import warnings

import torch

from .pipeline_kernels import radial_frequency_grid
from .tensors import compute_dtype

_SHAPES_MESSAGE = "an image batch of shape [B, C, H, W] or a waveform batch of shape [B, C, T]"

# Padding modes of pytorch_wavelets whose coefficients equal PyWavelets' `wavedec`/`wavedec2` for the same name
# (checked in tests/test_transforms.py). pytorch_wavelets' "constant"/"replicate" have no PyWavelets equivalent.
DWT_MODES = ("zero", "symmetric", "reflect", "periodization", "periodic")

# Names of the DWT subbands, per signal dimensionality. The 2-D names follow PyWavelets' documentation of `dwt2`
# ("LL, (LH, HL, HH)" for `cA, (cH, cV, cD)`), the first letter referring to the height axis:
#   "LH" = pywt cH = highpass along H, lowpass along W (horizontal edges)  = pytorch_wavelets yh[j][:, :, 0]
#   "HL" = pywt cV = lowpass along H, highpass along W (vertical edges)    = pytorch_wavelets yh[j][:, :, 1]
#   "HH" = pywt cD = highpass along both axes (diagonal detail)             = pytorch_wavelets yh[j][:, :, 2]
DWT_SUBBANDS_2D = ("LH", "HL", "HH")
STFT_WINDOWS = ("hann", "hamming", "blackman", "bartlett")


def spectral_dims(x: torch.Tensor) -> tuple[int, ...]:
    r"""
    The signal dimensions that the spectral transforms act on.

    Args:
        x (`torch.Tensor`): an image batch `[B, C, H, W]` or a waveform batch `[B, C, T]`.

    Returns:
        `tuple[int, ...]`: `(-2, -1)` for images, `(-1,)` for waveforms.
    """
    if x.ndim == 4:
        return (-2, -1)
    if x.ndim == 3:
        return (-1,)
    raise ValueError(f"Expected {_SHAPES_MESSAGE}, got a tensor of shape {list(x.shape)}.")


def fourier(x: torch.Tensor) -> torch.Tensor:
    r"""
    Orthonormal full DFT over the signal dimensions, `F[x](ω) = A(ω) exp(iφ(ω))` of arXiv 2603.02447.

    Computed in float32 (float64 for float64 input) with autocast disabled, whatever the input dtype. With
    `norm="ortho"` the transform is unitary, so by Parseval `sum |F x|^2 = sum |x|^2`.

    Args:
        x (`torch.Tensor`): `[B, C, H, W]` or `[B, C, T]`.

    Returns:
        `torch.Tensor`: complex64 (complex128 for float64 input) spectrum of the same shape as `x`, in the
        un-shifted `torch.fft.fftn` layout (DC at index 0).
    """
    dims = spectral_dims(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return torch.fft.fftn(x.to(compute_dtype(x)), dim=dims, norm="ortho")


def real_fourier(x: torch.Tensor) -> torch.Tensor:
    r"""
    Non-redundant half of the orthonormal DFT of a real signal, `torch.fft.rfftn` over the signal dimensions.

    A real signal's spectrum is Hermitian, `F[x](-ω) = conj(F[x](ω))`, so the last axis keeps only its
    `n // 2 + 1` non-negative frequencies: about half the work and memory of [`fourier`]. Means over the full
    spectrum of any function of `|F|` or of `|angle(F[x] conj(F[y]))|` are weighted means over this half with
    [`hermitian_weight`]. Computed in float32 (float64 for float64 input) with autocast disabled.

    Args:
        x (`torch.Tensor`): real `[B, C, H, W]` or `[B, C, T]`.

    Returns:
        `torch.Tensor`: complex `[B, C, H, W // 2 + 1]` or `[B, C, T // 2 + 1]`, DC at index 0.
    """
    dims = spectral_dims(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return torch.fft.rfftn(x.to(compute_dtype(x)), dim=dims, norm="ortho")


@functools.lru_cache(maxsize=64)
def _hermitian_weight_cpu(shape: tuple[int, ...]) -> torch.Tensor:
    *lead, last = shape
    columns = torch.full((last // 2 + 1,), 2.0, dtype=torch.float64)
    columns[0] = 1.0  # DC column: its own mirror image
    if last % 2 == 0:
        columns[-1] = 1.0  # Nyquist column of an even length: its own mirror image too
    return columns.expand(*lead, last // 2 + 1).contiguous()


def hermitian_weight(
    shape: tuple[int, ...], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    r"""
    How many bins of the full DFT each bin of the [`real_fourier`] half stands for: 1 for the DC column (and the
    Nyquist column of an even last size), 2 for every other column, whose mirror image `-ω` was dropped.

    `sum(weight * f(F_half)) / prod(shape)` equals `mean(f(F_full))` for any `f` with `f(conj z) = f(z)` (the
    amplitude, the absolute wrapped phase difference) and for radially symmetric frequency weights. The weights sum
    to `prod(shape)`.

    Args:
        shape (`tuple[int, ...]`): the signal shape, `(H, W)` or `(T,)` (the full, not the halved, sizes).
        device (`torch.device` or `str`, *optional*, defaults to `None`): device of the result (CPU if `None`).
        dtype (`torch.dtype`, *optional*, defaults to `torch.float32`): dtype of the result.

    Returns:
        `torch.Tensor`: `[H, W // 2 + 1]` or `[T // 2 + 1]`.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (1, 2) or any(n < 1 for n in shape):
        raise ValueError(f"Expected a signal shape (H, W) or (T,) of positive sizes, got {shape}.")
    return _hermitian_weight_cpu(shape).to(device=device, dtype=dtype)


def radial_frequency(
    shape: tuple[int, ...], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    r"""
    Radial frequency `r = sqrt(sum_i f_i^2)` of every bin of the full-FFT layout.

    `f_i` comes from `torch.fft.fftfreq` (cycles per sample), so the Nyquist frequency of an axis is 0.5 and the
    largest radius of a 2-D grid is `sqrt(0.5)`. Cached per shape on the CPU in float64, then cast and moved (a
    float64 CPU result is the cached tensor itself: do not modify it in place). The grid is computed by
    `pipelines/pipeline_sagd.py::radial_frequency_grid`, which must stay self-contained for saved SAGD folders.

    Args:
        shape (`tuple[int, ...]`): the signal shape, `(H, W)` or `(T,)`.
        device (`torch.device` or `str`, *optional*, defaults to `None`): where to put the result (CPU if `None`).
        dtype (`torch.dtype`, *optional*, defaults to `torch.float32`): dtype of the result.

    Returns:
        `torch.Tensor`: tensor of shape `shape`.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (1, 2) or any(n < 1 for n in shape):
        raise ValueError(f"Expected a signal shape (H, W) or (T,) of positive sizes, got {shape}.")
    return radial_frequency_grid(shape).to(device=device, dtype=dtype)


def _import_pytorch_wavelets():
    # pytorch_wavelets imports pkg_resources at import time, which warns on recent setuptools; the warning is not
    # actionable for users of this package.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import pytorch_wavelets

    return pytorch_wavelets


@functools.lru_cache(maxsize=32)
def _dwt_module_float64(ndim: int, wave: str, levels: int, mode: str) -> torch.nn.Module:
    # pytorch_wavelets builds its filter buffers in the default dtype: build them in float64 so that the filter taps
    # are exact, and round to the caller's dtype later.
    pytorch_wavelets = _import_pytorch_wavelets()
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        if ndim == 2:
            module = pytorch_wavelets.DWTForward(J=levels, wave=wave, mode=mode)
        else:
            module = pytorch_wavelets.DWT1DForward(J=levels, wave=wave, mode=mode)
    finally:
        torch.set_default_dtype(default_dtype)
    return module.to(torch.float64).eval()


@functools.lru_cache(maxsize=64)
def _dwt_module(
    ndim: int, wave: str, levels: int, mode: str, device: torch.device, dtype: torch.dtype
) -> torch.nn.Module:
    # `nn.Module.to` works in place, so each (device, dtype) gets its own copy of the float64 master module: casting
    # one shared module back and forth would leave float32-rounded filters in a float64 transform.
    return copy.deepcopy(_dwt_module_float64(ndim, wave, levels, mode)).to(device=device, dtype=dtype)


def dwt_max_level(size: int, wave: str) -> int:
    r"""
    Deepest useful DWT level for a signal length and wavelet, as `pywt.dwt_max_level`.

    Args:
        size (`int`): the signal length along the shortest transformed axis.
        wave (`str`): a PyWavelets discrete wavelet name (`"haar"`, `"bior1.3"`, `"db2"`, ...).

    Returns:
        `int`: `floor(log2(size / (filter_length - 1)))`, 0 if the signal is shorter than the filter.
    """
    import pywt

    return pywt.dwt_max_level(size, pywt.Wavelet(wave).dec_len)


def check_dwt_arguments(x: torch.Tensor, wave: str, levels: int, mode: str) -> None:
    """Raise `ValueError` for an unknown wavelet or mode, `levels < 1` or a signal too short for `levels`."""
    import pywt

    if wave not in pywt.wavelist(kind="discrete"):
        raise ValueError(f"Unknown wavelet {wave!r}; expected a PyWavelets discrete wavelet, e.g. 'haar', 'bior1.3'.")
    if mode not in DWT_MODES:
        raise ValueError(f"Unknown DWT mode {mode!r}; allowed values are {DWT_MODES}.")
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"`levels` must be an integer >= 1, got {levels!r}.")
    size = min(x.shape[d] for d in spectral_dims(x))
    max_level = dwt_max_level(size, wave)
    if levels > max_level:
        raise ValueError(
            f"A {levels}-level {wave!r} DWT needs a longer signal: for size {size} the maximum level is {max_level} "
            "(pywt.dwt_max_level)."
        )


def _haar_dwt(x: torch.Tensor, levels: int, ndim: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Haar DWT of sides divisible by `2**levels` from sums and differences of neighbours, in pytorch_wavelets'
    output layout (`low`, `highs[level - 1]`, 2-D details stacked `(cH, cV, cD)` in dim 2).

    With a length-2 filter and even sides no boundary sample is ever read, so every padding mode gives these
    coefficients, equal to PyWavelets' (`cA = (x0 + x1)/√2`, `cD = (x0 - x1)/√2` per axis); a few elementwise
    operations instead of pytorch_wavelets' padded strided convolutions, several times faster on the CPU."""
    highs = []
    low = x
    if ndim == 1:
        scale = 2.0**-0.5
        for _ in range(levels):
            even, odd = low[..., 0::2], low[..., 1::2]
            highs.append((even - odd) * scale)
            low = (even + odd) * scale
        return low, highs
    for _ in range(levels):
        top_left, top_right = low[..., 0::2, 0::2], low[..., 0::2, 1::2]
        bottom_left, bottom_right = low[..., 1::2, 0::2], low[..., 1::2, 1::2]
        top, bottom = top_left + top_right, bottom_left + bottom_right
        left_minus_right = (top_left - top_right) + (bottom_left - bottom_right)
        diagonal = (top_left - top_right) - (bottom_left - bottom_right)
        # pywt cH (highpass along H), cV (highpass along W), cD (both)
        highs.append(torch.stack([(top - bottom) * 0.5, left_minus_right * 0.5, diagonal * 0.5], dim=2))
        low = (top + bottom) * 0.5
    return low, highs


def dwt(
    x: torch.Tensor, wave: str = "haar", levels: int = 3, mode: str = "zero"
) -> list[tuple[str, int, torch.Tensor]]:
    r"""
    Multi-level separable discrete wavelet transform (pytorch_wavelets), with named subbands.

    The coefficients equal PyWavelets' `pywt.wavedec2(x, wave, mode, levels, axes=(-2, -1))` for images and
    `pywt.wavedec(x, wave, mode, levels)` for waveforms. Subband names (see `DWT_SUBBANDS_2D` for the mapping to
    PyWavelets' `cH, cV, cD`): images give `("LL", levels)` plus `("LH", l)`, `("HL", l)`, `("HH", l)` for every level
    `l = 1..levels` (1 is the finest); waveforms give `("L", levels)` plus `("H", l)`. Computed in float32 (float64 for
    float64 input) with autocast disabled, on the input's device.

    Args:
        x (`torch.Tensor`): `[B, C, H, W]` or `[B, C, T]`.
        wave (`str`, *optional*, defaults to `"haar"`): PyWavelets wavelet name (`"haar"`, `"bior1.3"`, `"db2"`, ...).
        levels (`int`, *optional*, defaults to 3): number of decomposition levels, at least 1 and at most
            `pywt.dwt_max_level` for the shortest signal axis.
        mode (`str`, *optional*, defaults to `"zero"`): boundary padding, one of `DWT_MODES`.

    Returns:
        `list[tuple[str, int, torch.Tensor]]`: `(name, level, coefficients)`, coarsest approximation first, then the
        details from the coarsest level to the finest (PyWavelets' order). Image coefficients are `[B, C, h_l, w_l]`,
        waveform coefficients `[B, C, t_l]`.
    """
    ndim = len(spectral_dims(x))
    check_dwt_arguments(x, wave, levels, mode)
    dtype = compute_dtype(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        if wave == "haar" and all(x.shape[d] % 2**levels == 0 for d in spectral_dims(x)):
            low, highs = _haar_dwt(x.to(dtype), levels, ndim)
        else:
            module = _dwt_module(ndim, wave, levels, mode, x.device, dtype)
            low, highs = module(x.to(dtype))
    if ndim == 2:
        bands = [("LL", levels, low)]
        for level in range(levels, 0, -1):
            # pytorch_wavelets stacks (cH, cV, cD) in dim 2 of yh[level - 1], level 1 first
            high = highs[level - 1]
            bands.extend((name, level, high[:, :, k]) for k, name in enumerate(DWT_SUBBANDS_2D))
    else:
        bands = [("L", levels, low)]
        bands.extend(("H", level, highs[level - 1]) for level in range(levels, 0, -1))
    return bands


@functools.lru_cache(maxsize=32)
def _window_cpu(window: str, win_length: int) -> torch.Tensor:
    functions = {
        "hann": torch.hann_window,
        "hamming": torch.hamming_window,
        "blackman": torch.blackman_window,
        "bartlett": torch.bartlett_window,
    }
    return functions[window](win_length, periodic=True, dtype=torch.float64)


def stft(x: torch.Tensor, n_fft: int, hop_length: int, win_length: int, window: str = "hann") -> torch.Tensor:
    r"""
    Short-time Fourier transform of waveforms, the one STFT of this package (losses and metrics call it).

    Centered frames with reflect padding (`torch.stft(center=True)`), a periodic window, computed in float32 (float64
    for float64 input) with autocast disabled.

    Args:
        x (`torch.Tensor`): `[B, T]` or `[B, C, T]`; channels are folded into the batch.
        n_fft (`int`): FFT size.
        hop_length (`int`): hop between frames, in samples.
        win_length (`int`): window length, at most `n_fft`.
        window (`str`, *optional*, defaults to `"hann"`): one of `STFT_WINDOWS` (periodic windows).

    Returns:
        `torch.Tensor`: complex `[B', n_fft // 2 + 1, frames]` with `B' = B` or `B * C`.
    """
    if x.ndim not in (2, 3):
        raise ValueError(f"Expected a waveform batch of shape [B, T] or [B, C, T], got {list(x.shape)}.")
    if window not in STFT_WINDOWS:
        raise ValueError(f"Unknown window {window!r}; allowed values are {STFT_WINDOWS}.")
    if not 0 < win_length <= n_fft or hop_length < 1:
        raise ValueError(
            f"Need 0 < win_length <= n_fft and hop_length >= 1, got n_fft={n_fft}, hop_length={hop_length}, "
            f"win_length={win_length}."
        )
    length = x.shape[-1]
    if length <= n_fft // 2:
        raise ValueError(f"Waveforms of length {length} are too short for n_fft={n_fft}: need T > {n_fft // 2}.")
    dtype = compute_dtype(x)
    frames = x.reshape(-1, length).to(dtype)
    win = _window_cpu(window, win_length).to(device=x.device, dtype=dtype)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return torch.stft(
            frames, n_fft=n_fft, hop_length=hop_length, win_length=win_length, window=win, return_complex=True
        )


def stft_magnitude(
    x: torch.Tensor, n_fft: int, hop_length: int, win_length: int, window: str = "hann"
) -> torch.Tensor:
    r"""
    Magnitude `|STFT(x)|` of [`stft`], with a zero gradient (not NaN) where a bin is exactly zero.

    Returns:
        `torch.Tensor`: real `[B', n_fft // 2 + 1, frames]` with `B' = B` or `B * C`.
    """
    return safe_abs(stft(x, n_fft, hop_length, win_length, window))


def safe_abs(z: torch.Tensor) -> torch.Tensor:
    r"""
    `|z|` of a complex tensor whose gradient is 0 (not NaN) where `z = 0` (double-`torch.where` trick).

    Args:
        z (`torch.Tensor`): complex tensor, any shape.

    Returns:
        `torch.Tensor`: real tensor of the same shape.
    """
    power = z.real.square() + z.imag.square()
    nonzero = power > 0
    return torch.where(nonzero, torch.sqrt(torch.where(nonzero, power, torch.ones_like(power))), 0.0)


def safe_angle(z: torch.Tensor) -> torch.Tensor:
    r"""
    `angle(z)` in `(-π, π]` whose value and gradient are 0 where `z = 0` (double-`torch.where` trick).

    Args:
        z (`torch.Tensor`): complex tensor, any shape.

    Returns:
        `torch.Tensor`: real tensor of the same shape.
    """
    nonzero = (z.real != 0) | (z.imag != 0)
    real = torch.where(nonzero, z.real, torch.ones_like(z.real))
    # adding +0.0 turns a -0.0 imaginary part into +0.0, so a negative real number has angle +π, never -π
    imag = torch.where(nonzero, z.imag, torch.zeros_like(z.imag)) + 0.0
    return torch.where(nonzero, torch.atan2(imag, real), 0.0)


class _BoundedPhaseDifference(torch.autograd.Function):
    """angle(X conj(Y)) whose backward divides by |X conj(Y)|² + eps·|X|² instead of |X conj(Y)|²."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, damping: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z, damping)
        return safe_angle(z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, damping = ctx.saved_tensors
        # d angle(z) = Im(dz / z) = Im(conj(z) dz) / |z|²; PyTorch's gradient of a real loss wrt a complex input is
        # ∂L/∂Re + i ∂L/∂Im, which for angle is g·i·z/|z|². The damping term bounds it where |z| → 0.
        power = z.real.square() + z.imag.square()
        return grad * 1j * z / (power + damping), None


def wrapped_phase_difference(x: torch.Tensor, y: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    r"""
    Phase difference `φ_x - φ_y` wrapped to `(-π, π]`, computed as `angle(X conj(Y))` so that no branch cut of the
    individual phases enters (arXiv 2603.02447 notes that raw phases are unstable because of branch cuts).

    Where either spectrum is exactly zero the difference (and its gradient) is 0, as `np.angle(0) = 0`.

    The exact gradient of a phase with respect to `Y` has magnitude `1/|Y|`: a prediction whose spectrum is nearly
    zero somewhere (an all-zero start, a strongly blurred x̂₀) gets enormous or non-finite gradients there. With
    `eps > 0` the backward pass divides by `|X conj(Y)|² + eps·|X|²` instead of `|X conj(Y)|²`, which bounds the
    gradient with respect to `Y` by `1/(2√eps)` per frequency, whatever the target's amplitude, and leaves it
    unchanged (to relative order `eps/|Y|²`) where `|Y|² ≫ eps`. The value is always the exact wrapped difference.

    Args:
        x (`torch.Tensor`): complex spectrum (the target), any shape.
        y (`torch.Tensor`): complex spectrum of the same shape (the prediction).
        eps (`float`, defaults to 0.0): gradient damping, in units of the squared amplitude of `y`; 0 gives the
            exact gradient.

    Returns:
        `torch.Tensor`: real tensor of the same shape.
    """
    z = x * torch.conj(y)
    if eps <= 0.0:
        return safe_angle(z)
    power_x = x.real.square() + x.imag.square()
    damping = (eps * power_x).detach() + torch.finfo(power_x.dtype).tiny
    return _BoundedPhaseDifference.apply(z, damping)


# ---------------------------------------------------------------------------------------------------------------
# Discrete cosine transform (DCT-II, orthonormal), full-image and JPEG-style 8x8 blocks
# ---------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _dct_matrix(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r"""
    The orthonormal DCT-II matrix `D[k, i] = s_k cos(π (2i + 1) k / (2n))`, `s_0 = sqrt(1/n)`, `s_k = sqrt(2/n)`.

    `D @ x` is `scipy.fft.dct(x, type=2, norm="ortho")`; `D` is orthogonal, so its inverse (the DCT-III) is `D.T`.
    Built in float64 and cast, cached per `(n, dtype, device)`.
    """
    i = torch.arange(n, dtype=torch.float64)
    k = i[:, None]
    matrix = torch.cos(torch.pi * (2 * i[None, :] + 1) * k / (2 * n)) * (2.0 / n) ** 0.5
    matrix[0] /= 2**0.5
    return matrix.to(dtype=dtype, device=device)


def _check_2d(x: torch.Tensor, what: str) -> None:
    if x.ndim < 2:
        raise ValueError(f"{what} needs a tensor with at least 2 dimensions [..., H, W], got shape {list(x.shape)}.")


def dct2(x: torch.Tensor) -> torch.Tensor:
    r"""
    Orthonormal 2-D DCT-II over the last two dimensions, `D_H x D_W^T`, as `scipy.fft.dctn(x, type=2,
    norm="ortho", axes=(-2, -1))`.

    The DCT of Spectrum Matching (arXiv 2603.14645): coefficient `[u, v]` is the frequency `(u, v)` in half cycles
    per image, DC at `[0, 0]`. Orthonormal, so `sum X^2 = sum x^2`. Computed in float32 (float64 for float64 input)
    with autocast off; differentiable.

    Args:
        x (`torch.Tensor`): `[..., H, W]`.

    Returns:
        `torch.Tensor`: the coefficients, `[..., H, W]`.
    """
    _check_2d(x, "dct2")
    dtype = compute_dtype(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(dtype)
        d_h = _dct_matrix(x.shape[-2], dtype, x.device)
        d_w = _dct_matrix(x.shape[-1], dtype, x.device)
        return d_h @ x @ d_w.T


def idct2(coefficients: torch.Tensor) -> torch.Tensor:
    r"""
    Inverse of `dct2` (the orthonormal 2-D DCT-III), `D_H^T X D_W`; `idct2(dct2(x)) == x` up to rounding.

    Args:
        coefficients (`torch.Tensor`): `[..., H, W]` DCT-II coefficients.

    Returns:
        `torch.Tensor`: `[..., H, W]`.
    """
    _check_2d(coefficients, "idct2")
    dtype = compute_dtype(coefficients)
    with torch.autocast(device_type=coefficients.device.type, enabled=False):
        coefficients = coefficients.to(dtype)
        d_h = _dct_matrix(coefficients.shape[-2], dtype, coefficients.device)
        d_w = _dct_matrix(coefficients.shape[-1], dtype, coefficients.device)
        return d_h.T @ coefficients @ d_w


def _check_blocks(x: torch.Tensor, block: int, what: str) -> tuple[int, int]:
    _check_2d(x, what)
    if block < 1:
        raise ValueError(f"{what}: block must be >= 1, got {block}.")
    height, width = x.shape[-2:]
    if height % block or width % block:
        raise ValueError(
            f"{what}: the size {height}x{width} is not a multiple of the {block}x{block} block; use sizes divisible "
            f"by {block}."
        )
    return height // block, width // block


def _to_blocks(x: torch.Tensor, block: int, rows: int, cols: int) -> torch.Tensor:
    """`[..., H, W]` -> `[..., H/b, W/b, b, b]` (block `[i, j]` is `x[..., i*b:(i+1)*b, j*b:(j+1)*b]`)."""
    return x.reshape(*x.shape[:-2], rows, block, cols, block).transpose(-3, -2)


def _from_blocks(blocks: torch.Tensor) -> torch.Tensor:
    """Inverse of `_to_blocks`."""
    rows, cols, block = blocks.shape[-4], blocks.shape[-3], blocks.shape[-1]
    return blocks.transpose(-3, -2).reshape(*blocks.shape[:-4], rows * block, cols * block)


def block_dct2(x: torch.Tensor, block: int = 8) -> torch.Tensor:
    r"""
    Orthonormal 2-D DCT-II of each non-overlapping `block x block` tile (JPEG-style), laid out in place: the
    coefficients of the tile at rows `[i*b, (i+1)*b)` and columns `[j*b, (j+1)*b)` occupy the same rows and columns.

    Used by Decoding Spectrum Matching (arXiv 2603.14645, 8x8 blocks as in the authors' code).

    Args:
        x (`torch.Tensor`): `[..., H, W]`, `H` and `W` multiples of `block` (else `ValueError`).
        block (`int`, defaults to 8): the tile size.

    Returns:
        `torch.Tensor`: `[..., H, W]`, tile-wise coefficients (`[..., i*b + u, j*b + v]` is frequency `(u, v)` of
        tile `(i, j)`).
    """
    rows, cols = _check_blocks(x, block, "block_dct2")
    return _from_blocks(dct2(_to_blocks(x, block, rows, cols)))


def block_idct2(coefficients: torch.Tensor, block: int = 8) -> torch.Tensor:
    r"""
    Inverse of `block_dct2`: the 2-D DCT-III of each `block x block` tile.

    Args:
        coefficients (`torch.Tensor`): `[..., H, W]` tile-wise coefficients, `H` and `W` multiples of `block`.
        block (`int`, defaults to 8): the tile size.

    Returns:
        `torch.Tensor`: `[..., H, W]`.
    """
    rows, cols = _check_blocks(coefficients, block, "block_idct2")
    return _from_blocks(idct2(_to_blocks(coefficients, block, rows, cols)))
