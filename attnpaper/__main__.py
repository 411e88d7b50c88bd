"""Command line: `python -m attnpaper COMMAND ...`, one module per command in attnpaper/cli (see --help of each)."""

from __future__ import annotations

import argparse
import copy
import sys

from .cli import bench, bundle, paper_memory, profile_ops, scaling, sweep, table, trainer_ref
from .cli.sweep import parse_set
from .files import interrupted, signals_interrupt

__all__ = ["COMMANDS", "build_parser", "main", "parse_set"]
COMMANDS = (sweep, bench, bundle, table, paper_memory, profile_ops, scaling, trainer_ref)
"""One module per command (attnpaper.cli), in the order --help lists them."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (and exit code 2); its sub-commands' parsers are its kind."""

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in --help, a list one as it is typed (``128 256``, not ``[128, 256]``); a help that
    says its default itself ("default: the notebook's") keeps its own words."""

    def _get_help_string(self, action):
        return action.help if "default:" in (action.help or "") else super()._get_help_string(action)

    def _expand_help(self, action):
        if isinstance(action.default, (list, tuple)):
            action = copy.copy(action)
            action.default = " ".join(map(str, action.default))
        return super()._expand_help(action)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, each command's options from its module, every default shown in --help."""
    from . import __version__

    fmt = _Formatter
    ap = _Parser(prog="python -m attnpaper", description=__doc__, formatter_class=fmt)
    ap.add_argument("--version", action="version", version=f"attnpaper {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for command in COMMANDS:
        parser = sub.add_parser(command.NAME, help=command.HELP, description=command.HELP, formatter_class=fmt)
        command.add_arguments(parser)
        parser.set_defaults(run=command.run)
    return ap


def main(argv=None) -> int:
    """Run one command; its exit status, 2 for bad input (one line saying what is wrong and what is valid)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv[1:]  # the command's own arguments as given: the sweep hands them on to its workers
    try:
        with signals_interrupt():  # SIGTERM too: one line and 143, not a silent exit
            return args.run(args)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # where the command has no handling of its own (e.g. while checking)
        kept = getattr(sys.modules[args.run.__module__], "ON_INTERRUPT", "")
        return interrupted(str(err) or "SIGINT", f"{args.cmd} stopped{'; ' + kept if kept else ''}")


if __name__ == "__main__":
    sys.exit(main())
