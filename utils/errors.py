"""One exception type for mistakes a user can make, and the entry-point wrapper that prints them.

Library code raises `UserError` with a message that names the file, line or key at fault; entry
points call `run_cli(main)` so that the user sees that message, not a traceback (``--debug`` or
``TEXT4VIS_DEBUG=1`` shows the traceback too). Every entry point builds its parser with
`cli_parser`, so `--debug` is in every `--help`, and so are the options' defaults.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Callable


class UserError(Exception):
    """Bad input (config, list, CSV, data file, checkpoint): the message says what and where."""


def explain(err: BaseException) -> str | None:
    """One line for a failure of the machine rather than of the input, whose message from the
    library does not say what to do (None: not one of those)."""
    text = str(err)
    # torch words it three ways: "(pid 12) is killed by signal: Killed.", "(pid(s) 12, 13) exited
    # unexpectedly" (the main process notices first) and "(pid 12) exited unexpectedly".
    worker = re.search(
        r"DataLoader worker \(pid(?:\(s\)|s)?:? ?([\d, ]+)\) (is killed by signal: \w+|exited unexpectedly)", text
    )
    if worker:
        return (
            f"a DataLoader worker process died (pid {worker.group(1).strip()}: {worker.group(2)}); the usual "
            f"cause is the system running out of memory (the kernel's OOM killer): lower data.workers or "
            f"data.batch_size, or check `dmesg` for 'Out of memory'"
        )
    return None


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
    except RuntimeError as err:
        line = explain(err)
        if line is None:
            raise
        if debug:
            traceback.print_exc()
        print(f"error: {line}", file=sys.stderr, flush=True)
        sys.exit(1)
