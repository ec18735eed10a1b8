"""The one error boundary every Raman Edge CLI shares.

Every expected failure of every package derives from `raman_core.errors.RamanError`; at the
command line it becomes one line on stderr and a non-zero exit. Anything else is a bug and
keeps its traceback, so it gets reported instead of hidden.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from raman_core.errors import RamanError

#: Exit codes: 1 a fault (bad data, device, broker), 2 a usage error, 130 interrupted.
EXIT_FAULT = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def one_line(err: BaseException) -> str:
    """The message of `err` on one line (multi-line messages are joined with ' | ')."""
    text = str(err).strip() or type(err).__name__
    return " | ".join(part.strip() for part in text.splitlines() if part.strip())


def run_cli(app: Callable[[], Any], prog: str) -> None:
    """Run a Typer app; turn an escaped `RamanError` into `prog: error: ...` and an exit code."""
    try:
        app()
    except RamanError as err:
        usage = type(err).__name__ == "UsageError"
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        sys.exit(EXIT_USAGE if usage else EXIT_FAULT)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
