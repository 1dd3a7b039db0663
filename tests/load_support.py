"""Load on an ``edgeleuk serve`` URL: authenticated clients, slow-body senders and callers without the token.

Used by ``benchmarks/serve_load.py`` (the full run) and a smaller slow test. Every thread stops
by itself: the authenticated clients after their requests, the others when those are done (a
shared event), every socket with a timeout.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from edgeleuk.runtime import wire
from edgeleuk.runtime.httpclient import ServerClient


@dataclass
class LoadResult:
    """What the load saw."""

    answered: int = 0
    wrong: list[str] = field(default_factory=list)
    auth_statuses: Counter = field(default_factory=Counter)
    unauth_statuses: Counter = field(default_factory=Counter)
    slow_statuses: Counter = field(default_factory=Counter)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {"answered": self.answered, "wrong": self.wrong[:10], "auth_statuses": dict(self.auth_statuses),
                "unauth_statuses": dict(self.unauth_statuses), "slow_statuses": dict(self.slow_statuses),
                "peak_rss_mb": self.peak_rss_mb, "wall_s": round(self.wall_s, 1)}


def _connect(url: str, ca: Path | None) -> socket.socket:
    parts = urlparse(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    if parts.scheme == "https":
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        sock = ctx.wrap_socket(sock, server_hostname=parts.hostname)
    return sock


def _status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return 0  # closed without an answer
        data += chunk
    return int(data.split()[1])


def _slow_sender(url: str, token: str, ca: Path | None, stop: threading.Event, out: Counter,
                 lock: threading.Lock) -> None:
    """Declare a 1000-byte body and send a byte a second, again and again until ``stop``."""
    for _ in range(10_000):
        if stop.is_set():
            return
        try:
            with _connect(url, ca) as sock:
                sock.sendall(f"POST {wire.PREDICT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                             f"Content-Type: {wire.NPY_TYPE}\r\nContent-Length: 1000\r\n\r\n".encode())
                sock.settimeout(1.0)
                status = 0
                for _ in range(999):
                    if stop.is_set():
                        break
                    sock.sendall(b"x")
                    try:
                        status = _status(sock)
                        break
                    except TimeoutError:
                        continue
        except OSError:
            status = -1
        with lock:
            out[status] += 1


def _rss_sampler(root: int, stop: threading.Event, peak: dict[str, float]) -> None:
    """Peak resident memory of the Serve replica and proxy processes under process ``root``, every 0.1 s.

    Only ``root``'s descendants: other Ray clusters on the same machine are not counted.
    """
    import psutil

    procs: dict[int, tuple[str, psutil.Process]] = {}
    for tick in range(10**7):
        if stop.wait(0.1):
            return
        if tick % 20 == 0:  # look for (new) replica and proxy processes every 2 s
            for proc in psutil.Process(root).children(recursive=True):
                try:
                    line = " ".join(proc.cmdline())
                except psutil.Error:
                    continue
                kind = "replica" if "ServeReplica" in line else "proxy" if "ProxyActor" in line else None
                if kind:
                    procs.setdefault(proc.pid, (kind, proc))
        for kind, proc in list(procs.values()):
            try:
                peak[kind] = max(peak.get(kind, 0.0), proc.memory_info().rss / 2**20)
            except psutil.Error:
                procs.pop(proc.pid, None)


def run_load(url: str, token: str, ca: Path | None, cells: list[np.ndarray], want: list[tuple[float, str]], *,
             clients: int = 8, requests: int = 200, slow: int = 50, unauth: int = 5,
             ray_root: int | None = None) -> LoadResult:
    """Authenticated predictions checked against ``want`` while slow senders and callers without the token press.

    ``clients`` threads send ``requests`` cells each and compare every answer with ``want``
    (prob, label per cell); ``slow`` slow-body senders and ``unauth`` callers without the token
    keep at it until they finish. ``ray_root``: the process whose Ray the server runs in (for
    the memory figures; default this one).
    """
    result, lock, stop = LoadResult(), threading.Lock(), threading.Event()
    good = ServerClient(url, timeout=120, token=token, ca_file=None if ca is None else str(ca))
    bad = ServerClient(url, timeout=60, retries=0, ca_file=None if ca is None else str(ca))
    body = wire.encode_tensor(cells[0][None])

    def authenticated(k: int) -> None:
        for i in range(requests):
            n = (k * requests + i) % len(cells)
            answer = good.predict_tensor(cells[n][None])
            with lock:
                result.auth_statuses[answer.status] += 1
            if answer.status != 200:
                continue
            (got,) = answer.payload["predictions"]
            prob, label = want[n]
            with lock:
                result.answered += 1
                if abs(got["prob_all"] - prob) > 1e-5 or got["label"] != label:
                    result.wrong.append(f"cell {n}: {got['prob_all']} {got['label']} != {prob} {label}")

    def unauthenticated() -> None:
        while not stop.is_set():
            status = bad.request(wire.PREDICT, body, wire.NPY_TYPE).status
            with lock:
                result.unauth_statuses[status] += 1

    root = os.getpid() if ray_root is None else ray_root
    threads = [threading.Thread(target=_rss_sampler, args=(root, stop, result.peak_rss_mb), daemon=True)]
    threads += [threading.Thread(target=_slow_sender, args=(url, token, ca, stop, result.slow_statuses, lock),
                                 daemon=True) for _ in range(slow)]
    threads += [threading.Thread(target=unauthenticated, daemon=True) for _ in range(unauth)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    try:
        with ThreadPoolExecutor(max_workers=clients) as pool:
            list(pool.map(authenticated, range(clients)))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    result.wall_s = time.perf_counter() - start
    return result
