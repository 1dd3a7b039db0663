"""The commands that need the training extra (torch): train, sweep, compare, import-checkpoint, export, demo."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeleuk.cli.base import app, exit_codes, needs_train, one_path
from edgeleuk.cluster import DEFAULT_STALL_S, ClusterOptions
from edgeleuk.core.config import DEFAULT_EXPORT_OUT
from edgeleuk.core.errors import UsageError


@app.command()
def train(
    data: Path = typer.Argument(..., help="C-NMC data root (public release or the paper's layout)."),
    recipe: str = typer.Option("paper", help="Recipe: a packaged name (see `edgeleuk recipes`) or a TOML file."),
    out: Path = typer.Option(..., help="Folder for the run (checkpoints, metrics.jsonl, plots)."),
    seed: int | None = typer.Option(None, help="Seed; overrides the recipe's."),
    pretrained: str | None = typer.Option(None, help="'imagenet' or a local state-dict file."),
    resume: bool = typer.Option(False, help="Continue an interrupted run in OUT."),
) -> None:
    """Train the classifier with a recipe (the paper's by default)."""
    with exit_codes(), needs_train("train"):
        from edgeleuk.training.loop import train as train_run  # lazy: torch

        result = train_run(data, recipe=recipe, out=out, seed=seed, pretrained=pretrained, resume=resume)
    typer.echo(result.describe())


@app.command()
def sweep(
    data: Path = typer.Argument(..., help="C-NMC data root."),
    recipe: str = typer.Option("paper", help="Recipe: a packaged name (see `edgeleuk recipes`) or a TOML file."),
    seeds: int = typer.Option(24, help="Number of seeds (0..N-1)."),
    out: Path = typer.Option(..., help="Folder for the sweep; each seed in OUT/seed-N."),
    pretrained: str | None = typer.Option(None, help="'imagenet' or a local state-dict file."),
    cluster: str | None = typer.Option(
        None, help="Run one Ray task per seed: 'auto' (running cluster, else local Ray) or an address."
    ),
    cluster_timeout: float = typer.Option(
        DEFAULT_STALL_S, help="With --cluster: seconds a seed may go without a heartbeat before the sweep stops."
    ),
) -> None:
    """Train one run per seed and write the paper's Table 2 (Markdown + JSON)."""
    with exit_codes(), needs_train("sweep"):
        if cluster:
            from edgeleuk.cluster.sweep import cluster_sweep  # lazy: torch, ray

            table = cluster_sweep(data, recipe=recipe, seeds=seeds, out=out, pretrained=pretrained, address=cluster,
                                  cluster=ClusterOptions(stall_s=cluster_timeout))
        else:
            from edgeleuk.training.sweep import run_sweep  # lazy: torch

            table = run_sweep(data, recipe=recipe, seeds=seeds, out=out, pretrained=pretrained)
    typer.echo(table.to_markdown())


@app.command()
def compare(
    sweeps: list[Path] = typer.Argument(..., help="Sweep folders to compare."),
    out: Path = typer.Option(Path("compare"), help="Folder for the figure and the test results."),
) -> None:
    """Compare sweeps: mean +- std curves (Figure 4) and one-sided Mann-Whitney U tests."""
    with exit_codes(), needs_train("compare"):
        from edgeleuk.training.compare import compare_sweeps  # lazy: scipy, matplotlib

        report = compare_sweeps(sweeps, out=out)
    typer.echo(report.to_markdown())


@app.command("import-checkpoint")
def import_checkpoint(
    src: Path = typer.Argument(..., help="The paper's model.pt (DataParallel state dict)."),
    out: Path = typer.Argument(..., help="File: the edgeleuk checkpoint to write."),
) -> None:
    """Convert the paper's published model.pt into an edgeleuk checkpoint."""
    with exit_codes(), needs_train("import-checkpoint"):
        from edgeleuk.modeling.checkpoint import import_paper_checkpoint  # lazy: torch

        ckpt = import_paper_checkpoint(src, out)
    typer.echo(f"wrote {out} ({ckpt.meta.arch}, {len(ckpt.state_dict)} tensors)")


@app.command()
def export(
    ckpt_arg: Path | None = typer.Argument(
        None, metavar="CKPT", show_default=False, help="Deprecated: use --checkpoint."
    ),
    checkpoint: Path | None = typer.Option(None, help="edgeleuk checkpoint (.pt) to export."),
    out: Path = typer.Option(
        Path(DEFAULT_EXPORT_OUT), help="File to write: .onnx (or .xml for an OpenVINO IR profile)."
    ),
    profile: str = typer.Option("cpu-fp32", help="Profile: a packaged name (see `edgeleuk profiles`) or a TOML file."),
    data: Path | None = typer.Option(None, help="Real images for the parity gate and INT8 calibration."),
    calib: Path | None = typer.Option(None, hidden=True, help="Deprecated: use --data."),
) -> None:
    """Export one ONNX graph with preprocessing and rotation TTA folded in, through the parity gate."""
    with exit_codes():
        ckpt = one_path(checkpoint, ckpt_arg, "--checkpoint", "CKPT")
        if calib is not None:
            if data is not None:
                raise UsageError("give the images once: --data (--calib is its deprecated name)")
            typer.echo("note: --calib is deprecated; use --data", err=True)
            data = calib
        with needs_train("export"):
            from edgeleuk.exporting import export_model  # lazy: torch, onnx, openvino

            result = export_model(ckpt, out=out, profile=profile, data=data)
    typer.echo(result.describe())


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-run"), help="Folder for every demo artefact."),
    fast: bool = typer.Option(False, help="Tiny scale (smoke recipe, few cells): a minute, not minutes."),
) -> None:
    """Synthesise data, train, export (fp32 + INT8), predict and bench: the whole pipeline."""
    with exit_codes(), needs_train("demo"):
        from edgeleuk.demo import run_demo  # lazy: torch (the whole pipeline)

        run_demo(out, fast=fast)
