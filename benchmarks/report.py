"""The report: table lines per row type, the errors, and the Markdown and plain-text renderings.

A report is a JSON-able dict: "date", "machine", "mode", "dtype", "platform", "official",
"rows_selected" (the --rows kinds, None for all), the load averages, "seconds", "rows"
(`Row.to_json`), "table" (`summarize`), "targets" (`targets.check`), "errors" (`errors`) and
"targets_file".
"""

from __future__ import annotations

import functools

from benchmarks import rows as rows_lib
from benchmarks import targets as targets_lib


@functools.singledispatch
def _measures(row: rows_lib.Row, platform: str) -> list[tuple]:
    """(wording, result field, unit[, compare with the official result]) of each table line."""
    raise TypeError(f"no table lines for {type(row).__name__}")


def _memory_lines(row, platform, steady_wording):
    field = targets_lib.field_of(row, "memory", platform)
    wording = targets_lib.memory_field(platform)[1]
    if field == "peak_device_mb":
        wording = "peak device memory (MB)"
    lines = [(wording, "memory", "MB")]
    if field == "peak_rss_mb" and row.result.get("ours", {}).get("steady_rss_mb"):
        lines.append((steady_wording, "steady_rss_mb", "MB"))
    return lines


@_measures.register(rows_lib.InferenceRow)
@_measures.register(rows_lib.TrainRow)
def _(row, platform):
    return [("time (s)", "time_s", "s"), ("compile (s)", "compile_s", "s"),
            *_memory_lines(row, platform, "  of it, after compiling (MB)")]


@_measures.register
def _(row: rows_lib.IacRow, platform):
    return [("time (s)", "time_s", "s")]


@_measures.register
def _(row: rows_lib.CacheRow, platform):
    return [("compile, first process (s)", "cold.compile_s", "s"),
            ("compile, second process (s)", "warm.compile_s", "s"),
            ("cache hits in the second process", "warm.cache_hits", "")]


@_measures.register
def _(row: rows_lib.PsnrRow, platform):
    return [("PSNR (dB)", "psnr_bf16_vs_fp32_db", "dB")]


@_measures.register
def _(row: rows_lib.CheckpointRow, platform):
    return [("time (s)", "time_s", "s"),
            ("restore the checkpoint (s)", "load_s", "s", False),
            ("first image, compile included (s)", "first_run_s", "s", False),
            ("whole process (s)", "process_s", "s", False),
            *_memory_lines(row, platform, "  of it, after the first image (MB)")]


@_measures.register
def _(row: rows_lib.InputRow, platform):
    return [("examples/s", "examples_per_s", ""), ("time per batch (s)", "time_s", "s"),
            ("CPU time per batch, all threads (s)", "cpu_s", "s"),
            ("CPU per example, one thread (ms)", "cpu_ms_per_example", "ms"),
            ("first batch (s)", "first_batch_s", "s"),
            ("host peak memory (MB)", "peak_rss_mb", "MB"),
            ("  of it, after the first batches (MB)", "steady_rss_mb", "MB"),
            ("read per example (MB)", "read_mb_per_example", "MB"),
            ("mean PNG file (MB)", "png_mb", "MB")]


@_measures.register
def _(row: rows_lib.FedTrainRow, platform):
    return [("step time fed by the pipeline (s)", "time_s", "s"),
            ("step time on a fixed batch (s)", "step_s", "s"),
            ("share of the fed step waiting for input", "input_wait_fraction", ""),
            ("time in next(batch) per step (s)", "next_batch_s", "s"),
            ("host peak memory (MB)", "peak_rss_mb", "MB")]


@_measures.register
def _(row: rows_lib.PageRow, platform):
    lines = [("time per tile (s)", "time_s", "s"), ("first tile (s)", "first_tile_s", "s")]
    if row.job.photo != (row.tile, row.tile):
        lines += [("tiles", "tiles", ""), ("upload to done (s)", "upload_to_done_s", "s")]
    if row.relative_to:
        lines.append(("time per tile / the 1-thread row's", "time_vs_relative", ""))
    if row.job.backend == "webgpu":
        lines.append(("software GPU (SwiftShader)", "software_gpu", ""))
    else:
        lines += [("WASM threads", "threads", ""), ("cross-origin isolated", "isolated", "")]
    return lines + [("page load with the model (s)", "load_page_s", "s")]


