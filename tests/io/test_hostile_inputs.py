"""Hostile input files for ``predict``, ``watch`` and ``report``: odd names, formula names, bombs.

The acceptance test runs ``predict``, ``watch`` and a restarted ``watch``
on one folder in a subprocess of its own and reads that process's peak memory.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
import zlib
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from runtime_support import build_onnx, gray_cell, write_bmp
from typer.testing import CliRunner
from workflow_support import cell_bytes

from edgeleuk.cli import app
from edgeleuk.core.errors import UsageError
from edgeleuk.io.csvcells import plain_cell, text_to_name
from edgeleuk.workflow.csvlog import CsvLog
from edgeleuk.workflow.predict import PredictOptions, predict
from edgeleuk.workflow.report import build_page, write_report
from edgeleuk.workflow.report_data import OUTSIDE
from edgeleuk.workflow.watch import COLUMNS, watch_folder

LATIN1 = b"Zelle_caf\xe9.bmp"  # "Zelle_café.bmp" written by a Latin-1 client on an SMB share
FORMULAS = ['=HYPERLINK("x").bmp', "@SUM(1).bmp"]
MAX_PEAK_MB = 600


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_onnx(tmp_path_factory.mktemp("hostile-model") / "tiny.onnx")


@cache
def png_bomb(side: int = 20000) -> bytes:
    """A valid 8-bit gray PNG of ``side x side`` zeros: 400 MB decoded, ~400 KB on disk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    packer, rows = zlib.compressobj(6), b"\0" * ((side + 1) * 500)
    idat = b"".join(packer.compress(rows) for _ in range(side // 500)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _latin1_path(folder: Path) -> Path:
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + LATIN1))


