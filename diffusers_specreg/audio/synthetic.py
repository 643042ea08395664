"""Built-in synthetic audio that needs no download: chains of enveloped notes with transients.

`synthetic_audio(num_clips, sample_rate, duration_s, seed)` gives clip `i` from `np.random.default_rng([seed, i])`
alone, so the first clips of a larger set are the clips of a smaller one and a seed always gives the same clips.
"""

from __future__ import annotations

import numpy as np

from ..data import DataError

NOTE_KINDS = ("tone", "linear_chirp", "exponential_chirp", "vowel")
# Slices of built-in audio per synthetic clip.
BUILTIN_SLICES_PER_CLIP = 4


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _envelope(rng: np.random.Generator, length: int, sample_rate: int) -> np.ndarray:
    """Attack (linear), decay to a sustain level (exponential), release (linear to 0)."""
    t = np.arange(length) / sample_rate
    attack = min(rng.uniform(0.002, 0.05) * sample_rate, length / 3)
    release = min(rng.uniform(0.01, 0.1) * sample_rate, length / 3)
    sustain = rng.uniform(0.4, 0.9)
    decay_s = rng.uniform(0.05, 0.3)
    index = np.arange(length)
    envelope = sustain + (1.0 - sustain) * np.exp(-np.maximum(t - attack / sample_rate, 0.0) / decay_s)
    envelope = envelope * np.clip(index / max(attack, 1.0), 0.0, 1.0)
    envelope = envelope * np.clip((length - 1 - index) / max(release, 1.0), 0.0, 1.0)
    return envelope


def _note(rng: np.random.Generator, kind: str, length: int, sample_rate: int) -> np.ndarray:
    """One note of `length` samples, peak about 1, without envelope."""
    nyquist = sample_rate / 2
    f_low, f_high = min(55.0, 0.05 * nyquist), 0.8 * nyquist
    t = np.arange(length) / sample_rate
    duration = length / sample_rate
    phase0 = rng.uniform(0, 2 * np.pi)
    if kind == "tone":
        return np.sin(2 * np.pi * _log_uniform(rng, f_low, f_high) * t + phase0)
    if kind in ("linear_chirp", "exponential_chirp"):
        f0, f1 = _log_uniform(rng, f_low, f_high), _log_uniform(rng, f_low, f_high)
        if kind == "linear_chirp":
            # f(t) = f0 + (f1 - f0) t / T  ->  phase 2π (f0 t + (f1 - f0) t² / 2T)
            phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration))
        else:
            # f(t) = f0 k^(t/T), k = f1 / f0  ->  phase 2π f0 T (k^(t/T) - 1) / ln k
            log_k = np.log(f1 / f0)
            if abs(log_k) < 1e-6:
                phase = 2 * np.pi * f0 * t
            else:
                phase = 2 * np.pi * f0 * duration * np.expm1(log_k * t / duration) / log_k
        return np.sin(phase + phase0)
    if kind == "vowel":
        # harmonic source with vibrato, harmonics weighted by three Gaussian formant peaks
        f0_low = min(80.0, 1.5 * f_low)
        f0 = _log_uniform(rng, f0_low, max(min(400.0, f_high / 4), 1.01 * f0_low))
        depth = rng.uniform(0.005, 0.02)
        rate = rng.uniform(4.0, 7.0)
        instantaneous = f0 * (1.0 + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
        phase = 2 * np.pi * np.cumsum(instantaneous) / sample_rate
        scale = min(1.0, nyquist / 4000.0)
        formants = [rng.uniform(300, 900) * scale, rng.uniform(900, 2500) * scale, rng.uniform(2500, 3500) * scale]
        bandwidth = rng.uniform(60.0, 150.0) * scale
        num_harmonics = int(min(30, max(1, np.floor(0.9 * nyquist / (f0 * (1 + depth))))))
        signal = np.zeros(length)
        for k in range(1, num_harmonics + 1):
            gain = sum(np.exp(-0.5 * ((k * f0 - f) / bandwidth) ** 2) for f in formants) + 0.05 / k
            signal += gain * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
        return signal / max(np.abs(signal).max(), 1e-12)
    raise ValueError(f"Unknown note kind {kind!r}; expected one of {list(NOTE_KINDS)}.")


def _synthetic_clip(rng: np.random.Generator, length: int, sample_rate: int) -> np.ndarray:
    clip = np.zeros(length)
    # 1. a chain of overlapping notes that covers the whole clip (no silent stretch longer than a release)
    cursor = 0
    while cursor < length:
        note_length = max(8, int(rng.uniform(0.12, 0.7) * sample_rate))
        kind = str(rng.choice(NOTE_KINDS))
        note = _note(rng, kind, note_length, sample_rate) * _envelope(rng, note_length, sample_rate)
        end = min(cursor + note_length, length)
        clip[cursor:end] += rng.uniform(0.3, 1.0) * note[: end - cursor]
        cursor += max(1, int(note_length * rng.uniform(0.6, 1.0)))
    # 2. transients, about 3 per second: decaying white-noise bursts (5-40 ms) and clicks (1-3 samples)
    for _ in range(int(rng.poisson(3.0 * length / sample_rate)) + 1):
        onset = int(rng.integers(0, length))
        if rng.random() < 0.5:
            burst_length = max(2, int(rng.uniform(0.005, 0.04) * sample_rate))
            decay = np.exp(-np.arange(burst_length) / (burst_length / 5.0))
            burst = rng.uniform(0.3, 1.0) * rng.standard_normal(burst_length) * decay
            end = min(onset + burst_length, length)
            clip[onset:end] += burst[: end - onset]
        else:
            width = int(rng.integers(1, 4))
            clip[onset : onset + width] += rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0)
    # 3. peak normalisation to a random level in [0.5, 0.95]
    clip *= rng.uniform(0.5, 0.95) / max(np.abs(clip).max(), 1e-12)
    return clip.astype(np.float32)


