"""The Colab notebook runs top to bottom on CPU in its small mode (as CI runs it); its installation
helpers get ifan-jax from an archive or folder and keep a runtime's accelerator builds."""

import importlib.util
import os
import shutil
import tarfile
import zipfile

import numpy as np
import pytest
from packaging.requirements import Requirement
from PIL import Image
from repo import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = os.path.join(ROOT, "notebooks", "ifan_colab.ipynb")
REQUIREMENTS = os.path.join(ROOT, "requirements.txt")


def _code_cells():
    return [c.source for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]


def _colab_setup():
    spec = importlib.util.spec_from_file_location(
        "colab_setup", os.path.join(ROOT, "notebooks", "colab_setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    # The defocus map, colour-mapped at the photo's size (the side-by-side is twice as wide).
    figure = Image.open(workdir / "side_by_side.png")
    dmap = Image.open(workdir / "defocus.png")
    assert dmap.mode == "RGB" and dmap.size == (figure.width // 2, 64)
    assert len(np.unique(np.asarray(dmap).reshape(-1, 3), axis=0)) > 10
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    shown = [o for o in outputs
             if o.get("output_type") == "display_data" and "image/png" in o.get("data", {})]
    assert len(shown) == 2, "the side-by-side figure and the defocus map were not both displayed"
    assert not any(o.get("output_type") == "error" for o in outputs)


def test_notebook_loads_configs_by_name_and_names_no_fixed_repository():
    code = "\n".join(_code_cells())
    assert 'load_config("quickstart")' in code and "importlib" not in code
    assert 'REPO_URL = ""' in code and "github.com/ifan-jax" not in code


def _fetch_source():
    """The notebook's `fetch_source`, defined by running its helper cell (off Colab)."""
    cell = next(c for c in _code_cells() if "def fetch_source" in c)
    namespace = {}
    exec(compile(cell, "notebook helper cell", "exec"), namespace)
    assert namespace["IN_COLAB"] is False
    return namespace["fetch_source"]


def _fake_project(folder):
    (folder / "ifan_jax").mkdir(parents=True)
    (folder / "ifan_jax" / "__init__.py").write_text("")
    (folder / "pyproject.toml").write_text("[project]\nname = 'ifan-jax'\n")
    return folder


@pytest.mark.parametrize("kind", ["zip", "tar.gz", "folder"])
def test_fetch_source_from_an_archive_or_folder(tmp_path, monkeypatch, kind):
    fetch_source = _fetch_source()
    project = _fake_project(tmp_path / "made" / "ifan-jax-main")  # as `git archive --prefix` makes
    if kind == "zip":
        source = tmp_path / "ifan-jax.zip"
        with zipfile.ZipFile(source, "w") as z:
            for path in project.rglob("*"):
                z.write(path, path.relative_to(project.parent))
    elif kind == "tar.gz":
        source = tmp_path / "ifan-jax.tar.gz"
        with tarfile.open(source, "w:gz") as t:
            t.add(project, arcname=project.name)
    else:
        source = project
    elsewhere = tmp_path / "session"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not inside a checkout
    target = str(elsewhere / "ifan-jax")
    assert fetch_source("", str(source), target) == target
    assert os.path.isfile(os.path.join(target, "ifan_jax", "__init__.py"))
    assert fetch_source("", "", target) == target  # found again, nothing fetched
    shutil.rmtree(target)
    with pytest.raises(RuntimeError, match="set REPO_URL or SOURCE"):
        fetch_source("", "", target)
    bad = tmp_path / "other.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("other/readme.txt", "not ifan-jax")
    with pytest.raises(RuntimeError, match="holds no ifan-jax project"):
        fetch_source("", str(bad), target)


def _has(requirements, wanted):
    """Whether `requirements` holds `wanted` (same name, extras and version range)."""
    key = lambda r: (r.name, r.extras, r.specifier)
    return key(Requirement(wanted)) in [key(Requirement(r)) for r in requirements]


def test_install_plan_keeps_accelerator_builds():
    plan = _colab_setup().plan
    lines = open(REQUIREMENTS).read().splitlines()
    names = [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]
    jax_cpu = next(n for n in names if n.startswith("jax["))
    tf_cpu = next(n for n in names if n.startswith("tensorflow-cpu"))
    jax_range, tf_range = jax_cpu.split("]")[1], tf_cpu[len("tensorflow-cpu"):]

    # A plain CPU machine: requirements.txt as written, nothing pinned.
    assert plan(lines, "cpu", {}) == (names, [])

    # A Colab GPU runtime with a CUDA jax and TensorFlow in range: both kept and pinned.
    gpu = {"jax": "0.7.2", "jaxlib": "0.7.2", "jax-cuda12-plugin": "0.7.2", "tensorflow": "2.19.0"}
    requirements, constraints = plan(lines, "gpu", gpu)
    assert not [r for r in requirements if r.startswith(("jax", "tensorflow-cpu", "tensorflow>"))]
    assert sorted(constraints) == ["jax==0.7.2", "jaxlib==0.7.2", "tensorflow==2.19.0"]
    assert set(requirements) == set(names) - {jax_cpu, tf_cpu}

    # An older CUDA jax and TensorFlow: their accelerator builds in our range, never the CPU wheels.
    old = {"jax": "0.4.33", "jaxlib": "0.4.33", "jax-cuda12-plugin": "0.4.33", "tensorflow": "2.17.1"}
    requirements, constraints = plan(lines, "gpu", old)
    assert _has(requirements, f"jax[cuda12]{jax_range}") and _has(requirements, f"tensorflow{tf_range}")
    assert jax_cpu not in requirements and tf_cpu not in requirements and constraints == []

    # A TPU runtime whose jax has no TPU plugin gets jax[tpu]; without TensorFlow, tensorflow-cpu.
    requirements, constraints = plan(lines, "tpu", {"jax": "0.7.2", "jaxlib": "0.7.2"})
    assert _has(requirements, f"jax[tpu]{jax_range}") and tf_cpu in requirements
    assert jax_cpu not in requirements
