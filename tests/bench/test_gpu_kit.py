"""The GPU check kit in benchmarks/gpu: joining the wheel's parts, and the CPU-only dry run.

The GPU steps themselves need a GPU; here the parts of a small stand-in "wheel" are joined and
checked, and (slow) the whole check runs on ONNX Runtime's CPU provider with the tiny network.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "benchmarks" / "gpu" / "check.sh"
WHEEL = "onnxruntime_gpu-0.0.0-cp312-cp312-manylinux_2_28_x86_64.whl"
# Fixed stand-in bytes: a random draw made the damage test pass by chance 1 time in 256.
DATA = random.Random(0).randbytes(3500)


def _kit(tmp_path: Path, data: bytes, part: int = 1000) -> dict[str, str]:
    """Parts of ``data`` as prepare.sh writes them, and the environment that points check.sh at them."""
    parts = tmp_path / "parts"
    parts.mkdir()
    sums = [f"{hashlib.sha256(data).hexdigest()}  {WHEEL}"]
    for i in range(0, len(data), part):
        name = f"{WHEEL}.part-{i // part:02d}"
        (parts / name).write_bytes(data[i : i + part])
        sums.append(f"{hashlib.sha256(data[i : i + part]).hexdigest()}  {name}")
    (parts / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    (tmp_path / "wheel.sha256").write_text(sums[0] + "\n")
    return {**os.environ, "GPU_KIT_PARTS": str(parts), "GPU_KIT_WORK": str(tmp_path / "work"),
            "GPU_KIT_SHA256": str(tmp_path / "wheel.sha256"), "PYTHON": sys.executable}


def _join(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(CHECK), "join"], env=env, capture_output=True, text=True, timeout=60)


def test_parts_join_into_the_wheel(tmp_path: Path) -> None:
    data = DATA
    done = _join(_kit(tmp_path, data))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "work" / WHEEL).read_bytes() == data


def test_a_missing_part_is_named(tmp_path: Path) -> None:
    env = _kit(tmp_path, DATA)
    (Path(env["GPU_KIT_PARTS"]) / f"{WHEEL}.part-02").unlink()
    done = _join(env)
    assert done.returncode == 2 and f"parts still to send to {env['GPU_KIT_PARTS']}: {WHEEL}.part-02" in done.stderr


def test_a_damaged_part_or_wrong_wheel_is_refused(tmp_path: Path) -> None:
    env = _kit(tmp_path, DATA)
    part = Path(env["GPU_KIT_PARTS"]) / f"{WHEEL}.part-01"
    good = part.read_bytes()
    part.write_bytes(bytes([good[0] ^ 0xFF]) + good[1:])  # always a different first byte
    done = _join(env)
    assert done.returncode == 1 and "damaged" in done.stderr
    assert not (tmp_path / "work" / WHEEL).exists()
    # Without the per-part list, the joined file's own SHA-256 still catches it.
    (Path(env["GPU_KIT_PARTS"]) / "SHA256SUMS").unlink()
    done = _join(env)
    assert done.returncode == 1 and "expected" in done.stderr and not (tmp_path / "work" / WHEEL).exists()


def test_prepared_sha256_names_the_cuda13_cp312_wheel() -> None:
    line = (REPO / "benchmarks" / "gpu" / "wheel.sha256").read_text().split()
    assert len(line) == 2 and len(line[0]) == 64
    assert line[1] == "onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl"


@pytest.mark.slow
def test_cpu_only_dry_run_writes_a_results_file_that_says_no_gpu(tmp_path: Path) -> None:
    """Every step of the check, on the CPU provider with the tiny network (exports: slow)."""
    env = {**_kit(tmp_path, b"unused"), "CHECK_CPU_ONLY": "1", "GPU_KIT_RESULTS": str(tmp_path / "R.md"),
           "PYTHONPATH": str(REPO)}
    done = subprocess.run(["bash", str(CHECK)], env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    text = (tmp_path / "R.md").read_text()
    assert text.startswith("# GPU check, CPU-only dry run: NO GPU was used")
    for section in ("## Machine", "## fp32: export and parity gate", "## fp16: export and parity gate",
                    "## fp32: where it ran", "## TensorRT", "## Speed with IO binding", "## `edgeleuk bench`"):
        assert section in text
    assert "failed**" not in text and "GATE REFUSED" not in text
    assert "off the CPU: **none**" in text  # the dry run's own placement check found every node
