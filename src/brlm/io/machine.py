"""Machine facts: the clock, the git commit of the source tree, the CPU, the software versions,
and which device a run uses. Imports nothing else of brlm except errors (the ground floor).
"""

from __future__ import annotations

import ctypes
import datetime as dt
import functools
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brlm.errors import ConfigError

if TYPE_CHECKING:
    import torch


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_sha() -> str | None:
    """The commit of the brlm source tree in use (None for an installed wheel)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


@functools.cache
def _proc_cpuinfo() -> str:
    """/proc/cpuinfo, read once per process ('' where there is none, e.g. macOS)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_fields(cpuinfo: str | None = None) -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (or of `cpuinfo`) as {field: value}: 'model name',
    'vendor_id', 'cpu family', 'model', 'flags', ... Every processor of a machine reports the same."""
    fields: dict[str, str] = {}
    for line in (_proc_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        if not line.strip():
            if fields:
                break
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    return fields


def cpu_model(cpuinfo: str | None = None) -> str:
    return cpu_fields(cpuinfo).get("model name") or platform.processor() or platform.machine()


def cpu_kind(cpuinfo: str | None = None) -> str:
    """The CPU model name and, on x86, its family and model numbers: 'AMD EPYC (family 25 model
    1)'. A VM often names every AMD CPU just 'AMD EPYC' (Zen 3, 4 and 5 alike), and what is
    measured once per machine (decode layouts, loss and attention plans, peaks) differs between
    them; a home folder shared by the nodes of a cluster must not hand one kind's choices to another."""
    fields, model = cpu_fields(cpuinfo), cpu_model(cpuinfo)
    if fields.get("cpu family", "").isdigit() and fields.get("model", "").isdigit():
        return f"{model} (family {fields['cpu family']} model {fields['model']})"
    return model


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    return set(cpu_fields().get("flags", "").split())


def cpu_bf16_support(flags: set[str] | None = None) -> dict[str, bool]:
    """Which native bf16 matmul paths this CPU has: AMX tiles (Intel Xeon 4th gen and later) or
    AVX-512 BF16 (Cooper Lake, AMD Zen 4 and later). Without either, bf16 matmuls are emulated and
    slower than fp32. torch's own AMX probe backs up the flags (a VM may hide them)."""
    probe_torch = flags is None  # fake flags (tests) are taken as they are
    flags = cpu_flags() if flags is None else flags
    amx = "amx_bf16" in flags
    if probe_torch and not amx:
        try:
            import torch

            amx = amx or bool(torch.cpu._is_amx_tile_supported())
        except (ImportError, AttributeError, RuntimeError):
            pass
    return {"amx_bf16": amx, "avx512_bf16": "avx512_bf16" in flags}


def environment() -> dict[str, Any]:
    import numpy
    import torch

    import brlm

    env = {
        "brlm": brlm.__version__,
        "git_sha": git_sha(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": None,
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_count"] = torch.cuda.device_count()
    return env


def load_per_core() -> float:
    """The 1-minute load average per core (0.0 where the OS does not tell): above ~1 the machine
    is busy and timings taken now measure contention."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return 0.0


def available_bytes() -> int | None:
    """Physical memory available now, in bytes (None where the OS does not tell)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> dict[str, Any]:
    """Ask glibc's allocator to keep the memory a process frees instead of handing it back to the
    OS: no mmap for large blocks, trimming only above 2 GiB free. A CPU training step allocates
    and frees the same tensors every step; by default each large one is a fresh mmap whose pages
    fault in again (zeroed by the kernel), 4-9 % of a bf16 step on an AMD EPYC Zen 5 (5.3 M
    parameters, batch 16 x 256). The cost: the resident size stays at its peak. Returns a record:
    {"allocator": "glibc", "kept": True} or why nothing was changed (not Linux, not glibc)."""
    if not sys.platform.startswith("linux"):
        return {"allocator": "system", "kept": False, "reason": f"not Linux ({sys.platform})"}
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return {"allocator": "unknown", "kept": False, "reason": "no glibc mallopt (musl or another libc)"}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    return {"allocator": "glibc", "kept": ok, **({} if ok else {"reason": "mallopt refused"})}


def resolve_device(name: str) -> "torch.device":
    """'auto' is CUDA when there is one, else CPU; an explicit CUDA device on a machine without one is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r}: CUDA is not available on this machine; use 'cpu' or 'auto'")
    return torch.device(name)


def cache_dir() -> Path:
    """brlm's one cache folder: $BRLM_CACHE_DIR, else $XDG_CACHE_HOME/brlm, else ~/.cache/brlm
    (downloads, Hugging Face datasets, the measured CPU peak)."""
    if os.environ.get("BRLM_CACHE_DIR"):
        return Path(os.environ["BRLM_CACHE_DIR"]).expanduser()
    if os.environ.get("BRLM_CACHE") and not getattr(cache_dir, "_warned", False):
        cache_dir._warned = True  # type: ignore[attr-defined]
        print("brlm: warning: BRLM_CACHE is no longer read; set BRLM_CACHE_DIR instead", file=sys.stderr)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "brlm"


class MachineCache:
    """A JSON file in cache_dir() of figures measured on this machine (the matmul peak, the dtype
    probe), keyed by machine_key(); unreadable means empty, unwritable only costs a re-measurement.

        cache = MachineCache("cpu_peak.json")
        entry = cache.get(key) or cache.put(key, measure())
    """

    def __init__(self, name: str):
        self.path = cache_dir() / name

    def _read(self) -> dict[str, Any]:
        import json

        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self._read().get(key)

    def put(self, key: str, entry: dict[str, Any]) -> dict[str, Any]:
        from brlm.io.files import write_json

        cache = self._read()
        cache[key] = entry
        try:
            write_json(self.path, cache)
        except OSError:
            pass  # a read-only home only costs a re-measurement next time
        return entry


def machine_key(threads: int, *parts: str) -> str:
    """What a per-machine figure depends on: CPU kind (cpu_kind), core count, threads, torch, and `parts`."""
    import torch

    return "|".join([cpu_kind(), str(os.cpu_count()), f"threads={threads}", *parts, f"torch={torch.__version__}"])
