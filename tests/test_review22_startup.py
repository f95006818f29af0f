"""review22 (session 17): the command's start-up changes (c0fd7f1, 4e42e90, ffde1fa,
d27871e), attacked. A defect found and not fixed yet is an xfail(strict=True) test
naming its finding in /work/plan/review22.md; a guard that passes is a plain test."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(probe: str, *env: tuple[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **dict(env)},
        timeout=120,
    )


def test_the_named_tuples_made_by_call_behave_as_the_classes_did() -> None:
    from store.ids import ObjectId
    from store.inodes import LinkedObject
    from store.objects import FileStat
    from store.trees import Change, _Descend

    stat = FileStat(0, 0, 0o100644, 3, b"F\x01header")
    linked = LinkedObject(ObjectId(b"\x01" * 32), 1, 2, 0o100755)
    change = Change("A", b"/a", None, None)
    descend = _Descend(None, None)  # type: ignore[arg-type]
    for value, module, fields in (
        (stat, "store.objects", ("uid", "gid", "mode", "size", "header")),
        (linked, "store.inodes", ("object_id", "uid", "gid", "mode")),
        (change, "store.trees", ("kind", "path", "old", "new")),
        (descend, "store.trees", ("old", "new")),
    ):
        kind = type(value)
        assert kind.__module__ == module and kind._fields == fields
        assert pickle.loads(pickle.dumps(value)) == value
        assert copy.deepcopy(value) == value
        assert repr(value).startswith(f"{kind.__name__}({fields[0]}=")
        assert list(typing.get_type_hints(kind)) == list(fields)
        assert value == tuple(value)  # still a plain tuple to compare
    assert "kind, path, *_ = change" in (Change.__doc__ or "")
    assert (FileStat.__doc__ or "").startswith("What stat shows of a file object")
    assert (LinkedObject.__doc__ or "").startswith("A content object")
    kind_, path, *_ = change
    assert (kind_, path) == ("A", b"/a")


def test_pull_local_is_reached_every_way_it_was() -> None:
    probe = (
        "import store.pull\n"
        "from store.pull import pull_local\n"
        "import store.pull.local as local\n"
        "assert pull_local is local.pull_local is store.pull.pull_local\n"
        "ns = {}\nexec('from store.pull import *', ns)\n"
        "assert ns['pull_local'] is pull_local\n"
        "import sapwood\nassert sapwood.pull_local.__module__ == 'sapwood._net'\n"
        "try:\n    store.pull.nope\nexcept AttributeError as e:\n    print(e)\n"
    )
    out = _python(probe)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "module 'store.pull' has no attribute 'nope'"


def test_dir_of_store_pull_names_pull_local() -> None:
    out = _python("import store.pull\nprint('pull_local' in dir(store.pull))")
    assert out.stdout.strip() == "True", out.stderr


# argv whose output argparse writes with its gettext'd words: usage, help, and its errors
# (named % formats, choices, a missing argument, an ambiguous and an unknown option)
_ARGVS = [
    ["--help"],
    ["pull-local", "--help"],
    ["checkout", "--help"],
    [],
    ["nope"],
    ["pull-local"],
    ["--repo"],
    ["refs", "--nope"],
    ["log", "--max-count", "x"],
    ["prune", "--dep", "1", "--de"],
    ["init", "--mode", "nope"],
]

_COMPARE = """
import argparse, contextlib, io, json, sys
from sapwood.cli import main as cli

def outputs():
    seen = []
    for argv in ARGVS:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(argv)
            except SystemExit as exc:
                code = exc.code
        seen.append([argv, code, out.getvalue(), err.getvalue()])
    parser = argparse.ArgumentParser(prog="p", exit_on_error=False)
    parser.add_argument("--two", nargs=2)
    parser.add_argument("--one", nargs=1)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--a", action="store_true")
    group.add_argument("--b", action="store_true")
    for argv in (["--two", "x"], ["--one"], ["--a", "--b"]):
        try:
            parser.parse_args(argv)
        except argparse.ArgumentError as exc:
            seen.append([argv, str(exc)])
    seen.append(parser.format_help())
    return seen

before = outputs()
cli._untranslated_argparse()
assert argparse._ is str
after = outputs()
print(json.dumps([before, after]))
"""


@pytest.mark.parametrize("language", ["C", "fr_FR.UTF-8"])
def test_argparse_words_read_the_same_untranslated(tmp_path: Path, language: str) -> None:
    """Every word argparse writes (usage, --help, errors with named % formats, plurals
    of ngettext) reads the same with run()'s untranslated argparse as with gettext."""
    import json

    probe = f"ARGVS = {_ARGVS!r}\n" + _COMPARE
    out = _python(
        probe,
        ("LANGUAGE", language),
        ("LANG", language),
        ("COLUMNS", "100"),
        ("SAPWOOD_REPO", str(tmp_path / "none")),
    )
    assert out.returncode == 0, out.stderr
    before, after = json.loads(out.stdout)
    assert after == before
    errors = "".join(entry[3] for entry in after[: len(_ARGVS)])
    assert "sapwood: error: unrecognized arguments: --nope" in errors
    assert "invalid choice: 'nope'" in errors
    assert ["--two", "x"] in [entry[0] for entry in after if isinstance(entry, list)]
    plurals = [entry[1] for entry in after[len(_ARGVS) :] if isinstance(entry, list)]
    assert "argument --two: expected 2 arguments" in plurals
    assert "argument --one: expected 1 argument" in plurals
    assert "argument --b: not allowed with argument --a" in plurals


def test_the_index_releases_pages_without_ctypes_loaded_first() -> None:
    probe = (
        "import mmap, sys\nimport store.mapped_pages as mp\n"
        "assert 'ctypes' not in sys.modules\n"
        "m = mmap.mmap(-1, 1 << 16, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
        "m[:5] = b'hello'\n"
        "import ctypes\n"
        "start = ctypes.addressof(ctypes.c_char.from_buffer(m))\n"
        "mp.madvise_dontneed(start, 1 << 16)\n"
        "print(bytes(m[:5]))\n"
    )
    out = _python(probe)
    assert out.returncode == 0, out.stderr
    # an anonymous private map let go: its pages read back as zeros (the call ran)
    assert out.stdout.strip() == repr(b"\0" * 5)


def test_the_entry_point_turns_the_collector_back_on_for_the_command() -> None:
    """start.py stops the collector at import; the command itself runs with it on (a long
    pull, a mount's daemon: cycles collected), the start-up's objects frozen."""
    probe = (
        "import gc, sys\nimport sapwood.cli.start as start\nassert not gc.isenabled()\n"
        "import sapwood.cli.main as cli\nseen = []\n"
        "def probe(args):\n    seen.append((gc.isenabled(), gc.get_freeze_count() > 0))\n"
        "    return 0\n"
        "real = cli._parse\n"
        "def parse(argv):\n    args = real(argv)\n    args.func = probe\n    return args\n"
        "cli._parse = parse\n"
        "sys.argv = ['sapwood', 'refs']\n"
        "try:\n    start.run()\nexcept SystemExit as exc:\n"
        "    print(exc.code, seen)\n"
    )
    out = _python(probe, ("SAPWOOD_REPO", "/nonexistent-r22"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0 [(True, True)]"
