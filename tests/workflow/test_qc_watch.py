"""``watch`` with the trust columns: flagged rows under --qc flag and strict, resume, and older CSVs refused."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from workflow_support import Flagging, build_brightness_onnx, write_cell

from edgeleuk.core.errors import UsageError
from edgeleuk.runtime.classifier import Classifier
from edgeleuk.workflow import flags
from edgeleuk.workflow.watch import COLUMNS, watch_folder


@pytest.fixture(scope="module")
def clf(tmp_path_factory: pytest.TempPathFactory) -> Flagging:
    model = build_brightness_onnx(tmp_path_factory.mktemp("qc-watch") / "bright.onnx")
    return Flagging(Classifier.load(model, backend="cpu"))


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def _watch(folder: Path, out: Path, clf, qc: str, **kw):
    return watch_folder(folder, out=out, classifier=clf, interval=0.05, max_idle=0.6, qc=qc, **kw)


def test_strict_rows_are_flagged_once_and_a_restart_resumes(tmp_path: Path, clf) -> None:
    folder, out = tmp_path / "in", tmp_path / "out.csv"
    write_cell(folder / "UID_1_1_1_all.bmp", 220)
    write_cell(folder / "UID_1_2_1_blur_all.bmp", 210)
    write_cell(folder / "UID_H1_1_1_odd_hem.bmp", 30)
    clf.seen.clear()
    summary = _watch(folder, out, clf, "strict", give_up_s=1.0)
    rows = {Path(r["path"]).stem: r for r in _rows(out)}
    assert len(rows) == 3 and len(_rows(out)) == 3
    assert sorted(clf.seen) == sorted(f"{k}.bmp" for k in rows)  # a flagged file is not retried like a failed one
    blur = rows["UID_1_2_1_blur_all"]
    assert (blur["status"], blur["label"], blur["qc"], blur["true_label"]) == ("flagged", "", "blur", "all")
    assert rows["UID_H1_1_1_odd_hem"]["qc"] == "ood" and rows["UID_H1_1_1_odd_hem"]["ood_score"] == "123.457"
    assert (rows["UID_1_1_1_all"]["qc"], rows["UID_1_1_1_all"]["label"]) == ("ok", "all")
    assert (summary.classified, summary.withheld, summary.flagged, summary.failed) == (1, 2, 2, 0)
    assert "flagged 2 cell(s)" in summary.describe() and "2 of them without a label" in summary.describe()
    # A restart under --qc flag continues the file: nothing again, the next cell keeps its label.
    write_cell(folder / "UID_1_3_1_blur_all.bmp", 200)
    again = _watch(folder, out, clf, "flag")
    assert (again.resumed, again.classified, again.flagged, again.withheld) == (3, 1, 1, 0)
    last = _rows(out)[-1]
    assert (last["status"], last["label"], last["qc"]) == ("ok", "all", "blur")


def test_a_csv_written_before_the_trust_columns_is_refused_untouched(tmp_path: Path, clf) -> None:
    folder, out = tmp_path / "in", tmp_path / "old.csv"
    write_cell(folder / "UID_1_1_1_all.bmp", 220)
    old = [c for c in COLUMNS if c not in flags.TRUST_COLUMNS]
    text = ",".join(old) + "\n" + "UID_9_1_1_all.bmp,ok,,0.9,all,9,,all,abcdef012345,0.5,full,cpu-fp32,t\n"
    out.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError, match="before rows carried the qc and ood_score columns.*choose a new --out"):
        _watch(folder, out, clf, "flag")
    assert out.read_text(encoding="utf-8") == text


def test_pre_qc_header_names_only_that_case() -> None:
    old = [c for c in COLUMNS if c not in flags.TRUST_COLUMNS]
    assert flags.pre_qc_header(old, COLUMNS)
    assert flags.pre_qc_header(list(COLUMNS), COLUMNS) is None
    assert flags.pre_qc_header(["a", "b"], COLUMNS) is None
