"""Fake `modules.extra_networks`: the prompt parser for `<name:arg1:arg2>` tags.

Checked against vladmandic/sdnext `modules/extra_networks.py`: `re_extra_net`,
`ExtraNetworkParams(items)` (positional / named split on '='), `parse_prompt(prompt)` ->
(prompt without the tags, defaultdict(list) name -> [ExtraNetworkParams]) and
`parse_prompts(prompts, extra_data=None)`. The registry / activate / deactivate side is not
faked: FramePack does not call it (see framepack/host/sdnext.py, `prepare_request`).
Every `parse_prompt` call is recorded in `fake_calls` (test-only).
"""

from __future__ import annotations

import re
from collections import defaultdict

fake_calls: list[tuple[str, dict]] = []  # test-only


class ExtraNetworkParams:
    def __init__(self, items: list[str] | None = None):
        self.items: list[str] = items or []
        self.positional: list[str] = []
        self.named: dict[str, str] = {}
        for item in self.items:
            parts = item.split('=', 2) if isinstance(item, str) else [item]
            if len(parts) == 2:
                self.named[parts[0]] = parts[1]
            else:
                self.positional.append(item)

    def __eq__(self, other):
        if not isinstance(other, ExtraNetworkParams):
            return False
        return self.positional == other.positional and self.named == other.named

    def __repr__(self):
        return f"NetworkParams(positional={self.positional} named={self.named})"


re_extra_net = re.compile(r"<(\w+):([^>]+)>")


def parse_prompt(prompt: str | None) -> tuple[str, defaultdict[str, list[ExtraNetworkParams]]]:
    fake_calls.append(("parse_prompt", {"prompt": prompt}))
    res: defaultdict[str, list[ExtraNetworkParams]] = defaultdict(list)
    if prompt is None:
        return "", res
    if isinstance(prompt, list):
        return parse_prompts(prompt)

    def found(m: re.Match[str]):
        name, args = m.group(1, 2)
        res[name].append(ExtraNetworkParams(items=args.split(":")))
        return ""

    updated_prompt = re.sub(re_extra_net, found, prompt)
    return updated_prompt, res


def parse_prompts(prompts: list[str], extra_data: defaultdict[str, list[ExtraNetworkParams]] | None = None):
    updated_prompt_list: list[str] = []
    extra_data = extra_data or defaultdict(list)
    for prompt in prompts:
        updated_prompt, parsed_extra_data = parse_prompt(prompt)
        if not extra_data:
            extra_data = parsed_extra_data
        elif parsed_extra_data:
            extra_data = parsed_extra_data
        updated_prompt_list.append(updated_prompt)
    return updated_prompt_list, extra_data
