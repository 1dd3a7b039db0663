"""Training recipes: a TOML file loaded into a frozen :class:`Recipe`.

The packaged recipes live in ``edgeleuk/configs/recipes`` (``edgeleuk recipes``
lists them); ``paper`` holds the paper's exact settings; the defaults below are
the same values, so a recipe file only needs to say what differs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from edgeleuk.core.config import load_toml, resolve_named
from edgeleuk.core.errors import CheckpointError, ConfigError
from edgeleuk.core.meta import PAPER_ARCH, Preprocess
from edgeleuk.core.optics import check_um_per_px
from edgeleuk.modeling.model import ARCHITECTURES, GROUPS

#: Fields that do not change what a run computes; a resumed run may differ in them.
RESULT_NEUTRAL = ("description", "pretrained", "num_workers", "threads", "val_tta", "smoke", "um_per_px")


@dataclass(frozen=True)
class LearningRates:
    """Base learning rate of each parameter group (see ``edgeleuk.modeling.model.GROUPS``).

    Attributes:
        stages_1_2: Stem and first residual stage (``layer0``, ``layer1``).
        stages_3_5: Residual stages 3-5 (``layer2``..``layer4``).
        classifier: The final linear layer (``last_linear``).
    """

    stages_1_2: float = 1e-6
    stages_3_5: float = 1e-4
    classifier: float = 1e-2

    def as_dict(self) -> dict[str, float]:
        """Parameter group name -> learning rate, as ``edgeleuk.modeling.model.param_groups`` takes it."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Augment:
    """Training augmentation after the centre crop (the paper's ``TF_TRAIN``).

    Attributes:
        vflip: Probability of a vertical flip.
        hflip: Probability of a horizontal flip.
        degrees: Rotation drawn uniformly from ``[-degrees, degrees]`` (360: any angle).
        translate: Largest shift as a fraction of the crop side, per axis.
    """

    vflip: float = 0.5
    hflip: float = 0.5
    degrees: float = 360.0
    translate: float = 0.2

    def __post_init__(self) -> None:
        for name in ("vflip", "hflip"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"augment.{name} is a probability in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.translate < 1.0:
            raise ConfigError(f"augment.translate must lie in [0, 1), got {self.translate}")
        if not 0.0 <= self.degrees <= 360.0:
            raise ConfigError(f"augment.degrees must lie in [0, 360], got {self.degrees}")


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a training run except the data, the seed override and the output folder.

    Attributes:
        name: Recipe name recorded in checkpoints (defaults to the file's stem).
        description: One line for humans.
        arch: Network architecture (``edgeleuk.modeling.model.ARCHITECTURES``).
        pretrained: ``"imagenet"``, a state-dict path, or unset for random initialisation.
        seed: Seed used when the command line gives none.
        train_folds: Training folds of the C-NMC training set.
        val_split: Split validated after every epoch (the labelled preliminary test set).
        epochs: Number of epochs.
        batch_size: Global training batch size (split across processes under ``torchrun``).
        val_batch_size: Validation batch size in cells (default: ``batch_size``).
        lr: Base learning rate per parameter group.
        lr_milestones: Epochs at which every rate is multiplied by ``lr_gamma``.
        lr_gamma: Step-decay factor.
        augment: Training augmentation.
        preprocess: Crop, scaling and validation rotations, stored in the checkpoint's metadata.
        max_train_images: Cap on training cells (stratified, for smoke runs).
        max_val_images: Cap on validation cells (stratified, for smoke runs).
        num_workers: Data-loader worker processes.
        amp: CUDA mixed precision (ignored on CPU).
        deterministic: Ask torch for deterministic kernels.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
        val_tta: Validation TTA implementation: ``pil`` (the paper's per-image PIL
            rotations), ``gather`` (``edgeleuk.modeling.tta``'s batched index gather, proven
            equal to ``pil``, much faster on a GPU) or ``auto`` (gather if available).
        threads: CPU threads for torch (default: torch's choice).
        smoke: A recipe that only exercises the pipeline (toy size): its models say they are
            smoke models (``edgeleuk card``, ``demo --fast``).
        um_per_px: Micrometres per pixel of the training cells, as the user states it for real
            data (C-NMC's is not published with the images); written into the checkpoint, so that
            ``--fields`` can cut cells at the model's scale. Unset: the data's own record
            (``edgeleuk synth`` writes its scale into ``SYNTHETIC.txt``), else the model has none.
    """

    name: str = ""
    description: str = ""
    arch: str = PAPER_ARCH
    pretrained: str | None = None
    seed: int = 0
    train_folds: tuple[int, ...] = (0, 1, 2)
    val_split: str = "prelim"
    epochs: int = 6
    batch_size: int = 16
    val_batch_size: int | None = None
    lr: LearningRates = field(default_factory=LearningRates)
    lr_milestones: tuple[int, ...] = (2, 4)
    lr_gamma: float = 0.1
    augment: Augment = field(default_factory=Augment)
    preprocess: Preprocess = field(default_factory=Preprocess)
    max_train_images: int | None = None
    max_val_images: int | None = None
    num_workers: int = 4
    amp: bool = False
    deterministic: bool = False
    device: str = "auto"
    val_tta: str = "auto"
    threads: int | None = None
    smoke: bool = False
    um_per_px: float | None = None

    def __post_init__(self) -> None:
        if self.um_per_px is not None:
            try:
                check_um_per_px(self.um_per_px)
            except CheckpointError as exc:
                raise ConfigError(str(exc)) from None
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"arch {self.arch!r} is not one of {sorted(ARCHITECTURES)}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size}
        positive.update({k: getattr(self, k) for k in ("val_batch_size", "max_train_images",
                                                       "max_val_images", "threads")
                         if getattr(self, k) is not None})
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"{key} must be at least 1, got {value}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers}")
        if any(rate <= 0 for rate in self.lr.as_dict().values()) or self.lr_gamma <= 0:
            raise ConfigError("learning rates and lr_gamma must be positive")
        if set(self.lr.as_dict()) != set(GROUPS):
            raise ConfigError(f"lr needs exactly the groups {sorted(GROUPS)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.val_tta not in ("auto", "pil", "gather"):
            raise ConfigError(f"val_tta must be auto, pil or gather, got {self.val_tta!r}")
        if self.val_split != "prelim":
            raise ConfigError("val_split must be 'prelim' (the only labelled test split)")
        if not self.train_folds:
            raise ConfigError("train_folds must name at least one fold")

    def replace(self, **changes) -> Recipe:
        """A copy with some fields changed (command-line overrides such as ``--seed``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-able copy (stored in ``last.pt`` and run summaries)."""
        d = dataclasses.asdict(self)
        for key in ("train_folds", "lr_milestones"):
            d[key] = list(d[key])
        d["preprocess"]["mean"] = list(self.preprocess.mean)
        d["preprocess"]["std"] = list(self.preprocess.std)
        return d

    def identity(self) -> dict:
        """:meth:`to_dict` without :data:`RESULT_NEUTRAL` fields: what a resumed run must match."""
        return {k: v for k, v in self.to_dict().items() if k not in RESULT_NEUTRAL}


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load a packaged recipe (``paper``, or ``train/paper.toml`` as documented) or any recipe file.

    Raises:
        ConfigError: Missing file, invalid TOML, unknown keys or invalid values.
    """
    path = resolve_named(name_or_path, "recipes")
    recipe = load_toml(Recipe, path)
    return recipe if recipe.name else recipe.replace(name=path.name.removesuffix(".toml"))
