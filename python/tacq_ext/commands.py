"""The registry of `tacq` subcommands: each module that defines one (cli.py,
demo/command.py) registers it here with @command, and cli.main builds the
argument parser from COMMANDS."""

from __future__ import annotations

from typing import Callable, Dict, Tuple

COMMANDS: Dict[str, Tuple[str, Callable, Callable]] = {}  # name -> (help, add_arguments, run)


def command(name: str, help: str):
    """@command(name, help)(add_arguments) decorates the run(args) function."""
    def register(add_arguments):
        def with_run(run):
            COMMANDS[name] = (help, add_arguments, run)
            return run
        return with_run
    return register
