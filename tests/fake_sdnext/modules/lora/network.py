"""Fake `modules.lora.network`: `NetworkOnDisk(name, filename)`, one LoRA file SD.Next knows.

Checked against vladmandic/sdnext `modules/lora/network.py`: `name`, `filename`, `fullname`
(path relative to `shared.cmd_opts.lora_dir` without the extension, else the name), `alias`
(`ss_output_name` metadata, else the name), `hash` / `shorthash`, `metadata`, `is_safetensors`.
The fake reads no metadata and no hash cache (both stay empty).
"""

from __future__ import annotations

import os

from modules import shared


class NetworkOnDisk:
    def __init__(self, name, filename):
        self.shorthash = None
        self.hash = None
        self.name = name
        self.filename = filename
        lora_dir = shared.cmd_opts.lora_dir or ""
        if lora_dir and filename.startswith(lora_dir):
            rel = filename[len(lora_dir):].lstrip('/\\').replace('\\', '/')
            self.fullname = os.path.splitext(rel)[0] if rel else name
        else:
            self.fullname = name
        self.metadata = {}
        self.is_safetensors = os.path.splitext(filename)[1].lower() == ".safetensors"
        self.alias = self.metadata.get('ss_output_name', self.name)
        self.set_hash(None)
        self.sd_version = ''

    def __str__(self):
        return f"NetworkOnDisk(name={self.name} filename={self.filename}"

    def set_hash(self, v):
        self.hash = v or ''
        self.shorthash = self.hash[0:8]
