"""Tests of diffusers_specreg.autoencoder: configs, the Spectrum Matching autoencoder loss, LPIPS loading, the
scaling factor and the evaluation used by the model card and benchmarks."""

import math

import pytest
import torch
from diffusers import AutoencoderKL

from diffusers_specreg.autoencoder import (
    LPIPS,
    AutoencoderLoss,
    EncodeDecode,
    autoencoder_config,
    downsampling_factor,
    evaluate_autoencoder,
    fit_slope,
    measure_scaling_factor,
    plot_latent_spectrum,
)
from diffusers_specreg.transforms import block_dct2


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return AutoencoderKL(**autoencoder_config("tiny", channels=3, resolution=32))


def images(n=4, channels=3, size=32, seed=0):
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_tiny_preset_gives_8x8x4_latents(vae):
    assert downsampling_factor(vae.config) == 4
    assert vae.encode(images(2)).latent_dist.mean.shape == (2, 4, 8, 8)
    assert downsampling_factor(autoencoder_config("sd", 3, 256)) == 8
    with pytest.raises(ValueError, match="choose from"):
        autoencoder_config("huge", 3, 32)


@pytest.mark.parametrize(
    "regularizers,keys",
    [
        (("kl",), {"l1", "kl", "loss"}),
        (("esm",), {"l1", "esm", "loss"}),
        (("dsm", "esm", "kl"), {"l1", "esm", "kl", "loss"}),
        ((), {"l1", "loss"}),
    ],
)
def test_loss_terms_are_per_sample_and_weighted(vae, regularizers, keys):
    loss_fn = AutoencoderLoss(regularizers, kl_weight=1e-3, esm_weight=0.5)
    terms = loss_fn(vae, images(), torch.Generator().manual_seed(0))
    assert set(terms) == keys | ({"dsm_k"} if "dsm" in regularizers else set())
    for key in keys:
        assert terms[key].shape == (4,)
    expected = terms["l1"] + 1e-3 * terms.get("kl", 0) + 0.5 * terms.get("esm", 0)
    torch.testing.assert_close(terms["loss"], expected)
    terms["loss"].mean().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in vae.parameters())
    assert vae.encoder.conv_in.weight.grad.abs().sum() > 0
    vae.zero_grad()


def test_dsm_decodes_the_masked_latent_and_targets_the_masked_image(vae):
    loss_fn = AutoencoderLoss(("dsm",), dsm_ks=[12])
    seen = {}

    class Spy(EncodeDecode):
        def forward(self, images, generator=None, dsm_k=0):
            out = super().forward(images, generator, dsm_k)
            seen["k"] = dsm_k
            seen["reconstruction"] = out[3]
            return out

    x = images()
    terms = loss_fn(Spy(vae), x, torch.Generator().manual_seed(0))
    assert seen["k"] == 12 and terms["dsm_k"].item() == 12
    # the loss target is the low-passed image: recompute L1 against it
    coefficients = block_dct2(x)
    u = torch.arange(32)[:, None] % 8
    v = torch.arange(32)[None, :] % 8
    from diffusers_specreg.transforms import block_idct2

    target = block_idct2(coefficients * ((u + v) < 3))
    torch.testing.assert_close(terms["l1"], (seen["reconstruction"] - target).abs().mean(dim=(1, 2, 3)))


def test_unknown_regularizer_is_rejected():
    with pytest.raises(ValueError, match="Unknown latent regularizer"):
        AutoencoderLoss(["kl", "foo"])


def test_lpips_loads_a_saved_state_dict_and_measures_distance(tmp_path):
    torch.manual_seed(0)
    reference = LPIPS()
    for lin in reference.lins:
        lin.model[1].weight.data.uniform_(0.0, 1.0)  # LPIPS heads are non-negative
    # the key names of lpips.LPIPS(net="vgg").state_dict()
    state = {}
    for key, value in reference.state_dict().items():
        if key in ("shift", "scale"):
            key = f"scaling_layer.{key}"
        elif key.startswith("lins."):
            key = "lin" + key[len("lins.") :]
        state[key] = value
    assert "net.slice2.5.weight" in state and "lin4.model.1.weight" in state
    torch.save(state, tmp_path / "lpips_vgg.pth")
    loaded = LPIPS.from_file(tmp_path / "lpips_vgg.pth")
    x, y = images(2, size=32), images(2, size=32, seed=1)
    assert torch.allclose(loaded(x, x), torch.zeros(2), atol=1e-6)
    distance = loaded(x, y)
    assert distance.shape == (2,) and (distance > 0).all()
    torch.testing.assert_close(distance, reference(x, y))
    grey = loaded(x[:, :1], y[:, :1])
    assert (grey > 0).all()
    torch.save({"lin0.model.1.weight": state["lin0.model.1.weight"]}, tmp_path / "heads_only.pth")
    with pytest.raises(ValueError, match="not a full lpips"):
        LPIPS.from_file(tmp_path / "heads_only.pth")


def test_scaling_factor_is_one_over_the_latent_std(vae):
    x = images(6)
    factor = measure_scaling_factor(vae, x, torch.Generator().manual_seed(0), batch_size=4)
    latents = vae.encode(x).latent_dist.sample(torch.Generator().manual_seed(0))
    assert factor == pytest.approx(1 / latents.std(unbiased=False).item(), rel=1e-4)


def test_fit_slope_recovers_a_power_law():
    f = torch.arange(1, 17, dtype=torch.float64)
    assert fit_slope((f**-2.0).numpy()) == pytest.approx(-2.0)
    assert math.isnan(fit_slope([1.0, 0.0, 0.0]))


def test_evaluate_autoencoder_reports_psnr_and_slopes(vae, tmp_path):
    x = images(5)
    result = evaluate_autoencoder(vae, x, batch_size=2)
    assert {"psnr", "latent_slope", "image_slope"} <= set(result)
    assert result["latent_shape"] == [4, 8, 8] and len(result["latent_spectrum"]) == 16
    assert math.isfinite(result["psnr"]) and math.isfinite(result["latent_slope"])

    class Identity(torch.nn.Module):  # a perfect "autoencoder": infinite PSNR clipped by the floor
        device, dtype = torch.device("cpu"), torch.float32

        def encode(self, x):
            from types import SimpleNamespace

            return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: x))

        def decode(self, z):
            from types import SimpleNamespace

            return SimpleNamespace(sample=z)

    perfect = evaluate_autoencoder(Identity(), x)
    assert perfect["psnr"] == pytest.approx(100.0)
    # the latent is the white-noise image itself (flat spectrum); the image spectrum is taken after the ESM blur
    assert abs(perfect["latent_slope"]) < 0.3 and perfect["image_slope"] < -2
    plot_latent_spectrum(result, tmp_path / "spectrum.png")
    assert (tmp_path / "spectrum.png").stat().st_size > 1000
