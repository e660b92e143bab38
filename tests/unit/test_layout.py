"""contract/layout.py: version folders in numeric order, the assets.extra names, atomic writes."""

from __future__ import annotations

import ast
import functools
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from contract import layout

pytestmark = pytest.mark.unit


def test_versions_sort_as_numbers_so_10_comes_after_9():
    assert layout.numbered(["9", "10", "2", "100"]) == ["2", "9", "10", "100"]
    assert layout.newest(["9", "10"]) == "10"
    assert max(["9", "10"]) == "9"  # what text order would have served


def test_non_numeric_names_are_no_versions():
    names = ["3", ".3.tmp", "tmp-4", "4a", "-5", "5.0", "", "²", "١٢", ".DS_Store", "PUSHED_FROM"]
    assert layout.numbered(names) == ["3"]
    assert layout.newest(["tmp", "x"]) is None and layout.newest([]) is None


def test_object_store_listings_with_trailing_slashes():
    # tf.io.gfile / fileio list s3:// and gs:// "folders" as "name/"
    assert layout.numbered(["12/", "7/", "7", "notes.txt"]) == ["7", "12"]


def test_local_versions_lists_folders_only_and_a_missing_folder_is_empty(tmp_path):
    for name in ("10", "9", "1700000000", "tmp", ".11.tmp"):
        (tmp_path / name).mkdir()
    (tmp_path / "12").write_text("a file, not a version folder")
    assert layout.local_versions(tmp_path) == ["9", "10", "1700000000"]
    assert layout.local_versions(tmp_path / "missing") == []
    assert layout.local_versions(tmp_path / "12") == []


def test_the_assets_extra_paths_are_one_set_of_names():
    assert layout.SERVING_CONTRACT == "assets.extra/serving_contract.json"
    assert layout.TRAINING_STATISTICS == "assets.extra/training_statistics.pb"
    assert all(p.startswith(layout.ASSETS_EXTRA + "/") for p in layout.ASSETS_EXTRA_FILES)


def test_the_pushers_names_are_the_layouts():
    from components import pusher

    assert pusher.TRAINING_STATISTICS == layout.TRAINING_STATISTICS
    assert (pusher.PUSH_RECORD, pusher.SOURCE_FILE) == (layout.PUSH_RECORD, layout.PUSHED_FROM)


def test_atomic_writes_of_text_bytes_and_json(tmp_path):
    target = tmp_path / "a" / "b" / "report.json"  # the folders are created
    layout.write_json(target, {"b": 1, "a": [1, 2]}, indent=2, sort_keys=True)
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    layout.write_text(target, "héllo")
    assert target.read_text(encoding="utf-8") == "héllo"
    layout.write_bytes(str(target), b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert os.listdir(target.parent) == ["report.json"]  # no temporary left behind


def test_the_file_gets_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = Path(layout.write_text(tmp_path / "manifest.yaml", "kind: x\n"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_crashed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    target = tmp_path / "trigger_state.json"
    layout.write_json(target, {"fired": 1})

    def crash(src, dst):
        raise OSError("disk gone mid-write")

    monkeypatch.setattr(layout.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        layout.write_json(target, {"fired": 2})
    assert json.loads(target.read_text()) == {"fired": 1}
    assert os.listdir(tmp_path) == ["trigger_state.json"]  # the temporary was removed


def test_an_unserializable_value_writes_nothing(tmp_path):
    target = tmp_path / "report.json"
    layout.write_text(target, "old")
    with pytest.raises(TypeError):
        layout.write_json(target, {"x": object()})
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["report.json"]


def test_a_process_killed_mid_write_leaves_the_old_file(tmp_path):
    """A real crash: the child dies (os._exit) between writing the temporary and the rename."""
    import subprocess

    target = tmp_path / "state.json"
    layout.write_json(target, {"v": 1})
    script = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); from contract import layout\n"
        "layout.os.replace = lambda *a: os._exit(9)\n"
        "layout.write_json(sys.argv[2], {'v': 2})\n"
    )
    repo = str(Path(layout.__file__).resolve().parents[1])
    result = subprocess.run([sys.executable, "-c", script, repo, str(target)], check=False)
    assert result.returncode == 9
    assert json.loads(target.read_text()) == {"v": 1}
    leftovers = [n for n in os.listdir(tmp_path) if n != "state.json"]
    assert all(n.startswith(".state.json.") and n.endswith(".tmp") for n in leftovers)
    assert layout.numbered(leftovers) == []  # a leftover is never taken for a version


def test_write_with_a_filesystems_functions(tmp_path):
    calls = []

    def rename(src, dst):
        calls.append(("rename", os.path.basename(src), os.path.basename(dst)))
        os.replace(src, dst)

    def makedirs(path):
        calls.append(("makedirs", path))
        os.makedirs(path, exist_ok=True)

    target = f"{tmp_path}/manifests/isvc.yaml"
    layout.write_with(target, "kind: x\n", open_file=open, rename=rename, makedirs=makedirs)
    assert Path(target).read_text() == "kind: x\n"
    assert calls[0] == ("makedirs", f"{tmp_path}/manifests")
    assert calls[1][1].startswith(".isvc.yaml.") and calls[1][2] == "isvc.yaml"
    layout.write_with(target, b"binary", open_file=open, rename=os.replace)
    assert Path(target).read_bytes() == b"binary"


def test_write_with_cleans_up_after_a_failed_rename(tmp_path):
    target = tmp_path / "isvc.yaml"
    target.write_text("old")

    def failing(src, dst):
        raise OSError("store refused")

    with pytest.raises(OSError, match="store refused"):
        layout.write_with(str(target), "new", open_file=open, rename=failing, remove=os.remove)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["isvc.yaml"]


def test_write_with_fileio_like_rename_taking_overwrite(tmp_path):
    def rename(src, dst, overwrite=False):  # tfx.dsl.io.fileio.rename's signature
        assert overwrite
        os.replace(src, dst)

    target = str(tmp_path / "x.txt")
    layout.write_with(target, "1", open_file=open, rename=functools.partial(rename, overwrite=True))
    assert Path(target).read_text() == "1"


def test_temporary_path_stays_in_the_targets_folder_for_uris():
    temporary = layout.temporary_path("s3://bucket/models/1/assets.extra/x.json")
    assert temporary.startswith("s3://bucket/models/1/assets.extra/.x.json.")
    assert temporary.endswith(".tmp")
    assert layout.temporary_path("x.json").startswith(".x.json.")


def test_the_module_imports_only_the_standard_library():
    """The serving venv and image import it: no TensorFlow, TFX or third-party import."""
    tree = ast.parse(Path(layout.__file__).read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
