"""The ``arrowloader`` command line: the dispatcher.

Each command's arguments and code live in its own module (:mod:`.bench`, :mod:`.prepare`,
:mod:`.inspect`, :mod:`.validate`); each registers its parser and the function that runs
it. Plain ``arrowloader`` prints help; ``arrowloader --version`` the version.

Output piped to a reader that stops early (``arrowloader inspect DIR | head -1``) ends the
command quietly, without a traceback, with status 141: what a shell reports for a program
that SIGPIPE ended (128 + 13), as ``yes | head -1`` does, so that ``set -o pipefail``
scripts see the same as for any other command.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Optional

from arrowloader import __version__
from arrowloader.cli.bench import add_bench_parser
from arrowloader.cli.inspect import add_inspect_parser
from arrowloader.cli.prepare import add_prepare_parser
from arrowloader.cli.validate import add_validate_parser
from arrowloader.errors import ArrowLoaderError


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``arrowloader`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="arrowloader",
        description="Feed tokenized text from memory-mapped Arrow files to PyTorch.",
    )
    parser.add_argument(
        "--version", action="version", version=f"arrowloader {__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_bench_parser(commands)
    # From text to a verified corpus.
    add_prepare_parser(commands)
    add_inspect_parser(commands)
    add_validate_parser(commands)
    return parser


#: The exit status after the reader of stdout went away: a shell's for a SIGPIPE death.
BROKEN_PIPE_STATUS = 128 + 13


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``arrowloader`` command; returns the exit status
    (:data:`BROKEN_PIPE_STATUS` when stdout's reader stopped reading)."""
    try:
        try:
            return _dispatch(list(sys.argv[1:] if argv is None else argv))
        finally:
            # Here, not at interpreter exit: output still buffered would fail there, with
            # "Exception ignored ... BrokenPipeError" and status 120.
            sys.stdout.flush()
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise  # some other pipe of the command's own
        # CPython's advice (the signal module's "Note on SIGPIPE"): point stdout at
        # devnull, so the flush at exit has nowhere to fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
        return BROKEN_PIPE_STATUS


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader closed it (poll reports an error on it);
    True where that cannot be asked."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll(), or no descriptor
        return True


def _dispatch(arguments: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.command is None:
        parser.print_help()
        return 0
    command = shlex.join(["arrowloader", *arguments])
    try:
        return args.run(args, command)
    except ArrowLoaderError as exc:
        print(f"arrowloader {args.command}: error: {exc}", file=sys.stderr)
        return 2
