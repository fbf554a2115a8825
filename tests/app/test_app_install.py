"""The app extra installs on top of the core without undoing it: the README's
`pip install -e ".[app]"` keeps the clone editable and downgrades nothing the core installed, and the
core pins nothing the extra's Gradio refuses (Gradio 6 needs pillow < 13: the core caps it too)."""

import json
import os
import re
import shlex
import subprocess
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.version import Version
from repo import ROOT


def _core_requirements() -> dict[str, Requirement]:
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        reqs = [Requirement(line.split("#")[0].strip()) for line in f
                if line.split("#")[0].strip() and not line.startswith("-")]
    return {r.name.lower().replace("_", "-"): r for r in reqs}


def _app_extra() -> list[Requirement]:
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        line = re.search(r"^app = \[(.*)\]$", f.read(), re.M).group(1)
    return [Requirement(r) for r in re.findall(r'"([^"]+)"', line)]


def _probe_versions(installed: str | None) -> list[Version]:
    """Versions to compare specifier sets on: every X.Y (and X.Y.Z around an installed one)."""
    probes = {Version(f"{major}.{minor}") for major in range(0, 40) for minor in range(0, 30)}
    if installed:
        v = Version(installed)
        probes |= {Version(f"{v.major}.{v.minor}.{p}") for p in range(0, 10)}
    return sorted(probes)


def test_the_core_allows_no_version_the_app_extra_refuses():
    core = _core_requirements()
    for extra in _app_extra():
        try:
            requires = metadata.requires(extra.name) or []
        except metadata.PackageNotFoundError:
            pytest.skip(f"{extra.name} is not installed: pip install -e '.[app]'")
        for text in requires:
            dep = Requirement(text)
            name = dep.name.lower().replace("_", "-")
            if dep.marker is not None and "extra" in str(dep.marker) or name not in core:
                continue
            try:
                installed = metadata.version(name)
            except metadata.PackageNotFoundError:
                installed = None
            refused = [v for v in _probe_versions(installed)
                       if core[name].specifier.contains(v, prereleases=False)
                       and not dep.specifier.contains(v, prereleases=False)]
            assert not refused, (f"requirements.txt's {core[name]} allows {refused[0]}, which "
                                 f"{extra.name} refuses ({dep}): installing the extra would "
                                 f"downgrade it")


def _readme_app_install() -> list[str]:
    with open(os.path.join(ROOT, "README.md")) as f:
        lines = [line.strip() for line in f if line.strip().startswith("pip install")
                 and "[app]" in line]
    assert lines, "README prints no `pip install ... [app]` command"
    return shlex.split(lines[0])


@pytest.mark.slow
def test_the_readme_app_install_keeps_the_clone_editable_and_downgrades_nothing(tmp_path):
    argv = _readme_app_install()
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
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue
        assert version >= installed, f"installing the extra would downgrade {name} {installed} " \
                                     f"-> {version}"
