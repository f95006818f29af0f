"""Start-up: ``import sapwood`` and ``import store`` load their names on first use.

Every command and every update pull pays Python's start-up; the facade used to import
every layer (~130 ms) before doing anything. These tests keep it lazy, and keep the
three lists of a lazy package (its TYPE_CHECKING imports, which mypy and pdoc read; its
``_HOMES`` table, which runs; its ``__all__``) in agreement.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAZY_PACKAGES = ("sapwood", "store")


def _loaded_after(code: str) -> list[str]:
    """The modules of store, fs and mountd that ``code`` leaves loaded, in a new Python."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] in "
    probe += "{'store', 'fs', 'mountd'}))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded: list[str] = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    return loaded


def test_importing_sapwood_loads_no_layer() -> None:
    assert _loaded_after("import sapwood") == []


def test_importing_store_loads_only_its_package() -> None:
    assert _loaded_after("import store") == ["store"]


def test_a_name_loads_only_what_it_needs() -> None:
    """RepoMode lives in store.modes: using it does not load the index, deltas or fs."""
    loaded = _loaded_after("import sapwood\nsapwood.RepoMode")
    assert "store.modes" in loaded
    assert not [m for m in loaded if m.startswith(("fs", "mountd", "store.deltas", "store.index"))]


def _type_checking_imports(init: Path) -> dict[str, str]:
    """name -> module of the imports under the top-level ``if TYPE_CHECKING:``."""
    found: dict[str, str] = {}
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.module
                for alias in statement.names:
                    found[alias.asname or alias.name] = statement.module
    return found


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_the_lazy_table_matches_the_typed_imports_and_all(package: str) -> None:
    """A name added to one list and not the others fails here, not in a user's program
    (mypy would pass a name the table lacks; the table would serve one mypy never saw)."""
    module = importlib.import_module(package)
    typed = _type_checking_imports(ROOT / package / "__init__.py")
    assert typed, f"{package}/__init__.py has no TYPE_CHECKING imports"
    assert typed == module._HOMES
    assert sorted(module.__all__) == sorted(typed)
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_name_resolves_to_its_home_and_is_listed(package: str) -> None:
    module = importlib.import_module(package)
    for name, home in module._HOMES.items():
        assert getattr(module, name) is getattr(importlib.import_module(home), name), name
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


