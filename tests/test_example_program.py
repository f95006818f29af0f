"""An outside program can build on sapwood: examples/release-check, installed for real.

The example is copied outside the repository and installed, with sapwood from a clean
copy of the source tree (not editable), into a fresh virtual environment made with
Debian's /usr/bin/python3, as a user of the library would install them. Then: the
sapwood it imports is the installed package; `mypy --strict` accepts the example and
really sees sapwood's types (a wrong type is an error, not Any); and the program does
the three things of docs/api.md: publish (commit + mount), changes, gate.

The patched pyfuse3 comes from the wheel `make setup` keeps in build/wheels/
(scripts/install-pyfuse3.sh), so nothing is compiled here; blake3, lmdb and trio come
from PyPI (or pip's cache).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "examples" / "release-check"
SYSTEM_PYTHON = Path("/usr/bin/python3")
MYPY = Path(sys.executable).parent / "mypy"

pytestmark = pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="no /usr/bin/python3")


def _outside_env() -> dict[str, str]:
    """This environment without what would let the repository leak into the venv."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "SAPWOOD_REPO"):
        env.pop(name, None)
    return env


def run(
    args: Sequence[str | os.PathLike[str]], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=_outside_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def clean_copy_of_repository(dest: Path) -> Path:
    """The source tree as git sees it (tracked and new files, nothing ignored: no .venv,
    no build/, no egg-info), copied to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO_ROOT / name
        if source.is_file():  # a file deleted in the working tree is not copied
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@dataclass(frozen=True)
class Installed:
    """The fresh virtual environment with sapwood and release-check installed."""

    venv: Path
    example: Path  # the copy of examples/release-check that was installed
    work: Path  # an empty directory outside the repository to run in

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def release_check(self, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
        return run([self.venv / "bin" / "release-check", *args], cwd=self.work, timeout=120)

    def mypy(self, *files: Path) -> subprocess.CompletedProcess[str]:
        cache = self.work / ".mypy_cache"
        args: list[str | os.PathLike[str]] = [
            "--strict",
            "--python-executable",
            self.python,
            "--cache-dir",
            cache,
        ]
        return run([MYPY, *args, *files], cwd=self.work)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    top = tmp_path_factory.mktemp("outside")
    assert not top.resolve().is_relative_to(REPO_ROOT), "run it outside the repository"
    source = clean_copy_of_repository(top / "sapwood-src")
    example = top / "release-check"
    shutil.copytree(EXAMPLE, example)
    venv = top / "venv"
    ok(run([SYSTEM_PYTHON, "-m", "venv", venv], cwd=top))
    python = venv / "bin" / "python"
    ok(run(["bash", REPO_ROOT / "scripts" / "install-pyfuse3.sh", python], cwd=REPO_ROOT))
    ok(run([python, "-m", "pip", "install", "-q", source, example], cwd=top))
    work = top / "work"
    work.mkdir()
    return Installed(venv, example, work)


def test_the_installed_sapwood_is_the_real_package(installed: Installed) -> None:
    code = (
        "import sysconfig, sapwood, release_check; "
        "print(sysconfig.get_paths()['purelib']); "
        "print(sapwood.__file__); print(release_check.__file__)"
    )
    purelib, sapwood_file, example_file = ok(
        run([installed.python, "-c", code], cwd=installed.work)
    ).splitlines()
    site_packages = Path(purelib).resolve()
    assert site_packages.is_relative_to(installed.venv.resolve())
    for module_file in (sapwood_file, example_file):
        assert Path(module_file).resolve().parent in (site_packages, site_packages / "sapwood")
    # Not an editable install pointing back at a source tree.
    assert not Path(sapwood_file).resolve().is_relative_to(REPO_ROOT)


def test_the_example_passes_mypy_strict_against_the_installed_sapwood(
    installed: Installed,
) -> None:
    result = installed.mypy(installed.example / "release_check.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_sees_sapwood_types_not_any(installed: Installed) -> None:
    """The py.typed markers reach every module the facade re-exports from: a wrong use
    of a sapwood type is an error, not silently Any."""
    probe = installed.work / "probe.py"
    probe.write_text(
        "from pathlib import Path\n"
        "import sapwood\n"
        "with sapwood.Repository.open(Path('repo')) as repo:\n"
        "    wrong: str = sapwood.rev_parse(repo, 'main')\n"
        "    node = sapwood.lookup(repo, sapwood.rev_parse(repo, 'main'), '/etc')\n"
        "    reveal_type(node)\n"
        "    reveal_type(sapwood.commit)\n"
    )
    result = installed.mypy(probe)
    assert result.returncode == 1, result.stdout
    assert 'expression has type "ObjectId", variable has type "str"' in result.stdout
    assert "Any" not in result.stdout, result.stdout
    assert 'Revealed type is "store.trees.Node"' in result.stdout


def test_mypy_refuses_a_wrong_expected_value_for_set_ref(installed: Installed) -> None:
    probe = installed.work / "set_ref_probe.py"
    probe.write_text(
        "from pathlib import Path\n"
        "import sapwood\n"
        "with sapwood.Repository.open(Path('repo')) as repo:\n"
        "    head = sapwood.rev_parse(repo, 'main')\n"
        "    repo.set_ref('main', head, expected=head.hex())\n"
    )
    result = installed.mypy(probe)
    assert result.returncode == 1, result.stdout
    assert 'Argument "expected" to "set_ref"' in result.stdout, result.stdout


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
def test_the_example_program_does_the_three_examples(installed: Installed) -> None:
    repo, dist = installed.work / "repo", installed.work / "dist"
    (dist / "etc").mkdir(parents=True)
    (dist / "etc" / "hostname").write_text("web1\n")
    (dist / "etc" / "motd").write_text("Welcome\n")
    first = ok(installed.release_check("publish", repo, "os/main", dist, "/etc/hostname"))
    assert first.splitlines()[1] == "/etc/hostname: web1"  # read through the mount

    (dist / "etc" / "hostname").write_text("web2\n")
    (dist / "etc" / "motd").unlink()
    (dist / "etc" / "ssh").mkdir()
    (dist / "etc" / "ssh" / "sshd_config").write_text("PermitRootLogin no\n")
    second = ok(installed.release_check("publish", repo, "os/main", dist, "/etc/hostname"))
    assert second.splitlines()[1] == "/etc/hostname: web2"
    changes = ok(installed.release_check("changes", repo, "os/main^", "os/main", "/etc"))
    assert changes.splitlines() == [
        "M /etc/hostname",
        "D /etc/motd",
        "A /etc/ssh",
        "  + /etc/ssh/sshd_config",
    ]
    clean = installed.release_check("gate", repo, "os/main")
    assert (clean.returncode, clean.stdout) == (0, "os/main: no new setuid files\n")

    (dist / "usr" / "bin").mkdir(parents=True)
    (dist / "usr" / "bin" / "su").write_bytes(b"\x7fELF su")
    (dist / "usr" / "bin" / "su").chmod(0o4755)
    ok(installed.release_check("publish", repo, "os/main", dist, "/usr/bin/su"))
    stopped = installed.release_check("gate", repo, "os/main")
    assert stopped.returncode == 1
    assert stopped.stderr == "release-check: os/main adds a setuid file: /usr/bin/su\n"
    assert installed.release_check("gate", repo, "os/main^").returncode == 0

    missing = installed.release_check("gate", repo, "os/nothing")
    assert (missing.returncode, missing.stderr) == (
        2,
        "release-check: os/nothing: no such ref or commit\n",
    )
