"""The ``cells`` command: cut the white cells of smear fields into C-NMC-form crops (no model run)."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeleuk.cli.base import app, exit_codes
from edgeleuk.core.errors import UsageError

UM_HELP = ("The fields' micrometres per pixel (default: a TIFF's resolution tags, else the median red-cell "
           "diameter, about 7.5 um).")


def model_scale(model: Path | None, model_um_per_px: float | None):
    """(model um per px, stain reference) from ``--model-um-per-px`` or the model file's metadata.

    Raises:
        UsageError: Neither given, or the model states no scale and no flag gives one.
    """
    stain = None
    if model is not None:
        from edgeleuk.io.modelfile import read_model_meta  # lazy: reads onnx/openvino metadata

        meta, _ = read_model_meta(model)
        stain = meta.stain_reference
        if model_um_per_px is None:
            model_um_per_px = meta.um_per_px
            if model_um_per_px is None:
                raise UsageError(f"{model} does not state the scale of its training cells (made before it was "
                                 "recorded, or trained on data of unstated scale): give --model-um-per-px")
    if model_um_per_px is None:
        raise UsageError("give --model (its metadata states its scale) or --model-um-per-px")
    return model_um_per_px, stain


@app.command()
def cells(
    inputs: list[Path] = typer.Argument(..., metavar="FIELDS", help="Field images, folders and patterns."),
    out: Path = typer.Option(..., "--out", help="Folder (created) for the crops, cells.csv and overlays/."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Model file: its scale and stain reference."),
    um_per_px: float | None = typer.Option(None, "--um-per-px", help=UM_HELP),
    model_um_per_px: float | None = typer.Option(
        None, "--model-um-per-px", help="The model's training cells' micrometres per pixel (default: --model's)."
    ),
    overlays: bool = typer.Option(False, help="Also write one overlay PNG per field into OUT/overlays."),
    recursive: bool = typer.Option(False, help="Descend into the sub-folders of folder inputs."),
    strict: bool = typer.Option(False, help="Exit 1 if any field failed."),
) -> None:
    """Find the white cells in smear fields and cut each to the C-NMC form (450x450, black outside the cell).

    Red cells, platelets, debris and cells cut by the field's edge are counted, not cut. A bad or
    hostile field gets an error row in OUT/cells.csv; the others go on.
    """
    from edgeleuk.fields.batch import cut_fields  # lazy: OpenCV work only when the command runs
    from edgeleuk.workflow.inputs import index_inputs

    with exit_codes():
        model_um, stain = model_scale(model, model_um_per_px)
        found = index_inputs(inputs, recursive=recursive)
        paths = [r.path for r in found.records]
        summary = cut_fields(paths, [found.row_path(p) for p in paths], out, um_per_px=um_per_px,
                             model_um_per_px=model_um, stain=stain, overlays=overlays)
    typer.echo(summary.describe(out))
    raise typer.Exit(1 if strict and summary.failed else 0)
