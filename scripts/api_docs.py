"""`make docs`: the API reference of `import sapwood`, built by pdoc from the docstrings.

Usage: python scripts/api_docs.py OUTPUT_DIR. Writes OUTPUT_DIR/sapwood.html (the
command line, sapwood.cli, is not API and is left out). Any warning pdoc gives (an
annotation it cannot resolve, a docstring it cannot render) is printed and fails the
build, so the reference never silently loses a signature.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pdoc

import sapwood


def _namedtuple_annotations_workaround() -> None:
    """Let pdoc resolve the forward references of NamedTuple fields (``Change.old:
    Node | None``). pdoc evaluates a NamedTuple's signature in the module of its
    generated ``__new__``, which collections.namedtuple names ``namedtuple_Change``, so
    every name is unknown there (pdoc issue #765, open). Point it at the class's module.
    """
    for name in sapwood.__all__:
        value = getattr(sapwood, name)
        if isinstance(value, type) and issubclass(value, tuple) and hasattr(value, "_fields"):
            value.__new__.__module__ = value.__module__


def main(output: Path) -> int:
    # Its getattr of every public name also loads them: the facade imports its names on
    # first use, and pdoc reads a module's __all__ names from its __dict__.
    _namedtuple_annotations_workaround()
    with warnings.catch_warnings(record=True) as caught:
        pdoc.pdoc("sapwood", "!sapwood.cli", output_directory=output)
    for warning in caught:
        sys.stderr.write(f"make docs: pdoc warns: {warning.message}\n")
    if caught:
        return 1
    sys.stdout.write(f"API reference: {output / 'sapwood.html'}\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/api_docs.py OUTPUT_DIR")
    sys.exit(main(Path(sys.argv[1])))
