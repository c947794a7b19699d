"""YAML configs with the original's key names, checked against a schema that has a default for
every key.

`load_config(path, opts)` returns a frozen, typed `Config` (attribute access as the original:
`cfg.data.batch_size`) holding every key of the schema (`utils.config_schema`), with the file's
values and the `--opts key=value` overrides applied. An unknown key, a value of the wrong type or
a value outside its choices or range raises `UserError` naming the key, the file and the closest
valid key. `to_dict(cfg)` gives the plain dict that checkpoints and `config.yaml` store;
`from_dict(raw, where)` checks such a dict again and freezes it. A variant of a config (another
list, another flag) is made with `replace(cfg, **{"data.val_list": path})`, never by patching.

Run `python -m utils.config CFG [--opts k=v ...]` to print the resolved config, or
`python -m utils.config --keys-markdown` for the table of keys used in the README
(`--update-readme README.md` rewrites it there).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import math
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from utils.choices import CONTRASTIVE_LOSSES
from utils.cli import cli_parser
from utils.config_schema import (
    EACH,
    FLAT_SCHEMA,
    OPEN_ABOVE,
    POSITIVE,
    RANGES,
    RENAMED,
    RESUME_MAY_CHANGE,
    SCHEMA,
    SECTIONS,
    Config,
    Key,
    flatten,
)
from utils.errors import UserError, run_cli

T = TypeVar("T")


def defaults() -> dict[str, Any]:
    def build(schema: dict[str, Any]) -> dict[str, Any]:
        return {k: build(v) if isinstance(v, dict) else copy.deepcopy(v.default) for k, v in schema.items()}

    return build(SCHEMA)


def _closest(key: str) -> str:
    """'; did you mean X?': a key with the same last name in another section first (a key put in
    the wrong section, e.g. top-level `lr` -> `solver.lr`), else the closest spelling."""
    candidates = list(FLAT_SCHEMA) + sorted(SECTIONS)
    leaf = key.rsplit(".", 1)[-1]
    match = [c for c in FLAT_SCHEMA if c.rsplit(".", 1)[-1] == leaf][:1]
    if not match:
        match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not match:
        match = [c for c in FLAT_SCHEMA if difflib.get_close_matches(leaf, [c.rsplit(".", 1)[-1]], cutoff=0.8)][:1]
    return f"; did you mean '{match[0]}'?" if match else ""


def _check_range(key: str, value: Any, where: str) -> None:
    """A numeric value (each element of a list key in EACH) finite and inside `RANGES[key]`."""
    if key not in RANGES:
        return
    each = key in EACH and isinstance(value, list)
    for item in value if each else [value]:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            if each:
                raise UserError(
                    f"{where}: key '{key}' has value {value!r}; each element must be a number {_range_text(key)}"
                )
            return
        if not math.isfinite(item):
            raise UserError(
                f"{where}: key '{key}' has value {value!r}; {'each element' if each else 'it'} must be a finite "
                f"number {_range_text(key)}"
            )
        if not _in_range(key, item):
            subject = "each element" if each else "it"
            raise UserError(f"{where}: key '{key}' has value {value!r}; {subject} must be {_range_text(key)}")


def _in_range(key: str, value: float) -> bool:
    lo, hi = RANGES[key]
    low_ok = lo is None or (value > lo if key in POSITIVE else value >= lo)
    high_ok = hi is None or (value < hi if key in OPEN_ABOVE else value <= hi)
    return low_ok and high_ok


def _range_text(key: str) -> str:
    lo, hi = RANGES[key]
    low = f"{'>' if key in POSITIVE else '>='} {lo:g}" if lo is not None else ""
    high = f"{'<' if key in OPEN_ABOVE else '<='} {hi}" if hi is not None else ""
    return " and ".join(p for p in (low, high) if p)


def _check_value(key: str, value: Any, where: str) -> Any:
    spec = FLAT_SCHEMA[key]
    if value is None:
        if spec.nullable:
            return None
        raise UserError(f"{where}: key '{key}' may not be empty (expected {_type_names(spec)})")
    ok = isinstance(value, spec.types) and not (isinstance(value, bool) and bool not in spec.types)
    if not ok and float in spec.types and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok and float in spec.types and isinstance(value, str):
        with contextlib.suppress(ValueError):  # PyYAML reads `5.e-5` as a float but `5e-5` as a string
            value, ok = float(value), True
    if not ok and spec.types == (str,) and isinstance(value, (int, float)) and not isinstance(value, bool):
        value, ok = str(value), True
    if not ok:
        raise UserError(
            f"{where}: key '{key}' has value {value!r} of type {type(value).__name__}; expected {_type_names(spec)}"
        )
    if spec.choices is not None and value not in spec.choices:
        raise UserError(
            f"{where}: key '{key}' has value {value!r}; choose one of {', '.join(repr(c) for c in spec.choices)}"
        )
    _check_range(key, value, where)
    return value


def _type_names(spec: Key) -> str:
    names = " or ".join(t.__name__ for t in spec.types)
    return names + (" or null" if spec.nullable else "")


def _merge(base: dict[str, Any], update: dict[str, Any], where: str, prefix: str = "") -> None:
    if not isinstance(update, dict):
        raise UserError(f"{where}: section '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {update!r}")
    for name, value in update.items():
        key = f"{prefix}{name}"
        if key in SECTIONS:
            if value is None:
                continue
            _merge(base[name], value, where, key + ".")
        elif key in FLAT_SCHEMA:
            base[name] = _check_value(key, value, where)
        elif key in RENAMED:
            raise UserError(f"{where}: config key '{key}' is now '{RENAMED[key]}'")
        else:
            raise UserError(f"{where}: unknown config key '{key}'{_closest(key)}")


def parse_opts(opts: Sequence[str] | None) -> list[tuple[str, Any]]:
    """`key=value` strings → (dotted key, YAML-typed value)."""
    pairs = []
    for item in opts or []:
        if "=" not in item:
            raise UserError(f"--opts: '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            raise UserError(f"--opts: cannot parse the value of '{key}': {err}") from None
        pairs.append((key.strip(), value))
    return pairs


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--opts: '{key}' goes through a key that is not a section")
    node[parts[-1]] = value


def resolve(raw: dict[str, Any] | None, where: str, opts: Sequence[str] | None = None) -> dict[str, Any]:
    """Schema defaults ← file values ← `--opts` overrides, all checked; returns a plain dict."""
    cfg = defaults()
    _merge(cfg, raw or {}, where)
    overrides: dict[str, Any] = {}
    for key, value in parse_opts(opts):
        _set_dotted(overrides, key, value)
    _merge(cfg, overrides, f"--opts (over {where})")
    _check_consistency(cfg, where)
    return cfg


def _check_consistency(cfg: dict[str, Any], where: str) -> None:
    if cfg["network"]["classifier"] in ("lda", "file") and not cfg["network"]["classifier_file"]:
        raise UserError(f"{where}: network.classifier '{cfg['network']['classifier']}' needs network.classifier_file")
    _check_text_tower(cfg, where)
    if cfg["solver"]["grad_accumulation_steps"] < 1:
        raise UserError(f"{where}: solver.grad_accumulation_steps must be >= 1")
    solver = cfg["solver"]
    if len(solver["betas"]) != 2:
        raise UserError(f"{where}: key 'solver.betas' has value {solver['betas']!r}; it must be two numbers")
    if solver["start_epoch"] >= solver["epochs"]:
        raise UserError(
            f"{where}: solver.start_epoch {solver['start_epoch']} must be below solver.epochs {solver['epochs']} "
            f"(nothing would train)"
        )
    if cfg["data"]["format"] == "shards" and cfg["data"]["shot"]:
        raise UserError(f"{where}: data.shot (few-shot) needs data.format: files")
    data = cfg["data"]
    if data["scale_size"] is None:
        data["scale_size"] = 256 if data["input_size"] == 224 else data["input_size"]
    scale = data["scale_size"]
    if isinstance(scale, list) and (
        len(scale) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in scale)
    ):
        raise UserError(
            f"{where}: data.scale_size must be a short side or [H, W] (two positive integers), got {scale!r}"
        )
    smallest = min(scale) if isinstance(scale, list) else scale
    if smallest < data["input_size"]:
        raise UserError(
            f"{where}: data.scale_size {scale!r} is smaller than data.input_size {data['input_size']}: "
            f"the crops would not fit in the resized frame"
        )


def _check_text_tower(cfg: dict[str, Any], where: str) -> None:
    """Resolve `network.text_tower: null` from the loss (the recorded config says what ran)."""
    net, loss = cfg["network"], cfg["solver"]["loss_type"]
    if net["text_tower"] is None:
        net["text_tower"] = loss in CONTRASTIVE_LOSSES
    if loss in CONTRASTIVE_LOSSES and not net["text_tower"]:
        raise UserError(
            f"{where}: solver.loss_type '{loss}' contrasts videos with texts: it needs "
            f"network.text_tower true (or null)"
        )
    if net["text_tower"] and net["classifier"] != "text":
        raise UserError(
            f"{where}: network.text_tower encodes the class names: it needs network.classifier "
            f"'text', not '{net['classifier']}'"
        )


def load_config(path: str | Path, opts: Sequence[str] | None = None) -> Config:
    """Read a YAML config, fill defaults, apply overrides and check every key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file (a YAML config was expected)") from None
    if raw is None:
        raise UserError(f"{path}: the config file is empty (start from one of configs/)")
    if not isinstance(raw, dict):
        raise UserError(
            f"{path}: a config must be a YAML mapping of sections (data:, network:, solver:, ...), "
            f"not a {type(raw).__name__}"
        )
    return to_config(resolve(raw, str(path), opts))


