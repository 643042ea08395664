"""Issue 19 (cases 4-8, 10-12): a run deletes only what it wrote, writes into a folder no other run is using, never
replaces the model or data it reads, and saves its pipeline whole or not at all. Real files, real saves, real runs of
the scripts on tiny data."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    REPO,
    launch,
    launch_in_background,
    tiny_unet,
    wait_until_training,
    write_image_folder,
    write_unet_config,
    write_vae,
)
from diffusers import DDPMPipeline, DDPMScheduler, DiffusionPipeline

from diffusers_specreg import hub, run_settings
from diffusers_specreg.train import arguments

sys.path.insert(0, str(REPO))
from test_train_spectral import FAST, tiny_run  # noqa: E402

import train_autoencoder  # noqa: E402
import train_spectral  # noqa: E402

QUIET = dict(save_images_epochs=100, eval_num_samples=0, lr_scheduler="constant")
LOCK_FILE = ".train_spectral.lock"


def run(images, config, out, *extra, **options) -> int:
    return train_spectral.main([*tiny_run(images, config, out, **options), *extra])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def recorded(out: Path) -> list[str]:
    return json.loads((out / run_settings.OUTPUTS_FILE).read_text())["outputs"]


def save_ddpm(folder: Path, seed: int = 0) -> None:
    DDPMPipeline(unet=tiny_unet(seed), scheduler=DDPMScheduler(num_train_timesteps=50)).save_pretrained(folder)


# --- 4, 5. the record names what this run writes, all of it and nothing else ---------------------------------------


def test_a_latent_runs_autoencoder_goes_with_the_overwrite_and_is_not_uploaded_with_the_next_model(tmp_path):
    images = write_image_folder(tmp_path / "images", count=8, mode="RGB")
    vae = write_vae(tmp_path / "vae")
    latent_config = write_unet_config(tmp_path / "latent_config", channels=4, sample_size=8)
    pixel_config = write_unet_config(tmp_path / "pixel_config", channels=3)
    out = tmp_path / "out"
    assert run(images, latent_config, out, vae_name_or_path=vae, max_train_steps=1, **QUIET) == 0
    assert (out / "vqvae" / "config.json").is_file() and "vqvae" in recorded(out)
    assert run(images, pixel_config, out, "--overwrite_output_dir", max_train_steps=1, **QUIET) == 0
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"
    assert not (out / "vqvae").exists()
    assert not [name for name in hub.upload_file_list(out) if name.startswith("vqvae/")]


@pytest.mark.parametrize("name", ["unet", "scheduler", "logs"])
def test_a_users_folder_where_the_run_would_write_stops_the_run(tmp_path, image_folder, tiny_config, name):
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    (out / name / "mine.txt").write_text("the user's own")
    before = snapshot(out)
    for extra in ([], ["--overwrite_output_dir"]):
        with pytest.raises(ValueError, match=f"holds {name}, which no training run wrote there"):
            run(image_folder, tiny_config, out, *extra, max_train_steps=1, **QUIET)
    assert snapshot(out) == before


def test_the_record_is_what_the_run_wrote_and_a_users_folder_it_did_not_write_survives(
    tmp_path, image_folder, tiny_config
):
    out = tmp_path / "out"
    for name in ("mel", "vqvae"):  # an image run writes neither
        (out / name).mkdir(parents=True)
        (out / name / "config.json").write_text('{"mine": true}')
    assert run(image_folder, tiny_config, out, max_train_steps=1, **QUIET) == 0
    written = {p.name for p in out.iterdir()} - {"mel", "vqvae", run_settings.OUTPUTS_FILE}
    assert (
        set(recorded(out))
        == written
        == {"model_index.json", "unet", "scheduler", "README.md", "training_args.json", "logs"}
    )
    assert run(image_folder, tiny_config, out, "--overwrite_output_dir", max_train_steps=1, **QUIET) == 0
    assert (out / "mel" / "config.json").read_text() == (out / "vqvae" / "config.json").read_text() == '{"mine": true}'


@pytest.mark.parametrize("kind", ["ddpm", "edm", "sagd", "audio", "latent"])
def test_the_names_a_run_records_are_what_its_pipeline_save_writes(tmp_path, kind):
    from diffusers_specreg.audio import make_mel
    from diffusers_specreg.formulations import SchedulerSettings
    from diffusers_specreg.latent import load_vae

    flags = {
        "ddpm": [],
        "edm": ["--formulation", "edm"],
        "sagd": ["--noise_spectrum", "powerlaw:alpha=-0.5"],
        "audio": ["--modality", "audio"],
        "latent": ["--vae_name_or_path", str(write_vae(tmp_path / "vae"))],
    }[kind]
    args = train_spectral.parse_args(["--output_dir", str(tmp_path / "out"), "--eval_num_samples", "0", *flags])
    settings = arguments.derived_settings(args)
    entry = settings.formulation
    channels = {"audio": 1, "latent": 4}.get(kind, 3)
    unet = tiny_unet(channels=channels, sample_size=16)
    scheduler = entry.build_scheduler(SchedulerSettings(num_train_timesteps=50))
    mel = make_mel(16, sample_rate=8000, n_fft=128, hop_length=32) if kind == "audio" else None
    vae = load_vae(args.vae_name_or_path) if kind == "latent" else None
    pipeline = train_spectral.make_pipeline(settings, unet, scheduler, False, mel=mel, vae=vae)
    folder = tmp_path / "saved"
    from diffusers_specreg.pipelines_io import save_pipeline

    save_pipeline(pipeline, folder)
    expected = set(train_spectral.run_output_names(args, settings)) - {"README.md", "training_args.json"}
    assert {p.name for p in folder.iterdir()} == expected


# --- 6, 7. a folder without a record: only what its files show to be a pipeline of ours ----------------------------


def test_model_index_keys_never_name_anything_outside_the_folder(tmp_path):
    out = tmp_path / "out"
    save_ddpm(out)
    victims = [tmp_path / "victim", tmp_path / "elsewhere" / "victim2"]
    for victim in victims:
        victim.mkdir(parents=True)
        (victim / "precious.txt").write_text("not the run's")
    index = json.loads((out / "model_index.json").read_text())
    index.update({"../victim": ["diffusers", "DDPMScheduler"], str(victims[1]): ["diffusers", "DDPMScheduler"]})
    (out / "model_index.json").write_text(json.dumps(index))
    run_settings.check_output_dir(str(out), None, True)
    run_settings.claim_output_dir(str(out), None, True)
    assert all((victim / "precious.txt").read_text() == "not the run's" for victim in victims)
    assert not (out / "unet").exists() and not (out / "model_index.json").exists()  # the pipeline itself did go


def test_without_a_record_a_users_evaluation_and_pipeline_py_stop_the_overwrite(tmp_path):
    out = tmp_path / "train_unconditional_output"  # what Diffusers' train_unconditional.py leaves: no record
    save_ddpm(out)
    (out / "evaluation").mkdir()
    (out / "evaluation" / "my_fid.md").write_text("FID 12.3, computed by hand")
    (out / "pipeline.py").write_text("# my own sampler\n")
    before = snapshot(out)
    with pytest.raises(ValueError, match="holds pipeline.py, evaluation, which no training run wrote there"):
        run_settings.check_output_dir(str(out), None, True)
    assert snapshot(out) == before


def test_without_a_record_an_older_versions_custom_pipeline_and_evaluation_go_with_the_overwrite(tmp_path):
    from diffusers_specreg.formulations import FORMULATIONS, SchedulerSettings
    from diffusers_specreg.pipelines import EDMPipeline
    from diffusers_specreg.pipelines_io import save_pipeline

    out = tmp_path / "older"
    scheduler = FORMULATIONS["edm"].build_scheduler(SchedulerSettings())
    save_pipeline(EDMPipeline(unet=tiny_unet(), scheduler=scheduler), out)
    (out / "evaluation").mkdir()
    (out / "evaluation" / "metrics.json").write_text(json.dumps({"data": {}, "pipelines": {}, "spectra": {}}))
    (out / "evaluation" / "samples.png").write_bytes(b"png")
    run_settings.check_output_dir(str(out), None, True)
    run_settings.claim_output_dir(str(out), None, True)
    assert not {"pipeline.py", "evaluation", "model_index.json", "unet", "scheduler"} & {p.name for p in out.iterdir()}


# --- 8, 12. what the run reads is never what it replaces --------------------------------------------------------


@pytest.mark.parametrize("inside", ["", "unet"])
def test_fine_tuning_a_model_into_its_own_folder_is_refused_before_training(tmp_path, image_folder, inside):
    out = tmp_path / "model"
    save_ddpm(out)
    before = snapshot(out)
    source = out / inside if inside else out
    argv = [*FAST, "--train_data_dir", str(image_folder), "--pretrained_model_name_or_path", str(source)]
    argv += ["--output_dir", str(out), "--overwrite_output_dir", "--max_train_steps", "1", "--eval_num_samples", "0"]
    with pytest.raises(ValueError, match="being fine-tuned"):
        train_spectral.main(argv)
    assert snapshot(out) == before


def test_the_autoencoder_of_a_latent_model_in_its_own_folder_is_refused(tmp_path):
    out = tmp_path / "ldm"
    (out / "vqvae").mkdir(parents=True)
    with pytest.raises(ValueError, match="--vae_name_or_path .* inside --output_dir"):
        run_settings.check_inputs(str(out), {"--vae_name_or_path": str(out / "vqvae")}, {}, ["vqvae"])


def test_output_dir_inside_the_training_data_is_refused_before_training(tmp_path, tiny_config):
    images = write_image_folder(tmp_path / "images")
    before = snapshot(images)
    for out in (images / "out", images):
        with pytest.raises(ValueError, match="--train_data_dir"):
            run(images, tiny_config, out, max_train_steps=1, eval_num_samples=2)
    autoencoder = [*train_autoencoder_fast(), "--train_data_dir", str(images), "--output_dir", str(images / "ae")]
    with pytest.raises(ValueError, match="--train_data_dir"):
        train_autoencoder.main(autoencoder)
    assert snapshot(images) == before


def train_autoencoder_fast() -> list[str]:
    from test_train_autoencoder import FAST as AE_FAST

    return [*AE_FAST, "--max_train_steps", "1", "--num_validation_images", "2", "--resolution", "16"]


def test_training_data_inside_what_the_overwrite_deletes_is_refused_before_training(
    tmp_path, image_folder, tiny_config
):
    out = tmp_path / "out"
    assert run(image_folder, tiny_config, out, max_train_steps=1, eval_num_samples=2, save_images_epochs=100) == 0
    data = out / "evaluation"  # the previous run's sample grids, now named as training data
    before = snapshot(data)
    with pytest.raises(ValueError, match="--train_data_dir .* inside --output_dir"):
        run(data, tiny_config, out, "--overwrite_output_dir", max_train_steps=1, **QUIET)
    assert snapshot(data) == before


def test_a_local_dataset_name_counts_as_training_data(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(ValueError, match="--dataset_name"):
        run_settings.check_inputs(str(data / "out"), {}, {"--dataset_name": str(data)}, [])
    run_settings.check_inputs(str(data / "out"), {}, {"--dataset_name": "user/remote-dataset"}, [])


# --- 10. one run at a time in a folder ------------------------------------------------------------------------------


def test_a_second_run_into_a_folder_in_use_stops_and_sigterm_releases_the_lock(tmp_path, image_folder, tiny_config):
    out = tmp_path / "out"
    args = tiny_run(image_folder, tiny_config, out, max_train_steps=100000, checkpointing_steps=100000)
    first = launch_in_background(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_training(out / "logs", first)  # its signal handlers are installed
        assert first.poll() is None
        with pytest.raises(ValueError, match="is in use by another training run") as refused:
            run(image_folder, tiny_config, out, "--overwrite_output_dir", max_train_steps=1, **QUIET)
        owner = json.loads((out / LOCK_FILE).read_text())
        assert f"pid {owner['pid']} on {socket.gethostname()}" in str(refused.value)
        os.killpg(first.pid, signal.SIGTERM)  # a scheduler's stop: the first run checkpoints and exits
        _, stderr = first.communicate(timeout=300)  # the pipe closes when the training process has exited too
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert "Interrupted (SIGTERM): saved checkpoint-" in stderr, stderr[-3000:]
    assert len(list(out.glob("checkpoint-*"))) == 1 and (out / "logs").is_dir()  # the second run deleted nothing
    assert not (out / LOCK_FILE).exists()


def write_lock(out: Path, **owner) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    lock = out / run_settings.LOCK_FILE
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), **owner}))
    return lock


def finished_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_stale_lock_is_taken_over_and_released(tmp_path, caplog):
    out = tmp_path / "out"
    for stale in ({"pid": finished_pid()}, {"started": -1}):  # a process that ended; a pid reused since
        lock = write_lock(out, **stale)
        with run_settings.OutputDirLock(str(out)):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
            assert LOCK_FILE not in hub.upload_file_list(out)  # a push while the run holds it leaves it out
        assert not lock.exists() and out.is_dir()  # the folder was there before: it stays
    assert caplog.text.count("stale lock") == 2


def test_a_lock_of_another_host_or_unreadable_is_never_taken_over(tmp_path):
    out = tmp_path / "out"
    lock = write_lock(out, host="gpu-node-7")
    with pytest.raises(ValueError, match=f"pid {os.getpid()} on gpu-node-7.*delete {re.escape(str(lock))}"):
        run_settings.OutputDirLock(str(out)).__enter__()
    lock.write_text("")
    with pytest.raises(ValueError, match="cannot be read"):
        run_settings.OutputDirLock(str(out)).__enter__()
    assert lock.read_text() == ""


def test_sigterm_before_training_exits_through_the_lock(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        with run_settings.OutputDirLock(str(out)):
            os.kill(os.getpid(), signal.SIGTERM)  # e.g. while the data are scanned: no handler of the loop's yet
            time.sleep(10)
    assert exited.value.code == 143 and not out.exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_the_lock_goes_when_the_run_stops_on_bad_input(tmp_path, tiny_config):
    empty = tmp_path / "no_images"
    empty.mkdir()
    out = tmp_path / "out"
    with pytest.raises(ValueError):
        run(empty, tiny_config, out, max_train_steps=1, **QUIET)
    assert not out.exists()  # made for the lock only, and removed with it
    out.mkdir()
    with pytest.raises(ValueError):
        run(empty, tiny_config, out, max_train_steps=1, **QUIET)
    assert out.is_dir() and not list(out.iterdir())


def test_only_the_main_process_of_a_two_process_run_takes_the_lock(tmp_path, image_folder, tiny_config):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = launch(tiny_run(image_folder, tiny_config, out, max_train_steps=1, **QUIET), 2, check=False)
        assert result.returncode != 0 and "is in use by another training run" in result.stderr
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == holder.pid  # neither rank removed it
    finally:
        holder.kill()
        holder.wait()
    assert [p.name for p in out.iterdir()] == [LOCK_FILE]  # nothing else was written


HOLD_LOCK = """
import sys, time
from diffusers_specreg.run_settings import OutputDirLock
lock = OutputDirLock(sys.argv[1]).__enter__()
print("locked", flush=True)
time.sleep(600)
"""


# --- 11. a pipeline save is whole or not at all ---------------------------------------------------------------------


SAVE_UNDER_LIMIT = """
import os, resource, signal, sys
from conftest import tiny_unet, write_vae
from diffusers import DDPMPipeline, DDPMScheduler
from safetensors import SafetensorError
from diffusers_specreg import pipelines_io

