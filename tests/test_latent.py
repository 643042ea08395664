"""Latent diffusion (`--vae_name_or_path`): the frozen autoencoder, the UNet on its scaled latents, the spectral losses
on latent or decoded x̂₀, the saved `LDMPipeline` and every bad input caught before training.

(Loading the saved folder in a fresh process without this package is in tests/test_formulations.py, KIND_FLAGS.)
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from accelerate import PartialState
from conftest import REPO, launch, tiny_unet, write_image_folder, write_unet_config, write_vae
from diffusers import AutoencoderKL, DDPMScheduler, LDMPipeline

from diffusers_specreg.evaluate import image_shape
from diffusers_specreg.latent import LatentCodec, load_vae
from diffusers_specreg.regularizer import SpectralRegularizer

sys.path.insert(0, str(REPO))
import train_spectral  # noqa: E402

FAST = (
    "--train_batch_size 4 --eval_batch_size 2 --ddpm_num_steps 50 --ddpm_num_inference_steps 2 --lr_warmup_steps 1 "
    "--save_images_epochs 100 --save_model_epochs 100 --seed 0 --resolution 16"
).split()


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, Path]:
    """A tiny AutoencoderKL (factor 2, 4 latent channels, 16x16 images -> 8x8 latents), RGB images and UNet configs."""
    root = tmp_path_factory.mktemp("latent")
    return {
        "vae": write_vae(root / "vae", scaling_factor=1.5),
        "images": write_image_folder(root / "images", count=8, mode="RGB"),
        "config": write_unet_config(root / "config", channels=4, sample_size=8),
        "config_1ch": write_unet_config(root / "config_1ch", channels=1, sample_size=8),
        "config_16": write_unet_config(root / "config_16", channels=4, sample_size=16),
    }


def latent_args(fixtures, out: Path, *extra: str, config: str = "config") -> list[str]:
    return [
        *FAST,
        "--train_data_dir",
        str(fixtures["images"]),
        "--vae_name_or_path",
        str(fixtures["vae"]),
        "--model_config_name_or_path",
        str(fixtures[config]),
        "--output_dir",
        str(out),
        *extra,
    ]


# --- the autoencoder as the training loop uses it ----------------------------------------------------------------


def test_codec_encodes_scaled_posterior_samples_and_decodes_differentiably(fixtures):
    vae = load_vae(str(fixtures["vae"]))
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())
    codec = LatentCodec(vae, "tiny")
    assert (codec.factor, codec.latent_channels, codec.scaling_factor) == (2, 4, 1.5)
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    latents = codec.encode(images, torch.Generator().manual_seed(7))
    expected = vae.encode(images).latent_dist.sample(generator=torch.Generator().manual_seed(7)) * 1.5
    assert latents.shape == (3, 4, 8, 8) and torch.allclose(latents, expected)
    assert not latents.requires_grad
    # decode undoes the scaling: decode(z) == vae.decode(z / scaling_factor)
    z = latents.clone().requires_grad_(True)
    decoded = codec.decode(z)
    assert decoded.shape == (3, 3, 16, 16)
    assert torch.allclose(decoded, vae.decode(latents / 1.5).sample)
    decoded.square().sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def recording(decode, record: dict, key):
    """`decode` that first stores its input latents in `record[key]`."""

    def wrapped(latents, *args, **kwargs):
        record[key] = latents.clone()
        return decode(latents, *args, **kwargs)

    return wrapped


def test_stock_ldm_pipeline_divides_by_the_scaling_factor_before_decoding(fixtures):
    """The reason the latent kind saves Diffusers' LDMPipeline: it decodes `latents / vqvae.config.scaling_factor`.
    Same UNet, scheduler and seed, autoencoders that differ only in scaling_factor: decoder inputs scale by 1 / it."""
    unet = tiny_unet(sample_size=8, channels=4)
    decoded = {}
    for factor in (1.0, 4.0):
        vae = load_vae(str(write_vae(fixtures["vae"].parent / f"vae_{factor}", scaling_factor=factor)))
        vae.decode = recording(vae.decode, decoded, factor)
        pipeline = LDMPipeline(vqvae=vae, unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50))
        pipeline.set_progress_bar_config(disable=True)
        images = pipeline(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
        assert len(images) == 2 and images[0].size == (16, 16)
    assert torch.allclose(decoded[4.0] * 4.0, decoded[1.0], atol=1e-6)


def test_decoded_spectral_space_compares_decoded_images(fixtures):
    """--spectral_space decoded: the loss is L(decode(x̂₀), decode(x₀)), not L(x̂₀, x₀); gradients reach x̂₀ through
    the decoder, none reach the frozen autoencoder."""
    codec = LatentCodec(load_vae(str(fixtures["vae"])), "tiny")
    scheduler = DDPMScheduler(num_train_timesteps=50, prediction_type="sample")  # x̂₀ = the model output
    clean = codec.encode(torch.rand(2, 3, 16, 16) * 2 - 1, torch.Generator().manual_seed(0))
    output = (clean + 0.3 * torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    timesteps, base = torch.tensor([0, 0]), torch.zeros(2)
    latent = SpectralRegularizer.from_names(["amplitude"], weighting="constant")
    decoded = SpectralRegularizer.from_names(["amplitude"], weighting="constant", decoder=codec.decode)
    in_latents = latent(scheduler, output, clean, timesteps, clean, base)["amplitude"]
    in_pixels = decoded(scheduler, output, clean, timesteps, clean, base)
    reference = latent.losses["amplitude"](codec.decode(output), codec.decode(clean))
    assert torch.allclose(in_pixels["amplitude"], reference)
    assert not torch.allclose(in_pixels["amplitude"], in_latents)
    in_pixels["loss"].sum().backward()
    assert output.grad.abs().sum() > 0
    assert all(p.grad is None for p in codec.vae.parameters())
    assert not any("vae" in key or "decoder" in key for key in decoded.state_dict())  # checkpoints stay small


# --- a real latent run ----------------------------------------------------------------------------------------------


def test_latent_run_saves_a_self_contained_ldm_pipeline_that_samples_images(fixtures, tmp_path):
    out = tmp_path / "out"
    argv = latent_args(
        fixtures, out, "--max_train_steps", "2", "--eval_num_samples", "4", "--spectral_loss", "amplitude"
    )
    assert train_spectral.main(argv) == 0
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "LDMPipeline" and index["vqvae"] == ["diffusers", "AutoencoderKL"]
    assert not (out / "pipeline.py").exists()  # stock Diffusers class: no remote code
    # the autoencoder travels with the model, unchanged (frozen)
    saved, source = AutoencoderKL.from_pretrained(out / "vqvae"), AutoencoderKL.from_pretrained(fixtures["vae"])
    assert saved.config.scaling_factor == 1.5
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), source.state_dict().values()))
    unet = json.loads((out / "unet" / "config.json").read_text())
    assert (unet["in_channels"], unet["out_channels"], unet["sample_size"]) == (4, 4, 8)

    pipeline = LDMPipeline.from_pretrained(out)
    pipeline.set_progress_bar_config(disable=True)
    assert image_shape(pipeline) == (3, 16, 16)
    images = pipeline(batch_size=2, num_inference_steps=2, output_type="np", generator=torch.Generator()).images
    assert images.shape == (2, 16, 16, 3)

    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())["pipelines"]["out"]
    assert metrics["pipeline_class"] == "LDMPipeline" and "decoded by the autoencoder" in metrics["sampler"]
    card = (out / "README.md").read_text()
    assert "latent diffusion model" in card and "scaling_factor 1.5" in card and str(fixtures["vae"]) in card
    assert "--spectral_space latent" in card and "latent-diffusion" in card
    settings = json.loads((out / "training_args.json").read_text())
    assert settings["vae_name_or_path"] == str(fixtures["vae"]) and settings["spectral_space"] == "latent"


def test_default_unet_is_sized_to_the_latents_and_decoded_space_trains_with_accelerate(fixtures, tmp_path):
    """One real `accelerate launch`: no UNet config (the small preset sized to 4x8x8 latents), spectral losses on
    decoded x̂₀, checkpoints, a loadable pipeline."""
    out = tmp_path / "launched"
    args = [
        *FAST,
        "--train_data_dir",
        str(fixtures["images"]),
        "--vae_name_or_path",
        str(fixtures["vae"]),
        "--model_preset",
        "small",
        "--output_dir",
        str(out),
        "--max_train_steps",
        "2",
        "--checkpointing_steps",
        "2",
        "--eval_num_samples",
        "0",
        "--spectral_loss",
        "amplitude_phase",
        "--spectral_space",
        "decoded",
        "--mixed_precision",
        "bf16",  # the frozen encoder/decoder run in bf16; the saved autoencoder stays the float32 original
    ]
    result = launch(args)
    assert "spectral losses on the decoded x̂₀" in result.stderr
    unet = json.loads((out / "unet" / "config.json").read_text())
    assert (unet["in_channels"], unet["sample_size"]) == (4, 8)
    assert (out / "checkpoint-2").is_dir() and (out / "vqvae" / "config.json").is_file()
    assert "--spectral_space decoded" in (out / "README.md").read_text()
    saved, source = AutoencoderKL.from_pretrained(out / "vqvae"), AutoencoderKL.from_pretrained(fixtures["vae"])
    assert saved.dtype == torch.float32
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), source.state_dict().values()))


def test_latents_far_from_unit_variance_are_reported_with_the_fitting_scale(fixtures, tmp_path, caplog):
    PartialState()  # the script logs through accelerate's logger
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    fitting = LatentCodec(load_vae(str(fixtures["vae"])), "tiny")
    std = train_spectral.warn_latent_scale(fitting, images)
    wrong = LatentCodec(load_vae(str(write_vae(tmp_path / "big", scaling_factor=1.5 * 10 / std))), "big")
    with caplog.at_level(logging.WARNING):
        assert train_spectral.warn_latent_scale(wrong, images) == pytest.approx(10.0, rel=1e-4)
    assert "have std 10" in caplog.text and f"A scaling_factor of {1.5 / std:.6g} would give" in caplog.text


def test_fine_tuning_a_latent_pipeline_keeps_the_image_resolution(fixtures, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert train_spectral.main(latent_args(fixtures, first, "--max_train_steps", "1", "--eval_num_samples", "0")) == 0
    argv = [*FAST[:-2], "--train_data_dir", str(fixtures["images"]), "--vae_name_or_path", str(fixtures["vae"])]
    argv += ["--output_dir", str(second), "--max_train_steps", "1", "--eval_num_samples", "0"]
    assert FAST[-2:] == ["--resolution", "16"]  # left out: 8x8 latents of the pretrained UNet x factor 2
    assert train_spectral.main([*argv, "--pretrained_model_name_or_path", str(first)]) == 0
    assert json.loads((second / "unet" / "config.json").read_text())["sample_size"] == 8
    assert json.loads((second / "training_args.json").read_text())["resolution"] == 16
    # the saved folder's own autoencoder serves as --vae_name_or_path; leaving it out is refused with that fix
    third = [*argv[: argv.index("--vae_name_or_path")], "--output_dir", str(tmp_path / "third"), "--max_train_steps"]
    third += ["1", "--eval_num_samples", "0", "--pretrained_model_name_or_path", str(second)]
    with pytest.raises(ValueError, match=f"--vae_name_or_path {second} --vae_subfolder vqvae"):
        train_spectral.main(third)
    assert train_spectral.main([*third, "--vae_name_or_path", str(second), "--vae_subfolder", "vqvae"]) == 0


def test_a_pixel_unet_cannot_be_fine_tuned_on_latents(fixtures, tmp_path):
    pixel = tmp_path / "pixel"
    tiny_unet(sample_size=16, channels=3).save_pretrained(pixel)
    argv = latent_args(fixtures, tmp_path / "never", "--max_train_steps", "1")
    i = argv.index("--model_config_name_or_path")
    argv[i : i + 2] = ["--pretrained_model_name_or_path", str(pixel)]
    with pytest.raises(
        ValueError, match=r"has in_channels 3 but the autoencoder's latents have 4 .* Fine-tune a UNet"
    ):
        train_spectral.main(argv)


def test_latent_run_resumes_from_its_checkpoint(fixtures, tmp_path):
    out = tmp_path / "resumed"
    common = ["--checkpointing_steps", "1", "--eval_num_samples", "0", "--spectral_loss", "amplitude"]
    assert train_spectral.main(latent_args(fixtures, out, "--max_train_steps", "2", *common)) == 0
    resumed = latent_args(fixtures, out, "--max_train_steps", "3", "--resume_from_checkpoint", "latest", *common)
    assert train_spectral.main(resumed) == 0
    assert (out / "checkpoint-3").is_dir()
    assert json.loads((out / "checkpoint-3" / "training_state.json").read_text())["global_step"] == 3


# --- bad input: clear errors before training -----------------------------------------------------------------------


def _not_a_vae(tmp_path: Path) -> Path:
    return write_unet_config(tmp_path / "unet_only")


def _no_scaling_factor(tmp_path: Path) -> Path:
    folder = write_vae(tmp_path / "vae_noscale")
    config = json.loads((folder / "config.json").read_text())
    del config["scaling_factor"]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _sd_layout(tmp_path: Path) -> Path:
    write_vae(tmp_path / "sd" / "vae")
    (tmp_path / "sd" / "model_index.json").write_text("{}")
    return tmp_path / "sd"


@pytest.mark.parametrize(
    "make_vae, extra, message",
    [
        (lambda t: t / "missing", [], "is not a folder"),
        (_sd_layout, [], "add --vae_subfolder vae"),
        (_not_a_vae, [], "holds a UNet2DModel, not an AutoencoderKL"),
        (_no_scaling_factor, [], "has no scaling_factor"),
        (None, ["--resolution", "15"], "--resolution 15 is not divisible by 2, the downsampling factor of the auto"),
        (None, ["--model_config_name_or_path", "config_1ch"], "in_channels 1 but the autoencoder's latents have 4"),
        (None, ["--model_config_name_or_path", "config_16"], "sample_size 16 but --resolution 16 images give 8x8"),
        (None, ["--formulation", "edm"], "does not combine with --formulation edm"),
        (None, ["--noise_spectrum", "powerlaw:alpha=-0.5"], "does not combine with a coloured --noise_spectrum"),
        (None, ["--modality", "audio"], "does not combine with --modality audio"),
        (None, ["--model_preset", "default", "--resolution", "32"], "16x16 latents .* not divisible by 32"),
        (None, ["--spectral_loss", "wavelet", "--wavelet_levels", "4"], "the latent grid"),
    ],
)
def test_bad_latent_input_fails_before_training(fixtures, tmp_path, make_vae, extra, message):
    extra = [str(fixtures[a]) if a in fixtures else a for a in extra]
    argv = latent_args(fixtures, tmp_path / "never", "--max_train_steps", "1", *extra)
    if "--model_config_name_or_path" in extra or "--model_preset" in extra:  # replace the fixture's config
        i = argv.index("--model_config_name_or_path")
        del argv[i : i + 2]
    if make_vae is not None:
        argv[argv.index("--vae_name_or_path") + 1] = str(make_vae(tmp_path))
    with pytest.raises(ValueError, match=message):
        train_spectral.main(argv)
    assert not (tmp_path / "never" / "logs").exists()


@pytest.mark.parametrize("flag", [["--spectral_space", "decoded"], ["--vae_subfolder", "vae"]])
def test_latent_flags_without_a_vae_are_refused(tmp_path, flag, image_folder):
    with pytest.raises(ValueError, match="latent diffusion only: add --vae_name_or_path"):
        train_spectral.main([*FAST, "--train_data_dir", str(image_folder), "--output_dir", str(tmp_path), *flag])


def test_vae_subfolder_and_stock_scaling_factor_warning(tmp_path, caplog):
    write_vae(tmp_path / "sd" / "vae", scaling_factor=0.18215)
    with caplog.at_level(logging.WARNING, logger="diffusers_specreg.latent"):
        vae = load_vae(str(tmp_path / "sd"), subfolder="vae")
    assert isinstance(vae, AutoencoderKL)
    assert "AutoencoderKL's default" in caplog.text and "measure_scaling_factor" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="diffusers_specreg.latent"):
        load_vae(str(write_vae(tmp_path / "measured", scaling_factor=0.9)))
    assert "default" not in caplog.text
