"""The declared dependency floors keep the README's promises: no pickle is loaded when resuming (Accelerate reads its
checkpoint files with `weights_only=True` only from accelerate 1.1 with torch 2.4, see pyproject.toml)."""

import pickle
import re
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def declared(name: str) -> Requirement:
    """The requirement on `name` in pyproject.toml's `[project] dependencies`."""
    text = PYPROJECT.read_text(encoding="utf-8")
    block = re.search(r"^dependencies = \[(.*?)^\]", text, flags=re.S | re.M).group(1)
    for line in re.findall(r'^\s*"([^"]+)"', block, flags=re.M):
        requirement = Requirement(line)
        if requirement.name.lower() == name:
            return requirement
    raise AssertionError(f"{name} is not declared in pyproject.toml")


@pytest.mark.parametrize(
    "name,last_unsafe,first_safe",
    [
        ("torch", "2.3.1", "2.4.0"),  # accelerate drops weights_only below torch 2.4 (is_weights_only_available)
        ("accelerate", "1.0.1", "1.1.0"),  # 1.0.x and older call torch.load(...) without weights_only
    ],
)
def test_declared_floors_exclude_versions_that_unpickle_checkpoints(name, last_unsafe, first_safe):
    specifier = declared(name).specifier
    assert not specifier.contains(last_unsafe), f"{name}{specifier} allows {last_unsafe}, which unpickles checkpoints"
    assert specifier.contains(first_safe)


class RunsCode:
    """Unpickling this writes a marker file: what a crafted `random_states_0.pkl` could do with any code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def test_accelerate_loads_its_checkpoint_files_without_unpickling_code(tmp_path):
    # the installed versions (which satisfy the floors) read Accelerate's files with weights_only=True (Accelerate
    # 1.16 dropped `is_weights_only_available`: its torch floor always has it), so the behaviour is what is checked
    from accelerate.utils.other import load

    path, marker = tmp_path / "random_states_0.pkl", tmp_path / "marker"
    torch.save({"step": RunsCode(marker)}, path)
    with pytest.raises(pickle.UnpicklingError):
        load(path)
    assert not marker.exists()
    torch.save({"step": torch.tensor(3)}, path)  # tensors and plain containers still load
    assert int(load(path)["step"]) == 3
