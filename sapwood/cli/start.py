"""The `sapwood` command's entry point (pyproject.toml's [project.scripts]).

It stops Python's cycle collector before anything else is imported: the start-up
(the modules of the command, its parser) allocates objects by the hundred thousand, few
of them garbage, and a cycle search every 700 allocations cost ~3.5 ms of every command
(sapwood.cli.main's run() turns the collector back on once the command is parsed, with
what exists then set aside). Importing this module is all it does besides run():
``sapwood/__init__.py`` imports nothing heavy before it.
"""

import gc

gc.disable()

from sapwood.cli.main import run  # noqa: E402 (after the collector is stopped)

__all__ = ["run"]
