"""SD.Next's Networks panel (extra networks) in our tab: a LoRA card click puts `<lora:name:1>` into our prompt.

The panel is SD.Next's own (`modules.ui_extra_networks.create_ui` with our tab name `fpk`): the
same pages, cards, refresh, search box, details and sort as in txt2img, and SD.Next's usual card
text (`<lora:name:extra_networks_default_multiplier>`). Only its page side needs help: SD.Next's
script (ui/extraNetworks.ts) finds "the active tab" among its own four (txt2img, img2img,
control, video), so from our tab a card click would land in the Control tab's prompt and the
refresh button would refresh the page selected in Control's panel. So:

- the events the panel declares with a tab-blind script (`getENActivePage`, `getCardDetails`,
  `closeDetailsEN`, `refeshDetailsEN`, `sortExtraNetworks`) get, in our Blocks only, scripts
  that read our panel (`window.fpkNetworks` in javascript/framepack_networks.js);
- javascript/framepack_networks.js takes the clicks inside `#fpk_extra_networks` before the
  cards' own `onclick` (a capture-phase listener that ignores clicks outside that panel): a
  `cardClicked(...)` card adds or removes its text in our prompt (or the negative prompt, when
  that had the focus last), as SD.Next's cardClicked does in its tabs.

Nothing global is replaced: SD.Next's other tabs keep their panels and scripts as they are.

Names used (checked against the vendored snapshot by tests/test_host_sdnext_networks.py):
`ui_extra_networks.create_ui(container, button_parent, tabname, skip_indexing)`,
`ui_extra_networks.setup_ui(ui, gallery)`, `shared.opts.ui_disabled`,
`shared.opts.extra_network_skip_indexing`, the `{tabname}_extra_*` element ids.
"""

from __future__ import annotations

from typing import Any

TABNAME = "fpk"
"""Our tab's name for SD.Next's panel: its elements are `fpk_extra_*` (our prompt is `fpk_prompt`)."""
PANEL_ID = f"{TABNAME}_extra_networks"
TOGGLE_ID = f"{TABNAME}_extra_networks_btn"

_PAGE = "(window.fpkNetworks ? window.fpkNetworks.page() : '')"
OUR_SCRIPTS = {
    # SD.Next's script name -> ours; each takes and returns what SD.Next's does
    "getENActivePage": f"(...args) => {_PAGE}",
    "getCardDetails": "(...args) => args",  # our click listener has written the card into fpk_extra_state
    "closeDetailsEN": "(...args) => { if (window.fpkNetworks) window.fpkNetworks.closeDetails(true); return args; }",
    "refeshDetailsEN": "(args) => { if (window.fpkNetworks) window.fpkNetworks.closeDetails(false); return args; }",
    # the answer is saved as the sort setting: without our script, the setting as it is
    "sortExtraNetworks": ("(...args) => (window.fpkNetworks ? window.fpkNetworks.sort() "
                          ": ((window.opts && window.opts.extra_networks_sort) || 'Default'))"),
}
"""Scripts of the panel's events, by the SD.Next script they replace (SD.Next's ones look at its tabs only)."""


class SdnextNetworks:
    """The host method the tab calls (a mixin of `SdnextHost`); the standalone host has none."""

    def add_networks_panel(self, toggle: Any, prompt: Any) -> bool:
        return add_networks_panel(toggle, prompt)


def networks_available() -> bool:
    """False when this SD.Next has no Networks panel or the user disabled it (Settings -> UI: `networks`)."""
    try:
        from modules import shared, ui_extra_networks  # noqa: F401
    except ImportError:
        return False
    return "networks" not in (getattr(shared.opts, "ui_disabled", None) or [])


def add_networks_panel(toggle: Any, prompt: Any) -> bool:
    """Build SD.Next's Networks panel here (hidden), shown and hidden by `toggle` (a gr.Button).

    `prompt` is our prompt box (elem_id `fpk_prompt`); the page's script inserts into it. Returns
    False, building nothing, when this SD.Next has no panel or the user disabled it.
    """
    if not networks_available():
        return False
    import gradio as gr
    from gradio.context import Context
    from modules import shared, ui_extra_networks

    if toggle.elem_id != TOGGLE_ID or prompt.elem_id != f"{TABNAME}_prompt":
        raise ValueError(f"the Networks panel needs the ids {TOGGLE_ID} and {TABNAME}_prompt")
    root = Context.root_block
    first = len(root.dependencies) if root is not None else 0
    skip_indexing = bool(getattr(shared.opts, "extra_network_skip_indexing", False))
    with gr.Row(variant="compact", elem_id=PANEL_ID, elem_classes=["extra_networks_root", "fpk-networks"],
                visible=False) as container:
        try:
            ui = ui_extra_networks.create_ui(container, toggle, TABNAME, skip_indexing=skip_indexing)
            ui_extra_networks.setup_ui(ui)
        except Exception as error:  # noqa: BLE001 - a broken panel must not cost the whole tab
            from modules import errors

            errors.display(error, "FramePack: Networks panel")
            ui = None
    if root is not None:
        _use_our_scripts(root.dependencies[first:])
    return ui is not None


def _use_our_scripts(dependencies: list[dict]) -> None:
    """Point the panel's tab-blind page scripts at ours (these dependencies are the panel's own)."""
    for dependency in dependencies:
        ours = OUR_SCRIPTS.get((dependency.get("js") or "").strip())
        if ours is not None:
            dependency["js"] = ours
