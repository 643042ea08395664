"""The formulation registry (`diffusers_specreg.formulations`): every registered kind trains two steps with
`train_spectral.py`, saves, and loads the stock way (`DiffusionPipeline.from_pretrained(folder)`, plus
`trust_remote_code=True` for kinds with their own `pipeline.py`) in a fresh Python process where `diffusers_specreg`
cannot be imported, and samples the right shape there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, write_image_folder, write_unet_config, write_vae

from diffusers_specreg.formulations import FORMULATIONS, formulation_of, render_usage, select_formulation

sys.path.insert(0, str(REPO))
import train_spectral  # noqa: E402

COMMON = (
    "--train_batch_size 4 --eval_batch_size 2 --ddpm_num_steps 50 --ddpm_num_inference_steps 2 --max_train_steps 2 "
    "--eval_num_samples 0 --save_images_epochs 100 --save_model_epochs 100 --lr_warmup_steps 1 --seed 0"
).split()
AUDIO = "--modality audio --resolution 16 --sample_rate 8000 --n_fft 128 --hop_length 32 --builtin_num_clips 4".split()
# the command-line flags that select each registered kind; a new kind needs a line here
KIND_FLAGS = {
    "ddpm": [],
    # EDM also runs the end-of-training evaluation through its own pipeline, with an EDM-weighted spectral loss
    "edm": "--formulation edm --spectral_loss amplitude --spectral_weighting edm --eval_num_samples 4".split(),
    # flow matching (rectified flow), evaluated through its own Euler pipeline, with a spectral term
    "flow": "--formulation flow --spectral_loss amplitude --eval_num_samples 4".split(),
    "sagd": ["--noise_spectrum", "powerlaw:alpha=-0.5"],
    "audio": AUDIO,
    # latent diffusion on a tiny AutoencoderKL (16x16 images -> 4x8x8 latents); {vae} and {latent_config} are
    # written by the fixture, and the second --model_config_name_or_path wins
    "latent": "--vae_name_or_path {vae} --model_config_name_or_path {latent_config} --spectral_loss amplitude".split(),
}

# Run with `python -I` in an empty folder: `diffusers_specreg` (installed editable, so on sys.path even then) is
# blocked by a meta-path finder, so only torch and diffusers can serve the saved folders.
LOADER = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("diffusers_specreg", "pipelines", "train_spectral"):
                raise ModuleNotFoundError(f"blocked: {name}")
            return None

    sys.meta_path.insert(0, Block())
    try:
        import diffusers_specreg  # noqa: F401
        sys.exit("diffusers_specreg is importable")
    except ModuleNotFoundError:
        pass

    import torch
    from diffusers import DiffusionPipeline

    torch.set_num_threads(1)
    shapes = {}
    for kind, folder, custom in json.loads(sys.argv[1]):
        sys.modules.pop("diffusers_modules.local.pipeline", None)  # each folder's own pipeline.py
        pipe = DiffusionPipeline.from_pretrained(folder, **({"trust_remote_code": True} if custom else {}))
        pipe.set_progress_bar_config(disable=True)
        generator = torch.Generator().manual_seed(0)
        if kind == "audio":
            out = pipe(batch_size=2, steps=2, generator=generator)
            shapes[kind] = [len(out.images), *out.images[0].size[::-1], *out.audios.shape]
        else:
            out = pipe(batch_size=2, num_inference_steps=2, generator=generator, output_type="np")
            shapes[kind] = list(out.images.shape)
        shapes[kind + "_class"] = type(pipe).__name__
    print("SHAPES " + json.dumps(shapes))
    """
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """Two training steps of every registered kind (in this process), each saved to its own folder."""
    root = tmp_path_factory.mktemp("formulations")
    images, config = write_image_folder(root / "images", count=8), write_unet_config(root / "config")
    paths = {"vae": write_vae(root / "vae"), "latent_config": write_unet_config(root / "lconfig", 4, sample_size=8)}
    folders = {}
    for kind in FORMULATIONS:
        out = root / kind
        data = [] if kind == "audio" else ["--resolution", "16", "--train_data_dir", str(images)]
        argv = [*COMMON, *data, "--model_config_name_or_path", str(config), "--output_dir", str(out)]
        assert train_spectral.main([*argv, *(flag.format(**paths) for flag in KIND_FLAGS[kind])]) == 0
        folders[kind] = out
    return folders


