"""Pure parts of edgeleuk.bench: percentiles, timing loops, gates, machine info, planning, report."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgeleuk.bench import memory
from edgeleuk.bench.cases import Case, ModelFile, plan_cases
from edgeleuk.bench.machine import (
    MachineInfo,
    collect_machine,
    cpu_info,
    load_average,
    numpy_cpu_flags,
    parse_cpuinfo,
    usable_cores,
)
from edgeleuk.bench.memory import os_peak_rss, run_measured, self_peak_rss
from edgeleuk.bench.options import BenchOptions
from edgeleuk.bench.report import OK, PARITY_FAILED, UNAVAILABLE, BenchReport, Row
from edgeleuk.bench.timing import Latency, measure_throughput, percentiles, repeat_for
from edgeleuk.bench.worker import Measurement
from edgeleuk.core.errors import UsageError
from edgeleuk.core.numerics import sigmoid
from edgeleuk.evaluation.parity import Parity, Thresholds

FP32 = Thresholds("cpu-fp32", 1.0, 1e-4)


def _parity(n: int, wrong: int) -> Parity:
    return Parity(n=n, agreement=(n - wrong) / n, disagreements=wrong, max_abs_logit_delta=0.0,
                  mean_abs_logit_delta=0.0, max_abs_prob_delta=0.0)


class FakeClock:
    """A clock that advances by ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


# --- timing -----------------------------------------------------------------------------------

def test_percentiles_on_known_inputs():
    p = percentiles(list(range(1, 101)))
    assert p == pytest.approx({"p50": 50.5, "p90": 90.1, "p99": 99.01})
    assert percentiles([7.0]) == {"p50": 7.0, "p90": 7.0, "p99": 7.0}
    assert percentiles([4.0, 1.0, 3.0, 2.0], qs=(0, 100)) == {"p0": 1.0, "p100": 4.0}


def test_percentiles_refuse_empty():
    with pytest.raises(ValueError):
        percentiles([])


def test_latency_from_seconds_in_ms():
    lat = Latency.from_seconds([0.001, 0.002, 0.003])
    assert lat.p50_ms == pytest.approx(2.0)
    assert lat.runs == 3 and lat.mean_ms == pytest.approx(2.0)


def test_repeat_for_runs_at_least_min_runs_even_when_budget_spent():
    calls = []
    times = repeat_for(calls.append, budget_s=0.0, min_runs=10, max_runs=100, clock=FakeClock(1.0))
    assert len(times) == 10 and calls == list(range(10))


def test_repeat_for_stops_at_budget_and_at_max_runs():
    # Each clock read advances 0.125 s (exact in binary), so a call takes 0.125 s and the clock reads
    # 0.25 s more after each: the budget of 1 s is spent exactly at the end of the 4th call.
    times = repeat_for(lambda i: None, budget_s=1.0, min_runs=2, max_runs=1000, clock=FakeClock(0.125))
    assert times == [0.125] * 4
    assert len(repeat_for(lambda i: None, budget_s=1.0, min_runs=6, max_runs=1000, clock=FakeClock(0.125))) == 6
    assert len(repeat_for(lambda i: None, budget_s=1e9, min_runs=1, max_runs=7, clock=FakeClock(0.1))) == 7


def test_measure_throughput_counts_cells_and_cycles():
    cells = np.arange(5)
    seen = []
    rate = measure_throughput(lambda b: seen.extend(b.tolist()), cells, batch=2, budget_s=0.0, min_batches=4,
                              clock=FakeClock(0.5))
    assert seen == [0, 1, 2, 3, 4, 0, 1, 2]  # in order, wrapping round
    assert rate == pytest.approx(8 / 2.0)  # 8 cells over 4 clock reads after start


# --- options -------------------------------------------------------------------------------------

def test_options_batch_sizes_and_quick():
    assert BenchOptions(batch=8).batch_sizes(100) == (1, 2, 4, 8)
    assert BenchOptions(batch=6).batch_sizes(100) == (1, 2, 4, 6)
    assert BenchOptions(batch=8).batch_sizes(3) == (1, 2, 3)
    assert BenchOptions(batch=8, quick=True).batch_sizes(100) == (1, 8)
    q = BenchOptions(quick=True).effective()
    assert q.budget_s <= 0.2 and q.min_runs <= 3
    assert BenchOptions().effective() == BenchOptions()


