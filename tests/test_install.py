"""install.py against the fake SD.Next `launch` / `installer`: only what is missing gets installed.

install.py runs the way SD.Next runs it: `python install.py` in a subprocess, cwd = the
extension folder, PYTHONPATH = the (fake) SD.Next root. The fake records every call; its
sitecustomize hides the modules named in FAKE_SDNEXT_MISSING so they look uninstalled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAKE = REPO / "tests" / "fake_sdnext"
PROTECTED = ("torch", "diffusers", "transformers", "gradio", "numpy", "setuptools")


def run_install(tmp_path: Path, missing: str = "", fail: str = "", skip: str = "", deps: str = ""):
    record = tmp_path / "calls.jsonl"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FAKE_SDNEXT", "FRAMEPACK_INSTALL"))}
    env.update(PYTHONPATH=str(FAKE), FAKE_SDNEXT_RECORD=str(record), FAKE_SDNEXT_MISSING=missing,
               FAKE_SDNEXT_PIP_FAIL=fail, FRAMEPACK_INSTALL_SKIP=skip, FAKE_SDNEXT_DEPS=deps)
    done = subprocess.run([sys.executable, "install.py"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    calls = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return done, calls


def pip_commands(calls):
    return [call["pkg"] for call in calls if call["call"] == "run_pip"] + \
        [call["arg"] for call in calls if call["call"] == "installer_pip"]


def dry_runs(calls):
    return [call for call in calls if call["call"] == "run" and " --dry-run " in call["command"]]


def test_nothing_to_install_when_everything_is_present(tmp_path):
    done, calls = run_install(tmp_path)
    assert done.returncode == 0, done.stderr
    assert calls == []
    assert "FramePack install: nothing to install, all requirements present" in done.stdout
    assert "av, optimum-quanto, nncf, opencv-python-headless" in done.stdout


def test_installs_exactly_the_missing_ones(tmp_path):
    done, calls = run_install(tmp_path, missing="av,nncf")
    assert done.returncode == 0, done.stderr
    commands = pip_commands(calls)
    assert len(commands) == 2
    assert commands[0].startswith('install --no-deps "av==1.0" -c ')
    assert commands[1].startswith('install --no-deps "nncf==1.0" -c ')
    assert [call["command"].split(" -c ")[0].split()[-1] for call in dry_runs(calls)] == ['"av"', '"nncf"']
    assert [call["desc"] for call in calls if call["call"] == "run_pip"] == ["av", "nncf"]
    assert "installed av" in done.stdout and "installed nncf" in done.stdout
    assert "optimum" not in " ".join(commands) and "opencv" not in " ".join(commands)


def test_submodule_parent_missing_counts_as_missing(tmp_path):
    done, calls = run_install(tmp_path, missing="optimum")
    assert done.returncode == 0, done.stderr
    assert [c.split(" -c ")[0] for c in pip_commands(calls)] == ['install --no-deps "optimum-quanto==1.0"']


def test_protected_packages_are_pinned_never_installed(tmp_path):
    """Each pip call carries a constraints file pinning torch/diffusers/... at the installed versions."""
    from importlib import metadata

    done, calls = run_install(tmp_path, missing="av")
    assert done.returncode == 0, done.stderr
    (call,) = [call for call in calls if call["call"] == "run_pip"]
    assert call["pkg"].split(" -c ")[0] == 'install --no-deps "av==1.0"'
    (pins,) = call["constraints"].values()
    for name in PROTECTED:
        assert f"{name}=={metadata.version(name)}" in pins.splitlines()
    (path,) = call["constraints"]
    assert not Path(path).exists()  # the temporary constraints file is removed after the run
    # the resolve pins them too, except setuptools (torch's metadata wants a newer one than SD.Next keeps)
    (resolve,) = dry_runs(calls)
    (resolve_pins,) = resolve["constraints"].values()
    for name in PROTECTED:
        assert (f"{name}=={metadata.version(name)}" in resolve_pins.splitlines()) == (name != "setuptools")


def test_dependencies_install_without_resolving_again_and_protected_ones_are_kept(tmp_path):
    """The dependencies pip's dry run names are installed with --no-deps; protected ones are left alone
    (SD.Next 058a7f0: optimum-quanto's resolve raised setuptools 69.5.1 -> 84.2.1 through torch)."""
    from importlib import metadata

    done, calls = run_install(tmp_path, missing="optimum",
                              deps="optimum-quanto:ninja==1.13.2+setuptools==84.2.1+Torch==9.9")
    assert done.returncode == 0, done.stderr
    (command,) = pip_commands(calls)
    assert command.split(" -c ")[0] == 'install --no-deps "optimum-quanto==1.0" "ninja==1.13.2"'
    assert "setuptools" not in command and "orch" not in command
    assert f"kept setuptools {metadata.version('setuptools')}" in done.stdout
    assert "kept Torch" in done.stdout
    assert "installed optimum-quanto with ninja==1.13.2" in done.stdout


def test_opencv_goes_through_installer_from_the_sdnext_root(tmp_path):
    """launch.run_pip silently refuses 'opencv-python*' names: OpenCV must use installer.install,
    from the SD.Next root so its relative `-c constraints.txt` resolves; numpy 1 -> opencv < 4.12."""
    import numpy

    done, calls = run_install(tmp_path, missing="cv2,opencv-python-headless")
    assert done.returncode == 0, done.stderr
    assert not [call for call in calls if call["call"] == "run_pip_blocked"]
    (call,) = [call for call in calls if call["call"] == "installer_pip"]
    assert call["cwd"] == str(FAKE) and call["constraints_found"] is True
    numpy_1 = int(numpy.__version__.split(".")[0]) < 2
    expected = '"opencv-python-headless<4.12"' if numpy_1 else '"opencv-python-headless"'
    (resolve,) = dry_runs(calls)
    assert expected in resolve["command"]
    assert '--no-deps "opencv-python-headless==1.0"' in call["arg"] and call["args"].endswith("-c constraints.txt")
    assert os.getcwd()  # unchanged in the test process


def test_a_failing_install_gives_a_clear_message_and_the_others_still_install(tmp_path):
    done, calls = run_install(tmp_path, missing="av,nncf", fail="nncf")
    assert done.returncode == 1
    assert "could not install nncf (optional, needed for NNCF weight compression)" in done.stderr
    assert "pip cannot resolve nncf" in done.stderr and "No matching distribution found" in done.stderr  # pip's own
    assert 'python -m pip install "nncf"' in done.stderr
    assert "installed av" in done.stdout
    assert "failed: nncf" in done.stderr


def test_skip_list_leaves_optional_packages_out(tmp_path):
    done, calls = run_install(tmp_path, missing="nncf", skip="nncf")
    assert done.returncode == 0, done.stderr
    assert calls == []
    assert "nothing to install" in done.stdout
