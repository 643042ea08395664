"""Sampling pipeline for spectrally anisotropic Gaussian diffusion (SAGD, arXiv 2510.09660).

A SAGD model is an ordinary ε-prediction DDPM whose forward noise is coloured, ε_w = T_w ξ ~ N(0, Σ_w) with
Σ_w = F⁻¹ Diag(|w|²) F. Its sampler is the usual DDPM / DDIM sampler with the initial x_T **and every injected
noise** drawn from N(0, Σ_w) instead of N(0, I) (papers.md §2). The DDPM posterior q(x_{t-1} | x_t, x_0) of the
coloured process is N(μ̃_t, β̃_t Σ_w) with the same mean μ̃_t (Eq. 7 of arXiv 2006.11239), so only the noise
changes: prev = μ̃_t + σ_t T_w ξ.

Stock `DDPMPipeline` / `DDIMPipeline` draw white noise and so sample such a model wrongly. The noise spectrum is
therefore part of the pipeline config: `SAGDPipeline(unet, scheduler, noise_spectrum={"kind": "powerlaw", "alpha": -0.5,
"eps": None})` writes
`"noise_spectrum"` and a `"sagd_note"` into `model_index.json`, `from_pretrained` passes them back, and a stock
`DDPMPipeline.from_pretrained` / `DDIMPipeline.from_pretrained` of the folder logs Diffusers' own warning
"The config attributes {...} were passed to DDPMPipeline, but are not expected and will be ignored", whose text
includes the note ("... Stock DDPMPipeline/DDIMPipeline draw white noise and sample it wrongly."). The keys live in
`model_index.json` and not in the scheduler config on purpose: `DDPMScheduler` itself would warn about unknown keys
whenever it loads, also inside this pipeline, while only the pipeline class reads `model_index.json`.

How to load a saved folder (written by `diffusers_specreg.pipelines_io.save_pipeline`, which copies this file
beside the weights as `pipeline.py` and writes `"_class_name": ["pipeline", "SAGDPipeline"]` into `model_index.json`):

```py
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("path/to/folder", trust_remote_code=True)  # or a Hub repo id "user/repo"
images = pipe(batch_size=4, num_inference_steps=1000).images
```

This file imports only `torch` and `diffusers`: the spectrum is stored in `model_index.json` in its dict form
(`{"kind": "powerlaw", "alpha": -0.5, "eps": null}`), from which `spectrum_weights` computes w, and
[`ColouredNoise`] applies it. `diffusers_specreg.noise.NoiseSpectrum` (parsing, validation, string forms) imports both
from here, so each formula has one home. Diffusers (0.42) refuses custom code without `trust_remote_code=True`, even
from a local folder.
"""

import functools

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    ImagePipelineOutput,
    UNet2DModel,
)
from diffusers.schedulers.scheduling_ddpm import DDPMSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

OUTPUT_TYPES = ("pil", "np", "pt")
DDPM_VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "learned_range")

SAGD_NOTE = (
    "This model was trained with spectrally anisotropic (coloured) forward noise, SAGD arXiv 2510.09660, see "
    "noise_spectrum. Sample it with DiffusionPipeline.from_pretrained(<folder or repo id>, trust_remote_code=True), "
    "which loads the SAGDPipeline of the folder's pipeline.py. Stock DDPMPipeline/DDIMPipeline draw white noise and "
    "sample it wrongly."
)


SPECTRUM_KINDS = ("white", "powerlaw", "band", "bandpass", "weights")
SPECTRUM_EXAMPLE = "{'kind': 'powerlaw', 'alpha': -0.5, 'eps': None}"


@functools.lru_cache(maxsize=64)
def radial_frequency_grid(shape: tuple[int, ...]) -> torch.Tensor:
    r"""
    Radial frequency r = √(Σ_d f_d²) of every bin of the full FFT grid (`torch.fft.fftn` order, DC at index 0), with
    f_d = `fftfreq(n_d)` in cycles per sample (an axis' Nyquist frequency is 0.5). The one implementation of the
    radial grid: `diffusers_specreg.transforms.radial_frequency` serves it to the library.

    Args:
        shape (`tuple[int, ...]`): `(H, W)` or `(T,)`.

    Returns:
        `torch.Tensor` of shape `shape`, float64 on the CPU (cached: do not modify it in place).
    """
    freqs = [torch.fft.fftfreq(n, dtype=torch.float64) for n in shape]
    return torch.sqrt(sum(grid**2 for grid in torch.meshgrid(*freqs, indexing="ij")))


