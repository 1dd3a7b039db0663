"""Write a SYNTHETIC data set in the public C-NMC release layout.

The C-NMC 2019 data are licensed and large, so tests and the demo run on
drawn cells instead (see :mod:`edgeleuk.synth.cells` for what they look like
and how the classes differ). Results on them only show that the pipeline
works; they say nothing about leukaemia diagnosis.

Layout written (as the public release, see ``edgeleuk.io.data``)::

    out/training_data/fold_{0,1,2}/{all,hem}/UID_<subject>_<image>_<cell>_{all|hem}.bmp
    out/prelim/<N>.bmp  +  out/prelim_labels.csv   (Patient_ID,new_names,labels)
    out/final/<N>.bmp                              (unlabelled)
    out/SYNTHETIC.txt                              (what this is, and the parameters)

As in C-NMC, every subject gives cells of one class: ALL patients have numeric
ids, healthy subjects ``H<n>``; subjects never span two splits.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgeleuk.core.errors import CheckpointError, UsageError
from edgeleuk.core.optics import SYNTH_UM_PER_PX, check_um_per_px
from edgeleuk.io.atomic import atomic_path, atomic_write_text
from edgeleuk.io.files import SYNTHETIC_MARKER
from edgeleuk.synth.cells import AMBIGUOUS, render_cell, sample_looks, subject_stain

ALL_SHARE = 2 / 3  # C-NMC training data are about 2:1 ALL:HEM
PRELIM_SHARE, FINAL_SHARE = 0.25, 0.15  # of each class's subjects; the rest train
FOLDS = 3
MARKER = SYNTHETIC_MARKER  # read back by edgeleuk.io.files.synthetic_root
_LAYOUT_NAMES = ("training_data", "prelim", "final", "prelim_labels.csv", MARKER)
#: The marker's line that records the scale the cells are drawn at.
SCALE_KEY = "um_per_px"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthSubject:
    """One synthetic subject: ``label`` 1 = ALL patient, 0 = healthy (HEM)."""

    id: str
    label: int
    split: str  # "train", "prelim" or "final"
    fold: int | None


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`make_synthetic` wrote."""

    out: Path
    seed: int
    subjects: tuple[SynthSubject, ...]
    counts: dict[str, dict[str, int]]  # split -> {"all": n, "hem": n}
    seconds: float

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def describe(self) -> str:
        """Counts per split, with the SYNTHETIC warning every user must see."""
        lines = [
            (f"Wrote {self.total} SYNTHETIC cell images to {self.out} (seed {self.seed}) "
             f"in {self.seconds:.1f} s."),
            "These are drawn cells, not real blood: they only exercise the pipeline and say",
            "nothing about leukaemia diagnosis. Label every figure made from them SYNTHETIC.",
            "",
            f"{'split':<8}{'subjects':>9}{'ALL':>7}{'HEM':>7}",
        ]
        for split in ("train", "prelim", "final"):
            n_subj = sum(s.split == split for s in self.subjects)
            c = self.counts.get(split, {})
            note = "  (labels hidden, as in C-NMC)" if split == "final" else ""
            lines.append(f"{split:<8}{n_subj:>9}{c.get('all', 0):>7}{c.get('hem', 0):>7}{note}")
        return "\n".join(lines)


def _split_counts(n: int) -> tuple[int, int, int]:
    """(train, prelim, final) subjects for one class: >= 1 train and >= 1 prelim."""
    prelim = max(1, round(n * PRELIM_SHARE))
    final = min(round(n * FINAL_SHARE), n - prelim - 1)
    return n - prelim - final, prelim, max(final, 0)


def assign_subjects(n_subjects: int, seed: int) -> tuple[SynthSubject, ...]:
    """Name subjects and spread them over folds and test splits, subject-disjoint.

    Each class's training subjects go round-robin over the folds, so folds get
    both classes when there are enough subjects.
    """
    n_hem = max(2, round(n_subjects * (1 - ALL_SHARE)))
    n_all = n_subjects - n_hem
    rng = np.random.default_rng([seed, 2])
    subjects: list[SynthSubject] = []
    for label, n, name in ((1, n_all, "{}"), (0, n_hem, "H{}")):
        ids = [name.format(i) for i in rng.permutation(n) + 1]
        n_train, n_prelim, _ = _split_counts(n)
        for k, sid in enumerate(ids):
            if k < n_train:
                subjects.append(SynthSubject(sid, label, "train", (k + label) % FOLDS))
            else:
                split = "prelim" if k < n_train + n_prelim else "final"
                subjects.append(SynthSubject(sid, label, split, None))
    return tuple(subjects)


@dataclass(frozen=True)
class _Cell:
    subject_index: int
    subject: SynthSubject
    k: int  # cell index within the subject
    uid_name: str  # UID_<subject>_<image>_<cell>_<all|hem>.bmp


def _subject_cells(index: int, subject: SynthSubject, n: int, seed: int) -> list[_Cell]:
    """Group a subject's cells into microscope images of 1-3 cells, as C-NMC names them."""
    rng = np.random.default_rng([seed, 3, index])
    cls = "all" if subject.label else "hem"
    cells, image, in_image, per_image = [], 1, 0, int(rng.integers(1, 4))
    for k in range(n):
        if in_image == per_image:
            image, in_image, per_image = image + 1, 0, int(rng.integers(1, 4))
        in_image += 1
        cells.append(_Cell(index, subject, k, f"UID_{subject.id}_{image}_{in_image}_{cls}.bmp"))
    return cells


