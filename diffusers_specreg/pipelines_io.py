"""Make a saved pipeline folder loadable without this package's import path: copy the pipeline's file into it.

Diffusers (0.42) loads a pipeline class from a file named `pipeline.py` in a local folder or Hub repo:

```py
from diffusers import DiffusionPipeline

# local folder written by `pipe.save_pretrained(folder)` plus `write_custom_pipeline_file(type(pipe), folder)`
pipe = DiffusionPipeline.from_pretrained(folder, custom_pipeline=folder, trust_remote_code=True)
# the same folder uploaded to the Hub as "user/repo"
pipe = DiffusionPipeline.from_pretrained("user/repo", custom_pipeline="user/repo", trust_remote_code=True)
```

How Diffusers resolves it (`diffusers/pipelines/pipeline_loading_utils.py::_get_custom_pipeline_class` and
`diffusers/utils/dynamic_modules_utils.py::get_cached_module_file`): a `custom_pipeline` that is neither a `.py`
path nor a file `<folder>/<custom_pipeline>.py` is a folder or repo id, from which `pipeline.py` is read (a local
file if `<custom_pipeline>/pipeline.py` exists, else `hf_hub_download(custom_pipeline, "pipeline.py")`); it is
copied into `HF_MODULES_CACHE/diffusers_modules/...` and the single `DiffusionPipeline` subclass defined in it is
used. `trust_remote_code=True` is required for local folders too. The file must not use relative imports; it may
import installed packages (the SAGD pipeline imports `diffusers_specreg`, so that package must be installed).

Known Diffusers quirk: every local folder's file is imported as the same module `diffusers_modules.local.pipeline`,
so loading two *different* local custom pipelines in one process fails with "Multiple classes that inherit from
DiffusionPipeline have been found"; `sys.modules.pop("diffusers_modules.local.pipeline", None)` between the loads
avoids it.
"""

import inspect
import os
import re
import shutil
import sys

from diffusers import DiffusionPipeline

__all__ = ["CUSTOM_PIPELINE_FILE_NAME", "write_custom_pipeline_file"]

CUSTOM_PIPELINE_FILE_NAME = "pipeline.py"

_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.", flags=re.MULTILINE)


def write_custom_pipeline_file(
    pipeline_cls: type[DiffusionPipeline] | DiffusionPipeline, folder: str | os.PathLike
) -> str:
    r"""
    Copy the source file that defines a pipeline class into `folder/pipeline.py`, so that the folder (and a Hub repo
    made from it) loads with `DiffusionPipeline.from_pretrained(folder, custom_pipeline=folder,
    trust_remote_code=True)` (`custom_pipeline="user/repo"` on the Hub).

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