@pytest.mark.parametrize("kwargs", [{"backend": "tpu"}, {"n": 0}, {"threads": 0}, {"min_runs": 5, "max_runs": 2}])
def test_options_reject_bad_values(kwargs):
    with pytest.raises(UsageError):
        BenchOptions(**kwargs)


# --- machine --------------------------------------------------------------------------------------

CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx2 avx512f avx512_vnni amx_bf16 amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx2 avx512f avx512_vnni amx_bf16 amx_int8
"""


def test_parse_cpuinfo_reads_model_cores_and_bf16():
    cpu = parse_cpuinfo(CPUINFO)
    assert cpu.model == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu.logical == 2 and cpu.bf16 and cpu.int8_dot


def test_parse_cpuinfo_without_bf16():
    cpu = parse_cpuinfo("processor : 0\nmodel name : Old CPU\nflags : fpu sse2 avx2\n")
    assert not cpu.bf16 and not cpu.int8_dot and cpu.logical == 1


def test_numpy_features_in_cpuinfo_spelling():
    found = numpy_cpu_flags({"AVX512BF16": True, "AVX512VNNI": False, "AVX2": True, "NEON": False})
    assert found == {"avx512_bf16", "avx2"}
    assert isinstance(numpy_cpu_flags(), frozenset)  # this machine's, whatever they are


def test_cpu_info_without_proc_cpuinfo(tmp_path: Path):
    """Off Linux there is no /proc/cpuinfo: numpy's features, psutil's counts and platform's name remain."""
    cpu = cpu_info(tmp_path / "no-such-cpuinfo")
    assert cpu.model and cpu.logical >= 1 and cpu.flags >= numpy_cpu_flags()
    assert cpu.physical is None or 1 <= cpu.physical <= cpu.logical


def test_cpu_info_adds_what_only_proc_cpuinfo_names(tmp_path: Path):
    (tmp_path / "cpuinfo").write_text(CPUINFO, encoding="utf-8")
    cpu = cpu_info(tmp_path / "cpuinfo")
    assert cpu.model == "Intel(R) Xeon(R) Platinum 8480+" and {"amx_bf16", "amx_int8"} <= cpu.flags
    assert cpu.bf16 and cpu.int8_dot


def test_collect_machine_reports_cores_memory_and_load():
    m = collect_machine(None)
    assert 1 <= m.usable_cores == usable_cores() and m.threads == m.usable_cores
    assert m.memory_bytes > 0 and m.logical_cores >= 1
    assert load_average() is None or load_average() >= 0.0
    assert "GiB" in "\n".join(m.header_lines())


def _machine(**kw) -> MachineInfo:
    base = {"cpu": "Test CPU", "logical_cores": 2, "usable_cores": 2, "bf16": False, "int8_dot": True, "gpus": (),
                "libraries": {"numpy": "2.0"}, "threads": 2}
    return MachineInfo(**{**base, **kw})


def test_machine_header_says_bf16_and_gpu():
    text = "\n".join(_machine().header_lines())
    assert "bf16 instructions (avx512_bf16/amx_bf16): no" in text and "GPU: none" in text
    assert "2 usable of 2 logical cores\n" in text + "\n"  # no physical count or memory when unknown
    text = "\n".join(_machine(physical_cores=1, memory_bytes=8 * 2**30).header_lines())
    assert "2 logical cores (1 physical); memory 8.0 GiB" in text
    text = "\n".join(_machine(bf16=True, gpus=("NVIDIA H100",)).header_lines())
    assert "amx_bf16): yes" in text and "GPU: NVIDIA H100" in text


# --- memory ---------------------------------------------------------------------------------------

HOLD = "import time; b = bytearray({n}); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.5); print('hi')"


