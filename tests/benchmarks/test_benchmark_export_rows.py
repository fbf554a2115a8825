"""The pure parts of `benchmarks.export_rows`: where the table goes and what it says (fast; the
measurement itself is run by hand, see its docstring)."""

import pytest

from benchmarks import export_rows


def test_markdown_path_is_the_json_path_with_md():
    assert export_rows.markdown_path("r/2026-12-03b_x_export.json") == "r/2026-12-03b_x_export.md"
    assert export_rows.markdown_path("r/out") == "r/out.md"


def _timing(t, low):
    return {"time_s": t, "time_min_s": low, "cpu_s": t, "times_s": [t, low, t], "first_run_s": 2 * t}


def _result(**extra):
    return {"machine": {"cpu": "AMD EPYC", "usable_cpus": 2, "instruction_sets": ["avx2"],
                        "clock_mhz": 2596.1, "memory_gb": 24.7, "jax": "0.10.2", "torch": "2.13.0"},
            "date": "2026-12-03", "onnxruntime": "1.32.0", "sizes": ["640x360", "1280x720"],
            "load_average_start": [0.5, 1, 2], "load_average_end": [1.5, 1, 2], "seconds": 600.0,
            "model": {"channels": 32, "num_iterations": 17, "iac_variant": "official", "weights": "random"},
            "tile": 512, "command": "python -m benchmarks.export_rows --jax", "repeats": 3,
            "precisions": {"float32": {"export_s": 60.0, "size_bytes": 39_012_828, "session_s": 2.0,
                                       "sizes": {"640x360": _timing(4.5, 4.4),
                                                 "1280x720": _timing(19.0, 18.0)}},
                           "float16": {"skipped": "the run had taken 950 s"}},
            "errors": [], **extra}


def test_markdown_has_every_row_of_the_run():
    table = export_rows.markdown(_result(
        jax={"640x360": _timing(2.9, 2.8), "1280x720": _timing(12.0, 11.5)},
        official={"sizes": {"640x360": _timing(3.3, 3.2), "1280x720": {"error": "MemoryError"}}}))
    lines = table.splitlines()
    assert "| | 640x360 | 1280x720 |" in lines
    assert "| onnxruntime CPU, float32 | 4.5 (4.4) | 19 (18) |" in lines
    assert "| ifan-jax (jitted JAX) | 2.9 (2.8) | 12 (11.5) |" in lines
    assert "| official PyTorch | 3.3 (3.2) | failed: MemoryError |" in lines
    assert "| float32 | 60 | 39.0 | 2 | - |" in lines
    assert any(line.startswith("| float16 | skipped: the run had taken 950 s") for line in lines)
    assert "[0.5, 1, 2] at the start, [1.5, 1, 2] at the end" in table
    assert "`python -m benchmarks.export_rows --jax`" in table


def test_markdown_without_the_optional_parts_and_with_a_failure():
    table = export_rows.markdown(_result(errors=[{"part": "jax", "error": "RuntimeError: no JAX"}]))
    assert "jitted JAX" not in table and "official PyTorch" not in table and "Chromium" not in table
    assert "FAILED jax: RuntimeError: no JAX" in table


@pytest.mark.parametrize("argv, message", [
    (["--json=x.json", "--official=/nonexistent"], "no models/archs/IFAN.py"),
    (["--json=x.json", "--sizes=640by360"], "expected WxH"),
    (["--json=x.json", "--repeats=0"], "at least 1"),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        export_rows.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
