"""Targets: limits on measured numbers or on ours/official ratios, read from a JSON file kept with
the results (`benchmarks/targets.json`), never written into the library.

    {"targets": [
      {"row": "inference_1280x720", "measure": "time_s", "ratio_at_most": 0.5,
       "platform": "cpu", "dtype": "float32"},
      {"row": "inference_1280x720", "measure": "compile_s", "at_most": 15},
      {"row": "input_8bit", "measure": "examples_per_s", "at_least": 250}, ...]}

`measure` is a field of the row's result ("warm.cache_hits" reaches into the compile-cache row's
second process), or "memory": the platform's memory field (peak RSS on the CPU, the device memory
of one call on a GPU). `platform` and `dtype`, when given, restrict where a target applies.
"""

from __future__ import annotations

import dataclasses
import json

from benchmarks import rows as rows_lib
from ifan_jax.errors import UserError

LIMIT_KEYS = {"ratio_at_most": (True, True), "at_most": (False, True), "at_least": (False, False)}
# measure -> (words in a target's name, unit)
LABELS = {"time_s": ("time", "s"), "memory": ("memory", "MB"), "compile_s": ("compile", "s"),
          "examples_per_s": ("examples/s", ""), "peak_rss_mb": ("peak memory", "MB"),
          "steady_rss_mb": ("memory after start-up", "MB")}


class TargetsError(UserError):
    """A targets file that cannot be read; the message names it and the entry."""


@dataclasses.dataclass(frozen=True)
class Target:
    """`measure` of row `row` (or its ours/official ratio when `ratio`) at most / at least
    `limit`."""

    row: str
    measure: str
    limit: float
    ratio: bool = False
    at_most: bool = True
    platform: str | None = None
    dtype: str | None = None
    name: str | None = None

    def applies(self, platform: str, dtype: str) -> bool:
        return self.platform in (None, platform) and self.dtype in (None, dtype)

    def bound(self) -> str:
        """"<= 0.5", ">= 250 examples/s"-like text of the limit."""
        unit = LABELS.get(self.measure, (self.measure, ""))[1]
        op = "<=" if self.at_most else ">="
        return f"{op} {self.limit:g}" + (f" {unit}" if unit and not self.ratio else "")

    def label(self) -> str:
        if self.name:
            return self.name
        words = LABELS.get(self.measure, (self.measure, ""))[0]
        if self.ratio:
            return f"{self.row} {words} ratio ours/official {self.bound()}"
        return f"{self.row} {words} {self.bound()}"

    def met_by(self, value: float) -> bool:
        return value <= self.limit if self.at_most else value >= self.limit


def parse_targets(entries: list[dict], source: str = "targets") -> list[Target]:
    """Targets from the JSON entries (see the module docstring); errors name `source` and the
    entry."""
    out = []
    fields = {f.name for f in dataclasses.fields(Target)} - {"limit", "ratio", "at_most"}
    for i, entry in enumerate(entries):
        limits = [k for k in LIMIT_KEYS if k in entry]
        unknown = set(entry) - fields - set(LIMIT_KEYS)
        if len(limits) != 1 or unknown or not {"row", "measure"} <= set(entry):
            raise TargetsError(f"{source}: entry {i} needs row, measure and one of "
                               f"{', '.join(LIMIT_KEYS)}" + (f"; unknown {sorted(unknown)}"
                                                            if unknown else ""))
        ratio, at_most = LIMIT_KEYS[limits[0]]
        rest = {k: v for k, v in entry.items() if k in fields}
        out.append(Target(limit=float(entry[limits[0]]), ratio=ratio, at_most=at_most, **rest))
    return out


def load_targets(path: str) -> list[Target]:
    """The targets in a JSON file {"targets": [...]}."""
    try:
        with open(path) as f:
            content = json.load(f)
    except OSError as e:
        raise TargetsError(f"{path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise TargetsError(f"{path}: not JSON ({e})") from None
    if not isinstance(content, dict) or not isinstance(content.get("targets"), list):
        raise TargetsError(f'{path}: expected {{"targets": [...]}}')
    return parse_targets(content["targets"], path)


def memory_field(platform: str) -> tuple[str, str]:
    """(result field, table wording) of the memory compared: on a GPU the device memory one call
    holds (JAX preallocates, so RSS says nothing), else the peak RSS."""
    if platform == "gpu":
        return "device_mb", "device memory per call (MB)"
    return "peak_rss_mb", "peak memory (MB)"


def field_of(row: rows_lib.Row, measure: str, platform: str) -> str:
    """The result field a measure reads for `row` (the checkpoint rows' memory on a GPU is the
    allocator's peak: a user's process, not one executable)."""
    if measure != "memory":
        return measure
    if isinstance(row, rows_lib.CheckpointRow) and platform == "gpu":
        return "peak_device_mb"
    if isinstance(row, rows_lib.InputRow):
        return "peak_rss_mb"  # the host's, wherever the network runs
    return memory_field(platform)[0]


def value(result: dict | None, field: str):
    """result[field], with "a.b" reaching into result["a"]["b"]; None where absent."""
    for part in field.split("."):
        if not isinstance(result, dict):
            return None
        result = result.get(part)
    return result


def ratio(ours, official):
    return ours / official if ours and official else None


def check(rows: list[rows_lib.Row], targets: list[Target], platform: str,
          dtype: str = "float32") -> list[dict]:
    """{"target", "value", "met"} for each target that applies here and whose row (and, for a
    ratio, official result) was measured."""
    by_key = {row.key: row for row in rows}
    out = []
    for target in targets:
        row = by_key.get(target.row)
        if row is None or not target.applies(platform, dtype):
            continue
        field = field_of(row, target.measure, platform)
        ours = value(row.result.get("ours"), field)
        if target.ratio:
            if not row.result.get("official"):
                continue
            measured = ratio(ours, value(row.result["official"], field))
        else:
            measured = ours
        if measured is None and not target.ratio:
            continue
        out.append({"target": target.label(), "value": measured,
                    "met": None if measured is None else target.met_by(measured)})
    return out
