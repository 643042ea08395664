"""Tests for the sampling pipelines (`pipelines/`, installed as `diffusers_specreg.pipelines`) and `pipelines_io`.

Tiny real `UNet2DModel`s (16×16, widths (8, 16)) saved into `tmp_path`; nothing touches the network.
"""

import ast
import importlib.util
import json
import logging
import math
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DiffusionPipeline,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    UNet2DModel,
)
from diffusers.models.unets.unet_2d import UNet2DOutput
from diffusers.utils.torch_utils import randn_tensor

ROOT = pathlib.Path(__file__).resolve().parents[1]
try:
    import diffusers_specreg.pipelines  # noqa: F401
except ModuleNotFoundError:
    # Not pip-installed: `pip install -e .` maps pipelines/ to diffusers_specreg.pipelines (pyproject package-dir);
    # map it the same way so the tests also run from a plain checkout.
    _spec = importlib.util.spec_from_file_location(
        "diffusers_specreg.pipelines",
        ROOT / "pipelines" / "__init__.py",
        submodule_search_locations=[str(ROOT / "pipelines")],
    )
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _module
    _spec.loader.exec_module(_module)

from conftest import diffusers_log  # noqa: E402

from diffusers_specreg.noise import NoiseSpectrum  # noqa: E402
from diffusers_specreg.pipelines import ColouredNoise, EDMPipeline, SAGDPipeline, ddpm_step_with_noise  # noqa: E402
from diffusers_specreg.pipelines.pipeline_sagd import SAGD_NOTE  # noqa: E402
from diffusers_specreg.pipelines_io import save_pipeline, write_custom_pipeline_file  # noqa: E402

DYNAMIC_MODULE = "diffusers_modules.local.pipeline"
SPECTRUM = "powerlaw:alpha=-0.5"
COLOURED = NoiseSpectrum.parse(SPECTRUM)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    # Two threads on two shared cores make a tiny UNet forward ~100x slower; restore the setting afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_dynamic_module():
    # Diffusers imports every local `pipeline.py` as the same module; start and end each test without it.
    sys.modules.pop(DYNAMIC_MODULE, None)
    yield
    sys.modules.pop(DYNAMIC_MODULE, None)


def tiny_unet(channels: int = 1, out_channels: int | None = None, **kwargs) -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=16,
        in_channels=channels,
        out_channels=out_channels or channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        **kwargs,
    ).eval()


def assert_same_after_reload(actual: np.ndarray, expected: np.ndarray):
    # Weights loaded from safetensors are memory-mapped with another alignment, so CPU convolutions may pick other
    # kernels and differ in the last bits: compare reloaded pipelines with a float32 tolerance, not bitwise.
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)