def test_every_kind_has_its_flags_and_a_usage_template():
    assert set(KIND_FLAGS) == set(FORMULATIONS)
    for name, entry in FORMULATIONS.items():
        assert formulation_of(entry.pipeline_class) is entry and entry.name == name
        assert (REPO / "model_cards" / entry.usage_template).is_file()
        usage = render_usage(entry.pipeline_class, "me/x", 1000, 1000)
        assert 'DiffusionPipeline.from_pretrained("me/x"' in usage and "$" not in usage
        assert ("trust_remote_code=True" in usage) == entry.is_custom
        if entry.is_custom:
            assert (REPO / "pipelines" / entry.pipeline_file).is_file()
    assert select_formulation("ddpm", "image", coloured_noise=True).name == "sagd"
    assert select_formulation("edm", "audio").name == "audio"
    assert select_formulation("ddpm", "image", latent=True).name == "latent"
    with pytest.raises(ValueError, match="--formulation edm, a coloured --noise_spectrum"):
        select_formulation("edm", "image", coloured_noise=True, latent=True)
    with pytest.raises(ValueError, match=r"\['ddpm', 'edm', 'flow'\]"):
        select_formulation("consistency")
    with pytest.raises(ValueError, match="modality"):
        select_formulation("ddpm", "video")


def test_every_kind_trains_saves_and_loads_without_this_package(saved, tmp_path):
    folders = []
    for kind, folder in saved.items():
        entry = FORMULATIONS[kind]
        index = json.loads((folder / "model_index.json").read_text())
        assert formulation_of(index["_class_name"]) is entry
        if entry.is_custom:
            assert index["_class_name"] == ["pipeline", entry.pipeline_class]
            assert (folder / "pipeline.py").read_text() == (REPO / "pipelines" / entry.pipeline_file).read_text()
        else:
            assert index["_class_name"] == entry.pipeline_class and not (folder / "pipeline.py").exists()
        folders.append((kind, str(folder), entry.is_custom))
        card = (folder / "README.md").read_text()
        call = "trust_remote_code=True)" if entry.is_custom else ")"
        assert f'DiffusionPipeline.from_pretrained("{folder.name}"' + (", " if entry.is_custom else "") in card
        assert call in card.split(f'from_pretrained("{folder.name}"', 1)[1].split("\n", 1)[0]
    metrics = json.loads((saved["edm"] / "evaluation" / "metrics.json").read_text())["pipelines"]["edm"]
    assert metrics["pipeline_class"] == "EDMPipeline" and metrics["sampler"] == "EDMPipeline, 2 steps"
    metrics = json.loads((saved["flow"] / "evaluation" / "metrics.json").read_text())["pipelines"]["flow"]
    assert metrics["pipeline_class"] == "FlowMatchPipeline" and metrics["sampler"] == "FlowMatchPipeline, 2 steps"

    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-I", "-c", LOADER, json.dumps(folders)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    shapes = json.loads(result.stdout.split("SHAPES ", 1)[1])
    for kind in ("ddpm", "edm", "sagd", "flow"):
        assert shapes[kind] == [2, 16, 16, 1] and shapes[kind + "_class"] == FORMULATIONS[kind].pipeline_class
    # audio: two 16x16 mel images and two Griffin-Lim waveforms of 15 hops
    assert shapes["audio"] == [2, 16, 16, 2, 1, 32 * 15]
    assert shapes["audio_class"] == "AudioDiffusionPipeline"
    # latent: 4x8x8 latents decoded by the saved autoencoder (vqvae/) into RGB images at the image resolution
    assert shapes["latent"] == [2, 16, 16, 3] and shapes["latent_class"] == "LDMPipeline"
