"""One self-contained HTML page per run, or per comparison of runs:
`python -m app.report RUN [RUN ...] [--out report.html]`.

RUN is a training run folder (with any test results below it), a test.py / test_zeroshot.py
results folder or results.json, or a `predict.py --window` timeline (`.timeline.json`, or the
folder of them). The page holds everything inline (CSS, SVG charts, one small script that sorts
tables): it opens offline, from disk or an e-mail, and prints to PDF. Default output: `report.html`
inside the one RUN folder, or in the current folder for several RUNs.

train.py, test.py and test_zeroshot.py call `after_run` at their end (`logging.report`, default on):
it records the command, commit, versions and machine in `run_info.json` and writes the page; a
failure there is one warning line, never a failed run. docs/report.md describes the page.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from html import escape
from pathlib import Path

from app.report_compare import compare_section
from app.report_data import Run, load_run
from app.report_eval import evaluation_section
from app.report_facts import invocations, training_facts
from app.report_html import code, dl, page
from app.report_runinfo import git_state, record_invocation
from app.report_timeline import timeline_section
from app.report_training import class_count, training_section
from utils.errors import UserError, run_cli
from utils.fileio import atomic_write_text
from utils.logger import LOGGER_NAME

REPORT = "report.html"


def run_section(run: Run, n: int) -> str:
    uid = f"run-{n}"
    parts = [
        f'<section class="run" id="{uid}"><h2>{escape(run.name)}</h2>',
        f'<p class="muted">{code(str(run.path))}</p>',
    ]
    if run.training is not None:
        parts.append(f'<h3 id="{uid}-what">What ran</h3>' + training_facts(run.training, class_count(run.training)))
        parts.append(training_section(run.training, uid))
    for k, ev in enumerate(run.evaluations):
        parts.append(evaluation_section(ev, run, f"{uid}-eval-{k}"))
    if run.timelines and run.training is None and not run.evaluations and run.run_info:
        parts.append(f'<h3 id="{uid}-what">What ran</h3>' + dl(invocations(run.run_info)))
    for k, (path, tl) in enumerate(run.timelines):
        parts.append(timeline_section(path, tl, f"{uid}-timeline-{k}"))
    return "".join(parts) + "</section>"


def contents(runs: list[Run]) -> str:
    items = ['<li><a href="#compare">Side by side</a></li>'] if len(runs) > 1 else []
    for n, run in enumerate(runs):
        sub = []
        if run.training is not None:
            sub.append(f'<a href="#run-{n}-training">training</a>')
        sub += [f'<a href="#run-{n}-eval-{k}">{escape(ev.kind)}</a>' for k, ev in enumerate(run.evaluations)]
        sub += [f'<a href="#run-{n}-timeline-{k}">timeline</a>' for k in range(len(run.timelines))]
        items.append(f'<li><a href="#run-{n}">{escape(run.name)}</a>: {", ".join(sub)}</li>')
    return f'<nav aria-label="contents"><ul>{"".join(items)}</ul></nav>'


def build(runs: list[Run], command: str = "") -> str:
    """The page of `runs` (one run, or a comparison when there are several)."""
    names = ", ".join(r.name for r in runs)
    title = f"Run report: {names}" if len(runs) == 1 else f"Comparison of {len(runs)} runs: {names}"
    git = git_state()
    made = time.strftime("%Y-%m-%d %H:%M %Z")
    head = (
        f"<header><h1>{escape(title)}</h1>"
        f'<p class="muted">Written {escape(made)}'
        + (f" by {code(command)}" if command else "")
        + (f", text4vis {code(git['commit'][:12])}" if git else "")
        + ". Numbers are the run's own files (results.json, metrics.csv, analysis.json, confusion.npz); "
        "percentages are of videos.</p></header>"
    )
    body = head + contents(runs)
    if len(runs) > 1:
        body += compare_section(runs)
    body += "".join(run_section(r, n) for n, r in enumerate(runs))
    footer = (
        "One self-contained file: no script, font or picture is fetched when it opens. "
        "Written by text4vis <code>app.report</code> (docs/report.md)."
    )
    return page(title, body, footer)


def default_out(paths: Sequence[str | Path]) -> Path:
    """report.html inside the one RUN folder (next to a RUN file), or in the current folder."""
    if len(paths) == 1:
        p = Path(paths[0])
        if p.is_dir():
            return p / REPORT
        stem = p.name.removesuffix(".timeline.json").removesuffix(".json")
        return p.parent / (REPORT if p.name == "results.json" else f"{stem}.report.html")
    return Path(REPORT)


def write_report(paths: Sequence[str | Path], out: str | Path | None = None, command: str = "") -> Path:
    if not paths:
        raise UserError("give at least one RUN folder or file")
    runs = [load_run(p) for p in paths]
    target = Path(out) if out else default_out(paths)
    return atomic_write_text(target, build(runs, command))


def after_run(folder: str | Path, script: str, enabled: bool) -> Path | None:
    """End of train.py / test.py / test_zeroshot.py (rank 0): record the invocation in
    run_info.json, then write `<folder>/report.html` when `enabled` (logging.report), each said in
    the run's log. Never raises: a failure is one warning line, the run's results stand."""
    log = logging.getLogger(LOGGER_NAME)
    try:
        record_invocation(Path(folder), script)
        if not enabled:
            return None
        path = write_report([folder], command=f"python -m app.report {folder}")
        log.info(f"report: {path} (one offline page: open it in a browser)")
        return path
    except Exception as err:  # noqa: BLE001 -- the report must never fail the run that made the results
        log.warning(f"report: not written ({type(err).__name__}: {err}); retry with python -m app.report {folder}")
        return None


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m app.report", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders, results.json or .timeline.json files")
    p.add_argument("--out", default=None, help="the page to write (default: RUN/report.html, or ./report.html)")
    a = p.parse_args(argv)
    command = "python -m app.report " + " ".join(a.runs) + (f" --out {a.out}" if a.out else "")
    path = write_report(a.runs, a.out, command)
    size = path.stat().st_size
    print(f"report: {path} ({size / 1024:.0f} kB)")


if __name__ == "__main__":
    run_cli(main)
