"""Spectrally anisotropic Gaussian noise for diffusion training and sampling (SAGD, arXiv 2510.09660).

The forward noise of a diffusion model is usually white, ε ~ N(0, I). SAGD replaces it by coloured noise with a
frequency-diagonal covariance:

    T_w = F⁻¹ Diag(w) F,    ε_w = T_w ξ with ξ ~ N(0, I),    Σ_w = Cov(ε_w) = F⁻¹ Diag(|w|²) F,

with F the orthonormal DFT over the signal dims (2-D `[H, W]` for images, 1-D `[T]` for waveforms). The forward
process stays Gaussian, q_w(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) Σ_w), the training loss is unchanged ε-prediction MSE
with target ε_w, and a sampler draws x_T and every injected noise from N(0, Σ_w) instead of N(0, I).

Conventions of this module (the paper leaves them open):

- Radius. For a signal shape `(H, W)` the frequencies of the full FFT grid are `f_y = fftfreq(H)`,
  `f_x = fftfreq(W)` (cycles per sample) and the radius is `r = sqrt(f_y² + f_x²) / max(sqrt(f_y² + f_x²))`: it is
  normalised so that the largest radius on the grid (the corner, `(0.5, 0.5)` for even sizes) is 1. For `(T,)` it is
  `|fftfreq(T)| / max|fftfreq(T)|`, so 1 is the Nyquist frequency. Every band edge lives on this `[0, 1]` scale.
- Normalisation. Every spectrum is scaled so that the mean of |w|² over the full FFT grid is 1. Because Σ_w is
  circulant its diagonal equals that mean, so the noise has unit variance per element and DDPM/DDIM schedules keep
  their meaning (papers.md, "Our decisions").
- Real noise. Weights are real, non-negative and symmetric in frequency (w(f) = w(−f)), so T_w maps real signals to
  real signals. Radial spectra are symmetric by construction; user weights are checked (see
  [`NoiseSpectrum.from_weights`]).
- Band masks. M_[a,b] keeps the frequencies with `a <= r < b` (and `r = 1` itself when `b = 1`), so adjacent bands
  such as `[0, 0.5)` and `[0.5, 1]` partition the grid exactly.

String forms (parsed by [`NoiseSpectrum.parse`], written by [`NoiseSpectrum.to_string`]):

    white                                       ε_w = ξ (the default; identical to `torch.randn`)
    powerlaw:alpha=-0.5                         w(f) = (r(f) + eps)^alpha, eps = smallest nonzero radius
    powerlaw:alpha=-0.5,eps=0.01                same with an explicit eps
    band:0-0.5                                  w = M_[0,0.5]
    bandpass:low=0-0.25,high=0.5-1,gamma_low=0.7
                                                w = 0.7 M_[0,0.25] + 0.3 M_[0.5,1]
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from .pipeline_kernels import ColouredNoise, band_profile, spectrum_weights

__all__ = [
    "SPECTRA",
    "BandSpectrum",
    "BandpassSpectrum",
    "NoiseSpectrum",
    "PowerLawSpectrum",
    "WeightsSpectrum",
    "WhiteSpectrum",
    "corrupt_band",
]

VALID_FORMS = (
    "'white', 'powerlaw:alpha=A[,eps=E]' (e.g. 'powerlaw:alpha=-0.5' or 'powerlaw:alpha=0.5,eps=0.01'), "
    "'band:a-b' (e.g. 'band:0-0.5') or 'bandpass:low=a-b,high=c-d,gamma_low=g' "
    "(e.g. 'bandpass:low=0-0.25,high=0.5-1,gamma_low=0.7'), with 0 <= a < b <= 1 on the normalised radius and "
    "0 <= g <= 1"
)

_FLOAT = r"[+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_RANGE_RE = re.compile(rf"^\s*({_FLOAT})\s*-\s*({_FLOAT})\s*$")


def _error(message: str) -> ValueError:
    return ValueError(f"{message}. Valid noise spectra: {VALID_FORMS}.")


def _format_float(value: float) -> str:
    # `repr` round-trips exactly through `float()`; drop a trailing ".0" for readability.
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _format_band(band: tuple[float, float]) -> str:
    return f"{_format_float(band[0])}-{_format_float(band[1])}"


def _parse_float(text: str, name: str, form: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _error(f"{name}={text!r} is not a number in {form!r}") from None
    return value


def _parse_range(text: str, name: str, form: str) -> tuple[float, float]:
    match = _RANGE_RE.match(text)
    if match is None:
        raise _error(f"{name}={text!r} in {form!r} is not a band 'a-b' such as '0-0.5'")
    return float(match.group(1)), float(match.group(2))


def _parse_params(body: str, kind: str, allowed: tuple[str, ...], form: str) -> dict[str, str]:
    """`"key=value,key=value"` -> `{key: value}`, keys lower-cased, each at most once and in `allowed`."""
    params: dict[str, str] = {}
    for item in body.split(","):
        key, eq, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not eq or not key or not value:
            raise _error(f"{item.strip()!r} in {form!r} is not a 'key=value' pair")
        if key in params:
            raise _error(f"{key!r} is given twice in {form!r}")
        params[key] = value
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise _error(f"Unknown keys {unknown} for {kind!r} in {form!r}; allowed keys are {list(allowed)}")
    return params


def _check_band(band: Sequence[float], name: str) -> tuple[float, float]:
    try:
        if isinstance(band, (str, bytes)) or len(band) != 2:
            raise TypeError
        low, high = float(band[0]), float(band[1])
    except (TypeError, ValueError):
        raise _error(f"{name}={band!r} is not a pair of numbers (a, b)") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low < 0.0 or high > 1.0:
        raise _error(f"{name}=({low}, {high}) lies outside [0, 1], the range of the normalised radius")
    if low >= high:
        raise _error(f"{name}=({low}, {high}) is empty: a band 'a-b' needs a < b")
    return low, high


def _signal_dims(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (1, 2) or any(s < 1 for s in shape):
        raise ValueError(f"Signal shape must be (H, W) for images or (T,) for waveforms, got {shape}.")
    if math.prod(shape) < 2:
        raise ValueError(f"Signal shape {shape} has a single element, so it has no nonzero frequency.")
    return shape


def _mirror(weights: torch.Tensor) -> torch.Tensor:
    """w(−f) on the full FFT grid: index k goes to (−k) mod n along every dim."""
    dims = tuple(range(weights.ndim))
    return torch.roll(torch.flip(weights, dims=dims), shifts=(1,) * weights.ndim, dims=dims)


# The parse registry: kind -> class, filled by `NoiseSpectrum.__init_subclass__`.
SPECTRA: dict[str, type[NoiseSpectrum]] = {}


class NoiseSpectrum:
    r"""
    The spectrum w of spectrally anisotropic forward noise ε_w = F⁻¹ Diag(w) F ξ (SAGD, arXiv 2510.09660).

    One small immutable class per kind ([`WhiteSpectrum`], [`PowerLawSpectrum`], [`BandSpectrum`],
    [`BandpassSpectrum`], [`WeightsSpectrum`]), registered in `SPECTRA` under its `kind`. Each holds only its
    parameters and knows its string form ([`~NoiseSpectrum.parse`], [`~NoiseSpectrum.to_string`]), its dict form
    ([`~NoiseSpectrum.from_dict`], [`~NoiseSpectrum.to_dict`], which the saved `SAGDPipeline` reads) and whether it is
    white or singular. The weights come from `spectrum_weights` and the noise from the coloured-noise operator
    `ColouredNoise` of `pipelines/pipeline_sagd.py` (colour, sample, covariance, inverse), cached per signal shape.
    Build spectra with the constructors [`~NoiseSpectrum.white`], [`~NoiseSpectrum.powerlaw`],
    [`~NoiseSpectrum.band`], [`~NoiseSpectrum.bandpass`] and [`~NoiseSpectrum.from_weights`].

    Every spectrum is normalised to mean |w|² = 1 over the grid, so the noise has unit variance per element.
    """

    kind: ClassVar[str] = ""
    keys: ClassVar[tuple[str, ...]] = ()  # the parameters of the dict form

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:  # a kind of its own, not a shared base such as `_BandMix`
            SPECTRA[cls.kind] = cls

    def __new__(cls, *args, **kwargs):
        if cls is NoiseSpectrum:
            raise TypeError(
                "NoiseSpectrum is the base of the spectrum kinds; build one with NoiseSpectrum.parse(...), .white(), "
                ".powerlaw(...), .band(...), .bandpass(...), .from_weights(...) or .from_dict(...)."
            )
        return super().__new__(cls)

    def _freeze(self) -> None:
        # Set last: once `_cache` exists, `__setattr__` refuses changes.
        object.__setattr__(self, "_cache", {})

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "_cache"):
            raise AttributeError("NoiseSpectrum is immutable.")
        object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ constructors

    @staticmethod
    def white() -> WhiteSpectrum:
        """White noise, w = 1 (the ordinary DDPM noise)."""
        return WhiteSpectrum()

    @staticmethod
    def powerlaw(alpha: float, eps: float | None = None) -> PowerLawSpectrum:
        """Power-law spectrum w(f) = (r(f) + eps)^alpha; see [`PowerLawSpectrum`]."""
        return PowerLawSpectrum(alpha, eps)

    @staticmethod
    def band(low: float, high: float) -> BandSpectrum:
        """Noise confined to the radial band [low, high) of the normalised radius (w = M_[low,high])."""
        return BandSpectrum((low, high))

    @staticmethod
    def bandpass(low: tuple[float, float], high: tuple[float, float], gamma_low: float) -> BandpassSpectrum:
        """Band mix ε_w = γ_l ε_low + (1 − γ_l) ε_high; see [`BandpassSpectrum`]."""
        return BandpassSpectrum(low, high, gamma_low)

    @staticmethod
    def from_weights(weights: torch.Tensor | Sequence, symmetrize: bool = False) -> WeightsSpectrum:
        """User-supplied amplitudes over the full FFT grid of one signal shape; see [`WeightsSpectrum`]."""
        return WeightsSpectrum(weights, symmetrize=symmetrize)

    @staticmethod
    def parse(text: str) -> NoiseSpectrum:
        """
        Parse the string form, e.g. `"white"`, `"powerlaw:alpha=-0.5"`, `"powerlaw:alpha=0.5,eps=0.01"`,
        `"band:0-0.5"` or `"bandpass:low=0-0.25,high=0.5-1,gamma_low=0.7"`. Kinds and keys are case-insensitive;
        spaces are ignored. Malformed strings raise ValueError naming the valid forms.
        """
        if not isinstance(text, str):
            raise _error(f"Expected a noise spectrum string, got {type(text).__name__}")
        kind, sep, body = text.strip().partition(":")
        kind, body = kind.strip().lower(), body.strip()
        cls = SPECTRA.get(kind)
        if cls is None or cls is WeightsSpectrum:
            raise _error(f"Unknown noise spectrum kind {kind!r} in {text!r}")
        if cls is not WhiteSpectrum and not body:
            raise _error(f"{text!r} is missing the parameters of {kind!r}")
        return cls._parse(body if sep else "", text)

    @staticmethod
    def from_dict(config: dict[str, Any]) -> NoiseSpectrum:
        """Inverse of [`~NoiseSpectrum.to_dict`]. Unknown or missing keys raise ValueError."""
        if not isinstance(config, dict) or "kind" not in config:
            raise _error(f"Expected a dict with a 'kind' key, got {config!r}")
        kind = config["kind"]
        cls = SPECTRA.get(kind)
        if cls is None:
            raise _error(f"Unknown noise spectrum kind {kind!r}; allowed kinds are {list(SPECTRA)}")
        unknown = sorted(set(config) - {"kind", *cls.keys})
        if unknown:
            raise _error(f"Unknown keys {unknown} for kind {kind!r}; allowed keys are {['kind', *cls.keys]}")
        return cls(**{key: config.get(key) for key in cls.keys})

    @staticmethod
    def resolve(spectrum: NoiseSpectrum | str | dict[str, Any] | None) -> NoiseSpectrum:
        """Accept a `NoiseSpectrum`, its string form, its dict form or `None` (white); return a `NoiseSpectrum`."""
        if spectrum is None:
            return WhiteSpectrum()
        if isinstance(spectrum, NoiseSpectrum):
            return spectrum
        if isinstance(spectrum, str):
            return NoiseSpectrum.parse(spectrum)
        if isinstance(spectrum, dict):
            return NoiseSpectrum.from_dict(spectrum)
        raise _error(f"Cannot make a noise spectrum from {type(spectrum).__name__}")

    # ------------------------------------------------------------------ per kind

    @classmethod
    def _parse(cls, body: str, form: str) -> NoiseSpectrum:
        """The spectrum of the string form `form` whose parameters (after `kind:`) are `body`."""
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        """The parameters of the dict form (JSON-serialisable)."""
        return {}

    def to_string(self) -> str:
        """The string form read by [`~NoiseSpectrum.parse`]."""
        raise NotImplementedError

    @property
    def is_white(self) -> bool:
        """Whether w is constant, so ε_w = ξ exactly on every grid (`sample` and `color` then return white noise)."""
        raise NotImplementedError

    @property
    def is_singular(self) -> bool:
        """Whether w vanishes somewhere on [0, 1], so Σ_w is singular on grids with a frequency there and
        `apply_inverse_covariance` needs `pseudo_inverse=True`."""
        raise NotImplementedError

    @property
    def signal_shape(self) -> tuple[int, ...] | None:
        """The only signal shape the spectrum fits (user weights), else `None` (radial spectra fit any shape)."""
        return None

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict, e.g. `{"kind": "powerlaw", "alpha": -0.5, "eps": None}`."""
        return {"kind": self.kind, **self._params()}

    def _spec(self) -> dict[str, Any]:
        """The dict form that `spectrum_weights` reads."""
        return self.to_dict()

    def __repr__(self) -> str:
        return f"NoiseSpectrum({self.to_string()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NoiseSpectrum):
            return NotImplemented
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_string())

    # ------------------------------------------------------------------ weights and noise

    def weights(
        self,
        shape: Sequence[int],
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        r"""
        The normalised amplitudes w over the full FFT grid (`torch.fft.fftn` order, DC at index 0).

        Args:
            shape (`tuple[int, ...]`):
                Signal shape `(H, W)` or `(T,)`.
            device (`str` or `torch.device`, *optional*):
                Device of the result (CPU by default).
            dtype (`torch.dtype`, defaults to `torch.float32`):
                Real dtype of the result.

        Returns:
            `torch.Tensor` of shape `shape`, real, non-negative, symmetric, with mean(w²) = 1. Cached per
            (shape, device, dtype); do not modify it in place.
        """
        shape = _signal_dims(shape)
        device = torch.device(device) if device is not None else torch.device("cpu")
        key = ("w", shape, str(device), dtype)
        if key not in self._cache:
            try:
                weights = spectrum_weights(self._spec(), shape)
            except ValueError as error:
                raise _error(str(error).rstrip(".")) from None
            self._cache[key] = weights.to(device=device, dtype=dtype)
        return self._cache[key]

    def operator(self, signal_shape: Sequence[int]) -> ColouredNoise:
        """The coloured-noise operator T_w (colour, sample, covariance, inverse) on one signal grid; cached."""
        signal_shape = _signal_dims(signal_shape)
        key = ("operator", signal_shape)
        if key not in self._cache:
            self._cache[key] = ColouredNoise(self.weights(signal_shape, dtype=torch.float64))
        return self._cache[key]

    def _check_input(self, x: torch.Tensor) -> tuple[int, ...]:
        """Validate a `[B, C, H, W]` / `[B, C, T]` real tensor and return its signal shape."""
        if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"Expected a tensor of shape [B, C, H, W] (images) or [B, C, T] (waveforms), got {shape}."
            )
        if x.is_complex() or not x.is_floating_point():
            raise ValueError(f"Expected a real floating-point tensor, got dtype {x.dtype}.")
        signal = tuple(x.shape[2:])
        if self.signal_shape is not None and signal != self.signal_shape:
            raise ValueError(
                f"These noise weights fit signals of shape {self.signal_shape}: expected a tensor of shape "
                f"[B, C, {', '.join(map(str, self.signal_shape))}], got {tuple(x.shape)}."
            )
        return signal

    def _spectral_multiply(self, x: torch.Tensor, which: str, pseudo_inverse: bool = False) -> torch.Tensor:
        """Apply F⁻¹ Diag(m) F to `x` over its signal dims, m = w, |w|² or |w|⁻² (`which`: "w", "cov", "inv")."""
        operator = self.operator(self._check_input(x))
        if which == "w":
            return operator.color(x)
        if which == "cov":
            return operator.covariance(x)
        return operator.inverse_covariance(x, pseudo_inverse=pseudo_inverse)

    # ------------------------------------------------------------------ noise and covariance

    def color(self, xi: torch.Tensor) -> torch.Tensor:
        r"""
        Apply T_w = F⁻¹ Diag(w) F to white noise (for samplers that already drew ξ ~ N(0, I)).

        Args:
            xi (`torch.Tensor` of shape `[B, C, H, W]` or `[B, C, T]`):
                White noise (or any real signal).

        Returns:
            `torch.Tensor` of the same shape and dtype: ε_w = T_w ξ. For white spectra `xi` itself is returned.
        """
        return self._spectral_multiply(xi, "w")

    def sample(
        self,
        shape: Sequence[int],
        generator: torch.Generator | list[torch.Generator] | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        r"""
        Draw ε_w = T_w ξ ~ N(0, Σ_w).

        Args:
            shape (`tuple[int, ...]`):
                `[B, C, H, W]` (images) or `[B, C, T]` (waveforms).
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Draws ξ, as Diffusers' `randn_tensor` does (a list seeds each batch element). With a white spectrum
                the result equals `torch.randn(shape, generator=generator, dtype=dtype)` exactly.
            device (`str` or `torch.device`, *optional*):
                Device of the result; defaults to the generator's device, else CPU.
            dtype (`torch.dtype`, defaults to `torch.float32`):
                Dtype of ξ and of the result (the FFT runs in float32 for half precisions).

        Returns:
            `torch.Tensor` of shape `shape` with unit variance per element and covariance Σ_w over the signal dims.
        """
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (3, 4):
            raise ValueError(f"Expected a noise shape [B, C, H, W] (images) or [B, C, T] (waveforms), got {shape}.")
        if self.signal_shape is not None and shape[2:] != self.signal_shape:
            raise ValueError(
                f"These noise weights fit signals of shape {self.signal_shape}: expected a tensor of shape "
                f"[B, C, {', '.join(map(str, self.signal_shape))}], got {shape}."
            )
        return self.operator(shape[2:]).sample(shape, generator=generator, device=device, dtype=dtype)

    def apply_covariance(self, x: torch.Tensor) -> torch.Tensor:
        r"""
        Σ_w x = F⁻¹ Diag(|w|²) F x over the signal dims.

        Args:
            x (`torch.Tensor` of shape `[B, C, H, W]` or `[B, C, T]`): the input.

        Returns:
            `torch.Tensor` of the same shape and dtype.
        """
        return self._spectral_multiply(x, "cov")

    def apply_inverse_covariance(self, x: torch.Tensor, pseudo_inverse: bool = False) -> torch.Tensor:
        r"""
        Σ_w⁻¹ x = F⁻¹ Diag(|w|⁻²) F x over the signal dims.

        Args:
            x (`torch.Tensor` of shape `[B, C, H, W]` or `[B, C, T]`): the input.
            pseudo_inverse (`bool`, defaults to `False`):
                Where some |w|² = 0 (a singular Σ_w), `False` raises ValueError and `True` uses the Moore-Penrose
                inverse (zero on the null space of Σ_w).

        Returns:
            `torch.Tensor` of the same shape and dtype.
        """
        return self._spectral_multiply(x, "inv", pseudo_inverse=pseudo_inverse)

    def score_from_epsilon(
        self, eps_hat: torch.Tensor, sigma_t: float | torch.Tensor, pseudo_inverse: bool = False
    ) -> torch.Tensor:
        r"""
        Score of the anisotropic forward marginal from an ε-prediction: ∇ log q_t(x_t) = −Σ_w⁻¹ ε̂ / σ_t
        (arXiv 2510.09660), with σ_t = √(1 − ᾱ_t) for DDPM.

        Args:
            eps_hat (`torch.Tensor` of shape `[B, C, H, W]` or `[B, C, T]`):
                Predicted coloured noise E[ε_w | x_t].
            sigma_t (`float` or `torch.Tensor` of shape `[]` or `[B]`):
                Noise standard deviation at the timestep, > 0.
            pseudo_inverse (`bool`, defaults to `False`):
                For a singular Σ_w, return the score projected onto range(Σ_w) instead of raising.

        Returns:
            `torch.Tensor` of the same shape as `eps_hat`.
        """
        # 4. score relation ∇ log q_t = −(1/σ_t) Σ_w⁻¹ E[ε_w | x_t], arXiv 2510.09660.
        sigma = torch.as_tensor(sigma_t, device=eps_hat.device, dtype=eps_hat.dtype)
        if sigma.ndim == 1:
            if sigma.shape[0] != eps_hat.shape[0]:
                raise ValueError(
                    f"sigma_t must have shape [] or [B] = [{eps_hat.shape[0]}], got {tuple(sigma.shape)}."
                )
            sigma = sigma.reshape(-1, *([1] * (eps_hat.ndim - 1)))
        elif sigma.ndim != 0:
            raise ValueError(f"sigma_t must have shape [] or [B] = [{eps_hat.shape[0]}], got {tuple(sigma.shape)}.")
        return -self.apply_inverse_covariance(eps_hat, pseudo_inverse=pseudo_inverse) / sigma


class WhiteSpectrum(NoiseSpectrum):
    """White noise, w = 1: ε_w = ξ (the default; identical to `torch.randn`). String form `"white"`."""

    kind = "white"

    def __init__(self) -> None:
        self._freeze()

    @classmethod
    def _parse(cls, body: str, form: str) -> WhiteSpectrum:
        if body:
            raise _error(f"'white' takes no parameters, got {form!r}")
        return cls()

    def to_string(self) -> str:
        return "white"

    is_white = True
    is_singular = False


class PowerLawSpectrum(NoiseSpectrum):
    r"""
    Power-law spectrum w(f) = (r(f) + eps)^alpha, SAGD's w_α (arXiv 2510.09660). String form
    `"powerlaw:alpha=A[,eps=E]"`.

    Args:
        alpha (`float`):
            Exponent. alpha < 0 puts the noise energy in low frequencies, alpha > 0 in high ones, alpha = 0 is white
            noise. The power spectrum |w|² then falls off as r^(2 alpha): its RAPSD slope in log-log is 2 alpha
            (for r >> eps).
        eps (`float`, *optional*):
            Offset, >= 0. `None` (the default) uses the smallest nonzero normalised radius of the grid, so the DC
            weight stays finite for alpha < 0 and positive for alpha > 0 (Σ_w positive definite). eps = 0 is allowed
            only for alpha >= 0 (it then zeroes the DC weight for alpha > 0: Σ_w singular).
    """

    kind = "powerlaw"
    keys = ("alpha", "eps")

    def __init__(self, alpha: float, eps: float | None = None) -> None:
        if alpha is None:
            raise _error("Kind 'powerlaw' needs ['alpha']")
        alpha = float(alpha)
        if not math.isfinite(alpha):
            raise _error(f"alpha={alpha} is not finite in 'powerlaw:alpha=A[,eps=E]'")
        if eps is not None:
            eps = float(eps)
            if not math.isfinite(eps) or eps < 0.0:
                raise _error(f"eps={eps} must be a finite number >= 0 in 'powerlaw:alpha=A[,eps=E]'")
            if eps == 0.0 and alpha < 0.0:
                raise _error(
                    f"alpha={alpha} < 0 with eps=0 makes the DC weight (0 + eps)^alpha infinite; "
                    "use eps > 0 or leave eps out (default: the smallest nonzero radius)"
                )
        self.alpha, self.eps = alpha, eps
        self._freeze()

    @classmethod
    def _parse(cls, body: str, form: str) -> PowerLawSpectrum:
        params = _parse_params(body, cls.kind, cls.keys, form)
        if "alpha" not in params:
            raise _error(f"{form!r} is missing alpha")
        eps = _parse_float(params["eps"], "eps", form) if "eps" in params else None
        return cls(_parse_float(params["alpha"], "alpha", form), eps)

    def _params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "eps": self.eps}

    def to_string(self) -> str:
        text = f"powerlaw:alpha={_format_float(self.alpha)}"
        return text if self.eps is None else f"{text},eps={_format_float(self.eps)}"

    @property
    def is_white(self) -> bool:
        return self.alpha == 0.0

    @property
    def is_singular(self) -> bool:
        return self.eps == 0.0 and self.alpha > 0.0


