"""The ``card`` command: a model card (Markdown or HTML) from a model file's metadata."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from edgeleuk.cli.base import MODEL_HELP, app, exit_codes


class CardFormat(str, Enum):
    """What ``card --format`` writes."""

    md = "md"
    html = "html"


@app.command()
def card(
    model: Path = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    fmt: CardFormat = typer.Option(CardFormat.md, "--format", help="md (Markdown) or html (one self-contained page)."),
    out: Path | None = typer.Option(
        None, help="File: the card to write (default: <model>.card.md or .card.html beside the model)."
    ),
) -> None:
    """Write a model card: intended use, data, export gates, calibration with intervals, limitations, versions."""
    from edgeleuk.workflow.card import write_card

    with exit_codes():
        path, made = write_card(model, out=out, fmt=fmt.value)
    typer.echo(f"{made.limitations[0]}\nwrote {path}")
