"""Shared fixtures: repositories in every mode, mounts undone for sure."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from fnmatch import fnmatch
from pathlib import Path

import pytest

from store import RepoMode, Repository
from tests.helpers import IS_ROOT, Mounts


def pytest_configure(config: pytest.Config) -> None:
    """A run started in the background (`make test &`, nohup, some CI runners) inherits
    SIGINT ignored: Python then installs no KeyboardInterrupt handler, and every child a
    test starts inherits the ignoring, so the interrupt tests' real SIGINTs did nothing
    (three failed in a background `make test`, all passed at a terminal). Give this
    process Python's own handler, as at a terminal; exec turns it back into the default
    action for the children, which then install theirs."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    _bytecode_for_children(config)


def _bytecode_for_children(config: pytest.Config) -> None:
    """Let the thousands of sapwood commands the tests start run from bytecode. Where
    PYTHONDONTWRITEBYTECODE is set (these machines set it; the source tree keeps no
    __pycache__), every command compiled each module it imports from source: ~75 ms of
    a ~0.15 s command, several minutes of the suite. The bytecode goes to a directory of
    this run's own (PYTHONPYCACHEPREFIX), removed at its end; readable by the
    unprivileged user some tests run as, writable by root only (nobody else's bytecode
    is ever run). Behaviour is the same from source or bytecode."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    cache = tempfile.mkdtemp(prefix="sapwood-tests-bytecode-")
    os.chmod(cache, 0o755)
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = cache
    config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))


ALL_MODES = [m for m in RepoMode]
LONG = bool(os.environ.get("SAPWOOD_LONG"))


# The test files that take longest (summed durations of a serial run, session 12),
# longest first. `make test` sends whole files to its processes (pytest-xdist,
# --dist loadfile --no-loadscope-reorder) in the order they are collected: these go
# first, so that no process is left running a long file when the others are done.
SLOW_FILES = (
    "tests/net/test_storage_attacks.py",
    "tests/net/test_session11_attacks.py",
    "tests/net/test_pipelined_attacks.py",
    "tests/mountd/test_session11_attacks.py",
    "tests/net/test_session10_attacks.py",
    "tests/store/test_safety.py",
    "tests/cli/test_bad_input.py",
    "tests/store/test_damaged_repository.py",
    "tests/fs/test_debian.py",
    "tests/store/test_attack_scale.py",
    "tests/mountd/test_daemon_attacks.py",
    "tests/test_example_program.py",
    "tests/sysroot/test_crash.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: slow files first
        rank = {name: n for n, name in enumerate(SLOW_FILES)}
        items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
    _skip_long(items)


def _skip_long(items: list[pytest.Item]) -> None:
    """Cases marked ``long`` run only with SAPWOOD_LONG=1 (`make test-long`): stress
    runs and the variants of an attack. ``long(keep=PATTERNS)`` on a parametrized test
    keeps in the default run the cases whose parameter id matches one of the fnmatch
    PATTERNS (a str or a tuple): a representative of each kind of attack stays."""
    if LONG:
        return
    skip = pytest.mark.skip(reason="a long or variant case: SAPWOOD_LONG=1 (make test-long)")
    for item in items:
        marker = item.get_closest_marker("long")
        if marker is None:
            continue
        keep = marker.kwargs.get("keep", ())
        patterns = (keep,) if isinstance(keep, str) else tuple(keep)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and any(fnmatch(callspec.id, p) for p in patterns):
            continue
        item.add_marker(skip)


# the shared 24-commit history (fixture history_tree), for tests of history commands
pytest_plugins = ("tests.history_tree",)


def _mode_param(mode: RepoMode) -> object:
    marks = []
    if mode is RepoMode.BARE and not IS_ROOT:
        marks.append(pytest.mark.skip(reason="bare mode needs root"))
    return pytest.param(mode, id=mode.value, marks=marks)


@pytest.fixture(params=[_mode_param(m) for m in ALL_MODES])
def mode(request: pytest.FixtureRequest) -> RepoMode:
    """Every repository mode: one test body, run in each (as OSTree's basic-test.sh)."""
    value: RepoMode = request.param
    return value


@pytest.fixture
def repo(tmp_path: Path, mode: RepoMode) -> Iterator[Repository]:
    repository = Repository.init(tmp_path / "repo", mode)
    yield repository
    repository.close()


@pytest.fixture
def user_repo(tmp_path: Path) -> Iterator[Repository]:
    """A bare-user repository, for tests about one mode-independent behaviour."""
    repository = Repository.init(tmp_path / "repo", RepoMode.BARE_USER)
    yield repository
    repository.close()


@pytest.fixture
def shared() -> Iterator[Path]:
    """A fresh directory of this user's that uid 65534 can reach (0755, in /tmp: pytest's
    basetemp is root's alone), removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="sapwood-shared-", dir="/tmp"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base)


@pytest.fixture(autouse=True)
def _no_ambient_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAPWOOD_REPO", raising=False)
    os.umask(0o022)


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Mounts]:
    """Mount with ``mount.foreground(repo_path, *args)`` or ``mount.background(...)``;
    every mount is gone when the test ends (checked against the mount table)."""
    with ExitStack() as stack:
        yield Mounts(stack, tmp_path)
