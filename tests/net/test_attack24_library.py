"""attack24 (/work/plan/attack24.md): the library API used as a client program would,
during a pull: one Repository shared between threads pulling at once, and a pull
called again in the same process after a failed one (nothing of the failure left
behind: no ref moved, the next pull fetches what is missing and fsck is clean)."""

from __future__ import annotations

import threading
from pathlib import Path

import sapwood
from tests.helpers import write_tree
from tests.net.repos import add_remote, archive_of, fsck_clean, local_repo, refs
from tests.store.pull_server import serve


def _files(count: int, tag: str) -> dict[str, str | bytes]:
    return {f"d{i % 7}/f{i}": f"{tag} file {i}\n".encode() * (i % 13 + 1) for i in range(count)}


def test_threads_share_one_repository_pulling_at_once(tmp_path: Path) -> None:
    """Four threads pull two branches through one Repository: every pull succeeds or
    fails with a SapwoodError, and the refs end at the served commits, fsck clean."""
    archive = tmp_path / "archive"
    main_id = archive_of(archive, write_tree(tmp_path / "a", _files(120, "a")), "main")
    other_id = archive_of(archive, write_tree(tmp_path / "b", _files(120, "b")), "other")
    local = local_repo(tmp_path / "local")
    with serve(archive) as served:
        add_remote(local, served.url)
        errors: list[BaseException] = []
        with sapwood.Repository.open(local) as repo:

            def pull(branch: str) -> None:
                try:
                    sapwood.pull(repo, "origin", branch)
                except sapwood.SapwoodError:
                    pass  # a clean refusal (busy) is allowed; the final pull decides
                except BaseException as error:
                    errors.append(error)

            threads = [threading.Thread(target=pull, args=(b,)) for b in ("main", "other") * 2]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert not any(thread.is_alive() for thread in threads)
            assert errors == []
            sapwood.pull(repo, "origin", ["main", "other"])
    assert refs(local) == {"origin:main": main_id, "origin:other": other_id}
    fsck_clean(local)


def test_pull_again_after_a_failed_pull_in_one_process(tmp_path: Path) -> None:
    """A pull failing on one object (HTTP 500) raises a SapwoodError and moves no
    ref; the same Repository's next pull, the server healed, brings the commit."""
    fast = sapwood.FetchSettings(retries=1, backoff=0.05)
    archive = tmp_path / "archive"
    commit = archive_of(archive, write_tree(tmp_path / "a", _files(60, "a")), "main")
    victim = sorted((archive / "objects").rglob("*.filez"))[0]
    local = local_repo(tmp_path / "local")
    with serve(archive) as served:
        add_remote(local, served.url)
        with sapwood.Repository.open(local) as repo:
            served.fail("/" + str(victim.relative_to(archive)), 500)
            failed = False
            try:
                sapwood.pull(repo, "origin", "main", settings=fast)
            except sapwood.SapwoodError:
                failed = True
            assert failed
            assert "origin:main" not in refs(local)
            served.fail("/" + str(victim.relative_to(archive)), 500, times=0)
            report = sapwood.pull(repo, "origin", "main", settings=fast)
            assert report is not None
            assert repo.ref("origin:main") == bytes.fromhex(commit)
    assert refs(local) == {"origin:main": commit}
    fsck_clean(local)
