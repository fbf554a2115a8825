"""Installing as the README says: the extras (`.[app]`, `.[export]`) install on top of the core
without replacing anything it installed, and the README's test lines work, each as printed, after
the README's Install.

The core caps what an extra's packages cap (Gradio 6 needs pillow < 13, jax2onnx 0.17.1 needs
orbax-checkpoint < 0.11.37), so pip's newest choice for the core is already one the extra accepts."""

import json
import os
import re
import shlex
import subprocess
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from repo import ROOT

EXTRAS = ("app", "export")


def _requirements(path: str) -> dict[str, Requirement]:
    """The requirements of a requirements file, following its `-r` includes."""
    out = {}
    with open(path) as f:
        for line in f:
            text = line.split("#")[0].strip()
            if text.startswith("-r"):
                out.update(_requirements(os.path.join(os.path.dirname(path), text[2:].strip())))
            elif text:
                req = Requirement(text)
                out[canonicalize_name(req.name)] = req
    return out


def _extra(name: str) -> list[Requirement]:
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        line = re.search(rf"^{name} = \[(.*)\]$", f.read(), re.M).group(1)
    return [Requirement(r) for r in re.findall(r'"([^"]+)"', line)]


def _probe_versions(installed: str | None) -> list[Version]:
    """Versions to compare specifier sets on: every X.Y and X.Y.Z up to 40 (and the installed)."""
    probes = {Version(f"{major}.{minor}") for major in range(0, 40) for minor in range(0, 40)}
    probes |= {Version(f"{major}.{minor}.{patch}") for major in range(0, 3)
               for minor in range(0, 40) for patch in range(0, 40)}
    if installed:
        probes.add(Version(installed))
    return sorted(probes)


@pytest.mark.parametrize("extra", EXTRAS)
def test_the_core_allows_no_version_an_extra_would_replace(extra):
    """For each package the core requires and an extra's package also requires: the core allows
    some version the extra accepts, and none above that the extra refuses (so a core install,
    pip's newest allowed, is never downgraded by the extra)."""
    core = _requirements(os.path.join(ROOT, "requirements.txt"))
    checked = 0
    for package in _extra(extra):
        try:
            requires = metadata.requires(package.name) or []
        except metadata.PackageNotFoundError:
            pytest.skip(f"{package.name} is not installed: pip install -r requirements-test.txt")
        for text in requires:
            dep = Requirement(text)
            name = canonicalize_name(dep.name)
            if dep.marker is not None and "extra" in str(dep.marker) or name not in core:
                continue
            try:
                installed = metadata.version(name)
            except metadata.PackageNotFoundError:
                installed = None
            allowed = [v for v in _probe_versions(installed)
                       if core[name].specifier.contains(v, prereleases=False)]
            accepted = [v for v in allowed if dep.specifier.contains(v, prereleases=False)]
            assert accepted, f"requirements.txt's {core[name]} and {package.name}'s {dep} meet nowhere"
            refused = [v for v in allowed if v > accepted[0] and v not in accepted]
            assert not refused, (f"requirements.txt's {core[name]} allows {refused[0]}, which "
                                 f"{package.name} refuses ({dep}): installing .[{extra}] would "
                                 f"downgrade it")
            checked += 1
    assert checked, f"no requirement of .[{extra}] was compared with the core"


def _readme_block(heading: str) -> list[str]:
    """The lines of the first ```bash block under `heading` in README.md."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split(f"\n## {heading}\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def _commands(line: str) -> list[list[str]]:
    return [shlex.split(part) for part in re.split(r"&&|;", line) if part.strip()]


def test_each_readme_test_line_works_after_the_readme_install():
    """Install's requirements, then each line of "Run the test suite" in order: every tool a
    line runs (`python -m X`, `ruff`, `pytest`) is installed by then, by Install or a line
    above it (so the fast-tier line does not fail with "No module named pytest")."""
    distributions = metadata.packages_distributions()
    installed: set[str] = set()
    for line in _readme_block("Install"):
        for argv in _commands(line):
            if argv[:3] == ["pip", "install", "-r"]:
                installed |= set(_requirements(os.path.join(ROOT, argv[3])))
    assert "jax" in installed, "README's Install installs no requirements file"
    lines = _readme_block("Run the test suite")
    assert any("-m" in line and "not slow" in line for line in lines), \
        "the README's test block has no fast-tier line"
    for line in lines:
        for argv in _commands(line):
            if argv[:3] == ["pip", "install", "-r"]:
                installed |= set(_requirements(os.path.join(ROOT, argv[3])))
                continue
            if argv[:2] == ["python", "-m"]:
                module = argv[2].split(".")[0]
                tool = {canonicalize_name(d) for d in distributions.get(module, [module])}
            elif argv[0] in ("ruff", "pytest"):
                tool = {argv[0]}
            else:
                continue
            assert tool & installed, (f"README's `{line}` runs {argv[0]} {' '.join(argv[1:3])}, "
                                      f"which nothing above it installs")


@pytest.mark.slow
@pytest.mark.parametrize("extra", EXTRAS)
def test_the_readme_extra_install_keeps_the_clone_editable_and_replaces_nothing(extra, tmp_path):
    with open(os.path.join(ROOT, "README.md")) as f:
        lines = [line.strip() for line in f if line.strip().startswith("pip install")
                 and f"[{extra}]" in line]
    assert lines, f"README prints no `pip install ... [{extra}]` command"
    argv = shlex.split(lines[0].split("  #")[0])
    assert "-e" in argv or "--editable" in argv, f"README's {' '.join(argv)} is not editable"
    report = tmp_path / "report.json"
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_DEFAULT_TIMEOUT="20")
    proc = subprocess.run([sys.executable, "-m", *argv[:2], "--dry-run", "--quiet", "--no-input",
                           "--report", str(report), *argv[2:]], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and re.search(r"connection|network|resolve|timed out|proxy",
                                          proc.stderr, re.I):
        pytest.skip(f"the package index is unreachable: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    items = json.loads(report.read_text())["install"]
    project = [i for i in items if i["metadata"]["name"].lower() == "ifan-jax"]
    assert project and project[0]["download_info"].get("dir_info", {}).get("editable") is True
    assert os.path.realpath(project[0]["download_info"]["url"].removeprefix("file://")) == ROOT
    for item in items:
        name, version = item["metadata"]["name"], Version(item["metadata"]["version"])
        if canonicalize_name(name) == "ifan-jax":
            continue
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue
        assert version == installed, f"installing .[{extra}] would replace {name} {installed} " \
                                     f"with {version}"
