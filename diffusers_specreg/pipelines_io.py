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
"""

import inspect
import json
import os
import re
import shutil
import sys

from diffusers import DiffusionPipeline

__all__ = ["CUSTOM_PIPELINE_FILE_NAME", "DYNAMIC_PIPELINE_MODULE", "save_pipeline", "write_custom_pipeline_file"]

CUSTOM_PIPELINE_FILE_NAME = "pipeline.py"
DYNAMIC_PIPELINE_MODULE = "diffusers_modules.local.pipeline"

_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.", flags=re.MULTILINE)


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


def save_pipeline(pipeline: DiffusionPipeline, folder: str | os.PathLike) -> None:
    r"""
    `pipeline.save_pretrained(folder)` (safetensors), plus, for a pipeline class defined outside `diffusers`, its file
    as `folder/pipeline.py` and `"_class_name": ["pipeline", "<Class>"]` in `model_index.json`: the folder then loads
    with `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` and nothing else.

    Args:
        pipeline (`DiffusionPipeline`): the pipeline to save.
        folder (`str` or `os.PathLike`): the output folder (created if missing).
    """
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
