"""Decode images on worker threads while the backend infers: batches arrive in input order.

OpenCV's decoders and both engines release the GIL, so plain threads overlap
disk, decoding and inference. At most ``(prefetch + 1) * batch_size`` decoded
images are held at a time, however long the file list.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from edgeleuk.io.imageheader import MAX_DECODE_BYTES
from edgeleuk.io.imageio import Decoded, decode_image

#: Memory the default decoder threads may hold at once, each decoding the worst file the
#: header checks let through (:data:`~edgeleuk.io.imageheader.MAX_DECODE_BYTES`): 1 GiB.
DECODE_MEMORY_BYTES = 1 << 30


def default_workers() -> int:
    """Decoder threads: one core left to the engine, and never more than :data:`DECODE_MEMORY_BYTES` allows.

    Two on any machine with three cores or more (one on two): a cell decodes in about a
    millisecond, far less than a forward pass, so more threads would add memory, not speed.
    """
    return max(1, min(DECODE_MEMORY_BYTES // MAX_DECODE_BYTES, (os.cpu_count() or 2) - 1))


def _decode(path: Path, size: int) -> Decoded:
    try:
        return decode_image(path, size)
    except Exception as exc:  # noqa: BLE001 - decode_image should not raise; if it does, keep the file
        return Decoded(image=None, adjustments=(), error=f"decoder crashed: {exc!r}")


def decoded_batches(
    paths: Iterable[Path],
    size: int,
    batch_size: int,
    *,
    workers: int | None = None,
    prefetch: int = 2,
) -> Iterator[list[tuple[Path, Decoded]]]:
    """Yield ``[(path, Decoded), ...]`` batches in the order of ``paths``.

    Args:
        paths: Image files; every one comes back exactly once, decoded or with an error.
        size: Input side the images are fitted to (the model's ``input_size``).
        batch_size: Files per yielded batch (the last may be shorter).
        workers: Decoder threads; None picks :func:`default_workers`.
        prefetch: Batches decoded ahead of the one being consumed.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    window = batch_size * (prefetch + 1)
    source = iter(paths)
    pending: deque[tuple[Path, Future[Decoded]]] = deque()
    with ThreadPoolExecutor(
        max_workers=workers or default_workers(), thread_name_prefix="edgeleuk-decode"
    ) as pool:

        def top_up() -> None:
            while len(pending) < window:
                path = next(source, None)
                if path is None:
                    return
                pending.append((Path(path), pool.submit(_decode, Path(path), size)))

        top_up()
        while pending:
            batch = []
            while pending and len(batch) < batch_size:
                path, future = pending.popleft()
                batch.append((path, future.result()))
            top_up()  # queue the next files before handing this batch to the engine
            yield batch
