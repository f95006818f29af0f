"""summary, keygen, sign, show's signers and static-delta from the command line."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.helpers import cli, write_tree


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    assert cli("--repo", path, "init", "--mode", "archive").code == 0
    write_tree(tmp_path / "src", {"a": "hello\n", "d/b": "x" * 5000})
    assert cli("--repo", path, "commit", "-b", "os/main", tmp_path / "src").code == 0
    return path


def _keygen(path: Path) -> str:
    result = cli("keygen", "--keys-file", path)
    assert result.code == 0, result.err
    return result.out.strip()


def test_keygen_sign_and_show(repo: Path, tmp_path: Path) -> None:
    public = _keygen(tmp_path / "k1")
    assert stat.S_IMODE((tmp_path / "k1").stat().st_mode) == 0o600
    assert public not in (tmp_path / "k1").read_text()  # the file holds the secret key
    assert "Signed-by" not in cli("--repo", repo, "show", "os/main").out
    for _ in range(2):  # signing twice with one key is idempotent
        assert cli("--repo", repo, "sign", "--keys-file", tmp_path / "k1", "os/main").code == 0
    other = _keygen(tmp_path / "k2")
    assert cli("--repo", repo, "sign", "--keys-file", tmp_path / "k2", "os/main").code == 0
    shown = cli("--repo", repo, "show", "os/main").out
    assert f"Signed-by: {public} (good signature)" in shown
    assert f"Signed-by: {other} (good signature)" in shown
    signers = json.loads(cli("--repo", repo, "show", "--json", "os/main").out)["signatures"]
    assert sorted(s["key"] for s in signers) == sorted([public, other])
    assert all(s["valid"] for s in signers)


@pytest.mark.parametrize("how", ["missing", "public", "garbage", "directory", "no-rev"])
def test_sign_refuses_bad_input_and_changes_nothing(repo: Path, tmp_path: Path, how: str) -> None:
    keys = tmp_path / "keys"
    rev = "os/main"
    if how == "public":
        keys.write_text(_keygen(tmp_path / "real") + "\n")
    elif how == "garbage":
        keys.write_bytes(os.urandom(64))
    elif how == "directory":
        keys.mkdir()
    elif how == "no-rev":
        _keygen(keys)
        rev = "nosuch"
    before = sorted(p.name for p in (repo / "objects").glob("*/*"))
    result = cli("--repo", repo, "sign", "--keys-file", keys, rev)
    assert result.code != 0
    assert result.err.startswith("sapwood: error: ") and result.err.count("\n") == 1
    assert "Traceback" not in result.err
    assert sorted(p.name for p in (repo / "objects").glob("*/*")) == before


def test_keygen_never_overwrites(tmp_path: Path) -> None:
    _keygen(tmp_path / "k")
    before = (tmp_path / "k").read_bytes()
    result = cli("keygen", "--keys-file", tmp_path / "k")
    assert result.code != 0 and "exists" in result.err
    assert (tmp_path / "k").read_bytes() == before


def test_summary_update_show_and_sign(repo: Path, tmp_path: Path) -> None:
    missing = cli("--repo", repo, "summary")
    assert missing.code != 0 and "summary -u" in missing.err
    assert cli("--repo", repo, "summary", "-u").code == 0
    shown = cli("--repo", repo, "summary").out.splitlines()
    assert shown[0].startswith("os/main ") and shown[-1] == "unsigned"
    data = json.loads(cli("--repo", repo, "summary", "--json").out)
    assert list(data["refs"]) == ["os/main"] and data["signed"] is False
    _keygen(tmp_path / "k")
    assert cli("--repo", repo, "summary", "-u", "--keys-file", tmp_path / "k").code == 0
    assert json.loads(cli("--repo", repo, "summary", "--json").out)["signed"] is True
    bad = cli("--repo", repo, "summary", "-u", "--keys-file", tmp_path / "nosuch")
    assert bad.code != 0 and (repo / "summary.sig").exists()  # nothing was rewritten


def test_a_garbage_summary_is_one_line(repo: Path) -> None:
    (repo / "summary").write_bytes(b"<html>garbage</html>")
    result = cli("--repo", repo, "summary")
    assert result.code != 0 and result.err.count("\n") == 1 and "Traceback" not in result.err


def test_keygen_without_a_file_prints_both_keys(repo: Path, tmp_path: Path) -> None:
    lines = cli("keygen").out.splitlines()
    assert [line.split(": ")[0] for line in lines] == ["public", "secret"]
    (tmp_path / "k").write_text(lines[1].split(": ")[1] + "\n")
    (tmp_path / "k").chmod(0o600)  # a secret key others can read is refused
    assert cli("--repo", repo, "sign", "--keys-file", tmp_path / "k", "os/main").code == 0
    assert lines[0].split(": ")[1] in cli("--repo", repo, "show", "os/main").out


def test_static_delta_generate_list_and_summary(repo: Path, tmp_path: Path) -> None:
    first = cli("--repo", repo, "rev-parse", "os/main").out.strip()
    write_tree(tmp_path / "src", {"a": "changed\n"})
    assert cli("--repo", repo, "commit", "-b", "os/main", tmp_path / "src").code == 0
    second = cli("--repo", repo, "rev-parse", "os/main").out.strip()
    full = cli("--repo", repo, "static-delta", "generate", "--to", "os/main")
    assert full.code == 0 and full.out.strip() == second
    upd = cli("--repo", repo, "static-delta", "generate", "--from", "os/main^", "--to", "os/main")
    assert upd.code == 0 and upd.out.strip() == f"{first}-{second}"
    assert (repo / "deltas" / f"{first}-{second}" / "superblock").is_file()
    listed = cli("--repo", repo, "static-delta", "list").out.splitlines()
    assert sorted(listed) == sorted([second, f"{first}-{second}"])
    assert cli("--repo", repo, "summary", "-u").code == 0
    offered = json.loads(cli("--repo", repo, "summary", "--json").out)["deltas"]
    assert {(d["from"], d["to"]) for d in offered} == {(None, second), (first, second)}


@pytest.mark.parametrize(
    "args",
    [
        ["static-delta", "generate", "--to", "nosuch"],
        ["static-delta", "generate", "--from", "nosuch", "--to", "os/main"],
        ["static-delta", "generate", "--from", "os/main", "--to", "os/main"],
        ["static-delta", "generate"],
        ["static-delta"],
    ],
)
def test_static_delta_bad_input(repo: Path, args: list[str]) -> None:
    result = cli("--repo", repo, *args)
    assert result.code != 0 and result.err.count("\n") == 1 and "Traceback" not in result.err
    assert not (repo / "deltas").exists() or not list((repo / "deltas").iterdir())