def run(pipe: DiffusionPipeline, seed: int = 0, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    return pipe(generator=torch.Generator().manual_seed(seed), **kwargs).images


def top_level_packages(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import in {path.name}"
            names.add(node.module.split(".")[0])
    return names


# ---------------------------------------------------------------------------------------------------------- EDM


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    # Eq. 5 of arXiv 2206.00364, then σ_N = 0.
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [(hi + i / (n - 1) * (lo - hi)) ** rho for i in range(n)] + [0.0]


def test_edm_euler_matches_hand_computed_preconditioning():
    unet = tiny_unet()
    scheduler = EDMEulerScheduler(sigma_min=0.02, sigma_max=3.0, sigma_data=0.5)
    steps, sigma_data = 3, 0.5
    pipe = EDMPipeline(unet, scheduler)
    images = run(pipe, seed=3, batch_size=2, num_inference_steps=steps, output_type="pt", second_order=False)

    sigmas = karras_sigmas(steps, 0.02, 3.0, 7.0)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn((2, 1, 16, 16), generator=generator) * 3.0  # x_0 ~ N(0, σ_0² I), Algorithm 2 line 2
    with torch.no_grad():
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            # Table 1 of arXiv 2206.00364.
            c_in = 1 / math.sqrt(sigma**2 + sigma_data**2)
            c_noise = 0.25 * math.log(sigma)
            c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
            c_out = sigma * sigma_data / math.sqrt(sigma**2 + sigma_data**2)
            f = unet(c_in * x, torch.tensor(c_noise)).sample
            denoised = c_skip * x + c_out * f
            x = x + (x - denoised) / sigma * (sigma_next - sigma)  # Euler step of dx/dσ = (x − D) / σ
    expected = (x / 2 + 0.5).clamp(0, 1)

    assert torch.allclose(scheduler.sigmas.double(), torch.tensor(sigmas, dtype=torch.float64), rtol=1e-5)
    inside = (expected > 0) & (expected < 1)
    assert inside.float().mean() > 0.5  # the comparison is not decided by clamping
    torch.testing.assert_close(images, expected, rtol=1e-4, atol=1e-5)


class DiracDenoiserUNet(UNet2DModel):
    """The ideal F for data concentrated on one image x*: D(x; σ) = x* for every x and σ.

    It inverts the pipeline's inputs (σ = exp(4 c_noise), x = input / c_in(σ)), so D = x* exactly only if the
    pipeline feeds c_in(σ)·x and c_noise(σ) once each and the scheduler applies c_skip, c_out once.
    """

    target: torch.Tensor
    sigma_data: float = 0.5

    def forward(self, sample, timestep, class_labels=None, return_dict=True):
        sigma = torch.exp(4 * timestep.double())
        s2 = sigma**2 + self.sigma_data**2
        x = sample.double() * torch.sqrt(s2)
        c_skip, c_out = self.sigma_data**2 / s2, sigma * self.sigma_data / torch.sqrt(s2)
        f = ((self.target.double() - c_skip * x) / c_out).to(sample.dtype)
        return UNet2DOutput(sample=f) if return_dict else (f,)


@pytest.mark.parametrize("scheduler_cls", [EDMEulerScheduler, EDMDPMSolverMultistepScheduler])
def test_edm_perfect_denoiser_samples_the_data_point(scheduler_cls):
    unet = DiracDenoiserUNet(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    unet.target = torch.linspace(-0.9, 0.9, 64).reshape(1, 1, 8, 8)
    pipe = EDMPipeline(unet, scheduler_cls())
    images = run(pipe, batch_size=3, num_inference_steps=6, output_type="pt")
    expected = (unet.target / 2 + 0.5).expand(3, 1, 8, 8)
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-4)


class GaussianDenoiserUNet(DiracDenoiserUNet):
    """The ideal F for data x ~ N(mean, std² I): D(x; σ) = mean + std² / (std² + σ²) (x − mean)."""

    mean: float = 0.1
    std: float = 0.3

    def forward(self, sample, timestep, class_labels=None, return_dict=True):
        sigma = torch.exp(4 * timestep.double())
        x = sample.double() * torch.sqrt(sigma**2 + self.sigma_data**2)
        self.target = self.mean + self.std**2 / (self.std**2 + sigma**2) * (x - self.mean)
        return super().forward(sample, timestep, class_labels, return_dict)


def gaussian_edm_pipeline() -> EDMPipeline:
    config = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8)
    config.update(down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    unet = GaussianDenoiserUNet(sample_size=8, in_channels=1, out_channels=1, **config)
    return EDMPipeline(unet, EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0))


def test_edm_heun_is_closer_to_the_ode_solution_than_euler_on_a_gaussian():
    pipe = gaussian_edm_pipeline()
    kwargs = {"seed": 4, "batch_size": 4, "output_type": "pt"}
    reference = run(pipe, num_inference_steps=500, **kwargs)
    # the exact flow maps x_0 = σ_max ξ to mean + std ξ (σ_min and float32 aside): the reference is that solution
    xi = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(reference, ((0.1 + 0.3 * xi) / 2 + 0.5).clamp(0, 1), rtol=0, atol=2e-3)
    # second order pays off once the steps resolve the curvature near σ ≈ std (Karras et al. use N = 18)
    for steps in (18, 32):
        heun = (run(pipe, num_inference_steps=steps, **kwargs) - reference).abs().max()
        euler = (run(pipe, num_inference_steps=steps, second_order=False, **kwargs) - reference).abs().max()
        assert heun < euler / 2, (steps, float(heun), float(euler))


def test_edm_churn_adds_seeded_noise_only_in_its_sigma_range():
    pipe = gaussian_edm_pipeline()
    kwargs = {"seed": 5, "batch_size": 2, "num_inference_steps": 8, "output_type": "pt"}
    deterministic = run(pipe, **kwargs)
    churned = run(pipe, S_churn=20.0, **kwargs)
    assert torch.equal(churned, run(pipe, S_churn=20.0, **kwargs))
    assert (churned - deterministic).abs().max() > 1e-3
    # a σ range that holds none of the levels: Algorithm 1 again
    assert torch.equal(run(pipe, S_churn=20.0, S_tmin=100.0, S_tmax=200.0, **kwargs), deterministic)
    with pytest.raises(ValueError, match="S_churn"):
        EDMPipeline(tiny_unet(), EDMDPMSolverMultistepScheduler())(num_inference_steps=2, S_churn=1.0)


def test_edm_output_types_range_and_determinism():
    pipe = EDMPipeline(tiny_unet(3), EDMEulerScheduler())
    a = run(pipe, seed=1, batch_size=2, num_inference_steps=4, output_type="np")
    b = run(pipe, seed=1, batch_size=2, num_inference_steps=4, output_type="np")
    c = run(pipe, seed=2, batch_size=2, num_inference_steps=4, output_type="np")
    assert a.shape == (2, 16, 16, 3) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    pt = run(pipe, seed=1, batch_size=2, num_inference_steps=4, output_type="pt")
    assert pt.shape == (2, 3, 16, 16)
    np.testing.assert_allclose(pt.permute(0, 2, 3, 1).numpy(), a, atol=1e-6)
    pil = run(pipe, seed=1, batch_size=2, num_inference_steps=4)
    assert len(pil) == 2 and pil[0].size == (16, 16) and pil[0].mode == "RGB"
    (tup,) = pipe(num_inference_steps=2, output_type="pt", return_dict=False)
    assert tup.shape == (1, 3, 16, 16)


def test_edm_rejects_bad_components_and_arguments():
    with pytest.raises(ValueError, match="EDMEulerScheduler"):
        EDMPipeline(tiny_unet(), DDPMScheduler())
    with pytest.raises(ValueError, match="positional"):
        EDMPipeline(tiny_unet(time_embedding_type="fourier"), EDMEulerScheduler())
    pipe = EDMPipeline(tiny_unet(), EDMEulerScheduler())
    with pytest.raises(ValueError, match="output_type"):
        pipe(num_inference_steps=2, output_type="latent")
    with pytest.raises(ValueError, match="generators"):
        pipe(batch_size=2, generator=[torch.Generator()], num_inference_steps=2)


def test_edm_save_load_round_trip(tmp_path, fresh_dynamic_module):
    pipe = EDMPipeline(tiny_unet(), EDMEulerScheduler(sigma_max=10.0))
    reference = run(pipe, batch_size=2, num_inference_steps=4, output_type="np")
    pipe.save_pretrained(tmp_path / "plain")
    loaded = EDMPipeline.from_pretrained(tmp_path / "plain")
    assert isinstance(loaded.scheduler, EDMEulerScheduler) and loaded.scheduler.config.sigma_max == 10.0
    assert_same_after_reload(run(loaded, batch_size=2, num_inference_steps=4, output_type="np"), reference)

    folder = tmp_path / "saved"
    save_pipeline(pipe, folder)
    assert (folder / "pipeline.py").read_text() == (ROOT / "pipelines" / "pipeline_edm.py").read_text()
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == ["pipeline", "EDMPipeline"]
    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(folder)
    custom = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    assert type(custom).__name__ == "EDMPipeline" and type(custom).__module__ == DYNAMIC_MODULE
    assert_same_after_reload(run(custom, batch_size=2, num_inference_steps=4, output_type="np"), reference)


def test_pipeline_files_import_only_what_they_document():
    for name in ("pipeline_edm.py", "pipeline_sagd.py"):
        assert top_level_packages(ROOT / "pipelines" / name) - sys.stdlib_module_names == {"torch", "diffusers"}


# --------------------------------------------------------------------------------------------------------- SAGD


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_small_log", "fixed_large", "learned_range"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_ddpm_step_with_white_noise_equals_scheduler_step(variance_type, prediction_type):
    scheduler = DDPMScheduler(variance_type=variance_type, prediction_type=prediction_type)
    scheduler.set_timesteps(10)
    out_channels = 4 if variance_type == "learned_range" else 2
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 2, 8, 8, generator=generator)
    model_output = torch.randn(2, out_channels, 8, 8, generator=generator)
    if variance_type == "learned_range":
        model_output[:, 2:] = model_output[:, 2:].tanh()
    for t in (scheduler.timesteps[0], scheduler.timesteps[4], scheduler.timesteps[-1]):
        stock = scheduler.step(model_output, t, sample, generator=torch.Generator().manual_seed(7))
        noise = randn_tensor(sample.shape, generator=torch.Generator().manual_seed(7), dtype=sample.dtype)
        ours = ddpm_step_with_noise(scheduler, model_output, t, sample, noise if t > 0 else None)
        assert torch.equal(ours.prev_sample, stock.prev_sample)
        assert torch.equal(ours.pred_original_sample, stock.pred_original_sample)


