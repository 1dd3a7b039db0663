"""``edgeleuk watch``: classify images as they land, durably, resumably (edgeleuk.workflow.watch)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from workflow_support import cell_bytes, prob_for_grey, write_cell

from edgeleuk.core.errors import UsageError
from edgeleuk.workflow.arrivals import ArrivalTracker, list_arrivals
from edgeleuk.workflow.watch import COLUMNS, watch_folder

GREYS = [40, 120, 170, 230]  # well apart: probabilities from ~0.01 to ~0.99


@pytest.fixture(scope="module")
def classifier(bright_model: Path):
    from edgeleuk.runtime.classifier import Classifier

    return Classifier.load(bright_model, backend="cpu")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def _write_in_pieces(folder: Path, pause: float) -> None:
    """Write cells the way a slow writer does: half a file, a pause, the rest."""
    for i, grey in enumerate(GREYS[:3]):
        data = cell_bytes(grey)
        with open(folder / f"UID_{i + 1}_1_1_all.bmp", "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            time.sleep(pause)  # many polls see a stable, truncated file
            fh.write(data[len(data) // 2 :])
    # The other common pattern: write under a hidden temporary name, then rename.
    tmp = folder / ".incoming.bmp"
    tmp.write_bytes(cell_bytes(GREYS[3]))
    tmp.rename(folder / "UID_H1_1_1_hem.bmp")


def test_list_arrivals_skips_hidden_files_and_tolerates_a_missing_folder(tmp_path: Path) -> None:
    assert list_arrivals(tmp_path / "not-yet") == []  # the microscope has not made it yet
    for name in ("10.bmp", "2.bmp", ".2.bmp.tmp.bmp", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "1.png").write_bytes(b"x")
    assert [p.name for p in list_arrivals(tmp_path)] == ["2.bmp", "10.bmp"]
    assert [p.name for p in list_arrivals(tmp_path, recursive=True)] == ["2.bmp", "10.bmp", "1.png"]


def test_tracker_waits_for_two_identical_polls(tmp_path: Path) -> None:
    f = tmp_path / "a.bmp"
    f.write_bytes(b"half")
    tracker = ArrivalTracker()
    assert tracker.poll([f]) == []  # first sight
    f.write_bytes(b"half and more")
    assert tracker.poll([f]) == []  # changed since
    assert tracker.poll([f]) == [f]  # unchanged across two polls
    assert tracker.accept(f, failed=False)
    assert tracker.poll([f]) == []  # done: never again


def test_tracker_retries_a_failing_file_until_it_changes(tmp_path: Path) -> None:
    f = tmp_path / "a.bmp"
    f.write_bytes(b"truncated")
    tracker = ArrivalTracker(give_up_s=3600)
    tracker.poll([f])
    assert tracker.poll([f]) == [f]
    assert not tracker.accept(f, failed=True)  # unchanged but young: try again later
    assert tracker.poll([f]) == [f]
    with open(f, "ab") as fh:
        fh.write(b" and the rest")
    assert not tracker.accept(f, failed=True)  # it changed: back to waiting
    assert tracker.poll([f]) == []
    assert tracker.poll([f]) == [f]


def test_watch_classifies_files_written_slowly_in_pieces(tmp_path: Path, classifier) -> None:
    folder, out = tmp_path / "incoming", tmp_path / "predictions.csv"
    folder.mkdir()
    writer = threading.Thread(target=_write_in_pieces, args=(folder, 0.4))
    writer.start()
    try:
        summary = watch_folder(
            folder, classifier=classifier, out=out, interval=0.05, max_files=4, max_idle=60, give_up_s=30
        )
    finally:
        writer.join()
    rows = _rows(out)
    names = ["UID_1_1_1_all.bmp", "UID_2_1_1_all.bmp", "UID_3_1_1_all.bmp", "UID_H1_1_1_hem.bmp"]
    assert sorted(r["path"] for r in rows) == names
    by_name = {r["path"]: r for r in rows}
    for name, grey in zip(names, GREYS, strict=True):
        row = by_name[name]
        assert row["status"] == "ok", row
        # The whole file was read: the probability is that of the complete image.
        assert float(row["prob_all"]) == pytest.approx(prob_for_grey(grey), abs=1e-4)
        assert row["label"] == ("all" if prob_for_grey(grey) >= 0.5 else "hem")
    assert by_name["UID_H1_1_1_hem.bmp"]["subject"] == "H1"
    assert by_name["UID_H1_1_1_hem.bmp"]["true_label"] == "hem"
    assert (summary.classified, summary.failed, summary.resumed) == (4, 0, 0)
    assert summary.called_all == sum(prob_for_grey(g) >= 0.5 for g in GREYS)
    assert "4 file(s) done" in summary.stopped


def test_restart_resumes_without_duplicates_and_redoes_a_torn_row(tmp_path: Path, classifier) -> None:
    folder, out = tmp_path / "incoming", tmp_path / "predictions.csv"
    for i, grey in enumerate(GREYS[:3]):
        write_cell(folder / f"{i + 1}.bmp", grey)
    first = watch_folder(folder, classifier=classifier, out=out, interval=0.05, max_idle=0.3)
    assert first.classified == 3 and "no new files" in first.stopped
    # Simulate a crash in the middle of writing the last row.
    text = out.read_text(encoding="utf-8")
    out.write_text(text[: len(text) - 9], encoding="utf-8")
    write_cell(folder / "4.bmp", GREYS[3])
    second = watch_folder(folder, classifier=classifier, out=out, interval=0.05, max_idle=0.3)
    rows = _rows(out)
    assert sorted(r["path"] for r in rows) == ["1.bmp", "2.bmp", "3.bmp", "4.bmp"]
    assert all(r["status"] == "ok" for r in rows)
    assert (second.resumed, second.classified) == (2, 2)
    third = watch_folder(folder, classifier=classifier, out=out, interval=0.05, max_idle=0.2)
    assert (third.resumed, third.classified) == (4, 0)
    assert len(_rows(out)) == 4


def test_undecodable_file_becomes_an_error_row_once_it_stays_unchanged(tmp_path: Path, classifier) -> None:
    folder, out = tmp_path / "incoming", tmp_path / "predictions.csv"
    folder.mkdir()
    (folder / "bad.bmp").write_bytes(b"BM this is not a bitmap")
    write_cell(folder / "good.bmp", GREYS[2])
    summary = watch_folder(
        folder, classifier=classifier, out=out, interval=0.05, max_files=2, max_idle=60, give_up_s=0.3
    )
    rows = {r["path"]: r for r in _rows(out)}
    assert rows["bad.bmp"]["status"] == "error" and rows["bad.bmp"]["error"]
    assert rows["bad.bmp"]["prob_all"] == ""
    assert rows["good.bmp"]["status"] == "ok"
    assert (summary.classified, summary.failed) == (1, 1)


def test_stop_event_ends_the_loop(tmp_path: Path, classifier) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    stop = threading.Event()
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(
            s=watch_folder(
                folder, classifier=classifier, out=tmp_path / "p.csv", interval=0.05, stop_event=stop
            )
        )
    )
    thread.start()
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert result["s"].stopped == "stop requested"


def test_foreign_csv_is_not_appended_to(tmp_path: Path, classifier) -> None:
    folder, out = tmp_path / "incoming", tmp_path / "other.csv"
    folder.mkdir()
    out.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(UsageError, match="columns"):
        watch_folder(folder, classifier=classifier, out=out, max_idle=0.1)
    assert out.read_text(encoding="utf-8") == "a,b\n1,2\n"


def test_missing_folder_is_a_usage_error(tmp_path: Path, classifier) -> None:
    with pytest.raises(UsageError, match="not found"):
        watch_folder(tmp_path / "nope", classifier=classifier, out=tmp_path / "p.csv")


def test_cli_ctrl_c_prints_summary_and_exits_0(tmp_path: Path, bright_model: Path) -> None:
    folder, out = tmp_path / "incoming", tmp_path / "predictions.csv"
    write_cell(folder / "1.bmp", GREYS[3])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgeleuk",
            "watch",
            str(folder),
            "--model",
            str(bright_model),
            "--out",
            str(out),
            "--backend",
            "cpu",
            "--interval",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and len(out.read_text(encoding="utf-8").splitlines()) >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "interrupted (Ctrl-C)" in stdout and "classified 1 image(s)" in stdout
    assert [r["path"] for r in _rows(out)] == ["1.bmp"]


def test_the_summary_counts_rows_across_restarts() -> None:
    from edgeleuk.workflow.watch import WatchSummary

    summary = WatchSummary(Path("in"), Path("w.csv"), resumed=5, classified=8, called_all=2, failed=1,
                           stopped="max idle", seconds=12.4, tta_note="staged TTA: 3 of 8 cells went on")
    assert summary.describe() == (
        "watch in stopped: max idle after 12 s\n"
        "  classified 8 image(s), 2 called ALL (25.0%); 1 unreadable file(s) recorded as errors\n"
        "  w.csv: 14 row(s) (5 from earlier sessions); run `edgeleuk watch` again to continue\n"
        "  staged TTA: 3 of 8 cells went on")
    idle = WatchSummary(Path("in"), Path("w.csv"), stopped="interrupted")
    assert idle.describe().splitlines()[1] == ("  classified 0 image(s), 0 called ALL; 0 unreadable file(s) "
                                               "recorded as errors")
    assert len(idle.describe().splitlines()) == 3  # no TTA line for full TTA
