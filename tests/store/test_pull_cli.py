"""The command line of remotes and pull: one line per outcome, exit codes, quiet
stderr when it is not a terminal."""

from __future__ import annotations

import io
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sapwood.cli.progress import Progress
from store import RepoMode, Repository
from store.pull import PullProgress
from store.summary import update_summary
from tests.helpers import cli, commit_dir, write_tree
from tests.store.pull_server import Served, serve

KEY = "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE="  # base64 of 32 bytes


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAPWOOD_HTTP_TIMEOUT", "2")
    monkeypatch.setenv("SAPWOOD_HTTP_RETRIES", "1")
    monkeypatch.setenv("SAPWOOD_HTTP_BACKOFF", "0.01")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, str]]:
    with Repository.init(tmp_path / "archive", RepoMode.ARCHIVE) as archive:
        files = {f"d/f{n}": f"content {n}\n" for n in range(4)}
        head = commit_dir(archive, write_tree(tmp_path / "src", files), "main")
        update_summary(archive)
    with serve(tmp_path / "archive") as server:
        yield server, head.hex()


@pytest.fixture
def local(tmp_path: Path) -> Path:
    assert cli("--repo", tmp_path / "local", "init").code == 0
    return tmp_path / "local"


def test_remote_add_list_delete(local: Path) -> None:
    add = cli("--repo", local, "remote", "add", "origin", "http://127.0.0.1:1/repo")
    assert add.code == 0 and add.out == add.err == ""
    signed = ["remote", "add", "signed", "https://example.org/", "--sign-verify"]
    assert cli("--repo", local, *signed, "--trusted-key", KEY).code == 0
    listed = cli("--repo", local, "remote", "list")
    assert listed.out == "origin http://127.0.0.1:1/repo/\nsigned https://example.org/\n"
    entries = json.loads(cli("--repo", local, "remote", "list", "--json").out)
    assert entries[1] == {
        "name": "signed",
        "url": "https://example.org/",
        "sign_verify": True,
        "trusted_keys": [KEY],
    }
    assert cli("--repo", local, "remote", "delete", "signed").code == 0
    assert cli("--repo", local, "remote", "list").out == "origin http://127.0.0.1:1/repo/\n"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["bad/name", "http://x/"], "invalid remote name"),
        (["o:r", "http://x/"], "invalid remote name"),
        (["o", "ftp://x/"], "only http:// and https://"),
        (["o", "http://x/?q=1"], "without a query"),
        (["o", "http://x/", "--trusted-key", "short"], "not an ed25519 public key"),
        (["o", "http://x/", "--sign-verify"], "no trusted key"),
    ],
)
def test_remote_add_refuses_bad_input(local: Path, args: list[str], words: str) -> None:
    result = cli("--repo", local, "remote", "add", *args)
    assert result.code == 2 and words in result.err and len(result.err.splitlines()) == 1
    assert cli("--repo", local, "remote", "list").out == ""


def test_a_remote_made_invalid_by_hand_is_refused_when_read(local: Path) -> None:
    with open(local / "config", "a") as config:
        config.write('\n[remote "origin"]\nurl = file:///etc\n')
    result = cli("--repo", local, "pull", "origin")
    assert result.code == 2 and "only http:// and https://" in result.err


def test_pull_prints_the_refs_it_moved_and_stays_quiet_on_stderr(
    local: Path, served: tuple[Served, str]
) -> None:
    server, head = served
    assert cli("--repo", local, "remote", "add", "origin", server.url).code == 0
    dry = cli("--repo", local, "pull", "origin", "--dry-run")
    assert dry.code == 0, dry.err
    assert dry.out.splitlines()[0] == f"origin:main: (new) -> {head}"
    assert dry.out.splitlines()[1].startswith("would fetch 4 content objects")
    assert cli("--repo", local, "refs").out == ""
    result = cli("--repo", local, "pull", "origin", "main")
    assert result.code == 0 and result.err == ""
    assert result.out.splitlines()[0] == f"origin:main: (new) -> {head}"
    assert "4 content objects" in result.out.splitlines()[1]
    assert cli("--repo", local, "refs").out == "origin:main\n"
    assert cli("--repo", local, "fsck").code == 0


def test_pull_errors_are_one_line_with_their_exit_code(
    local: Path, served: tuple[Served, str]
) -> None:
    server, _ = served
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    cli("--repo", local, "remote", "add", "closed", f"http://127.0.0.1:{port}/")
    cli("--repo", local, "remote", "add", "origin", server.url)
    for args, code, words in [
        (["closed"], 4, "could not connect after 2 attempts"),
        (["origin", "nope"], 1, "has no ref nope"),
        (["nothere"], 2, "no remote nothere"),
        (["origin", "--depth", "-1"], 2, "give 0 or more parents"),
    ]:
        result = cli("--repo", local, "pull", *args)
        assert result.code == code, result.err
        assert len(result.err.splitlines()) == 1 and words in result.err, result.err
    assert cli("--repo", local, "refs").out == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_shown_on_a_terminal_and_cleared_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    shown = Progress("pull")
    shown.pull(PullProgress("content", 12, 3 << 20, 40, 10, 2.0))
    shown.close(success=False)  # cleared, without a summary line
    text = terminal.getvalue()
    assert "content:  25%" in text and "10/40" in text and "3.0 MiB, 1.5 MiB/s" in text
    assert text.endswith("\r") and not text.rsplit("\r", 2)[-2].strip()