class _BandMix(NoiseSpectrum):
    """A mix w = Σ γ_k M_[a_k,b_k] of radial band masks (`bands`, `gammas`)."""

    bands: tuple[tuple[float, float], ...]
    gammas: tuple[float, ...]

    def _profile_values(self) -> torch.Tensor:
        """The weight at every radius where it can change: it is piecewise constant and right-continuous in r,
        with jumps only at band edges (and at r = 1, which the last band includes), so these are all its values."""
        edges = sorted({0.0, 1.0, *(edge for band in self.bands for edge in band)})
        return band_profile(torch.tensor(edges, dtype=torch.float64), self._spec())

    @property
    def is_white(self) -> bool:
        profile = self._profile_values()
        return bool(profile[0] > 0) and bool((profile == profile[0]).all())

    @property
    def is_singular(self) -> bool:
        return bool((self._profile_values() == 0).any())


class BandSpectrum(_BandMix):
    """Noise confined to a radial band (a, b), 0 <= a < b <= 1: w = M_[a,b]. String form `"band:a-b"`."""

    kind = "band"
    keys = ("band",)

    def __init__(self, band: tuple[float, float]) -> None:
        if band is None:
            raise _error("Kind 'band' needs ['band']")
        self.bands, self.gammas = (_check_band(band, "band"),), (1.0,)
        self._freeze()

    @classmethod
    def _parse(cls, body: str, form: str) -> BandSpectrum:
        return cls(_parse_range(body, "band", form))

    def _params(self) -> dict[str, Any]:
        return {"band": list(self.bands[0])}

    def to_string(self) -> str:
        return f"band:{_format_band(self.bands[0])}"


