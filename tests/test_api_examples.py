"""The python examples of docs/api.md, run for real, as a reader would run them.

Every ```python block of the guide is a complete program whose first line names it
(``# NAME.py: ...``); each is written to a temporary directory and run there with this
interpreter, and what it prints (or its exit status) is checked. The setuid gate runs
against repositories built here: it must fail on each way a commit can bring in a
setuid file, and pass on commits that do not.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import sapwood

API_MD = Path(__file__).resolve().parent.parent / "docs" / "api.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_NAME = re.compile(r"# (\w+\.py)\b")


def examples() -> dict[str, str]:
    """The guide's python blocks by program name."""
    found: dict[str, str] = {}
    for block in _BLOCK.findall(API_MD.read_text()):
        match = _NAME.match(block)
        assert match, f"a python block of docs/api.md does not start with '# NAME.py':\n{block}"
        assert match.group(1) not in found, f"two blocks named {match.group(1)}"
        found[match.group(1)] = block
    return found


def run_example(
    name: str, where: Path, *args: str | os.PathLike[str]
) -> subprocess.CompletedProcess[str]:
    program = where / name
    program.write_text(examples()[name])
    return subprocess.run(
        [sys.executable, str(program), *map(str, args)],
        cwd=where,
        env={**os.environ, "TMPDIR": str(where)},  # the programs' mkdtemp() stays in the test's
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_python_block_is_a_program_tested_here() -> None:
    assert set(examples()) == {
        "errors.py",
        "etc_changes.py",
        "mount_build.py",
        "setuid_gate.py",
        "publish_and_pull.py",
        "deploy_update.py",
    }


def _printed_in_the_guide(name: str) -> str:
    """The output docs/api.md shows after the program ``name`` ("It prints:")."""
    text = API_MD.read_text()
    after = text[text.index(f"# {name}:") :]
    shown = re.search(r"It prints:\n\n```\n(.*?)```", after, re.DOTALL)
    assert shown, f"docs/api.md shows no output for {name}"
    return shown.group(1)


@pytest.mark.parametrize("name", ["publish_and_pull.py", "deploy_update.py"])
def test_example_prints_what_the_guide_shows(tmp_path: Path, name: str) -> None:
    result = run_example(name, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == _printed_in_the_guide(name)


def test_errors_example_catches_each_error_by_its_class(tmp_path: Path) -> None:
    result = run_example("errors.py", tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("RepoNotFoundError: ")
    assert lines[0].endswith("/nowhere: not a sapwood repository")
    assert lines[1] == "RefNotFoundError: os/main: no such ref or commit"
    assert lines[2] == "RefNotFoundError: os/main~1: no such ref or commit"


def test_etc_changes_example_prints_what_the_guide_says(tmp_path: Path) -> None:
    result = run_example("etc_changes.py", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "M /etc/hostname\nD /etc/motd\nA /etc/ssh\n  + /etc/ssh/sshd_config\n"
    ), "docs/api.md shows this output: keep them in step"
    assert "/usr" not in result.stdout


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
def test_mount_build_example_reads_the_commit_through_a_mount(tmp_path: Path) -> None:
    result = run_example("mount_build.py", tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"committed [0-9a-f]{12} new: True", lines[0]), lines
    assert lines[1:] == ["VERSION: 1.4.2", "bin/hello: -rwxr-xr-x", "still mounted: False"]
    with open("/proc/self/mountinfo") as table:
        assert str(tmp_path) not in table.read(), "the example left a mount behind"


class Gate:
    """A bare-user repository whose branch ci/main a test moves, and the gate run on it."""

    def __init__(self, tmp_path: Path) -> None:
        self.where = tmp_path
        self.repo_path = tmp_path / "repo"
        self.tree = tmp_path / "tree"
        (self.tree / "usr" / "bin").mkdir(parents=True)
        (self.tree / "usr" / "bin" / "ls").write_bytes(b"\x7fELF ls")
        (self.tree / "usr" / "bin" / "ls").chmod(0o755)
        (self.tree / "etc").mkdir()
        (self.tree / "etc" / "hostname").write_text("ci1\n")
        sapwood.Repository.init(self.repo_path, sapwood.RepoMode.BARE_USER).close()

    def commit(self, branch: str = "ci/main", root: bool = False) -> str:
        parent = sapwood.NO_PARENT if root else None
        with sapwood.Repository.open(self.repo_path) as repo:
            result = sapwood.commit(repo, branch, self.tree, parent=parent)
        return result.commit_id.hex()

    def check(self, rev: str) -> subprocess.CompletedProcess[str]:
        return run_example("setuid_gate.py", self.where, self.repo_path, rev)


def test_setuid_gate_passes_commits_without_new_setuid_files(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    first = gate.check(gate.commit())  # a root commit: checked whole
    assert first.returncode == 0, first.stderr
    assert "no new setuid files" in first.stdout
    (gate.tree / "etc" / "hostname").write_text("ci2\n")
    (gate.tree / "opt" / "tool").mkdir(parents=True)
    (gate.tree / "opt" / "tool" / "run").write_text("#!/bin/sh\n")
    (gate.tree / "opt" / "tool" / "run").chmod(0o2755)  # setgid is not setuid
    second = gate.check(gate.commit())
    assert (second.returncode, second.stderr) == (0, "")


def test_setuid_gate_fails_on_a_setuid_file_in_an_added_directory(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    gate.commit()
    bin_dir = gate.tree / "opt" / "tool" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "helper").write_bytes(b"\x7fELF helper")
    (bin_dir / "helper").chmod(0o4755)
    (bin_dir / "plain").write_bytes(b"\x7fELF plain")
    (bin_dir / "plain").chmod(0o755)
    added = gate.commit()
    result = gate.check(added)
    assert result.returncode == 1
    assert result.stderr == f"setuid-gate: {added} adds a setuid file: /opt/tool/bin/helper\n"

    # The next commit leaves the setuid file as it was: nothing new to stop.
    (gate.tree / "etc" / "hostname").write_text("ci2\n")
    later = gate.check(gate.commit())
    assert (later.returncode, later.stderr) == (0, "")


def test_setuid_gate_fails_on_a_file_made_setuid_and_on_a_root_commit(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    gate.commit()
    (gate.tree / "usr" / "bin" / "ls").chmod(0o4755)  # same content, new mode
    result = gate.check("ci/main")
    assert result.returncode == 0  # not committed yet: ci/main is still clean
    result = gate.check(gate.commit())
    assert result.returncode == 1
    assert result.stderr.endswith("adds a setuid file: /usr/bin/ls\n")
    assert gate.check(gate.commit(branch="other/first", root=True)).returncode == 1


def test_setuid_gate_says_why_it_cannot_check(tmp_path: Path) -> None:
    gate = Gate(tmp_path)
    result = gate.check("ci/main")
    assert result.returncode == 2
    assert result.stderr == "setuid-gate: cannot check ci/main: ci/main: no such ref or commit\n"
    nowhere = run_example("setuid_gate.py", tmp_path, tmp_path / "nowhere", "ci/main")
    assert nowhere.returncode == 2
    assert "not a sapwood repository" in nowhere.stderr


def test_a_file_node_where_a_directory_is_needed_is_a_sapwood_error(tmp_path: Path) -> None:
    """The guide promises that what sapwood raises on purpose is a SapwoodError."""
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "file").write_text("x\n")
    with sapwood.Repository.init(tmp_path / "repo", sapwood.RepoMode.BARE_USER) as repo:
        commit_id = sapwood.commit(repo, "b", tmp_path / "tree").commit_id
        file_node = sapwood.lookup(repo, commit_id, "/file")
        with pytest.raises(sapwood.SapwoodError):
            sapwood.children(repo, file_node)
        with pytest.raises(sapwood.SapwoodError):
            list(sapwood.diff_trees(repo, file_node, file_node))
