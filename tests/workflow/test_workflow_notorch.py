"""The workflow modules run on a microscope PC without torch."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "edgeleuk.workflow.threshold",
    "edgeleuk.workflow.calibrate",
    "edgeleuk.io.modelwrite",
    "edgeleuk.workflow.watch",
    "edgeleuk.workflow.report",
]


def test_workflow_imports_no_torch() -> None:
    code = "import sys\n" + "".join(f"import {m}\n" for m in MODULES) + "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
