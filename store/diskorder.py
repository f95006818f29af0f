"""Many object files touched in the order of their inodes, not of their ids.

Once the objects no longer fit in the page cache (a million files), reading, stat-ing
or unlinking them in id order reads the disk (ext4's inode table among it) at random;
inode numbers follow the order the files were written, and GNU rm sorts by them too.
fsck (reading) and prune (stat and unlink) go one objects/XX directory at a time.
"""

from __future__ import annotations

import os


def inode_numbers(directory: str | os.PathLike[str]) -> dict[str, int]:
    """The inode number of each entry of ``directory``, by its name up to the first dot
    (an object's id past its XX directory); empty if the directory cannot be listed."""
    try:
        with os.scandir(directory) as listing:
            return {entry.name.partition(".")[0]: entry.inode() for entry in listing}
    except OSError:
        return {}
