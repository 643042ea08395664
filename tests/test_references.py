"""Agreement with the reference implementations: pytorchfwd (FWD, by the paper's authors) and auraloss (MR-STFT).

pytorchfwd declares torchvision, which has no CPU build for the torch used here, and pulls a CUDA torch when installed
with its dependencies; the README's test command installs it with `pip install --no-deps pytorchfwd==1.0.1 ptwt==0.1.8`
(the ptwt it pins; ptwt needs only torch, numpy and PyWavelets). Its `fwd.py` imports torchvision and sets torch's default dtype to float64 at import, so these tests
call its `freq_math` functions (the packet transform and the Fréchet distance) and redo its two-line statistics step
(`compute_packet_statistics`: mean and `torch.cov` per packet). auraloss needs only torch and numpy.
"""

import numpy as np
import pytest
import torch

from diffusers_specreg.losses import MultiResolutionSTFTLoss, STFTLoss
from diffusers_specreg.metrics import FrechetWaveletDistance


def _reference_fwd(real01: torch.Tensor, fake01: torch.Tensor, wavelet: str, level: int) -> float:
    """pytorchfwd's FWD of two image sets in [0, 1] (what its ToTensor loader gives), float64 as its fwd.py runs."""
    freq_math = pytest.importorskip("pytorchfwd.freq_math")

    def statistics(images):
        packets = freq_math.forward_wavelet_packet_transform(images, wavelet, level, log_scale=False)
        packets = packets.permute(1, 0, 2, 3, 4)  # [P, B, C, h, w], as compute_packet_statistics
        flat = packets.reshape(packets.shape[0], packets.shape[1], -1)
        return flat.mean(dim=1).numpy(), torch.stack([torch.cov(p.T) for p in flat]).numpy()

    (mu1, sigma1), (mu2, sigma2) = statistics(real01), statistics(fake01)
    return float(
        np.mean([freq_math.calculate_frechet_distance(mu1[p], sigma1[p], mu2[p], sigma2[p]) for p in range(len(mu1))])
    )


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
@pytest.mark.parametrize("size,level", [(16, 2), (32, 3)])
def test_fwd_agrees_with_pytorchfwd(method, size, level):
    pytest.importorskip("ptwt")
    generator = torch.Generator().manual_seed(0)
    # 8-bit images as PNG files hold them; the generated set is smoothed so the two distributions differ
    real = torch.randint(0, 256, (160, 3, size, size), generator=generator).double() / 255.0
    fake = torch.randint(0, 256, (160, 3, size, size), generator=generator).double() / 255.0
    fake = (fake + fake.roll(1, dims=-1) + fake.roll(1, dims=-2)) / 3.0
    expected = _reference_fwd(real, fake, "haar", level)
    fwd = FrechetWaveletDistance(wavelet="haar", level=level, method=method)  # data_range (-1, 1) -> [0, 1]
    for start in range(0, 160, 48):  # streamed in uneven batches
        fwd.update(real[start : start + 48] * 2 - 1, real=True)
        fwd.update(fake[start : start + 48] * 2 - 1, real=False)
    value = fwd.compute()
    assert expected > 0.01  # the sets really differ, so a relative comparison means something
    assert value == pytest.approx(expected, rel=1e-2)
    assert value == pytest.approx(expected, rel=1e-6)  # in fact they agree to round-off


def _auraloss():
    return pytest.importorskip("auraloss.freq")


SMALL = {"fft_sizes": (64, 128, 32), "hop_sizes": (16, 32, 8), "win_lengths": (48, 128, 24)}


@pytest.mark.parametrize("channels", [1, 2])
def test_mrstft_equals_auraloss_per_sample(channels):
    # auraloss computes spectral convergence over the whole batch (one Frobenius ratio for all samples) while ours is
    # per sample (reduction="none" must give one value per sample): compare each sample on its own, where both agree
    freq = _auraloss()
    generator = torch.Generator().manual_seed(1)
    prediction = torch.randn(3, channels, 1024, generator=generator)
    target = torch.randn(3, channels, 1024, generator=generator)
    ours = MultiResolutionSTFTLoss(**SMALL, reduction="none")(prediction, target)
    reference = freq.MultiResolutionSTFTLoss(**SMALL)
    expected = torch.stack([reference(prediction[i : i + 1], target[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


def test_mrstft_default_resolutions_equal_auraloss_defaults():
    freq = _auraloss()
    generator = torch.Generator().manual_seed(2)
    prediction, target = torch.randn(1, 1, 4096, generator=generator), torch.randn(1, 1, 4096, generator=generator)
    reference = freq.MultiResolutionSTFTLoss()  # (1024, 2048, 512), hops (120, 240, 50), windows (600, 1200, 240)
    ours = MultiResolutionSTFTLoss()
    torch.testing.assert_close(ours(prediction, target), reference(prediction, target), rtol=1e-5, atol=1e-6)


def test_stft_eps_convention_differs_from_auraloss_only_near_silence():
    # auraloss clamps the power at eps = 1e-8 (magnitudes >= 1e-4) and takes log(S); ours takes log(S + 1e-7) and adds
    # eps to the convergence denominator. Same value on ordinary signals, both finite on silence, where they differ.
    freq = _auraloss()
    generator = torch.Generator().manual_seed(3)
    target = torch.randn(1, 1, 512, generator=generator)
    silence = torch.zeros(1, 1, 512)
    ours = STFTLoss(n_fft=64, hop_length=16, win_length=64)
    reference = freq.STFTLoss(fft_size=64, hop_size=16, win_length=64)
    loud = torch.randn(1, 1, 512, generator=generator)
    torch.testing.assert_close(ours(loud, target), reference(loud, target), rtol=1e-5, atol=1e-6)
    value_ours, value_reference = ours(silence, target), reference(silence, target)
    assert torch.isfinite(value_ours) and torch.isfinite(value_reference)
    # log(1e-7) vs log(1e-4) for the silent prediction: ours penalises silence harder
    assert value_ours > value_reference + 1.0