@functools.lru_cache(maxsize=32)
def spectrum_radius(shape: tuple[int, ...]) -> torch.Tensor:
    """The radial grid normalised to max 1 (the grid corner, (0.5, 0.5) for even sizes): the scale of the band edges
    and the power law of SAGD spectra. Float64 on the CPU, cached."""
    radius = radial_frequency_grid(shape)
    return radius / radius.max()


def band_mask(radius: torch.Tensor, band: tuple[float, float]) -> torch.Tensor:
    """M_[a,b]: `a <= r < b`, and r = 1 itself when b = 1, so adjacent bands partition the grid exactly."""
    low, high = band
    mask = (radius >= low) & (radius < high)
    if high >= 1.0:
        mask |= radius >= 1.0
    return mask


def band_profile(radius: torch.Tensor, spectrum: dict) -> torch.Tensor:
    """w = Σ γ_k M_[a_k,b_k] of a `"band"` (γ = 1) or `"bandpass"` (γ_l, 1 − γ_l) spectrum, unnormalised."""
    if spectrum["kind"] == "band":
        bands = [(spectrum["band"], 1.0)]
    else:
        bands = [(spectrum["low"], spectrum["gamma_low"]), (spectrum["high"], 1.0 - spectrum["gamma_low"])]
    weight = torch.zeros_like(radius)
    for band, gamma in bands:
        weight = weight + gamma * band_mask(radius, tuple(band)).to(radius.dtype)
    return weight


def spectrum_weights(spectrum: dict, shape: tuple[int, ...]) -> torch.Tensor:
    r"""
    The SAGD amplitudes w over the full FFT grid of `shape`, normalised to mean |w|² = 1 (unit variance per element,
    so DDPM/DDIM schedules keep their meaning).

    Args:
        spectrum (`dict`):
            The dict form of a spectrum (`diffusers_specreg.noise.NoiseSpectrum.to_dict`): `{"kind": "white"}`,
            `{"kind": "powerlaw", "alpha": α, "eps": ε or None}` (w = (r + ε)^α, ε defaults to the smallest nonzero
            radius), `{"kind": "band", "band": [a, b]}` (w = M_[a,b]), `{"kind": "bandpass", "low": [a, b],
            "high": [c, d], "gamma_low": γ}` (w = γ M_low + (1 − γ) M_high) or `{"kind": "weights", "weights": w}`.
        shape (`tuple[int, ...]`): signal shape `(H, W)` or `(T,)`.

    Returns:
        `torch.Tensor` of shape `shape`, float64 on the CPU.
    """
    kind = spectrum.get("kind") if isinstance(spectrum, dict) else None
    if kind not in SPECTRUM_KINDS:
        raise ValueError(f"Expected a noise spectrum dict such as {SPECTRUM_EXAMPLE}, kinds {list(SPECTRUM_KINDS)}.")
    shape = tuple(int(n) for n in shape)
    if kind == "white":
        return torch.ones(shape, dtype=torch.float64)
    if kind == "weights":
        weights = torch.as_tensor(spectrum["weights"], dtype=torch.float64)
        if tuple(weights.shape) != shape:
            raise ValueError(
                f"These noise weights were given for signal shape {tuple(weights.shape)}, got signal shape {shape}."
            )
    else:
        radius = spectrum_radius(shape)
        if kind == "powerlaw":
            # 1. w_α(f) = (r(f) + ε)^α, SAGD power-law weights (arXiv 2510.09660), in the log domain so that a large
            #    |α| cannot overflow before the normalisation.
            eps = spectrum.get("eps")
            eps = float(radius[radius > 0].min()) if eps is None else eps
            log_w = spectrum["alpha"] * torch.log(radius + eps)
            weights = torch.exp(log_w - log_w.max())
        else:
            # 2. band masks M_[a,b] and the mix w = γ_l M_low + γ_h M_high of ε_w = γ_l ε_low + γ_h ε_high.
            for key in ("band", "low", "high"):
                if key in spectrum and not band_mask(radius, tuple(spectrum[key])).any():
                    raise ValueError(
                        f"Band {tuple(spectrum[key])} contains no frequency of the grid for signal shape {shape} (its "
                        f"nonzero normalised radii start at {float(radius[radius > 0].min()):.4g}); widen the band"
                    )
            weights = band_profile(radius, spectrum)
    power = (weights**2).mean()
    if not torch.isfinite(weights).all() or not power > 0:
        raise ValueError(f"The noise spectrum {spectrum} gives non-finite or all-zero weights on signal shape {shape}")
    # 3. unit variance per element: diag(Σ_w) = mean |w|² = 1 (Σ_w is circulant).
    return weights / power.sqrt()


