"""torchrun whose failure is one line: `python -m utils.launch [torchrun options] SCRIPT [args]`.

The shell scripts start train.py and test.py through this instead of `torchrun`. Each rank's
`run_cli` hands its error line to this process through torchrun's error file instead of printing
it (`utils.errors`); when ranks fail, this prints the line of the first rank stopped by the
user's input (a misspelt key, a missing list, a bad video, a corrupt checkpoint) once, where
torchrun would print every rank's line and its ~30-line `ChildFailedError` block. A failure that
is not the user's (a bug) gets its traceback and then one line naming the rank; a rank killed by a
signal gets one line naming the signal. The exit status is non-zero in every case.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NamedTuple

from utils.errors import LAUNCHER_ENV, append_line

USAGE = "usage: python -m utils.launch [torchrun options] SCRIPT [SCRIPT's arguments]\n"
TORCHRUN_HELP = "torchrun's options: python -m torch.distributed.run --help"


def _record(failure: Any) -> dict[str, Any] | None:
    data = getattr(failure, "error_file_data", None)
    record = data.get("text4vis") if isinstance(data, dict) else None
    return record if isinstance(record, dict) else None


class Report(NamedTuple):
    """What the launcher says about failed ranks."""

    traceback: str  # to print before the line ("" for the user's errors)
    line: str
    code: int  # exit status
    logs: list[list[str]]  # [log file, the line as written there] of the failure reported


def failure_report(failures: dict[int, Any]) -> Report:
    """The report of torchrun's failed ranks.

    The first rank stopped by the user's input wins over any other failure (the other ranks then
    fail in a collective or are stopped by torchrun); else the first recorded failure; else the
    first rank that exited, by its exit code or signal."""
    recorded = [(rec["time"], rank, rec) for rank, f in failures.items() if (rec := _record(f)) is not None]
    users = sorted(((t, rank, rec) for t, rank, rec in recorded if rec.get("user")), key=lambda r: (r[0], r[1]))
    if users:
        first = users[0][2]
        # every rank stopped by the same input (a config key, a checkpoint): rank 0's line, as one process says it
        same = [rec for _, rank, rec in users if rank == 0 and rec.get("message") == first.get("message")]
        chosen = (same or [first])[0]
        return Report("", chosen["line"], 1, chosen.get("logs", []))
    if recorded:
        _, rank, rec = min(recorded, key=lambda r: (r[0], r[1]))
        line = f"{rec['line']} (rank {rank} failed; traceback above)"
        return Report(rec.get("traceback", ""), line, 1, rec.get("logs", []))
    rank = min(failures, key=lambda r: (failures[r].timestamp, r))
    failure = failures[rank]
    code = int(failure.exitcode)
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        hint = (
            ": the usual cause is the system running out of memory (the kernel's OOM killer; check `dmesg`)"
            if -code == signal.SIGKILL
            else ""
        )
        return Report("", f"error: rank {rank} (pid {failure.pid}) was killed by {name}{hint}", 128 - code, [])
    line = f"error: rank {rank} (pid {failure.pid}) exited with status {code} (its output above says why)"
    return Report("", line, code, [])


def main(argv: Sequence[str] | None = None) -> int:
    """Run torchrun with `argv`; on a failure print its one line and return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):  # before torch is imported; `SCRIPT --help` goes to the script
        print(USAGE + (__doc__ or "").split("\n", 2)[2] + "\n" + TORCHRUN_HELP)
        return 0
    quiet = "LOGLEVEL" not in os.environ  # torchrun's own log level, unless the user chose one
    if quiet:
        os.environ["LOGLEVEL"] = "ERROR"
    os.environ[LAUNCHER_ENV] = "1"
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if quiet:  # its "failed (exitcode: 1) local_rank: ..." lines: the one line below says it
        logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    try:
        run(parse_args(args))
    except ChildFailedError as err:
        report = failure_report(err.failures)
        # every rank has stopped: the line now ends the logs it went to, even where another rank
        # logged after it (rank 0 logging its step while rank 1 failed)
        for path, text in report.logs:
            append_line(path, text)
        if report.traceback:
            print(report.traceback, file=sys.stderr, end="", flush=True)
        print(report.line, file=sys.stderr, flush=True)
        return report.code
    except Exception as err:  # torchrun itself could not start the ranks (a bad option, a port in use)
        if "--debug" in args or os.environ.get("TEXT4VIS_DEBUG") == "1":
            traceback.print_exc()
        first = (str(err).strip().splitlines() or [""])[0]
        print(f"error: torchrun could not start the processes: {type(err).__name__}: {first}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