def test_ddpm_step_rejects_unsupported_variance_and_missing_noise():
    scheduler = DDPMScheduler(variance_type="fixed_large_log")
    scheduler.set_timesteps(10)
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="fixed_small"):
        ddpm_step_with_noise(scheduler, x, scheduler.timesteps[0], x, x)
    scheduler = DDPMScheduler()
    scheduler.set_timesteps(10)
    with pytest.raises(ValueError, match="variance_noise"):
        ddpm_step_with_noise(scheduler, x, scheduler.timesteps[0], x, None)


def test_sagd_white_equals_ddpm_pipeline_exactly():
    unet = tiny_unet()
    stock = run(DDPMPipeline(unet, DDPMScheduler()), seed=5, batch_size=2, num_inference_steps=8, output_type="pt")
    ours = run(SAGDPipeline(unet, DDPMScheduler()), seed=5, batch_size=2, num_inference_steps=8, output_type="pt")
    assert torch.equal(ours, stock)
    coloured = SAGDPipeline(unet, DDPMScheduler(), noise_spectrum=COLOURED)
    first = run(coloured, seed=5, batch_size=2, num_inference_steps=8, output_type="pt")
    assert torch.equal(first, run(coloured, seed=5, batch_size=2, num_inference_steps=8, output_type="pt"))
    assert (first - stock).abs().max() > 1e-2
    assert first.min() >= 0 and first.max() <= 1


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_sagd_white_equals_ddim_pipeline_exactly(eta):
    unet = tiny_unet(3)
    kwargs = {"seed": 6, "batch_size": 2, "num_inference_steps": 6, "eta": eta, "output_type": "np"}
    stock = run(DDIMPipeline(unet, DDIMScheduler()), **kwargs)
    ours = run(SAGDPipeline(unet, DDIMScheduler()), **kwargs)
    np.testing.assert_array_equal(ours, stock)


