"""Draw SYNTHETIC smear fields (a microscope camera's frames) with their ground truth.

A field at a known scale (micrometres per pixel): red cells with a pale centre (7.5 um
across, some touching), platelets (1.5-3 um), now and then a smudge of debris, and a few
white cells of both classes drawn by :mod:`edgeleuk.synth.cells` at the C-NMC scale
(:data:`~edgeleuk.core.optics.SYNTH_UM_PER_PX`) and resampled to the field's, among them a
touching pair and one cut by the field's edge. The colours are drawn white-balanced, then
the whole frame takes a lamp tint (which white balance must undo). Pictures, not blood.

Layout written (``edgeleuk synth OUT --fields N``)::

    OUT/SYNTHETIC.txt                    what this is, and the parameters
    OUT/fields/field_0001.png            the field, RGB
    OUT/truth/field_0001.mask.png        16-bit instance mask: 0 background, k = object k of the JSON
    OUT/truth/field_0001.json            scale, size, and every object (id, kind, label, edge_cut, pair,
                                         centre, diameter_um, crop)
    OUT/cells/field_0001_<id>_<all|hem>.png   each white cell as drawn, C-NMC form (the original crop)

``OUT/fields`` holds only the fields, so it can be given as is to ``cells`` or ``predict --fields``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgeleuk.core.errors import UsageError
from edgeleuk.core.optics import RED_CELL_DIAMETER_UM, SYNTH_UM_PER_PX
from edgeleuk.io.atomic import atomic_path, atomic_write_text
from edgeleuk.io.files import SYNTHETIC_MARKER
from edgeleuk.synth.cells import render_cell, sample_looks, subject_stain

#: The field scale drawn by default: a 100x oil objective on a common camera.
FIELD_UM_PER_PX = 0.08
FIELD_SIZE = (2048, 1536)
RED_RGB, PALLOR_RGB = (225.0, 140.0, 142.0), (242.0, 206.0, 206.0)
PLATELET_RGB = (160.0, 108.0, 186.0)
DEBRIS_RGB = (186.0, 166.0, 206.0)  # a pale bluish smudge without a nucleus
RED_COVER = 0.34  # share of the field the red cells cover


@dataclass
class _Canvas:
    rgb: np.ndarray  # float32 [H, W, 3], white-balanced colours on white
    ids: np.ndarray  # int32 [H, W], object ids (0 background)
    objects: list[dict]

    def paint(self, x0: int, y0: int, colour: np.ndarray, alpha: np.ndarray, kind: str, **extra) -> int:
        """Composite ``colour`` ([h, w, 3]) with ``alpha`` ([h, w]) at (x0, y0), clipped; returns the id."""
        h, w = self.ids.shape
        oid = len(self.objects) + 1
        ah, aw = alpha.shape
        cx0, cy0 = max(0, -x0), max(0, -y0)
        cx1, cy1 = min(aw, w - x0), min(ah, h - y0)
        if cx1 <= cx0 or cy1 <= cy0:
            return 0
        a = alpha[cy0:cy1, cx0:cx1, None]
        region = (slice(y0 + cy0, y0 + cy1), slice(x0 + cx0, x0 + cx1))
        self.rgb[region] = a * colour[cy0:cy1, cx0:cx1] + (1 - a) * self.rgb[region]
        self.ids[region][a[..., 0] >= 0.5] = oid
        self.objects.append({"id": oid, "kind": kind, **extra})
        return oid


def _disk_alpha(radius: float, pad: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A soft disk's alpha in a box, and each pixel's distance from the centre."""
    n = int(math.ceil(radius)) + pad
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1].astype(np.float32)
    d = np.sqrt(yy * yy + xx * xx)
    return np.clip(radius - d + 0.5, 0.0, 1.0), d


