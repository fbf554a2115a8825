"""What the numbers were measured on: CPU, cores, memory, OS and library versions."""

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


def machine_info() -> dict:
    """The host (the accelerator, when there is one, is added by the CLI from a probe)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = re.findall(r"^model name\s*:\s*(.+)$", f.read(), re.M)
        cpu = names[0].strip() if names else cpu
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            mem_kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    except (OSError, AttributeError):
        mem_kb = 0
    return {"cpu": cpu, "logical_cpus": os.cpu_count(),
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