class BandpassSpectrum(_BandMix):
    r"""
    Band mix ε_w = γ_l ε_[a_l,b_l] + γ_h ε_[a_h,b_h], γ_h = 1 − γ_l, both band noises coloured from the same ξ, i.e.
    w = γ_l M_low + γ_h M_high before normalisation (γ sets the amplitude per frequency; a band's share of the energy
    also depends on how many frequencies it holds, and γ_l = 0.5 with complementary bands is white). String form
    `"bandpass:low=a-b,high=c-d,gamma_low=g"`.

    Args:
        low (`tuple[float, float]`): low band (a_l, b_l).
        high (`tuple[float, float]`): high band (a_h, b_h).
        gamma_low (`float`): mixing weight γ_l in [0, 1].
    """

    kind = "bandpass"
    keys = ("low", "high", "gamma_low")

    def __init__(self, low: tuple[float, float], high: tuple[float, float], gamma_low: float) -> None:
        missing = [key for key, value in zip(self.keys, (low, high, gamma_low)) if value is None]
        if missing:
            raise _error(f"Kind 'bandpass' needs {missing}")
        try:
            gamma_low = float(gamma_low)
        except (TypeError, ValueError):
            raise _error(f"gamma_low={gamma_low!r} is not a number") from None
        if not math.isfinite(gamma_low) or not 0.0 <= gamma_low <= 1.0:
            raise _error(f"gamma_low={gamma_low} lies outside [0, 1] (gamma_high = 1 - gamma_low)")
        self.bands = (_check_band(low, "low"), _check_band(high, "high"))
        self.gammas = (gamma_low, 1.0 - gamma_low)
        self._freeze()

    @classmethod
    def _parse(cls, body: str, form: str) -> BandpassSpectrum:
        params = _parse_params(body, cls.kind, cls.keys, form)
        missing = [key for key in cls.keys if key not in params]
        if missing:
            raise _error(f"{form!r} is missing {missing}")
        return cls(
            low=_parse_range(params["low"], "low", form),
            high=_parse_range(params["high"], "high", form),
            gamma_low=_parse_float(params["gamma_low"], "gamma_low", form),
        )

    def _params(self) -> dict[str, Any]:
        return {"low": list(self.bands[0]), "high": list(self.bands[1]), "gamma_low": self.gammas[0]}

    def to_string(self) -> str:
        low, high = _format_band(self.bands[0]), _format_band(self.bands[1])
        return f"bandpass:low={low},high={high},gamma_low={_format_float(self.gammas[0])}"


