"""A Ctrl-C that lands during a commit point is held back to its end (store/interrupts.py),
then ends the command: the store warns that what was committed is kept, and the CLI's
own "interrupted" line used to follow it (two lines: attack17 6). Now one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from store import RepoMode, Repository

ROOT = Path(__file__).resolve().parents[2]

# Runs `sapwood commit` through the CLI's main(); the index's commit point sends this
# process a SIGINT as it begins, as a Ctrl-C landing there would.
_SCRIPT = r"""
import os, signal, sys
from store.index import Index
from sapwood.cli.main import main
real = Index.apply
def apply(index, batch, before_commit=None):
    if batch.refs:  # the commit point (file batches are listed before it)
        os.kill(os.getpid(), signal.SIGINT)
    real(index, batch, before_commit)
Index.apply = apply
sys.exit(main(["--repo", sys.argv[1], "commit", "-b", "main", sys.argv[2]]))
"""


def test_a_ctrl_c_held_to_the_end_of_a_commit_point_says_so_in_one_line(tmp_path: Path) -> None:
    Repository.init(tmp_path / "repo", RepoMode.BARE_USER).close()
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_text("kept\n")
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "repo"), str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == [
        "sapwood: interrupted after the commit point: what was committed is kept"
    ]
    with Repository.open(tmp_path / "repo") as repo:
        assert "main" in repo.refs()  # kept, as the line says


_PLAIN = r"""
import os, signal, sys
from store.index import Index
from sapwood.cli.main import main
def apply(index, batch, before_commit=None):
    raise KeyboardInterrupt  # before the commit point: nothing committed
Index.apply = apply
sys.exit(main(["--repo", sys.argv[1], "commit", "-b", "main", sys.argv[2]]))
"""


def test_a_ctrl_c_before_the_commit_point_still_says_interrupted(tmp_path: Path) -> None:
    Repository.init(tmp_path / "repo", RepoMode.BARE_USER).close()
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_text("not kept\n")
    done = subprocess.run(
        [sys.executable, "-c", _PLAIN, str(tmp_path / "repo"), str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert (done.returncode, done.stderr) == (130, "sapwood: interrupted\n")
    with Repository.open(tmp_path / "repo") as repo:
        assert repo.refs() == {}
