"""What the human-readable outputs show, and how the process ends, whatever a commit holds.

Names with newlines, escape sequences, quotes or undecodable bytes are quoted as GNU
ls quotes them (and a shell turns the quoted form back into the name); subjects,
bodies and metadata reach the terminal with control characters escaped; a reader
that goes away (``| head``) ends sapwood by SIGPIPE without a word; --debug and the
other global options work after the subcommand too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sapwood.cli import log_cmd
from sapwood.cli.main import EXIT_INTERNAL, main
from sapwood.cli.output import printable, quote_path
from tests.helpers import cli, run, sapwood_argv, spawn

# name on disk -> how ls and diff show its path
EVIL_NAMES = {
    b"x\x1b[2Jy": "'/x'$'\\033''[2Jy'",
    b"it's": "'/it'\\''s'",
    b"sp ace": "'/sp ace'",
    b"plain": "/plain",
    "café".encode(): "/café",
    b"bad\xff": "'/bad'$'\\377'",
    b"tab\there": "'/tab'$'\\t''here'",
    b"x -> y": "'/x -> y'",
    "rtl\u202eevil".encode(): "'/rtl'$'\\342\\200\\256''evil'",
}
FORGED = b"x\nM    "  # a directory: its file /x\nM    /etc/shadow looks like a diff line
SUBJECT = "subject \x1b[31mred"
BODY = "line one\n\tindented, café\nbell\x07 and \x1b]0;title\x07\r\nlast"
METADATA = "note=a\nVersion: 9"

ENTRY = re.compile(r"[dl-][0-7]{5} \d+ \d+ +\d+ (\S.*)")
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u202e]")  # what must never be printed


def _evil_tree(src: Path) -> None:
    src.mkdir()
    for name in EVIL_NAMES:
        (src / os.fsdecode(name)).write_bytes(b"x")
    forged = src / os.fsdecode(FORGED) / "etc"
    forged.mkdir(parents=True)
    (forged / "shadow").write_bytes(b"x")
    os.symlink(b"target\nwith newline", os.path.join(os.fsencode(src), b"link"))
    os.setxattr(src / "plain", b"user.a\nb", b"v")


@pytest.fixture
def evil(tmp_path: Path) -> Path:
    repo, empty, src = tmp_path / "repo", tmp_path / "empty", tmp_path / "src"
    assert cli("--repo", repo, "init").code == 0
    empty.mkdir()
    assert cli("--repo", repo, "commit", "-b", "main", "-s", "empty", empty).code == 0
    _evil_tree(src)
    made = cli(
        "--repo", repo, "commit", "-b", "main", "-s", SUBJECT, "-m", BODY,
        "--add-metadata-string", METADATA, src,
    )  # fmt: skip
    assert made.code == 0, made.err
    return repo


def _assert_clean(text: str) -> None:
    for line in text.splitlines():
        assert not CONTROL.search(line), repr(line)


def test_ls_quotes_names_one_line_each(evil: Path) -> None:
    out = cli("--repo", evil, "ls", "-R", "-X", "main").out
    lines = out.splitlines()
    assert len(lines) == 1 + len(EVIL_NAMES) + 4  # root, names, forged dir, etc, shadow, link
    _assert_clean(out)
    entries = [ENTRY.fullmatch(line) for line in lines]
    assert all(entries), lines
    shown = [entry.group(1) for entry in entries if entry]
    for path in EVIL_NAMES.values():
        assert path in shown or f"{path} {{ 'user.a'$'\\n''b'=76 }}" in shown
    assert "'/x'$'\\n''M    /etc/shadow'" in shown
    assert "/link -> 'target'$'\\n''with newline'" in shown


def test_diff_cannot_be_forged(evil: Path) -> None:
    out = cli("--repo", evil, "diff", "main^", "main").out
    lines = out.splitlines()
    assert len(lines) == len(EVIL_NAMES) + 2  # the names, the forged directory, the link
    assert all(re.fullmatch(r"A    \S.*", line) for line in lines)
    assert "A    '/x'$'\\n''M    '" in lines
    assert not any(line.startswith("M") for line in lines)
    _assert_clean(out)


def test_json_keeps_names_exact(evil: Path) -> None:
    listing = json.loads(cli("--repo", evil, "ls", "-R", "--json", "main").out)
    paths = {entry["path"] for entry in listing}
    assert "/x\nM    /etc/shadow" in paths and "/x\x1b[2Jy" in paths and "/bad\\xff" in paths
    shown = json.loads(cli("--repo", evil, "show", "--json", "main").out)
    assert (shown["subject"], shown["body"]) == (SUBJECT, BODY)
    assert shown["metadata"] == {"note": "a\nVersion: 9"}


def test_shell_turns_the_quoted_path_back_into_the_name(evil: Path) -> None:
    for line in cli("--repo", evil, "diff", "main^", "main").out.splitlines():
        quoted = line[len("A    ") :]
        echoed = subprocess.run(
            ["bash", "-c", f"printf %s {quoted}"], capture_output=True, check=True
        ).stdout
        assert quote_path(echoed) == quoted


def test_log_and_show_escape_control_characters(evil: Path) -> None:
    for command in ("log", "show"):
        out = cli("--repo", evil, command, "main").out
        _assert_clean(out)
        assert "    subject \\033[31mred" in out.splitlines()
        assert "    \tindented, café" in out.splitlines()  # tab and UTF-8 as they are
        assert "    bell\\a and \\033]0;title\\a" in out.splitlines()
    show = cli("--repo", evil, "show", "main").out.splitlines()
    assert "Metadata: note=a\\nVersion: 9" in show
    assert not any(line.startswith("Version") for line in show)
    # commit, Date, Parent, Tree, Metadata, blank, subject, blank, 4 body lines, blank
    assert len(show) == 13


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=12).filter(lambda b: b"\0" not in b))
def test_quote_path_is_what_a_shell_reads_back(name: bytes) -> None:
    quoted = quote_path(name)
    assert "\n" not in quoted and not CONTROL.search(quoted)
    echoed = subprocess.run(["bash", "-c", f"printf %s {quoted}"], capture_output=True, check=True)
    assert echoed.stdout == name


@pytest.mark.parametrize(
    ("text", "shown"),
    [("plain text", "plain text"), ("a\tb", "a\tb"), ("é ü", "é ü"), ("a\nb", "a\\nb"),
     ("\x1b[2J", "\\033[2J"), ("\x9b", "\\302\\233"), ("\udcff", "\\377")],
)  # fmt: skip
def test_printable_keeps_text_and_escapes_controls(text: str, shown: str) -> None:
    assert printable(text) == shown


# ----- the process: pipes, flags, errors -------------------------------------------------
@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A commit whose ls, diff, log and cat outputs are far beyond a pipe's 64 KiB."""
    base = tmp_path_factory.mktemp("wide")
    repo, src = base / "repo", base / "src"
    src.mkdir()
    assert cli("--repo", repo, "init").code == 0
    assert cli("--repo", repo, "commit", "-b", "main", "-s", "empty", src).code == 0
    for n in range(2000):
        (src / f"a-file-with-a-rather-long-name-so-that-the-listing-is-wide-{n:05}").touch()
    # no line breaks (bytes.splitlines splits on \n and \r): head -c 10 of it is one line
    (src / "big").write_bytes(os.urandom(1 << 20).replace(b"\n", b" ").replace(b"\r", b" "))
    body = "\n".join(f"line {n} of a long commit message" for n in range(5000))
    assert cli("--repo", repo, "commit", "-b", "main", "-m", body, src).code == 0
    return repo


