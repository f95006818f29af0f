"""How much free space a transaction must leave: the repository's space policy."""

from __future__ import annotations

import configparser
import re

from store.record import Frozen

_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
}


class SpacePolicy(Frozen):
    """How much free space a transaction must leave (OSTree's min-free-space-*).

    ``min-free-space-size`` (bytes, or with KB/MB/GB/KiB/MiB/GiB) wins when set;
    otherwise ``min-free-space-percent`` of the filesystem (default 3, as OSTree).
    """

    __slots__ = ("percent", "size")

    percent: int
    size: int | None

    def __init__(self, percent: int = 3, size: int | None = None) -> None:
        object.__setattr__(self, "percent", percent)
        object.__setattr__(self, "size", size)

    @classmethod
    def from_config(cls, core: configparser.SectionProxy) -> SpacePolicy:
        percent_text = core.get("min-free-space-percent", "3")
        # ASCII digits only: int() also takes '5_0', '+5' and other scripts' digits
        if re.fullmatch(r"[0-9]{1,2}", percent_text, re.ASCII) is None:
            raise ValueError(f"min-free-space-percent {percent_text!r} is not between 0 and 99")
        percent = int(percent_text)
        size_text = core.get("min-free-space-size")
        return cls(percent, _parse_size(size_text) if size_text else None)

    @property
    def enabled(self) -> bool:
        """min-free-space-percent 0 without a size turns the check off, as in OSTree."""
        return self.size is not None or self.percent > 0

    def describe(self) -> str:
        if self.size is not None:
            return f"min-free-space-size {self.size} bytes"
        return f"min-free-space-percent '{self.percent}%'"

    def reserve(self, total_bytes: int) -> int:
        return self.size if self.size is not None else total_bytes * self.percent // 100


def _parse_size(text: str) -> int:
    # ASCII digits (\d took other scripts' too), and a size OSTree's 64 bits can hold
    match = re.fullmatch(r"\s*([0-9]{1,20})\s*([A-Za-z]*)\s*", text, re.ASCII)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _SIZE_UNITS or int(match.group(1)) * _SIZE_UNITS[unit] >= 2**64:
        raise ValueError(f"min-free-space-size {text!r} is not a size like 500MB")
    return int(match.group(1)) * _SIZE_UNITS[unit]
