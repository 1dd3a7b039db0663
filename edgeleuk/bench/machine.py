"""What the benchmark ran on: CPU, bf16 support, memory, GPU, library versions, thread settings.

Portable: cores and memory come from psutil and the standard library, CPU
features from numpy's runtime dispatcher (which probes the CPU itself on every
OS), refined by ``/proc/cpuinfo`` where it exists (Linux: the model name, and the
AMX and AVX-VNNI flags numpy does not name). Torch-free and import-free for the
engines: versions come from package metadata, so describing the machine does not
load (or initialise the thread pools of) torch, ONNX Runtime or OpenVINO.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import psutil

from edgeleuk.runtime.registry import BACKENDS

# CPU flags (``/proc/cpuinfo`` spelling) that give OpenVINO native bf16 compute (else it runs f32 or
# emulates). Every x86 CPU with AMX-BF16 also has AVX512-BF16, which numpy detects on any OS.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OV_CPU_THREADS")
#: numpy's feature names whose ``/proc/cpuinfo`` spelling is not just the lower case.
NUMPY_FLAG_NAMES = {"AVX512BF16": "avx512_bf16", "AVX512VNNI": "avx512_vnni", "AVX512FP16": "avx512_fp16"}


@dataclass(frozen=True)
class CpuInfo:
    """The CPU: model name, processors and instruction-set flags.

    Attributes:
        model: CPU model name.
        logical: Logical processors.
        flags: Instruction-set flags, in ``/proc/cpuinfo`` spelling (``avx512_bf16``).
        physical: Physical cores; None where the OS does not say.
    """

    model: str
    logical: int
    flags: frozenset[str] = frozenset()
    physical: int | None = None

    @property
    def bf16(self) -> bool:
        return any(f in self.flags for f in BF16_FLAGS)

    @property
    def int8_dot(self) -> bool:
        """VNNI/AMX int8 dot products (what makes INT8 fast on CPU)."""
        return any(f in self.flags for f in INT8_FLAGS)


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse the text of Linux's ``/proc/cpuinfo`` (x86 and ARM spellings)."""
    model, flags, logical = "", frozenset(), 0
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            logical += 1
        elif key in ("model name", "Model", "Hardware") and not model:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model=model or platform.processor() or "unknown", logical=logical, flags=flags)


def numpy_cpu_flags(features: dict[str, bool] | None = None) -> frozenset[str]:
    """The CPU features numpy's dispatcher found, in ``/proc/cpuinfo`` spelling; empty if it says none.

    Args:
        features: numpy's ``__cpu_features__`` (name -> found); None reads this process's.
    """
    if features is None:
        try:
            from numpy._core._multiarray_umath import __cpu_features__ as features  # numpy >= 2
        except ImportError:
            try:
                from numpy.core._multiarray_umath import __cpu_features__ as features  # numpy 1.26
            except ImportError:
                return frozenset()
    return frozenset(NUMPY_FLAG_NAMES.get(name, name.lower()) for name, found in features.items() if found)


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """This machine's CPU: numpy's features and psutil's counts, with ``cpuinfo`` where it exists."""
    try:
        proc = parse_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:  # not Linux: no refinement
        proc = None
    model = (proc.model if proc is not None else "") or platform.processor() or platform.machine() or "unknown"
    return CpuInfo(
        model=model, logical=psutil.cpu_count(logical=True) or os.cpu_count() or 0,
        flags=numpy_cpu_flags() | (proc.flags if proc is not None else frozenset()),
        physical=psutil.cpu_count(logical=False),
    )


def load_average() -> float | None:
    """The 1-minute load average; None where the OS keeps none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def gpu_names(timeout: float = 10.0) -> tuple[str, ...]:
    """NVIDIA GPU names from ``nvidia-smi``; empty without a driver."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
            timeout=timeout, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in out.splitlines() if line.strip())


def libraries() -> tuple[str, ...]:
    """numpy, every registered backend's engine libraries, the reference's torch, and edgeleuk itself."""
    engines = (lib for cls in BACKENDS.values() for lib in cls.libraries)
    return tuple(dict.fromkeys(["numpy", *engines, "torch", "edgeleuk"]))


def library_versions(names: tuple[str, ...] | None = None) -> dict[str, str]:
    """Installed versions of the libraries that matter here (absent ones are left out)."""
    found = {}
    for name in libraries() if names is None else names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, e.g. a container's CPU set; all of them on macOS)."""
    try:
        return len(psutil.Process().cpu_affinity()) or os.cpu_count() or 1
    except (AttributeError, OSError, psutil.Error):  # macOS has no affinity masks
        return os.cpu_count() or 1


@dataclass(frozen=True)
class MachineInfo:
    """The benchmark's header.

    Attributes:
        cpu: CPU model name.
        logical_cores: Logical processors.
        usable_cores: Cores this process may run on.
        bf16: Native bf16 instructions (``avx512_bf16`` or ``amx_bf16``).
        int8_dot: VNNI/AMX int8 instructions.
        gpus: NVIDIA GPU names; empty if none.
        libraries: Package versions.
        threads: Inference threads every engine was given.
        thread_env: Thread-related environment variables that were set.
        load_avg: 1-minute load average before the run (other processes sharing the cores).
        platform: OS and Python.
        physical_cores: Physical cores; None where the OS does not say.
        memory_bytes: Physical memory.
    """

    cpu: str
    logical_cores: int
    usable_cores: int
    bf16: bool
    int8_dot: bool
    gpus: tuple[str, ...]
    libraries: dict[str, str]
    threads: int
    thread_env: dict[str, str] = field(default_factory=dict)
    load_avg: float | None = None
    platform: str = ""
    physical_cores: int | None = None
    memory_bytes: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gpus"] = list(self.gpus)
        return d

    def header_lines(self) -> list[str]:
        """Markdown bullet lines for the report header."""
        libs = ", ".join(f"{k} {v}" for k, v in self.libraries.items())
        env = ", ".join(f"{k}={v}" for k, v in self.thread_env.items()) or "none set"
        load = "unknown" if self.load_avg is None else f"{self.load_avg:.2f}"
        physical = "" if self.physical_cores is None else f" ({self.physical_cores} physical)"
        memory = "" if self.memory_bytes is None else f"; memory {self.memory_bytes / 2**30:.1f} GiB"
        return [
            f"- CPU: {self.cpu}; {self.usable_cores} usable of {self.logical_cores} logical cores{physical}{memory}",
            (f"- bf16 instructions (avx512_bf16/amx_bf16): {'yes' if self.bf16 else 'no'}; "
             f"int8 dot products (VNNI/AMX): {'yes' if self.int8_dot else 'no'}"),
            f"- GPU: {', '.join(self.gpus) if self.gpus else 'none'}",
            (f"- threads per engine: {self.threads} (torch.set_num_threads, ORT intra-op, OpenVINO "
             f"INFERENCE_NUM_THREADS); thread env: {env}"),
            f"- load average before the run: {load}",
            f"- libraries: {libs}",
            f"- platform: {self.platform}",
        ]


def collect_machine(threads: int | None) -> MachineInfo:
    """Describe this machine; ``threads`` None means every usable core."""
    cpu = cpu_info()
    return MachineInfo(
        cpu=cpu.model, logical_cores=cpu.logical, usable_cores=usable_cores(),
        bf16=cpu.bf16, int8_dot=cpu.int8_dot, gpus=gpu_names(), libraries=library_versions(),
        threads=threads or usable_cores(), thread_env={k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        load_avg=load_average(),
        platform=f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        physical_cores=cpu.physical, memory_bytes=psutil.virtual_memory().total,
    )
