"""Fake `modules.sd_checkpoint.CheckpointInfo` (what the host shows as the loaded model)."""

from __future__ import annotations

import os


class CheckpointInfo:
    def __init__(self, filename: str, name: str | None = None, sha: str | None = None, subfolder: str | None = None,
                 model_type: str = "checkpoint", folder: str | None = None):
        self.filename = filename if filename is not None else "none"
        self.name = name or self.filename
        self.hash = sha
        self.sha256 = sha
        self.subfolder = subfolder
        self.type = "diffusers" if not os.path.isfile(self.filename) else os.path.splitext(self.filename)[1][1:]
        self.shorthash = sha[0:10] if sha else None
        self.title = self.name if self.shorthash is None else f"{self.name} [{self.shorthash}]"
        self.path = folder or self.filename
        self.model_name = os.path.basename(self.name)
        self.metadata = {}

    def __str__(self):
        return f'CheckpointInfo(name="{self.name}" filename="{self.filename}" type={self.type})'
