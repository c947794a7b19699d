"""Command-line helpers shared by the entry points that take positional inputs."""
from __future__ import annotations

import argparse
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
            opts.append(word[len(flag) + 1:])
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
    import sys

    rest, opts = split_opts(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(rest)
    args.opts = opts
    return args