class WeightsSpectrum(NoiseSpectrum):
    r"""
    User-supplied amplitudes over the full FFT grid of one signal shape. It has no string form: store `to_dict()`.

    Args:
        weights (`torch.Tensor` or nested list):
            Real, finite, non-negative amplitudes w of shape `[H, W]` (images) or `[T]` (waveforms), in
            `torch.fft.fftn` order (DC at index 0, not shifted). They are rescaled to mean |w|² = 1. The spectrum then
            only fits signals of exactly that shape.
        symmetrize (`bool`, defaults to `False`):
            Real noise needs w(f) = w(−f). With `False` asymmetric weights raise ValueError; with `True` they are
            replaced by sqrt((w(f)² + w(−f)²) / 2), which keeps the mean power.
    """

    kind = "weights"
    keys = ("weights",)

    def __init__(self, weights: torch.Tensor | Sequence, symmetrize: bool = False) -> None:
        if weights is None:
            raise _error("Kind 'weights' needs ['weights']")
        tensor = weights if isinstance(weights, torch.Tensor) else torch.tensor(weights, dtype=torch.float64)
        if tensor.is_complex():
            raise ValueError("Noise weights must be real amplitudes |w| >= 0, got a complex tensor.")
        tensor = tensor.detach().to(device="cpu", dtype=torch.float64).clone()
        if tensor.ndim not in (1, 2):
            raise ValueError(
                f"Noise weights must have shape [H, W] (images) or [T] (waveforms), got {tuple(tensor.shape)}."
            )
        if symmetrize:
            tensor = torch.sqrt((tensor**2 + _mirror(tensor) ** 2) / 2)
        _signal_dims(tensor.shape)
        if not torch.isfinite(tensor).all():
            raise ValueError("Noise weights must be finite.")
        if (tensor < 0).any():
            raise ValueError("Noise weights must be non-negative amplitudes |w|.")
        if not (tensor > 0).any():
            raise ValueError("Noise weights are all zero: the noise would vanish.")
        if not torch.allclose(tensor, _mirror(tensor), rtol=1e-6, atol=1e-12 * float(tensor.abs().max())):
            raise ValueError(
                "Noise weights must be symmetric in frequency, w(f) = w(-f) (index k and (-k) mod n along every "
                "dim), or the coloured noise would not be real; pass `symmetrize=True` to symmetrise them."
            )
        self.user_weights = tensor
        self._freeze()

    def _params(self) -> dict[str, Any]:
        return {"weights": self.user_weights.tolist()}

    def _spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "weights": self.user_weights}

    def to_string(self) -> str:
        raise ValueError("A spectrum from user weights has no string form; store `to_dict()` instead.")

    def __repr__(self) -> str:
        return f"NoiseSpectrum(weights of shape {tuple(self.user_weights.shape)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NoiseSpectrum):
            return NotImplemented
        return isinstance(other, WeightsSpectrum) and torch.equal(self.user_weights, other.user_weights)

    def __hash__(self) -> int:
        return hash((self.kind, tuple(self.user_weights.shape)))

    @property
    def signal_shape(self) -> tuple[int, ...]:
        return tuple(self.user_weights.shape)

    @property
    def is_white(self) -> bool:
        return bool((self.user_weights == self.user_weights.flatten()[0]).all())

    @property
    def is_singular(self) -> bool:
        return bool((self.user_weights == 0).any())


