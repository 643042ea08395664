"""Save a pipeline so that its folder loads the stock way, with or without this package installed.

Stock pipelines (`DDPMPipeline`, `AudioDiffusionPipeline`) load with `DiffusionPipeline.from_pretrained(folder)`.
A custom one (`EDMPipeline`, `SAGDPipeline`) follows Diffusers' convention for a pipeline saved with its model:
[`save_pipeline`] copies the file that defines the class beside the weights as `pipeline.py` and writes
`"_class_name": ["pipeline", "SAGDPipeline"]` into `model_index.json`, so that

```py
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained(folder_or_repo_id, trust_remote_code=True)
```

needs no other argument, locally and from the Hub (`diffusers/pipelines/pipeline_loading_utils.py::
_resolve_custom_pipeline_and_cls` reads `<folder>/pipeline.py` and the class name from that list; on the Hub
`DiffusionPipeline.download` fetches `pipeline.py` too). `trust_remote_code=True` is required for local folders
too. The pipeline files import only `torch` and `diffusers`, so a user without this package can sample a pushed
model.

Known Diffusers quirk: every local folder's file is imported as the same module `diffusers_modules.local.pipeline`,
so loading two *different* local custom pipelines in one process can pick the first file's module;
`sys.modules.pop("diffusers_modules.local.pipeline", None)` between the loads avoids it.

Saves are whole or not at all ([`write_atomically`]): [`save_pipeline`] and [`save_model`] write into a temporary
folder inside the target, then move each entry into place, `model_index.json` / `config.json` last. A full disk or a
kill while writing (the slow part) leaves the previous model as it was; the next save removes the leftovers.
"""

import inspect
import json
import os
import re
import shutil
import sys
from collections.abc import Callable

from diffusers import DiffusionPipeline

__all__ = [
    "CUSTOM_PIPELINE_FILE_NAME",
    "DYNAMIC_PIPELINE_MODULE",
    "save_model",
    "save_pipeline",
    "write_atomically",
    "write_custom_pipeline_file",
]

CUSTOM_PIPELINE_FILE_NAME = "pipeline.py"
DYNAMIC_PIPELINE_MODULE = "diffusers_modules.local.pipeline"

_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.", flags=re.MULTILINE)
STAGING_FOLDER = ".tmp-save"  # inside the target folder (same file system, so entries move by rename)
REPLACED_FOLDER = ".tmp-save-replaced"  # the previous entries, removed once the new ones are in place


def write_custom_pipeline_file(
    pipeline_cls: type[DiffusionPipeline] | DiffusionPipeline, folder: str | os.PathLike
) -> str:
    r"""
    Copy the source file that defines a pipeline class into `folder/pipeline.py` (see [`save_pipeline`], which also
    names the file in `model_index.json`).

    Args:
        pipeline_cls (`type[DiffusionPipeline]` or `DiffusionPipeline`):
            The pipeline class (or an instance of it), e.g. `EDMPipeline` or `SAGDPipeline`. Its module must define
            exactly one `DiffusionPipeline` subclass outside `diffusers` (Diffusers picks the class by that rule) and
            use no relative imports.
        folder (`str` or `os.PathLike`):
            The saved pipeline folder (created if missing). An existing `pipeline.py` is overwritten.

    Returns:
        `str`: the path of the written file.
    """
    if isinstance(pipeline_cls, DiffusionPipeline):
        pipeline_cls = type(pipeline_cls)
    if not (isinstance(pipeline_cls, type) and issubclass(pipeline_cls, DiffusionPipeline)):
        raise ValueError(f"Expected a DiffusionPipeline subclass or instance, got {pipeline_cls!r}.")
    if pipeline_cls.__module__.split(".")[0] == "diffusers":
        raise ValueError(f"{pipeline_cls.__name__} ships with diffusers; it loads without a custom pipeline file.")
    try:
        source_file = inspect.getsourcefile(pipeline_cls)
    except (TypeError, OSError):
        source_file = None
    if source_file is None or not os.path.isfile(source_file):
        raise ValueError(f"Cannot find the source file of {pipeline_cls.__name__}.")
    with open(source_file, encoding="utf-8") as f:
        source = f.read()
    if _RELATIVE_IMPORT.search(source):
        raise ValueError(
            f"{source_file} uses relative imports, which a copied `pipeline.py` cannot resolve; import by absolute "
            "module names instead."
        )
    module = sys.modules.get(pipeline_cls.__module__)
    if module is not None:
        pipelines = [
            name
            for name, obj in inspect.getmembers(module, inspect.isclass)
            if issubclass(obj, DiffusionPipeline)
            and obj is not DiffusionPipeline
            and obj.__module__.split(".")[0] != "diffusers"
        ]
        if pipelines != [pipeline_cls.__name__]:
            raise ValueError(
                f"{source_file} must define exactly one DiffusionPipeline subclass (Diffusers loads the only one), "
                f"found {pipelines}."
            )

    os.makedirs(folder, exist_ok=True)
    target = os.path.join(os.fspath(folder), CUSTOM_PIPELINE_FILE_NAME)
    shutil.copyfile(source_file, target)
    return target


