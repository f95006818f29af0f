"""What a second hostile session found after the hardening, each as it was reproduced."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from store import MAX_TREE_DEPTH, RepoMode, Repository
from tests.helpers import run


def _one_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], result.stderr


@pytest.fixture
def whiteout_repo(tmp_path: Path) -> Path:
    """A repository ``R`` in tmp_path with ``main`` and a layer ``wh`` of whiteouts."""
    repo = tmp_path / "R"
    Repository.init(repo, RepoMode.BARE_USER).close()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_text("a\n")
    assert run("commit", "-b", "main", tmp_path / "src", repo=repo, text=True).returncode == 0
    layer = tmp_path / "wh"
    layer.mkdir()
    for name in (".wh.objects", ".wh.index", ".wh.R"):
        (layer / name).touch()
    assert run("commit", "-b", "wh", layer, repo=repo, text=True).returncode == 0
    return repo


def test_whiteouts_never_remove_the_repository_or_what_holds_it(whiteout_repo: Path) -> None:
    before = sorted(p.name for p in whiteout_repo.iterdir())
    into_repo = run(
        "checkout",
        "-U",
        "--union",
        "--whiteouts",
        "wh",
        whiteout_repo,
        repo=whiteout_repo,
        text=True,
    )
    _one_error(into_repo, "inside the repository")
    above = run(
        "checkout",
        "-U",
        "--union",
        "--whiteouts",
        "wh",
        whiteout_repo.parent,
        repo=whiteout_repo,
        text=True,
    )
    _one_error(above, "holds the repository")
    assert sorted(p.name for p in whiteout_repo.iterdir()) == before
    assert run("refs", repo=whiteout_repo, text=True).stdout.split() == ["main", "wh"]
    inside = run(
        "checkout", "-U", "main", whiteout_repo / "objects" / "x", repo=whiteout_repo, text=True
    )
    _one_error(inside, "inside the repository")


def test_a_mount_never_hides_its_own_repository(whiteout_repo: Path) -> None:
    for mountpoint in (whiteout_repo, whiteout_repo.parent):
        _one_error(
            run("mount", "main", mountpoint, repo=whiteout_repo, text=True, timeout=20),
            "would hide",
        )
    _one_error(run("mount", "main", "", repo=whiteout_repo, text=True, timeout=20), "empty")


def test_a_fifo_as_the_mount_log_is_refused_without_waiting(
    whiteout_repo: Path, tmp_path: Path
) -> None:
    fifo, mnt = tmp_path / "log", tmp_path / "mnt"
    os.mkfifo(fifo)
    mnt.mkdir()
    result = run(
        "mount", "-o", f"logfile={fifo}", "main", mnt, repo=whiteout_repo, text=True, timeout=20
    )
    _one_error(result, "cannot log there")


def test_a_whiteout_of_a_too_deep_directory_is_refused_whole(
    whiteout_repo: Path, tmp_path: Path
) -> None:
    layer = tmp_path / "wl"
    layer.mkdir()
    (layer / ".wh.deep").touch()
    assert run("commit", "-b", "wl", layer, repo=whiteout_repo, text=True).returncode == 0
    dest = tmp_path / "D"
    deep = dest / "deep" / "/".join(["x"] * (MAX_TREE_DEPTH + 5))
    deep.mkdir(parents=True)
    result = run(
        "checkout", "-U", "--union", "--whiteouts", "wl", dest, repo=whiteout_repo, text=True
    )
    assert result.returncode != 0 and "internal error" not in result.stderr, result.stderr
    assert "deep" in result.stderr and deep.is_dir()
    subprocess.run(["rm", "-rf", str(dest)], check=True)


def test_a_huge_gnu_long_name_is_refused_not_read(whiteout_repo: Path, tmp_path: Path) -> None:
    archive = tmp_path / "longname.tar"
    header = tarfile.TarInfo("././@LongLink")
    header.type = tarfile.GNUTYPE_LONGNAME
    header.size = 4 << 20
    with open(archive, "wb") as out:
        out.write(header.tobuf(format=tarfile.GNU_FORMAT))
        out.write(b"a" * header.size + b"\0" * 1024)
    result = run("commit", "-b", "t", f"--tree=tar={archive}", repo=whiteout_repo, text=True)
    _one_error(result, "extended header")
    pax = tmp_path / "pax.tar"
    with tarfile.open(pax, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.pax_headers = {"comment": "c" * (2 << 20)}
        tar.addfile(info, io.BytesIO(b""))
    _one_error(
        run("commit", "-b", "t", f"--tree=tar={pax}", repo=whiteout_repo, text=True),
        "extended header",
    )


def test_rebuild_index_skips_ref_names_sapwood_refuses_and_runs_twice(tmp_path: Path) -> None:
    repo = tmp_path / "A"
    Repository.init(repo, RepoMode.ARCHIVE).close()
    (tmp_path / "src").mkdir()
    assert run("commit", "-b", "main", tmp_path / "src", repo=repo, text=True).returncode == 0
    heads = repo / "refs" / "heads"
    good = (heads / "main").read_bytes()
    for bad in (b"bad..name", b"y.lock", b"-dash", b"x\xff"):
        (heads.joinpath(os.fsdecode(bad))).write_bytes(good)
    first = run("rebuild-index", repo=repo, text=True)
    assert first.returncode == 0 and "internal error" not in first.stderr, first.stderr
    assert first.stdout.count("not a valid ref name") == 4, first.stdout
    assert run("refs", repo=repo, text=True).stdout.split() == ["main"]
    second = run("rebuild-index", repo=repo, text=True)
    assert second.returncode == 0, second.stderr
    assert not list(repo.glob("index.rebuild-*"))
