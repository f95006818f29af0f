"""attack8.md 3: what set and unset clean up under .config.tmp-* is a crashed writer's
file, never more: a directory by that name made every set and unset fail ('Is a
directory'); it is left alone, and a symlink is removed as a link (its target kept)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import cli


def test_a_directory_named_as_a_temporary_blocks_nothing(repo_path: Path) -> None:
    odd = repo_path / ".config.tmp-dir"
    (odd / "inside").mkdir(parents=True)
    done = cli("--repo", repo_path, "config", "set", "core.fsync", "false")
    assert (done.code, done.err) == (0, "")
    assert cli("--repo", repo_path, "config", "get", "core.fsync").out == "false\n"
    assert cli("--repo", repo_path, "config", "unset", "core.fsync").code == 0
    assert (odd / "inside").is_dir()  # not ours to remove


def test_a_symlinked_temporary_goes_and_its_target_stays(repo_path: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (repo_path / ".config.tmp-link").symlink_to(victim)
    (repo_path / ".config.tmp-dangling").symlink_to(tmp_path / "nowhere")
    assert cli("--repo", repo_path, "config", "set", "core.fsync", "false").code == 0
    assert victim.read_text() == "precious\n"
    assert not any(p.name.startswith(".config.tmp-") for p in repo_path.iterdir())
