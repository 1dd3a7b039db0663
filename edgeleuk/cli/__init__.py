"""The ``edgeleuk`` command line: parses arguments and calls library functions.

Exit codes: 0 success; 1 the job ran but failed (parity gate breached, ``--strict``
with failed files, an engine fault, an output that cannot be written); 2 usage error
(bad arguments, missing inputs, unavailable backend, a model file that breaks the contract,
a command whose extra is not installed).

Conventions every command keeps: a model file is ``--model/-m``, a checkpoint
``--checkpoint``, images to measure or calibrate on ``--data``; ``--out`` is a file where
one file is written and a folder where several are (each ``--out`` help says which).
Older spellings (a positional MODEL or CKPT, ``export --calib``) still work with a note
on stderr.

Logging (stderr): INFO by default, warnings and errors only with ``--quiet`` (results and
summaries still go to stdout), DEBUG with ``--verbose``. The libraries' own chatter (NNCF's
INFO lines, torch's log and Python warnings) appears only with ``--verbose``.

Imports: only what the parser itself needs is imported here (typer, the backend
registry for the choices and flags, the TTA modes, predict's defaults), so
``edgeleuk --help`` loads no engine and no command's library. Each command imports
its library module when it runs (``# lazy:`` says why where it matters): the
torch, SciPy and NNCF ones behind :func:`edgeleuk.cli.base.needs_train`, which turns a missing
training library into exit 2 naming the extra.
"""

from __future__ import annotations

from edgeleuk.cli import card, deployed, fields, serving, training  # noqa: F401 - each module registers its commands on app
from edgeleuk.cli.base import BackendChoice, BenchBackend, app
from edgeleuk.workflow.outputs import DEFAULT_OUT

__all__ = ["DEFAULT_OUT", "BackendChoice", "BenchBackend", "app", "main"]


def main() -> None:
    """Console-script entry point (``edgeleuk``)."""
    app()
