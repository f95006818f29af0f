"""One reading of a deployment's name ID.SERIAL (fs/sysroot/state.py
parse_deployment_name): the list read back from the boot entries refuses the names
that retention does not take for a deployment on disk, and the list's JSON the serials
no name has."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import sapwood
from fs.sysroot.layout import Layout
from fs.sysroot.retention import unlisted_on_disk
from fs.sysroot.state import parse_deployment_name
from store import SysrootError
from tests.helpers import IS_ROOT
from tests.sysroot.conftest import commit, small_tree

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="a sysroot's bare repository needs root")

HEX = "0123456789abcdef" * 4
BAD = [
    "x.1",
    f"{HEX}.a",
    "../..",
    f"{HEX}.1234567890",  # ten digits
    f"{HEX}.007",  # read as 7: another directory's name
    f"{HEX}.",
    HEX,
    f"{HEX.upper()}.0",
    f"{HEX}.-1",
    f"{HEX}.\u0661",  # a digit, not an ASCII one
    f"{HEX[:-1]}.1",
]


@pytest.mark.parametrize("name", [f"{HEX}.0", f"{HEX}.12", f"{HEX}.999999999"])
def test_a_name_deploy_makes_is_read_back(name: str) -> None:
    parsed = parse_deployment_name(name)
    assert parsed is not None
    commit_hex, serial = parsed
    assert f"{commit_hex}.{serial}" == name


def _deployed(sysroot: sapwood.Sysroot, tmp_path: Path) -> Path:
    """One deployment (with a kernel: an entry); its entry's file."""
    commit(sysroot, small_tree(tmp_path / "v1", {"usr/etc/motd": "1\n"}))
    sysroot.deploy("debian/main")
    (entry,) = (sysroot.path / "boot/loader/entries").glob("*.conf")
    return entry


def _entry_naming(entry: Path, name: str) -> None:
    """The entry's own argument made to boot ``name``, and the list removed: the list
    is read back from the entries alone."""
    text = entry.read_text()
    entry.write_text(re.sub(r"sapwood=/\S+", f"sapwood=/sapwood/deploy/debian/deploy/{name}", text))
    (entry.parent.parent / "deployments.json").unlink()


def test_an_entry_of_a_good_name_is_read_back(sysroot: sapwood.Sysroot, tmp_path: Path) -> None:
    entry = _deployed(sysroot, tmp_path)
    (listed,) = sysroot.deployments()
    _entry_naming(entry, f"{listed.commit}.{listed.serial}")
    (again,) = sysroot.deployments()
    assert (again.commit, again.serial) == (listed.commit, listed.serial)


@pytest.mark.parametrize("name", BAD)
def test_a_malformed_name_is_refused_by_recovery_as_by_retention(
    sysroot: sapwood.Sysroot, tmp_path: Path, name: str
) -> None:
    entry = _deployed(sysroot, tmp_path)
    assert parse_deployment_name(name) is None
    # retention: a directory of that name is no deployment (no ref, no serial counted)
    deploy_dir = sysroot.path / "sapwood/deploy/debian/deploy"
    if "/" not in name:
        (deploy_dir / name).mkdir()
        assert unlisted_on_disk(Layout(sysroot.path), sysroot.deployments()) == []
    # recovery from the entries: refused, naming the entry and what is wrong
    _entry_naming(entry, name)
    with pytest.raises(SysrootError, match="the deployment list cannot be read") as raised:
        sysroot.deployments()
    assert entry.name in str(raised.value)
    assert re.search(r"bad deployment name|not a deployment's path", str(raised.value))


@pytest.mark.parametrize("serial", [1234567890, -1, True, 1.0, "1"])
def test_a_serial_no_name_has_is_refused_in_the_list(
    sysroot: sapwood.Sysroot, tmp_path: Path, serial: object
) -> None:
    _deployed(sysroot, tmp_path)
    path = sysroot.path / "boot/loader/deployments.json"
    records = json.loads(path.read_text())
    records[0]["serial"] = serial
    path.write_text(json.dumps(records))
    with pytest.raises(SysrootError, match="bad serial"):
        sysroot.deployments()
