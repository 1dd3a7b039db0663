"""The ``remote`` client against fake servers on loopback: it trusts only its own model file.

No Ray: :mod:`fake_server` answers like ``edgeleuk serve`` and each test makes it lie in one way.
A lie about the model or its metadata is refused before any image (exit 2); a bad answer is an
engine fault (exit 1, ``.partial.csv`` kept), never a row.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
from fake_server import Fake, honest_metadata, raw_server, serving
from runtime_support import build_onnx, gray_cell, write_bmp
from typer.testing import CliRunner

from edgeleuk.cli import app
from edgeleuk.core.errors import UsageError
from edgeleuk.core.meta import ModelMeta
from edgeleuk.runtime import wire
from edgeleuk.runtime.classifier import Classifier
from edgeleuk.runtime.remote import RemoteFault, ServerClient

runner = CliRunner()
TOKEN = "t0ken-for-tests-0123456789"
LEVELS = (40, 90, 170, 220)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_onnx(tmp_path_factory.mktemp("remote-model") / "model.onnx")


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote-cells")
    for i, level in enumerate(LEVELS):
        write_bmp(root / f"cell_{i}.bmp", gray_cell(level, seed=i))
    return root


def predict(cells, model, url, out, *extra):
    return runner.invoke(app, ["predict", str(cells), "-m", str(model), "--backend", "remote", "--server", url,
                               "--out", str(out), "--batch", "1", "--server-timeout", "10", *extra])


def rows(path):
    return list(csv.DictReader(path.open()))


def test_an_honest_server_gives_local_labels_and_names_model_and_engine(model, cells, tmp_path):
    with serving(Fake(honest_metadata(model))) as url:
        result = predict(cells, model, url, tmp_path / "out.csv")
        clf = Classifier.load(model, "remote", server=url)
    assert result.exit_code == 0, result.output
    assert [r["label"] for r in rows(tmp_path / "out.csv")] == ["hem", "hem", "all", "all"]
    details = clf.info.details
    assert details["server_model"] == wire.model_id(wire.model_sha256(model)) and details["server_engine"] == "cpu-fp32"


def test_labels_threshold_and_classes_come_from_the_local_file(model, cells, tmp_path):
    # The server's own label field lies (every cell "all"): the rows still follow the local file.
    def lying(i, honest):
        return {**honest, "predictions": [{**p, "label": "all", "threshold": 0.01} for p in honest["predictions"]]}

    with serving(Fake(honest_metadata(model), answer=lying)) as url:
        result = predict(cells, model, url, tmp_path / "out.csv")
    assert result.exit_code == 0, result.output
    assert [r["label"] for r in rows(tmp_path / "out.csv")] == ["hem", "hem", "all", "all"]
    assert "at threshold 0.5" in result.output


@pytest.mark.parametrize(
    ("lie", "message"),
    [
        ({"threshold": 0.01}, "threshold"),
        ({"class_names": {"0": "all", "1": "hem"}}, "class_names"),
        ({"meta_sha256": {"edgeleuk.meta": "0" * 64}}, "meta_sha256"),
        ({"input_size": 224}, "input_size"),
    ],
)
def test_a_server_whose_metadata_differs_from_the_local_file_is_refused(model, cells, tmp_path, lie, message):
    # Right SHA-256, other metadata: before, the client labelled with the server's class names
    # and threshold (rows "0.900000,hem at threshold 0.01").
    with serving(Fake({**honest_metadata(model), **lie})) as url:
        result = predict(cells, model, url, tmp_path / "out.csv")
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out.csv").exists()


def test_another_model_with_the_same_file_name_is_refused_by_sha256(model, cells, tmp_path):
    other = build_onnx(tmp_path / "model.onnx", ModelMeta(threshold=0.5, recipe="another"))
    assert other.name == model.name
    with serving(Fake(honest_metadata(other))) as url:
        result = predict(cells, model, url, tmp_path / "out.csv")
    assert result.exit_code == 2 and "not model.onnx (sha256" in result.output
    assert not (tmp_path / "out.csv").exists()


def test_a_model_change_mid_run_stops_with_the_rows_made_before(model, cells, tmp_path):
    other = wire.model_sha256(build_onnx(tmp_path / "other.onnx", ModelMeta(recipe="other")))

    def redeployed(i, honest):
        return honest if i <= 2 else {**honest, "model": wire.model_id(other), "sha256": other}

    with serving(Fake(honest_metadata(model), answer=redeployed)) as url:
        result = predict(cells, model, url, tmp_path / "out.csv")
    assert result.exit_code == 1 and "redeployed" in result.output, result.output
    assert not (tmp_path / "out.csv").exists()
    assert len(rows(tmp_path / "out.partial.csv")) == 2  # the two cells answered by the checked model


def _first(change):
    def answer(i, honest):
        return {**honest, "predictions": [{**honest["predictions"][0], **change}]}
    return answer


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prob_all": 7.5, "logit": 50.0}, "outside [0, 1]"),
        ({"prob_all": 0.9}, "sigmoid"),
        ({"logit": math.nan, "prob_all": math.nan}, "not finite"),
        ({"logit": "3.0"}, "field 'logit' is str"),
        ({"prob_all": True}, "field 'prob_all' is bool"),
        ({"status": "error"}, "not an ok prediction"),
    ],
)
def test_a_bad_answer_is_an_engine_fault_never_a_row(model, cells, tmp_path, change, message):
    with serving(Fake(honest_metadata(model), answer=_first(change))) as url:
        result = predict(cells, model, url, tmp_path / "out.csv")
    assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "out.partial.csv").exists()  # no row at all


def test_wrong_number_of_answers_is_an_engine_fault(model, cells, tmp_path):
    with serving(Fake(honest_metadata(model), answer=lambda i, h: {**h, "predictions": h["predictions"] * 2})) as url:
        result = predict(cells, model, url, tmp_path / "out.csv")
    assert result.exit_code == 1 and "2 answers for 1 images" in result.output


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b"<html>not json</html>", "not a JSON object"), (b"[1, 2]", "not a JSON object"),
     (b"[" * 100_000 + b"]" * 100_000, "not a JSON object"), (json.dumps({"sha256": 5}).encode(), "field")],
)
def test_non_json_or_wrong_typed_metadata_is_a_clear_error(model, cells, tmp_path, raw, message):
    with serving(Fake(honest_metadata(model), raw_metadata=raw)) as url:
        result = predict(cells, model, url, tmp_path / "out.csv")
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_redirects_are_not_followed(model, cells, tmp_path):
    honest = Fake(honest_metadata(model))
    with serving(honest) as target, serving(Fake(honest_metadata(model), redirect=target + wire.METADATA)) as url:
        result = predict(cells, model, url, tmp_path / "out.csv")
    assert result.exit_code == 2 and "answered 302" in result.output
    assert honest.seen == []  # the client never went where it was sent


def test_the_token_is_sent_and_a_missing_one_is_named(model, cells, tmp_path, monkeypatch):
    monkeypatch.delenv(wire.TOKEN_ENV, raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    fake = Fake(honest_metadata(model), token=TOKEN)
    with serving(fake) as url:
        missing = predict(cells, model, url, tmp_path / "a.csv")
        given = predict(cells, model, url, tmp_path / "b.csv", "--server-token-file", str(token_file))
        monkeypatch.setenv(wire.TOKEN_ENV, TOKEN)
        from_env = predict(cells, model, url, tmp_path / "c.csv")
    assert missing.exit_code == 2 and "answered 401" in missing.output and "--server-token-file" in missing.output
    assert given.exit_code == 0 and from_env.exit_code == 0, given.output + from_env.output
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in fake.seen[1:])


def test_short_tokens_are_refused(tmp_path):
    (tmp_path / "t").write_text("short")
    with pytest.raises(UsageError, match="at least 16"):
        wire.load_token(tmp_path / "t", "--server-token-file")


def test_https_certificate_is_verified_with_the_given_ca(model, cells, tmp_path):
    from tls_support import self_signed

    cert, key = self_signed(tmp_path)
    with serving(Fake(honest_metadata(model)), tls=(cert, key)) as url:
        assert url.startswith("https://")
        unverified = predict(cells, model, url, tmp_path / "a.csv")
        verified = predict(cells, model, url, tmp_path / "b.csv", "--server-ca", str(cert))
    assert unverified.exit_code == 2 and "CERTIFICATE_VERIFY_FAILED" in unverified.output
    assert verified.exit_code == 0, verified.output


def test_an_endless_answer_is_capped(model):
    def endless(conn):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"error\": \"")
        for _ in range(256):  # 16 MiB at most, sixteen times the cap
            conn.send(b"x" * 65536)

    with raw_server(endless) as (url, sent):
        with pytest.raises(RemoteFault, match="over 1048576 bytes"):
            ServerClient(url, timeout=20, retries=0).request(wire.METADATA)
    assert sent and sent[0] < 256 * 65536  # the client hung up instead of reading on


def test_one_deadline_per_request_not_per_read(model):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n"

    def drip(conn):
        conn.send(head)
        conn.drip(b'{"error": "' + b"x" * 27 + b'"}', 0.3)  # 40 bytes over 12 s: each read well within 1 s

    with raw_server(drip) as (url, sent):
        with pytest.raises(TimeoutError, match="longer than 1 s"):
            ServerClient(url, timeout=1.0, retries=0).request(wire.METADATA)
    assert sent and sent[0] < len(head) + 40  # cut off mid-answer, not read to the end