def test_sagd_ddpm_matches_hand_computed_coloured_ancestral_sampling():
    unet, spectrum, steps = tiny_unet(), NoiseSpectrum.parse(SPECTRUM), 6
    pipe = SAGDPipeline(unet, DDPMScheduler(), noise_spectrum=COLOURED)
    images = run(pipe, seed=2, batch_size=2, num_inference_steps=steps, output_type="pt")

    alphas_cumprod = DDPMScheduler().alphas_cumprod.double()
    timesteps = [i * (1000 // steps) for i in range(steps)][::-1]  # 'leading' spacing of DDPMScheduler
    generator = torch.Generator().manual_seed(2)
    x = spectrum.color(torch.randn((2, 1, 16, 16), generator=generator))
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            eps = unet(x, torch.tensor(t)).sample.double()
            ab_t = alphas_cumprod[t]
            ab_prev = alphas_cumprod[timesteps[i + 1]] if i + 1 < steps else torch.tensor(1.0, dtype=torch.float64)
            beta_t = 1 - ab_t / ab_prev
            x0 = ((x.double() - (1 - ab_t).sqrt() * eps) / ab_t.sqrt()).clamp(-1, 1)  # Eq. 15, clip_sample
            mean = ab_prev.sqrt() * beta_t / (1 - ab_t) * x0 + (1 - beta_t).sqrt() * (1 - ab_prev) / (1 - ab_t) * x
            if t > 0:
                # posterior N(μ̃_t, β̃_t Σ_w), β̃_t = (1 − ᾱ_{t-1}) / (1 − ᾱ_t) β_t (Eq. 7 of arXiv 2006.11239)
                xi = torch.randn((2, 1, 16, 16), generator=generator)
                mean = mean + ((1 - ab_prev) / (1 - ab_t) * beta_t).sqrt() * spectrum.color(xi).double()
            x = mean.float()
    torch.testing.assert_close(images, (x / 2 + 0.5).clamp(0, 1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_sagd_ddim_colours_x_T_and_every_variance_noise(eta, monkeypatch):
    unet, spectrum, steps = tiny_unet(), NoiseSpectrum.parse(SPECTRUM), 5
    draws = []
    original_sample = ColouredNoise.sample

    def recording_sample(self, shape, *args, **kwargs):
        draws.append((self, tuple(shape)))
        return original_sample(self, shape, *args, **kwargs)

    monkeypatch.setattr(ColouredNoise, "sample", recording_sample)
    pipe = SAGDPipeline(unet, DDIMScheduler(), noise_spectrum=COLOURED)
    images = run(pipe, seed=4, batch_size=2, num_inference_steps=steps, eta=eta, output_type="pt")
    assert draws == [(pipe.noise, (2, 1, 16, 16))] * (1 + (steps if eta > 0 else 0))
    torch.testing.assert_close(pipe.noise.weights, spectrum.weights((16, 16), dtype=torch.float64))

    scheduler = DDIMScheduler()
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(4)
    x = spectrum.color(torch.randn((2, 1, 16, 16), generator=generator))
    with torch.no_grad():
        for t in scheduler.timesteps:
            noise = spectrum.color(torch.randn((2, 1, 16, 16), generator=generator)) if eta > 0 else None
            x = scheduler.step(unet(x, t).sample, t, x, eta=eta, variance_noise=noise).prev_sample
    assert torch.equal(images, (x / 2 + 0.5).clamp(0, 1))


def test_sagd_rejects_bad_arguments():
    with pytest.raises(ValueError, match="DDPMScheduler"):
        SAGDPipeline(tiny_unet(), EDMEulerScheduler())
    with pytest.raises(ValueError, match="powerlaw"):
        SAGDPipeline(tiny_unet(), DDPMScheduler(), noise_spectrum="pinkish")
    pipe = SAGDPipeline(tiny_unet(), DDIMScheduler())
    with pytest.raises(ValueError, match="eta"):
        pipe(num_inference_steps=2, eta=1.5)
    with pytest.raises(ValueError, match="output_type"):
        pipe(num_inference_steps=2, output_type="latent")


def test_sagd_config_round_trip_and_custom_pipeline(tmp_path, fresh_dynamic_module):
    pipe = SAGDPipeline(tiny_unet(), DDPMScheduler(), noise_spectrum=NoiseSpectrum.parse(" PowerLaw: alpha = -0.5 "))
    assert pipe.config.noise_spectrum == NoiseSpectrum.powerlaw(-0.5).to_dict()
    reference = run(pipe, batch_size=2, num_inference_steps=5, output_type="np")
    pipe.save_pretrained(tmp_path / "plain")
    with diffusers_log() as records:
        loaded = SAGDPipeline.from_pretrained(tmp_path / "plain")
    assert not [r for r in records if r.levelno >= logging.WARNING], [r.getMessage() for r in records]
    assert loaded.config.noise_spectrum == pipe.config.noise_spectrum and loaded.config.sagd_note == SAGD_NOTE
    assert_same_after_reload(run(loaded, batch_size=2, num_inference_steps=5, output_type="np"), reference)

    folder = tmp_path / "saved"
    save_pipeline(pipe, folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "SAGDPipeline"]
    assert index["noise_spectrum"] == {"kind": "powerlaw", "alpha": -0.5, "eps": None}
    assert index["sagd_note"] == SAGD_NOTE
    custom = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    assert type(custom).__name__ == "SAGDPipeline" and type(custom).__module__ == DYNAMIC_MODULE
    assert custom.config.noise_spectrum == pipe.config.noise_spectrum
    assert_same_after_reload(run(custom, batch_size=2, num_inference_steps=5, output_type="np"), reference)


def test_sagd_white_spectrum_writes_no_note_and_user_weights_round_trip(tmp_path):
    white = SAGDPipeline(tiny_unet(), DDIMScheduler())
    assert white.config.noise_spectrum == {"kind": "white"} and "sagd_note" not in white.config

    weights = torch.ones(16, 16)
    weights[0, 0] = 3.0  # symmetric: only DC differs
    pipe = SAGDPipeline(tiny_unet(), DDIMScheduler(), noise_spectrum=NoiseSpectrum.from_weights(weights))
    assert pipe.config.noise_spectrum["kind"] == "weights"
    pipe.save_pretrained(tmp_path)
    loaded = SAGDPipeline.from_pretrained(tmp_path)
    assert NoiseSpectrum.from_dict(loaded.config.noise_spectrum) == NoiseSpectrum.from_weights(weights)
    assert not loaded.noise.is_white
    assert_same_after_reload(
        run(loaded, batch_size=1, num_inference_steps=3, output_type="np"),
        run(pipe, batch_size=1, num_inference_steps=3, output_type="np"),
    )


@pytest.mark.parametrize("stock_cls", [DDPMPipeline, DDIMPipeline])
def test_stock_pipelines_warn_that_they_sample_a_sagd_folder_wrongly(stock_cls, tmp_path):
    SAGDPipeline(tiny_unet(), DDPMScheduler(), noise_spectrum=COLOURED).save_pretrained(tmp_path)
    with diffusers_log() as records:
        stock = stock_cls.from_pretrained(tmp_path)
    assert type(stock) is stock_cls
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    explained = [m for m in warnings if "sample it wrongly" in m and "powerlaw" in m and stock_cls.__name__ in m]
    assert explained, warnings


# ------------------------------------------------------------------------------------------------- pipelines_io


def test_write_custom_pipeline_file_rejects_what_diffusers_cannot_load(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="ships with diffusers"):
        write_custom_pipeline_file(DDPMPipeline, tmp_path)
    with pytest.raises(ValueError, match="DiffusionPipeline subclass"):
        write_custom_pipeline_file(UNet2DModel, tmp_path)

    source = tmp_path / "relative_pipe.py"
    source.write_text(
        "from diffusers import DiffusionPipeline\n"
        "if False:\n"
        "    from .helpers import thing\n"
        "class RelativePipe(DiffusionPipeline):\n"
        "    pass\n"
    )
    spec = importlib.util.spec_from_file_location("relative_pipe", source)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "relative_pipe", module)
    spec.loader.exec_module(module)
    with pytest.raises(ValueError, match="relative imports"):
        write_custom_pipeline_file(module.RelativePipe, tmp_path / "out")
    assert not (tmp_path / "out" / "pipeline.py").exists()
