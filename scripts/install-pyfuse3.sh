#!/bin/bash
# Install pyfuse3 3.5.0 from its PyPI source with sapwood's patch (patches/README.md):
# read() and readdir() receive the inode when the kernel runs without open/opendir.
# Usage: scripts/install-pyfuse3.sh PYTHON. Does nothing if the patched build is in place.
set -euo pipefail
PY=$1
VERSION=3.5.0
LOCAL=sapwood.1
HERE=$(cd "$(dirname "$0")/.." && pwd)
if "$PY" -c "import pyfuse3, sys; sys.exit(0 if pyfuse3.__version__ == '$VERSION+$LOCAL' and pyfuse3.NO_OPEN_PASSES_INODE else 1)" 2>/dev/null; then
	exit 0
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip download -q --no-binary :all: --no-deps -d "$WORK" "pyfuse3==$VERSION"
tar -C "$WORK" -xzf "$WORK/pyfuse3-$VERSION.tar.gz"
patch -s -d "$WORK/pyfuse3-$VERSION" -p1 < "$HERE/patches/pyfuse3-no-open.patch"
echo "building pyfuse3 $VERSION with sapwood's patch (about a minute)"
SETUPTOOLS_SCM_PRETEND_VERSION="$VERSION+$LOCAL" "$PY" -m pip install -q "$WORK/pyfuse3-$VERSION"
