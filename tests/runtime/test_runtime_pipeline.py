"""Decoding pipeline: order kept, every file once, bounded read-ahead, overlap with the consumer."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from runtime_support import gray_cell, write_bmp

from edgeleuk.io.imageio import Decoded
from edgeleuk.runtime import pipeline
from edgeleuk.runtime.pipeline import decoded_batches


def test_batches_keep_order_and_every_file(tmp_path: Path) -> None:
    paths = [write_bmp(tmp_path / f"{i}.bmp", gray_cell(i * 20, size=40)) for i in range(7)]
    paths.insert(3, tmp_path / "missing.bmp")
    batches = list(decoded_batches(paths, size=40, batch_size=3, workers=3))
    assert [len(b) for b in batches] == [3, 3, 2]
    flat = [item for b in batches for item in b]
    assert [p for p, _ in flat] == paths
    assert [d.ok for _, d in flat] == [True, True, True, False, True, True, True, True]


def test_read_ahead_is_bounded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    started: list[Path] = []
    lock = threading.Lock()

    def fake_decode(path: Path, size: int) -> Decoded:
        with lock:
            started.append(path)
        return Decoded(image=None, error="fake")

    monkeypatch.setattr(pipeline, "decode_image", fake_decode)
    paths = [tmp_path / f"{i}.bmp" for i in range(100)]
    batches = decoded_batches(paths, size=8, batch_size=4, workers=2, prefetch=2)
    first = next(batches)
    assert len(first) == 4
    # The first batch plus at most (prefetch + 1) batches queued behind it, never the whole list.
    assert len(started) <= 4 * 4
    assert sum(len(b) for b in batches) == 96


def test_a_crashing_decoder_gives_an_error_not_a_lost_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def boom(path: Path, size: int) -> Decoded:
        raise MemoryError("out of memory")

    monkeypatch.setattr(pipeline, "decode_image", boom)
    [(path, decoded)] = next(decoded_batches([tmp_path / "a.bmp"], size=8, batch_size=2))
    assert path.name == "a.bmp" and not decoded.ok and "decoder crashed" in decoded.error


@pytest.mark.parametrize("cores", [1, 2, 3, 8, 64, 256])
def test_default_decoder_threads_keep_the_worst_decodes_within_the_memory_bound(
    monkeypatch: pytest.MonkeyPatch, cores: int
) -> None:
    from edgeleuk.io.imageheader import MAX_DECODE_BYTES

    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: cores)
    workers = pipeline.default_workers()
    assert 1 <= workers <= max(1, cores - 1)
    assert workers * MAX_DECODE_BYTES <= pipeline.DECODE_MEMORY_BYTES == 1 << 30
