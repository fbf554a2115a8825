"""The page rows of the benchmark (`benchmarks/page.py`, `rows.PageRow`): what a run plans, the
ratio of the all-threads row to the 1-thread row, the table lines and the target; and, slow, a tiny
run of the rows in headless Chromium."""

import argparse
import json
import os

import pytest
from repo import ROOT

from benchmarks import browser, cli, plan, report, rows, specs, targets

COMMITTED_TARGETS = os.path.join(ROOT, "benchmarks", "targets.json")


def _args(**kw):
    return argparse.Namespace(**{"tiny": False, "platform": "cpu", "dtype": "float32", "official": None,
                                 "rows": None, **kw})


def test_a_full_run_plans_the_page_rows_and_a_tiny_one_only_when_asked():
    page = {row.key: row for row in plan.plan(_args()) if isinstance(row, rows.PageRow)}
    assert list(page) == ["page_wasm_1thread", "page_wasm", "page_photo", "page_webgpu"]
    assert {(row.model, row.tile, row.overlap) for row in page.values()} == {(specs.FULL_MODEL, 512, 64)}
    assert (page["page_wasm_1thread"].job.threads, page["page_wasm"].job.threads) == (1, 0)
    assert page["page_wasm"].relative_to == "page_wasm_1thread"
    assert page["page_photo"].job.photo == (3000, 4000)  # 12 megapixels
    assert page["page_webgpu"].job.backend == "webgpu" and "software GPU" in page["page_webgpu"].name
    assert [row.key for row in plan.plan(_args(rows=("page",)))] == ["page_wasm_1thread", "page_wasm"]
    assert [row.KIND for row in plan.plan(_args(rows=("webgpu", "page_photo")))] == ["page_photo", "webgpu"]
    assert not [row for row in plan.plan(_args(tiny=True)) if isinstance(row, rows.PageRow)]
    tiny = plan.plan(_args(tiny=True, rows=("page", "page_photo", "webgpu")))
    assert len(tiny) == 4 and {row.model for row in tiny} == {specs.TINY_MODEL}


class FakeRunner:
    """Runs nothing: a prepared site and the given results per job."""

    def __init__(self, results):
        self.results, self.ran, self.timeouts = {}, [], []
        self._results = results
        self.log = lambda line: None

    def site(self, model, tile, overlap):
        return {"path": "/site", "export_s": 50.0, "model_bytes": 39_000_000, "site_bytes": 66_000_000}

    def run(self, job, timeout=None):
        self.ran.append(job)
        self.timeouts.append(timeout)
        return dict(self._results[job.threads])


def _page_result(time_s, threads):
    return {"time_s": time_s, "first_tile_s": 2 * time_s, "tiles": 1, "threads": threads, "isolated": True,
            "load_page_s": 15.0, "backend": "wasm"}


def test_the_all_threads_row_is_measured_against_the_1_thread_row():
    measured = [row for row in plan.plan(_args()) if row.key in ("page_wasm_1thread", "page_wasm")]
    runner = FakeRunner({1: _page_result(20.0, 1), 0: _page_result(11.0, 2)})
    rows.measure(measured, runner)
    assert [job.site for job in runner.ran] == ["/site", "/site"]
    assert min(runner.timeouts) > measured[0].job.timeout  # the page's own timeouts fit in the process's
    one, every = (row.result["ours"] for row in measured)
    assert every["time_vs_relative"] == pytest.approx(0.55) and "time_vs_relative" not in one
    assert every["site_bytes"] == 66_000_000
    committed = targets.load_targets(COMMITTED_TARGETS)
    checked = {t["target"]: (t["value"], t["met"]) for t in targets.check(measured, committed, "cpu")}
    assert checked["page: WASM time per tile, all threads / 1 thread <= 0.6"] == (pytest.approx(0.55), True)
    lines = {(line["row"], line["measure"]): line for line in report.summarize(measured, "cpu", committed)}
    ratio = lines[("page, WASM, all threads, one 512x512 tile", "time per tile / the 1-thread row's")]
    assert ratio["ours"] == pytest.approx(0.55) and ratio["target"] == "<= 0.6"
    assert lines[("page, WASM, all threads, one 512x512 tile", "WASM threads")]["ours"] == 2
    isolated = lines[("page, WASM, 1 thread, one 512x512 tile", "cross-origin isolated")]["ours"]
    assert report.fmt(isolated) == "yes"


def test_a_failed_site_is_the_rows_error():
    row = next(row for row in plan.plan(_args()) if row.key == "page_webgpu")

    class NoSite(FakeRunner):
        def site(self, model, tile, overlap):
            return {"error": "FileNotFoundError: run `npm ci --prefix web` first"}

    rows.measure([row], NoSite({}))
    assert report.errors([row]) == [{"row": row.name, "impl": "ours", "error": "making the site: "
                                     "FileNotFoundError: run `npm ci --prefix web` first"}]


def test_page_jobs_survive_the_worker_command_line():
    job = specs.PageRun(site="/s", backend="webgpu", threads=1, photo=(3000, 4000), uploads=1)
    assert specs.from_json(json.loads(json.dumps(specs.to_json(job)))) == job
    made = specs.MakeSite(model=specs.TINY_MODEL, tile=128, overlap=32, path="/p")
    assert specs.from_json(json.loads(json.dumps(specs.to_json(made)))) == made


@pytest.mark.slow
@pytest.mark.skipif(not browser.available() and not os.environ.get("CI"),
                    reason=f"the page rows {browser.MISSING}")
def test_tiny_page_rows_in_chromium(tmp_path):
    """`python -m benchmarks --tiny --rows=page,page_photo,webgpu`: the tiny model's site, measured
    in Chromium, the page isolated with 2 or more threads where there are 2 cores, WebGPU on
    SwiftShader marked as a software GPU (or its error where this Chromium has no adapter)."""
    pytest.importorskip("selenium")
    if not os.path.isdir(os.path.join(ROOT, "web", "node_modules", "onnxruntime-web")):
        pytest.skip("needs the page's npm packages: npm ci --prefix web")
    out = tmp_path / "page.json"
    result = cli.main(["--tiny", "--rows=page,page_photo,webgpu", f"--json={out}"])
    assert [row["key"] for row in json.loads(out.read_text())["rows"]] == [
        "page_wasm_1thread", "page_wasm", "page_photo", "page_webgpu"]
    got = {row["key"]: row["result"]["ours"] for row in result["rows"]}
    for key in ("page_wasm_1thread", "page_wasm", "page_photo"):
        assert "error" not in got[key], got[key]
        assert got[key]["backend"] == "wasm" and got[key]["isolated"] is True
        assert got[key]["time_s"] > 0 and got[key]["site_bytes"] > got[key]["model_bytes"] > 0
    cores = got["page_wasm"]["hardware_concurrency"]
    assert got["page_wasm_1thread"]["threads"] == 1 and got["page_wasm"]["threads"] == min(cores, 8)
    assert got["page_wasm"]["time_vs_relative"] > 0
    assert got["page_photo"]["tiles"] == 6 and len(got["page_photo"]["runs"]) == 1
    assert got["page_wasm"]["tiles"] == 1 and len(got["page_wasm"]["runs"]) == 2
    if "error" not in got["page_webgpu"]:
        assert got["page_webgpu"]["backend"] == "webgpu" and got["page_webgpu"]["software_gpu"] is True
    table = report.markdown(result)
    assert "| page, WASM, all threads, one 128x128 tile | WASM threads |" in table
