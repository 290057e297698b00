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
PROTECTED = ("torch", "diffusers", "transformers", "gradio", "numpy")


def run_install(tmp_path: Path, missing: str = "", fail: str = "", skip: str = ""):
    record = tmp_path / "calls.jsonl"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FAKE_SDNEXT", "FRAMEPACK_INSTALL"))}
    env.update(PYTHONPATH=str(FAKE), FAKE_SDNEXT_RECORD=str(record), FAKE_SDNEXT_MISSING=missing,
               FAKE_SDNEXT_PIP_FAIL=fail, FRAMEPACK_INSTALL_SKIP=skip)
    done = subprocess.run([sys.executable, "install.py"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    calls = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return done, calls


def pip_commands(calls):
    return [call["pkg"] for call in calls if call["call"] == "run_pip"] + \
        [call["arg"] for call in calls if call["call"] == "installer_pip"]


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
    assert commands[0].startswith('install "av" -c ') and commands[1].startswith('install "nncf" -c ')
    assert [call["desc"] for call in calls if call["call"] == "run_pip"] == ["av", "nncf"]
    assert "installed av" in done.stdout and "installed nncf" in done.stdout
    assert "optimum" not in " ".join(commands) and "opencv" not in " ".join(commands)


def test_submodule_parent_missing_counts_as_missing(tmp_path):
    done, calls = run_install(tmp_path, missing="optimum")
    assert done.returncode == 0, done.stderr
    assert [c.split(" -c ")[0] for c in pip_commands(calls)] == ['install "optimum-quanto"']


def test_protected_packages_are_pinned_never_installed(tmp_path):
    """Each pip call carries a constraints file pinning torch/diffusers/... at the installed versions."""
    from importlib import metadata

    done, calls = run_install(tmp_path, missing="av")
    assert done.returncode == 0, done.stderr
    (call,) = [call for call in calls if call["call"] == "run_pip"]
    assert call["pkg"].split(" -c ")[0] == 'install "av"'
    (pins,) = call["constraints"].values()
    for name in PROTECTED:
        assert f"{name}=={metadata.version(name)}" in pins.splitlines()
    (path,) = call["constraints"]
    assert not Path(path).exists()  # the temporary constraints file is removed after the run


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
    assert expected in call["arg"] and call["args"].endswith("-c constraints.txt")
    assert os.getcwd()  # unchanged in the test process


def test_a_failing_install_gives_a_clear_message_and_the_others_still_install(tmp_path):
    done, calls = run_install(tmp_path, missing="av,nncf", fail="nncf")
    assert done.returncode == 1
    assert "could not install nncf (optional, needed for NNCF weight compression)" in done.stderr
    assert "Couldn't install nncf" in done.stderr  # the host's own error text is kept
    assert 'python -m pip install "nncf"' in done.stderr
    assert "installed av" in done.stdout
    assert "failed: nncf" in done.stderr


def test_skip_list_leaves_optional_packages_out(tmp_path):
    done, calls = run_install(tmp_path, missing="nncf", skip="nncf")
    assert done.returncode == 0, done.stderr
    assert calls == []
    assert "nothing to install" in done.stdout
