"""One exception type for mistakes a user can make, and the entry-point wrapper that prints them.

Library code raises `UserError` with a message that names the file, line or key at fault; entry
points call `run_cli(main)` so that the user sees that message, not a traceback (``--debug`` or
``TEXT4VIS_DEBUG=1`` shows the traceback too). Every entry point builds its parser with
`cli_parser`, so `--debug` is in every `--help`, and so are the options' defaults.

The same line reaches the user whichever process the error happens in: a DataLoader worker's
UserError arrives in the main process wrapped in the worker's traceback (`user_message` takes the
line back out), and a rank started by `python -m utils.launch` (the shell scripts' torchrun) hands
its line to the launcher through torchrun's error file instead of printing it, so the launcher
prints the first rank's line once (`utils.launch`). The line is also the last line of the run's
`log.txt` when the failing process has one open.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

# Set by utils.launch for the ranks it starts: report through torchrun's error file, not stderr.
LAUNCHER_ENV = "TEXT4VIS_LAUNCHER"
# The logger whose file handlers (a run's log.txt) receive the failure line (utils.logger's).
RUN_LOGGER = "Text4Vis"


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


# torch's ExceptionWrapper.reraise: "Caught <Type> in DataLoader worker process <n>.\nOriginal
# Traceback (most recent call last):\n..." and then the worker's exception lines.
_WORKER_WRAP = re.compile(r"Caught (\w+) in DataLoader worker process \d+\.\nOriginal Traceback")


def _user_error_names() -> set[str]:
    names, todo = set(), [UserError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def user_message(err: BaseException) -> str | None:
    """The one-line message of a UserError, also of one raised in a DataLoader worker (None: not
    a user's error).

    torch re-raises a worker's exception in the main process as the same type (or RuntimeError
    when that type cannot be built from one message), whose message is "Caught <Type> in
    DataLoader worker process <n>." followed by the worker's whole traceback; the user's line is
    the text after `<module>.<Type>: ` on the traceback's last exception line."""
    text = str(err)
    wrapped = _WORKER_WRAP.match(text)
    if wrapped is None:
        return text if isinstance(err, UserError) else None
    name = wrapped.group(1)
    if name not in _user_error_names():
        return None
    lines = list(re.finditer(rf"^(?:[\w.]+\.)?{name}: (.*?)\s*\Z", text, re.M | re.S))
    return lines[-1].group(1) if lines else text.strip().splitlines()[-1]


def _rank() -> str:
    return os.environ.get("RANK", "0")


def error_line(message: str) -> str:
    """`error: MESSAGE`, naming the rank when it is not rank 0 (torchrun)."""
    rank = _rank()
    return f"error: {message}" if rank == "0" else f"error (rank {rank}): {message}"


def append_line(path: str, text: str) -> None:
    """Append one line to a log file, unless it is already the file's last line; never raises (a
    full disk, a removed folder: the console line stays)."""
    with contextlib.suppress(Exception), open(path, "rb") as fh:
        tail = len(text.encode()) + 2  # the last line and a newline each side
        fh.seek(max(0, os.path.getsize(path) - tail))
        if fh.read(tail).decode(errors="replace").rstrip("\n").split("\n")[-1] == text:
            return
    with contextlib.suppress(Exception), open(path, "a") as fh:
        fh.write(text + "\n")


def _append_to_run_logs(line: str) -> list[tuple[str, str]]:
    """Append `line`, formatted as the run's other lines, to the files of the run logger's file
    handlers (log.txt; the console already has it); the (file, text) pairs written. Written here
    rather than through the handler, whose failure (a full disk) would print logging's own
    traceback."""
    logger = logging.getLogger(RUN_LOGGER)
    record = logger.makeRecord(RUN_LOGGER, logging.ERROR, __file__, 0, line, (), None)
    written = []
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            with contextlib.suppress(Exception):
                handler.flush()
            written.append((handler.baseFilename, handler.format(record)))
            append_line(*written[-1])
    return written


def _launcher_error_file() -> str | None:
    """torchrun's per-rank error file, when the rank was started by utils.launch."""
    if os.environ.get(LAUNCHER_ENV) != "1":
        return None
    return os.environ.get("TORCHELASTIC_ERROR_FILE") or None


def write_launcher_record(
    path: str, message: str, *, user: bool, trace: str = "", logs: list[tuple[str, str]] | None = None
) -> None:
    """The error file torchrun reads when a rank exits (its format: `message` and `timestamp`),
    with what utils.launch uses under `text4vis`: the line, the message in it, whether the user
    caused it, the traceback (printed by the launcher only for a failure that is not the user's),
    the time, and the log files with the line as written there (the launcher appends it again
    if another rank logged after it, so that it ends the log)."""
    now = time.time()
    line = error_line(message)
    record: dict[str, Any] = {
        "message": line,
        "timestamp": int(now),
        "text4vis": {
            "line": line,
            "message": message,
            "user": user,
            "traceback": trace,
            "time": now,
            "logs": [list(pair) for pair in logs or []],
        },
    }
    try:
        with open(path, "w") as fh:
            json.dump(record, fh)
    except OSError:
        print(line, file=sys.stderr, flush=True)


def run_cli(main: Callable[[], object]) -> None:
    debug = "--debug" in sys.argv or os.environ.get("TEXT4VIS_DEBUG") == "1"
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    try:
        main()
    except Exception as err:
        message = user_message(err)
        if message is None and isinstance(err, RuntimeError):
            message = explain(err)
        error_file = _launcher_error_file()
        if message is None:  # a bug, not the user's input: the traceback is what helps
            first = (str(err).strip().splitlines() or [""])[0]
            message = f"{type(err).__name__}: {first}"
            logs = _append_to_run_logs(error_line(message))  # the log ends with what stopped the run
            if error_file is None:
                raise
            trace = traceback.format_exc()
            if debug:
                print(trace, file=sys.stderr, end="", flush=True)
            write_launcher_record(error_file, message, user=False, trace="" if debug else trace, logs=logs)
            sys.exit(1)
        if debug:
            traceback.print_exc()
        line = error_line(message)
        logs = _append_to_run_logs(line)
        if error_file is None:
            print(line, file=sys.stderr, flush=True)
        else:
            write_launcher_record(error_file, message, user=True, logs=logs)
        sys.exit(1)