def corrupt_band(
    x: torch.Tensor,
    band: tuple[float, float],
    strength: float = 1.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> torch.Tensor:
    r"""
    Add Gaussian noise confined to a radial frequency band, for the "selective omission" experiment of SAGD
    (arXiv 2510.09660): data corrupted in [a_c, b_c] and forward noise with no support there.

    Args:
        x (`torch.Tensor` of shape `[B, C, H, W]` or `[B, C, T]`):
            Clean signals.
        band (`tuple[float, float]`):
            (a, b) with 0 <= a < b <= 1 on the normalised radius (see the module docstring).
        strength (`float`, defaults to `1.0`):
            Standard deviation per element of the added noise (>= 0); the band noise has unit variance per element
            before this scaling.
        generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
            Random generator(s) for reproducible corruption.

    Returns:
        `torch.Tensor` of the same shape, device and dtype: x + strength · ε_[a,b].
    """
    strength = float(strength)
    if not math.isfinite(strength) or strength < 0:
        raise ValueError(f"strength must be a finite number >= 0, got {strength}.")
    if x.ndim not in (3, 4):
        raise ValueError(
            f"Expected a tensor of shape [B, C, H, W] (images) or [B, C, T] (waveforms), got {tuple(x.shape)}."
        )
    spectrum = BandSpectrum(band)
    noise = spectrum.sample(tuple(x.shape), generator=generator, device=x.device, dtype=x.dtype)
    return x + strength * noise