def _white_cell(rng: np.random.Generator, stain, scale: float) -> dict:
    """One white cell: its C-NMC crop, label, and colour, alpha and radius at the field's scale."""
    is_all = bool(rng.random() < 0.5)
    looks = sample_looks(rng, is_all, stain)
    crop = render_cell(rng, looks, stain, flaws=False)
    mask = (crop.max(axis=2) > 0).astype(np.float32)
    size = max(8, int(round(crop.shape[0] * scale)))
    cover = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)
    # The crop's edge pixels are blended with its black: unmix the colour, and a 1-px softer edge.
    colour = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    colour = np.clip(colour / np.maximum(cover, 1e-3)[..., None], 0, 255)
    alpha = np.clip((cover - 0.5) * 2.0, 0.0, 1.0)
    radius = math.sqrt(float((alpha >= 0.5).sum()) / math.pi)
    return {"crop": crop, "label": "all" if is_all else "hem", "colour": colour, "alpha": alpha, "r": radius}


def _edge_centre(rng: np.random.Generator, r: float, w: int, h: int) -> tuple[float, float]:
    """A centre near one of the four edges, so that part of the cell lies outside the field."""
    depth = rng.uniform(-0.3, 0.5) * r
    side = int(rng.integers(4))
    if side < 2:
        return (depth if side == 0 else w - depth), rng.uniform(2 * r, h - 2 * r)
    return rng.uniform(2 * r, w - 2 * r), (depth if side == 2 else h - depth)


def _place_white_cells(rng, canvas: _Canvas, um: float, n: int, pair: bool, edge: bool,
                       crops: dict[int, np.ndarray]) -> list[tuple[float, float, float]]:
    """Put ``n`` single white cells, maybe a touching pair and a cut one; returns (x, y, r) of each."""
    h, w = canvas.ids.shape
    stain = subject_stain(rng)
    gap = 3.0 / um  # at least 3 um between white cells that are not a pair
    placed: list[tuple[float, float, float]] = []
    for what in ["single"] * n + ["pair"] * pair + ["edge"] * edge:
        cells = [_white_cell(rng, stain, SYNTH_UM_PER_PX / um) for _ in range(2 if what == "pair" else 1)]
        r0 = cells[0]["r"]
        for _ in range(200):
            if what == "edge":
                x, y = _edge_centre(rng, r0, w, h)
            else:
                x, y = rng.uniform(r0 * 1.6, w - r0 * 1.6), rng.uniform(r0 * 1.6, h - r0 * 1.6)
            centres = [(x, y, r0)]
            if what == "pair":  # touching: centres one radius sum apart, give or take a few percent
                ang, r1 = rng.uniform(0, 2 * math.pi), cells[1]["r"]
                dist = (r0 + r1) * rng.uniform(0.98, 1.03)
                centres.append((x + dist * math.cos(ang), y + dist * math.sin(ang), r1))
            inside = what == "edge" or all(1.2 * r < cx < w - 1.2 * r and 1.2 * r < cy < h - 1.2 * r
                                           for cx, cy, r in centres)
            if inside and all(math.hypot(cx - px, cy - py) > cr + pr + gap
                              for cx, cy, cr in centres for px, py, pr in placed):
                break
        else:
            continue  # no room left in this field
        pair_id = len(canvas.objects) + 1 if what == "pair" else None
        for cell, (cx, cy, r) in zip(cells, centres, strict=True):
            s = cell["alpha"].shape[0]
            oid = canvas.paint(int(round(cx - s / 2)), int(round(cy - s / 2)), cell["colour"], cell["alpha"],
                               "white_cell", label=cell["label"], edge_cut=what == "edge", pair=pair_id,
                               centre=[round(cx, 1), round(cy, 1)], diameter_um=round(2 * r * um, 2))
            if oid:
                crops[oid] = cell["crop"]
            placed.append((cx, cy, r))
    return placed


def _free(x: float, y: float, r: float, placed: list[tuple[float, float, float]], overlap: float) -> bool:
    return all(math.hypot(x - px, y - py) >= (r + pr) * overlap for px, py, pr in placed)


