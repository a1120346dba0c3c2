"""Side-by-side timing and a description of the machine the benchmark ran on.

Every comparison in the benchmark is timed with ``time_side_by_side``: the
contenders run in turn within each repeat (the order alternates between repeats),
so a slow-down from other work on a shared machine hits both; figures are the
median over repeats and ratios the median of the per-repeat ratios.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib import metadata


def time_side_by_side(
    fns: dict[str, Callable[[], object]], repeats: int, min_time: float = 0.3, max_calls: int = 1000
) -> dict[str, list[float]]:
    """Seconds per call of each function, ``repeats`` values each, the functions interleaved.

    Each function is called once to warm up; that call also sets how many calls one
    timed block makes (about ``min_time`` seconds, at least one).
    """
    calls = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        calls[name] = max(1, min(max_calls, int(min_time / max(dt, 1e-9))))
    out: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            fn, n = fns[name], calls[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            out[name].append((time.perf_counter() - t0) / n)
    return out


def median(values) -> float:
    return float(statistics.median(values))


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over repeats of num[i] / den[i]."""
    return median([a / b for a, b in zip(num, den, strict=True)])


def spread(values) -> str:
    """'min-max' of a list of numbers, for the notes."""
    return f"{min(values):.3g}-{max(values):.3g}"


# ----------------------------------------------------------------------------- machine
def cpuinfo() -> dict:
    """CPU model, vendor, family, MHz and relevant flags from /proc/cpuinfo (Linux)."""
    info = {"model": platform.processor() or platform.machine(), "vendor": "", "family": None}
    info["mhz"] = None
    info["flags"] = []
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return info
    for line in text.splitlines():
        if ":" not in line:
            if not line.strip() and info["flags"]:
                break  # first processor is enough
            continue
        key, value = (s.strip() for s in line.split(":", 1))
        if key == "model name":
            info["model"] = value
        elif key == "vendor_id":
            info["vendor"] = value
        elif key == "cpu family":
            info["family"] = int(value)
        elif key == "cpu MHz":
            info["mhz"] = float(value)
        elif key == "flags":
            info["flags"] = value.split()
    return info


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def theoretical_peak(info: dict, cores: int) -> dict:
    """fp32 peak = cores x GHz x FLOP/cycle/core, with the assumption stated."""
    flags = set(info.get("flags", []))
    vendor = info.get("vendor", "")
    if "avx512f" in flags and vendor == "AuthenticAMD":
        per_cycle = 32
        why = (
            "AMD Zen 4 AVX-512: two 256-bit FMA pipes (512-bit ops double-pumped) = "
            "2 x 8 fp32 lanes x 2 FLOP = 32 FLOP/cycle/core"
        )
    elif "avx512f" in flags:
        per_cycle = 64
        why = (
            "Intel AVX-512 with two 512-bit FMA units = 2 x 16 lanes x 2 FLOP = 64 FLOP/cycle/core "
            "(one-unit SKUs: half)"
        )
    elif "avx2" in flags and "fma" in flags:
        per_cycle = 32
        why = "AVX2: two 256-bit FMA units = 2 x 8 lanes x 2 FLOP = 32 FLOP/cycle/core"
    else:
        per_cycle = 8
        why = "SSE: 4 lanes x 2 FLOP (no FMA assumed) = 8 FLOP/cycle/core"
    ghz = (info.get("mhz") or 0.0) / 1000.0
    return {
        "gflops": cores * ghz * per_cycle,
        "flop_per_cycle_per_core": per_cycle,
        "ghz": ghz,
        "cores": cores,
        "assumption": why
        + f"; clock = 'cpu MHz' of /proc/cpuinfo ({ghz:.2f} GHz, nominal; turbo not counted)",
    }


def practical_peak(threads: int, n: int = 2048, repeats: int = 5) -> dict:
    """Measured fp32 GEMM rate: torch.mm of two n x n matrices on ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    times = time_side_by_side({"mm": lambda: torch.mm(a, b)}, repeats, min_time=0.3)["mm"]
    rates = [2 * n**3 / t / 1e9 for t in times]
    return {"gflops": median(rates), "all": rates, "n": n, "threads": threads, "repeats": repeats}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("unsupseg", "torch", "onnxruntime-gpu", "onnxruntime", "onnx", "numpy", "scikit-image"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine(threads: int) -> dict:
    info = cpuinfo()
    cores = usable_cores()
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        mem_gb = None
    flags = set(info["flags"])
    return {
        "cpu": info["model"],
        "vendor": info["vendor"],
        "cpu_family": info["family"],
        "mhz": info["mhz"],
        "cores": cores,
        "threads_used": threads,
        "simd": [
            f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags
        ],
        "memory_gb": round(mem_gb, 1) if mem_gb else None,
        "platform": platform.platform(),
        "versions": versions(),
        "load_average_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