def test_run_measured_reports_the_childs_own_peak():
    small = run_measured([sys.executable, "-c", HOLD.format(n=1000)])
    big = run_measured([sys.executable, "-c", HOLD.format(n=300_000_000)])
    assert small.returncode == 0 and small.stdout.strip() == "hi"
    assert big.peak_rss - small.peak_rss > 250_000_000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux inherits ru_maxrss across fork/exec")
def test_run_measured_is_not_inflated_by_a_big_parent():
    ballast = bytearray(400_000_000)
    ballast[::4096] = b"x" * len(ballast[::4096])  # make the parent's peak large
    small = run_measured([sys.executable, "-c", HOLD.format(n=1000)])
    assert small.peak_rss < 200_000_000
    del ballast


def test_run_measured_passes_exit_status():
    assert run_measured([sys.executable, "-c", "import sys; sys.exit(3)"]).returncode == 3


def test_run_measured_where_the_os_keeps_no_peak(monkeypatch: pytest.MonkeyPatch):
    """As on macOS: no high-water mark of a live process; sampled RSS and the child's ru_maxrss give the peak."""
    monkeypatch.setattr(memory, "os_peak_rss", lambda pid=None: None)
    small = run_measured([sys.executable, "-c", HOLD.format(n=1000)])
    big = run_measured([sys.executable, "-c", HOLD.format(n=300_000_000)])
    assert small.returncode == 0 and big.returncode == 0
    assert big.peak_rss > 300_000_000 and small.peak_rss < big.peak_rss


def test_this_process_peak_is_at_least_its_rss():
    peak = os_peak_rss()
    assert peak is None or peak >= memory.rss_now() // 2  # the OS's own figure, where it keeps one
    assert self_peak_rss() >= memory.rss_now() // 2 > 0


# --- planning -------------------------------------------------------------------------------------

def _mf(name: str, kind: str = "onnx", precision: str = "fp32") -> ModelFile:
    return ModelFile(Path(name), kind, precision, 1000, None, 0.5)


def test_plan_rows_for_fp32_onnx_and_int8_ir():
    avail = {"cpu": None, "openvino": None, "cuda": "no GPU", "torch": None}
    cases = plan_cases([_mf("m.onnx"), _mf("q.xml", "openvino", "int8")], "all", True, True, avail)
    labels = [c.label for c in cases]
    assert labels == ["torch eager fp32", "cpu fp32", "openvino fp32", "openvino bf16", "cuda fp32", "openvino int8",
                      "openvino int8+bf16"]
    assert cases[-1].precision == "int8" and cases[-1].options == {"precision": "bf16"}  # gated as int8
    assert next(c for c in cases if c.backend == "cuda").skip == "no GPU"
    assert next(c for c in cases if c.precision == "bf16").options == {"precision": "bf16"}


def test_plan_marks_bf16_unavailable_without_cpu_support_and_filters_backend():
    avail = {"cpu": None, "openvino": None, "cuda": None, "torch": None}
    cases = plan_cases([_mf("m.onnx")], "openvino", False, False, avail)
    assert [c.label for c in cases] == ["torch eager fp32", "openvino fp32", "openvino bf16"]
    assert "no --checkpoint" in cases[0].skip
    assert "avx512_bf16" in cases[2].skip


# --- report ---------------------------------------------------------------------------------------

def _measured(p50: float, cells_per_s: float) -> Measurement:
    return Measurement(status=OK, engine={"engine": "x 1.0"}, load_s=0.1, warmup_s=0.2,
                       latency={"p50_ms": p50, "p90_ms": p50, "p99_ms": p50, "runs": 10, "mean_ms": p50},
                       throughput={1: cells_per_s}, peak_rss=100_000_000, isolated=True)


def _report(rows: list[Row], explicit: str | None = None, synthetic: bool = True) -> BenchReport:
    return BenchReport(machine=_machine(), options={}, cells={"source": "test cells", "synthetic": synthetic},
                       models=[_mf("m.onnx")], rows=rows, explicit_backend=explicit)


