"""What ran, for the run report: the facts of a training run folder or a results folder, and the
invocations `run_info.json` records (command, commit, versions, machine, start / end)."""

from __future__ import annotations

import shlex
from html import escape
from pathlib import Path
from typing import Any

from app.report_data import Evaluation, Training
from app.report_html import DASH, code, dl


def get(tree: dict[str, Any], dotted: str, default: Any = None) -> Any:
    """`tree["a"]["b"]` for "a.b", or `default`."""
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def file_size(path: Path) -> str:
    try:
        size = path.stat().st_size
    except OSError:
        return ""
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 2**10:.0f} kB"


def relative(folder: Path, root: Path) -> str:
    """`folder` below the RUN it was found in (its own name when it is the RUN)."""
    try:
        rel = folder.relative_to(root)
    except ValueError:
        return str(folder)
    return str(rel) if str(rel) != "." else folder.resolve().name


def invocations(info: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The facts of run_info.json: command, commit, versions, machine, start / end."""
    if not info or not info.get("invocations"):
        return []
    runs = info["invocations"]
    last = runs[-1]
    git = last.get("git") or {}
    commit = (
        code(git["commit"][:12]) + (" with uncommitted changes" if git.get("dirty") else "")
        if git.get("commit")
        else ""
    )
    vers = ", ".join(f"{k} {v}" for k, v in (last.get("versions") or {}).items())
    m = last.get("machine") or {}
    machine = ", ".join(
        filter(
            None,
            [
                m.get("system"),
                m.get("machine"),
                f"{m['cpus']} CPUs ({m.get('cpu') or '?'})" if m.get("cpus") else "",
                "GPU: " + ", ".join(m["gpus"]) if m.get("gpus") else "no GPU",
            ],
        )
    )
    pairs = [
        ("command", "<br>".join(code(r["command"]) for r in runs if r.get("command"))),
        ("run from", code(last["cwd"]) if last.get("cwd") else ""),
        ("git commit", commit),
        ("versions", escape(vers)),
        ("machine", escape(machine)),
        ("started", escape(str(runs[0].get("started") or DASH))),
        ("ended", escape(str(last.get("ended") or DASH))),
    ]
    if len(runs) > 1:
        pairs.append(("invocations", f"{len(runs)} (a resumed run: each command above, in order)"))
    return pairs


def log_times(facts: Any, recorded: bool) -> list[tuple[str, str]]:
    """Start / end from log.txt's time stamps when run_info.json does not record them."""
    if recorded or not facts.first:
        return []
    return [("started", escape(facts.first + " (log.txt, no year)")), ("last log line", escape(str(facts.last)))]


def training_words(c: dict[str, Any]) -> str:
    """The objective and what is trained, in a few words (the comparison demo's two paradigms)."""
    return f"{get(c, 'solver.loss_type', 'CE')}, " + (
        f"text tower {'frozen' if get(c, 'network.fix_text') else 'trained'}"
        if get(c, "network.text_tower")
        else f"{get(c, 'network.classifier', '?')} classifier "
        + ("frozen" if get(c, "network.fix_text", True) else "trained")
    )


def training_facts(t: Training, classes: int | None) -> str:
    c = t.config
    epochs_done = len({row.get("epoch") for row in t.metrics})
    best, last = t.folder / "model_best.pt", t.folder / "last_model.pt"
    ckpts = ", ".join(code(str(p)) + f" ({file_size(p)})" for p in (best, last) if p.is_file())
    reproduce = shlex.join(["python", "train.py", "--config", str(t.folder / "config.yaml"), "--output", "NEW_FOLDER"])
    pairs = [
        (
            "config",
            code(t.source_config) + " (as given; resolved: " + code("config.yaml") + ")"
            if t.source_config
            else code("config.yaml"),
        ),
        (
            "model",
            escape(
                f"{get(c, 'network.arch')}, head {get(c, 'network.sim_header')}"
                + (f", temporal module {get(c, 'network.tm')}" if get(c, "network.tm") else "")
                + f", pretrained {get(c, 'network.pretrained')}"
            ),
        ),
        ("training", escape(training_words(c))),
        (
            "frames × crops × clips",
            escape(f"{get(c, 'data.num_segments')}×1×1 (validation, one view), {get(c, 'data.input_size')} px"),
        ),
        ("dataset", escape(f"{get(c, 'data.dataset')}, {classes if classes else '?'} classes")),
        ("lists", " ".join(code(str(get(c, f"data.{k}"))) for k in ("train_list", "val_list", "label_list"))),
        (
            "schedule",
            escape(
                f"{epochs_done} of {get(c, 'solver.epochs')} epochs, batch {get(c, 'data.batch_size')}, "
                f"lr {get(c, 'solver.lr')} ({get(c, 'solver.type')}), seed {get(c, 'seed')}"
            ),
        ),
        ("checkpoints", ckpts),
        *invocations(t.run_info),
        *log_times(t.log, bool(t.run_info)),
        ("versions (log.txt)", escape(t.log.versions or "") if not t.run_info else ""),
        ("reproduce", code(reproduce) + " (the recorded, resolved config)"),
    ]
    return dl(pairs)


def eval_facts(ev: Evaluation) -> str:
    r = ev.results
    views = f"{r.get('view_layout', '?')} = {r.get('views', '?')} views per video" + (
        " (dense)" if r.get("dense") else ""
    )
    weights = Path(str(r.get("weights", "")))
    script = "test_zeroshot.py" if ev.kind == "zero-shot" else "test.py"
    argv = ["python", script]
    if r.get("config") and " (stored config)" not in str(r["config"]):
        argv += ["--config", str(r["config"])]
    for k in ("weights", "test_crops", "test_clips"):
        if r.get(k) is not None:
            argv += [f"--{k}", str(r[k])]
    if r.get("fuse") not in (None, "embeddings"):
        argv += ["--fuse", str(r["fuse"])]
    if ev.kind == "zero-shot" and r.get("protocols"):
        argv += ["--protocol", *map(str, r["protocols"])]
    if r.get("opts"):
        argv += ["--opts", *map(str, r["opts"])]
    pairs = [
        ("config", code(str(r.get("config", DASH)))),
        ("checkpoint", code(str(weights)) + (f" ({file_size(weights)})" if weights.is_file() else "")),
        ("model", escape(str(r.get("arch", DASH)))),
        ("dataset", escape(f"{r.get('dataset', '?')}, {r.get('num_classes', '?')} classes")),
        ("frames × crops × clips", escape(views)),
        (
            "evaluation",
            escape(
                f"fuse {r.get('fuse', '?')}, precision {r.get('precision', '?')}, {r.get('world_size', 1)} process(es) "
                f"on {r.get('device', '?')}"
            ),
        ),
        *invocations(ev.run_info),
        *log_times(ev.log, bool(ev.run_info)),
        ("reproduce", code(shlex.join(argv)) if not ev.run_info else ""),
    ]
    return dl(pairs)
