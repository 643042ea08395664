"""Tests for `diffusers_specreg.hub`: which files an upload sends, and a failed upload that changes nothing locally.

Offline: `HF_HUB_OFFLINE=1` makes every Hub call raise at once; the successful path is checked with recording fakes.
"""

import inspect
import logging
import os
import shlex
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import huggingface_hub
import pytest
from huggingface_hub import constants

from diffusers_specreg.hub import (
    check_private_repo,
    push_output_dir,
    retry_command,
    upload_file_list,
    upload_ignore_patterns,
)

TOKEN = "hf_notARealTokenButSecret123"
KEPT = [
    "README.md",
    "model_index.json",
    "scheduler/scheduler_config.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "evaluation/samples.png",
    "training_args.json",
]
DROPPED = [
    "checkpoint-500/model.safetensors",
    "checkpoint-500/random_states_0.pkl",
    ".tmp-checkpoint-1000/optimizer.bin",
    ".train_spectral_outputs.json",
    "logs/train_spectral/events.out.tfevents.1.host",
    "sub/checkpoint-3/weights.bin",
    "upload.tmp",
    "unet/partial.tmp",
    ".huggingface/token",
    "hub.token",
    "token",
    ".env",
    ".git/config",
    ".cache/huggingface/upload/x.lock",
    ".cache/other/file.bin",
]


@pytest.fixture
def output_dir(tmp_path):
    folder = tmp_path / "ddpm-model-64"
    for i, relative in enumerate(KEPT + DROPPED):
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content {i}")
    return folder


def snapshot(folder):
    return {
        os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name)).read()
        for root, _, names in os.walk(folder)
        for name in names
    }


def test_upload_selection_excludes_checkpoints_logs_tmp_and_secrets(output_dir):
    assert upload_file_list(output_dir) == sorted(KEPT)


def test_upload_selection_matches_huggingface_hub_matcher(output_dir):
    # the selection is the one upload_folder computes itself from the same patterns
    from huggingface_hub.utils._paths import DEFAULT_IGNORE_PATTERNS

    api = huggingface_hub.HfApi()
    patterns = upload_ignore_patterns(output_dir) + ["README.md"] + DEFAULT_IGNORE_PATTERNS  # as upload_folder adds
    operations = api._prepare_upload_folder_additions(output_dir, "", ignore_patterns=patterns)
    assert sorted(op.path_in_repo for op in operations) == sorted(set(KEPT) - {"README.md"})


def test_logging_dir_pattern_follows_the_logging_dir(output_dir):
    (output_dir / "runs" / "tb").mkdir(parents=True)
    (output_dir / "runs" / "tb" / "events.out").write_text("x")
    # a custom relative logging dir, and the same given as an absolute path inside output_dir
    for logging_dir in ("runs/tb", str(output_dir / "runs" / "tb")):
        files = upload_file_list(output_dir, upload_ignore_patterns(output_dir, logging_dir))
        assert "runs/tb/events.out" not in files
        assert "logs/train_spectral/events.out.tfevents.1.host" in files  # not the logging dir any more
    # a logging dir outside output_dir adds no pattern
    outside = upload_ignore_patterns(output_dir, str(output_dir.parent / "elsewhere"))
    assert not any(p.startswith(("elsewhere", "..")) for p in outside)
    with pytest.raises(ValueError, match="sub-folder"):
        upload_ignore_patterns(output_dir, ".")


def test_logging_dir_spelled_another_way_is_still_left_out(output_dir):
    # "./logs", "logs/" and "x/../logs" name the same folder as "logs": its events never leave the machine
    for logging_dir in ("./logs", "logs/", "unet/../logs", "logs/./"):
        assert upload_file_list(output_dir, upload_ignore_patterns(output_dir, logging_dir)) == sorted(KEPT)
    for same_folder in ("./", "unet/..", str(output_dir)):
        with pytest.raises(ValueError, match="is the output folder itself"):
            upload_ignore_patterns(output_dir, same_folder)
    assert upload_ignore_patterns(output_dir, "../elsewhere") == upload_ignore_patterns(output_dir, None)


