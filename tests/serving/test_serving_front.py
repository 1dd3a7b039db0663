"""A replica's front door without Ray: the token, bounded bodies and decode slots, over real HTTP on loopback.

:class:`Front` and :class:`ModelService` are served by uvicorn (what Ray Serve's proxy runs on)
in a thread; raw sockets play slow, chunked, oversized and unauthenticated clients. Every
server and socket here is closed by the test; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from runtime_support import build_onnx, gray_cell

from edgeleuk.runtime import wire
from edgeleuk.serving.front import Front, Limits, token_digest
from edgeleuk.serving.server import ModelService

uvicorn = pytest.importorskip("uvicorn", reason="uvicorn comes with the ray extra")
TOKEN = "front-door-token-0123456789"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_onnx(tmp_path_factory.mktemp("front") / "m.onnx")


@contextlib.contextmanager
def front_server(service, limits, token=TOKEN):
    """Serve ``Front(service)`` with uvicorn on a free loopback port; yields ``(host, port)`` (``.front`` set)."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    front = Front(service, token_digest(token), limits)

    async def infer(image):
        return (await asyncio.to_thread(service.infer, [image]))[0]

    async def app(scope, receive, send):
        status, payload, headers = await front.handle(Request(scope, receive), infer)
        await JSONResponse(payload, status, headers)(scope, receive, send)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="error", timeout_keep_alive=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(600):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "the front did not start within 30 s"
    front_server.front = front
    try:
        yield sock.getsockname()
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def send(addr, head: str, body: bytes = b"") -> socket.socket:
    """Open a connection and send a request head (and any body); the caller reads and closes."""
    conn = socket.create_connection(addr, timeout=20)
    conn.sendall(head.encode() + b"\r\n" + body)
    return conn


def answer(conn: socket.socket) -> tuple[int, dict, str]:
    """Read one response: status, JSON body, raw head. Closes the connection."""
    data = b""
    with conn:
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"{}"), head.decode()


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def request(addr, method, path, body=b"", ctype=wire.NPY_TYPE, auth=AUTH):
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}"
    if method == "POST":
        head += f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
    return answer(send(addr, head, body))


def test_every_route_wants_the_token_and_says_nothing_else(model):
    service = ModelService(str(model), "cpu", 1)
    with front_server(service, Limits()) as addr:
        auths = ("", "Authorization: Bearer wrong-token-0123456789\r\n", f"Authorization: Basic {TOKEN}\r\n",
                 f"Authorization: {TOKEN}\r\n")
        refused = [request(addr, m, p, auth=a) for a in auths
                   for m, p in (("GET", wire.METADATA), ("GET", "/nowhere"), ("POST", wire.PREDICT))]
        ok = request(addr, "GET", wire.METADATA)
    assert {status for status, _, _ in refused} == {401}
    assert len({json.dumps(body) for _, body, _ in refused}) == 1  # alike: no route or model shows through
    assert all("www-authenticate: bearer" in head.lower() for _, _, head in refused)
    assert "model" not in refused[0][1] and "sha256" not in json.dumps(refused[0][1])
    assert ok[0] == 200 and ok[1]["sha256"] == wire.model_sha256(model)


def test_a_chunked_body_is_411_and_an_oversized_one_413_before_any_byte_is_read(model):
    service = ModelService(str(model), "cpu", 1)
    with front_server(service, Limits()) as addr:
        post = f"POST {wire.PREDICT} HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: {wire.NPY_TYPE}\r\n"
        chunked = answer(send(addr, post + "Transfer-Encoding: chunked\r\n", b"10\r\n" + b"x" * 16 + b"\r\n"))
        huge = answer(send(addr, post + f"Content-Length: {300 * 1024 * 1024}\r\n", b"x" * 1024))
    assert chunked[0] == 411 and "Content-Length" in chunked[1]["error"]
    assert huge[0] == 413 and str(wire.MAX_BODY) in huge[1]["error"]


def test_slow_bodies_get_408_and_block_neither_health_nor_predict(model):
    service = ModelService(str(model), "cpu", 1)
    cell = wire.encode_tensor(gray_cell(200)[None])
    # 5 s: the good request's 600 KB body must arrive in time while 70 slow senders hold connections.
    with front_server(service, Limits(body_timeout_s=5.0)) as addr:
        slow = [send(addr, f"POST {wire.PREDICT} HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: {wire.NPY_TYPE}\r\n"
                           "Content-Length: 1000\r\n", b"x") for _ in range(70)]
        health = request(addr, "GET", wire.HEALTH)
        predicted = request(addr, "POST", wire.PREDICT, cell)
        cut = [answer(conn) for conn in slow]
    assert health[0] == 200 and predicted[0] == 200 and predicted[1]["predictions"][0]["label"] == "all"
    assert {status for status, _, _ in cut} == {408} and "1 of 1000 bytes" in cut[0][1]["error"]


def test_bodies_in_flight_stay_within_the_budget(model):
    service = ModelService(str(model), "cpu", 1)
    # The hog holds the budget until its body times out: 6 s leaves room to ask while it does.
    with front_server(service, Limits(body_timeout_s=6.0, body_budget=wire.MAX_BODY)) as addr:
        hog = send(addr, f"POST {wire.PREDICT} HTTP/1.1\r\nHost: x\r\n{AUTH}Content-Type: {wire.NPY_TYPE}\r\n"
                         f"Content-Length: {wire.MAX_BODY}\r\n", b"x" * 1024)
        for _ in range(100):  # until the hog holds the budget
            if front_server.front.buffered:
                break
            time.sleep(0.05)
        assert front_server.front.buffered, "the hog's body never reached the front"
        busy = request(addr, "POST", wire.PREDICT, wire.encode_tensor(gray_cell(90)[None]))
        assert answer(hog)[0] == 408
        after = request(addr, "POST", wire.PREDICT, wire.encode_tensor(gray_cell(90)[None]))
    assert busy[0] == 503 and "retry-after: 1" in busy[2].lower()
    assert after[0] == 200  # the budget is given back


def test_a_replica_decodes_at_most_its_slots_at_once(model):
    service = ModelService(str(model), "cpu", 1, decoders=1)
    decode, now, peak, lock = service.decode, [0], [0], threading.Lock()

    def counted(body):
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        try:
            time.sleep(0.2)  # hold the slot long enough for the others to queue
            return decode(body)
        finally:
            with lock:
                now[0] -= 1

    service.decode = counted
    png = cv2.imencode(".png", np.full((300, 300), 200, np.uint16))[1].tobytes()
    with front_server(service, Limits(decoders=1)) as addr, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: request(addr, "POST", wire.PREDICT, png, "image/png"), range(6)))
    assert [a[0] for a in answers] == [200] * 6
    assert peak[0] == 1


def test_the_query_string_reaches_the_service(model):
    service = ModelService(str(model), "cpu", 1)  # started without heatmaps
    cell = wire.encode_tensor(gray_cell(200)[None])
    with front_server(service, Limits()) as addr:
        asked = request(addr, "POST", f"{wire.PREDICT}?{wire.HEATMAP_QUERY}=1", cell)
        plain = request(addr, "POST", wire.PREDICT, cell)
    assert asked[0] == 400 and "serve --heatmaps" in asked[1]["error"]
    record = plain[1]["predictions"][0]
    assert plain[0] == 200 and isinstance(record["qc"], list) and "heatmap" not in record