class ColouredNoise:
    r"""
    The coloured-noise operator of SAGD (arXiv 2510.09660) for one signal shape: T_w = F⁻¹ Diag(w) F with the
    orthonormal DFT F over the signal dims, its covariance Σ_w = T_w² = F⁻¹ Diag(|w|²) F and inverse.

    Args:
        weights (`torch.Tensor` of shape `[H, W]` or `[T]`):
            Real, non-negative amplitudes w, symmetric in frequency, in `torch.fft.fftn` order (see
            [`spectrum_weights`]). Constant weights (white noise) make every method return its input unchanged.
    """

    def __init__(self, weights: torch.Tensor):
        self.weights = torch.as_tensor(weights).detach().to(device="cpu", dtype=torch.float64)
        self.signal_shape = tuple(self.weights.shape)
        self.is_white = bool((self.weights == self.weights.flatten()[0]).all())
        self._multipliers: dict[tuple, torch.Tensor] = {}

    def _multiplier(self, which: str, pseudo_inverse: bool, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (which, pseudo_inverse, str(device), dtype)
        if key not in self._multipliers:
            weights = self.weights.to(device=device, dtype=dtype)
            if which == "w":
                multiplier = weights
            elif which == "cov":
                multiplier = weights**2
            else:
                power = weights**2
                zero = power == 0
                if zero.any() and not pseudo_inverse:
                    raise ValueError(
                        f"Σ_w is singular on signal shape {self.signal_shape}: {int(zero.sum())} of {zero.numel()} "
                        "frequencies have |w|² = 0 (a band mix with gaps, or eps = 0 with alpha > 0), so Σ_w⁻¹ does "
                        "not exist. Use a powerlaw spectrum (eps > 0) or a band mix covering [0, 1] such as "
                        "'bandpass:low=0-0.5,high=0.5-1,gamma_low=0.7', or pass `pseudo_inverse=True` for the "
                        "Moore-Penrose inverse (the score projected onto range(Σ_w), arXiv 2510.09660)."
                    )
                multiplier = torch.where(zero, torch.zeros_like(power), 1.0 / torch.where(zero, 1.0, power))
            # Real, symmetric multipliers: the half spectrum of rfftn holds all the information.
            self._multipliers[key] = multiplier[..., : self.signal_shape[-1] // 2 + 1].contiguous()
        return self._multipliers[key]

    def _apply(self, x: torch.Tensor, which: str, pseudo_inverse: bool = False) -> torch.Tensor:
        """F⁻¹ Diag(m) F x over the signal dims of `x` `[B, C, *signal_shape]`, m = w, |w|² or |w|⁻²."""
        if not isinstance(x, torch.Tensor) or x.ndim != 2 + len(self.signal_shape):
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"Expected a tensor of shape [B, C, {', '.join(map(str, self.signal_shape))}], got {got}."
            )
        if tuple(x.shape[2:]) != self.signal_shape:
            raise ValueError(
                f"These noise weights fit signals of shape {self.signal_shape}: expected a tensor of shape "
                f"[B, C, {', '.join(map(str, self.signal_shape))}], got {tuple(x.shape)}."
            )
        if self.is_white:
            return x
        # FFTs run in float32 under fp16/bf16 (cuFFT has no bf16).
        compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        multiplier = self._multiplier(which, pseudo_inverse, x.device, compute_dtype)
        dims = tuple(range(2, x.ndim))
        spectrum = torch.fft.rfftn(x.to(compute_dtype), dim=dims, norm="ortho")
        return torch.fft.irfftn(spectrum * multiplier, s=self.signal_shape, dim=dims, norm="ortho").to(x.dtype)

    def color(self, xi: torch.Tensor) -> torch.Tensor:
        """ε_w = T_w ξ for white noise ξ `[B, C, *signal_shape]` (same shape and dtype)."""
        return self._apply(xi, "w")

    def sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | list[torch.Generator] | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        r"""
        Draw ε_w = T_w ξ ~ N(0, Σ_w), ξ drawn by Diffusers' `randn_tensor` (a list of generators seeds each batch
        element); with white weights the result equals `randn_tensor(shape, generator=generator, dtype=dtype)`.

        Args:
            shape (`tuple[int, ...]`): `[B, C, *signal_shape]`.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): draws ξ.
            device (`str` or `torch.device`, *optional*): defaults to the generator's device, else the CPU.
            dtype (`torch.dtype`, defaults to `torch.float32`): dtype of ξ and of the result.
        """
        if device is None:
            first = generator[0] if isinstance(generator, list) and generator else generator
            device = first.device if isinstance(first, torch.Generator) else torch.device("cpu")
        xi = randn_tensor(tuple(shape), generator=generator, device=torch.device(device), dtype=dtype)
        return self.color(xi)

    def covariance(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_w x = F⁻¹ Diag(|w|²) F x over the signal dims (same shape and dtype)."""
        return self._apply(x, "cov")

    def inverse_covariance(self, x: torch.Tensor, pseudo_inverse: bool = False) -> torch.Tensor:
        """Σ_w⁻¹ x; where some |w|² = 0, `pseudo_inverse=False` raises ValueError and `True` uses the Moore-Penrose
        inverse (zero on the null space of Σ_w)."""
        return self._apply(x, "inv", pseudo_inverse)


PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


def predicted_original_sample(
    sample: torch.Tensor, model_output: torch.Tensor, alpha_prod_t: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    r"""
    The clean sample x̂_0 a variance-preserving model predicts at x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (white or coloured ε).

    Args:
        sample (`torch.Tensor` of shape `[B, C, ...]`): x_t.
        model_output (`torch.Tensor` of shape `[B, C, ...]`): ε̂, x̂_0 or v̂.
        alpha_prod_t (`torch.Tensor`, broadcastable to `sample`): ᾱ_t (one per sample, or a scalar).
        prediction_type (`str`): `"epsilon"`, `"sample"` or `"v_prediction"`.

    Returns:
        `torch.Tensor` of the sample's shape (the operations and their order are those of `DDPMScheduler.step`).
    """
    beta_prod_t = 1 - alpha_prod_t
    if prediction_type == "epsilon":
        # x̂_0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t, Eq. 15 of arXiv 2006.11239
        return (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
    if prediction_type == "v_prediction":
        # x̂_0 = √ᾱ_t x_t − √(1 − ᾱ_t) v̂, v-parametrisation of arXiv 2202.00512
        return (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"prediction_type must be one of {list(PREDICTION_TYPES)}, got {prediction_type!r}.")


def ddpm_step_with_noise(
    scheduler: DDPMScheduler,
    model_output: torch.Tensor,
    timestep: int | torch.Tensor,
    sample: torch.Tensor,
    variance_noise: torch.Tensor | None,
) -> DDPMSchedulerOutput:
    r"""
    One ancestral DDPM step x_t -> x_{t-1} with caller-supplied unit noise, i.e. `DDPMScheduler.step` with its
    internally drawn white noise replaced by `variance_noise` (SAGD passes coloured noise ε_w ~ N(0, Σ_w)). With the
    white noise that `DDPMScheduler.step` would draw, the result is identical to it.

    Args:
        scheduler ([`DDPMScheduler`]):
            Supplies ᾱ_t, the previous timestep, the variance and clipping / thresholding settings.
        model_output (`torch.Tensor` of shape `[B, C, H, W]`, or `[B, 2C, H, W]` for `"learned_range"`):
            Network output at `timestep` (ε̂, x̂_0 or v̂ depending on `scheduler.config.prediction_type`).
        timestep (`int` or `torch.Tensor`):
            Current timestep t, one of `scheduler.timesteps`.
        sample (`torch.Tensor` of shape `[B, C, H, W]`):
            Current sample x_t.
        variance_noise (`torch.Tensor` of shape `[B, C, H, W]`, *optional*):
            Unit-variance noise to scale by the step's standard deviation; required when t > 0, unused at t = 0.

    Returns:
        [`DDPMSchedulerOutput`] with `prev_sample` x_{t-1} and `pred_original_sample` x̂_0, shapes `[B, C, H, W]`.
    """
    variance_type = scheduler.config.variance_type
    if variance_type not in DDPM_VARIANCE_TYPES:
        raise ValueError(
            f"SAGD DDPM sampling supports variance_type in {list(DDPM_VARIANCE_TYPES)}, got {variance_type!r}."
        )
    t = timestep
    prev_t = scheduler.previous_timestep(t)
    predicted_variance = None
    if variance_type == "learned_range":
        if model_output.shape[1] != 2 * sample.shape[1]:
            raise ValueError(
                f"variance_type 'learned_range' needs a model output of shape [B, 2C, H, W] = "
                f"[{sample.shape[0]}, {2 * sample.shape[1]}, ...], got {tuple(model_output.shape)}."
            )
        model_output, predicted_variance = torch.split(model_output, sample.shape[1], dim=1)

    # 1. ᾱ_t, ᾱ_{t-1}, β_t (the operations and their order are those of DDPMScheduler.step, for bitwise equality).
    alpha_prod_t = scheduler.alphas_cumprod[t]
    alpha_prod_t_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.one
    beta_prod_t = 1 - alpha_prod_t
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    current_alpha_t = alpha_prod_t / alpha_prod_t_prev
    current_beta_t = 1 - current_alpha_t

    # 2. predicted x_0, Eq. 15 of arXiv 2006.11239 (x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε_w holds for coloured ε_w too).
    pred_original_sample = predicted_original_sample(
        sample, model_output, alpha_prod_t, scheduler.config.prediction_type
    )
    if scheduler.config.thresholding:
        pred_original_sample = scheduler._threshold_sample(pred_original_sample)
    elif scheduler.config.clip_sample:
        clip = scheduler.config.clip_sample_range
        pred_original_sample = pred_original_sample.clamp(-clip, clip)

    # 3. posterior mean μ̃_t(x_t, x̂_0), Eq. 7 of arXiv 2006.11239.
    pred_original_sample_coeff = (alpha_prod_t_prev ** (0.5) * current_beta_t) / beta_prod_t
    current_sample_coeff = current_alpha_t ** (0.5) * beta_prod_t_prev / beta_prod_t
    pred_prev_sample = pred_original_sample_coeff * pred_original_sample + current_sample_coeff * sample

    # 4. x_{t-1} = μ̃_t + σ_t ε with ε ~ N(0, Σ_w): the posterior covariance of the coloured process is σ_t² Σ_w.
    if t > 0:
        if variance_noise is None:
            raise ValueError("variance_noise is required for t > 0.")
        if variance_noise.shape != pred_prev_sample.shape:
            raise ValueError(
                f"variance_noise must have the sample's shape {tuple(pred_prev_sample.shape)}, "
                f"got {tuple(variance_noise.shape)}."
            )
        variance = scheduler._get_variance(t, predicted_variance=predicted_variance)
        if variance_type == "fixed_small_log":
            std = variance  # `_get_variance` already returns exp(½ log β̃_t) for this type
        elif variance_type == "learned_range":
            std = torch.exp(0.5 * variance)  # interpolated log variance, Eq. 15 of arXiv 2102.09672
        else:
            std = variance**0.5
        pred_prev_sample = pred_prev_sample + std * variance_noise

    return DDPMSchedulerOutput(prev_sample=pred_prev_sample, pred_original_sample=pred_original_sample)


class SAGDPipeline(DiffusionPipeline):
    r"""
    Unconditional image generation for a model trained with spectrally anisotropic forward noise (arXiv 2510.09660).

    Parameters:
        unet ([`UNet2DModel`]):
            The noise (or sample / v) predictor.
        scheduler ([`DDPMScheduler`] or [`DDIMScheduler`]):
            DDPM: ancestral sampling with coloured noise in every step. DDIM: coloured `variance_noise` in every
            step when `eta > 0` (with `eta = 0` only x_T is coloured).
        noise_spectrum (`dict`, defaults to `{"kind": "white"}`):
            The training noise spectrum w in its dict form, e.g. `{"kind": "powerlaw", "alpha": -0.5, "eps": None}`
            (see [`spectrum_weights`]; `diffusers_specreg.noise.NoiseSpectrum.parse("powerlaw:alpha=-0.5")` makes
            one from the command-line form, and is accepted here too). Stored in the pipeline config
            (`model_index.json`). White noise makes this pipeline sample exactly like `DDPMPipeline` / `DDIMPipeline`.
        sagd_note (`str`, *optional*):
            Ignored. For a coloured spectrum the pipeline writes a fixed explanatory note under this key so that
            stock pipelines print it when they load the folder; the argument exists so that loading it back with this
            class raises no "unexpected config attribute" warning.
    """

    model_cpu_offload_seq = "unet"

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: DDPMScheduler | DDIMScheduler,
        noise_spectrum: dict | None = None,
        sagd_note: str | None = None,
    ):
        super().__init__()
        if not isinstance(scheduler, (DDPMScheduler, DDIMScheduler)):
            raise ValueError(
                f"SAGDPipeline supports the schedulers DDPMScheduler, DDIMScheduler, got {type(scheduler).__name__}."
            )
        if hasattr(noise_spectrum, "to_dict"):  # a diffusers_specreg NoiseSpectrum
            noise_spectrum = noise_spectrum.to_dict()
        if noise_spectrum is None or noise_spectrum == "white":
            noise_spectrum = {"kind": "white"}
        sample_size = unet.config.sample_size
        signal_shape = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
        # the weights are checked on the UNet's grid now, not at the first sample
        self._noise = ColouredNoise(spectrum_weights(noise_spectrum, signal_shape))
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(noise_spectrum=noise_spectrum)
        if not self._noise.is_white:
            self.register_to_config(sagd_note=SAGD_NOTE)

    @property
    def noise(self) -> ColouredNoise:
        """The coloured-noise operator of `self.config.noise_spectrum` on the UNet's grid."""
        return self._noise

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        eta: float = 1.0,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generate images with x_T and every injected noise drawn from N(0, Σ_w).

        Args:
            batch_size (`int`, defaults to `1`):
                Number of images to generate.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Random generator(s) for all noise draws; a list holds one per image. The draws happen in the same
                order and with the same shapes as in `DDPMPipeline` / `DDIMPipeline`.
            num_inference_steps (`int`, defaults to `1000`):
                Number of denoising steps.
            eta (`float`, defaults to `1.0`):
                DDIM only: stochasticity in [0, 1] (0 deterministic DDIM, 1 DDPM-like). Ignored with a DDPMScheduler.
            output_type (`str`, defaults to `"pil"`):
                `"pil"` (list of `PIL.Image`), `"np"` (`np.ndarray` of shape `[B, H, W, C]`) or `"pt"`
                (`torch.Tensor` of shape `[B, C, H, W]`), values in [0, 1].
            return_dict (`bool`, defaults to `True`):
                Return an [`ImagePipelineOutput`] instead of a tuple.

        Returns:
            [`ImagePipelineOutput`] or `tuple`: the generated images (first element of the tuple).
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {list(OUTPUT_TYPES)}, got {output_type!r}.")
        if batch_size < 1 or num_inference_steps < 1:
            raise ValueError(
                f"batch_size and num_inference_steps must be >= 1, got {batch_size} and {num_inference_steps}."
            )
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1] (0: DDIM, 1: DDPM-like), got {eta}.")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"Got a list of {len(generator)} generators for batch_size {batch_size}; expected one each."
            )

        sample_size = self.unet.config.sample_size
        if isinstance(sample_size, int):
            sample_size = (sample_size, sample_size)
        shape = (batch_size, self.unet.config.in_channels, *sample_size)
        device = self._execution_device
        is_ddim = isinstance(self.scheduler, DDIMScheduler)

        # 1. x_T ~ N(0, Σ_w) instead of N(0, I) (SAGD sampling, arXiv 2510.09660).
        image = self._noise.sample(shape, generator=generator, device=device, dtype=self.unet.dtype)

        self.scheduler.set_timesteps(num_inference_steps)
        for t in self.progress_bar(self.scheduler.timesteps):
            model_output = self.unet(image, t).sample
            if is_ddim:
                # 2. DDIM, Eq. 12 of arXiv 2010.02502, with the σ_t-scaled noise drawn from N(0, Σ_w).
                noise = None
                if eta > 0:
                    noise = self._noise.sample(
                        model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
                    )
                image = self.scheduler.step(model_output, t, image, eta=eta, variance_noise=noise).prev_sample
            else:
                # 3. ancestral DDPM step, Eq. 7 of arXiv 2006.11239, posterior noise drawn from N(0, Σ_w).
                noise = None
                if t > 0:
                    noise = self._noise.sample(
                        image.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
                    )
                image = ddpm_step_with_noise(self.scheduler, model_output, t, image, noise).prev_sample

        # 4. data in [-1, 1] -> images in [0, 1], as DDPMPipeline.
        image = (image / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            image = image.cpu().permute(0, 2, 3, 1).float().numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (image,)
        return ImagePipelineOutput(images=image)
