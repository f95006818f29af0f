"""A commit of a directory (the farm re-commit of issue 11 above all) loads no module it
does not use: tar and its decompressors, zstd (archive objects), ctypes.util (whose
find_library runs ``ldconfig -p`` in a child process) cost a command's start-up time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sapwood
from store import RepoMode, Repository

_UNUSED = ("fs.tarlayer", "fs.decompress", "tarfile", "zstandard", "ctypes.util", "uuid")

_PROGRAM = """
import json, sys
import sapwood
with sapwood.Repository.open(sys.argv[1]) as repo:
    result = sapwood.commit(repo, "farm", sys.argv[2])
print(json.dumps({"linked": result.stats.linked, "loaded": sorted(sys.modules)}))
"""


def test_a_directory_commit_loads_no_tar_zstd_or_ldconfig(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "file").write_bytes(b"content\n")
    (tree / "top").write_bytes(b"top\n")
    repo, farm = tmp_path / "repo", tmp_path / "farm"
    with Repository.init(repo, RepoMode.BARE_USER) as opened:
        made = sapwood.commit(opened, "main", tree)
        options = sapwood.CheckoutOptions(user_mode=True, require_hardlinks=True)
        sapwood.checkout(opened, made.commit_id, farm, options)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    argv = [sys.executable, "-c", _PROGRAM, str(repo), str(farm)]
    found = json.loads(subprocess.run(argv, check=True, capture_output=True, env=env).stdout)
    assert found["linked"] == 2  # the farm's files were recognised, not read
    assert [name for name in _UNUSED if name in found["loaded"]] == []


def test_a_tar_layer_still_loads_what_it_needs(tmp_path: Path) -> None:
    """The lazy import is there when a tar layer is committed (bzip2 read through it)."""
    import bz2
    import io
    import tarfile

    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as archive:
        info = tarfile.TarInfo("hello")
        info.size = 6
        archive.addfile(info, io.BytesIO(b"hello\n"))
    (tmp_path / "layer.tar.bz2").write_bytes(bz2.compress(data.getvalue()))
    with Repository.init(tmp_path / "repo", RepoMode.BARE_USER) as repo:
        made = sapwood.commit(repo, "main", [sapwood.Layer.tar(tmp_path / "layer.tar.bz2")])
        sapwood.checkout(repo, made.commit_id, tmp_path / "out")
    assert (tmp_path / "out" / "hello").read_bytes() == b"hello\n"
