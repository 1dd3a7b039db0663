"""The commands that serve a model: serve (Ray Serve) and serving-repo (Triton and OVMS repositories)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from edgeleuk.cli.base import MODEL_FLAG, BackendChoice, app, backend_flags, exit_codes, one_path


@app.command()
@backend_flags
def serve(
    model_arg: Path | None = typer.Argument(
        None, metavar="MODEL", show_default=False, help="Deprecated: use --model/-m."
    ),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="Exported model (.onnx or OpenVINO .xml) on this machine."
    ),
    backend: BackendChoice = typer.Option(BackendChoice.auto, help="Inference backend of every replica."),
    replicas: int | None = typer.Option(
        None, min=1, help="Model replicas (processes, each with its engine); default: as many as the nodes hold."
    ),
    threads: int | None = typer.Option(
        None, min=1, help="Engine threads (and reserved CPUs) per replica; default: the smallest node's CPUs, "
                          "at most 4."
    ),
    gpus: float = typer.Option(
        0.0, min=0.0, help="GPUs reserved per replica (fractions share one); 0: one for a GPU backend, else none."
    ),
    max_batch: int = typer.Option(8, min=1, help="Most images per engine call (server-side batching)."),
    batch_wait_ms: float = typer.Option(5.0, min=0.0, help="How long a request waits for a batch to fill."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 accepts other machines."),
    port: int = typer.Option(8000, min=1, max=65535, help="HTTP port."),
    address: str | None = typer.Option(None, help="Ray cluster to join (default: running one, else local)."),
    token_file: Path | None = typer.Option(
        None, help="File with the bearer token every request must carry (default: $EDGELEUK_TOKEN if set)."
    ),
    tls_cert: Path | None = typer.Option(None, help="PEM certificate (chain) for HTTPS, with --tls-key."),
    tls_key: Path | None = typer.Option(None, help="PEM private key of --tls-cert."),
    insecure: bool = typer.Option(False, help="Allow a non-loopback --host without a token."),
    body_timeout: float = typer.Option(15.0, min=0.1, help="Seconds a request body may take to arrive (then 408)."),
    decoders: int = typer.Option(2, min=1, help="Image files each replica decodes at once (bounds memory)."),
    heatmaps: bool = typer.Option(
        False, help="Compute class activation maps, so POST /predict?heatmap=1 answers with overlays (base64 PNG)."
    ),
    engine_fields: dict[str, Any] | None = None,
) -> None:
    """Serve the model over HTTP(S) with Ray Serve (GET /healthz, GET /metadata, POST /predict) until Ctrl-C.

    Facing a network: --token-file (or EDGELEUK_TOKEN) and --tls-cert/--tls-key; a non-loopback
    --host without a token is refused unless --insecure. Every answer says whether to trust each
    call (qc, ood_score); with --heatmaps, POST /predict?heatmap=1 adds each cell's overlay.
    """
    from edgeleuk.runtime.wire import load_token
    from edgeleuk.serving.front import Limits, token_digest
    from edgeleuk.serving.server import ServeOptions, serve_forever  # lazy: the server side (asyncio, Ray Serve)

    with exit_codes():
        path = one_path(model, model_arg, MODEL_FLAG, "MODEL")
        opts = ServeOptions(
            backend=backend.value, replicas=replicas, threads=threads, gpus=gpus, max_batch=max_batch,
            batch_wait_ms=batch_wait_ms, host=host, port=port, address=address,
            engine_fields=dict(engine_fields or {}), token_sha256=token_digest(load_token(token_file, "--token-file")),
            tls_cert=None if tls_cert is None else str(tls_cert), tls_key=None if tls_key is None else str(tls_key),
            insecure=insecure, limits=Limits(body_timeout_s=body_timeout, decoders=decoders), heatmaps=heatmaps,
        )
        serve_forever(path, opts, echo=typer.echo)


@app.command("serving-repo")
def serving_repo(
    out: Path = typer.Argument(..., help="Folder (new) for the repositories: triton/ and ovms/."),
    model: list[Path] = typer.Option(
        [], "--model", "-m",
        help="Exported model, repeatable; each goes to its format's repository (.onnx: Triton, .xml: OVMS).",
    ),
    onnx: Path | None = typer.Option(None, hidden=True, help="Deprecated: use --model."),
    ir: Path | None = typer.Option(None, hidden=True, help="Deprecated: use --model."),
    name: str = typer.Option("edgeleuk", help="Model name in both repositories."),
    max_batch: int = typer.Option(8, min=1, help="Triton max_batch_size (dynamic batching up to it)."),
    gpu: bool | None = typer.Option(None, help="Triton instances on GPU (default: only for an fp16 export)."),
    tensorrt: bool = typer.Option(False, help="Triton: ONNX Runtime's TensorRT accelerator (GPU)."),
) -> None:
    """Write Triton Inference Server and/or OpenVINO Model Server model repositories."""
    from edgeleuk.serving.repository import RepoOptions, write_serving_repos

    with exit_codes():
        opts = RepoOptions(name=name, max_batch=max_batch, gpu=gpu, tensorrt=tensorrt)
        models = [*model, *(p for p in (onnx, ir) if p is not None)]
        if onnx or ir:
            typer.echo("note: --onnx and --ir are deprecated; use --model (each model goes to its format's "
                       "repository)", err=True)
        result = write_serving_repos(out, models, options=opts)
    typer.echo(result.describe())