@pytest.mark.parametrize(
    ("args", "reader"),
    [
        (["ls", "-R", "main"], ["head", "-1"]),
        (["ls", "-R", "--json", "main"], ["head", "-c", "10"]),
        (["diff", "main^", "main"], ["head", "-1"]),
        (["log", "main"], ["head", "-1"]),
        (["cat", "main", "/big"], ["head", "-c", "10"]),
    ],
)
def test_a_reader_that_goes_away_ends_sapwood_quietly(
    wide: Path, args: list[str], reader: list[str]
) -> None:
    """As git and coreutils: killed by SIGPIPE (status 141 in a shell), nothing on stderr."""
    writer = spawn(*args, repo=wide, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert writer.stdout is not None and writer.stderr is not None
    head = subprocess.run(reader, stdin=writer.stdout, capture_output=True, check=True)
    writer.stdout.close()
    err = writer.stderr.read()
    assert writer.wait(timeout=60) == -signal.SIGPIPE, err
    assert err == b""
    assert head.stdout and len(head.stdout.splitlines()) == 1


def test_a_shell_pipeline_sees_status_141(wide: Path) -> None:
    command = shlex.join(sapwood_argv("ls", "-R", "main", repo=wide))
    proc = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command} | head -1 >/dev/null"],
        capture_output=True,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (141, b"")


