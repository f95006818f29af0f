"""The deployment list, read back from the sysroot itself.

The ordered list lives in ``boot/loader.N/deployments.json``, beside the BLS entries
it produced, so the one rename of ``boot/loader`` switches both: a crash leaves the
old list with the old entries, or the new list with the new ones. (OSTree reads the
list back from its entries; sapwood keeps it as a file too because a deployment
without a kernel has no entry.) What may change without a swap, the origin (refspec)
and the pin, is in the ``ID.SERIAL.origin`` file beside each deployment, replaced
by rename.
"""

from __future__ import annotations

import configparser
import errno
import io
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fs.sysroot.durable import write_synced
from fs.sysroot.kargs import is_karg
from fs.sysroot.layout import Layout, check_os_name
from store import SysrootError, UsageError

LIST_NAME = "deployments.json"
_HEX64 = re.compile(r"[0-9a-f]{64}")
# ID.SERIAL as Deployment.name makes it: 64 hex digits, a serial without a leading zero
# (an int's own digits: "ID.007" would be read as the serial 7, another directory)
_DEPLOYMENT_NAME = re.compile(r"([0-9a-f]{64})\.(0|[1-9][0-9]{0,8})")
SAFE_NAME = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9_.+~-]*")  # one file name, not "..", no "/"
_BOOT_NAMES = ("dir", "kernel_version", "linux", "initrd")
ORIGIN_LIMIT = 64 * 1024  # an origin file is a few lines


@dataclass(frozen=True)
class BootFiles:
    """A kernel (and initramfs) installed in ``boot/sapwood/DIR``."""

    dir: str  # OS-BOOTCSUM
    kernel_version: str
    linux: str  # file name in dir
    initrd: str | None


@dataclass
class Deployment:
    """One deployment: commit ``commit`` (hex) of OS ``os_name``, the ``serial``-th
    checkout of that commit, booted with ``kargs`` (the ``sapwood=`` one aside)."""

    os_name: str
    commit: str
    serial: int
    kargs: list[str] = field(default_factory=list)
    boot: BootFiles | None = None
    title: str = ""
    refspec: str = ""
    pinned: bool = False

    @property
    def name(self) -> str:
        """ID.SERIAL, the directory's name."""
        return f"{self.commit}.{self.serial}"

    @property
    def boot_path(self) -> str:
        """The ``sapwood=`` argument: the deployment's path from the sysroot's root."""
        return f"/sapwood/deploy/{self.os_name}/deploy/{self.name}"

    def key(self) -> tuple[str, str]:
        """(OS, ID.SERIAL): what names a deployment across lists."""
        return (self.os_name, self.name)


def parse_deployment_name(name: str) -> tuple[str, int] | None:
    """(commit in hex, serial) of a deployment directory's name ID.SERIAL, as deploy
    names it (Deployment.name); None for any other name. The one reading of a name:
    retention's of the directories on disk, the list's, and the one read back from the
    boot entries."""
    match = _DEPLOYMENT_NAME.fullmatch(name)
    return None if match is None else (match.group(1), int(match.group(2)))


def current_bootversion(layout: Layout) -> int | None:
    """N of the ``loader.N`` that ``boot/loader`` names (None: no entries yet)."""
    try:
        target = os.readlink(layout.loader)
    except FileNotFoundError:
        return None
    if target not in ("loader.0", "loader.1"):
        raise SysrootError(f"{layout.loader}: points to {target!r}, not loader.0 or loader.1")
    return int(target[-1])


def read_deployments(layout: Layout) -> list[Deployment]:
    """The deployments in boot order (index 0: the default), with their origins."""
    version = current_bootversion(layout)
    if version is None:
        return []
    path = layout.loader_dir(version) / LIST_NAME
    try:
        if os.path.lexists(path) or not (path.parent / "entries").is_dir():
            records = json.loads(read_regular(path))
        else:  # written by hand or by an older tool: the entries alone, as OSTree reads
            records = _records_from_entries(path.parent / "entries")
        if not isinstance(records, list):
            raise ValueError(f"a list was expected, not {type(records).__name__}")
        found = [_from_record(record) for record in records]
    except (
        OSError,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        UsageError,
        RecursionError,
    ) as exc:
        raise SysrootError(f"{path}: the deployment list cannot be read: {exc}") from exc
    for deployment in found:
        deployment.refspec, deployment.pinned = read_origin(layout, deployment)
    return found


