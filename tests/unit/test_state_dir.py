from __future__ import annotations

from pathlib import Path

from pipeline.state_dir import CLEAN_MARK, mark_clean, prepare


def _tables(state: Path) -> None:
    (state / "app-data" / "v1" / "tables").mkdir(parents=True)
    (state / "app-data" / "v1" / "tables" / "CURRENT").write_text("MANIFEST-1")


def test_state_after_a_clean_stop_is_kept(tmp_path: Path) -> None:
    _tables(tmp_path)
    mark_clean(tmp_path)
    assert prepare(tmp_path) is False
    assert (tmp_path / "app-data" / "v1" / "tables" / "CURRENT").exists()
    # The mark is consumed: a crash during this run must not look clean next time.
    assert not (tmp_path / CLEAN_MARK).exists()


def test_state_after_a_crash_is_discarded(tmp_path: Path) -> None:
    _tables(tmp_path)
    (tmp_path / "stray.lock").write_text("")
    assert prepare(tmp_path) is True
    assert list(tmp_path.iterdir()) == []


def test_a_fresh_directory_is_created_and_nothing_is_reported(tmp_path: Path) -> None:
    state = tmp_path / "new"
    assert prepare(state) is False
    assert state.is_dir()


def test_run_after_run_keeps_state_only_when_each_stopped_cleanly(tmp_path: Path) -> None:
    _tables(tmp_path)
    mark_clean(tmp_path)
    assert prepare(tmp_path) is False  # run 1 starts; it crashes (no mark)
    assert prepare(tmp_path) is True  # run 2 starts from the changelogs
