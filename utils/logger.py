"""What a run leaves for people to read: `log.txt` (the original's lines), `metrics.csv`,
`curves.png` (loss / LR / top-1, redrawn each epoch) and optional TensorBoard scalars.

Only rank 0 writes; other ranks get a logger that prints warnings and errors only, and writes
its errors to the same `log.txt` when the folder is there (the line a failing rank stops with,
`utils.errors.run_cli`, is then the log's last line even when rank 0 was stopped first).
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from pathlib import Path
from typing import Any

from utils.errors import RUN_LOGGER, explain
from utils.fileio import WriteError, atomic_write_text, make_folder

LOGGER_NAME = RUN_LOGGER


class _PassOnMachineFailures(logging.Handler):
    """A handler that lets a failure `utils.errors.explain` names (a DataLoader worker died: torch's
    SIGCHLD handler raises it wherever the main process is, also inside a log call) propagate, so
    the run stops with that one line; logging itself would print a traceback and carry on."""

    def handleError(self, record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        if err is not None and explain(err) is not None:
            raise err
        super().handleError(record)


class _Console(_PassOnMachineFailures, logging.StreamHandler):
    pass


class _LogFile(_PassOnMachineFailures, logging.FileHandler):
    pass


def setup_logger(output_dir: str | Path | None, rank: int = 0, name: str = LOGGER_NAME) -> logging.Logger:
    """The run's logger: stdout + `output_dir/log.txt` on rank 0; elsewhere warnings on the console
    and errors in `log.txt`."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("[%(asctime)s %(name)s]: %(message)s", datefmt="%m/%d %H:%M:%S")
    console = _Console(sys.stdout)
    console.setFormatter(fmt if rank == 0 else logging.Formatter(f"[rank {rank}] %(levelname)s: %(message)s"))
    console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    logger.addHandler(console)
    if rank == 0 and output_dir is not None:
        make_folder(output_dir, "output folder")
        try:
            fh = _LogFile(Path(output_dir) / "log.txt", mode="a")
        except OSError as err:
            raise WriteError(err.errno, f"cannot write {Path(output_dir) / 'log.txt'}: {err.strerror or err}") from None
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    elif output_dir is not None and Path(output_dir).is_dir():
        try:
            errors = _LogFile(Path(output_dir) / "log.txt", mode="a")
        except OSError:  # rank 0 writes the log; this rank's errors still reach its console
            return logger
        errors.setFormatter(fmt)
        errors.setLevel(logging.ERROR)
        logger.addHandler(errors)
    return logger


class MetricsLog:
    """Per-epoch rows in `metrics.csv`, the PNG of curves, and TensorBoard scalars (rank 0 only)."""

    FIELDS = (
        "epoch",
        "iteration",
        "train_loss",
        "lr",
        "lr_visual",
        "clips_per_s",
        "epoch_time_s",
        "val_top1",
        "val_top5",
        "best_top1",
        "data_wait_s",
        "step_s",
        "data_wait_frac",
        "nonfinite_skipped",
    )

    def __init__(self, output_dir: str | Path, enabled: bool = True, tensorboard: bool = False) -> None:
        self.dir = Path(output_dir)
        self.enabled = enabled
        self.csv_path = self.dir / "metrics.csv"
        self.png_path = self.dir / "curves.png"
        self.rows: list[dict[str, Any]] = []
        self.tb = None
        if not enabled:
            return
        if self.csv_path.is_file():  # resumed run: keep earlier epochs in the plot
            with open(self.csv_path, newline="") as fh:
                self.rows = [dict(r) for r in csv.DictReader(fh)]
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(self.dir / "tb"))
            except ImportError:
                logging.getLogger(LOGGER_NAME).warning("logging.tensorboard is on but tensorboard is not installed")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Per-iteration scalars (TensorBoard only)."""
        if self.tb is not None:
            for key, val in values.items():
                self.tb.add_scalar(key, val, step)

    def epoch(self, row: dict[str, Any]) -> None:
        """Append one epoch's row (drops rows of later epochs left by a run that was resumed)."""
        if not self.enabled:
            return
        self.rows = [r for r in self.rows if int(float(r["epoch"])) < int(row["epoch"])]
        self.rows.append({k: row.get(k, "") for k in self.FIELDS})
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.csv_path, text.getvalue())
        if self.tb is not None:
            for key in ("train_loss", "val_top1", "val_top5", "clips_per_s"):
                if row.get(key) not in (None, ""):
                    self.tb.add_scalar(f"epoch/{key}", float(row[key]), int(row["epoch"]))
            self.tb.flush()
        self.plot()

    def plot(self) -> None:
        """Redraw `curves.png`: train loss, LR and validation top-1 against epochs (utils.plots)."""
        from utils.plots import plot_curves  # matplotlib only when drawing

        plot_curves(self.rows, self.png_path)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
