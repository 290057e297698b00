"""Tests only: hide the modules named in $FAKE_SDNEXT_MISSING (comma-separated) from imports,
so that `install.py` run in a subprocess sees them as not installed."""

import os
import sys

_HIDDEN = {n.strip() for n in os.environ.get("FAKE_SDNEXT_MISSING", "").split(",") if n.strip()}


class _HideModules:
    def find_spec(self, fullname, path=None, target=None):
        if fullname in _HIDDEN or fullname.split(".")[0] in _HIDDEN:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


if _HIDDEN:
    sys.meta_path.insert(0, _HideModules())
