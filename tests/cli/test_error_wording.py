"""The command line's exit codes and advice, over a library that names no flags."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import sapwood
from sapwood.cli.errors import EXIT_INTERNAL, FLAG_WORDING, exit_code, message
from tests.helpers import cli

ROOT = Path(__file__).resolve().parent.parent.parent
_FLAG = re.compile(r"(?<![\w-])(--[a-z]|-[A-Za-z]\b)")  # --long or -X
_NOT_OURS = ("xz --check",)  # another program's flags, named in the library's advice


def _raised_texts(path: Path) -> list[str]:
    """The string pieces of every ``raise`` statement of a module."""
    tree = ast.parse(path.read_text(), str(path))
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            texts += [
                n.value
                for n in ast.walk(node.exc)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)
            ]
    return texts


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "store").rglob("*.py")) + sorted((ROOT / "fs").rglob("*.py")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_library_errors_name_no_flags(path: Path) -> None:
    for text in _raised_texts(path):
        if any(other in text for other in _NOT_OURS):
            continue
        assert not _FLAG.search(text), f"{path}: {text!r} names a command-line flag"


def _library_source() -> str:
    files = sorted((ROOT / "store").rglob("*.py")) + sorted((ROOT / "fs").rglob("*.py"))
    return "\n".join(path.read_text() for path in files)


@pytest.mark.parametrize("wording", FLAG_WORDING, ids=lambda w: w[2])
def test_each_reworded_phrase_is_the_librarys(wording: tuple[type, str, str]) -> None:
    """A phrase the library no longer says would silently stop being reworded."""
    _, library, _ = wording
    assert library in _library_source()


def test_exit_codes_are_those_of_before() -> None:
    assert exit_code(sapwood.IndexDamagedError("x")) == 3
    assert exit_code(sapwood.RepoNotFoundError("x")) == 2
    assert exit_code(sapwood.UsageError("x")) == 2
    assert exit_code(sapwood.NothingToCommitError("x")) == 2
    assert exit_code(sapwood.MountPointError("x")) == 2
    assert exit_code(sapwood.RefNotFoundError("x")) == 1
    assert exit_code(sapwood.CheckoutConflictError("x")) == 1
    assert exit_code(sapwood.MountError("x")) == 1
    assert EXIT_INTERNAL == 70


def test_advice_is_worded_with_flags() -> None:
    refused = sapwood.ModePolicyError(
        "/x: mode 4755 is setuid, setgid or world-writable, which a bare-user-only "
        "repository refuses (commit with canonical permissions)",
        path="/x",
        file_mode=0o104755,
    )
    assert message(refused).endswith("(commit with --canonical-permissions)")
    assert message(sapwood.SubpathNotADirectoryError(subpath="/etc/x")) == (
        "--subpath /etc/x: is not a directory"
    )
    plain = sapwood.RefNotFoundError("main: no such ref or commit", rev="main")
    assert message(plain) == "main: no such ref or commit"


def test_a_phrase_inside_a_path_is_left_as_it_is() -> None:
    """Only the library's own advice, which ends its message, is reworded."""
    repo = "/srv/use mode bare-user as an unprivileged user"
    read_only = sapwood.ReadOnlyRepositoryError(
        f"{repo}: this repository is read-only for you; nothing was written"
    )
    assert message(read_only) == str(read_only)
    where = "/x (commit with canonical permissions)"
    refused = sapwood.ModePolicyError(
        f"{where}: mode 4755 is setuid, setgid or world-writable, which a bare-user-only "
        "repository refuses (commit with canonical permissions)"
    )
    assert message(refused) == (
        f"{where}: mode 4755 is setuid, setgid or world-writable, which a bare-user-only "
        "repository refuses (commit with --canonical-permissions)"
    )
    missing = sapwood.ObjectMissingError("/d (by prune or fsck with delete): object 00 is missing")
    assert message(missing) == str(missing)


def test_a_note_added_to_a_library_message_keeps_the_rewording(tmp_path: Path) -> None:
    """A union checkout adds what it left DEST as to the error it met: the error's own
    advice is still worded with flags (DEST's name may hold the phrase too)."""
    with sapwood.Repository.init(tmp_path / "repo", sapwood.RepoMode.BARE_USER) as repo:
        source = tmp_path / "src"
        source.mkdir()
        (source / "f").write_text("committed\n")
        sapwood.commit(repo, "main", source)
    dest = tmp_path / "File exists and differs (union mode 'identical')"
    dest.mkdir()
    (dest / "f").write_text("changed\n")
    result = cli(
        "--repo", tmp_path / "repo", "checkout", "-U", "-H", "--union-identical", "main", dest
    )
    assert result.code == 1
    assert result.err.strip().endswith(
        f"/f: File exists and differs (--union-identical); {dest} was not changed"
    ), result.err


@pytest.mark.parametrize("wording", FLAG_WORDING, ids=lambda w: w[2])
def test_each_phrase_that_ends_a_message_is_reworded(wording: tuple[type, str, str]) -> None:
    cls, library, cli_words = wording
    assert message(cls(f"/some/path: {library}")) == f"/some/path: {cli_words}"


def test_advice_followed_by_a_note_is_reworded_as_before() -> None:
    """A commit that lost a reused object to prune says '--delete', as it always did,
    though the library's advice is followed by '; nothing was committed'."""
    error = sapwood.ObjectMissingError(
        "object 00, which this commit reuses, was removed from the repository while it "
        "ran (by prune or fsck with delete); nothing was committed"
    )
    assert message(error) == (
        "object 00, which this commit reuses, was removed from the repository while it "
        "ran (by prune or fsck --delete); nothing was committed"
    )
