"""Fake `modules.paths`: folders and `resolve_output_path` (same rules as SD.Next)."""

from __future__ import annotations

import os

modules_path = os.path.dirname(os.path.realpath(__file__))
script_path = os.path.dirname(modules_path)
data_path = os.environ.get("FAKE_SDNEXT_DATA", script_path)
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")


def resolve_output_path(base_path: str, specific_path: str) -> str:
    """Absolute specific path wins; a base joins a relative specific path; else specific as is."""
    if not specific_path:
        return base_path or ""
    if os.path.isabs(specific_path):
        return specific_path
    if base_path:
        return os.path.normpath(os.path.join(base_path, specific_path))
    return specific_path
