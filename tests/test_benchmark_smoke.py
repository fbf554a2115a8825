"""The benchmark's tiny mode end to end: every row measured, sane numbers, cache hit, tables.

No timing assertions: only properties that hold however fast the machine is.
"""

import json

import pytest

from ifan_jax import benchmark

EXPECTED_ROWS = {"inference_96x64", "inference_192x128", "compile_cache", "train", "iac_map",
                 "iac_per_pixel", "iac_head"}


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    report = benchmark.main(["--tiny", f"--json={out}"])
    with open(out) as f:
        saved = json.load(f)
    return report, saved, out


@pytest.mark.slow
def test_every_row_ran_with_positive_numbers(tiny_report):
    _, saved, _ = tiny_report
    rows = {row["key"]: row for row in saved["rows"]}
    assert set(rows) == EXPECTED_ROWS
    for key, row in rows.items():
        results = row["result"]["ours"]
        results = results.values() if key == "compile_cache" else [results]
        for res in results:
            assert "error" not in res, (key, res)
            assert res["time_s"] > 0 and res["cpu_s"] >= 0 and res["peak_rss_mb"] > 50, key
            assert res["output_finite"] is True, key
            if key != "compile_cache" and res.get("steady_rss_mb") is not None:
                # The peak after compiling is part of the whole-life peak, and smaller for the
                # train step, whose compilation is the bigger job.
                assert 50 < res["steady_rss_mb"] <= res["peak_rss_mb"], key
            assert "official" not in row["result"]  # tiny mode measures ours only
    for key in ("inference_96x64", "inference_192x128", "train"):
        res = rows[key]["result"]["ours"]
        assert res["compile_s"] > 0 and res["first_run_s"] > 0
    # Both inference rows ran the same network.
    params = {rows[k]["result"]["ours"]["num_params"] for k in ("inference_96x64",
                                                              "inference_192x128")}
    assert len(params) == 1 and params.pop() > 10_000
    assert rows["train"]["result"]["ours"]["loss"] > 0
    train = rows["train"]["result"]["ours"]
    if train.get("steady_rss_mb") is not None:
        assert train["steady_rss_mb"] < train["peak_rss_mb"]


@pytest.mark.slow
def test_second_process_loads_the_network_from_the_compilation_cache(tiny_report):
    _, saved, _ = tiny_report
    cache = next(row for row in saved["rows"] if row["key"] == "compile_cache")["result"]["ours"]
    assert cache["cold"]["cache_hits"] == 0
    assert cache["warm"]["cache_hits"] >= 1


@pytest.mark.slow
def test_iac_forms_compute_the_same_thing(tiny_report):
    """`iac`, `iac_per_pixel` and `iac_from_head` ran on the same seeded inputs in separate
    processes; their outputs' mean absolute values must agree."""
    _, saved, _ = tiny_report
    sums = {row["key"]: row["result"]["ours"]["checksum"] for row in saved["rows"]
            if row["kind"] == "iac"}
    assert sums["iac_map"] > 0
    for key in ("iac_per_pixel", "iac_head"):
        assert sums[key] == pytest.approx(sums["iac_map"], rel=1e-5)


@pytest.mark.slow
def test_table_and_markdown_name_every_row_and_the_machine(tiny_report, capsys):
    report, saved, out = tiny_report
    assert saved["mode"] == "tiny" and not saved["official"]
    assert saved["machine"]["usable_cpus"] >= 1 and saved["machine"]["cpu"]
    assert saved["load_average_start"] and saved["load_average_end"]
    markdown = out.with_suffix(".md").read_text()
    text = benchmark.text_table(report)
    for row in saved["rows"]:
        assert row["name"] in markdown and row["name"] in text
    assert saved["machine"]["cpu"] in markdown
    for line in saved["table"]:
        assert line["ours"] is not None and line["ours"] >= 0
        assert line["official"] is None and line["ratio"] is None
    assert saved["targets"] == []  # no ratios without the official code


def test_official_path_must_be_a_checkout(tmp_path, capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args([f"--official={tmp_path}"])
    assert "models/archs/IFAN.py" in capsys.readouterr().err


def test_targets_compare_ratios_with_the_issue_limits():
    """`targets` on hand-made results: ratios, limits and the cache check."""
    def res(t, mem, compile_s=None):
        return {"time_s": t, "peak_rss_mb": mem, "compile_s": compile_s}

    rows = [
        {"key": "inference_640x360", "result": {"ours": res(0.7, 400, 5.0),
                                                 "official": res(1.0, 1000)}},
        {"key": "inference_1280x720", "result": {"ours": res(0.7, 400, 20.0),
                                                  "official": res(1.0, 1000)}},
        {"key": "train", "result": {"ours": res(0.5, 1, 1), "official": res(1.0, 1)}},
        {"key": "compile_cache", "result": {"ours": {"cold": {"cache_hits": 0},
                                                     "warm": {"cache_hits": 1}}}},
    ]
    met = {t["target"]: t["met"] for t in benchmark.targets(rows)}
    assert met["inference_640x360 time ratio ours/official <= 0.8"] is True
    assert met["inference_1280x720 time ratio ours/official <= 0.6"] is False  # 0.7
    assert met["inference_1280x720 memory ratio ours/official <= 0.5"] is True  # 0.4
    assert met["train time ratio ours/official <= 0.9"] is True
    assert met["inference_1280x720 compile <= 15 s"] is False
    assert met["second process loads the compiled network from the cache"] is True


def test_gpu_targets_use_the_gpu_limit_and_device_memory():
    """On a GPU: half the official time at 1280x720, memory from the device, not RSS."""
    def res(t, device_mb):
        return {"time_s": t, "peak_rss_mb": 5000.0, "device_mb": device_mb, "compile_s": 4.0}

    spec = {"platform": "gpu"}
    rows = [
        {"key": "inference_1280x720", "name": "inference 1280x720", "kind": "inference",
         "ours": spec, "result": {"ours": res(0.0052, 300.0), "official": res(0.01, 1200.0)}},
        {"key": "inference_640x360", "name": "inference 640x360", "kind": "inference",
         "ours": spec, "result": {"ours": res(0.009, 100.0), "official": res(0.01, 200.0)}},
    ]
    met = {t["target"]: t["met"] for t in benchmark.targets(rows)}
    assert met == {"inference_1280x720 time ratio ours/official <= 0.5": False,  # 0.52
                   "inference_1280x720 compile <= 15 s": True}
    lines = {(line["row"], line["measure"]): line for line in benchmark.summarize(rows)}
    memory = lines[("inference 1280x720", "device memory per call (MB)")]
    assert memory["ours"] == 300.0 and memory["ratio"] == 0.25
