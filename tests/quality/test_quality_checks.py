"""assess / fit_ranges: reasons, fitted ranges, and the flag rates on SYNTHETIC cells and shifts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgeleuk.core.errors import UsageError
from edgeleuk.core.trust import DEFAULT_QUALITY, QualityRanges
from edgeleuk.quality import (
    BLANK,
    MEASURE_REASON,
    REASONS,
    QualityMeasures,
    assess,
    fit_ranges,
    measure,
    reasons_for,
)
from edgeleuk.quality.checks import MIN_FIT_CELLS
from edgeleuk.synth.shifts import SHIFT_KINDS, normal_cells, shifted_cells

GOOD = QualityMeasures(area_frac=0.4, offset_frac=0.05, edge_frac=0.0, focus=300.0, brightness=120.0,
                       clipped_frac=0.0, od_hematoxylin=0.1, od_eosin=0.04, background_frac=0.0, contrast=60.0)


def test_every_measure_has_a_reason_from_the_vocabulary():
    assert set(MEASURE_REASON) == set(QualityRanges.measures())
    assert set(MEASURE_REASON.values()) | {BLANK} == set(REASONS)
    assert len(set(REASONS)) == len(REASONS)


def test_good_measures_pass_default_ranges():
    assert reasons_for(GOOD) == () == reasons_for(GOOD, DEFAULT_QUALITY)


# Below the range for those whose range starts above 0 (a fraction cannot be negative), above for all.
SIDES = [(n, 0) for n in QualityRanges.measures() if getattr(DEFAULT_QUALITY, n)[0] > 0] + [
    (n, 1) for n in QualityRanges.measures()]


@pytest.mark.parametrize(("name", "side"), SIDES)
def test_a_measure_outside_its_range_gives_its_reason(name, side):
    lo, hi = getattr(DEFAULT_QUALITY, name)
    value = lo / 2 if side == 0 else hi + 1.0
    got = reasons_for(dataclasses.replace(GOOD, **{name: value}), DEFAULT_QUALITY)
    assert got == (MEASURE_REASON[name],)
    # Exactly on the bound is inside.
    assert reasons_for(dataclasses.replace(GOOD, **{name: (lo, hi)[side]}), DEFAULT_QUALITY) == ()


def test_reasons_come_in_vocabulary_order_once_each():
    bad = dataclasses.replace(GOOD, background_frac=0.5, area_frac=0.99, brightness=250.0, clipped_frac=0.9)
    assert reasons_for(bad) == ("area", "exposure", "background")


def test_blank_alone_for_empty_or_flat_images():
    assert reasons_for(dataclasses.replace(GOOD, area_frac=0.005, focus=0.0)) == (BLANK,)
    assert reasons_for(dataclasses.replace(GOOD, contrast=1.0)) == (BLANK,)
    assert assess(np.zeros((450, 450, 3), np.uint8)) == (BLANK,)
    assert assess(np.full((450, 450, 3), 250, np.uint8)) == (BLANK,)


def test_fit_ranges_records_its_source_and_refuses_too_few_cells():
    cells = list(normal_cells(MIN_FIT_CELLS, seed=3))
    blank = np.zeros_like(cells[0])
    ranges = fit_ranges([*cells, blank], how="calibrate")
    assert ranges.source == f"calibrate:{MIN_FIT_CELLS} cells" and not ranges.is_default
    assert all(assess(c, ranges) == () for c in cells)
    with pytest.raises(UsageError, match="at least"):
        fit_ranges([*cells[:-1], blank])


@pytest.fixture(scope="module")
def fitted() -> QualityRanges:
    return fit_ranges(normal_cells(160, seed=1), how="synth")


def test_held_out_cells_pass_fitted_ranges(fitted):
    """Done-when: at most 1 % of held-out cells from the training distribution flagged by QC."""
    flagged = [r for r in (assess(c, fitted) for c in normal_cells(100, seed=2)) if r]
    assert len(flagged) <= 1, flagged


#: The reasons each shift must give one of (QC alone sees every kind on these cells).
EXPECTED = {"blank": {"blank"}, "blur": {"blur"}, "stain": {"stain"}, "overexposed": {"exposure"},
            "off_centre": {"off_centre"}, "red_cell": {"stain"},
            # Fragments: too little cell, no in-focus interior (each fragment is thinner than the
            # erosion), or their centroid off centre.
            "debris": {"area", "blank", "blur", "off_centre"}}


@pytest.mark.parametrize("kind", SHIFT_KINDS)
def test_each_shift_kind_is_flagged_by_qc(fitted, kind):
    """Done-when: every shift kind flagged at >= 95 % (here >= 19 of 20 seeded cells)."""
    reasons = [assess(c, fitted) for c in shifted_cells(kind, 20, seed=4)]
    assert sum(bool(r) for r in reasons) >= 19, reasons
    assert sum(bool(EXPECTED[kind] & set(r)) for r in reasons) >= 19, reasons


def test_defaults_pass_drawn_cells_and_flag_the_obvious(fitted):
    cells = list(normal_cells(40, seed=5))
    assert sum(bool(assess(c)) for c in cells) == 0
    for kind in ("blank", "blur", "overexposed", "off_centre", "red_cell", "debris"):
        assert all(assess(c) for c in shifted_cells(kind, 5, seed=6)), kind
    assert [measure(c) for c in cells[:1]]  # measures stay computable on the same cells
