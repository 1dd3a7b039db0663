"""The newcomer path end to end at toy scale: synth -> train -> export fp32 + INT8 -> predict -> bench -> report."""

import csv

import pytest

from edgeleuk.core.errors import UsageError
from edgeleuk.demo import MARKER, run_demo


@pytest.mark.slow
def test_fast_demo_runs_every_stage(tmp_path, capsys):
    out = tmp_path / "demo"
    res = run_demo(out, fast=True)
    printed = " ".join(capsys.readouterr().out.split())
    for name in ("checkpoint", "onnx", "int8", "card", "predictions", "bench", "report"):
        assert res.artefacts[name].is_file(), name
    assert (out / "model-int8.bin").is_file()
    rows = list(csv.DictReader(res.artefacts["predictions"].open()))
    final_images = list((out / "data").rglob("final*/*.bmp")) or [
        p for p in (out / "data").rglob("*.bmp") if "final" in str(p.parent)]
    assert len(rows) == len(final_images) > 0
    assert all(r["status"] == "ok" for r in rows)
    bench = res.artefacts["bench"].read_text()
    assert "SYNTHETIC" in bench and "torch" in bench and "openvino" in bench
    assert "SYNTHETIC" in res.artefacts["report"].read_text().upper()
    assert len(res.seconds) == 6
    # its model is a smoke model trained on synthetic cells: the output, the card and the report say so
    assert "SMOKE MODEL: made with the smoke recipe" in printed and "TRAINED ON SYNTHETIC CELLS" in printed
    card = res.artefacts["card"].read_text()
    assert card.index("TRAINED ON SYNTHETIC CELLS") < card.index("SMOKE MODEL") < card.index("Not calibrated")
    assert "| epochs | 1 |" in card and "| recipe | smoke |" in card and "| seed | 0 |" in card
    assert "SMOKE MODEL" in (out / "model.card.html").read_text()
    report = res.artefacts["report"].read_text()
    assert "Model card summary" in report and "SMOKE MODEL" in report


def test_demo_refuses_to_wipe_a_foreign_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not a previous demo folder"):
        run_demo(tmp_path, fast=True)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert not (tmp_path / MARKER).exists()
