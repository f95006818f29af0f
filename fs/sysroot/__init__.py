"""Deployments of commits into a sysroot, as ``ostree admin`` (docs/deployments.md)."""

from fs.sysroot.etc_merge import EtcChange
from fs.sysroot.state import BootFiles, Deployment
from fs.sysroot.sysroot import DeployResult, Sysroot

__all__ = ["BootFiles", "DeployResult", "Deployment", "EtcChange", "Sysroot"]
