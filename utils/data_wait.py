"""The data-bound alarm: how much of each training step waits for the loader.

`DataWaitMeter.update(wait_s, step_s)` per iteration (wait = time blocked on the next batch, step
= the whole iteration including that wait). `line()` is the log text, `row()` the metrics.csv
columns, and `alarm()` returns, once per epoch, a warning naming the remedy when the data wait
exceeds `threshold` of the step time (after `warmup` iterations, while the workers start). The
remedy text is composed where the data pipeline is known (`datasets.data_builder.data_remedy`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataWaitMeter:
    threshold: float = 0.1
    remedy: str = "raise data.workers"
    warmup: int = 10
    wait_s: float = 0.0
    step_s: float = 0.0
    steps: int = 0
    _seen: int = field(default=0, repr=False)
    _warned: bool = field(default=False, repr=False)

    def update(self, wait_s: float, step_s: float) -> None:
        self._seen += 1
        if self._seen <= self.warmup:
            return
        self.wait_s += max(0.0, wait_s)
        self.step_s += max(wait_s, step_s)
        self.steps += 1

    @property
    def fraction(self) -> float:
        """Share of the step time spent waiting for data (0 before any counted step)."""
        return self.wait_s / self.step_s if self.step_s > 0 else 0.0

    def line(self) -> str:
        if not self.steps:
            return "data wait: warming up"
        n = self.steps
        return f"data wait {self.wait_s / n:.3f} s of {self.step_s / n:.3f} s per step ({100 * self.fraction:.0f} %)"

    def row(self) -> dict[str, str]:
        n = max(self.steps, 1)
        return {
            "data_wait_s": f"{self.wait_s / n:.4f}",
            "step_s": f"{self.step_s / n:.4f}",
            "data_wait_frac": f"{self.fraction:.4f}",
        }

    def alarm(self) -> str | None:
        """The warning text, the first time this epoch the wait share exceeds the threshold."""
        if self._warned or self.threshold <= 0 or not self.steps or self.fraction <= self.threshold:
            return None
        self._warned = True
        return (
            f"data-bound: waiting for data takes {100 * self.fraction:.0f} % of each training step "
            f"({self.wait_s / self.steps:.3f} of {self.step_s / self.steps:.3f} s, more than "
            f"logging.data_wait_alarm={self.threshold:g}); {self.remedy}"
        )

    def reset(self) -> None:
        """New epoch: the loader's workers start again, so the warm-up counts again."""
        self.wait_s = self.step_s = 0.0
        self.steps = self._seen = 0
        self._warned = False