def test_report_markdown_has_both_tables_and_synthetic_line():
    torch_row = Row(Case("torch", None, "fp32"), OK, measurement=_measured(100.0, 10.0))
    cpu = Row(Case("cpu", Path("m.onnx"), "fp32"), OK, size_bytes=2_000_000, measurement=_measured(40.0, 25.0),
              parity=_parity(8, 0), thresholds=FP32, speedup_latency=2.5, speedup_throughput=2.5)
    md = _report([torch_row, cpu]).to_markdown()
    assert "SYNTHETIC" in md and "### Speed" in md and "### Parity" in md
    assert "| cpu fp32 (m.onnx) | ok | 2.0 |" in md
    assert "40.0 / 40.0 / 40.0 (10)" in md and "2.50" in md and "100.00% (8/8)" in md
    assert "SYNTHETIC" not in _report([torch_row, cpu], synthetic=False).to_markdown()


def test_report_exit_codes():
    ok = Row(Case("cpu", Path("m.onnx"), "fp32"), OK)
    failed = Row(Case("cpu", Path("m.onnx"), "fp32"), PARITY_FAILED, thresholds=FP32, failures=["x"])
    cuda_gone = Row(Case("cuda", Path("m.onnx"), "fp32"), UNAVAILABLE, reason="no GPU")
    assert _report([ok, cuda_gone]).exit_code() == 0  # --backend all: unavailable rows are not failures
    assert _report([ok, failed]).exit_code() == 1
    assert _report([cuda_gone], explicit="cuda").exit_code() == 2
    md = _report([ok, failed]).to_markdown()
    assert "**FAIL**" in md and "PARITY FAILED" in md


def test_report_says_parity_not_checked_without_reference():
    row = Row(Case("cpu", Path("m.onnx"), "fp32"), OK, measurement=_measured(1.0, 1.0))
    md = _report([row]).to_markdown()
    assert "PARITY NOT CHECKED" in md and "not checked" in md


# --- gating rows with the export profile's thresholds ---------------------------------------------

def _rows_against(case: Case, export: dict, ref_logits: list[float], logits: list[float]) -> Row:
    from edgeleuk.bench.cells import Cells
    from edgeleuk.bench.runner import _build_rows

    def measured(lg: list[float]) -> Measurement:
        m = _measured(10.0, 10.0)
        m.logits, m.probs = lg, sigmoid(np.asarray(lg)).tolist()
        return m

    mf = ModelFile(Path("m.onnx"), "onnx", "fp32", 1000, None, 0.5, export=export)
    images = np.zeros((len(logits), 2, 2, 3), np.uint8)
    cells = Cells(images=images, labels=None, source="test", synthetic=True)
    cases, results = [Case("torch", None, "fp32"), case], [measured(ref_logits), measured(logits)]
    rows = _build_rows(cases, results, {mf.path: mf}, cells, 0.5)
    return rows[1]


def test_rows_are_gated_by_the_recorded_profile_and_its_compute_table():
    ref, moved = [-2.0, 1.0, 3.0], [-2.0, 1.001, 3.0]  # max|dlogit| 1e-3: beyond fp32's 1e-4, labels agree
    strict = _rows_against(Case("cpu", Path("m.onnx"), "fp32"), {"profile": "cpu-fp32"}, ref, moved)
    assert strict.status == PARITY_FAILED and strict.thresholds.name == "cpu-fp32"
    bf16 = Case("openvino", Path("m.onnx"), "bf16", {"precision": "bf16"}, "bf16")
    loose = _rows_against(bf16, {"profile": "cpu-fp32"}, ref, moved)
    assert loose.status == OK and loose.thresholds.name == "cpu-fp32 computed in bf16"
    recorded = {"profile": {"name": "mine", "min_agreement": 1.0, "max_abs_logit_delta": 0.01}}
    assert _rows_against(Case("cpu", Path("m.onnx"), "fp32"), recorded, ref, moved).status == OK


def test_a_row_without_thresholds_is_an_error_row_not_a_crash():
    row = _rows_against(Case("openvino", Path("m.onnx"), "fp8"), {"profile": "cpu-fp32"}, [1.0], [1.0])
    assert row.status == "error" and "[compute.fp8]" in row.reason