def _plan(subjects: tuple[SynthSubject, ...], cells_per_subject: int, seed: int) -> list[tuple[_Cell, str]]:
    """Every cell with its path relative to ``out``; test cells are shuffled and numbered."""
    by_split: dict[str, list[_Cell]] = {"train": [], "prelim": [], "final": []}
    for i, subj in enumerate(subjects):
        by_split[subj.split].extend(_subject_cells(i, subj, cells_per_subject, seed))
    plan = []
    for c in by_split["train"]:
        cls = "all" if c.subject.label else "hem"
        plan.append((c, f"training_data/fold_{c.subject.fold}/{cls}/{c.uid_name}"))
    for j, split in enumerate(("prelim", "final")):
        cells = by_split[split]
        order = np.random.default_rng([seed, 4, j]).permutation(len(cells))
        plan.extend((cells[idx], f"{split}/{n}.bmp") for n, idx in enumerate(order, start=1))
    return plan


def _labels_csv(plan: list[tuple[_Cell, str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["Patient_ID", "new_names", "labels"])
    for cell, rel in plan:
        if rel.startswith("prelim/"):
            writer.writerow([cell.uid_name, rel.split("/", 1)[1], cell.subject.label])
    return buf.getvalue()


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder; choose a new folder for the synthetic data")
    clash = [n for n in _LAYOUT_NAMES if (out / n).exists()]
    if clash:
        raise UsageError(
            f"{out} already holds a data set ({', '.join(clash)}); choose an empty folder or delete it first"
        )


def _write_bmp(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".bmp", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 BMP
        raise UsageError(f"OpenCV could not encode {path.name}")
    # Temp file + rename: an interrupted run leaves no half-written image
    # (fsync per file is skipped on purpose: thousands of small files).
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def _marker_text(subjects: int, cells_per_subject: int, seed: int) -> str:
    return (
        "SYNTHETIC data written by `edgeleuk synth`.\n"
        "Drawn cells in the public C-NMC 2019 release layout, for exercising the pipeline only.\n"
        "They are not real blood cells and say nothing about leukaemia diagnosis.\n"
        f"subjects={subjects} cells_per_subject={cells_per_subject} seed={seed}\n"
        f"{SCALE_KEY}={SYNTH_UM_PER_PX}\n"
    )


def recorded_scale(root: str | Path) -> float | None:
    """The micrometres per pixel ``edgeleuk synth`` recorded in ``root``'s marker, or None.

    None for real data, and for synthetic data written before the scale was recorded.
    """
    try:
        text = (Path(root) / MARKER).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == SCALE_KEY:
            try:
                return check_um_per_px(float(value))
            except (ValueError, CheckpointError):
                return None
    return None


def make_synthetic(out: str | Path, subjects: int = 24, cells_per_subject: int = 40,
                   seed: int = 0) -> SynthSummary:
    """Write a SYNTHETIC C-NMC-layout data set; the same arguments write the same bytes.

    Args:
        out: Folder to create or fill; must not already hold a data set.
        subjects: Number of subjects, about 2:1 ALL patients to healthy ones (>= 5).
        cells_per_subject: Cells drawn per subject (>= 1).
        seed: Random seed.

    Returns:
        A :class:`SynthSummary` with per-split counts; ``.describe()`` for people.

    Raises:
        UsageError: Bad counts, or ``out`` already holds data.
    """
    if subjects < 5:
        raise UsageError(
            f"--subjects must be at least 5 (train and prelim each need both classes), got {subjects}"
        )
    if cells_per_subject < 1:
        raise UsageError(f"--cells-per-subject must be at least 1, got {cells_per_subject}")
    out = Path(out)
    _check_out(out)
    start = time.perf_counter()
    subj = assign_subjects(subjects, seed)
    plan = _plan(subj, cells_per_subject, seed)
    stains = [subject_stain(np.random.default_rng([seed, 0, i])) for i in range(len(subj))]
    log.info("drawing %d SYNTHETIC cells into %s", len(plan), out)
    # The marker goes first, so even an interrupted run's files are flagged SYNTHETIC.
    atomic_write_text(out / MARKER, _marker_text(subjects, cells_per_subject, seed))
    for sub in ("training_data", "prelim", "final"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    counts: dict[str, Counter] = {"train": Counter(), "prelim": Counter(), "final": Counter()}
    for cell, rel in plan:
        rng = np.random.default_rng([seed, 1, cell.subject_index, cell.k])
        is_all = bool(cell.subject.label)
        looks = sample_looks(rng, is_all != (rng.random() < AMBIGUOUS), stains[cell.subject_index])
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        _write_bmp(dest, render_cell(rng, looks, stains[cell.subject_index]))
        counts[cell.subject.split]["all" if is_all else "hem"] += 1
    atomic_write_text(out / "prelim_labels.csv", _labels_csv(plan))
    return SynthSummary(
        out=out, seed=seed, subjects=subj, counts={k: dict(v) for k, v in counts.items()},
        seconds=time.perf_counter() - start,
    )
