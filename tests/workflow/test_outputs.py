"""Output writers: columns, C-NMC submission rules, atomic writes."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from edgeleuk.core.errors import UsageError
from edgeleuk.runtime.classifier import Prediction
from edgeleuk.workflow import outputs
from edgeleuk.workflow.outputs import (
    ResultRow,
    SubmissionRefused,
    check_cnmc_names,
    write_cnmc,
    write_csv,
    write_jsonl,
)


def _ok(path: str, prob: float) -> ResultRow:
    label = "all" if prob >= 0.5 else "hem"
    return ResultRow(
        path, Prediction(path, "ok", prob_all=prob, label=label, logit=0.0, adjustments=("padded:a",))
    )


def _failed(path: str) -> ResultRow:
    return ResultRow(path, Prediction(path, "error", error="empty file (0 bytes)"))


def test_row_dict_columns_and_missing_values() -> None:
    row = _ok("a.bmp", 0.1234567).as_dict(with_truth=False)
    assert tuple(row) == outputs.columns(with_truth=False)
    assert row["prob_all"] == 0.123457 and row["adjustment"] == "padded:a" and row["error"] is None
    assert _failed("b.bmp").as_dict(with_truth=True)["true_label"] is None


def test_csv_without_truth_has_no_truth_column(tmp_path: Path) -> None:
    write_csv(tmp_path / "p.csv", [_ok("a.bmp", 0.7), _failed("b.bmp")], "all")
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines == [
        "path,status,error,prob_all,label,qc,ood_score,subject,adjustment,model,threshold,tta,engine,time_utc",
        "a.bmp,ok,,0.700000,all,ok,,,padded:a,,,,,",  # rows made without provenance leave it empty
        "b.bmp,error,empty file (0 bytes),,,,,,,,,,,",
    ]


def test_cnmc_lines_follow_numeric_order(tmp_path: Path) -> None:
    rows = [_ok(f"{n}.bmp", 0.9 if n in (2, 10) else 0.1) for n in (10, 1, 9, 2, 3, 4, 5, 6, 7, 8)]
    write_cnmc(tmp_path / "s.zip", rows, "all")
    with zipfile.ZipFile(tmp_path / "s.zip") as zf:
        assert zf.read(outputs.CNMC_MEMBER).decode() == "0\n1\n0\n0\n0\n0\n0\n0\n0\n1\n"


def test_cnmc_refuses_rather_than_guessing(tmp_path: Path) -> None:
    with pytest.raises(SubmissionRefused) as err:
        write_cnmc(tmp_path / "s.zip", [_ok("1.bmp", 0.9), _failed("2.bmp")], "all")
    assert err.value.exit_code == 1 and "2.bmp" in str(err.value)
    assert not (tmp_path / "s.zip").exists()


@pytest.mark.parametrize(
    "names, message",
    [
        (["1.bmp", "3.bmp"], r"missing \[2\]"),
        (["0.bmp", "1.bmp"], "numbered 1..N"),
        (["1.bmp", "x.bmp"], "named <N>.bmp"),
    ],
)
def test_cnmc_name_rules(names: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_cnmc_names(names)


def test_jsonl_crash_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = json.dumps

    def flaky(obj, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(obj, **kw)

    monkeypatch.setattr(outputs.json, "dumps", flaky)
    with pytest.raises(KeyboardInterrupt):
        write_jsonl(tmp_path / "p.jsonl", [_ok("1.bmp", 0.9), _ok("2.bmp", 0.2)], "all")
    assert list(tmp_path.iterdir()) == []