kind, folder = sys.argv[1:3]
if kind == "pipeline":
    model, save = DDPMPipeline(unet=tiny_unet(1), scheduler=DDPMScheduler(num_train_timesteps=50)), "save_pipeline"
else:
    from diffusers import AutoencoderKL
    model = AutoencoderKL.from_pretrained(write_vae(__import__("pathlib").Path(folder + "-new"), seed=1))
    save = "save_model"
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
# room for part of the first file saved (a config.json; safetensors itself writes a temporary file and renames it)
resource.setrlimit(resource.RLIMIT_FSIZE, (256, resource.RLIM_INFINITY))
# 1. a write past the limit fails (EFBIG), as one on a full disk does (ENOSPC)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
try:
    getattr(pipelines_io, save)(model, folder)
except (OSError, SafetensorError) as error:
    print(f"save failed: {type(error).__name__}", flush=True)
print("left:", sorted(name for name in os.listdir(folder) if name.startswith(".tmp-save")), flush=True)
# 2. the kernel kills the process at that write (SIGXFSZ, which Python ignores by default), as a kill -9 would
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
getattr(pipelines_io, save)(model, folder)
"""


@pytest.mark.parametrize("kind", ["pipeline", "autoencoder"])
def test_a_save_cut_short_leaves_the_previous_model_whole(tmp_path, kind):
    from diffusers import AutoencoderKL

    from diffusers_specreg import pipelines_io

    out = tmp_path / "out"
    if kind == "pipeline":
        pipelines_io.save_pipeline(
            DDPMPipeline(unet=tiny_unet(0), scheduler=DDPMScheduler(num_train_timesteps=50)), out
        )
    else:
        write_vae(out, seed=0)
    before = snapshot(out)
    child = subprocess.run(
        [sys.executable, "-c", SAVE_UNDER_LIMIT, kind, str(out)],
        cwd=REPO / "tests",
        env=dict(os.environ, PYTHONPATH=str(REPO / "tests"), OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGXFSZ, child.stdout + child.stderr[-3000:]
    assert child.stdout.splitlines()[:2] == ["save failed: OSError", "left: []"]  # the failed save cleaned up
    after = {k: v for k, v in snapshot(out).items() if not k.startswith(".tmp-save")}
    assert after == before  # the previous model, every byte; the kill left at most the temporary folder
    if kind == "autoencoder":
        assert AutoencoderKL.from_pretrained(out).config.block_out_channels == [8, 16]  # loads
        return
    loaded = DiffusionPipeline.from_pretrained(out).unet.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(loaded.values(), tiny_unet(0).state_dict().values()))
    # the next save replaces the leftovers of the killed one and is complete
    pipelines_io.save_pipeline(DDPMPipeline(unet=tiny_unet(2), scheduler=DDPMScheduler(num_train_timesteps=50)), out)
    assert sorted(p.name for p in out.iterdir()) == ["model_index.json", "scheduler", "unet"]
    new = DiffusionPipeline.from_pretrained(out).unet.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(new.values(), tiny_unet(2).state_dict().values()))
