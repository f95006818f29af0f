"""store/filez.py imports zstandard with a stand-in for the platform module, which
zstandard's ``__init__`` imports only to ask which interpreter runs it (platform's own
import cost every pull ~3 ms). Each test runs in a fresh interpreter: what is already
imported decides the path taken."""

from __future__ import annotations

import subprocess
import sys

import pytest

_ROUND_TRIP = """
import sys
import store.filez as filez
assert "platform" not in sys.modules
zstandard = filez._zstandard()
assert "platform" not in sys.modules, "the stand-in was left in sys.modules"
data = b"sapwood " * 1000
assert filez.decompressor().decompress(zstandard.ZstdCompressor().compress(data)) == data
assert filez._zstandard() is zstandard is sys.modules["zstandard"]
assert filez.decompressor() is filez.decompressor()  # one context a thread
"""

_PLATFORM_FIRST = """
import platform, sys
import store.filez as filez
filez._zstandard()
assert sys.modules["platform"] is platform and not isinstance(platform, filez._PlatformStandIn)
"""

_STAND_IN_ASKED_MORE = """
import sys
import store.filez as filez
stand_in = sys.modules["platform"] = filez._PlatformStandIn()
machine = stand_in.machine()  # what zstandard, or a thread, could ask of it meanwhile
import platform
assert platform is sys.modules["platform"] and platform is not stand_in
assert machine == platform.machine()
assert stand_in.python_implementation() == platform.python_implementation()
assert stand_in.system() == platform.system()
"""


@pytest.mark.parametrize(
    "script",
    [_ROUND_TRIP, _PLATFORM_FIRST, _STAND_IN_ASKED_MORE],
    ids=["without-platform", "platform-imported-first", "stand-in-asked-more"],
)
def test_zstandard_is_imported_right_whatever_platform_is(script: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
