"""How far a long step is, for every tool: a tqdm bar on a terminal; elsewhere (a log file, nohup,
CI) a plain line at every 10 % and at least every `every_s` seconds with the count, the rate and
the time left.

The rate is measured from the first finished item on: start-up (opening files, starting loader
workers, the first forward pass) would otherwise make the first estimate of the time left far too
long. The bar of a terminal appears at the first finished item for the same reason.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TextIO, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def duration(seconds: float) -> str:
    """`45 s`, `3 min 20 s`, `2 h 05 min`: a time left that reads at a glance."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def rate_text(rate: float, unit: str) -> str:
    """Items per second, or seconds per item when an item takes longer than a second."""
    if rate >= 1.0:
        return f"{rate:.1f} {unit}s/s"
    return f"{1.0 / rate:.1f} s/{unit}" if rate > 0 else f"? s/{unit}"


@dataclass(frozen=True)
class Pace:
    """How often a plain line is written between the 10 % marks: at least every `every_s` seconds
    of `clock` (a fake one in tests)."""

    every_s: float = 30.0
    clock: Callable[[], float] = time.monotonic


class Progress:
    """`update(n)` after each `n` finished items; `close()` at the end (or use it as a context).

    `write` takes the plain lines (default: `stream`, stderr); `terminal` forces the mode (default:
    whether `stream` is a terminal); `enabled=False` shows nothing (ranks other than 0); `pace` sets
    the time between plain lines."""

    def __init__(
        self,
        total: int,
        label: str,
        unit: str = "item",
        *,
        pace: Pace = Pace(),
        stream: TextIO | None = None,
        write: Callable[[str], Any] | None = None,
        terminal: bool | None = None,
        enabled: bool = True,
    ) -> None:
        self.total, self.label, self.unit, self.every_s = int(total), label, unit, pace.every_s
        clock = pace.clock
        self.stream = stream if stream is not None else sys.stderr
        self.write = write or (lambda line: print(line, file=self.stream, flush=True))
        self.terminal = bool(self.stream.isatty()) if terminal is None else terminal
        self.enabled, self.clock = enabled, clock
        self.done = 0
        self.start = self.last = clock()
        self.first_t: float | None = None  # when the first item finished; the rate counts from there
        self.first_n = 0
        self.marks = [math.ceil(self.total * p / 10) for p in range(1, 11)]
        self.bar: tqdm | None = None

    def rate(self) -> float | None:
        """Items per second since the first finished item (None until a second update)."""
        if self.first_t is None or self.done == self.first_n:
            return None
        return (self.done - self.first_n) / max(self.clock() - self.first_t, 1e-9)

    def line(self) -> str:
        """The plain progress line: count, share, rate and time left."""
        pct = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        text = f"{self.label}: {self.done}/{self.total} {self.unit}s{pct}"
        rate = self.rate()
        if rate is not None:
            text += f", {rate_text(rate, self.unit)}"
            if self.done < self.total:
                text += f", about {duration((self.total - self.done) / rate)} left"
        return text

    def update(self, n: int = 1) -> None:
        if not self.enabled or n <= 0:
            return
        self.done += n
        now = self.clock()
        if self.first_t is None:
            self.first_t, self.first_n = now, self.done
        if self.terminal:
            if self.bar is None:
                self.bar = tqdm(
                    total=self.total,
                    initial=self.done,
                    desc=self.label,
                    unit=self.unit,
                    file=self.stream,
                    dynamic_ncols=True,
                )
            else:
                self.bar.update(n)
            return
        crossed = bool(self.marks) and self.done >= self.marks[0]
        while self.marks and self.done >= self.marks[0]:
            self.marks.pop(0)
        if (crossed and self.done < self.total) or now - self.last >= self.every_s:
            self.last = now
            self.write(self.line())

    def note(self, message: str) -> None:
        """A message between progress lines (above the bar on a terminal), to stdout."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stdout)
        else:
            print(message, flush=True)

    def close(self) -> None:
        """The bar closed, or the closing line: how many items in how long."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif not self.terminal and self.first_t is not None:
            rate = self.rate()
            self.write(
                f"{self.label}: {self.done}/{self.total} {self.unit}s in {duration(self.clock() - self.start)}"
                + (f" ({rate_text(rate, self.unit)} after the first)" if rate is not None else "")
            )
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class track(Generic[T]):  # noqa: N801 (used like a function: `for x in track(items, progress)`)
    """`items` unchanged (with their `len()`); `progress` counts `size(item)` once the consumer is
    done with an item (when it asks for the next one), so a batch counts after it was processed,
    not when it was loaded."""

    def __init__(self, items: Iterable[T], progress: Progress, size: Callable[[T], int] = lambda _: 1) -> None:
        self.items, self.progress, self.size = items, progress, size

    def __len__(self) -> int:
        return len(self.items)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[T]:
        for item in self.items:
            yield item
            self.progress.update(self.size(item))


def failure_summary(failed: Sequence[tuple[str, str]], total: int, what: str = "inputs", shown: int = 3) -> str:
    """`4 of 6 inputs failed: a.mp4 (reason), ...` in one line: the first `shown` with the first line
    of their reason (cut at 160 characters), then how many more."""

    def reason(name: str, text: str) -> str:
        first = (text.strip().splitlines() or [""])[0]
        first = first.removeprefix(f"{name}: ").replace(f" {name}:", ":")  # the name is already in front
        return first if len(first) <= 160 else first[:159] + "…"

    listed = ", ".join(f"{name} ({reason(name, err)})" for name, err in failed[:shown])
    more = f", and {len(failed) - shown} more" if len(failed) > shown else ""
    return f"{len(failed)} of {total} {what} failed: {listed}{more}"
