"""Command-line helpers shared by every entry point: the parser (`--debug` documented, defaults
shown) and `--opts` parsing that leaves positional inputs alone."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def split_opts(argv: Sequence[str], flag: str = "--opts") -> tuple[list[str], list[str]]:
    """(argv without the config overrides, the overrides).

    `--opts` takes the KEY=VALUE words that follow it and stops at the first word without `=` or
    starting with `-`, so `--opts data.batch_size=4 video.mp4` leaves `video.mp4` an input (argparse's
    `nargs="*"` would swallow it). `--opts` may be given more than once; `--opts=K=V` works too."""
    rest: list[str] = []
    opts: list[str] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        word = argv[i]
        if word == "--":
            rest.extend(argv[i:])
            break
        if word.startswith(flag + "="):
            opts.append(word[len(flag) + 1 :])
        elif word == flag:
            i += 1
            while i < len(argv) and "=" in argv[i] and not argv[i].startswith("-"):
                opts.append(argv[i])
                i += 1
            continue
        else:
            rest.append(word)
        i += 1
    return rest, opts


def parse_with_opts(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """`parser.parse_args` with `--opts` read by `split_opts` (the parser still lists it in --help)."""

    rest, opts = split_opts(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(rest)
    args.opts = opts
    return args


DEBUG_HELP = "on an error, also show its traceback (or set TEXT4VIS_DEBUG=1)"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`(default: X)` after an option's help, except where it says nothing (None, False, an empty
    list) or the help already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "default" in text.lower() or default is None or default is False or default == []:
            return action.help
        return super()._get_help_string(action)


def cli_parser(prog: str, description: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of an entry point: defaults shown in `--help`, and `--debug` (which
    `run_cli` acts on) documented."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return parser


def add_config_args(
    parser: argparse.ArgumentParser,
    config_help: str = "YAML config file",
    *,
    required: bool = False,
) -> None:
    """--config (alias --cfg) and --opts, declared alike by every entry point."""
    parser.add_argument("--config", "--cfg", dest="config", required=required, default=None, help=config_help)
    parser.add_argument(
        "--opts",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys: the KEY=VALUE words that follow it, e.g. --opts data.batch_size=4",
    )
