import pytest

from edgeleuk.core.errors import CheckpointError
from edgeleuk.core.meta import ModelMeta, Preprocess


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
