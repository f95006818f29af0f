"""A secret keys file that others could read or replace is refused, as OpenSSH refuses
an unprotected private key (attack23's remark): by the library, ``sign`` and
``summary -u``, with one line naming the mode and ``chmod 600``; nothing is signed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from store import KeyFileError, read_keys_file
from store.signing import generate_keypair, write_keys_file
from tests.helpers import cli, write_tree


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    assert cli("--repo", path, "init", "--mode", "archive").code == 0
    write_tree(tmp_path / "src", {"a": "hello\n"})
    assert cli("--repo", path, "commit", "-b", "os/main", tmp_path / "src").code == 0
    return path


def _keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    result = cli("keygen", "--keys-file", path)
    assert result.code == 0, result.err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # keygen still writes 0600
    return path


def _state(repo: Path) -> list[tuple[str, bytes]]:
    return sorted(
        (str(p.relative_to(repo)), p.read_bytes()) for p in repo.rglob("*") if p.is_file()
    )


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o666])
def test_a_keys_file_others_can_read_or_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "keys"
    write_keys_file(path, generate_keypair())
    assert len(read_keys_file(path)) == 1  # 0600: taken
    path.chmod(mode)
    with pytest.raises(KeyFileError, match=f"mode {mode:04o}.*chmod 600") as caught:
        read_keys_file(path)
    assert caught.value.path == path


def test_a_keys_file_of_another_owner_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a file of another owner needs root")
    path = tmp_path / "keys"
    write_keys_file(path, generate_keypair())
    os.chown(path, 65534, 65534)
    with pytest.raises(KeyFileError, match="owned by uid 65534, not by this user"):
        read_keys_file(path)
    os.chown(path, 0, 0)  # root's own: taken
    assert len(read_keys_file(path)) == 1


@pytest.mark.parametrize("command", ["sign", "summary"])
def test_sign_and_summary_refuse_an_unprotected_keys_file(
    repo: Path, tmp_path: Path, command: str
) -> None:
    keys = _keys(tmp_path)
    keys.chmod(0o666)
    before = _state(repo)
    if command == "sign":
        result = cli("--repo", repo, "sign", "--keys-file", keys, "os/main")
    else:
        result = cli("--repo", repo, "summary", "-u", "--keys-file", keys)
    assert result.code != 0
    assert result.err.startswith("sapwood: error: ") and result.err.count("\n") == 1
    assert "0666" in result.err and "chmod 600" in result.err
    assert _state(repo) == before
    keys.chmod(0o600)  # the same file, protected: signs
    if command == "sign":
        assert cli("--repo", repo, "sign", "--keys-file", keys, "os/main").code == 0
    else:
        assert cli("--repo", repo, "summary", "-u", "--keys-file", keys).code == 0
    assert _state(repo) != before