def test_retry_command_is_valid_for_the_installed_cli(output_dir):
    patterns = upload_ignore_patterns(output_dir)
    command = retry_command(output_dir, "me/model", patterns, private=True, commit_message="Epoch 3 done")
    parts = shlex.split(command)
    assert parts[:5] == ["hf", "upload", "me/model", str(output_dir), "."]
    excludes = [parts[i + 1] for i, part in enumerate(parts) if part == "--exclude"]
    assert excludes == patterns
    assert "--private" in parts and parts[parts.index("--commit-message") + 1] == "Epoch 3 done"
    # the flags exist in this huggingface_hub's `hf upload` (typer parameters of cli/upload.py)
    from huggingface_hub.cli.upload import upload

    parameters = inspect.signature(upload).parameters
    assert {"repo_id", "local_path", "path_in_repo", "exclude", "private", "commit_message"} <= set(parameters)


def test_push_offline_returns_none_and_keeps_files(output_dir, monkeypatch, caplog):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = snapshot(output_dir)
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="diffusers_specreg.hub"):
        result = push_output_dir(output_dir, "me/model", token=TOKEN, private=True)
    assert time.perf_counter() - start < 10.0  # fails fast, no network timeout
    assert result is None
    assert snapshot(output_dir) == before
    message = caplog.text
    assert "hf upload me/model" in message and str(output_dir) in message
    assert "--exclude 'checkpoint-*'" in message and "--exclude 'logs/*'" in message and "--private" in message
    assert TOKEN not in message


def test_push_passes_patterns_and_token_only_to_the_api(output_dir, monkeypatch):
    calls = {}

    class FakeRepoUrl(str):
        repo_id = "me/model"

    def fake_create_repo(repo_id, token=None, private=None, exist_ok=False, **kwargs):
        calls["create"] = dict(repo_id=repo_id, token=token, private=private, exist_ok=exist_ok)
        return FakeRepoUrl("https://huggingface.co/me/model")

    def fake_upload_folder(**kwargs):
        calls["upload"] = kwargs
        kwargs["ignore_patterns"].append("mutated by the hub")  # upload_folder extends the list it gets

    def fake_model_info(repo_id, token=None, **kwargs):  # a private push checks that the repo is private
        calls["info"] = dict(repo_id=repo_id, token=token)
        return type("Info", (), {"private": True})()

    monkeypatch.setattr(huggingface_hub, "create_repo", fake_create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", fake_upload_folder)
    monkeypatch.setattr(huggingface_hub, "model_info", fake_model_info)
    result = push_output_dir(output_dir, "model", token=TOKEN, private=True, commit_message="Epoch 1")
    assert result == "https://huggingface.co/me/model"
    assert calls["create"] == dict(repo_id="model", token=TOKEN, private=True, exist_ok=True)
    assert calls["info"] == dict(repo_id="me/model", token=TOKEN)
    upload = calls["upload"]
    assert upload["repo_id"] == "me/model" and upload["token"] == TOKEN and upload["commit_message"] == "Epoch 1"
    assert upload["folder_path"] == str(output_dir)
    assert {"checkpoint-*", "logs/*", "*.tmp", ".huggingface/*", "*.token"} <= set(upload["ignore_patterns"])
    assert "mutated by the hub" not in upload_ignore_patterns(output_dir)


def test_push_failure_in_upload_redacts_token(output_dir, monkeypatch, caplog):
    class FakeRepoUrl(str):
        repo_id = "me/model"

    def failing_upload(**kwargs):
        raise RuntimeError(f"401 Unauthorized for token {kwargs['token']}")

    monkeypatch.setattr(huggingface_hub, "create_repo", lambda *a, **k: FakeRepoUrl("https://huggingface.co/me/model"))
    monkeypatch.setattr(huggingface_hub, "upload_folder", failing_upload)
    before = snapshot(output_dir)
    with caplog.at_level(logging.WARNING, logger="diffusers_specreg.hub"):
        assert push_output_dir(output_dir, "model", token=TOKEN) is None
    assert snapshot(output_dir) == before
    assert "401 Unauthorized" in caplog.text and TOKEN not in caplog.text
    assert "hf upload me/model" in caplog.text  # the resolved repo id


def test_push_rejects_a_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        push_output_dir(tmp_path / "missing", "me/model")


# --- issue 19: --hub_private_repo never publishes into an existing public repo ----------------------------------


class FakeRepoUrl(str):
    repo_id = "me/model"


def fake_hub(monkeypatch, private_on_hub: bool | None) -> list[dict]:
    """The Hub calls push_output_dir makes, recorded; `private_on_hub`: the visibility of the existing repo "me/model"
    (None: no such repo)."""
    uploads = []

    class Info:
        private = private_on_hub

    def fake_model_info(repo_id, token=None, **kwargs):
        if private_on_hub is None or repo_id != "me/model":
            raise huggingface_hub.errors.RepositoryNotFoundError(f"404 {repo_id}", response=None)
        return Info()

    monkeypatch.setattr(huggingface_hub, "create_repo", lambda *a, **k: FakeRepoUrl("https://huggingface.co/me/model"))
    monkeypatch.setattr(huggingface_hub, "model_info", fake_model_info)
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kwargs: uploads.append(kwargs))
    monkeypatch.setattr(huggingface_hub, "whoami", lambda token=None, **kwargs: {"name": "me"})
    return uploads


