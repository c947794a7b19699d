"""Command-line helpers shared by every entry point: the parser (`--debug` documented, defaults
shown), `--opts` parsing that leaves positional inputs alone, the options several entry points
declare alike, and `help_before_imports`.

Nothing here imports more than the standard library and `utils.choices`: every entry point builds
its parser from this module alone, so `--help` answers before torch or open_clip is imported
(seconds; `python bench/cli_help.py` measures it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from utils.choices import DEVICES, FUSIONS, PRECISIONS, TEST_CROPS

# The only ways a pickled weights file is fully unpickled and a `pipe:` URL is opened (clip.pretrained,
# datasets.shard_dataset name them in their refusals).
TRUST_FLAG = "--trust_pickle"
PIPE_FLAG = "--allow-pipe"


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


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (refused while parsing, before anything is loaded)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


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


def add_trust_arg(parser: argparse.ArgumentParser) -> None:
    """--trust_pickle FILE (repeatable): the only way a weights file is ever fully unpickled."""
    parser.add_argument(
        TRUST_FLAG,
        dest="trust_pickle",
        action="append",
        default=[],
        metavar="FILE",
        help="allow this CLIP weights file (network.pretrained / network.arch) to be loaded with "
        "torch.load(weights_only=False): it can run code, so only for files you trust; "
        "may be repeated",
    )


def add_allow_pipe_arg(parser: argparse.ArgumentParser) -> None:
    """--allow-pipe: the only way a `pipe:` URL (a shell command) is opened, and only when the
    command line itself gives it (--opts KEY=pipe:...)."""
    parser.add_argument(
        PIPE_FLAG,
        dest="allow_pipe",
        action="store_true",
        help="open pipe: URLs (webdataset runs them as shell commands) given on this command line "
        "with --opts data.train_shards=/data.val_shards=; never those of a config file, a shard "
        "index or a checkpoint",
    )


def add_view_args(parser: argparse.ArgumentParser) -> None:
    """--test_crops / --test_clips / --dense: the views `app.media.load_input` takes of one input,
    as test.py's."""
    parser.add_argument("--test_crops", type=int, default=1, choices=TEST_CROPS, help="spatial crops (as test.py)")
    parser.add_argument("--test_clips", type=int, default=1, help="temporal clips (as test.py)")
    parser.add_argument("--dense", action="store_true", default=None, help="dense sampling (as test.py)")


def add_eval_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by test.py and test_zeroshot.py (app.eval_run.EvalRun reads them)."""
    add_config_args(parser, "YAML config (default: the config stored in our checkpoints)")
    parser.add_argument(
        "--weights", required=True, help="checkpoint (ours, converted or the original's layout) or a run folder"
    )
    parser.add_argument(
        "--test_crops",
        type=int,
        default=1,
        choices=TEST_CROPS,
        help="spatial crops per clip: 1 centre, 3 left/right/centre, 5 corners+centre, 10 = 5 + flips",
    )
    parser.add_argument("--test_clips", type=int, default=1, help="temporal clips per video")
    parser.add_argument(
        "--dense",
        action="store_true",
        default=None,
        help="dense sampling (128-frame windows) instead of uniform segments",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="fp32 as the original's test; amp/fp16 = float16 autocast on CUDA",
    )
    parser.add_argument(
        "--fuse",
        default="embeddings",
        choices=FUSIONS,
        help="view fusion: average embeddings (original) or average softmax scores",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="results folder (default: exp/test/<config>/<weights>_<views>_<hash>, one per evaluation, "
        "docs/evaluation.md); one that already holds results is refused unless --overwrite",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the results an --output folder already holds")
    parser.add_argument(
        "--save_predictions",
        action="store_true",
        help="also write predictions.npz (probabilities, labels, video ids, class names)",
    )
    parser.add_argument("--device", default="auto", choices=DEVICES, help="auto: CUDA if present, else CPU")
    add_trust_arg(parser)
    add_allow_pipe_arg(parser)


def wants_help(argv: Sequence[str]) -> bool:
    """`-h` or `--help` among the options (before a `--`)."""
    for word in argv:
        if word == "--":
            return False
        if word in ("-h", "--help"):
            return True
    return False


def help_before_imports(module_name: str, build_parser: Callable[[], argparse.ArgumentParser]) -> None:
    """Print `--help` and exit now when the calling module runs as a program and is asked for it.

    An entry point whose own code needs torch calls this between its light imports (this module)
    and its heavy ones: `--help` then answers in a fraction of a second instead of after torch
    and open_clip are imported. Imported as a module (tests, other code), it does nothing."""
    if module_name == "__main__" and wants_help(sys.argv[1:]):
        build_parser().parse_args(["--help"])


def check_before_imports(
    module_name: str,
    build_parser: Callable[[], argparse.ArgumentParser],
    check: Callable[[argparse.Namespace], object],
) -> None:
    """Check the command line now (its options, then `check`, e.g. loading the config) when the
    calling module runs as a program, so that a mistake is its one line in a fraction of a second
    instead of after torch and open_clip are imported on every rank. With `--debug` the real path
    runs instead (it shows the traceback). Imported as a module (tests, other code), it does nothing."""
    if module_name != "__main__" or "--debug" in sys.argv or os.environ.get("TEXT4VIS_DEBUG") == "1":
        return
    from utils.errors import run_cli

    run_cli(lambda: check(build_parser().parse_args()))
