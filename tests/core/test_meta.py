import json

import numpy as np
import pytest

from edgeleuk.core.errors import CheckpointError
from edgeleuk.core.meta import MAX_METADATA_CHARS, ModelMeta, Preprocess, parse_json
from edgeleuk.core.trust import (
    DEFAULT_QUALITY,
    MAX_OOD_CHARS,
    OodModel,
    QualityRanges,
    ood_summary,
    quality_summary,
)


def test_defaults_follow_the_paper():
    meta = ModelMeta()
    assert meta.arch == "legacy_seresnext50_32x4d"
    assert (meta.preprocess.input_size, meta.preprocess.crop) == (450, 300)
    # The paper fed ToTensor() output: 0..1, no ImageNet mean/std.
    assert meta.preprocess.scale == pytest.approx(1 / 255)
    assert meta.preprocess.mean == (0.0, 0.0, 0.0) and meta.preprocess.std == (1.0, 1.0, 1.0)
    assert meta.preprocess.angles == [0, 45, 90, 135, 180, 225, 270, 315]
    assert meta.class_names == {0: "hem", 1: "all"}


def test_json_round_trip_keeps_every_field():
    meta = ModelMeta(
        arch="seresnext_tiny", preprocess=Preprocess(rotations=4, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5)),
        threshold=0.31, threshold_source="calibrated", seed=7, val_metrics={"f1": 0.9, "confusion": [[1, 2], [3, 4]]},
    )
    assert ModelMeta.from_json(meta.to_json()) == meta


@pytest.mark.parametrize("bad", [{"rotations": 3}, {"crop": 500}, {"std": (1.0, 0.0, 1.0)}])
def test_invalid_preprocess_is_refused(bad):
    with pytest.raises(CheckpointError):
        Preprocess(**bad)


def test_unknown_metadata_keys_are_errors():
    d = ModelMeta().to_dict()
    d["colour"] = "blue"
    with pytest.raises(CheckpointError, match="colour"):
        ModelMeta.from_dict(d)


# --- quality ranges and the OOD model ---------------------------------------------------------------

def _ood(dim: int = 16, k: int = 4) -> OodModel:
    rng = np.random.default_rng(0)
    comps = np.linalg.qr(rng.standard_normal((dim, k)))[0].T
    return OodModel(mean=rng.standard_normal(dim), components=comps, variances=np.arange(1.0, k + 1),
                    residual_var=0.5, threshold=3.2, percentile=99.5, n_cells=120, dim=dim)


def test_trust_fields_round_trip():
    meta = ModelMeta(quality=DEFAULT_QUALITY.replace(area_frac=(0.1, 0.8), source="calibrate:120 cells"),
                     ood=_ood())
    back = ModelMeta.from_json(meta.to_json())
    assert back == meta and back.quality.area_frac == (0.1, 0.8) and back.ood.k == 4
    assert back.ood.components.dtype == np.float32


def test_old_metadata_without_trust_keys_loads_and_says_so():
    old = ModelMeta().to_dict()
    assert "quality" not in old and "ood" not in old  # the JSON of a model without them is as before
    meta = ModelMeta.from_dict(old)
    assert meta.quality is None and meta.ood is None
    assert quality_summary(meta.quality) == "defaults (model predates QC)"
    assert ood_summary(meta.ood).startswith("none")
    assert ModelMeta.from_dict({**old, "quality": None, "ood": None}) == meta


def test_summaries_name_the_source():
    assert set(DEFAULT_QUALITY.to_dict()) == {*QualityRanges.measures(), "source"}
    assert quality_summary(DEFAULT_QUALITY).startswith("defaults")
    assert "calibrate:50 cells" in quality_summary(DEFAULT_QUALITY.replace(source="calibrate:50 cells"))
    assert "percentile 99.5 of 120" in ood_summary(_ood())


@pytest.mark.parametrize(("where", "change", "match"), [
    ("quality", {"colour": [0, 1]}, "unknown quality keys"),
    ("quality", {"focus": [5.0, 1.0]}, "empty"),
    ("quality", {"focus": [1.0, "x"]}, "two finite"),
    ("quality", {"focus": [1.0]}, "two finite"),
    ("quality", {"source": ""}, "source"),
    ("ood", {"colour": 1}, "unknown"),
    ("ood", {"threshold": -1.0}, "threshold"),
    ("ood", {"percentile": 0}, "percentile"),
    ("ood", {"n_cells": 0}, "n_cells"),
    ("ood", {"dim": 17}, "bytes|longer"),
    ("ood", {"k": 40}, "out of bounds"),
    ("ood", {"mean": "!!!!"}, "base64|bytes"),
    ("ood", {"variances": "AAAAAAAAAAAAAAAAAAAAAA=="}, "positive"),
])
def test_bad_trust_metadata_is_refused(where, change, match):
    d = ModelMeta(quality=DEFAULT_QUALITY, ood=_ood()).to_dict()
    d[where] = {**d[where], **change}
    with pytest.raises(CheckpointError, match=match):
        ModelMeta.from_dict(d)


def test_missing_trust_keys_are_refused():
    d = ModelMeta(quality=DEFAULT_QUALITY, ood=_ood()).to_dict()
    del d["quality"]["focus"], d["ood"]["threshold"]
    with pytest.raises(CheckpointError, match="lacks ranges for .'focus'"):
        ModelMeta.from_dict({**d, "ood": None})
    with pytest.raises(CheckpointError, match="missing .'threshold'"):
        ModelMeta.from_dict({**d, "quality": None})


def test_wrong_kinds_are_refused():
    with pytest.raises(CheckpointError, match="QualityRanges"):
        ModelMeta(quality={"focus": (0, 1)})
    with pytest.raises(CheckpointError, match="shapes"):
        OodModel(mean=np.zeros(8), components=np.zeros((2, 9)), variances=np.ones(2), residual_var=0.0,
                 threshold=1.0, percentile=99.0, n_cells=5, dim=8)
    with pytest.raises(CheckpointError, match="finite"):
        OodModel(mean=np.full(8, np.nan), components=np.zeros((2, 8)), variances=np.ones(2), residual_var=0.0,
                 threshold=1.0, percentile=99.0, n_cells=5, dim=8)


def test_ood_arrays_are_copies_and_read_only():
    mean = np.zeros(16, np.float32)  # float32 like the stored arrays: no conversion would copy it
    ood = OodModel(mean=mean, components=_ood().components, variances=np.ones(4), residual_var=0.0,
                   threshold=1.0, percentile=99.0, n_cells=5, dim=16)
    mean[0] = 5.0  # the caller's array stays writable and the model's copy unchanged
    assert ood.mean[0] == 0.0
    with pytest.raises(ValueError):
        ood.mean[0] = 1.0


def test_the_metadata_cap_leaves_room_for_the_largest_ood_model():
    assert MAX_METADATA_CHARS >= MAX_OOD_CHARS + 100_000
    # 32 x 11500 float32 (and the mean) is about 2.02 MB of base64 text, just under the budget.
    big = OodModel(mean=np.zeros(11500), components=np.zeros((32, 11500)), variances=np.ones(32),
                   residual_var=0.0, threshold=1.0, percentile=99.5, n_cells=100, dim=11500)
    text = ModelMeta(ood=big).to_json()
    assert MAX_OOD_CHARS - 200_000 < len(text) < MAX_OOD_CHARS
    assert ModelMeta.from_json(text) == ModelMeta(ood=big)
    assert isinstance(parse_json(json.dumps({"pad": "x" * MAX_OOD_CHARS})), dict)
