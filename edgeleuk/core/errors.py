"""Exceptions that the CLI turns into documented exit codes.

Exit codes: 0 success, 1 the job ran but failed (gate breach, ``--strict`` with
failed files, an engine fault, an output that cannot be written), 2 usage error
(bad arguments, missing file, unavailable backend, a model file that breaks the contract).
"""

from __future__ import annotations


class EdgeleukError(Exception):
    """Base class; ``exit_code`` is what the CLI returns for it."""

    exit_code = 1


class UsageError(EdgeleukError):
    """The request cannot be served as asked: wrong arguments, missing inputs."""

    exit_code = 2


class ConfigError(UsageError):
    """A TOML recipe or profile is malformed or holds unknown keys."""


class BackendUnavailable(UsageError):
    """An explicitly requested backend cannot run here; the message names the fix."""


class CheckpointError(UsageError):
    """A checkpoint cannot be loaded safely or does not match the architecture."""


class DataError(UsageError):
    """A data folder is missing, empty or lacks a split or class the job needs."""


class GateFailed(EdgeleukError):
    """An exported or benchmarked model does not match the PyTorch original."""

    exit_code = 1


class CalibrationRefused(EdgeleukError):
    """Calibration found no usable threshold (sensitivity or specificity 0): no model is written (exit 1)."""

    exit_code = 1


class EngineFault(EdgeleukError):
    """The inference engine failed on a batch: not the images' fault, so never an error row.

    Out of memory, a device lost, a model file swapped mid-session: ``watch`` retries
    with backoff and then stops; ``predict`` writes what it classified and stops (exit 1).
    """

    exit_code = 1


class OutputError(EdgeleukError):
    """Results could not be written (disk full, read-only folder) once work had started (exit 1).

    Rows already written stay intact and nothing half-written is left; the message says
    what was kept and how to continue.
    """

    exit_code = 1
