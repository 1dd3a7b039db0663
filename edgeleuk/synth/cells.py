"""Draw one SYNTHETIC stained white-blood-cell image, C-NMC style.

A single cell on a black background (C-NMC images are segmented cells): a
purple nucleus in a paler cytoplasm. These pictures are not real cells; they
exist so the pipeline can be exercised without the licensed data.

Class signal (ALL = 1 vs HEM = 0), every cue overlapping between classes:

* nucleus-to-cell radius ratio: ALL ~ N(0.82, 0.04), HEM ~ N(0.60, 0.05)
  (area share about 0.67 vs 0.36);
* chromatin: ALL fine, even and open (brightness x0.95-1.05); HEM coarse,
  clumped and condensed (darker, x0.72-0.86);
* nucleoli (pale round spots): ALL usually 1-3, HEM rarely one;
* nucleus outline: ALL more irregular, sometimes cleft; HEM round;
* cell radius: ALL ~ N(112, 13) px, HEM ~ N(97, 12) px, times a per-subject scale.

``AMBIGUOUS`` (3 %) of cells are drawn with the other class's looks, so no
classifier can be perfect (ceiling about 97 % accuracy). Nuisances, drawn from
the same law for both classes: stain colour and brightness (small per-subject
shift plus per-cell jitter, so colour cannot identify a subject), size scale,
nucleus position, segmentation cuts and leftover specks.

Per-pixel work is elementwise IEEE arithmetic (no per-pixel transcendental
functions, no BLAS, no resampling library), so a seed gives the same bytes on
a given platform and very likely on others.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edgeleuk.core.meta import INPUT_SIZE, Preprocess

# Cells are drawn in a central box a little larger than the model's centre crop,
# and kept small enough (radius <= 135 px, centre jitter 8 px) to sit inside the crop.
BOX = Preprocess().crop + 20
AMBIGUOUS = 0.03  # fraction of cells that look like the other class
IMPERFECT_CUT = 0.10  # fraction with part of the cell cut off by the segmentation
SPECKS = 0.15  # fraction with leftover background specks


@dataclass(frozen=True)
class Stain:
    """Per-subject staining and magnification (a nuisance, same law for both classes)."""

    nucleus: tuple[float, float, float]
    cytoplasm: tuple[float, float, float]
    size_scale: float
    brightness: float


def subject_stain(rng: np.random.Generator) -> Stain:
    """Draw one subject's stain colours (RGB) and size scale."""
    nuc = np.array([112.0, 58.0, 142.0]) + rng.normal(0.0, 1.0, 3) * np.array([5.0, 4.0, 5.0])
    cyto = np.array([196.0, 168.0, 214.0]) + rng.normal(0.0, 1.0, 3) * np.array([4.0, 4.0, 4.0])
    return Stain(
        nucleus=tuple(float(v) for v in nuc),
        cytoplasm=tuple(float(v) for v in cyto),
        size_scale=float(np.clip(rng.normal(1.0, 0.03), 0.92, 1.08)),
        brightness=float(np.clip(rng.normal(1.0, 0.03), 0.92, 1.08)),
    )


_GRID: tuple[np.ndarray, np.ndarray] | None = None


def _grid() -> tuple[np.ndarray, np.ndarray]:
    global _GRID
    if _GRID is None:
        yy, xx = np.mgrid[0:BOX, 0:BOX].astype(np.float32)
        _GRID = (yy + 0.5, xx + 0.5)
    return _GRID


