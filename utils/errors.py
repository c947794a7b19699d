"""One exception type for mistakes a user can make, and the entry-point wrapper that prints them.

Library code raises `UserError` with a message that names the file, line or key at fault; entry
points call `run_cli(main)` so that the user sees that message, not a traceback (``--debug`` or
``TEXT4VIS_DEBUG=1`` shows the traceback too).
"""
from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable


class UserError(Exception):
    """Bad input (config, list, CSV, data file, checkpoint): the message says what and where."""


def run_cli(main: Callable[[], object]) -> None:
    debug = "--debug" in sys.argv or os.environ.get("TEXT4VIS_DEBUG") == "1"
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    try:
        main()
    except UserError as err:
        if debug:
            traceback.print_exc()
        rank = os.environ.get("RANK", "0")
        prefix = "error" if rank == "0" else f"error (rank {rank})"
        print(f"{prefix}: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
