"""The package's shape: roles in folders, no benchmark tooling or configs in the
wheel, no private names reached across modules, and importing a module changes nothing in the
process."""

import ast
import json
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "ifan_jax")


def _modules(folder: str) -> list[str]:
    out = []
    for base, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        out += [os.path.join(base, f) for f in files if f.endswith(".py")]
    return sorted(out)


def _name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel.removesuffix(".__init__")


def test_at_most_twelve_modules_directly_in_the_package_and_the_roles_are_folders():
    top = [f for f in os.listdir(PACKAGE) if f.endswith(".py")]
    assert len(top) <= 12, sorted(top)
    for role in ("models", "data", "training", "evaluation", "inference", "weights", "app"):
        assert os.path.isfile(os.path.join(PACKAGE, role, "__init__.py")), role
    assert not os.path.exists(os.path.join(PACKAGE, "benchmark"))


def test_the_library_never_imports_configs_or_benchmarks():
    for path in _modules(PACKAGE):
        for node in ast.walk(ast.parse(open(path).read())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("configs", "benchmarks"), f"{path}: {name}"


def test_no_module_uses_another_modules_private_names():
    offences = []
    for path in _modules(PACKAGE) + _modules(os.path.join(ROOT, "benchmarks")):
        tree = ast.parse(open(path).read())
        own_classes = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    ("ifan_jax", "benchmarks")):
                offences += [f"{path}: from {node.module} import {a.name}" for a in node.names
                             if a.name.startswith("_")]
            # A private attribute of a module, or of an object made elsewhere (`deblurrer._x`):
            # only `self`, `cls` and the module's own classes may reach into their privates.
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                    and node.value.id not in {"self", "cls"} | own_classes):
                offences.append(f"{path}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not offences, offences


_SNAPSHOT = r"""
import importlib, json, logging, os, sys, warnings
def snapshot():
    import absl.logging
    loggers = {name: logging.getLogger(name).level for name in
               ("", "absl", "jax", "orbax", "tensorflow", "clu", "etils", "jax._src.xla_bridge")}
    import jax
    return {"env": dict(os.environ), "loggers": loggers,
            "absl": absl.logging.get_verbosity(), "warnings": len(warnings.filters),
            "jax": {k: str(getattr(jax.config, k)) for k in (
                "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                "jax_enable_x64", "jax_platforms")}}
for name in sys.argv[2:]:  # the libraries our modules import: their own import-time effects
    try:
        importlib.import_module(name)
    except ImportError:  # `from module import name` of a name that is not a module
        pass
before = snapshot()
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
after = snapshot()
print(json.dumps({"before": before, "after": after}))
"""


@pytest.mark.slow
def test_importing_any_module_changes_no_process_state():
    modules = [_name(p) for p in _modules(PACKAGE) if not p.endswith("__main__.py")]
    third_party = set()
    for path in _modules(PACKAGE):
        for n in ast.walk(ast.parse(open(path).read())):
            if isinstance(n, ast.Import):
                third_party |= {a.name for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
                third_party |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
    third_party = sorted(m for m in third_party
                         if m.split(".")[0] not in ("ifan_jax", "__future__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "JAX_", "XLA_"))}
    proc = subprocess.run([sys.executable, "-c", _SNAPSHOT, json.dumps(modules), *third_party],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    before, after = result["before"], result["after"]
    changed_env = {k: after["env"].get(k) for k in set(before["env"]) | set(after["env"])
                   if before["env"].get(k) != after["env"].get(k)}
    assert changed_env == {}
    assert after["loggers"] == before["loggers"]
    assert after["absl"] == before["absl"] and after["warnings"] == before["warnings"]
    assert after["jax"] == before["jax"]


@pytest.mark.slow
def test_the_wheel_has_no_benchmarks_and_no_configs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path), ROOT], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = [p for p in os.listdir(tmp_path) if p.endswith(".whl")]
    names = zipfile.ZipFile(tmp_path / wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert "ifan_jax" in tops and "benchmarks" not in tops and "configs" not in tops, tops
    assert not [n for n in names if "/benchmark" in n or n.endswith("official.py")]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(tmp_path / wheel).read(entry_points).decode()
    for script in ("ifan-deblur", "ifan-app", "ifan-convert"):
        assert f"{script} = " in scripts


def test_every_cache_follows_ifan_jax_cache(tmp_path, monkeypatch):
    """The compilation cache, the converted weights and the app's example photos all go under
    $IFAN_JAX_CACHE when it is set, each in its own folder, and under ~/.cache/ifan_jax if not."""
    from ifan_jax import fileio
    from ifan_jax.app import examples
    from ifan_jax.weights import convert

    monkeypatch.setenv("IFAN_JAX_CACHE", str(tmp_path))
    assert convert.cache_root() == str(tmp_path / "converted")
    assert examples.default_dir() == str(tmp_path / "app_examples")
    assert fileio.cache_dir("xla") == str(tmp_path / "xla")
    monkeypatch.delenv("IFAN_JAX_CACHE")
    home = os.path.expanduser(os.path.join("~", ".cache", "ifan_jax"))
    assert convert.cache_root() == os.path.join(home, "converted")
    assert fileio.cache_dir("xla") == os.path.join(home, "xla")
    sources = "".join(open(p).read() for p in _modules(PACKAGE))
    assert sources.count('"IFAN_JAX_CACHE"') == 1  # read in one place: fileio.cache_dir


def test_the_readme_is_for_its_users_in_at_most_300_lines():
    """Install, then deblurring, the web page(s), evaluation and the paper, training, performance:
    in that order; the long-form material lives in docs/."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    assert len(text.splitlines()) <= 300
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    order = ["Install", "Deblur your photos", "A web page", "The model outside Python", "Evaluate",
             "Train", "Performance"]
    found = [next(i for i, h in enumerate(headings) if h.startswith(o)) for o in order]
    assert found == sorted(found), headings
    for doc in ("deblur", "app", "evaluation", "training", "performance", "layout", "export", "web",
                "intent", "reproduce"):
        assert f"docs/{doc}.md" in text and os.path.isfile(os.path.join(ROOT, "docs", f"{doc}.md"))