def _upsample(low: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling with explicit weights (deterministic everywhere)."""
    pos = (np.arange(size, dtype=np.float32) + 0.5) * ((low.shape[0] - 1) / size)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, low.shape[0] - 1)
    f = (pos - i0).astype(np.float32)
    rows = low[i0] * (1 - f)[:, None] + low[i1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :]


def _noise(rng: np.random.Generator, cell: int) -> np.ndarray:
    """Smooth noise with features about ``cell`` pixels wide, unit-ish std."""
    low = rng.standard_normal((BOX // cell + 2, BOX // cell + 2), dtype=np.float32)
    out = _upsample(low, BOX)
    return out / np.float32(max(float(out.std()), 1e-3))


def _outline(dx: np.ndarray, dy: np.ndarray, r: np.ndarray, radius: float,
             amps: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Soft mask of a wobbly disk: boundary ``radius * (1 + sum a_k cos(k*theta + p_k))``."""
    inv = 1.0 / np.maximum(r, 1e-3)
    z = (dx * inv) + 1j * (dy * inv)  # e^{i theta} without arctan2
    zk = z
    wobble = np.zeros_like(r)
    for a, p in zip(amps, phases, strict=True):  # harmonics k = 2, 3, ... (k = 1 would only shift the centre)
        zk = zk * z
        rot = np.complex64(np.cos(p) + 1j * np.sin(p))
        wobble += np.float32(a) * (zk * rot).real.astype(np.float32)
    return np.clip(radius * (1.0 + wobble) - r + 0.5, 0.0, 1.0)


def _disk(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, radius: float) -> np.ndarray:
    d = np.sqrt((yy - np.float32(cy)) ** 2 + (xx - np.float32(cx)) ** 2)
    return np.clip(np.float32(radius) - d + 0.5, 0.0, 1.0)


@dataclass(frozen=True)
class CellLooks:
    """The class-dependent appearance of one cell."""

    cell_r: float
    nuc_frac: float
    nuc_wobble: float
    cleft: bool
    fine: float
    coarse: float
    darkness: float
    nucleoli: int


def sample_looks(rng: np.random.Generator, looks_all: bool, stain: Stain) -> CellLooks:
    """Draw the class-dependent parameters of a cell that looks like ALL or HEM."""
    if looks_all:
        cell_r, frac = rng.normal(112.0, 13.0), rng.normal(0.82, 0.04)
        wobble, cleft = rng.uniform(0.03, 0.08), rng.random() < 0.3
        fine, coarse, dark = rng.uniform(0.07, 0.12), rng.uniform(0.02, 0.06), rng.uniform(0.95, 1.05)
        nucleoli = int(rng.choice(4, p=[0.2, 0.4, 0.3, 0.1]))
    else:
        cell_r, frac = rng.normal(97.0, 12.0), rng.normal(0.60, 0.05)
        wobble, cleft = rng.uniform(0.01, 0.04), rng.random() < 0.05
        fine, coarse, dark = rng.uniform(0.03, 0.06), rng.uniform(0.16, 0.26), rng.uniform(0.72, 0.86)
        nucleoli = int(rng.random() < 0.12)
    return CellLooks(
        cell_r=float(np.clip(cell_r * stain.size_scale, 62.0, 135.0)),
        nuc_frac=float(np.clip(frac, 0.45, 0.90)), nuc_wobble=float(wobble), cleft=bool(cleft),
        fine=float(fine), coarse=float(coarse), darkness=float(dark), nucleoli=nucleoli,
    )


def _nucleus_alpha(rng: np.random.Generator, looks: CellLooks, cy: float, cx: float,
                   cell_alpha: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    yy, xx = _grid()
    rn = looks.cell_r * looks.nuc_frac
    # Eccentric nucleus, kept inside the cell.
    off = rng.uniform(0.0, 0.6) * (looks.cell_r - rn)
    ang = rng.uniform(0.0, 2 * np.pi)
    ny, nx = cy + off * np.sin(ang), cx + off * np.cos(ang)
    dy, dx = yy - np.float32(ny), xx - np.float32(nx)
    r = np.sqrt(dx * dx + dy * dy)
    amps = rng.uniform(0.3, 1.0, 5) * looks.nuc_wobble
    alpha = _outline(dx, dy, r, rn, amps, rng.uniform(0, 2 * np.pi, 5))
    if looks.cleft:  # an indentation of the outline, typical of blasts
        ca = rng.uniform(0.0, 2 * np.pi)
        alpha = alpha * (1.0 - _disk(yy, xx, ny + rn * np.sin(ca), nx + rn * np.cos(ca), 0.3 * rn))
    return alpha * cell_alpha, ny, nx, rn


def _nucleus_shade(rng: np.random.Generator, looks: CellLooks) -> np.ndarray:
    """Chromatin texture as a brightness multiplier."""
    coarse = _noise(rng, 12)
    # Clumps: a soft threshold turns smooth noise into dark blotches.
    clumps = np.clip(coarse * 1.5, -1.0, 1.0)
    return np.float32(looks.darkness) + looks.fine * _noise(rng, 3) + looks.coarse * clumps


def render_cell(rng: np.random.Generator, looks: CellLooks, stain: Stain, *, flaws: bool = True) -> np.ndarray:
    """Draw one cell; returns uint8 RGB ``[INPUT_SIZE, INPUT_SIZE, 3]`` with a black background.

    ``flaws=False`` leaves out the segmentation's flaws (a cut-off part, leftover specks): the
    whole cell, as :mod:`edgeleuk.synth.fields` places it into a smear field.
    """
    yy, xx = _grid()
    jitter = rng.uniform(-8.0, 8.0, 2)
    cy, cx = BOX / 2 + jitter[0], BOX / 2 + jitter[1]
    dy, dx = yy - np.float32(cy), xx - np.float32(cx)
    r = np.sqrt(dx * dx + dy * dy)
    cell = _outline(dx, dy, r, looks.cell_r, rng.uniform(0.0, 0.025, 4), rng.uniform(0, 2 * np.pi, 4))
    nuc, ny, nx, rn = _nucleus_alpha(rng, looks, cy, cx, cell)
    shade = _nucleus_shade(rng, looks)
    for _ in range(looks.nucleoli):  # pale round nucleoli inside the nucleus
        rad, ang = rng.uniform(0.0, 0.5) * rn, rng.uniform(0.0, 2 * np.pi)
        spot = _disk(yy, xx, ny + rad * np.sin(ang), nx + rad * np.cos(ang), rng.uniform(5.0, 9.0))
        shade = shade + np.float32(0.45) * spot

    cyto_tex = 1.0 + np.float32(0.04) * _noise(rng, 4)
    # Per-cell colour jitter, same law for both classes, so colour cannot fingerprint a subject.
    tint = rng.normal(0.0, 5.0, 3).astype(np.float32)
    cyto = (np.asarray(stain.cytoplasm, np.float32) + tint)[None, None, :] * cyto_tex[:, :, None]
    nucl = (np.asarray(stain.nucleus, np.float32) + tint)[None, None, :] * shade[:, :, None]
    rgb = cell[:, :, None] * (cyto * (1 - nuc[:, :, None]) + nucl * nuc[:, :, None])
    rgb = rgb * np.float32(stain.brightness)
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(2.5) * cell[:, :, None]

    if flaws and rng.random() < IMPERFECT_CUT:  # segmentation cut off part of the cell
        ang, dist = rng.uniform(0.0, 2 * np.pi), rng.uniform(0.6, 0.9) * looks.cell_r
        keep = np.clip(np.float32(dist) - (dx * np.float32(np.cos(ang)) + dy * np.float32(np.sin(ang))), 0, 1)
        rgb *= keep[:, :, None]

    out = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    o = (INPUT_SIZE - BOX) // 2
    out[o:o + BOX, o:o + BOX] = np.rint(np.clip(rgb, 0.0, 255.0)).astype(np.uint8)
    if flaws and rng.random() < SPECKS:
        _add_specks(rng, out, o + cy, o + cx, looks.cell_r)
    return out


def _add_specks(rng: np.random.Generator, img: np.ndarray, cy: float, cx: float, cell_r: float) -> None:
    """Leftover background specks just outside the cell, as imperfect segmentation leaves."""
    for _ in range(int(rng.integers(3, 12))):
        rad, ang = rng.uniform(1.03, 1.3) * cell_r, rng.uniform(0.0, 2 * np.pi)
        y, x = round(float(cy + rad * np.sin(ang))), round(float(cx + rad * np.cos(ang)))
        grey = [int(v) for v in rng.integers(120, 200, 3)]
        cv2.circle(img, (x, y), int(rng.integers(1, 5)), grey, thickness=-1, lineType=cv2.LINE_8)
