"""Find and index C-NMC 2019 cell images without being told the folder layout.

Torch-free. :func:`discover` recognises, by structure rather than exact names:

* the public release (TCIA / Kaggle mirrors)::

      [C-NMC_]training_data/fold_{0,1,2}/{all,hem}/UID_<subject>_<image>_<cell>_{all|hem}.bmp
      <prelim folder>/<N>.bmp + a CSV with columns Patient_ID,new_names,labels
      <final folder>/<N>.bmp (no labels)

  e.g. ``C-NMC_test_prelim_phase_data/`` with ``C-NMC_test_prelim_phase_data_labels.csv``
  beside or inside it; everything may sit up to three folders below the root;
* the paper's code layout: ``fold_0..2/{all,hem}/*.bmp``, ``phase2/*.bmp`` +
  ``phase2.csv``, ``phase3/*.bmp``;
* any other folder of images (layout ``"folder"``, unlabelled).

A folder of ``<N>.bmp`` with a labels CSV beside or inside it is the
preliminary test set (``"prelim"``); one without is the final test set
(``"final"``). Labels: 1 = ALL (leukaemic blast, positive), 0 = HEM (normal).
Subjects are read from ``UID_<subject>_...`` names; ``H<n>`` subjects are
healthy. The published release holds train 10,661 cells (7,272 ALL / 3,389 HEM)
from 73 subjects, prelim 1,867 (1,219 / 648) from 28, final 2,586 unlabelled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeleuk.core.errors import DataError, UsageError
from edgeleuk.io.files import image_entries, list_images, natural_key, read_csv, synthetic_root
from edgeleuk.io.imageio import SUPPORTED_EXTENSIONS, is_image_name

__all__ = [
    "SPLITS",
    "DataIndex",
    "Record",
    "discover",
    "fingerprint",
    "is_healthy",
    "label_from_name",
    "list_images",
    "natural_key",
    "read_labels_csv",
    "records_for",
    "spread",
    "spread_indices",
    "subject_from_name",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "prelim", "final", "images")
LABEL_COLUMNS = ("Patient_ID", "new_names", "labels")
CLASS_DIRS = {"all": 1, "hem": 0}
MAX_DEPTH = 3  # how far below the root the release's folders may sit
_FOLD_RE = re.compile(r"fold_?(\d+)", re.IGNORECASE)
_UID_RE = re.compile(r"UID_([A-Za-z]*\d+)_", re.IGNORECASE)
_CLASS_SUFFIX_RE = re.compile(r"_(all|hem)$", re.IGNORECASE)  # training names end in their class
_NUMBERED_RE = re.compile(r"\d+")


@dataclass(frozen=True)
class Record:
    """One cell image.

    Attributes:
        path: The image file.
        label: 1 = ALL, 0 = HEM, None = unknown (final test set, plain folders).
        subject: Subject id (``H`` prefix = healthy), None if unknown.
        split: "train", "prelim", "final" or "images".
        fold: Training fold, None outside the training set.
    """

    path: Path
    label: int | None
    subject: str | None
    split: str
    fold: int | None = None


def subject_from_name(name: str | os.PathLike[str]) -> str | None:
    """Subject id from a C-NMC file name (``UID_H10_43_1_hem.bmp`` -> ``"H10"``), else None."""
    m = _UID_RE.match(Path(name).name)
    return m.group(1).upper() if m else None


def is_healthy(subject: str | None) -> bool | None:
    """Whether a subject id names a healthy subject (``H`` prefix); None if unknown."""
    return None if subject is None else subject.upper().startswith("H")


def label_from_name(name: str | os.PathLike[str]) -> int | None:
    """The class a C-NMC training file name states (``UID_H10_43_1_hem.bmp`` -> 0), else None.

    Only names that also carry a ``UID_<subject>_`` prefix count, so an
    arbitrary ``..._all.png`` from elsewhere is not taken as a label.
    """
    path = Path(name)
    match = _CLASS_SUFFIX_RE.search(path.stem)
    if match is None or subject_from_name(path) is None:
        return None
    return CLASS_DIRS[match.group(1).lower()]


def read_labels_csv(path: Path) -> list[tuple[str, str, int]]:
    """Rows ``(Patient_ID, new_names, label)`` of a C-NMC labels CSV.

    Raises:
        DataError: Wrong columns, a label other than 0/1, or duplicate names.
    """
    header, raw = read_csv(path)
    missing = [c for c in LABEL_COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"{path} has columns {header}; a C-NMC labels CSV needs {','.join(LABEL_COLUMNS)} "
            "(labels: 1 = ALL, 0 = HEM)"
        )
    rows = [tuple((r.get(c) or "").strip() for c in LABEL_COLUMNS) for r in raw]
    out, seen = [], set()
    for line, (pid, name, label) in enumerate(rows, start=2):
        if label not in ("0", "1"):
            raise DataError(f"{path} line {line}: label {label!r} is not 0 (HEM) or 1 (ALL)")
        if name in seen:
            raise DataError(f"{path} line {line}: {name} is listed twice")
        seen.add(name)
        out.append((pid, name, int(label)))
    return out


@dataclass
class _Scan:
    folds: list[tuple[int, Path]] = dataclasses.field(default_factory=list)
    numbered: list[Path] = dataclasses.field(default_factory=list)
    csvs: list[Path] = dataclasses.field(default_factory=list)


def _class_dirs(subdirs: list[Path]) -> dict[int, Path]:
    """The ``all``/``hem`` sub-folders (any case) by label."""
    return {CLASS_DIRS[d.name.lower()]: d for d in subdirs if d.name.lower() in CLASS_DIRS}


def _scan(root: Path) -> _Scan:
    """Walk folders up to ``MAX_DEPTH`` below root, noting folds, N.bmp folders and CSVs."""
    # Breadth-first, so a folder reached by a link is indexed under its shortest path.
    scan, todo, seen = _Scan(), deque([(root, 0)]), set()
    while todo:
        folder, depth = todo.popleft()
        if folder.resolve() in seen:  # reached again through a symbolic link
            continue
        seen.add(folder.resolve())
        images, dirs = image_entries(folder, csvs=scan.csvs)
        m = _FOLD_RE.fullmatch(folder.name)
        if m and _class_dirs(dirs):
            scan.folds.append((int(m.group(1)), folder))
            continue
        if images and all(_NUMBERED_RE.fullmatch(p.stem) for p in images):
            scan.numbered.append(folder)
            continue
        if depth < MAX_DEPTH:
            todo.extend((d, depth + 1) for d in sorted(dirs))
    return scan


def _claims(csv_path: Path, folder: Path) -> bool:
    """Whether a CSV's name and place tie it to a folder of N.bmp.

    Inside the folder: any name with "label" or starting with the folder's name;
    beside it (or beside its parent, for doubly nested mirrors): a name that
    starts with the folder's name (``phase2.csv``, ``..._prelim_phase_data_labels.csv``).
    """
    stem, names = csv_path.stem.lower(), (folder.name.lower(), folder.parent.name.lower())
    if csv_path.parent == folder:
        return "label" in stem or stem.startswith(names[0])
    if csv_path.parent == folder.parent:
        return stem.startswith(names[0])
    return csv_path.parent == folder.parent.parent and stem.startswith(names)


def _labels_for(folder: Path, csvs: list[Path], images: list[Path]) -> tuple[Path, list] | None:
    """The labels CSV of a folder of N.bmp, or None if it has none (a final test set).

    A CSV whose name claims the folder must be valid (else DataError); an
    unclaimed CSV beside it counts only if its names match the folder exactly.
    """
    claimed = sorted((p for p in csvs if _claims(p, folder)), key=lambda p: (-len(p.parts), p.name))
    if claimed:  # the nearest one wins
        return claimed[0], read_labels_csv(claimed[0])
    stems = {p.stem for p in images}
    for path in sorted(p for p in csvs if p.parent in (folder, folder.parent)):
        try:
            rows = read_labels_csv(path)
        except DataError:
            continue  # some other CSV (predictions, notes): not ours to judge
        if {Path(name).stem for _, name, _ in rows} == stems:
            return path, rows
    return None


def _prelim_records(folder: Path, csv_path: Path, rows: list, images: list[Path]) -> list[Record]:
    by_stem = {p.stem: p for p in images}
    listed = {Path(name).stem for _, name, _ in rows}
    missing = [name for _, name, _ in rows if Path(name).stem not in by_stem]
    extra = [p.name for p in images if p.stem not in listed]
    if missing or extra:
        raise DataError(
            f"{csv_path} and {folder} disagree: {len(missing)} listed file(s) missing "
            f"{missing[:3]}, {len(extra)} image(s) without a label {extra[:3]}; restore the files "
            "or use the CSV that came with this folder"
        )
    recs = [Record(by_stem[Path(n).stem], lab, subject_from_name(pid), "prelim") for pid, n, lab in rows]
    return sorted(recs, key=lambda r: natural_key(r.path))


def _train_records(folds: list[tuple[int, Path]]) -> list[Record]:
    recs = []
    for fold, folder in folds:
        _, dirs = image_entries(folder)
        for label, class_dir in sorted(_class_dirs(dirs).items(), reverse=True):
            for path in list_images(class_dir):
                recs.append(Record(path, label, subject_from_name(path.name), "train", fold))
    return recs


def _layout_name(root: Path, scan: _Scan) -> str:
    paper_names = {"phase2", "phase3"}
    if any(d.name.lower() in paper_names for d in scan.numbered):
        return "paper"
    if scan.folds:
        return "paper" if all(f.parent == root for _, f in scan.folds) else "public"
    return "public"


class DataIndex:
    """The images found under one root, grouped into splits.

    Attributes:
        root: The folder searched.
        layout: "public" (C-NMC release), "paper" (the paper's code) or "folder".
        synthetic: True when ``SYNTHETIC.txt`` (written by ``edgeleuk synth``) sits in the root
            or up to three folders above it.
        sources: Per split, the folders and labels CSVs it was read from.
    """

    def __init__(self, root: Path, layout: str, splits: dict[str, list[Record]],
                 sources: dict[str, list[Path]]) -> None:
        self.root = root
        self.layout = layout
        self.sources = sources
        self.synthetic = synthetic_root(root) is not None
        self._splits = {k: v for k, v in splits.items() if v}

    def has(self, name: str) -> bool:
        """Whether split ``name`` exists and holds at least one image."""
        return bool(self._get(name))

    def _get(self, name: str) -> list[Record]:
        if name not in SPLITS:
            raise UsageError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        if name == "images" and "images" not in self._splits:
            known = {r.path: r for recs in self._splits.values() for r in recs}
            self._splits["images"] = [
                dataclasses.replace(known[p], split="images", fold=None) if p in known
                else Record(p, None, subject_from_name(p.name), "images")
                for p in list_images(self.root, recursive=True)
            ]
        return self._splits.get(name, [])

    def split(self, name: str) -> list[Record]:
        """Records of one split, in a stable order.

        Raises:
            UsageError: ``name`` is not a split name.
            DataError: The split is absent or empty here.
        """
        recs = self._get(name)
        if not recs:
            found = ", ".join(f"{k} ({len(v)})" for k, v in self._splits.items()) or "none"
            raise DataError(
                f"no {name!r} images under {self.root} (layout {self.layout}; splits found: {found}). "
                "Expected fold_*/{all,hem}/ for train, a folder of N.bmp with a Patient_ID,new_names,labels "
                "CSV for prelim, a folder of N.bmp without labels for final."
            )
        return list(recs)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per split found: images, ALL, HEM, unlabelled and distinct subjects."""
        out = {}
        for name in ("train", "prelim", "final"):
            recs = self._splits.get(name, [])
            if recs:
                out[name] = {
                    "images": len(recs),
                    "all": sum(r.label == 1 for r in recs),
                    "hem": sum(r.label == 0 for r in recs),
                    "unlabelled": sum(r.label is None for r in recs),
                    "subjects": len({r.subject for r in recs if r.subject is not None}),
                }
        return out

    def describe(self) -> str:
        """A short human-readable summary of what was found."""
        tag = " SYNTHETIC" if self.synthetic else ""
        lines = [f"{self.root}: {self.layout} layout{tag}"]
        for name, c in self.counts().items():
            lines.append(f"  {name:<7}{c['images']:>7} images  ALL {c['all']}  HEM {c['hem']}  "
                         f"unlabelled {c['unlabelled']}  subjects {c['subjects']}")
        if len(lines) == 1:
            lines.append(f"  images {len(self._get('images'))} (no C-NMC structure; unlabelled)")
        return "\n".join(lines)


def discover(root: str | os.PathLike[str]) -> DataIndex:
    """Index the C-NMC data (or plain image folder) under ``root``.

    Raises:
        DataError: ``root`` is missing, not a folder, holds no images, or its
            labels CSV is malformed or disagrees with its folder.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DataError(f"{root} is a file; give the folder that holds the images")
    scan = _scan(root)
    splits: dict[str, list[Record]] = {"train": _train_records(sorted(scan.folds)), "prelim": [], "final": []}
    sources: dict[str, list[Path]] = {"train": [f for _, f in sorted(scan.folds)], "prelim": [], "final": []}
    for folder in sorted(scan.numbered, key=natural_key):
        images = list_images(folder)
        labels = _labels_for(folder, scan.csvs, images)
        if labels:
            splits["prelim"].extend(_prelim_records(folder, labels[0], labels[1], images))
            sources["prelim"] += [folder, labels[0]]
        else:
            splits["final"].extend(Record(p, None, None, "final") for p in images)
            sources["final"].append(folder)
    structured = bool(splits["train"] or splits["prelim"])
    # Without train/prelim it is a plain image folder (a lone N.bmp folder still gives "final").
    index = DataIndex(root, _layout_name(root, scan) if structured else "folder", splits, sources)
    if not structured and not index.has("images"):
        raise DataError(
            f"no images found under {root} (looked for {', '.join(SUPPORTED_EXTENSIONS)}, recursively)"
        )
    log.debug("discovered %s", index.describe())
    return index


def records_for(paths: Sequence[Path], csvs: Mapping[Path, list[Path]] | None = None) -> list[Record]:
    """Records for files already listed, in their order: subject and true label where the layout says.

    Reads only what lies around the files, never the whole tree again: a C-NMC
    training name (``UID_H10_43_1_hem.bmp``) or an ``all``/``hem`` folder inside a
    ``fold_N`` folder gives the class; a folder of numbered files takes labels and
    subjects from the labels CSV :func:`discover` would pair with it (inside it,
    beside it, or beside its parent). A CSV that claims a folder but is malformed or
    disagrees with it is logged and its folder stays unlabelled.

    Args:
        paths: The files, as listed.
        csvs: Folder -> its ``*.csv`` files, for the folders that were listed
            (:func:`edgeleuk.io.files.list_images` fills it); any other folder a CSV
            may sit in is looked at here.
    """
    csvs = dict(csvs or {})
    by_folder: dict[Path, list[Path]] = {}
    for path in paths:
        by_folder.setdefault(path.parent, []).append(path)
    labelled: dict[Path, Record] = {}
    for folder, files in by_folder.items():
        images = [p for p in files if is_image_name(p.name)]  # what discover would index
        if images and all(_NUMBERED_RE.fullmatch(p.stem) for p in images):
            labelled.update(_csv_records(folder, images, csvs))
    return [labelled.get(path) or _named_record(path) for path in paths]


def _csv_records(folder: Path, images: list[Path], csvs: dict[Path, list[Path]]) -> dict[Path, Record]:
    near = []
    for place in (folder, folder.parent, folder.parent.parent):
        if place not in csvs:  # not listed by the caller: one look at that folder
            csvs[place] = sorted(p for p in place.glob("*.csv") if not p.name.startswith("."))
        near += csvs[place]
    try:
        found = _labels_for(folder, near, images)
        return {} if found is None else {r.path: r for r in _prelim_records(folder, *found, images)}
    except DataError as exc:
        log.warning("true labels not used: %s", exc)
        return {}


def _named_record(path: Path) -> Record:
    fold = _FOLD_RE.fullmatch(path.parent.parent.name)
    class_dir = CLASS_DIRS.get(path.parent.name.lower()) if fold else None
    label = label_from_name(path)
    return Record(path, class_dir if label is None else label, subject_from_name(path.name),
                  "images" if class_dir is None else "train", None if class_dir is None else int(fold.group(1)))


def fingerprint(records: Iterable[Record], root: str | os.PathLike[str] | None = None) -> str:
    """SHA-256 of the (relative path, label) list: identifies a training set's files."""
    h = hashlib.sha256()
    for rec in sorted(records, key=lambda r: natural_key(r.path)):
        rel = rec.path.relative_to(root) if root is not None else rec.path
        h.update(f"{rel.as_posix()}\t{rec.label}\n".encode())
    return h.hexdigest()


def spread_indices(total: int, n: int) -> np.ndarray:
    """``n`` indices evenly spaced over ``range(total)`` (all of them if ``n >= total``), deterministic."""
    if n >= total:
        return np.arange(total)
    return np.linspace(0, total - 1, n).round().astype(int)


def spread(records: list[Record], n: int) -> list[Record]:
    """``n`` records evenly spaced over the stable order (covers folds and classes), deterministic.

    The gate, INT8 calibration and ``bench`` draw their cells this way, so a
    sample of a sorted C-NMC split takes both classes and every fold.
    """
    return [records[i] for i in spread_indices(len(records), n)]
