"""Install ifan-jax's requirements on a Colab (or any notebook) runtime without replacing its
accelerator builds of jax and TensorFlow.

    python notebooks/colab_setup.py            # from the repository root; what the notebook runs

requirements.txt names the CPU wheels (`jax[cpu]`, `tensorflow-cpu`) because they install
everywhere. Colab's GPU and TPU runtimes come with jax built for their accelerator and with
TensorFlow; installing the CPU wheels over them would leave JAX on the CPU. So `plan`:

- on a GPU or TPU runtime drops `jax[cpu]` and keeps the runtime's jax/jaxlib (pinned by a
  constraint, so no other requirement upgrades them) when they are an accelerator build within our
  version range, else installs `jax[cuda12]` or `jax[tpu]` in that range;
- on any runtime that already has TensorFlow (Colab's, CPU ones included) drops `tensorflow-cpu`:
  the installed TensorFlow is pinned likewise when its version is in our range, else `tensorflow`
  of our range is installed (the full build, not the CPU one). TensorFlow only reads data here and
  is kept off the accelerator (`ifan_jax.environment`).

Elsewhere requirements.txt is installed as written. Needs only the standard library and `packaging`
(present wherever pip is recent).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile

from packaging.requirements import Requirement
from packaging.version import Version

# Distributions whose presence marks jax as built for an accelerator.
ACCELERATOR_PLUGINS = {
    "gpu": ("jax-cuda12-plugin", "jax-cuda13-plugin", "jax-cuda12-pjrt"),
    "tpu": ("libtpu", "libtpu-nightly"),
}
JAX_EXTRA = {"gpu": "cuda12", "tpu": "tpu"}
WATCHED = ("jax", "jaxlib", "tensorflow", "tensorflow-cpu", *ACCELERATOR_PLUGINS["gpu"],
           *ACCELERATOR_PLUGINS["tpu"])


def accelerator() -> str:
    """"tpu", "gpu" or "cpu": the runtime's accelerator (a TPU device or Colab's TPU variable; a
    working nvidia-smi)."""
    if os.environ.get("COLAB_TPU_ADDR") or os.path.exists("/dev/accel0") or os.environ.get(
            "TPU_NAME"):
        return "tpu"
    if shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0:
        return "gpu"
    return "cpu"


def installed(names=WATCHED) -> dict[str, str]:
    """Version of each installed distribution among `names`."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _in_range(requirement: Requirement, version: str | None) -> bool:
    return version is not None and requirement.specifier.contains(Version(version), prereleases=True)


def plan(lines: list[str], accel: str, versions: dict[str, str]) -> tuple[list[str], list[str]]:
    """(requirements to install, constraints) for requirements.txt's `lines` on a runtime with
    accelerator `accel` and the installed distribution `versions` (see the module docstring)."""
    requirements, constraints = [], []
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        req = Requirement(text)
        if req.name == "jax" and accel != "cpu":
            has_plugin = any(p in versions for p in ACCELERATOR_PLUGINS[accel])
            if has_plugin and _in_range(req, versions.get("jax")):
                constraints += [f"{n}=={versions[n]}" for n in ("jax", "jaxlib") if n in versions]
            else:
                requirements.append(f"jax[{JAX_EXTRA[accel]}]{req.specifier}")
        elif req.name == "tensorflow-cpu" and "tensorflow" in versions:
            if _in_range(req, versions["tensorflow"]):
                constraints.append(f"tensorflow=={versions['tensorflow']}")
            else:
                requirements.append(f"tensorflow{req.specifier}")
        else:
            requirements.append(text)
    return requirements, constraints


def install(root: str = ".", accel: str | None = None) -> None:
    """pip-install requirements.txt as `plan` says, then ifan-jax itself (editable, no deps)."""
    accel = accel or accelerator()
    with open(os.path.join(root, "requirements.txt")) as f:
        requirements, constraints = plan(f.read().splitlines(), accel, installed())
    with tempfile.TemporaryDirectory() as tmp:
        req_file, con_file = os.path.join(tmp, "requirements.txt"), os.path.join(tmp, "constraints.txt")
        with open(req_file, "w") as f:
            f.write("\n".join(requirements) + "\n")
        with open(con_file, "w") as f:
            f.write("\n".join(constraints) + "\n")
        print(f"installing for a {accel} runtime" + (f", keeping {', '.join(constraints)}"
                                                    if constraints else ""))
        pip = [sys.executable, "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "-r", req_file, "-c", con_file], check=True)
        subprocess.run([*pip, "--no-deps", "-e", root], check=True)


if __name__ == "__main__":
    install(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
