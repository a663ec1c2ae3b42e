"""The one exception type users meet, and the CLI wrapper that prints it without a traceback."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., object])


class MRCError(Exception):
    """A problem the user can fix: a bad file, a wrong flag, missing weights.

    The message must say where (file, JSON path, flag) and what to change.
    """


def cli_entry(fn: F) -> F:
    """Run a CLI main function; an MRCError becomes `error: ...` on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MRCError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