def test_a_submodule_imported_first_does_not_hide_its_function() -> None:
    """store.prune is a module and store's prune a function: whichever loads first,
    ``from store import prune`` is the function (as when store imported it eagerly)."""
    code = (
        "import store.prune, store.fsck\nfrom store import prune, fsck\nimport types\n"
        "print(isinstance(prune, types.FunctionType), isinstance(fsck, types.FunctionType))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.split() == ["True", "True"]
    import store

    assert isinstance(store.prune, types.FunctionType)


def _cli_loads(*argv: str) -> list[str]:
    """The layers' modules (and sapwood.cli's) loaded by running `sapwood ARGV`."""
    code = (
        f"from sapwood.cli.main import main\ntry:\n    main({list(argv)!r})\n"
        "except SystemExit:\n    pass"
    )
    probe = f"{code}\nimport sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] in "
    probe += "{'store', 'fs', 'mountd'} or m.startswith('sapwood.cli.')))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    loaded: list[str] = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    return loaded


def test_the_command_line_loads_only_the_command_it_runs(tmp_path: Path) -> None:
    helped = _cli_loads("--help")
    assert not [m for m in helped if m.startswith(("fs", "mountd", "store.repo", "store.index"))]
    assert not [m for m in helped if m.endswith(("_cmds", "_cmd"))]
    import sapwood

    sapwood.Repository.init(tmp_path / "repo", sapwood.RepoMode.BARE_USER).close()
    listed = _cli_loads("--repo", str(tmp_path / "repo"), "refs")
    assert "sapwood.cli.repo_cmds" in listed
    assert not [m for m in listed if m.startswith(("fs", "mountd", "store.deltas"))]
    assert not [m for m in listed if m.endswith(("_cmds", "_cmd")) and "repo_cmds" not in m]


def _registered(module: str) -> dict[str, str | None]:
    """The subcommands ``module``'s register() adds, each with its help line."""
    import argparse

    commands = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(f"sapwood.cli.{module}").register(commands)
    helps = {action.dest: action.help for action in commands._choices_actions}
    return {name: helps.get(name) for name in commands.choices}


def test_the_command_table_matches_the_modules() -> None:
    """Each command is listed (in `sapwood --help`) with the help its module gives it,
    and run by the module that defines it."""
    from sapwood.cli import main

    for module in dict.fromkeys(module for _, module, _ in main.COMMANDS):
        table = {name: help_line for name, home, help_line in main.COMMANDS if home == module}
        assert _registered(module) == table, f"update COMMANDS in sapwood/cli/main.py for {module}"


def test_the_stub_parser_helps_and_refuses_as_the_whole_one() -> None:
    from sapwood import UsageError
    from sapwood.cli import errors, main

    whole, stubs = main.build_parser(), main.build_parser(load=())
    assert stubs.format_help() == whole.format_help()
    assert stubs.format_usage() == whole.format_usage()
    for parser in (whole, stubs):
        with pytest.raises(UsageError, match="invalid choice: 'nope' \\(choose from 'init'"):
            parser.parse_args(["nope"])
    assert main.EXIT_INTERNAL == errors.EXIT_INTERNAL


def test_every_command_module_is_in_the_table() -> None:
    """A module of sapwood.cli with a register() that COMMANDS does not name would
    never be loaded: its commands would not exist."""
    from sapwood.cli import main

    registering = {
        path.stem
        for path in (ROOT / "sapwood" / "cli").glob("*.py")
        if "\ndef register(" in path.read_text()
    }
    assert registering == {module for _, module, _ in main.COMMANDS}


def test_the_command_stops_the_collector_before_its_imports() -> None:
    """The console script runs sapwood.cli.start, which stops the cycle collector before
    anything heavy is imported: ``import sapwood`` (which comes first) loads neither
    typing nor re, and once sapwood.cli.start is imported the collector is off."""
    import tomllib

    with (ROOT / "pyproject.toml").open("rb") as project:
        assert tomllib.load(project)["project"]["scripts"]["sapwood"] == "sapwood.cli.start:run"
    probe = (
        "import sys\nimport sapwood\nheavy = [m for m in ('typing', 're', 'logging') "
        "if m in sys.modules]\nimport gc, sapwood.cli.start\nprint(heavy, gc.isenabled())"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.split() == ["[]", "False"]


def test_a_pull_does_not_load_pull_local() -> None:
    loaded = _loaded_after("import sapwood\nsapwood.pull")
    assert "store.pull.pull" in loaded and "store.pull.local" not in loaded


def test_the_object_model_compiles_no_annotation() -> None:
    """A named tuple declared as a class here has its annotations compiled by typing, and
    a process's first compile() costs ~1.8 ms (CPython builds its ast types): the
    modules a pull imports make none (importlib's compiles, in "exec" mode, aside)."""
    probe = (
        "import builtins\nasked = []\ncompile_ = builtins.compile\n"
        "def compile(source, *args, **kwargs):\n"
        "    if (args[1:2] or [kwargs.get('mode')])[0] == 'eval':\n"
        "        asked.append(source)\n"
        "    return compile_(source, *args, **kwargs)\n"
        "builtins.compile = compile\n"
        "import sapwood.cli.start, sapwood.cli.net_cmds, store.pull.pull, store.trees\n"
        "print(asked)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def test_the_command_asks_no_catalogue_for_argparse_words(tmp_path: Path) -> None:
    """run() gives argparse its words as written (no gettext search, no locale module),
    and they read as before: "usage:" and its error line."""
    import sapwood

    sapwood.Repository.init(tmp_path / "repo", sapwood.RepoMode.BARE_USER).close()
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('locale:', 'locale' in sys.modules, file=sys.stderr))\n"
        f"sys.argv = ['sapwood', '--repo', {str(tmp_path / 'repo')!r}, 'refs', '--nope']\n"
        "from sapwood.cli.start import run\nrun()"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "sapwood: error: unrecognized arguments: --nope",
        "locale: False",
    ]