def resume_differences(recorded: dict[str, Any], asked: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(refused, allowed) changes between the config a checkpoint was trained with and the config a
    resumed run asks for, as 'key: old -> new' lines; allowed ones are in RESUME_MAY_CHANGE."""
    old = flatten(resolve(recorded, "checkpoint config"), SECTIONS.__contains__)
    new = flatten(asked, SECTIONS.__contains__)
    refused: list[str] = []
    allowed: list[str] = []
    for key in FLAT_SCHEMA:
        if old.get(key) != new.get(key):
            line = f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
            (allowed if key in RESUME_MAY_CHANGE else refused).append(line)
    return refused, allowed


def to_config(resolved: Mapping[str, Any]) -> Config:
    """Freeze a dict that `resolve` returned (every key present and checked) into a `Config`."""
    return _build(Config, resolved)


def from_dict(raw: Mapping[str, Any] | None, where: str, opts: Sequence[str] | None = None) -> Config:
    """A stored plain config (a checkpoint's, a config.yaml's), checked like a file and frozen."""
    return to_config(resolve(dict(raw) if raw is not None else None, where, opts))


def _build(cls: type[T], values: Mapping[str, Any]) -> T:
    hints = typing.get_type_hints(cls)
    fields = {
        f.name: _build(hints[f.name], values[f.name]) if f.metadata.get("section") else values[f.name]
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
    }
    return cls(**fields)


def replace(cfg: T, **changes: Any) -> T:
    """A copy of a config (or of one section) with some keys changed: the one way to make a
    variant, e.g. `replace(cfg, **{"data.val_list": cfg.data.train_list})`. Dotted names reach
    into sections; an unknown name raises TypeError (a programming error, not a user's)."""
    direct: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in changes.items():
        head, _, rest = dotted.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, sub in nested.items():
        direct[head] = replace(getattr(cfg, head), **sub)
    return dataclasses.replace(cfg, **direct)  # type: ignore[type-var]


def to_dict(cfg: Config | Mapping[str, Any]) -> dict[str, Any]:
    """The plain nested dict of a config (what checkpoints and config.yaml store)."""
    if isinstance(cfg, Config):
        return dataclasses.asdict(cfg)
    return copy.deepcopy(dict(cfg))


def dump(cfg: Config | Mapping[str, Any]) -> str:
    text: str = yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
    return text


def update_key_table(path: str | Path) -> None:
    """Replace the key table (from its header row to the first line that is not a table row)."""
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    header = keys_markdown().split("\n")[0]
    if header not in lines:
        raise UserError(f"{path}: no key table (a line '{header}') to replace")
    start = lines.index(header)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    lines[start:end] = keys_markdown().split("\n")
    Path(path).write_text("\n".join(lines), encoding="utf-8")


def _valid_text(key: str, spec: Key) -> str:
    """The README's range of a key: a float without an upper bound says `finite` too."""
    finite = "finite, " if float in spec.types and RANGES[key][1] is None else ""
    return finite + _range_text(key) + (" (a list: each element)" if key in EACH else "")


def keys_markdown() -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, spec in FLAT_SCHEMA.items():
        default = "null" if spec.default is None else yaml.safe_dump(spec.default, default_flow_style=True).strip()
        default = default.removesuffix("\n...").strip()
        valid = f" Valid: {_valid_text(key, spec)}." if key in RANGES else ""
        rows.append(f"| `{key}` | `{default}` | {spec.doc}{valid} |")
    return "\n".join(rows)


def main(argv: Iterable[str] | None = None) -> None:
    parser = cli_parser("python -m utils.config", "Print a resolved config.")
    parser.add_argument("config", nargs="?", help="YAML config file")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys")
    parser.add_argument("--keys-markdown", action="store_true", help="print the table of every key")
    parser.add_argument("--update-readme", metavar="README", help="replace the key table in this Markdown file")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.update_readme:
        update_key_table(args.update_readme)
        return
    if args.keys_markdown:
        print(keys_markdown())
        return
    if not args.config:
        parser.error("a config file is required")
    print(dump(load_config(args.config, args.opts)), end="")


if __name__ == "__main__":
    run_cli(main)
