#!/bin/bash
# Install pyfuse3 3.5.0 from its PyPI source with sapwood's patch (patches/README.md):
# read() and readdir() receive the inode when the kernel runs without open/opendir.
# Usage: scripts/install-pyfuse3.sh PYTHON. The built wheel is kept in build/wheels/, so
# that another environment (tests/test_example_program.py's fresh venv) installs it in a
# second instead of compiling for a minute. Does nothing if both are in place.
set -euo pipefail
PY=$1
VERSION=3.5.0
LOCAL=sapwood.3
HERE=$(cd "$(dirname "$0")/.." && pwd)
WHEELS=$HERE/build/wheels
PATCHED="pyfuse3==$VERSION+$LOCAL"

installed() {
	"$PY" -c "import pyfuse3, sys; sys.exit(0 if pyfuse3.__version__ == '$VERSION+$LOCAL' and pyfuse3.NO_OPEN_PASSES_INODE and pyfuse3.SETS_MAX_BACKGROUND and pyfuse3.READ_PASSES_CTX else 1)" 2>/dev/null
}
# A wheel in build/wheels/ that PY can install (same Python version and platform).
wheel_kept() {
	"$PY" -m pip install -q --dry-run --ignore-installed --no-deps --no-index \
		--find-links "$WHEELS" "$PATCHED" >/dev/null 2>&1
}

if installed && wheel_kept; then
	exit 0
fi
if ! wheel_kept; then
	WORK=$(mktemp -d)
	trap 'rm -rf "$WORK"' EXIT
	"$PY" -m pip download -q --no-binary :all: --no-deps -d "$WORK" "pyfuse3==$VERSION"
	tar -C "$WORK" -xzf "$WORK/pyfuse3-$VERSION.tar.gz"
	patch -s -d "$WORK/pyfuse3-$VERSION" -p1 < "$HERE/patches/pyfuse3-no-open.patch"
	echo "building pyfuse3 $VERSION with sapwood's patch (about a minute)"
	mkdir -p "$WHEELS"
	SETUPTOOLS_SCM_PRETEND_VERSION="$VERSION+$LOCAL" \
		"$PY" -m pip wheel -q --no-deps -w "$WHEELS" "$WORK/pyfuse3-$VERSION"
fi
# Its dependency (trio) comes with sapwood's own.
installed || "$PY" -m pip install -q --no-deps --no-index --find-links "$WHEELS" "$PATCHED"
