"""After OpenVINO work, Ctrl-C still raises KeyboardInterrupt (CHANGELOG.md, 0.1.0 Fixed).

OpenVINO's CPU plugin gives a thread that compiles on a ``Core`` its own alternate signal stack
and unmaps it when the Core is released; Cores released in creation order left the thread on an
unmapped stack, so the next signal Python handles killed the process with SIGSEGV (exit -11).
Each case runs in its own process: before the fix it dies, which would take pytest with it.
"""

from __future__ import annotations

import ctypes
import mmap
import subprocess
import sys
from pathlib import Path

import pytest
from runtime_support import build_onnx
from signal_support import ALTSTACK_PRELUDE

from edgeleuk.runtime import altstack

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux signal stacks only")

SCRIPT = (
    r"""
import ctypes, gc, signal, sys
from pathlib import Path

how, model = sys.argv[1], Path(sys.argv[2])
# A background job (nohup, `cmd &` in a script) starts with SIGINT ignored, and Python then leaves it
# so: install Python's own handler, as an interactive start would have, so the signal is handled.
signal.signal(signal.SIGINT, signal.default_int_handler)

"""
    + ALTSTACK_PRELUDE
    + r"""


def dangle_like_openvino():
    # What the CPU plugin leaves behind: an alternate stack the kernel cannot write. Kept mapped
    # without access (not unmapped) so that no later allocation can land there by chance.
    size = 16384
    sp = libc.mmap(None, size, 3, 0x22, -1, 0)  # read/write, private anonymous
    assert libc.sigaltstack(ctypes.byref(StackT(sp, 0, size)), None) == 0
    assert libc.mprotect(sp, size, 0) == 0


def two_cores_released_in_creation_order(make):
    first, second = make(), make()
    del first
    gc.collect()
    del second
    gc.collect()


if how == "raw":  # does this OpenVINO dangle the stack at all? (no signal sent)
    import openvino as ov
    from edgeleuk.runtime import altstack

    def make():
        core = ov.Core()
        return core, core.compile_model(core.read_model(str(model)), "CPU")

    two_cores_released_in_creation_order(make)
    print("dangling" if not altstack.usable(altstack.current()) else "usable", flush=True)
    sys.exit(0)
if how == "backends":  # what bench, gates and predict do: several backends in one process
    from edgeleuk.runtime.base import BackendOptions
    from edgeleuk.runtime.openvino import OpenVINOBackend

    two_cores_released_in_creation_order(lambda: OpenVINOBackend(model, BackendOptions()))
if how == "nncf":  # NNCF's own Cores, during the INT8 export's quantization (simulated)
    import types
    import numpy as np
    import edgeleuk.exporting.int8 as int8
    from edgeleuk.exporting.imagesets import ImageSet

    def quantize(ov_model, *args, **kwargs):
        dangle_like_openvino()
        return ov_model

    fake = types.SimpleNamespace(__version__="fake", Dataset=list, QuantizationPreset=str, quantize=quantize,
                                 TargetDevice=types.SimpleNamespace(CPU="CPU"), IgnoredScope=dict)
    int8._import_nncf = lambda: fake
    cells = ImageSet(np.zeros((1, 8, 8, 3), np.uint8), None, "test", "train")
    profile = types.SimpleNamespace(int8_preset="performance", accuracy_control=False)
    int8.quantize_onnx(model, cells, profile, cells, None)
try:
    signal.raise_signal(signal.SIGINT)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
"""
)


def _run(how: str, model: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, how, str(model)], check=False, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_onnx(tmp_path_factory.mktemp("ovsig") / "tiny.onnx")


def test_ctrl_c_after_openvino_backends_released_in_creation_order(model: Path):
    pytest.importorskip("openvino")
    raw = _run("raw", model)
    assert raw.returncode == 0, raw.stderr[-2000:]
    if "dangling" not in raw.stdout:
        pytest.skip("this OpenVINO leaves the alternate signal stack usable: nothing to reproduce")
    done = _run("backends", model)
    assert done.returncode == 0, f"exit {done.returncode} (-11: SIGSEGV)\n{done.stderr[-2000:]}"
    assert "KeyboardInterrupt" in done.stdout


def test_ctrl_c_after_int8_quantization_that_unmapped_the_signal_stack(model: Path):
    pytest.importorskip("openvino")
    done = _run("nncf", model)
    assert done.returncode == 0, f"exit {done.returncode} (-11: SIGSEGV)\n{done.stderr[-2000:]}"
    assert "KeyboardInterrupt" in done.stdout


def test_kept_signal_stack_puts_back_a_stack_replaced_inside(monkeypatch):
    before = altstack.current()
    assert before is not None and altstack.usable(before)
    other = mmap.mmap(-1, 65536)
    address = ctypes.addressof(ctypes.c_char.from_buffer(other))
    try:
        with altstack.kept_signal_stack():
            altstack._set((address, 0, len(other)))
            assert altstack.current() == (address, 0, len(other))
        assert altstack.current() == before
    finally:
        altstack._set(before)
    monkeypatch.setattr(altstack, "_libc", lambda: None)  # not Linux: nothing read, nothing done
    assert altstack.current() is None
    with altstack.kept_signal_stack():
        pass
