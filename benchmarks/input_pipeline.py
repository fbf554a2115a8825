"""The input pipeline's throughput: `ifan_jax.data.train_dataset` (the paper's augmentation) on a
generated DPDD-layout folder (`scenes`), its pixels read from the prepared store, from the RAM
cache or by decoding the PNGs of every example.

Two measurements of the same stream in one process: examples per second as training runs it
(tf.data's parallel map, one call per core), then CPU milliseconds per example on one thread (a
private pool of one), which other processes on the machine disturb less than a wall-clock rate.
The memory reported is the first measurement's.
"""

from __future__ import annotations

import gc
import os

import numpy as np

from benchmarks import probes, specs
from ifan_jax import data
from ifan_jax.data import prepare
from ifan_jax.data.decode import tensorflow


def store_in_use(job: specs.InputPipeline) -> dict | None:
    """For source "store": the store `train_dataset` reads (found by the lookup it makes itself,
    `prepare.find_store`): folder, tile size, dtype and scene count; DataError when there is none
    (the pipeline would silently decode the PNGs). None for the other sources."""
    if job.source != "store":
        return None
    examples = data.list_split(job.data_dir, "dpdd", "train")
    folder, index = prepare.find_store(job.data_dir, "dpdd", "train", job.bits, examples)
    if folder is None:
        raise data.DataError(f"{job.data_dir}: no prepared {job.bits}-bit store to read ({index})")
    return {"folder": str(folder), "tile": index["tile"], "dtype": index["dtype"],
            "scenes": len(index["scenes"])}


def one_thread(dataset):
    """A numpy iterator over `dataset` with tf.data on one thread: a private pool of one thread
    and no autotuning, so its parallel map and prefetching run on that thread."""
    options = tensorflow().data.Options()
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    return dataset.with_options(options).as_numpy_iterator()


def _as_training_runs(job: specs.InputPipeline):
    """(the pipeline's dataset, its measurements as training runs it): the first batch (tf.data's
    start-up) apart, then `warmup` untimed and `repeats` timed batches. The iterator ends on
    return."""
    it = data.train_dataset(job.data_dir, batch_size=job.batch, crop=job.crop, seed=0,
                            bit_depth=job.bits, process_index=0, process_count=1,
                            cache=job.source == "cache", store=job.source == "store")
    holder = {}

    def one_batch():
        holder["batch"] = next(it)

    _, first_batch_s = probes.timed_first(one_batch)
    times, (reset, read_before) = probes.steady_runs(
        one_batch, job.warmup, job.repeats, lambda: (probes.reset_peak_rss(), probes.bytes_read()))
    read_after = probes.bytes_read()
    batch = holder["batch"]
    # Prefetching makes single batches either instant or slow: report means, not medians.
    total_s, total_cpu_s = (sum(t[i] for t in times) for i in (0, 1))
    num = job.batch * job.repeats
    return it.dataset, {
        **probes.summary(times), "time_s": total_s / job.repeats,
        "cpu_s": total_cpu_s / job.repeats, "examples_per_s": num / total_s,
        "first_batch_s": first_batch_s, "peak_rss_mb": probes.peak_rss_mb(),
        "steady_rss_mb": probes.steady_rss_mb(reset),
        "read_mb_per_example": (None if read_before is None
                                else (read_after - read_before) / num / 1e6),
        "shape": list(batch["c"].shape),
        "output_finite": all(bool(np.isfinite(v).all()) for v in batch.values())}


def _one_thread_cpu_ms(dataset, job: specs.InputPipeline) -> float:
    """CPU ms of this process per example of `dataset` on one thread (`one_thread`):
    `one_thread_repeats` batches after `one_thread_warmup`."""
    single = one_thread(dataset)
    for _ in range(job.one_thread_warmup):
        next(single)
    timed = probes.timed_runs(lambda: next(single), job.one_thread_repeats)
    return 1000 * sum(cpu for _, cpu in timed) / (job.batch * job.one_thread_repeats)


def train_batches(job: specs.InputPipeline) -> dict:
    """Examples per second, host memory and MB read per example of `train_dataset(data_dir,
    batch, crop)` from `job.source` as training runs it, then the CPU ms per example of the same
    stream on one thread; the source, the store read (or None) and the mean PNG size."""
    store = store_in_use(job)
    examples = data.list_split(job.data_dir, "dpdd", "train")
    png_mb = float(np.mean([os.path.getsize(e[key]) for e in examples
                            for key in data.KEYS["dpdd"]])) / 1e6
    dataset, result = _as_training_runs(job)
    # The ended iterator's prefetching workers stop now, else their CPU time (seconds when
    # decoding) would count in the one-thread measurement.
    gc.collect()
    return {**result, "cpu_ms_per_example": _one_thread_cpu_ms(dataset, job),
            "source": job.source, "store": store, "png_mb": png_mb}