def _write_raw(path: Path, data: bytes) -> None:
    fd = os.open(os.fsencode(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def hostile_folder(folder: Path) -> dict[str, str]:
    """The hostile folder: ok.bmp, a Latin-1 name, a 20000x20000 PNG, two formula names.

    Returns: exact name -> expected status.
    """
    folder.mkdir(parents=True, exist_ok=True)
    write_bmp(folder / "ok.bmp", gray_cell(200))
    _write_raw(_latin1_path(folder), cell_bytes(60))
    (folder / "bomb.png").write_bytes(png_bomb())
    for k, name in enumerate(FORMULAS):
        write_bmp(folder / name, gray_cell(100 + 40 * k, seed=k))
    return {"ok.bmp": "ok", os.fsdecode(LATIN1): "ok", "bomb.png": "error", **dict.fromkeys(FORMULAS, "ok")}


def _read_rows(path: Path) -> list[dict[str, str]]:
    """Rows as a spreadsheet-unaware reader sees them; the file must be strict UTF-8."""
    text = path.read_bytes().decode("utf-8")  # raises if any cell is not valid UTF-8
    return list(csv.DictReader(io.StringIO(text, newline="")))


def _check_rows(rows: list[dict[str, str]], expected: dict[str, str]) -> None:
    exact = [text_to_name(plain_cell(r["path"])) for r in rows]
    assert sorted(exact) == sorted(expected)  # one row per file, names exact
    by_name = dict(zip(exact, rows, strict=True))
    for name, status in expected.items():
        assert by_name[name]["status"] == status, by_name[name]
    assert by_name["bomb.png"]["error"] == "image too large (20000 x 20000)"
    assert by_name[os.fsdecode(LATIN1)]["path"] == "Zelle_caf\\xe9.bmp"
    for name in FORMULAS:  # what a spreadsheet sees is text, not a formula
        assert by_name[name]["path"] == "'" + name
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), row


RUN = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from edgeleuk.workflow.predict import PredictOptions, predict
    from edgeleuk.workflow.watch import watch_folder

    folder, model, out = (Path(a) for a in sys.argv[1:4])
    s = predict(folder, model, out / "predict.csv", PredictOptions(backend="cpu", progress=False))
    print("predict", s.total, s.ok, s.failed)
    for session in ("watch", "restart"):
        w = watch_folder(folder, model, out / "watch.csv", backend="cpu", interval=0.05,
                         max_idle=1.0, give_up_s=0.2)
        print(session, w.resumed, w.written)
    # VmHWM: the peak of this process's own memory since exec. (ru_maxrss would also count
    # the parent's memory at fork time: Linux keeps the larger of the two across exec.)
    status = Path("/proc/self/status")
    lines = status.read_text().splitlines() if status.exists() else []
    hwm = [line.split()[1] for line in lines if line.startswith("VmHWM:")]
    print("peak_kb", hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def test_done_when_predict_and_watch_write_one_row_each_within_memory(model: Path, tmp_path: Path) -> None:
    """One row per file, nothing added on restart, peak memory of the run under 600 MB."""
    expected = hostile_folder(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    # Without the OpenCV cap edgeleuk's import sets in this process: the child sets its own.
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    proc = subprocess.run(
        [sys.executable, "-c", RUN, str(tmp_path / "in"), str(model), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert lines["predict"] == "5 4 1"
    assert lines["watch"] == "0 5"  # nothing resumed, five rows written
    assert lines["restart"] == "5 0"  # five resumed, none added
    for name in ("predict.csv", "watch.csv"):
        _check_rows(_read_rows(out / name), expected)
    peak_mb = int(lines["peak_kb"]) / 1024
    assert peak_mb < MAX_PEAK_MB, f"peak memory {peak_mb:.0f} MB"


def test_predict_cli_prints_a_latin1_name_it_could_not_read(model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_bmp(folder / "ok.bmp", gray_cell(200))
    _write_raw(_latin1_path(folder), b"not an image")
    args = ["predict", str(folder), "--model", str(model), "--out", str(tmp_path / "p.csv")]
    result = CliRunner().invoke(app, [*args, "--backend", "cpu"])
    assert result.exit_code == 0, result.output
    assert "Zelle_caf\\xe9.bmp: not a readable image" in result.stdout


def test_jsonl_names_are_valid_utf8_and_exact(model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _write_raw(_latin1_path(folder), cell_bytes(60))
    out = tmp_path / "p.jsonl"
    predict(folder, model, out, PredictOptions(backend="cpu", progress=False, fmt="jsonl"))
    (row,) = [json.loads(line) for line in out.read_bytes().decode("utf-8").splitlines()]
    assert row["path"] == "Zelle_caf\\xe9.bmp" and row["status"] == "ok"
    assert os.fsencode(text_to_name(row["path"])) == LATIN1


def test_watch_resumes_names_exactly_after_a_restart(model: Path, tmp_path: Path) -> None:
    from edgeleuk.runtime.classifier import Classifier

    clf = Classifier.load(model, backend="cpu")
    folder, out = tmp_path / "in", tmp_path / "p.csv"
    folder.mkdir()
    names = ["'quoted.bmp", "-minus.bmp", "back\\slash.bmp", "tab\tinside.bmp"]
    for name in names:
        write_bmp(folder / name, gray_cell(120))
    _write_raw(_latin1_path(folder), cell_bytes(60))
    first = watch_folder(folder, classifier=clf, out=out, interval=0.05, max_idle=0.5)
    assert first.written == 5
    second = watch_folder(folder, classifier=clf, out=out, interval=0.05, max_idle=0.3)
    assert (second.resumed, second.written) == (5, 0)
    with CsvLog(out, COLUMNS) as log:
        assert sorted(text_to_name(r["path"]) for r in log.rows) == sorted([*names, os.fsdecode(LATIN1)])


def test_gif_in_the_folder_gets_an_explained_error_row(model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_bmp(folder / "ok.bmp", gray_cell(200))
    (folder / "cell.gif").write_bytes(b"GIF89a" + b"\0" * 20)
    (folder / "notes.txt").write_text("not named like an image: not an input")
    summary = predict(folder, model, tmp_path / "p.csv", PredictOptions(backend="cpu", progress=False))
    rows = {r["path"]: r for r in _read_rows(tmp_path / "p.csv")}
    assert sorted(rows) == ["cell.gif", "ok.bmp"] and summary.failed == 1
    assert rows["cell.gif"]["error"].startswith("unsupported image format .gif")


def test_refused_cnmc_submission_still_writes_the_csv(model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "final"
    for n in (1, 2):
        write_bmp(folder / f"{n}.bmp", gray_cell(200))
    (folder / "3.bmp").write_bytes(b"")
    out = tmp_path / "submission.zip"
    summary = predict(folder, model, out, PredictOptions(backend="cpu", progress=False, fmt="cnmc"))
    assert summary.exit_code() == 1 and not out.exists()
    rows = {r["path"]: r for r in _read_rows(tmp_path / "submission.csv")}
    assert rows["3.bmp"]["error"] == "empty file (0 bytes)" and rows["1.bmp"]["status"] == "ok"
    assert str(tmp_path / "submission.csv") in summary.describe()


def test_report_reads_hostile_names_exactly_and_inlines_them(model: Path, tmp_path: Path) -> None:
    expected = hostile_folder(tmp_path / "in")
    csv_path = tmp_path / "p.csv"
    predict(tmp_path / "in", model, csv_path, PredictOptions(backend="cpu", progress=False))
    page = build_page(csv_path, images=tmp_path / "in", n_thumbs=10)
    assert sorted(r.path for r in page.rows) == sorted(expected)
    assert len(page.confident) + len(page.borderline) >= 4
    assert all(card.uri for card in page.confident + page.borderline)  # every image found and inlined
    html = write_report(csv_path, tmp_path / "r.html", images=tmp_path / "in").read_bytes().decode("utf-8")
    assert "Zelle_caf\\xe9.bmp" in html and "image too large (20000 x 20000)" in html


def test_report_refuses_paths_outside_the_images_folder(tmp_path: Path) -> None:
    outside = write_bmp(tmp_path / "private" / "secret.bmp", gray_cell(230, seed=9))
    images = tmp_path / "images"
    write_bmp(images / "inside.bmp", gray_cell(250))
    csv_path = tmp_path / "p.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "status", "error", "prob_all", "label", "subject", "adjustment"])
        w.writerow([str(outside), "ok", "", "0.99", "all", "", ""])
        w.writerow(["../private/secret.bmp", "ok", "", "0.98", "all", "", ""])
        w.writerow(["inside.bmp", "ok", "", "0.97", "all", "", ""])
    page = build_page(csv_path, images=images)
    by_path = {r.path: r for r in page.rows}
    assert by_path[str(outside)].error == OUTSIDE and by_path["../private/secret.bmp"].error == OUTSIDE
    assert [c.row.path for c in page.confident] == ["inside.bmp"] and page.confident[0].uri
    html = write_report(csv_path, tmp_path / "r.html", images=images).read_text(encoding="utf-8")
    from edgeleuk.workflow.report_html import thumbnail_uri

    assert thumbnail_uri(outside) not in html and page.confident[0].uri in html


def test_report_thumbnail_of_a_bomb_is_refused_without_decoding(tmp_path: Path) -> None:
    from edgeleuk.workflow.report_html import thumbnail_uri

    (tmp_path / "bomb.png").write_bytes(png_bomb())
    assert thumbnail_uri(tmp_path / "bomb.png") is None


def test_csvlog_trims_a_row_torn_inside_a_quoted_field(tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    with CsvLog(out, ["path", "status"]) as log:
        log.append({"path": "a.bmp", "status": "ok"})
    # A crash while writing a row whose name holds a newline: the file ends inside the quotes.
    with open(out, "a", encoding="utf-8", newline="") as fh:
        fh.write('"line\nbre')
    with CsvLog(out, ["path", "status"]) as log:
        assert log.trimmed_bytes == len('"line\nbre') and [r["path"] for r in log.rows] == ["a.bmp"]
        log.append({"path": "line\nbreak.bmp", "status": "ok"})
        log.append({"path": "c.bmp", "status": "ok"})
    with CsvLog(out, ["path", "status"]) as log:
        assert log.trimmed_bytes == 0
        assert [r["path"] for r in log.rows] == ["a.bmp", "line\nbreak.bmp", "c.bmp"]


def test_csvlog_never_trims_a_file_that_is_not_its_own(tmp_path: Path) -> None:
    out = tmp_path / "notes.csv"
    out.write_bytes(b'a,b\n1,"open quote\n')
    with pytest.raises(UsageError, match=r"columns .*; choose another --out \(it is not a predictions file this "
                       r"command can continue\)$"):
        CsvLog(out, ["path", "status"]).__enter__()
    assert out.read_bytes() == b'a,b\n1,"open quote\n'


def test_a_big_plain_image_is_still_classified(model: Path, tmp_path: Path) -> None:
    """The bounds refuse bombs, not ordinary large images: 2000x2000 16-bit gray is cropped."""
    folder = tmp_path / "in"
    folder.mkdir()
    import cv2

    assert cv2.imwrite(str(folder / "big.png"), np.full((2000, 2000), 50000, np.uint16))
    summary = predict(folder, model, tmp_path / "p.csv", PredictOptions(backend="cpu", progress=False))
    (row,) = summary.rows
    assert row.prediction.ok
    assert row.prediction.adjustments == ("scaled:16bit", "converted:gray", "cropped:2000x2000->450x450")


def test_watch_gives_a_gif_one_explained_error_row(model: Path, tmp_path: Path) -> None:
    from edgeleuk.runtime.classifier import Classifier

    folder, out = tmp_path / "in", tmp_path / "p.csv"
    write_bmp(folder / "ok.bmp", gray_cell(200))
    (folder / "cell.gif").write_bytes(b"GIF89a" + b"\0" * 20)
    clf = Classifier.load(model, backend="cpu")
    summary = watch_folder(folder, classifier=clf, out=out, interval=0.05, max_idle=0.5, give_up_s=0.1)
    rows = {r["path"]: r for r in _read_rows(out)}
    assert sorted(rows) == ["cell.gif", "ok.bmp"] and (summary.classified, summary.failed) == (1, 1)
    assert rows["cell.gif"]["error"].startswith("unsupported image format .gif")
