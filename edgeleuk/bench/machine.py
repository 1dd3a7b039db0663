"""What the benchmark ran on: CPU, bf16 support, GPU, library versions, thread settings.

Torch-free and import-free for the engines: versions come from package metadata,
so describing the machine does not load (or initialise the thread pools of) torch,
ONNX Runtime or OpenVINO.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from edgeleuk.runtime.registry import BACKENDS

# CPU flags that give OpenVINO native bf16 compute (else it runs f32 or emulates).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OV_CPU_THREADS")


@dataclass(frozen=True)
class CpuInfo:
    """What ``/proc/cpuinfo`` says.

    Attributes:
        model: CPU model name.
        logical: Logical processors listed.
        flags: Instruction-set flags of the first processor.
    """

    model: str
    logical: int
    flags: frozenset[str] = frozenset()

    @property
    def bf16(self) -> bool:
        return any(f in self.flags for f in BF16_FLAGS)

    @property
    def int8_dot(self) -> bool:
        """VNNI/AMX int8 dot products (what makes INT8 fast on CPU)."""
        return any(f in self.flags for f in INT8_FLAGS)


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse the text of ``/proc/cpuinfo`` (x86 and ARM spellings)."""
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


def read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """:func:`parse_cpuinfo` of this machine; falls back to ``platform`` off Linux."""
    try:
        return parse_cpuinfo(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return CpuInfo(model=platform.processor() or "unknown", logical=os.cpu_count() or 0)


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
    """Cores this process may run on (the affinity mask, e.g. a container's CPU set)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class MachineInfo:
    """The benchmark's header.

    Attributes:
        cpu: CPU model name.
        logical_cores: Logical processors in ``/proc/cpuinfo``.
        usable_cores: Cores this process may run on.
        bf16: Native bf16 instructions (``avx512_bf16`` or ``amx_bf16``).
        int8_dot: VNNI/AMX int8 instructions.
        gpus: NVIDIA GPU names; empty if none.
        libraries: Package versions.
        threads: Inference threads every engine was given.
        thread_env: Thread-related environment variables that were set.
        load_avg: 1-minute load average before the run (other processes sharing the cores).
        platform: OS and Python.
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

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gpus"] = list(self.gpus)
        return d

    def header_lines(self) -> list[str]:
        """Markdown bullet lines for the report header."""
        libs = ", ".join(f"{k} {v}" for k, v in self.libraries.items())
        env = ", ".join(f"{k}={v}" for k, v in self.thread_env.items()) or "none set"
        load = "unknown" if self.load_avg is None else f"{self.load_avg:.2f}"
        return [
            f"- CPU: {self.cpu}; {self.usable_cores} usable of {self.logical_cores} logical cores",
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
    cpu = read_cpuinfo()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return MachineInfo(
        cpu=cpu.model, logical_cores=cpu.logical or (os.cpu_count() or 0), usable_cores=usable_cores(),
        bf16=cpu.bf16, int8_dot=cpu.int8_dot, gpus=gpu_names(), libraries=library_versions(),
        threads=threads or usable_cores(), thread_env={k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        load_avg=load, platform=f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
    )