def synthetic_audio(num_clips: int, sample_rate: int, duration_s: float, seed: int = 0) -> list[np.ndarray]:
    r"""
    Built-in audio that needs no download, with the fine structure a blurry spectrogram model misses.

    Every clip is a chain of overlapping notes covering the whole clip, each with an attack-decay-sustain-release
    amplitude envelope and drawn from:

    - pure tones (log-uniform frequency between 55 Hz and 0.8 × Nyquist);
    - linear chirps `f(t) = f0 + (f1 - f0) t / T` and exponential chirps `f(t) = f0 (f1 / f0)^(t / T)`;
    - "vowel-like" harmonic tones: a fundamental of 80-400 Hz with 4-7 Hz vibrato (0.5-2 % depth), harmonics
      weighted by three Gaussian formant peaks (scaled below Nyquist at low sample rates);

    overlaid with about three transients per second: exponentially decaying white-noise bursts of 5-40 ms and clicks
    of 1-3 samples (sharp onsets: broadband vertical lines in the spectrogram). Each clip is peak-normalised to a
    random level in [0.5, 0.95]. Clip `i` depends only on `(seed, i)`, so the first clips of a larger set are the
    clips of a smaller one.

    Args:
        num_clips (`int`): number of clips.
        sample_rate (`int`): sample rate in Hz.
        duration_s (`float`): duration of every clip in seconds.
        seed (`int`, defaults to 0): seed; the same seed gives the same clips.

    Returns:
        `list[np.ndarray]`: `num_clips` float32 arrays of shape `[round(duration_s * sample_rate)]` in [-1, 1].
    """
    if num_clips < 1:
        raise DataError(f"`num_clips` must be >= 1, got {num_clips}.")
    if sample_rate < 1000:
        raise DataError(f"`sample_rate` must be >= 1000 Hz, got {sample_rate}.")
    length = int(round(duration_s * sample_rate))
    if length < 1:
        raise DataError(f"`duration_s` must give at least one sample, got {duration_s} s at {sample_rate} Hz.")
    return [_synthetic_clip(np.random.default_rng([seed % 2**63, i]), length, sample_rate) for i in range(num_clips)]
