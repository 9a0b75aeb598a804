"""Artifacts written whole or not at all: a folder replaces its target only when complete."""

from __future__ import annotations

import pytest

from modeling_intrada.atomic import atomic_folder, incomplete_path, write_text_atomically


def test_a_complete_folder_replaces_the_old_one(tmp_path):
    target = tmp_path / "artifact"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_folder(target) as staging:
        assert staging == incomplete_path(target) and not any(staging.iterdir())
        (staging / "new.txt").write_text("new")
        assert (target / "old.txt").is_file()  # readers see the old artifact until the rename
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


def test_a_crash_leaves_the_old_folder_and_no_remains(tmp_path):
    target = tmp_path / "artifact"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="killed"), atomic_folder(target) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]
    assert (target / "old.txt").read_text() == "old"


def test_remains_of_a_killed_write_are_cleared(tmp_path):
    incomplete_path(tmp_path / "artifact").mkdir()
    (incomplete_path(tmp_path / "artifact") / "stale").write_text("x")
    with atomic_folder(tmp_path / "artifact") as staging:
        assert not any(staging.iterdir())


def test_text_file_is_whole(tmp_path):
    write_text_atomically(tmp_path / "a" / "config.yaml", "x: 1\n")
    assert (tmp_path / "a" / "config.yaml").read_text() == "x: 1\n"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["config.yaml"]
