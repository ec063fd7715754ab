"""What every command-line entry point shares: turning expected failures into one clear line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError, FloatingPointError)


def run_cli(main: Callable[[], T]) -> T:
    """Run ``main``; bad input (missing/unreadable files, bad values) exits with status 2 and a message, no traceback."""
    try:
        return main()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
