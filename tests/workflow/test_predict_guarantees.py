"""``predict``'s promises, model-free: every row stamped, nothing lost on a fault or a full disk, exact refusals.

A stub engine (:class:`runtime_support.FlakyBackend`, the brightness model in numpy) stands in for
ONNX Runtime, so each test runs in well under a second.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_support import FlakyBackend, gray_cell, write_bmp

from edgeleuk.core.errors import EngineFault, OutputError, UsageError
from edgeleuk.core.meta import ModelMeta
from edgeleuk.runtime.classifier import Classifier, Prediction
from edgeleuk.runtime.wire import model_id, model_sha256
from edgeleuk.workflow import predict as predict_module
from edgeleuk.workflow.flags import STRICT_CNMC
from edgeleuk.workflow.inputs import index_inputs
from edgeleuk.workflow.predict import PredictOptions, load_classifier, partial_path, predict
from edgeleuk.workflow.provenance import sidecar_path

QUIET = PredictOptions(progress=False)
STUB_ID = model_id(model_sha256(Path(FlakyBackend.model_path)))
CLUSTER_ENGINE = "openvino@ray-fp32"


def _cells(folder: Path, n: int = 3) -> list[str]:
    return [write_bmp(folder / f"{k + 1}.bmp", gray_cell(60 + 50 * k, seed=k)).name for k in range(n)]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _classifier(fail=lambda call: False, backend: FlakyBackend | None = None) -> Classifier:
    return Classifier(backend or FlakyBackend(fail), batch_size=2, workers=1)


class _WorkerEngines(Classifier):
    """Each call names the engine that made it, as a Ray cluster's worker does."""

    def iter_predict(self, paths) -> Iterator[Prediction]:
        for p in super().iter_predict(paths):
            yield dataclasses.replace(p, engine=CLUSTER_ENGINE)


class _LosesOne(Classifier):
    """Breaks the pipeline's promise of one result per file: the last one never comes."""

    def iter_predict(self, paths) -> Iterator[Prediction]:
        yield from list(super().iter_predict(paths))[:-1]


def _clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each call of predict's clock is one second later, so every time stamp is told apart."""
    ticks = iter(range(10, 60))
    monkeypatch.setattr(predict_module, "utc_now", lambda: f"2026-12-02T07:00:{next(ticks)}Z")