def is_custom_pipeline(pipeline_cls: type[DiffusionPipeline] | DiffusionPipeline) -> bool:
    """Whether a pipeline class (or instance) is defined outside `diffusers`, so its folder needs `pipeline.py`."""
    if isinstance(pipeline_cls, DiffusionPipeline):
        pipeline_cls = type(pipeline_cls)
    return pipeline_cls.__module__.split(".")[0] != "diffusers"


def _fsync_files(folder: str) -> None:
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def write_atomically(folder: str | os.PathLike, write: Callable[[str], None], commit: str) -> list[str]:
    r"""
    Replace what `write` writes in `folder` as one step, or leave `folder` as it was.

    `write(staging)` fills a temporary folder inside `folder` (`.tmp-save/`); its files are flushed to disk; then
    `commit` (the file a loader reads first, e.g. `model_index.json`) is taken out of `folder`, every other entry
    replaces its namesake by a rename, and `commit` comes back in last, so a folder caught between two renames is
    no model rather than a mixed one. An exception in `write` (a full disk) removes the temporary folder and leaves
    `folder` untouched; a kill leaves it untouched but for the temporary folder, which the next call removes.
    Entries of `folder` that `write` does not write stay.

    Args:
        folder (`str` or `os.PathLike`): the target folder (created if missing).
        write (`Callable[[str], None]`): writes the new files into the folder it is given.
        commit (`str`): the top-level name moved in last.

    Returns:
        `list[str]`: the top-level names written.
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    staging, replaced = os.path.join(folder, STAGING_FOLDER), os.path.join(folder, REPLACED_FOLDER)
    for leftover in (staging, replaced):  # of a save that was killed
        _remove(leftover)
    try:
        write(staging)
        _fsync_files(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    names = sorted(os.listdir(staging), key=lambda name: name == commit)  # `commit` last
    os.makedirs(replaced)
    if commit in names and os.path.lexists(os.path.join(folder, commit)):
        os.replace(os.path.join(folder, commit), os.path.join(replaced, commit))
    for name in names:
        target = os.path.join(folder, name)
        if os.path.lexists(target):
            os.replace(target, os.path.join(replaced, name))
        os.replace(os.path.join(staging, name), target)
    shutil.rmtree(replaced)
    os.rmdir(staging)
    return names


def save_model(model, folder: str | os.PathLike) -> None:
    """`model.save_pretrained(folder)` (safetensors) for a Diffusers model such as `AutoencoderKL`, whole or not at
    all ([`write_atomically`], `config.json` last)."""
    write_atomically(folder, lambda staging: model.save_pretrained(staging, safe_serialization=True), "config.json")


def save_pipeline(pipeline: DiffusionPipeline, folder: str | os.PathLike) -> None:
    r"""
    `pipeline.save_pretrained(folder)` (safetensors), plus, for a pipeline class defined outside `diffusers`, its file
    as `folder/pipeline.py` and `"_class_name": ["pipeline", "<Class>"]` in `model_index.json`: the folder then loads
    with `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` and nothing else. Whole or not at all:
    a save cut short (full disk, kill) leaves the previous pipeline in `folder` as it was ([`write_atomically`]).

    Args:
        pipeline (`DiffusionPipeline`): the pipeline to save.
        folder (`str` or `os.PathLike`): the output folder (created if missing).
    """
    write_atomically(folder, lambda staging: _save_pipeline_files(pipeline, staging), "model_index.json")


def _save_pipeline_files(pipeline: DiffusionPipeline, folder: str) -> None:
    pipeline.save_pretrained(folder, safe_serialization=True)
    if not is_custom_pipeline(pipeline):
        return
    write_custom_pipeline_file(type(pipeline), folder)
    index_path = os.path.join(os.fspath(folder), "model_index.json")
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    index["_class_name"] = [os.path.splitext(CUSTOM_PIPELINE_FILE_NAME)[0], type(pipeline).__name__]
    with open(index_path, "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")
