"""Fake `modules.ui_extra_networks`: SD.Next's Networks panel, the parts a tab builds and the page script uses.

Checked against vladmandic/sdnext `modules/ui_extra_networks.py` (snapshot 058a7f0, see
tests/test_host_sdnext_networks.py): `create_ui(container, button_parent, tabname, skip_indexing=False)`
returns None when `'networks' in shared.opts.ui_disabled`, else an `ExtraNetworksUi`; it builds the
`{tabname}_extra_state` textbox, `{tabname}_extra_tabs` tabs with one page per network type
(`{tabname}_{page}_cards` cards whose onclick is `cardClicked(<JSON text>)` for LoRAs: the text is
`" <lora:alias:extra_networks_default_multiplier>"`), the `{tabname}_extra_refresh` / `_close` / `_sort` /
`_details_btn` buttons and `{tabname}_extra_search`, and wires `button_parent` to toggle `container`. The
events carry SD.Next's page-script names (`getENActivePage`, `getCardDetails`, `sortExtraNetworks`,
`closeDetailsEN`). Only the Lora page is faked. `setup_ui(ui, gallery=None)` keeps the gallery.
"""

from __future__ import annotations

import html
import json
import os

import gradio as gr

from modules import shared

fake_created: list[str] = []  # test-only: the tab names panels were built for
fake_fail = [False]  # test-only: create_ui raises (a page that fails to list its items, say)


class ExtraNetworksUi:
    def __init__(self):
        self.tabname = None
        self.pages = None
        self.visible = None
        self.state = None
        self.tabs = None
        self.gallery = None
        self.search = None
        self.description = None
        self.button_details = None
        self.button_refresh = None
        self.button_close = None
        self.button_sort = None


def _lora_cards(tabname: str) -> str:
    from modules.lora import lora_load

    cards = []
    for name, entry in sorted(lora_load.list_available_networks().items()):
        text = json.dumps(f" <lora:{name}:{shared.opts.extra_networks_default_multiplier}>")
        short = os.path.splitext(os.path.basename(entry.filename))[0]
        cards.append(f"<div class='card' onclick=\"{html.escape(f'cardClicked({text})')}\" data-page='lora' "
                     f"data-name='{html.escape(name, quote=True)}' data-short='{html.escape(short, quote=True)}' "
                     f"data-filename='{html.escape(entry.filename, quote=True)}'>"
                     "<span class='details' onclick=\"showCardDetails(event)\">i</span>"
                     f"<div class='name'>{html.escape(name)}</div></div>")
    return (f"<div id='{tabname}_lora_subdirs' class='extra-network-subdirs'></div>"
            f"<div id='{tabname}_lora_cards' class='extra-network-cards'>{''.join(cards)}</div>")


def create_ui(container, button_parent, tabname, skip_indexing=False):
    if "networks" in shared.opts.ui_disabled:
        return None
    fake_created.append(tabname)
    ui = ExtraNetworksUi()
    if fake_fail[0]:
        gr.Textbox("{}", elem_id=f"{tabname}_extra_state", visible=False)  # built part-way
        raise RuntimeError("Networks: page error")
    ui.tabname, ui.pages = tabname, []
    ui.state = gr.Textbox("{}", elem_id=f"{tabname}_extra_state", visible=False)
    ui.visible = gr.State(value=False)
    ui.tabs = gr.Tabs(elem_id=f"{tabname}_extra_tabs")
    ui.button_details = gr.Button("Details", elem_id=f"{tabname}_extra_details_btn", visible=False)
    with ui.tabs:
        ui.button_refresh = gr.Button("refresh", elem_id=f"{tabname}_extra_refresh")
        ui.button_sort = gr.Button("sort", elem_id=f"{tabname}_extra_sort")
        ui.button_close = gr.Button("close", elem_id=f"{tabname}_extra_close")
        ui.search = gr.Textbox("", show_label=False, elem_id=f"{tabname}_extra_search", lines=2)
        ui.description = gr.Textbox("", show_label=False, elem_id=f"{tabname}_description", lines=2)
        with gr.Tab("Lora", id="lora", elem_classes="extra-networks-tab") as tab:
            page = gr.HTML("" if skip_indexing else _lora_cards(tabname), elem_id=f"{tabname}lora_extra_page",
                           elem_classes="extra-networks-page")
            ui.pages.append(page)
            tab.select(lambda _: gr.update(), _js="getENActivePage", inputs=[ui.button_details],
                       outputs=[ui.button_refresh])

    def toggle_visibility(is_visible):
        is_visible = not is_visible
        return is_visible, gr.update(visible=is_visible), gr.update(variant=("secondary-down" if is_visible
                                                                              else "secondary"))

    def refresh(title):
        return [_lora_cards(tabname) if title == "Lora" else gr.update()]

    details = gr.HTML("", elem_id=f"{tabname}_extra_details")
    button_parent.click(fn=toggle_visibility, inputs=[ui.visible], outputs=[ui.visible, container, button_parent])
    ui.button_close.click(fn=toggle_visibility, inputs=[ui.visible], outputs=[ui.visible, container])
    ui.button_sort.click(fn=lambda order: order, _js="sortExtraNetworks", inputs=[ui.search],
                         outputs=[ui.description])
    ui.button_refresh.click(fn=refresh, _js="getENActivePage", inputs=[ui.search], outputs=ui.pages)
    ui.button_details.click(lambda *args: "details", _js="getCardDetails", inputs=[ui.state], outputs=[details])
    ui.state.change(lambda text: None, inputs=[ui.state], outputs=[])
    details.change(lambda x: x, _js="closeDetailsEN", inputs=[details], outputs=[details])
    return ui


def setup_ui(ui, gallery=None):
    if ui is None:
        return
    ui.gallery = gallery
