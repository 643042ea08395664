"""The `__main__` of a training script: bad input found before training is one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from diffusers_specreg.data import DataError


def run_script(main: Callable[[], int], prog: str, state: dict) -> None:
    """Run `main()` and exit with its code; a `ValueError` or `DataError` raised before training started (the
    script's `state["training_started"]` still False) is printed as `{prog}: error: ...` and exits with code 2, as
    argparse does for a bad flag. Once training started, errors propagate with their traceback.

    Args:
        main (`callable`): the script's `main`, called without arguments (it parses `sys.argv`).
        prog (`str`): the script's file name, e.g. "train_spectral.py".
        state (`dict`): the script's `{"training_started": bool}`, set by `TrainingLoop.begin`.
    """
    try:
        sys.exit(main())
    except (ValueError, DataError) as error:
        if state["training_started"]:
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)  # bad input, caught before any training
        sys.exit(2)
