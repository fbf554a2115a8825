"""What a worker measures about itself: wall and CPU time, resident memory, device memory.

Peak resident memory is the kernel's: `ru_maxrss` over the process's life, and on Linux the
high-water mark since a restart (`reset_peak_rss`, VmHWM through /proc/self/clear_refs), which
leaves compilation and warm-up out of the steady state.
"""

from __future__ import annotations

import re
import resource
import statistics
import time
from collections.abc import Callable

import jax

from ifan_jax.compiled import release_freed_memory

_PEAK_BEFORE_RESET_MB = 0.0


def _current_peak_rss_mb() -> float:
    """Peak resident memory since the start or the last `reset_peak_rss` (ru_maxrss, KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB over its whole life."""
    return max(_PEAK_BEFORE_RESET_MB, _current_peak_rss_mb())


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS counter (VmHWM) of this process; False where unsupported.

    The heap that compilation freed is handed back to the OS first (glibc `malloc_trim`), else
    the counter restarts from a resident size that still holds it. The restart also lowers
    ru_maxrss, so the peak so far is kept for `peak_rss_mb`.
    """
    global _PEAK_BEFORE_RESET_MB
    _PEAK_BEFORE_RESET_MB = peak_rss_mb()
    release_freed_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def steady_rss_mb(reset: bool) -> float | None:
    """Peak RSS in MB since `reset_peak_rss` (VmHWM); None if `reset` says it did not restart."""
    if not reset:
        return None
    try:
        with open("/proc/self/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) * 1024 / 1e6
    except (OSError, AttributeError):
        return None


def bytes_read() -> int | None:
    """Bytes this process has read so far through read calls (Linux /proc/self/io "rchar": files,
    and anything else it reads, /proc included); None where unavailable."""
    try:
        with open("/proc/self/io") as f:
            return int(re.search(r"rchar:\s+(\d+)", f.read()).group(1))
    except (OSError, AttributeError):
        return None


def peak_device_mb() -> float | None:
    """Peak MB the XLA allocator had in use on the first device (GPU/TPU); None on the CPU."""
    device = jax.local_devices()[0]
    if device.platform == "cpu":
        return None
    peak = (device.memory_stats() or {}).get("peak_bytes_in_use")
    return None if peak is None else peak / 1e6


def executable_mb(compiled) -> float | None:
    """Device MB one call of a compiled executable needs: arguments, outputs, temporaries.

    The allocator's peak (`peak_device_mb`) also counts XLA's autotuning during compilation,
    which a GPU process does once; this is what every later call holds.
    """
    memory = compiled.memory_analysis()
    if memory is None:
        return None
    total = (memory.argument_size_in_bytes + memory.output_size_in_bytes
             + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
    return total / 1e6


def timed_runs(fn: Callable[[], object], repeats: int) -> list[tuple[float, float]]:
    """(wall seconds, CPU seconds of this process over all threads) of each of `repeats` calls."""
    times = []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - start, time.process_time() - cpu))
    return times


def steady_runs(fn: Callable[[], object], warmup: int, repeats: int,
                reset: Callable[[], object] = lambda: None):
    """`warmup` calls of `fn`, then `reset()` (restart the peak-memory counters), then `repeats`
    timed calls; returns (their timings, what `reset` returned)."""
    for _ in range(warmup):
        fn()
    marker = reset()
    return timed_runs(fn, repeats), marker


def summary(times: list[tuple[float, float]]) -> dict:
    """Median and minimum wall time, median CPU time (less sensitive to other processes)."""
    wall = [t for t, _ in times]
    return {"time_s": statistics.median(wall), "time_min_s": min(wall),
            "cpu_s": statistics.median(c for _, c in times), "times_s": wall}


def timed_first(fn: Callable[[], object]) -> tuple[object, float]:
    """(fn(), its wall seconds)."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def count_cache_hits() -> dict:
    """A dict whose "hits" counts the persistent compilation cache's hits from now on."""
    counts = {"hits": 0}

    def listener(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            counts["hits"] += 1

    jax.monitoring.register_event_listener(listener)
    return counts