@_measures.register
def _(row: rows_lib.OnnxRow, platform):
    lines = [("our JAX forward (s)", "jax.time_s", "s", False),
             ("  CPU time, all threads (s)", "jax.cpu_s", "s", False)]
    for name in row.job.sessions:
        lines += [(f"onnxruntime, {name.replace('_', ' ')} session (s)",
                   f"onnxruntime_{name}.time_s", "s", False),
                  ("  CPU time, all threads (s)", f"onnxruntime_{name}.cpu_s", "s", False),
                  ("  time onnxruntime / JAX", f"onnxruntime_{name}.ratio", "", False)]
    name = row.job.sessions[0]
    lines += [("max abs, onnxruntime vs JAX", f"onnxruntime_{name}.max_abs_vs_jax", "", False),
              ("export (s)", "export_s", "s", False), ("file (MB)", "size_mb", "MB", False)]
    if row.job.precision != "float32":
        lines += [(f"PSNR of the {row.job.precision} model vs float32 (dB)", "vs_float32.psnr_db", "dB",
                   False),
                  ("  file of the float32 model (MB)", "vs_float32.float32_size_mb", "MB", False)]
    return lines


def summarize(rows: list[rows_lib.Row], platform: str = "cpu",
              targets: list[targets_lib.Target] = (), dtype: str = "float32") -> list[dict]:
    """Table lines {"row", "measure", "unit", "ours", "official", "ratio", "target"}; "target" is
    the bound of an applicable target on that line ("<= 0.5"), else None."""
    lines = []
    for row in rows:
        ours, official = row.result.get("ours", {}), row.result.get("official") or {}
        for wording, measure, unit, *compare in _measures(row, platform):
            field = targets_lib.field_of(row, measure, platform)
            mine = targets_lib.value(ours, field)
            theirs = targets_lib.value(official, field) if compare != [False] else None
            bounds = [t.bound() for t in targets if t.row == row.key and t.applies(platform, dtype)
                      and targets_lib.field_of(row, t.measure, platform) == field]
            lines.append({"row": row.name, "measure": wording, "unit": unit, "ours": mine,
                          "official": theirs, "ratio": targets_lib.ratio(mine, theirs),
                          "target": ", ".join(bounds) or None})
    return lines


def errors(rows: list[rows_lib.Row]) -> list[dict]:
    """{"row", "impl", "error"} of every process that failed."""
    return [{"row": row.name, "impl": impl, "error": res["error"]}
            for row in rows for impl, res in row.results() if "error" in res]


def fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if unit == "MB" and abs(value) >= 10:
        return f"{value:.0f}"
    if unit == "MB" and abs(value) < 1e-3:  # under a kB: nothing (read per example from RAM)
        return "0"
    if isinstance(value, int):
        return str(value)
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _precision_note(report: dict) -> list[str]:
    """On a GPU, say what "float32" meant: both frameworks' defaults allow TF32."""
    m = report["machine"]
    if m.get("device") != "gpu":
        return []
    tf32 = [row["result"]["official"].get("tf32_convolutions") for row in report["rows"]
            if (row["result"].get("official") or {}).get("tf32_convolutions") is not None]
    error = m.get("jax_default_matmul_rel_error")
    return [f"Precision: both sides at their framework defaults. PyTorch cuDNN TF32 for "
            f"convolutions: {fmt(any(tf32)) if tf32 else '-'}; JAX default precision, whose "
            f"float32 matrix product differs from Precision.HIGHEST by "
            f"{fmt(error)} (relative), i.e. TF32 too. bfloat16: ours computes in bfloat16 with "
            f"float32 parameters; the official code runs under torch.autocast(bfloat16)."]


