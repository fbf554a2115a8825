"""The Colab notebook runs top to bottom on CPU in its small mode (as CI runs it)."""

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "ifan_colab.ipynb")


@pytest.mark.slow
def test_notebook_runs_in_small_mode(tmp_path, monkeypatch):
    workdir = tmp_path / "colab"
    monkeypatch.setenv("IFAN_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("IFAN_NOTEBOOK_WORKDIR", str(workdir))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": ROOT}})
    client.execute()

    # It trained, deblurred and evaluated: the artefacts each step promises exist and are sane.
    assert (workdir / "model_config.json").is_file()
    assert (workdir / "side_by_side.png").is_file()
    scores = (workdir / "eval" / "scores.csv").read_text().splitlines()
    assert scores[0] == "name,psnr,ssim,mae,lpips,seconds"
    assert len(scores) == 3  # header + the 2 images of the small mode
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for o in outputs), "the side-by-side figure was not displayed"
    assert not any(o.get("output_type") == "error" for o in outputs)