def read_regular(path: Path, limit: int | None = None) -> str:
    """The text of the regular file ``path``; OSError for anything else (a FIFO put
    there must not hang every command, a symlink is not followed) or for a file
    longer than ``limit`` bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        data = source.read() if limit is None else source.read(limit + 1)
        if limit is not None and len(data) > limit:
            raise OSError(errno.EFBIG, f"longer than {limit} bytes", str(path))
        return data.decode()


def _records_from_entries(entries: Path) -> list[dict[str, Any]]:
    """The list the BLS entries describe, highest ``version`` first (deployments
    without a kernel have no entry and are not found)."""
    found = []
    for path in entries.glob("*.conf"):
        fields: dict[str, str] = {}
        for line in read_regular(path).splitlines():
            key, _, value = line.strip().partition(" ")
            fields.setdefault(key, value.strip())
        options = fields["options"].split()
        own = [o for o in options if o.startswith("sapwood=")][-1].removeprefix("sapwood=")
        parts = own.split("/")
        if len(parts) != 6 or parts[:3] != ["", "sapwood", "deploy"] or parts[4] != "deploy":
            raise ValueError(f"{path.name}: not a deployment's path: sapwood={own!r:.120}")
        os_name, name = parts[3], parts[5]
        parsed = parse_deployment_name(name)
        if parsed is None:
            raise ValueError(f"{path.name}: bad deployment name {name!r:.80}")
        commit, serial = parsed
        boot_dir, linux = fields["linux"].split("/")[-2:]
        initrd = fields["initrd"].split("/")[-1] if "initrd" in fields else None
        record = {
            "os": os_name,
            "commit": commit,
            "serial": serial,
            "kargs": [o for o in options if not o.startswith("sapwood=")],
            "title": fields.get("title", "").rsplit(" (", 1)[0],  # less the label added
            "boot": {
                "dir": boot_dir,
                "kernel_version": linux.removeprefix("vmlinuz-"),
                "linux": linux,
                "initrd": initrd,
            },
        }
        found.append((int(fields["version"]), record))
    return [record for _, record in sorted(found, key=lambda pair: -pair[0])]


def _from_record(record: object) -> Deployment:
    """A listed deployment; its shape and names must be what deploy writes (they
    become paths, and words of BLS entries). ValueError for anything else."""
    if not isinstance(record, dict):
        raise ValueError(f"a record that is no object: {record!r:.80}")
    commit, serial, os_name = record["commit"], record["serial"], record["os"]
    if not isinstance(commit, str) or not _HEX64.fullmatch(commit):
        raise ValueError(f"bad deployment {commit!r:.80}")
    if type(serial) is not int or parse_deployment_name(f"{commit}.{serial}") is None:
        raise ValueError(f"bad serial {serial!r:.80}")  # not a bool, a float, < 0, > 9 digits
    if not isinstance(os_name, str):
        raise ValueError(f"bad OS name {os_name!r:.80}")
    # written into BLS entries: a space or newline would add options or lines
    kargs = record["kargs"]
    if not isinstance(kargs, list) or not all(isinstance(k, str) and is_karg(k) for k in kargs):
        raise ValueError(f"bad kernel arguments {kargs!r:.200}")
    title = "".join(c for c in str(record.get("title", "")) if c.isprintable())
    return Deployment(
        os_name=check_os_name(os_name),
        commit=commit,
        serial=serial,
        kargs=list(kargs),
        boot=_boot_files(record.get("boot")),
        title=title,
    )


def _boot_files(boot: object) -> BootFiles | None:
    """The boot files of a record: None, or every name a file name (only the
    initramfs may be absent)."""
    if boot is None:
        return None
    if not isinstance(boot, dict) or sorted(boot) != sorted(_BOOT_NAMES):
        raise ValueError(f"bad boot files {boot!r:.200}")

    def name(value: object) -> bool:
        return isinstance(value, str) and SAFE_NAME.fullmatch(value) is not None

    if not all(name(boot[k]) for k in _BOOT_NAMES if k != "initrd"):
        raise ValueError(f"bad boot files {boot!r:.200}")
    if boot["initrd"] is not None and not name(boot["initrd"]):
        raise ValueError(f"bad boot files {boot!r:.200}")
    return BootFiles(
        dir=boot["dir"],
        kernel_version=boot["kernel_version"],
        linux=boot["linux"],
        initrd=boot["initrd"],
    )


def to_record(deployment: Deployment) -> dict[str, Any]:
    boot = deployment.boot
    return {
        "os": deployment.os_name,
        "commit": deployment.commit,
        "serial": deployment.serial,
        "kargs": deployment.kargs,
        "title": deployment.title,
        "boot": None
        if boot is None
        else {
            "dir": boot.dir,
            "kernel_version": boot.kernel_version,
            "linux": boot.linux,
            "initrd": boot.initrd,
        },
    }


def read_origin(layout: Layout, deployment: Deployment) -> tuple[str, bool]:
    """(refspec, pinned) of a deployment; ("", False) when its origin file is absent."""
    parser = configparser.ConfigParser(interpolation=None)
    path = layout.origin(deployment.os_name, deployment.name)
    try:
        parser.read_string(read_regular(path, limit=ORIGIN_LIMIT))
        refspec = parser.get("origin", "refspec", fallback="")
        pinned = parser.getboolean("sapwood-transient", "pinned", fallback=False)
    except FileNotFoundError:
        return "", False
    except (OSError, ValueError, configparser.Error) as exc:  # UnicodeDecodeError too
        raise SysrootError(f"{path}: the origin file cannot be read: {exc}") from exc
    return refspec, pinned


def write_origin(layout: Layout, deployment: Deployment) -> None:
    """Write (or replace, by rename) the origin file of ``deployment``."""
    parser = configparser.ConfigParser(interpolation=None)
    parser["origin"] = {"refspec": deployment.refspec}
    if deployment.pinned:
        parser["sapwood-transient"] = {"pinned": "true"}
    path = layout.origin(deployment.os_name, deployment.name)
    tmp = path.with_name(f".{path.name}.tmp")
    text = io.StringIO()
    parser.write(text)
    write_synced(tmp, text.getvalue())
    os.rename(tmp, path)


def write_json(path: Path, records: list[dict[str, Any]]) -> None:
    write_synced(path, json.dumps(records, indent=1) + "\n")
