"""The distribution: a wheel builds from the tree, installs into a fresh venv and works from there."""

import email
import os
import subprocess
import sys
import venv
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_wheel_builds_installs_and_runs_in_a_fresh_venv(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), REPO],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = [name for name in os.listdir(tmp_path) if name.endswith(".whl")]
    with zipfile.ZipFile(tmp_path / wheel) as archive:
        names = archive.namelist()
        metadata = email.message_from_bytes(archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
    # The card template (a symlink in the tree) is a real file in the wheel; no __init__.py claims optimum's namespace.
    assert "optimum_spd/hub/spd_model_card.md.j2" in names
    assert "optimum_spd/csrc/csr_spmm.c" in names  # the native kernel's source, compiled on first use
    assert "optimum/commands/register/register_spd.py" in names
    assert not any(n in names for n in ("optimum/__init__.py", "optimum/commands/__init__.py"))
    assert not any(n.startswith(("tests/", "benchmarks/", "runs/")) for n in names)
    assert metadata["Name"] == "optimum-spd" and metadata["License"] == "Apache-2.0"
    assert "Paper, https://arxiv.org/abs/2110.08190" in (metadata.get_all("Project-URL") or [])

    # A fresh venv over this interpreter's packages (torch, transformers...), optimum-spd from the wheel only.
    environment = tmp_path / "venv"
    venv.create(environment, system_site_packages=True, with_pip=False)
    python = str(environment / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(tmp_path / wheel)],
        check=True,
        capture_output=True,
    )
    probe = subprocess.run(
        [python, "-c", "import optimum_spd, os; print(optimum_spd.__file__); print(optimum_spd.__version__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the repository: the installed copy must be the one imported
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert probe.stdout.splitlines()[0].startswith(str(environment))
    script = subprocess.run([str(environment / "bin" / "optimum-spd"), "--help"], capture_output=True, text=True)
    assert script.returncode == 0 and "export" in script.stdout
