"""``summary_signers`` and ``sapwood summary``'s signature lines (attack23 9, 10): only
signatures of this summary's bytes count, and the files are read as regular files."""

from __future__ import annotations

from pathlib import Path

import pytest

from store import FormatError, RepoMode, Repository
from store.signing import generate_keypair
from store.summary import read_summary, summary_signers, update_summary
from tests.helpers import cli, commit_files


def _archive(tmp_path: Path) -> Repository:
    repo = Repository.init(tmp_path / "archive", RepoMode.ARCHIVE)
    commit_files(repo, tmp_path / "tree", {"f": "x\n"})
    return repo


def test_each_valid_signer_is_listed(tmp_path: Path) -> None:
    one, two = generate_keypair(), generate_keypair()
    with _archive(tmp_path) as repo:
        assert summary_signers(repo.path) is None  # no summary.sig at all
        update_summary(repo, [one, two])
        assert sorted(summary_signers(repo.path) or ()) == sorted(
            [one.public_text, two.public_text]
        )
    out = cli("--repo", tmp_path / "archive", "summary")
    assert out.code == 0, out.err
    assert sorted(out.out.splitlines()[-2:]) == sorted(
        [f"signed by {one.public_text}", f"signed by {two.public_text}"]
    )


def test_a_summary_changed_after_signing_has_no_signer(tmp_path: Path) -> None:
    key = generate_keypair()
    with _archive(tmp_path) as repo:
        update_summary(repo, [key])
        signature = (repo.path / "summary.sig").read_bytes()
        commit_files(repo, tmp_path / "tree2", {"f": "y\n"}, branch="other")
        update_summary(repo)
        (repo.path / "summary.sig").write_bytes(signature)
        assert summary_signers(repo.path) == ()
    out = cli("--repo", tmp_path / "archive", "summary")
    assert out.out.splitlines()[-1].startswith("summary.sig does not match"), out.out


def test_a_symlinked_summary_is_refused(tmp_path: Path) -> None:
    with _archive(tmp_path) as repo:
        update_summary(repo)
        (repo.path / "summary").rename(tmp_path / "elsewhere")
        (repo.path / "summary").symlink_to(tmp_path / "elsewhere")
        with pytest.raises(FormatError, match="symlink"):
            read_summary(repo.path)
    out = cli("--repo", tmp_path / "archive", "summary")
    assert out.code != 0 and out.err.count("\n") == 1, out.err
