"""`python -m diffusers_specreg.evaluate`: see `diffusers_specreg.evaluate.cli.main`."""

import sys

from .cli import main

try:
    sys.exit(main())
except ValueError as error:  # bad input (DataError is a ValueError): one line, exit code 2
    print(f"evaluate: error: {error}", file=sys.stderr)
    sys.exit(2)
