"""core.files (atomic writes) and the small readers of core.runfolder the engine and replay use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rt_eda.core.files import write_atomic, write_json_atomic
from rt_eda.core.runfolder import (
    FRAMES_CSV,
    SUMMARY_JSON,
    count_frame_rows,
    frames_layout,
    read_frames_csv,
)


def test_write_atomic_replaces_the_whole_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    target.write_text("old, and longer than the new content")
    assert write_atomic(target, "new") == target
    assert target.read_text() == "new"
    write_atomic(target, b"\x00bytes")
    assert target.read_bytes() == b"\x00bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_write_json_atomic_creates_parents_and_ends_with_a_newline(tmp_path: Path) -> None:
    target = tmp_path / "x" / "y" / "s.json"
    write_json_atomic(target, {"path": tmp_path, "n": 1})
    text = target.read_text()
    assert text.endswith("}\n")
    assert json.loads(text) == {"path": str(tmp_path), "n": 1}
    with pytest.raises(FileNotFoundError):
        write_json_atomic(tmp_path / "missing" / "s.json", {}, make_parents=False)


@pytest.mark.parametrize("blocker", ["a folder", "a file as parent"])
def test_a_failed_atomic_write_keeps_the_target_and_leaves_nothing(tmp_path: Path,
                                                                  blocker: str) -> None:
    if blocker == "a folder":  # the rename fails: a folder is in the way
        target = tmp_path / "t"
        target.mkdir()
        (target / "inside").write_text("kept")
        with pytest.raises(OSError):
            write_atomic(target, "data")
        assert (target / "inside").read_text() == "kept"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]
    else:  # the temporary file cannot be created
        (tmp_path / "f").write_text("kept")
        with pytest.raises(NotADirectoryError):
            write_json_atomic(tmp_path / "f" / "t.json", {"a": 1}, make_parents=False)
        with pytest.raises(FileExistsError):
            write_json_atomic(tmp_path / "f" / "t.json", {"a": 1})
        assert (tmp_path / "f").read_text() == "kept"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_count_frame_rows(tmp_path: Path) -> None:
    assert count_frame_rows(tmp_path) is None
    (tmp_path / FRAMES_CSV).write_text("seq,t_index,c,z,t_exposure,interval_s\n")
    assert count_frame_rows(tmp_path) == 0
    (tmp_path / FRAMES_CSV).write_text("seq,t_index,c,z,t_exposure,interval_s\n"
                                       "0,0,0,0,1.0,0.1\n0,0,1,0,1.01,0.1\n1,1,0,0,1.")
    assert count_frame_rows(tmp_path) == 3  # a row cut short still follows its frame's data
    (tmp_path / FRAMES_CSV).write_text("")
    assert count_frame_rows(tmp_path) == 0


def test_frames_layout_from_rows_else_the_summary(tmp_path: Path) -> None:
    assert frames_layout(tmp_path) is None
    (tmp_path / SUMMARY_JSON).write_text(json.dumps({"stack_shape": [2, 3, 8, 8]}))
    assert frames_layout(tmp_path) == (0, 2, 3)
    (tmp_path / FRAMES_CSV).write_text("seq,t_index,c,z,t_exposure\n7,4,0,1,2.0\nx,y,z\n")
    assert frames_layout(tmp_path) == (5, 1, 2)


def test_read_frames_csv_counts_what_it_cannot_use(tmp_path: Path) -> None:
    p = tmp_path / FRAMES_CSV
    p.write_text("seq,t_index,c,z,t_exposure\n0,0,0,0,1.5\n1,1,0,0,nan\n2,9,0,0,3.0\n"
                 "3,1,0,0,2.5\n")
    found = read_frames_csv(p, (2, 1, 1, 4, 4))
    assert found.frame_times is not None
    assert np.array_equal(found.frame_times[:, 0, 0], [1.5, 2.5])
    assert found.bad_rows == 2 and found.first_bad.startswith("line 3: t_exposure nan")
    p.write_text("a,b\n1,2\n")
    unusable = read_frames_csv(p, (2, 1, 1, 4, 4))
    assert unusable.frame_times is None and "no columns" in unusable.unusable