def _place_red_cells(rng, canvas: _Canvas, um: float, whites: list[tuple[float, float, float]]) -> None:
    h, w = canvas.ids.shape
    target = RED_COVER * h * w / (math.pi * (RED_CELL_DIAMETER_UM / 2 / um) ** 2)
    reds: list[tuple[float, float, float]] = []
    misses = 0
    while len(reds) < target and misses < 40:
        # The size is drawn first and kept while a place is sought: rejecting sizes would favour small cells.
        r = rng.normal(RED_CELL_DIAMETER_UM, 0.4) / 2 / um
        for _ in range(40):
            x, y = rng.uniform(-r / 2, w + r / 2), rng.uniform(-r / 2, h + r / 2)
            # Red cells may touch each other (a few overlap slightly), never a white cell.
            if _free(x, y, r, whites, 1.05) and _free(x, y, r, reds, 0.9 if rng.random() < 0.2 else 1.02):
                break
        else:
            misses += 1
            continue
        alpha, d = _disk_alpha(r)
        jitter = rng.normal(0.0, 4.0, 3).astype(np.float32)
        pallor = np.clip((0.45 * r - d) / (0.2 * r), 0.0, 1.0)[..., None]  # a soft pale centre
        colour = (1 - pallor) * (np.asarray(RED_RGB, np.float32) + jitter) + pallor * np.asarray(PALLOR_RGB)
        n = alpha.shape[0] // 2
        canvas.paint(int(round(x)) - n, int(round(y)) - n, colour, alpha, "red_cell",
                     centre=[round(x, 1), round(y, 1)], diameter_um=round(2 * r * um, 2))
        reds.append((x, y, r))


def _place_small(rng, canvas: _Canvas, um: float, whites: list[tuple[float, float, float]]) -> None:
    """Platelets (1.5-3 um, granular) and now and then a smudge of debris (no nucleus)."""
    h, w = canvas.ids.shape
    for kind, count in (("platelet", int(rng.integers(4, 16))), ("debris", int(rng.random() < 0.4))):
        for _ in range(count):
            diam = rng.uniform(1.5, 3.0) if kind == "platelet" else rng.uniform(6.0, 9.0)
            r = diam / 2 / um
            for _ in range(50):
                x, y = rng.uniform(r + 2, w - r - 2), rng.uniform(r + 2, h - r - 2)
                if _free(x, y, r, whites, 1.1) and canvas.ids[int(y), int(x)] == 0:
                    break
            else:
                continue
            alpha, _ = _disk_alpha(r)
            if kind == "debris":  # irregular: a blurred blob of noise
                noise = cv2.GaussianBlur(rng.random(alpha.shape).astype(np.float32), (0, 0), r / 4)
                alpha = alpha * (noise > np.median(noise)).astype(np.float32)
            base = np.asarray(PLATELET_RGB if kind == "platelet" else DEBRIS_RGB, np.float32)
            colour = base * (1 + 0.08 * rng.standard_normal((*alpha.shape, 1)).astype(np.float32))
            n = alpha.shape[0] // 2
            canvas.paint(int(round(x)) - n, int(round(y)) - n, colour, alpha, kind,
                         centre=[round(x, 1), round(y, 1)], diameter_um=round(diam, 2))
            whites.append((x, y, r))


def draw_field(rng: np.random.Generator, *, size: tuple[int, int] = FIELD_SIZE, um_per_px: float = FIELD_UM_PER_PX,
               white_cells: int | None = None, pair: bool | None = None,
               edge: bool | None = None) -> tuple[np.ndarray, np.ndarray, list[dict], dict[int, np.ndarray]]:
    """Draw one SYNTHETIC field.

    Args:
        rng: Random generator (the same state draws the same field).
        size: (width, height) in pixels.
        um_per_px: The field's scale.
        white_cells: Single white cells (default 1-4); a touching pair and a cut cell come on top.
        pair: Add a touching pair (default: half the fields).
        edge: Add a white cell cut by the edge (default: half the fields).

    Returns:
        (RGB uint8 field, int32 instance ids, objects, original C-NMC crop of each white cell by id).
    """
    w, h = size
    canvas = _Canvas(np.full((h, w, 3), 255.0, np.float32), np.zeros((h, w), np.int32), [])
    crops: dict[int, np.ndarray] = {}
    n = int(rng.integers(1, 5)) if white_cells is None else white_cells
    pair = bool(rng.random() < 0.5) if pair is None else pair
    edge = bool(rng.random() < 0.5) if edge is None else edge
    whites = _place_white_cells(rng, canvas, um_per_px, n, pair, edge, crops)
    _place_small(rng, canvas, um_per_px, whites)
    _place_red_cells(rng, canvas, um_per_px, whites)
    lamp = np.clip(rng.normal([0.93, 0.95, 0.88], 0.03), 0.75, 1.0).astype(np.float32)  # the lamp's tint
    img = canvas.rgb * lamp * np.float32(rng.uniform(0.9, 1.0))
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(2.0)
    return np.rint(np.clip(img, 0, 255)).astype(np.uint8), canvas.ids, canvas.objects, crops


