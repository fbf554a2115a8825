"""What the numbers were measured on: CPU (model, instruction sets, clock), cores, memory, OS and
library versions. The same code measured 0.91x the official training step on one 2-core AMD EPYC
and 2.13x on another with AVX2 only at 2.45 GHz, so the instruction sets and clock are recorded."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# The instruction-set extensions that decide XLA's and oneDNN's CPU kernels, as /proc/cpuinfo names them.
INSTRUCTION_SETS = ("sse4_2", "avx", "avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni",
                    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_features(cpuinfo: str) -> dict:
    """{"instruction_sets": [...], "clock_mhz": float | None, "max_clock_mhz": float | None} from
    the text of /proc/cpuinfo (its first processor) and, when readable, cpufreq's maximum."""
    flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
    have = set(flags.group(1).split()) if flags else set()
    mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo, re.M)
    out = {"instruction_sets": [s for s in INSTRUCTION_SETS if s in have],
           "clock_mhz": round(float(mhz.group(1)), 1) if mhz else None, "max_clock_mhz": None}
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            out["max_clock_mhz"] = round(int(f.read()) / 1000, 1)
    except (OSError, ValueError):
        pass
    return out


def machine_info() -> dict:
    """The host (the accelerator, when there is one, is added by the CLI from a probe)."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read()
        names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
        cpu = names[0].strip() if names else cpu
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    except (OSError, AttributeError):
        mem_kb = 0
    return {"cpu": cpu, **cpu_features(cpuinfo), "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)), "memory_gb": round(mem_kb / 1e6, 1),
            "os": platform.platform(), "python": platform.python_version(),
            "jax": _version("jax"), "jaxlib": _version("jaxlib"), "flax": _version("flax"),
            "tensorflow": _version("tensorflow-cpu") or _version("tensorflow"),
            "torch": _version("torch"), "device": "cpu"}


def machine_slug(info: dict) -> str:
    """A file-name part naming the machine: the accelerator, else the CPU and its core count."""
    if info.get("accelerator"):
        return re.sub(r"[^a-z0-9]+", "-", info["accelerator"].lower()).strip("-")
    cpu = re.sub(r"[^a-z0-9]+", "-", info["cpu"].lower()).strip("-")
    return f"{cpu}-{info['usable_cpus']}cpu"
