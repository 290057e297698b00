"""Fake `modules.lora.lora_load`: SD.Next's list of LoRA files and its name lookup.

Checked against vladmandic/sdnext `modules/lora/lora_load.py`:
- `available_networks` / `available_network_aliases` / `forbidden_network_aliases` /
  `available_network_hash_lookup`: module-level dicts filled by `list_available_networks()`;
- `list_available_networks()`: scans `shared.cmd_opts.lora_dir` (recursively) for
  `.pt`, `.ckpt`, `.safetensors`; the name is the file stem with '.' -> '_'; aliases are the
  name, the sub-folder path (`fullname`) and the plain stem;
- `gather_networks(names)` -> [NetworkOnDisk | None] in the order of `names`: looks the names
  up in `available_network_aliases`, rescans the folder once if one is missing, and treats a
  name starting with '/' as a path (`network_download`);
- `network_download(name)`: an existing path -> NetworkOnDisk(name, name); a
  '/huggingface.co/owner/repo/file' name is downloaded by the real host (the fake records it
  and returns None); anything else -> None.
The loading side (`network_load`, `load_safetensors`, ...) is not faked: FramePack loads the
files with its own diffusers loader (see framepack/host/sdnext.py, `prepare_request`).
Calls are recorded in `fake_calls` (test-only).
"""

from __future__ import annotations

import os

from modules import shared
from modules.logger import log
from modules.lora import network

available_networks = {}
available_network_aliases = {}
forbidden_network_aliases = {}
available_network_hash_lookup = {}
fake_calls: list[tuple[str, dict]] = []  # test-only


def list_available_networks():
    fake_calls.append(("list_available_networks", {"lora_dir": shared.cmd_opts.lora_dir}))
    available_networks.clear()
    available_network_aliases.clear()
    forbidden_network_aliases.clear()
    available_network_hash_lookup.clear()
    forbidden_network_aliases.update({"none": 1, "Addams": 1})
    lora_dir = shared.cmd_opts.lora_dir
    if not lora_dir or not os.path.exists(lora_dir):
        log.warning(f'LoRA directory not found: path="{lora_dir}"')
        return available_networks

    def add_network(filename):
        if not os.path.isfile(filename):
            return
        name = os.path.splitext(os.path.basename(filename))[0]
        name = name.replace('.', '_')
        entry = network.NetworkOnDisk(name, filename)
        available_networks[entry.name] = entry
        if entry.alias in available_network_aliases:
            forbidden_network_aliases[entry.alias.lower()] = 1
        available_network_aliases[entry.name] = entry
        if entry.fullname != entry.name:
            available_network_aliases[entry.fullname] = entry
        basename_alias = os.path.splitext(os.path.basename(filename))[0]
        if basename_alias and basename_alias not in (entry.name, entry.fullname):
            available_network_aliases.setdefault(basename_alias, entry)
        if entry.shorthash:
            available_network_hash_lookup[entry.shorthash] = entry

    candidates = []
    for root, _dirs, files in os.walk(lora_dir):
        candidates += [os.path.join(root, f) for f in files
                       if os.path.splitext(f)[1].lower() in (".pt", ".ckpt", ".safetensors")]
    for fn in sorted(candidates):
        add_network(fn)
    log.info(f'Available LoRAs: path="{lora_dir}" items={len(available_networks)}')
    return available_networks


def network_download(name):
    fake_calls.append(("network_download", {"name": name}))
    if os.path.exists(name):
        return network.NetworkOnDisk(name, name)
    return None  # the real host downloads '/huggingface.co/owner/repo/file' names here


def gather_networks(names):
    fake_calls.append(("gather_networks", {"names": list(names)}))
    networks_on_disk = [available_network_aliases.get(name, None) for name in names]
    if any(x is None for x in networks_on_disk):
        list_available_networks()
        networks_on_disk = [available_network_aliases.get(name, None) for name in names]
    for i in range(len(names)):
        if names[i].startswith('/'):
            networks_on_disk[i] = network_download(names[i])
    return networks_on_disk
