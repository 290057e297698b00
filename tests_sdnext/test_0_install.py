"""The extension installed as SD.Next's extension manager does, then SD.Next's full launch.

The full launch runs install.py (SD.Next runs extension installers only then). optimum-quanto
is removed from SD.Next's venv first, so every run exercises a real installation: in SD.Next
058a7f0 installing it raised the host's setuptools 69.5.1 to 84.2.1 through torch's metadata.
"""

from __future__ import annotations

import re

import pytest

from tests_sdnext.pages import extension_problems
from tests_sdnext.sdnext_server import EXTENSION_FOLDER

pytestmark = pytest.mark.sdnext
PROTECTED = ("torch", "diffusers", "transformers", "gradio", "numpy", "setuptools")
OURS = ("av", "optimum-quanto", "nncf", "opencv-python-headless", "peft")


def test_full_launch_installs_only_what_is_missing(site):
    if "optimum-quanto" in site.pip_freeze():
        site.pip("uninstall", "-y", "optimum-quanto")
    before = site.pip_freeze()
    assert "optimum-quanto" not in before
    launch = site.full_launch()
    after = site.pip_freeze()
    log = launch.log()

    assert "Startup: launch=full" in log and f'install.py"' in log  # SD.Next ran our installer
    changed = {name: (before[name], after.get(name)) for name in before if after.get(name) != before[name]}
    assert changed == {}, f"install.py changed packages that were there: {changed}"
    for name in PROTECTED:
        assert after[name] == before[name]
    added = sorted(set(after) - set(before))
    assert "optimum-quanto" in added and not set(added) & set(PROTECTED), added
    # SD.Next reports what an extension installer added (our own lines show only on failure, see README)
    reported = re.search(rf"Extension installed packages: {re.escape(EXTENSION_FOLDER)} \[(.*)\]", log)
    assert reported and "optimum-quanto==" in reported.group(1)
    assert extension_problems(log) == []
    for module in ("av", "optimum.quanto", "nncf", "cv2", "peft"):
        assert site.can_import(module), module