def _selection(report: dict) -> str:
    """", rows: input" when --rows chose some kinds of rows, else ""."""
    kinds = report.get("rows_selected")
    return f", rows: {','.join(kinds)}" if kinds else ""


def markdown(report: dict) -> str:
    """The report as Markdown: machine, table, failures, targets."""
    m = report["machine"]
    gpu = f"{m['accelerator']} (both implementations run on it); host " if m.get(
        "accelerator") else ""
    out = [f"# IFAN benchmark, {report['date']}", "",
           f"Machine: {gpu}{m['cpu']}{_cpu_detail(m)}, {m['usable_cpus']} usable CPUs of "
           f"{m['logical_cpus']}, "
           f"{m['memory_gb']} GB; {m['os']}; Python {m['python']}, jax {m['jax']}, "
           f"flax {m['flax']}, torch {m['torch']}.",
           f"Mode: {report['mode']}, compute dtype {report['dtype']}"
           f"{_selection(report)}. Load average (1 min) "
           f"{report['load_average_start'][0]:.2f} at the start, "
           f"{report['load_average_end'][0]:.2f} at the end. Total {report['seconds']:.0f} s.",
           *_precision_note(report),
           "", "| row | measure | ours | official | ours/official | target |",
           "|---|---|---|---|---|---|"]
    for line in report["table"]:
        out.append(f"| {line['row']} | {line['measure']} | {fmt(line['ours'], line['unit'])} | "
                   f"{fmt(line['official'], line['unit'])} | {fmt(line['ratio'])} | "
                   f"{line['target'] or ''} |")
    for e in report["errors"]:
        out.append(f"\n{e['row']} ({e['impl']}) failed: {e['error']}")
    if report["targets"]:
        out += ["", f"Targets from `{report['targets_file']}`:", "",
                "| target | value | met |", "|---|---|---|"]
        for t in report["targets"]:
            out.append(f"| {t['target']} | {fmt(t['value'])} | {fmt(t['met'])} |")
    return "\n".join(out) + "\n"


def text_table(report: dict) -> str:
    """The report for a terminal: a header line, the aligned table, targets and failures."""
    m = report["machine"]
    where = m.get("accelerator") or f"{m['cpu']} ({m['usable_cpus']} CPUs)"
    head = (f"IFAN benchmark {report['date']} on {where}, "
            f"mode {report['mode']}, dtype {report['dtype']}{_selection(report)}, load "
            f"{report['load_average_start'][0]:.2f} -> {report['load_average_end'][0]:.2f}")
    cols = ("row", "measure", "ours", "official", "ours/official", "target")
    body = [(line["row"], line["measure"], fmt(line["ours"], line["unit"]),
             fmt(line["official"], line["unit"]), fmt(line["ratio"]), line["target"] or "")
            for line in report["table"]]
    widths = [max(len(str(r[i])) for r in [cols, *body]) for i in range(len(cols))]
    template = "  ".join(f"{{:{w}}}" for w in widths)
    lines = [head, template.format(*cols), template.format(*("-" * w for w in widths))]
    lines += [template.format(*r).rstrip() for r in body]
    for t in report["targets"]:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        lines.append(f"target: {t['target']}: {fmt(t['value'])} -> {verdict}")
    for e in report["errors"]:
        lines.append(f"FAILED {e['row']} ({e['impl']}): {e['error']}")
    return "\n".join(lines)


def _cpu_detail(machine: dict) -> str:
    """" (AVX2, AVX-512, 2596 MHz)": the instruction sets and clock, when the report has them."""
    sets = machine.get("instruction_sets")
    if sets is None:  # a report written before they were recorded
        return ""
    names = [label for label, flag in (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AMX", "amx_tile"))
             if flag in sets] or ["no AVX2"]
    clock = machine.get("max_clock_mhz") or machine.get("clock_mhz")
    return f" ({', '.join(names)}{f', {clock:.0f} MHz' if clock else ''})"
