"""Large synthetic trees shaped like real ones, deterministic from a seed, cached on disk.

    .venv/bin/python benchmarks/treegen.py --files 100000 [--seed 1] [--cache DIR]

prints the path of a tree of ``--files`` non-directory entries (regular files,
hardlinks and symlinks), generated on first use and reused after. The shape follows
what real OS trees have (/usr/share: a median file of a few KiB, a long tail):

- directories as a random recursive tree (each new directory under a uniformly chosen
  earlier one), so depth grows like log(n) (about 10 at 100,000 files, the deepest
  twice that) and some directories are wide; files spread over them by Pareto weights;
- file sizes log-normal (median 1.5 KiB, capped at 1 MiB), 2% empty, and one large
  file (1-16 MiB) per 20,000 files; 5% of files repeat an earlier file's content;
- 3% symlinks (to siblings, up the tree, or dangling absolute paths), 1% extra
  hardlinks to earlier files, 5% executables, user.* xattrs on 2% of files;
- one flat directory, ``big/``, holding a tenth of the entries (100,000 at 1,000,000);
- every mtime fixed, so the same seed gives a byte-identical tree, metadata included.

The tree goes to CACHE/tree; CACHE/COMPLETE is written last, so a tree cut short (a
crash, ^C) has no marker and is generated again from scratch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

VERSION = 1  # bump when the shape changes: cached trees of another version are rebuilt
DEFAULT_CACHE = Path("/var/tmp/sapwood-bench/trees")
MARKER = "COMPLETE"
MTIME = 1_700_000_000  # every entry's mtime (and atime)
MEDIAN_SIZE, SIGMA, MAX_SMALL = 1500, 1.3, 1 << 20
FILES_PER_DIR = 20  # about as many directories per file as /usr/share has
FILES_PER_LARGE = 20_000
BIG_DIR_SHARE = 10  # big/ holds 1/BIG_DIR_SHARE of the entries
SYMLINK, HARDLINK, EXECUTABLE, XATTR, EMPTY, DUPLICATE = 0.03, 0.01, 0.05, 0.02, 0.02, 0.05
SYLLABLES = ("lib", "share", "doc", "conf", "x", "gnu", "py", "data", "man", "io", "net", "utf")
SUFFIXES = ("", ".txt", ".gz", ".so", ".py", ".h", ".png", ".xml", ".conf", ".1.gz", ".json")


@dataclass
class Stats:
    """What a generated tree holds (written into the marker)."""

    files: int = 0
    hardlinks: int = 0
    symlinks: int = 0
    directories: int = 0
    xattrs: int = 0
    large: int = 0
    bytes: int = 0


def tree_dir(files: int, seed: int, cache: Path = DEFAULT_CACHE) -> Path:
    """The cache directory of one size and seed: the tree is its ``tree/``."""
    return cache / f"{files}-{seed}"


def ensure_tree(files: int, seed: int, cache: Path = DEFAULT_CACHE) -> Path:
    """The path of the tree of ``files`` entries from ``seed``, generated unless a complete
    one of this generator's version is already cached."""
    where = tree_dir(files, seed, cache)
    marker = where / MARKER
    if marker.exists():
        try:
            if json.loads(marker.read_text()).get("version") == VERSION:
                return where / "tree"
        except ValueError:
            pass
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    stats = generate(where / "tree", files, seed)
    _sync(where / "tree")
    marker.write_text(json.dumps({"version": VERSION, "seed": seed, **stats.__dict__}) + "\n")
    return where / "tree"


def _sync(path: Path) -> None:
    """syncfs of the tree's filesystem: the marker must not reach the disk before it."""
    subprocess.run(["sync", "-f", str(path)], check=True)