@dataclass(frozen=True)
class FieldsSummary:
    """What :func:`make_fields` wrote."""

    out: Path
    seed: int
    fields: int
    white_cells: dict[str, int]  # "all", "hem", "edge_cut"
    um_per_px: float
    seconds: float

    def describe(self) -> str:
        """Counts, with the SYNTHETIC warning every user must see."""
        return "\n".join([
            f"Wrote {self.fields} SYNTHETIC smear fields to {self.out / 'fields'} (seed {self.seed}, "
            f"{self.um_per_px} um per pixel) in {self.seconds:.1f} s: {self.white_cells['all']} ALL and "
            f"{self.white_cells['hem']} HEM white cells, {self.white_cells['edge_cut']} more cut by the edge.",
            "These are drawn pictures, not blood: they only exercise the pipeline and say",
            "nothing about leukaemia diagnosis. Label every figure made from them SYNTHETIC.",
        ])


def _write_png(path: Path, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[:, :, ::-1] if img.ndim == 3 else img))
    if not ok:  # pragma: no cover - OpenCV always encodes uint8/uint16 PNG
        raise UsageError(f"OpenCV could not encode {path.name}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def make_fields(out: str | Path, fields: int, *, seed: int = 0, size: tuple[int, int] = FIELD_SIZE,
                um_per_px: float = FIELD_UM_PER_PX) -> FieldsSummary:
    """Write ``fields`` SYNTHETIC smear fields with ground truth (layout in the module docstring).

    Raises:
        UsageError: Fewer than one field, a size under 256 px a side, or ``out`` already holds fields.
    """
    if fields < 1:
        raise UsageError(f"--fields must be at least 1, got {fields}")
    if min(size) < 256:
        raise UsageError(f"fields must be at least 256 pixels a side, got {size[0]} x {size[1]}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder; choose a new folder for the synthetic fields")
    if (out / "fields").exists() or (out / SYNTHETIC_MARKER).exists():
        raise UsageError(f"{out} already holds synthetic data; choose an empty folder or delete it first")
    start = time.perf_counter()
    atomic_write_text(out / SYNTHETIC_MARKER, (
        "SYNTHETIC smear fields written by `edgeleuk synth --fields`.\n"
        "Drawn pictures for exercising the pipeline only: not real blood, nothing about leukaemia diagnosis.\n"
        f"fields={fields} seed={seed} size={size[0]}x{size[1]} um_per_px={um_per_px} "
        f"model_um_per_px={SYNTH_UM_PER_PX}\n"))
    (out / "fields").mkdir(parents=True, exist_ok=True)
    (out / "cells").mkdir(exist_ok=True)
    (out / "truth").mkdir(exist_ok=True)
    counts = {"all": 0, "hem": 0, "edge_cut": 0}
    for i in range(1, fields + 1):
        name = f"field_{i:04d}"
        rgb, ids, objects, crops = draw_field(np.random.default_rng([seed, 7, i]), size=size, um_per_px=um_per_px)
        for obj in objects:
            if obj["kind"] == "white_cell":
                obj["crop"] = f"cells/{name}_{obj['id']}_{obj['label']}.png"
                _write_png(out / obj["crop"], crops[obj["id"]])
                counts["edge_cut" if obj["edge_cut"] else obj["label"]] += 1
        _write_png(out / "fields" / f"{name}.png", rgb)
        _write_png(out / "truth" / f"{name}.mask.png", ids.astype(np.uint16))
        record = {"synthetic": True, "um_per_px": um_per_px, "model_um_per_px": SYNTH_UM_PER_PX,
                  "width": size[0], "height": size[1], "seed": [seed, 7, i], "objects": objects}
        atomic_write_text(out / "truth" / f"{name}.json", json.dumps(record, indent=1) + "\n")
    return FieldsSummary(out=out, seed=seed, fields=fields, white_cells=counts, um_per_px=um_per_px,
                         seconds=time.perf_counter() - start)
