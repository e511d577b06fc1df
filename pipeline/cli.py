"""The one way every stage starts: expected failures end in a one-line `error: ...`, not a traceback."""
from __future__ import annotations

import sys
from typing import Callable

from pipeline.params import ParamsError

# Bad params, missing inputs, unreadable sources and mismatched models: the message says what to do.
EXPECTED = (ParamsError, FileNotFoundError, ValueError, RuntimeError)


def run_stage(main: Callable[..., None], *args) -> None:
    try:
        main(*args)
    except EXPECTED as e:
        sys.exit(f"error: {e}")