def generate(root: Path, files: int, seed: int) -> Stats:
    """Write the tree of ``files`` non-directory entries from ``seed`` at ``root`` (new)."""
    rng = random.Random(seed)
    stats = Stats()
    root.mkdir()
    dirs = _make_dirs(root, rng, max(1, files // FILES_PER_DIR), stats)
    big = root / "big"
    big.mkdir()
    stats.directories += 1
    in_big = files // BIG_DIR_SHARE
    weights = [rng.paretovariate(1.2) for _ in dirs]
    placed = rng.choices(range(len(dirs)), weights=weights, k=files - in_big)
    targets = [big] * in_big + [dirs[i] for i in sorted(placed)]
    writer = _Writer(rng, stats, large_every=FILES_PER_LARGE)
    counters: dict[Path, int] = {}
    for directory in targets:
        n = counters.get(directory, 0)
        counters[directory] = n + 1
        writer.entry(directory, _name(rng, n))
    for directory in [*dirs, big]:  # last: writing into a directory sets its mtime
        os.utime(directory, (MTIME, MTIME))
    return stats


def _make_dirs(root: Path, rng: random.Random, count: int, stats: Stats) -> list[Path]:
    """``count`` directories under ``root`` (itself included), each new one below a
    uniformly chosen earlier one: a random recursive tree, deep and wide."""
    dirs = [root]
    children: dict[int, int] = {}
    for _ in range(count - 1):
        parent = rng.randrange(len(dirs))
        n = children.get(parent, 0)
        children[parent] = n + 1
        path = dirs[parent] / f"{_word(rng)}{n}"
        path.mkdir()
        dirs.append(path)
        stats.directories += 1
    return dirs


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3)))


def _name(rng: random.Random, n: int) -> str:
    """A unique name in its directory (``n`` is the entry's number there)."""
    return f"{_word(rng)}-{n}{rng.choice(SUFFIXES)}"


class _Writer:
    """Writes one entry at a time, remembering earlier files for hardlinks and duplicates."""

    def __init__(self, rng: random.Random, stats: Stats, large_every: int) -> None:
        self.rng, self.stats, self.large_every = rng, stats, large_every
        self.earlier: list[Path] = []
        self.contents: list[bytes] = []
        self.count = 0

    def entry(self, directory: Path, name: str) -> None:
        path = directory / name
        self.count += 1
        roll = self.rng.random()
        if roll < SYMLINK:
            self._symlink(path)
        elif roll < SYMLINK + HARDLINK and self.earlier:
            os.link(self.rng.choice(self.earlier), path)
            self.stats.hardlinks += 1
        else:
            self._file(path, large=self.count % self.large_every == self.large_every // 2)

    def _symlink(self, path: Path) -> None:
        kind = self.rng.random()
        if kind < 0.5 and self.earlier:
            target = os.path.relpath(self.rng.choice(self.earlier), path.parent)
        elif kind < 0.8:
            target = f"{_word(self.rng)}.{self.rng.randint(0, 9)}"  # a sibling, maybe missing
        else:
            target = f"/usr/lib/{_word(self.rng)}/{_word(self.rng)}"
        os.symlink(target, path)
        os.utime(path, (MTIME, MTIME), follow_symlinks=False)
        self.stats.symlinks += 1

    def _file(self, path: Path, large: bool) -> None:
        data = self._content(large)
        with open(path, "xb") as out:
            out.write(data)
        mode = 0o755 if self.rng.random() < EXECUTABLE else 0o644
        os.chmod(path, mode)
        if self.rng.random() < XATTR:
            os.setxattr(path, "user.comment", f"generated {self.count}".encode())
            if self.rng.random() < 0.5:
                os.setxattr(path, "user.mime_type", b"application/octet-stream")
            self.stats.xattrs += 1
        os.utime(path, (MTIME, MTIME))
        self.stats.files += 1
        self.stats.bytes += len(data)
        if len(self.earlier) < 10_000 or self.rng.random() < 0.01:
            self.earlier.append(path)

    def _content(self, large: bool) -> bytes:
        rng = self.rng
        if large:
            self.stats.large += 1
            return rng.randbytes(int(math.exp(rng.uniform(math.log(1 << 20), math.log(16 << 20)))))
        roll = rng.random()
        if roll < EMPTY:
            return b""
        if roll < EMPTY + DUPLICATE and self.contents:
            return rng.choice(self.contents)
        size = min(MAX_SMALL, int(rng.lognormvariate(math.log(MEDIAN_SIZE), SIGMA)))
        data = rng.randbytes(size)
        if len(self.contents) < 1000:
            self.contents.append(data)
        return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, required=True, help="non-directory entries")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="trees go to CACHE/N-SEED"
    )
    args = parser.parse_args()
    print(ensure_tree(args.files, args.seed, args.cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