def test_global_options_after_the_subcommand(wide: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SAPWOOD_REPO"}
    late_debug = run("log", "--debug", "nosuchref", repo=wide, env=env)
    assert late_debug.returncode != 0 and b"Traceback" in late_debug.stderr
    assert b"RefNotFoundError" in late_debug.stderr
    late_repo = cli("rev-parse", "-v", "--repo", wide, "main")
    assert late_repo.code == 0 and len(late_repo.out.strip()) == 64
    both = cli("--repo", wide / "nowhere", "rev-parse", "--repo", wide, "main")
    assert both.code == 0  # the later one wins, as argparse does for a repeated option


def test_an_unexpected_exception_is_one_line_without_debug(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken(args: object) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(log_cmd, "cmd_log", broken)
    result = cli("--repo", tmp_path, "log", "main")
    assert result.code == EXIT_INTERNAL
    assert result.err == (
        "sapwood: error: internal error: ZeroDivisionError: a bug (--debug shows the traceback)\n"
    )
    with pytest.raises(ZeroDivisionError):
        main(["--repo", str(tmp_path), "log", "--debug", "main"])


def test_messages_naming_typed_text_stay_one_line(evil: Path) -> None:
    result = cli("--repo", evil, "cat", "main", "/no\nsuch\x1b[2J")
    assert result.code != 0
    assert result.err.count("\n") == 1 and "\x1b" not in result.err
    assert "/no\\nsuch\\033[2J" in result.err


def test_log_lines_name_paths_on_one_line(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "fifo\nsapwood: forged")
    repo = tmp_path / "repo"
    assert cli("--repo", repo, "init").code == 0
    proc = run("-v", "--repo", repo, "commit", "-b", "m", "--skip-special", src)
    assert proc.returncode == 0, proc.stderr
    skipped = [line for line in proc.stderr.splitlines() if b"skipping" in line]
    assert len(skipped) == 1 and skipped[0].endswith(b"fifo\\nsapwood: forged")
    assert not any(line.startswith(b"sapwood: forged") for line in proc.stderr.splitlines())


def test_fsck_counts_in_words(tmp_path: Path) -> None:
    repo, src = tmp_path / "repo", tmp_path / "src"
    src.mkdir()
    (src / "only").write_bytes(b"one file")
    assert cli("--repo", repo, "init").code == 0
    assert cli("--repo", repo, "commit", "-b", "main", src).code == 0
    out = cli("--repo", repo, "fsck").out
    assert "checked 1 commit, 2 metadata and 1 file object" in out
    (only_object,) = (p for p in (repo / "objects").rglob("*.file"))
    only_object.chmod(stat.S_IRUSR | stat.S_IWUSR)
    only_object.write_bytes(b"corrupted")
    failed = cli("--repo", repo, "fsck")
    assert failed.code != 0 and failed.err.strip().endswith("fsck found 1 problem")
