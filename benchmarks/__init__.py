"""The benchmark: speed and memory of ifan-jax, beside the official PyTorch IFAN.

    python -m benchmarks --help

One role per module: `specs` (what one measurement process does), `probes` (time, RSS, device
memory), our workers (`network`, `training`, `real_path`, `scenes`, `input_pipeline`,
`precision`), the official adapter (`official`), `worker` (the process entry), `runner`
(processes and shared preparations), `rows` (typed report rows), `plan` (which rows a run
measures), `targets`, `report` (table, Markdown, text), `machine` and `cli`.

Two tools of their own: `profile` (where one call's time goes, by kind of operation) and
`convolutions` (every convolution of a call timed alone under each of XLA's CPU libraries).

This package imports nothing itself: every measurement process imports it first
(`python -m benchmarks.worker`) and must hold nothing its measurement does not need.
"""
