"""End-to-end tests of SAGD training (spectrally anisotropic forward noise, arXiv 2510.09660) in train_spectral.py.

The real script runs under `accelerate launch` on tiny data (three launches in all, one at a time); bad input and the
noised training batch are checked in-process. Needs the package installed (`pip install -e .`), as the script imports
`diffusers_specreg.pipelines` to save a `SAGDPipeline`.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, diffusers_log, launch, write_image_folder, write_unet_config
from diffusers import DDPMPipeline, DDPMScheduler, DiffusionPipeline, UNet2DModel

from diffusers_specreg import metrics
from diffusers_specreg.data import make_checkerboards
from diffusers_specreg.noise import NoiseSpectrum
from diffusers_specreg.objectives import DDPMObjective
from diffusers_specreg.pipelines import SAGDPipeline
from diffusers_specreg.pipelines.pipeline_sagd import ddpm_step_with_noise

sys.path.insert(0, str(REPO))
import train_spectral  # noqa: E402

# 8 images / batch 4 = 2 steps an epoch; a constant learning rate, so every one of the 3 steps changes the weights.
FAST = (
    "--resolution 16 --train_batch_size 4 --eval_batch_size 2 --ddpm_num_steps 50 --ddpm_num_inference_steps 2 "
    "--lr_scheduler constant --seed 0 --max_train_steps 3 --eval_num_samples 0 --save_images_epochs 100 "
    "--save_model_epochs 100"
).split()
COLOURED = "powerlaw:alpha=-0.5"
DYNAMIC_MODULE = "diffusers_modules.local.pipeline"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sagd_data")
    return write_image_folder(root / "images", count=8), write_unet_config(root / "config")


def train(data, out: Path, *extra: str) -> Path:
    images, config = data
    paths = ["--train_data_dir", str(images), "--model_config_name_or_path", str(config), "--output_dir", str(out)]
    launch([*FAST, *paths, *extra])
    return out


@pytest.fixture(scope="module")
def coloured_run(data, tmp_path_factory):
    return train(data, tmp_path_factory.mktemp("coloured") / "out", "--noise_spectrum", COLOURED)


def class_name(folder: Path) -> str | list:
    return json.loads((folder / "model_index.json").read_text())["_class_name"]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return UNet2DModel.from_pretrained(folder, subfolder="unet").state_dict()


# ------------------------------------------------------------------------------------------- the real script


def test_alpha_zero_trains_exactly_like_white_noise(data, tmp_path, coloured_run):
    white = train(data, tmp_path / "white")
    alpha0 = train(data, tmp_path / "alpha0", "--noise_spectrum", "powerlaw:alpha=0")
    # α = 0 is white noise: a plain DDPMPipeline, no custom code, no spectrum in the config.
    for folder in (white, alpha0):
        assert class_name(folder) == "DDPMPipeline"
        assert not (folder / "pipeline.py").exists()
        assert "noise_spectrum" not in json.loads((folder / "model_index.json").read_text())
    with diffusers_log() as records:
        assert type(DDPMPipeline.from_pretrained(alpha0)) is DDPMPipeline
    assert not [r for r in records if r.levelno >= logging.WARNING], [r.getMessage() for r in records]
    assert json.loads((alpha0 / "scheduler" / "scheduler_config.json").read_text()) == json.loads(
        (white / "scheduler" / "scheduler_config.json").read_text()
    )
    w_white, w_alpha0, w_coloured = weights(white), weights(alpha0), weights(coloured_run)
    assert w_white.keys() == w_alpha0.keys()
    for name in w_white:
        torch.testing.assert_close(w_alpha0[name], w_white[name], rtol=0, atol=1e-7, msg=name)
    # the comparison is sensitive to the noise: the same run with coloured noise ends elsewhere
    assert max((w_coloured[n] - w_white[n]).abs().max().item() for n in w_white) > 1e-5


def sample_by_hand(pipeline, spectrum: NoiseSpectrum, seed: int, batch_size: int, steps: int) -> torch.Tensor:
    """SAGD ancestral sampling written out: x_T and every injected noise from N(0, Σ_w) of `spectrum`."""
    generator = torch.Generator().manual_seed(seed)
    size = pipeline.unet.config.sample_size
    scheduler = DDPMScheduler.from_config(pipeline.scheduler.config)
    scheduler.set_timesteps(steps)
    image = spectrum.sample((batch_size, pipeline.unet.config.in_channels, size, size), generator=generator)
    with torch.no_grad():
        for t in scheduler.timesteps:
            output = pipeline.unet(image, t).sample
            noise = spectrum.sample(image.shape, generator=generator) if t > 0 else None
            image = ddpm_step_with_noise(scheduler, output, t, image, noise).prev_sample
    return (image / 2 + 0.5).clamp(0, 1)


def test_coloured_run_reloads_and_samples_with_the_trained_spectrum(coloured_run):
    assert class_name(coloured_run) == ["pipeline", "SAGDPipeline"] and (coloured_run / "pipeline.py").is_file()
    trained = NoiseSpectrum.parse(COLOURED)
    sys.modules.pop(DYNAMIC_MODULE, None)  # Diffusers imports every local pipeline.py under this one name
    try:
        loaded = {
            "SAGDPipeline.from_pretrained": SAGDPipeline.from_pretrained(coloured_run, trust_remote_code=True),
            "DiffusionPipeline": DiffusionPipeline.from_pretrained(coloured_run, trust_remote_code=True),
        }
    finally:
        sys.modules.pop(DYNAMIC_MODULE, None)
    assert type(loaded["DiffusionPipeline"]).__module__ == DYNAMIC_MODULE
    for how, pipeline in loaded.items():
        assert type(pipeline).__name__ == "SAGDPipeline", how
        assert NoiseSpectrum.from_dict(pipeline.config.noise_spectrum).to_string() == COLOURED, how
        pipeline.set_progress_bar_config(disable=True)
        images = pipeline(
            batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(3), output_type="pt"
        ).images
        torch.testing.assert_close(images, sample_by_hand(pipeline, trained, 3, 2, 3), rtol=0, atol=1e-6, msg=how)
        # control: the same loop with white noise gives other images, so the match above is not vacuous
        white = sample_by_hand(pipeline, NoiseSpectrum.white(), 3, 2, 3)
        assert (images - white).abs().max() > 1e-2, how


def test_stock_ddpm_pipeline_refuses_a_sagd_output_folder(coloured_run):
    # `_class_name` names the folder's pipeline.py, so even an explicit stock class is resolved to that code, which
    # Diffusers runs only when trusted: the folder cannot be sampled with white noise by mistake.
    with pytest.raises(ValueError, match="trust_remote_code"):
        DDPMPipeline.from_pretrained(coloured_run)


# ------------------------------------------------------------------- bad input: an error before training starts


def run_main(args: list[str], tmp_path: Path):
    return train_spectral.main([*FAST, "--output_dir", str(tmp_path / "never"), "--builtin_num_samples", "8", *args])


@pytest.fixture
def fresh_state():
    train_spectral._STATE["training_started"] = False
    yield
    train_spectral._STATE["training_started"] = False


VALID_SPECTRA = r"Valid noise spectra: 'white', 'powerlaw:alpha=A"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--noise_spectrum", "pinknoise"], "Unknown noise spectrum kind 'pinknoise'"),
        (["--noise_spectrum", "powerlaw:alpha=x"], "alpha='x' is not a number"),
        (["--noise_spectrum", "powerlaw"], "missing the parameters"),
        (["--noise_spectrum", "powerlaw:beta=1"], r"Unknown keys \['beta'\]"),
        (["--noise_spectrum", "bandpass:low=0-0.3,high=0.6-1"], "missing"),
        (["--noise_spectrum", "powerlaw:alpha=inf"], "not finite"),
        (["--noise_spectrum", "powerlaw:alpha=nan"], "not finite"),
        (["--noise_spectrum", "powerlaw:alpha=-0.5,eps=0"], "DC weight .* infinite"),
        (["--noise_spectrum", "band:0.5-1.5"], r"outside \[0, 1\]"),
        (["--noise_spectrum", "bandpass:low=0-0.3,high=0.6-1.2,gamma_low=0.7"], r"outside \[0, 1\]"),
        (["--noise_spectrum", "band:0.6-0.2"], "is empty"),
        (["--noise_spectrum", "band:0.5-0.5"], "is empty"),
        (["--noise_spectrum", "bandpass:low=0-0.3,high=0.6-1,gamma_low=1.5"], r"gamma_low=1.5 lies outside \[0, 1\]"),
    ],
)
def test_bad_noise_spectrum_fails_before_training_naming_the_valid_forms(tmp_path, fresh_state, args, message):
    with pytest.raises(ValueError, match=message) as error:
        run_main(args, tmp_path)
    assert VALID_SPECTRA in str(error.value)
    assert not train_spectral._STATE["training_started"] and not (tmp_path / "never").exists()


@pytest.mark.parametrize("band", ["0.5", "a-b", "0.5-0.8-1", "0.5-1.5", "0.8-0.2", "0.3-0.3"])
def test_bad_corrupt_band_fails_before_training_naming_the_valid_form(tmp_path, fresh_state, band):
    with pytest.raises(ValueError, match=r"--corrupt_band .*(must look like 'A-B'|must satisfy 0 <= A < B <= 1)"):
        run_main(["--corrupt_band", band], tmp_path)
    assert not train_spectral._STATE["training_started"] and not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--noise_spectrum", "powerlaw:alpha=-1e308"], "non-finite"),  # finite α, but (r + eps)^α overflows
        (["--noise_spectrum", "band:0.02-0.05"], "contains no frequency of the grid"),  # 16x16: radii from 0.088
        (["--corrupt_band", "0.02-0.05"], "holds no frequency of the 16x16 grid"),
    ],
)
def test_spectra_that_do_not_fit_the_training_grid_fail_before_training(tmp_path, fresh_state, args, message):
    with pytest.raises(ValueError, match=message) as error:
        run_main(args, tmp_path)
    if args[0] == "--noise_spectrum":  # the spectrum error names the valid spectra; the band error its own flag
        assert VALID_SPECTRA in str(error.value)
    assert not train_spectral._STATE["training_started"] and not (tmp_path / "never" / "logs").exists()


def test_cli_reports_a_band_off_the_grid_in_one_line(data, tmp_path):
    images, config = data
    paths = ["--train_data_dir", str(images), "--model_config_name_or_path", str(config), "--output_dir"]
    result = launch([*FAST, *paths, str(tmp_path / "never"), "--noise_spectrum", "band:0.02-0.05"], check=False)
    assert result.returncode != 0
    assert "train_spectral.py: error: Band (0.02, 0.05) contains no frequency of the grid" in result.stderr
    assert "Training:" not in result.stderr and not (tmp_path / "never" / "logs").exists()


# ----------------------------------------------------------------- the training objective with coloured noise


def independent_power(shape: tuple[int, int], alpha: float) -> torch.Tensor:
    """|w|² of powerlaw:alpha (eps = smallest nonzero radius, mean |w|² = 1), written without the noise module."""
    grids = torch.meshgrid(*[torch.fft.fftfreq(n, dtype=torch.float64) for n in shape], indexing="ij")
    radius = torch.sqrt(grids[0] ** 2 + grids[1] ** 2)
    radius = radius / radius.max()
    power = (radius + radius[radius > 0].min()) ** (2 * alpha)
    return power / power.mean()


def noised_batch(spectrum: NoiseSpectrum, clean: torch.Tensor, seed: int = 0):
    """One batch of the objective train_spectral.py builds for `--noise_spectrum` (same noise_fn)."""
    noise_fn = (
        None
        if spectrum.is_white
        else (lambda shape, gen, device: spectrum.sample(shape, generator=gen, device=device))
    )
    objective = DDPMObjective(DDPMScheduler(num_train_timesteps=1000), noise_fn=noise_fn)
    return objective, objective.noise_batch(clean, torch.Generator().manual_seed(seed))


def recovered_noise(objective, batch, clean: torch.Tensor) -> torch.Tensor:
    """ε = (x_t − √ᾱ_t x_0) / √(1 − ᾱ_t) from the noisy batch, Eq. 4 of arXiv 2006.11239."""
    alphas = objective.scheduler.alphas_cumprod[batch.timesteps].reshape(-1, 1, 1, 1)
    return (batch.noisy.double() - alphas.sqrt() * clean.double()) / (1 - alphas).sqrt()


def test_objective_noises_the_batch_with_the_requested_spectrum():
    clean = make_checkerboards(512, 32, seed=1)
    objective, batch = noised_batch(NoiseSpectrum.parse(COLOURED), clean)
    noise = recovered_noise(objective, batch, clean)
    torch.testing.assert_close(noise, batch.noise.double(), rtol=0, atol=1e-4)
    torch.testing.assert_close(batch.target, batch.noise)  # ε-prediction regresses the coloured noise
    assert abs(noise.var().item() - 1) < 0.03  # unit variance per pixel: the DDPM schedule keeps its meaning

    # RAPSD of the noise = ring average of |w|² (orthonormal DFT), w = (r + eps)^α, within sampling error
    _, power = metrics.rapsd(noise)
    expected = metrics.radial_profile(independent_power((32, 32), -0.5))
    ratio = power.mean(0) / expected
    # ring k >= 1 holds >= 4 frequencies x 512 draws; the DC bin holds one (a χ²₁ mean over 512: ±6% std)
    assert ratio[1:].sub(1).abs().max() < 0.1 and abs(ratio[0] - 1) < 0.3, ratio
    assert expected[1] / expected[-1] > 5  # so the spectrum tested is far from flat...
    _, white_power = metrics.rapsd(recovered_noise(*noised_batch(NoiseSpectrum.white(), clean), clean))
    assert white_power.mean(0)[1:].sub(1).abs().max() < 0.1  # ...while white noise has a flat one


def test_band_limited_noise_has_no_energy_outside_its_band():
    clean = make_checkerboards(64, 32, seed=2)
    objective, batch = noised_batch(NoiseSpectrum.parse("band:0-0.6"), clean)
    power = torch.fft.fft2(recovered_noise(objective, batch, clean), norm="ortho").abs().square().mean((0, 1))
    grids = torch.meshgrid(*[torch.fft.fftfreq(32, dtype=torch.float64)] * 2, indexing="ij")
    radius = torch.sqrt(grids[0] ** 2 + grids[1] ** 2) / math.sqrt(0.5)
    inside = radius < 0.6
    assert power[~inside].max() < 1e-8 and power[inside].mean() > 0.5
    assert abs(power.mean().item() - 1) < 0.05
