"""Load test of ``edgeleuk serve`` facing a hostile network, on loopback: the figures of docs/serving.md.

    python benchmarks/serve_load.py --work /tmp/edgeleuk-load      # needs the ray extra

Starts ``edgeleuk serve`` (its own process: local Ray, 1 replica, 1 engine thread) with a bearer
token and TLS (a throwaway self-signed certificate) on 127.0.0.1, then at the same time:

* 8 authenticated clients x 200 requests, one SYNTHETIC cell each, every answer compared with
  local ``Classifier.predict_arrays`` (|dprob| <= 1e-5, same label);
* 50 slow-body connections: each declares a 1000-byte body and sends a byte a second (the
  server cuts them off with 408 after --body-timeout; they reconnect until the clients finish);
* 5 clients without the token, calling as fast as they can (all must get 401);

while sampling the peak RSS of that server's Serve replica and proxy processes (psutil). The model is
the brightness model of ``tests/runtime_support.py`` unless --model is given. Prints one JSON
record (and writes it to --json); exits 1 if any check failed. No test asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def _wait_ready(url: str, token: str, ca: Path, proc: subprocess.Popen) -> None:
    from edgeleuk.runtime.httpclient import ServerClient

    client = ServerClient(url, timeout=5, retries=0, token=token, ca_file=str(ca))
    for _ in range(240):
        if proc.poll() is not None:
            raise SystemExit(f"edgeleuk serve exited with {proc.returncode}")
        try:
            if client.request("/healthz").status == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit("edgeleuk serve did not become ready in 240 s")


def main() -> None:
    """Start the server, run the load, stop the server, print and write the JSON record."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgeleuk-load"))
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--port", type=int, default=18766)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--slow", type=int, default=50)
    parser.add_argument("--unauth", type=int, default=5)
    parser.add_argument("--body-timeout", type=float, default=15.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    from load_support import run_load
    from runtime_support import build_onnx, gray_cell
    from tls_support import self_signed

    from edgeleuk.runtime.classifier import Classifier

    model = args.model or build_onnx(args.work / "model.onnx")
    cert, key = self_signed(args.work)
    token = "load-test-" + os.urandom(16).hex()
    (args.work / "token").write_text(token + "\n")
    (args.work / "token").chmod(0o600)
    cells = [gray_cell(level, seed=i) for i, level in enumerate(range(20, 240, 11))]
    local = Classifier.load(model, "cpu", threads=1).predict_arrays(__import__("numpy").stack(cells))
    want = [(p.prob_all, p.label) for p in local]

    url = f"https://127.0.0.1:{args.port}"
    cmd = [sys.executable, "-m", "edgeleuk", "serve", "-m", str(model), "--backend", "cpu", "--port", str(args.port),
           "--token-file", str(args.work / "token"), "--tls-cert", str(cert), "--tls-key", str(key),
           "--body-timeout", str(args.body_timeout)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ready(url, token, cert, proc)
        result = run_load(url, token, cert, cells, want, clients=args.clients, requests=args.requests,
                          slow=args.slow, unauth=args.unauth, ray_root=proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    record = {"cpus": os.cpu_count(), "load": os.getloadavg(), "clients": args.clients, "requests": args.requests,
              "slow": args.slow, "unauth": args.unauth, **result.to_dict()}
    total = args.clients * args.requests
    ok = (result.answered == total and not result.wrong and set(result.unauth_statuses) == {401})
    record["passed"] = ok
    text = json.dumps(record, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