def test_a_private_push_into_an_existing_public_repo_is_refused(output_dir, monkeypatch, caplog):
    uploads = fake_hub(monkeypatch, private_on_hub=False)
    before = snapshot(output_dir)
    with caplog.at_level(logging.WARNING, logger="diffusers_specreg.hub"):
        assert push_output_dir(output_dir, "model", token=TOKEN, private=True) is None
    assert uploads == [] and snapshot(output_dir) == before
    assert "Not uploaded" in caplog.text and "me/model exists and is public" in caplog.text
    assert "--hub_private_repo" in caplog.text and TOKEN not in caplog.text
    # a private repo gets the upload, and so does a public one when no privacy was asked for
    fake_hub(monkeypatch, private_on_hub=True)
    assert push_output_dir(output_dir, "model", private=True) == "https://huggingface.co/me/model"
    uploads = fake_hub(monkeypatch, private_on_hub=False)
    assert push_output_dir(output_dir, "model") == "https://huggingface.co/me/model" and len(uploads) == 1


def test_the_private_repo_check_lets_a_run_start_when_the_hub_cannot_be_asked(monkeypatch, caplog):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with caplog.at_level(logging.INFO, logger="diffusers_specreg.hub"):
        check_private_repo("me/model")  # offline: no error, every push checks again
    assert "each upload checks it first" in caplog.text
    fake_hub(monkeypatch, private_on_hub=None)
    check_private_repo("me/new-model")  # no such repo yet: it is created private


@pytest.mark.parametrize("script", ["train_spectral", "train_autoencoder"])
def test_training_with_hub_private_repo_stops_before_training_when_the_repo_is_public(tmp_path, monkeypatch, script):
    import importlib
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO))
    main = importlib.import_module(script).main
    out = tmp_path / "out"
    argv = ["--output_dir", str(out), "--push_to_hub", "--hub_private_repo", "--max_train_steps", "1"]
    fake_hub(monkeypatch, private_on_hub=False)
    with pytest.raises(ValueError, match=r"--hub_private_repo: the Hub repo me/model exists and is public"):
        main([*argv, "--hub_model_id", "me/model"])
    with pytest.raises(ValueError, match=r"me/model exists and is public"):
        main(argv[:1] + [str(tmp_path / "model")] + argv[2:])  # the default repo: the folder's name, under the user
    assert not out.exists() and not (tmp_path / "model").exists()  # nothing was written


def test_a_run_pushes_to_its_hub_target_with_the_folder_name_as_the_default_repo(output_dir, monkeypatch):
    from diffusers_specreg.hub import HubTarget, check_push_run, push_run

    target = HubTarget(str(output_dir), token=TOKEN, private=True, logging_dir="logs")
    assert target.repo == output_dir.name and TOKEN not in repr(target)
    uploads = fake_hub(monkeypatch, private_on_hub=True)
    check_push_run(None)  # no --push_to_hub: nothing to check
    check_push_run(target)
    push_run(target, "Step 4")
    assert len(uploads) == 1 and uploads[0]["commit_message"] == "Step 4" and uploads[0]["token"] == TOKEN
    assert "logs/*" in uploads[0]["ignore_patterns"]
    fake_hub(monkeypatch, private_on_hub=False)
    with pytest.raises(ValueError, match="me/model exists and is public"):
        check_push_run(HubTarget(str(output_dir), "me/model", private=True))