def _read_only(monkeypatch: pytest.MonkeyPatch, *folders: Path) -> None:
    """Atomic writes into ``folders`` fail as on a read-only mount (root ignores permission bits)."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) in folders:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr("edgeleuk.io.atomic.tempfile.mkstemp", mkstemp)


def test_every_row_names_its_model_threshold_tta_engine_and_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = _cells(tmp_path / "in")
    _clock(monkeypatch)
    out = tmp_path / "p.csv"
    summary = predict(tmp_path / "in", model=tmp_path / "unused.onnx", out=out, options=QUIET,
                      classifier=_classifier())
    rows = _rows(out)
    assert [r["path"] for r in rows] == names
    assert [(r["model"], r["threshold"], r["tta"], r["engine"]) for r in rows] == [
        (STUB_ID, "0.500000", "full", "flaky-fp32")] * 3
    assert [r["time_utc"] for r in rows] == [f"2026-12-02T07:00:{s}Z" for s in (10, 11, 12)]
    assert summary.refused is None and summary.out == out and summary.record == sidecar_path(out)
    assert (summary.folder, summary.fmt, summary.threshold, summary.threshold_source) == (
        tmp_path / "in", "csv", 0.5, "default")
    assert (summary.positive, summary.n_all, summary.synthetic, summary.tta_note) == ("all", 1, False, "")
    assert summary.backend.name == "flaky" and 0 <= summary.seconds < 60
    assert summary.provenance is not None and summary.provenance.stamp.model == STUB_ID
    record = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    assert record["output"] == "p.csv" and list(record["models"]) == [STUB_ID]
    entry = record["models"][STUB_ID]
    assert entry["file"] == "stub-model.onnx" and entry["threshold"] == 0.5
    assert entry["first_seen_utc"] == "2026-12-02T07:00:10Z"  # the first row's time, not the writing's
    assert entry["engines"] == ["flaky-fp32"]


def test_the_engine_of_each_call_is_recorded_in_its_row_and_the_sidecar(tmp_path: Path) -> None:
    _cells(tmp_path / "in")
    out = tmp_path / "p.csv"
    clf = _WorkerEngines(FlakyBackend(), batch_size=2, workers=1)
    predict(tmp_path / "in", model=tmp_path / "unused.onnx", out=out, options=QUIET, classifier=clf)
    assert [r["engine"] for r in _rows(out)] == [CLUSTER_ENGINE] * 3
    record = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    assert record["models"][STUB_ID]["engines"] == [CLUSTER_ENGINE]


def test_the_model_argument_names_the_file_when_the_classifier_does_not(tmp_path: Path) -> None:
    class Unnamed(FlakyBackend):
        model_path = None

    _cells(tmp_path / "in", 1)
    out = tmp_path / "p.csv"
    summary = predict(tmp_path / "in", model=Path(FlakyBackend.model_path), out=out, options=QUIET,
                      classifier=_classifier(backend=Unnamed()))
    assert summary.provenance is not None and summary.provenance.file == "stub-model.onnx"
    assert _rows(out)[0]["model"] == STUB_ID


def test_a_pipeline_that_loses_a_result_is_refused_not_written(tmp_path: Path) -> None:
    _cells(tmp_path / "in")
    out = tmp_path / "p.csv"
    with pytest.raises(RuntimeError) as lost:
        predict(tmp_path / "in", model=tmp_path / "m.onnx", out=out, options=QUIET,
                classifier=_LosesOne(FlakyBackend(), batch_size=2, workers=1))
    assert str(lost.value) == "3 files but 2 predictions"
    assert not out.exists() and not sidecar_path(out).exists()


def test_listed_inputs_are_used_as_given(tmp_path: Path) -> None:
    _cells(tmp_path / "in", 2)
    found = index_inputs(tmp_path / "in")
    summary = predict(found, model=tmp_path / "m.onnx", out=tmp_path / "p.csv", options=QUIET,
                      classifier=_classifier())
    assert [r.shown for r in summary.rows] == ["1.bmp", "2.bmp"] and summary.folder == found.shown


def test_options_reach_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def load(model, backend, **kwargs):
        seen.update(model=model, backend=backend, **kwargs)
        return "loaded"

    monkeypatch.setattr(Classifier, "load", staticmethod(load))
    options = PredictOptions(backend="cpu", batch=3, threads=2, threshold=0.25, workers=5, tta="staged",
                             engine={"cpu": "its options"})
    assert load_classifier(tmp_path / "m.onnx", options) == "loaded"
    assert seen == {"model": tmp_path / "m.onnx", "backend": "cpu", "threshold": 0.25, "batch_size": 3,
                    "workers": 5, "threads": 2, "engine": {"cpu": "its options"}, "tta": "staged"}


def test_an_unknown_format_is_refused_with_the_choices(tmp_path: Path) -> None:
    _cells(tmp_path / "in", 1)
    with pytest.raises(UsageError) as refused:
        predict(tmp_path / "in", model=tmp_path / "m.onnx", out=tmp_path / "p.xml",
                options=PredictOptions(progress=False, fmt="xml"), classifier=_classifier())
    assert str(refused.value) == "unknown format 'xml'; choose one of csv, jsonl, cnmc"


def test_names_unfit_for_a_submission_are_refused_before_any_inference(tmp_path: Path) -> None:
    write_bmp(tmp_path / "in" / "cell.bmp", gray_cell(100))
    backend = FlakyBackend()
    with pytest.raises(UsageError, match="needs files named <N>.bmp"):
        predict(tmp_path / "in", model=tmp_path / "m.onnx", out=tmp_path / "s.zip",
                options=PredictOptions(progress=False, fmt="cnmc"), classifier=_classifier(backend=backend))
    assert backend.calls == 0


def test_an_explicit_output_name_is_kept_whatever_the_format(tmp_path: Path) -> None:
    _cells(tmp_path / "in", 1)
    out = tmp_path / "rows.txt"
    predict(tmp_path / "in", model=tmp_path / "m.onnx", out=out, options=PredictOptions(progress=False, fmt="jsonl"),
            classifier=_classifier())
    assert json.loads(out.read_text(encoding="utf-8"))["path"] == "1.bmp"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "rows.txt", "rows.txt.provenance.json"]


def test_a_refused_submission_records_its_provenance_beside_the_csv_written(tmp_path: Path) -> None:
    _cells(tmp_path / "final", 2)
    (tmp_path / "final" / "3.bmp").write_bytes(b"")
    out = tmp_path / "submission.zip"
    summary = predict(tmp_path / "final", model=tmp_path / "m.onnx", out=out,
                      options=PredictOptions(progress=False, fmt="cnmc"), classifier=_classifier())
    assert summary.out is None and summary.refused and summary.exit_code() == 1
    table = tmp_path / "submission.csv"
    assert summary.record == sidecar_path(table) and sidecar_path(table).is_file()
    assert not out.exists() and not sidecar_path(out).exists()
    assert json.loads(sidecar_path(table).read_text(encoding="utf-8"))["output"] == "submission.csv"


def test_output_checks_before_any_inference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cells(tmp_path / "in", 1)
    backend = FlakyBackend()
    folder = tmp_path / "taken"
    folder.mkdir()
    with pytest.raises(UsageError) as refused:
        predict(tmp_path / "in", model=tmp_path / "m.onnx", out=folder, options=QUIET,
                classifier=_classifier(backend=backend))
    assert str(refused.value) == f"--out {folder} is a folder; give a file name"
    # A folder the output cannot be created in: probed, and refused, before the engine runs.
    locked = tmp_path / "locked"
    locked.mkdir()
    real = tempfile.NamedTemporaryFile

    def probe(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == locked:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", probe)
    with pytest.raises(UsageError) as refused:
        predict(tmp_path / "in", model=tmp_path / "m.onnx", out=locked / "p.csv", options=QUIET,
                classifier=_classifier(backend=backend))
    assert str(refused.value) == f"cannot write {locked / 'p.csv'}: Read-only file system (choose another --out)"
    assert backend.calls == 0 and list(locked.iterdir()) == []


def test_missing_output_folders_are_made(tmp_path: Path) -> None:
    _cells(tmp_path / "in", 1)
    out = tmp_path / "a" / "b" / "p.csv"
    predict(tmp_path / "in", model=tmp_path / "m.onnx", out=out, options=QUIET, classifier=_classifier())
    assert [r["path"] for r in _rows(out)] == ["1.bmp"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["p.csv", "p.csv.provenance.json"]  # no probe left


def test_rows_that_cannot_be_written_are_rescued_under_a_unique_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cells(tmp_path / "in")
    out = tmp_path / "out" / "p.csv"
    out.parent.mkdir()
    rescue = tmp_path / "rescue"
    rescue.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(rescue))
    _read_only(monkeypatch, out.parent)
    with pytest.raises(OutputError) as failed:
        predict(tmp_path / "in", model=tmp_path / "m.onnx", out=out, options=QUIET, classifier=_classifier())
    (saved,) = rescue.iterdir()
    assert re.fullmatch(rf"edgeleuk-rescued-\d{{8}}-\d{{6}}-{os.getpid()}\.csv", saved.name)
    assert str(failed.value) == (
        f"cannot write {out}: Read-only file system; nothing half-written is left there; the 3 result(s) were "
        f"saved to {saved} instead (free space, then move it)"
    )
    assert [r["path"] for r in _rows(saved)] == ["1.bmp", "2.bmp", "3.bmp"]
    assert list(out.parent.iterdir()) == []


def test_when_the_rescue_fails_too_the_message_says_what_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cells(tmp_path / "in")
    out = tmp_path / "out" / "p.csv"
    out.parent.mkdir()
    rescue = tmp_path / "rescue"
    rescue.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(rescue))
    _read_only(monkeypatch, out.parent, rescue)
    with pytest.raises(OutputError) as failed:
        predict(tmp_path / "in", model=tmp_path / "m.onnx", out=out, options=QUIET, classifier=_classifier())
    assert str(failed.value) == (
        f"cannot write {out}: Read-only file system; nothing half-written is left there, and the 3 result(s) "
        f"could not be saved in {rescue} either (Read-only file system): free space or choose another --out "
        "and run again"
    )


def test_a_sidecar_that_cannot_be_written_fails_the_run_and_says_the_rows_are_safe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cells(tmp_path / "in")
    out = tmp_path / "p.csv"

    def full(written, record):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(predict_module, "write_record", full)
    with pytest.raises(OutputError) as failed:
        predict(tmp_path / "in", model=tmp_path / "m.onnx", out=out, options=QUIET, classifier=_classifier())
    assert str(failed.value) == (
        f"wrote {out}, but not its provenance record {sidecar_path(out)}: No space left on device; every row "
        "still names its model by id. Free space (or make the folder writable) and run again"
    )
    assert len(_rows(out)) == 3


def test_an_engine_fault_keeps_the_rows_made_before_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = _cells(tmp_path / "in", 5)
    _clock(monkeypatch)
    out = tmp_path / "p.csv"
    with pytest.raises(EngineFault) as fault:
        predict(tmp_path / "in", model=tmp_path / "m.onnx", out=out, options=QUIET,
                classifier=_classifier(lambda call: call == 2))
    partial = partial_path(out)
    assert str(fault.value).endswith(
        f"; stopped after classifying 2 of 5 file(s): their rows are in {partial} ({out} was not written). "
        "Check the engine (memory, device, model file) and run predict again"
    )
    assert "out of memory (call 2)" in str(fault.value)
    assert [r["path"] for r in _rows(partial)] == names[:2] and not out.exists()
    record = json.loads(sidecar_path(partial).read_text(encoding="utf-8"))
    assert record["output"] == "p.partial.csv"
    assert record["models"][STUB_ID]["first_seen_utc"] == "2026-12-02T07:00:10Z"


def test_a_fault_before_any_row_writes_nothing(tmp_path: Path) -> None:
    _cells(tmp_path / "in")
    out = tmp_path / "p.csv"
    with pytest.raises(EngineFault) as fault:
        predict(tmp_path / "in", model=tmp_path / "m.onnx", out=out, options=QUIET,
                classifier=_classifier(lambda call: True))
    assert str(fault.value).endswith(
        "; stopped after classifying 0 of 3 file(s); nothing was written. Check the engine (memory, device, "
        "model file) and run again"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_a_fault_with_an_unwritable_partial_file_rescues_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cells(tmp_path / "in", 5)
    out = tmp_path / "out" / "p.csv"
    out.parent.mkdir()
    rescue = tmp_path / "rescue"
    rescue.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(rescue))
    _read_only(monkeypatch, out.parent)
    with pytest.raises(OutputError) as failed:
        predict(tmp_path / "in", model=tmp_path / "m.onnx", out=out, options=QUIET,
                classifier=_classifier(lambda call: call == 2))
    (saved,) = rescue.iterdir()
    partial = partial_path(out)
    assert str(failed.value).endswith(
        f"; stopped after classifying 2 of 5 file(s); cannot write {partial}: Read-only file system; nothing "
        f"half-written is left there; the 2 result(s) were saved to {saved} instead (free space, then move it)"
    )
    assert isinstance(failed.value.__cause__, EngineFault)
    assert [r["path"] for r in _rows(saved)] == ["1.bmp", "2.bmp"]


def test_the_progress_bar_goes_to_stderr_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _cells(tmp_path / "in")
    predict(tmp_path / "in", model=tmp_path / "m.onnx", out=tmp_path / "a.csv", options=QUIET,
            classifier=_classifier())
    assert capsys.readouterr() == ("", "")
    predict(tmp_path / "in", model=tmp_path / "m.onnx", out=tmp_path / "b.csv", options=PredictOptions(),
            classifier=_classifier())
    shown = capsys.readouterr()
    assert shown.out == ""
    assert shown.err.startswith("classifying ") and " 3/3 " in shown.err


def test_the_summary_says_how_staged_tta_went(tmp_path: Path) -> None:
    class Noted(Classifier):
        tta_note = "staged TTA: 1 of 3 cells went on to all 8 rotations"

    _cells(tmp_path / "in")
    summary = predict(tmp_path / "in", model=tmp_path / "m.onnx", out=tmp_path / "p.csv", options=QUIET,
                      classifier=Noted(FlakyBackend(), batch_size=2, workers=1))
    assert summary.tta_note == Noted.tta_note and f"\n  {Noted.tta_note}\n" in summary.describe()


def test_each_prediction_passes_through_keep_before_it_is_kept(tmp_path: Path) -> None:
    """``keep`` (the heatmap writer: it writes the map, then drops it) sees every prediction, in order."""
    _cells(tmp_path, 3)
    records = index_inputs(tmp_path).records
    seen: list[Prediction] = []

    def keep(p: Prediction) -> Prediction:
        seen.append(p)
        return dataclasses.replace(p, subject="kept")

    results, fault = predict_module._classify(_classifier(), records, False, keep)
    assert fault is None and [p.path for p in seen] == [str(r.path) for r in records]
    assert [p for p, _ in results] == [dataclasses.replace(p, subject="kept") for p in seen]
    plain, _ = predict_module._classify(_classifier(), records, False)
    assert [p for p, _ in plain] == seen


# --- --qc, heatmaps and the trust note reach the rows and the summary ------------------------------


class _FlagsFirst(Classifier):
    """The quality checks flag the first file (blur); the rest pass."""

    def iter_predict(self, paths) -> Iterator[Prediction]:
        for k, p in enumerate(super().iter_predict(paths)):
            yield dataclasses.replace(p, qc=("blur",)) if k == 0 else p


def _labelled(folder: Path) -> None:
    """Three C-NMC training names: the true label is in each name."""
    for k, name in enumerate(("UID_1_1_1_all.bmp", "UID_1_2_1_all.bmp", "UID_H2_3_1_hem.bmp")):
        write_bmp(folder / name, gray_cell(60 + 50 * k, seed=k))


@pytest.mark.parametrize(("qc", "status", "label", "flag"), [
    ("strict", "flagged", False, "blur"),  # withheld: no label
    ("flag", "ok", True, "blur"),  # labelled, flagged
    ("off", "ok", True, ""),  # checks off: nothing flagged
])
def test_rows_are_judged_under_the_qc_mode(tmp_path: Path, qc: str, status: str, label: bool, flag: str) -> None:
    _labelled(tmp_path / "in")
    clf = _FlagsFirst(FlakyBackend(), batch_size=2, workers=1, qc=False)  # only the stand-in flags
    summary = predict(tmp_path / "in", model=tmp_path / "m.onnx", out=tmp_path / "p.csv",
                      options=dataclasses.replace(QUIET, qc=qc), classifier=clf)
    first = _rows(tmp_path / "p.csv")[0]
    assert (first["path"], first["status"], first["true_label"]) == ("UID_1_1_1_all.bmp", status, "all")
    assert (first["label"] != "") == label and first["qc"] == flag
    assert summary.qc == qc
    assert summary.flagged == (qc == "strict") and summary.rows[0].prediction.status == status


def test_rows_made_before_a_fault_are_judged_under_the_qc_mode_too(tmp_path: Path) -> None:
    _labelled(tmp_path / "in")
    clf = _FlagsFirst(FlakyBackend(lambda call: call == 2), batch_size=2, workers=1, qc=False)
    with pytest.raises(EngineFault):
        predict(tmp_path / "in", model=tmp_path / "m.onnx", out=tmp_path / "p.csv",
                options=dataclasses.replace(QUIET, qc="strict"), classifier=clf)
    kept = _rows(partial_path(tmp_path / "p.csv"))
    assert [(r["status"], r["label"] != "", r["true_label"]) for r in kept] == [("flagged", False, "all"),
                                                                             ("ok", True, "all")]


def test_a_cnmc_submission_under_qc_strict_is_refused_before_anything_runs(tmp_path: Path) -> None:
    _cells(tmp_path / "in", 2)
    for fmt, qc in (("cnmc", "strict"),):
        with pytest.raises(UsageError) as caught:
            predict(tmp_path / "in", model=tmp_path / "m.onnx", out=tmp_path / "p.csv",
                    options=dataclasses.replace(QUIET, fmt=fmt, qc=qc), classifier=_classifier())
        assert str(caught.value) == STRICT_CNMC
    assert not list(tmp_path.glob("p*"))
    for fmt, qc in (("cnmc", "flag"), ("csv", "strict")):  # either alone is fine
        assert predict(tmp_path / "in", model=tmp_path / "m.onnx", out=tmp_path / f"p.{fmt}",
                       options=dataclasses.replace(QUIET, fmt=fmt, qc=qc), classifier=_classifier()).exit_code() == 0


@pytest.mark.parametrize(("qc", "heatmaps", "asked"), [
    ("flag", None, {}), ("strict", None, {}), ("off", None, {"qc": False}),
    ("flag", Path("maps"), {"heatmaps": True}), ("off", Path("maps"), {"qc": False, "heatmaps": True}),
])
def test_the_classifier_is_opened_with_the_checks_the_options_ask(monkeypatch: pytest.MonkeyPatch, qc: str,
                                                                  heatmaps: Path | None, asked: dict) -> None:
    opened: list[dict] = []
    monkeypatch.setattr(predict_module.Classifier, "load", lambda *a, **kw: opened.append(kw))
    load_classifier(Path("m.onnx"), dataclasses.replace(QUIET, qc=qc, heatmaps=heatmaps))
    assert {k: opened[0][k] for k in ("qc", "heatmaps") if k in opened[0]} == asked


class _Sink:
    """Stands in for the heatmap writer: records what it was given and what it saw."""

    made: list[_Sink] = []

    def __init__(self, folder: Path, clf: Classifier, row_path) -> None:
        self.folder, self.clf, self.row_path, self.seen = folder, clf, row_path, []
        _Sink.made.append(self)

    def __call__(self, prediction: Prediction) -> Prediction:
        self.seen.append(prediction.path)
        return prediction

    def close(self) -> str:
        return f"heatmaps: {len(self.seen)} seen"


def test_heatmaps_go_to_the_folder_asked_and_the_summary_says_what_they_got(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cells(tmp_path / "in", 3)
    monkeypatch.setattr(predict_module, "HeatmapSink", _Sink)
    monkeypatch.setattr(_Sink, "made", [])
    clf = _classifier()
    summary = predict(tmp_path / "in", model=tmp_path / "m.onnx", out=tmp_path / "p.csv",
                      options=dataclasses.replace(QUIET, heatmaps=tmp_path / "maps"), classifier=clf)
    (sink,) = _Sink.made
    assert (sink.folder, sink.clf) == (tmp_path / "maps", clf) and sink.row_path(tmp_path / "in" / "2.bmp") == "2.bmp"
    assert [Path(p).name for p in sink.seen] == ["1.bmp", "2.bmp", "3.bmp"]
    assert summary.heatmaps == "heatmaps: 3 seen"
    plain = predict(tmp_path / "in", model=tmp_path / "m.onnx", out=tmp_path / "q.csv", options=QUIET,
                    classifier=_classifier())
    assert plain.heatmaps == "" and len(_Sink.made) == 1


class _Bare:
    """A classifier without ``trust_note`` (a cluster's classifier, say); ``extra`` sets attributes."""

    def __init__(self, clf: Classifier, **extra) -> None:
        self._clf = clf
        self.__dict__.update(extra)

    def __getattr__(self, name: str):
        if name == "trust_note":
            raise AttributeError(name)
        return getattr(self._clf, name)


@pytest.mark.parametrize(("extra", "note"), [
    ({}, ""), ({"trust_note": None}, ""), ({"trust_note": ""}, ""),
    ({"trust_note": "no OOD model in this file"}, "no OOD model in this file"),
])
def test_the_summary_carries_the_classifiers_trust_note(tmp_path: Path, extra: dict, note: str) -> None:
    _cells(tmp_path / "in", 1)
    summary = predict(tmp_path / "in", model=tmp_path / "m.onnx", out=tmp_path / "p.csv", options=QUIET,
                      classifier=_Bare(_classifier(), **extra))
    assert summary.trust_note == note


def test_the_positive_class_is_the_models_own_name(tmp_path: Path) -> None:
    _cells(tmp_path / "in", 3)
    meta = ModelMeta(arch="seresnext_tiny", recipe="flaky-test", class_names={0: "normal", 1: "blast"})
    summary = predict(tmp_path / "in", model=tmp_path / "m.onnx", out=tmp_path / "p.csv", options=QUIET,
                      classifier=_classifier(backend=FlakyBackend(meta=meta)))
    assert summary.positive == "blast" and summary.n_all == sum(r.prediction.label == "blast" for r in summary.rows)
    assert summary.n_all > 0

