"""Upload a training output folder to the Hugging Face Hub, without checkpoints, logs, temporary or secret files.

Diffusers' `train_unconditional.py` uploads its whole `output_dir`, `checkpoint-*/` and `logs/` included, and a
failed upload ends the run. Here:

- `upload_ignore_patterns` lists what never leaves the machine: `checkpoint-*` and `.tmp-checkpoint-*` folders (at any
  depth), the logging folder, `*.tmp` files, the run's record of its outputs and its lock, anything that could hold a credential (`.huggingface/`, `*.token`,
  files named `token`, `.env`, `.netrc`, `.git-credentials`);
- `upload_file_list` returns the files an upload would send, selected by the same matcher `upload_folder` uses
  (`huggingface_hub.utils.filter_repo_objects`, plus its own `.git` / `.cache/huggingface` rules), so the selection
  can be checked offline;
- `push_output_dir` creates the repo (`exist_ok=True`) and uploads; any failure (no network, bad token, offline mode)
  leaves the local folder untouched, logs a warning with the exact `hf upload` command (huggingface_hub >= 1.0 CLI)
  that retries the upload, and returns `None`;
- an upload asked to be private (`--hub_private_repo`) never goes into an existing public repo (`create_repo` keeps
  an existing repo's visibility, so it would publish the model): the training scripts refuse to start
  (`check_private_repo`), and every push, mid-run ones included, is refused with a warning (not uploaded, the
  local folder intact) if the repo is public by then.

The token is only ever passed to `create_repo` and `upload_folder`; it never appears in a log line or a command.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

# Folder patterns are given twice: at the top of the output folder and below it (fnmatch `*` crosses "/").
CHECKPOINT_PATTERNS = ("checkpoint-*", "*/checkpoint-*", ".tmp-checkpoint-*", "*/.tmp-checkpoint-*")
# `*.tmp` files, the record of which files a training run wrote and the lock of the run writing there
# (diffusers_specreg.train.output_dir.OUTPUTS_FILE, train.lock.LOCK_FILE)
TEMPORARY_PATTERNS = ("*.tmp", ".train_spectral_outputs.json", ".train_spectral.lock")
# upload_folder refuses any file under a `.cache/` or `.git/` folder (huggingface_hub FORBIDDEN_FOLDERS)
FORBIDDEN_PATTERNS = (".cache/*", "*/.cache/*", ".git/*", "*/.git/*")
SECRET_PATTERNS = (
    ".huggingface/*",
    "*/.huggingface/*",
    "*.token",
    "token",
    "*/token",
    ".env",
    "*/.env",
    ".netrc",
    "*/.netrc",
    ".git-credentials",
    "*/.git-credentials",
)
DEFAULT_COMMIT_MESSAGE = "Upload model trained with diffusers-specreg"


def _logging_dir_pattern(output_dir: str | os.PathLike, logging_dir: str | os.PathLike | None) -> str | None:
    """`logs/*` for a logging folder inside `output_dir` (relative, or absolute below it, however spelled: `./logs`,
    `logs/`); `None` if outside; `ValueError` if it is `output_dir` itself (`.`), whose logs no pattern could leave out."""
    if not logging_dir:
        return None
    root = os.path.abspath(os.fspath(output_dir))
    relative = os.path.relpath(os.path.abspath(os.path.join(root, os.fspath(logging_dir))), root)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return None
    if relative == os.curdir:
        raise ValueError(
            f"--logging_dir {os.fspath(logging_dir)!r} is the output folder itself: an upload of that folder could "
            "not leave the logs out. Log to a sub-folder of it (--logging_dir logs, the default) or to a folder "
            "outside it."
        )
    return f"{relative.replace(os.sep, '/')}/*"


def upload_ignore_patterns(
    output_dir: str | os.PathLike = ".",
    logging_dir: str | os.PathLike | None = "logs",
    extra_patterns: Sequence[str] = (),
) -> list[str]:
    r"""
    Glob patterns (fnmatch, as `upload_folder(ignore_patterns=...)`) of the files that are never uploaded.

    Args:
        output_dir (`str` or `os.PathLike`, defaults to `"."`): the folder to upload; only used to place an absolute
            `logging_dir`.
        logging_dir (`str` or `os.PathLike`, *optional*, defaults to `"logs"`): the tracker folder, relative to
            `output_dir` (as `train_spectral.py --logging_dir`) or absolute; a folder outside `output_dir` adds no
            pattern.
        extra_patterns (`Sequence[str]`, defaults to `()`): more patterns to exclude.

    Returns:
        `list[str]`: the patterns: checkpoints, the logging folder, temporary files, credential files, `.cache/` and
        `.git/` folders (which `upload_folder` refuses), extras.
    """
    patterns = list(CHECKPOINT_PATTERNS)
    logs = _logging_dir_pattern(output_dir, logging_dir)
    if logs is not None:
        patterns.append(logs)
    patterns += list(TEMPORARY_PATTERNS) + list(SECRET_PATTERNS) + list(FORBIDDEN_PATTERNS) + list(extra_patterns)
    return patterns


def upload_file_list(output_dir: str | os.PathLike, ignore_patterns: Sequence[str] | None = None) -> list[str]:
    r"""
    The files `upload_folder(folder_path=output_dir, ignore_patterns=ignore_patterns)` would upload, computed offline.

    Args:
        output_dir (`str` or `os.PathLike`): the folder.
        ignore_patterns (`Sequence[str]`, *optional*, defaults to `None`): patterns to exclude; `None` uses
            `upload_ignore_patterns(output_dir)` (checkpoints, `logs/`, temporary and credential files).

    Returns:
        `list[str]`: sorted POSIX paths relative to `output_dir`.
    """
    from huggingface_hub.utils import filter_repo_objects
    from huggingface_hub.utils._paths import DEFAULT_IGNORE_PATTERNS

    if not os.path.isdir(output_dir):
        raise ValueError(f"{os.fspath(output_dir)!r} is not a folder; expected the training output folder.")
    patterns = upload_ignore_patterns(output_dir) if ignore_patterns is None else list(ignore_patterns)
    root = os.path.abspath(os.fspath(output_dir))
    files = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                files.append(os.path.relpath(path, root).replace(os.sep, "/"))
    # the matcher upload_folder uses, with the patterns it always adds (.git, .cache/huggingface)
    selected = filter_repo_objects(sorted(files), ignore_patterns=patterns + list(DEFAULT_IGNORE_PATTERNS))
    return list(selected)


def retry_command(
    output_dir: str | os.PathLike,
    repo_id: str,
    ignore_patterns: Sequence[str],
    private: bool = False,
    commit_message: str | None = None,
) -> str:
    r"""
    The `hf upload` command (huggingface_hub >= 1.0 CLI) that uploads `output_dir` as `push_output_dir` does.

    Args:
        output_dir (`str` or `os.PathLike`): the folder.
        repo_id (`str`): the model repo, `"user/name"`.
        ignore_patterns (`Sequence[str]`): patterns to exclude, one `--exclude` each.
        private (`bool`, defaults to `False`): add `--private` (applies when the repo does not exist yet).
        commit_message (`str`, *optional*, defaults to `None`): the commit message.

    Returns:
        `str`: a shell-quoted command line; it carries no token (run `hf auth login` or set `HF_TOKEN` first).
    """
    parts = ["hf", "upload", repo_id, os.fspath(output_dir), "."]
    for pattern in ignore_patterns:
        parts += ["--exclude", pattern]
    if private:
        parts.append("--private")
    if commit_message:
        parts += ["--commit-message", commit_message]
    return " ".join(shlex.quote(part) for part in parts)


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def _public_repo_message(repo_id: str) -> str:
    return (
        f"the Hub repo {repo_id} exists and is public, and --hub_private_repo asks for a private one (an existing repo "
        "keeps its visibility), so uploading would publish the model. Make the repo private first (its Settings page "
        f"on the Hub, or huggingface_hub.update_repo_settings({repo_id!r}, private=True)) or pass another --hub_model_id"
    )


def check_private_repo(repo_id: str, token: str | None = None) -> None:
    r"""
    Before a run starts: raise `ValueError` if `repo_id` (a bare name is looked up under the token's user) exists and is
    public, for a run asked to upload privately. A repo that does not exist yet is fine (it is created private); when
    the Hub cannot be asked (offline, no network), every push checks again before uploading.

    Args:
        repo_id (`str`): `"user/name"`, or `"name"` for a repo under the token's user.
        token (`str`, *optional*, defaults to `None`): a Hub token; `None` uses the stored login or `HF_TOKEN`.
    """
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        if "/" not in repo_id:
            repo_id = f"{huggingface_hub.whoami(token=token)['name']}/{repo_id}"
        private = huggingface_hub.model_info(repo_id, token=token).private
    except RepositoryNotFoundError:
        return
    except Exception as error:  # offline, no network, no login: each push checks again
        logger.info(
            "Could not check the visibility of the Hub repo %s (%s); each upload checks it first.",
            repo_id,
            type(error).__name__,
        )
        return
    if private is not True:
        raise ValueError(f"--hub_private_repo: {_public_repo_message(repo_id)}.")


def push_output_dir(
    output_dir: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    logging_dir: str | os.PathLike | None = "logs",
    extra_ignore_patterns: Sequence[str] = (),
) -> str | None:
    r"""
    Create (if needed) a model repo and upload `output_dir` to it, never checkpoints, logs, temporary or secret files.

    Args:
        output_dir (`str` or `os.PathLike`): the training output folder (pipeline, `README.md`, images).
        repo_id (`str`): `"user/name"`, or `"name"` for a repo under the token's user.
        token (`str`, *optional*, defaults to `None`): a Hub token; `None` uses the stored login or `HF_TOKEN`.
        private (`bool`, defaults to `False`): create the repo private; an existing repo keeps its visibility, so
            an existing public repo gets no upload (a warning says so).
        commit_message (`str`, defaults to `"Upload model trained with diffusers-specreg"`): the commit message.
        logging_dir (`str` or `os.PathLike`, *optional*, defaults to `"logs"`): tracker folder to leave out,
            relative to `output_dir` or absolute.
        extra_ignore_patterns (`Sequence[str]`, defaults to `()`): more patterns to leave out.

    Returns:
        `str` or `None`: the repo URL (`https://huggingface.co/user/name`), or `None` when anything failed; the
        local folder is never modified, and a warning gives the `hf upload` command to retry.
    """
    if not os.path.isdir(output_dir):
        raise ValueError(f"{os.fspath(output_dir)!r} is not a folder; expected the training output folder.")
    patterns = upload_ignore_patterns(output_dir, logging_dir, extra_ignore_patterns)
    try:
        from huggingface_hub import create_repo, model_info, upload_folder

        repo_url = create_repo(repo_id, token=token, private=private, exist_ok=True)
        repo_id = repo_url.repo_id
        if private and model_info(repo_id, token=token).private is not True:
            logger.warning(
                "Not uploaded: %s. The local files are intact; once the repo is private, upload them with:\n  %s",
                _public_repo_message(repo_id),
                retry_command(output_dir, repo_id, patterns, private=private, commit_message=commit_message),
            )
            return None
        # upload_folder appends its own patterns to the list it is given: pass a copy
        upload_folder(
            repo_id=repo_id,
            folder_path=os.fspath(output_dir),
            commit_message=commit_message,
            ignore_patterns=list(patterns),
            token=token,
        )
    except Exception as error:  # network, auth, offline mode, validation: all leave the local files as they are
        command = retry_command(output_dir, repo_id, patterns, private=private, commit_message=commit_message)
        logger.warning(
            "Uploading %s to the Hub repo %s failed (%s: %s). The local files are intact. Retry with:\n  %s\n"
            "(log in first with `hf auth login`, or set HF_TOKEN)",
            os.fspath(output_dir),
            repo_id,
            type(error).__name__,
            _redact(str(error), token),
            command,
        )
        return None
    logger.info("Uploaded %s to %s", os.fspath(output_dir), repo_url)
    return str(repo_url)


__all__ = [
    "CHECKPOINT_PATTERNS",
    "DEFAULT_COMMIT_MESSAGE",
    "HubTarget",
    "check_private_repo",
    "check_push_run",
    "FORBIDDEN_PATTERNS",
    "SECRET_PATTERNS",
    "TEMPORARY_PATTERNS",
    "push_output_dir",
    "push_run",
    "retry_command",
    "upload_file_list",
    "upload_ignore_patterns",
]


@dataclass(frozen=True)
class HubTarget:
    r"""
    Where a training script uploads its output folder (`--push_to_hub`): the flags `push_output_dir` needs.

    Args:
        output_dir (`str`): `--output_dir`, the folder to upload.
        repo_id (`str`, *optional*, defaults to `None`): `--hub_model_id`; `None` uses the folder's name (under the
            token's user).
        token (`str`, *optional*, defaults to `None`): `--hub_token`; `None` uses the stored login or `HF_TOKEN`.
        private (`bool`, defaults to `False`): `--hub_private_repo`.
        logging_dir (`str`, *optional*, defaults to `"logs"`): `--logging_dir`, left out of the upload.
    """

    output_dir: str
    repo_id: str | None = None
    token: str | None = field(default=None, repr=False)
    private: bool = False
    logging_dir: str | None = "logs"

    @property
    def repo(self) -> str:
        """The repo to upload to: `repo_id`, or the output folder's name."""
        return self.repo_id or os.path.basename(os.path.abspath(self.output_dir))


def check_push_run(target: HubTarget | None) -> None:
    """Before training: `check_private_repo` for a private `target`; nothing for `None` (no `--push_to_hub`)."""
    if target is not None and target.private:
        check_private_repo(target.repo, target.token)


def push_run(target: HubTarget, commit_message: str) -> None:
    """`push_output_dir` of a training run's folder to `target` (a failed upload only warns, see there)."""
    push_output_dir(
        target.output_dir,
        target.repo,
        token=target.token,
        private=target.private,
        commit_message=commit_message,
        logging_dir=target.logging_dir,
    )
