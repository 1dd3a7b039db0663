"""``edgeleuk predict`` inputs: files, folders and patterns in any mix, each file once, clear errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from runtime_support import build_onnx, gray_cell, write_bmp
from typer.testing import CliRunner

from edgeleuk.cli import app
from edgeleuk.core.errors import DataError
from edgeleuk.workflow.inputs import index_inputs

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_onnx(tmp_path_factory.mktemp("model") / "m.onnx")


@pytest.fixture()
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``a.bmp``, ``notes.txt``, ``DIR/{1,2,10}.bmp`` + ``x.png`` + ``labels.csv``, ``DIR2/5.bmp``; cwd there."""
    for name, level in (("a.bmp", 30), ("DIR/1.bmp", 40), ("DIR/2.bmp", 200), ("DIR/10.bmp", 90),
                        ("DIR/x.png", 220), ("DIR2/5.bmp", 120)):
        write_bmp(tmp_path / name, gray_cell(level, size=32))
    (tmp_path / "DIR" / "labels.csv").write_text("not,a,labels,file\n")
    (tmp_path / "notes.txt").write_text("not an image")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _paths(out: Path) -> list[str]:
    with open(out, newline="") as fh:
        return [row["path"] for row in csv.DictReader(fh)]


def _predict(model: Path, *inputs: str, out: str = "p.csv"):
    return runner.invoke(app, ["predict", *inputs, "-m", str(model), "--out", out, "--backend", "cpu"])


def test_one_file(model: Path, tree: Path) -> None:
    result = _predict(model, "DIR/2.bmp")
    assert result.exit_code == 0, result.output
    assert _paths(tree / "p.csv") == ["2.bmp"]  # relative to its folder, like a folder input's rows
    assert "classified 1 file(s) from DIR " in result.stdout


def test_a_quoted_pattern_is_expanded_by_edgeleuk(model: Path, tree: Path) -> None:
    result = _predict(model, "DIR/*.bmp")  # no shell here: the pattern reaches edgeleuk as typed
    assert result.exit_code == 0, result.output
    assert _paths(tree / "p.csv") == ["1.bmp", "2.bmp", "10.bmp"]  # natural order; labels.csv and x.png left out


def test_recursive_double_star_pattern(model: Path, tree: Path) -> None:
    result = _predict(model, "**/*.png")
    assert result.exit_code == 0, result.output
    assert _paths(tree / "p.csv") == ["x.png"]


def test_files_folders_and_patterns_mixed_each_file_once(model: Path, tree: Path) -> None:
    result = _predict(model, "a.bmp", "DIR/*.bmp", "DIR2/", "notes.txt", "./a.bmp", "DIR/2.bmp")
    assert result.exit_code == 0, result.output
    assert _paths(tree / "p.csv") == ["a.bmp", "DIR/1.bmp", "DIR/2.bmp", "DIR/10.bmp", "DIR2/5.bmp", "notes.txt"]
    with open(tree / "p.csv", newline="") as fh:
        rows = {r["path"]: r for r in csv.DictReader(fh)}
    assert rows["notes.txt"]["status"] == "error"  # named, so taken as given: an error row, not silence
    assert "ok 5, failed 1" in result.stdout and "from . " in result.stdout


def test_two_folders_rows_stay_apart(model: Path, tree: Path) -> None:
    result = _predict(model, "DIR", "DIR2")
    assert result.exit_code == 0, result.output
    assert _paths(tree / "p.csv") == ["DIR/1.bmp", "DIR/2.bmp", "DIR/10.bmp", "DIR/x.png", "DIR2/5.bmp"]


def test_one_folder_keeps_paths_relative_to_it(model: Path, tree: Path) -> None:
    result = _predict(model, str(tree / "DIR"))
    assert result.exit_code == 0, result.output
    assert _paths(tree / "p.csv") == ["1.bmp", "2.bmp", "10.bmp", "x.png"]


@pytest.mark.parametrize(("name", "message"), [
    ("nothing/*.bmp", "'nothing/*.bmp' matches no file or folder"),
    ("DIR/*.gif", "'DIR/*.gif' matches no file or folder"),
    ("*.txt", "'*.txt' matches no image"),
    ("missing.bmp", "file or folder not found: missing.bmp"),
])
def test_an_input_that_matches_nothing_is_exit_2_naming_it(model: Path, tree: Path, name: str, message: str) -> None:
    result = _predict(model, "a.bmp", name)
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tree / "p.csv").exists()


def test_a_file_whose_name_looks_like_a_pattern_is_taken_as_named(model: Path, tree: Path) -> None:
    write_bmp(tree / "odd[1].bmp", gray_cell(10, size=32))
    result = _predict(model, "odd[1].bmp")
    assert result.exit_code == 0, result.output
    assert _paths(tree / "p.csv") == ["odd[1].bmp"]


def test_cnmc_zip_from_one_folder_still_works(model: Path, tmp_path: Path) -> None:
    for k in (1, 2, 3):
        write_bmp(tmp_path / "final" / f"{k}.bmp", gray_cell(60 * k, size=32))
    result = _predict(model, str(tmp_path / "final"), "--format", "cnmc", out=str(tmp_path / "s.zip"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.zip").is_file()


def test_index_inputs_rules(tree: Path) -> None:
    one = index_inputs("DIR")
    assert one.base == Path("DIR") and [r.path.name for r in one.records] == ["1.bmp", "2.bmp", "10.bmp", "x.png"]
    mixed = index_inputs(["DIR2/5.bmp", "DIR/*.bmp", "DIR2"])
    assert mixed.base == tree and mixed.shown == Path(".")
    assert [mixed.row_path(r.path) for r in mixed.records] == ["DIR2/5.bmp", "DIR/1.bmp", "DIR/2.bmp", "DIR/10.bmp"]
    with pytest.raises(DataError, match="'zzz\\*' matches no file or folder"):
        index_inputs(["a.bmp", "zzz*"])


def test_cluster_predict_indexes_the_inputs_before_ray_starts(
    model: Path, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--cluster takes the same inputs through the same indexing, and a bad one stops before Ray."""
    import edgeleuk.cluster.predict as cluster_predict
    import edgeleuk.workflow.predict as predict_mod

    seen = []
    real = predict_mod.index_inputs
    monkeypatch.setattr(cluster_predict, "index_inputs", lambda *a, **k: seen.append(a) or real(*a, **k))
    monkeypatch.setattr(cluster_predict, "connect", lambda address: pytest.fail("Ray was started"))
    result = runner.invoke(app, ["predict", "a.bmp", "nothing/*.bmp", "-m", str(model), "--cluster", "auto"])
    assert result.exit_code == 2 and "'nothing/*.bmp' matches no file or folder" in result.stderr
    assert seen and list(map(str, seen[0][0])) == ["a.bmp", "nothing/*.bmp"]
