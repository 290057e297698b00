"""SD.Next's Networks panel in our tab (framepack/host/sdnext_networks.py, javascript/framepack_networks.js).

- contract: the names, signatures, element ids and page-script names we rely on, read from the vendored
  SD.Next snapshot (../shared/vendor, never imported or launched); the fake's signatures equal the real ones;
- the tab inside the fake SD.Next: the panel is SD.Next's, built for tab `fpk`, toggled by our button, its
  tab-blind page scripts pointed at ours in our Blocks only; absent when disabled and in the standalone tab;
- the page script in a real browser (Debian chromium), on a bare page shaped like the panel: a LoRA card
  click goes into #fpk_prompt, never through SD.Next's cardClicked (which would pick the Control tab).
"""

from __future__ import annotations

import ast
import inspect
import re
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from fake_sdnext.harness import FakeSdnext

VENDOR = Path(__file__).resolve().parents[1].parent / "shared" / "vendor" / "sdnext-058a7f0.tar.gz"
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "javascript" / "framepack_networks.js"
CHROMIUM = "/usr/bin/chromium"


# ----------------------------------------------------------------------------- the real SD.Next

@pytest.fixture(scope="module")
def vendor():
    if not VENDOR.is_file():
        pytest.skip(f"vendored SD.Next snapshot not found at {VENDOR}")
    wanted = {"modules/ui_extra_networks.py", "modules/ui_extra_networks_lora.py", "modules/ui_video.py",
              "modules/ui_definitions.py", "ui/extraNetworks.ts"}
    found = {}
    with tarfile.open(VENDOR) as archive:
        for member in archive:
            name = member.name.removeprefix("./")
            if name not in wanted and "/" in name:
                name = name.split("/", 1)[1]
            if name in wanted and member.isfile():
                found[name] = archive.extractfile(member).read().decode("utf-8")
    assert set(found) == wanted, f"missing from the snapshot: {wanted - set(found)}"
    return found


def _function(source: str, name: str) -> ast.FunctionDef:
    return next(node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef) and node.name == name)


def _params(function) -> list[str]:
    return [a.arg for a in function.args.posonlyargs + function.args.args + function.args.kwonlyargs]


def test_contract_create_ui_and_setup_ui(vendor):
    source = vendor["modules/ui_extra_networks.py"]
    assert _params(_function(source, "create_ui")) == ["container", "button_parent", "tabname", "skip_indexing"]
    assert _params(_function(source, "setup_ui")) == ["ui", "gallery"]
    body = ast.get_source_segment(source, _function(source, "create_ui"))
    assert "if 'networks' in shared.opts.ui_disabled:\n        return None" in body
    # the toggle: our button shows and hides our container, as SD.Next's tabs' Networks buttons do
    assert "button_parent.click(fn=toggle_visibility, inputs=[ui.visible], outputs=[ui.visible, container, " \
           "button_parent])" in body
    # SD.Next's own tabs build it the same way (video: the closest to ours)
    assert "ui_extra_networks.create_ui(extra_networks_ui, networks_button, 'video', " \
           "skip_indexing=shared.opts.extra_network_skip_indexing)" in vendor["modules/ui_video.py"]
    assert 'elem_id="video_extra_networks", elem_classes=["extra_networks_root"], visible=False' \
        in vendor["modules/ui_video.py"]
    options = vendor["modules/ui_definitions.py"]
    assert '"ui_disabled": OptionInfo([]' in options and '"extra_network_skip_indexing": OptionInfo(False' in options


def test_contract_the_ids_and_page_scripts(vendor):
    """Every `{tabname}_extra_*` id our page script reads exists, and every script we replace is one the panel uses."""
    from framepack.host import sdnext_networks

    body = ast.get_source_segment(vendor["modules/ui_extra_networks.py"],
                                  _function(vendor["modules/ui_extra_networks.py"], "create_ui"))
    declared = set(re.findall(r'elem_id=f"\{tabname\}(_extra_[a-z_]+)"', body))
    used = set(re.findall(r"#fpk(_extra_[a-z_]+)", SCRIPT.read_text()))
    assert used and used <= declared | {"_extra_networks"}, used - declared
    scripts = {match[1] for match in re.findall(r"""_js=(['"])(.*?)\1""", body)}
    assert set(sdnext_networks.OUR_SCRIPTS) <= scripts
    # the one script we leave alone does not look for the active tab: quicksave asks for a name
    assert scripts - set(sdnext_networks.OUR_SCRIPTS) == {"() => prompt('Prompt name', '')"}


def test_contract_why_our_tab_needs_its_own_page_script(vendor):
    ts = vendor["ui/extraNetworks.ts"]
    active = ts[ts.index("export const getENActiveTab"):ts.index("const getENActivePage")]
    assert "fpk" not in active and "else tabName = 'control';" in active  # our tab reads as Control
    clicked = ts[ts.index("function cardClicked("):ts.index("window.cardClicked = cardClicked;")]
    assert "const textarea = activePromptTextarea[tabName];" in clicked
    # what our card click does is what SD.Next's does: toggle the text, then tell Gradio
    assert "if (textarea.value.indexOf(textToAdd) !== -1) textarea.value = textarea.value.replace(textToAdd, '');" \
        in clicked and "else textarea.value += textToAdd;" in clicked
    for name in ("#${id} > label > textarea", "registerPrompt('video', 'video_neg_prompt')"):
        assert name in ts
    # the LoRA card: cardClicked(<JSON " <lora:alias:multiplier>">)
    lora = vendor["modules/ui_extra_networks_lora.py"]
    assert '"prompt": json.dumps(f" <lora:{l.get_alias()}:{shared.opts.extra_networks_default_multiplier}>")' in lora
    pages = vendor["modules/ui_extra_networks.py"]
    assert "onclick = f'cardClicked({item.get(\"prompt\", None)})'" in pages
    assert "return text.replace('~tabname', tabname).replace('txt2img', tabname)" in pages  # ids per tab


def test_the_fake_has_the_real_signatures(vendor):
    with FakeSdnext(Path("/tmp")):
        from modules import ui_extra_networks

        source = vendor["modules/ui_extra_networks.py"]
        for name in ("create_ui", "setup_ui"):
            fake = getattr(ui_extra_networks, name)
            assert list(inspect.signature(fake).parameters) == _params(_function(source, name)), name


# ----------------------------------------------------------------------------- the tab inside the fake

@pytest.fixture
def sd(tmp_path):
    lora_dir = tmp_path / "Lora"
    lora_dir.mkdir()
    (lora_dir / "tiny_style.safetensors").write_bytes(b"")
    with FakeSdnext(tmp_path) as fake:
        from modules import ui_extra_networks

        fake.shared.cmd_opts.lora_dir = str(lora_dir)
        ui_extra_networks.fake_created.clear()
        yield fake
        fake.shared.opts.ui_disabled = []


def _ids(blocks):
    return {block.elem_id: block for block in blocks.blocks.values() if getattr(block, "elem_id", None)}


def _tab(host):
    from framepack.ui import create_ui

    return create_ui(host, SimpleNamespace(list=lambda: []))


def test_the_tab_gets_sdnexts_panel_for_our_prompt(sd):
    import gradio as gr

    from framepack.host import sdnext_networks
    from framepack.host.sdnext import SdnextHost
    from modules import ui_extra_networks

    blocks = _tab(SdnextHost())
    shown = _ids(blocks)
    assert ui_extra_networks.fake_created == ["fpk"]
    toggle, panel = shown["fpk_extra_networks_btn"], shown["fpk_extra_networks"]
    assert toggle.visible is not False and panel.visible is False and "extra_networks_root" in panel.elem_classes
    for needed in ("fpk_extra_state", "fpk_extra_tabs", "fpk_extra_refresh", "fpk_extra_search", "fpk_prompt",
                   "fpk_negative_prompt"):
        assert needed in shown, needed
    cards = shown["fpklora_extra_page"].value
    assert "cardClicked(&quot; &lt;lora:tiny_style:1.0&gt;&quot;)" in cards  # SD.Next's card text, escaped
    # the toggle shows the panel (SD.Next's own handler)
    index, dependency = next((i, d) for i, d in enumerate(blocks.dependencies)
                             if toggle._id in d["targets"])
    visible, container, button = blocks.fns[index].fn(False)
    assert visible is True and container == gr.update(visible=True) and blocks.blocks[dependency["outputs"][1]] is panel
    # every tab-blind page script of the panel now reads our panel
    scripts = [d.get("js") for d in blocks.dependencies if d.get("js")]
    assert not set(scripts) & set(sdnext_networks.OUR_SCRIPTS)
    assert sdnext_networks.OUR_SCRIPTS["getENActivePage"] in scripts
    assert sdnext_networks.OUR_SCRIPTS["sortExtraNetworks"] in scripts


def test_sdnexts_own_panels_keep_their_scripts(sd):
    """Not a global patch: a panel SD.Next builds for its own tab (before or after ours) is untouched."""
    import gradio as gr

    from framepack.host.sdnext import SdnextHost
    from modules import ui_extra_networks

    def sdnext_tab():
        with gr.Blocks() as txt2img:
            button = gr.Button("Networks", elem_id="txt2img_extra_networks_btn")
            with gr.Row(elem_id="txt2img_extra_networks", visible=False) as container:
                ui_extra_networks.create_ui(container, button, "txt2img")
        return sorted(d["js"] for d in txt2img.dependencies if d.get("js"))

    before = sdnext_tab()
    _tab(SdnextHost())
    assert sdnext_tab() == before and "getENActivePage" in before and "getCardDetails" in before


def test_no_panel_when_sdnext_has_it_disabled(sd):
    from framepack.host.sdnext import SdnextHost

    sd.shared.opts.ui_disabled = ["networks"]
    shown = _ids(_tab(SdnextHost()))
    assert shown["fpk_extra_networks_btn"].visible is False and "fpk_extra_networks" not in shown


def test_a_failing_panel_costs_only_the_button(sd):
    from framepack.host.sdnext import SdnextHost
    from modules import ui_extra_networks

    ui_extra_networks.fake_fail[0] = True
    try:
        shown = _ids(_tab(SdnextHost()))
    finally:
        ui_extra_networks.fake_fail[0] = False
    assert shown["fpk_extra_networks_btn"].visible is False and shown["fpk_extra_networks"].visible is False
    assert "fpk_generate" in shown and "fpk_prompt" in shown  # the rest of the tab is there


def test_the_standalone_tab_has_no_networks_button(tmp_path):
    from framepack.host.standalone import StandaloneHost

    host = StandaloneHost(output_dir=tmp_path)
    assert not hasattr(host, "add_networks_panel")
    shown = _ids(_tab(host))
    assert "fpk_extra_networks_btn" not in shown and "fpk_extra_networks" not in shown


def test_the_panel_needs_our_ids(sd):
    import gradio as gr

    from framepack.host.sdnext import SdnextHost

    with gr.Blocks(), pytest.raises(ValueError, match="fpk_extra_networks_btn"):
        SdnextHost().add_networks_panel(gr.Button(elem_id="other"), gr.Textbox(elem_id="fpk_prompt"))


# ----------------------------------------------------------------------------- the page script

PAGE = """<div id="fpk_root">
  <div id="fpk_prompt"><label><textarea>a fox</textarea></label></div>
  <div id="fpk_negative_prompt"><label><textarea></textarea></label></div>
  <div id="fpk_extra_networks">
    <div id="fpk_extra_state"><label><textarea>{}</textarea></label></div>
    <button id="fpk_extra_details_btn" class="hidden">Details</button>
    <div id="fpk_extra_search"><label><textarea></textarea></label></div>
    <div id="fpk_extra_tabs">
      <div class="tab-nav"><button>Model</button><button class="selected">Lora</button></div>
      <div id="fpk_lora_subdirs" class="extra-network-subdirs">
        <button onclick="extraNetworksSearchButton(event)">sub</button></div>
      <div id="fpk_lora_cards" class="extra-network-cards">
        <div class="card" id="style" onclick="cardClicked(&quot; &lt;lora:tiny_style:1.0&gt;&quot;)"
             data-page="lora" data-name="tiny_style" data-short="tiny_style" data-filename="/m/Lora/tiny_style.safetensors">
          <span class="details" onclick="showCardDetails(event)">i</span><div class="name">tiny style</div></div>
        <div class="card" id="motion" onclick="cardClicked(&quot; &lt;lora:motion:1.0&gt;&quot;)"
             data-page="lora" data-name="motion" data-short="motion" data-filename="/m/Lora/sub/motion.safetensors">
          <div class="name">motion</div></div>
      </div>
      <div id="fpk_style_cards" class="extra-network-cards">
        <div class="card" id="look" onclick="return selectStyle(&quot;look&quot;)" data-page="style" data-name="look">
          <div class="name">look</div></div>
      </div>
    </div>
  </div>
</div>
<div id="control_prompt"><label><textarea></textarea></label></div>"""
SDNEXT_DECOYS = """() => {
  window.sdnextCalls = [];
  for (const name of ['cardClicked', 'showCardDetails', 'selectStyle', 'extraNetworksSearchButton']) {
    window[name] = (...args) => { window.sdnextCalls.push(name); };
  }
  window.inputs = [];
  document.addEventListener('input', (e) => window.inputs.push(e.target.closest('[id]').id));
}"""


@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (`make system-deps`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    page = chromium.new_page()
    page.set_content(PAGE)
    page.evaluate(SDNEXT_DECOYS)
    page.add_script_tag(content=SCRIPT.read_text(encoding="utf-8"))
    yield page
    page.close()


def _value(page, selector):
    return page.eval_on_selector(f"{selector} textarea", "el => el.value")


@pytest.mark.slow
def test_a_lora_card_goes_into_our_prompt(page):
    page.click("#style .name")
    assert _value(page, "#fpk_prompt") == "a fox <lora:tiny_style:1.0>"
    assert page.evaluate("window.sdnextCalls") == []  # SD.Next's cardClicked (the Control tab's prompt) never ran
    assert _value(page, "#control_prompt") == ""
    assert "fpk_prompt" in page.evaluate("window.inputs")  # Gradio hears of the change
    assert page.eval_on_selector("#style", "el => el.classList.contains('card-selected')")
    page.click("#motion")
    page.click("#style")  # a second click takes it out again, as in SD.Next
    assert _value(page, "#fpk_prompt") == "a fox <lora:motion:1.0>"
    assert not page.eval_on_selector("#style", "el => el.classList.contains('card-selected')")
    page.click("#fpk_negative_prompt textarea")  # the negative prompt had the focus last
    page.click("#style")
    assert _value(page, "#fpk_negative_prompt") == " <lora:tiny_style:1.0>"
    page.evaluate("document.querySelector('#fpk_negative_prompt').style.display = 'none'")  # CFG back to 1
    page.click("#motion")  # the hidden negative prompt had the focus: the prompt takes the click
    assert _value(page, "#fpk_prompt") == "a fox" and _value(page, "#fpk_negative_prompt") == " <lora:tiny_style:1.0>"
    page.click("#look")  # a style card: our tab has no styles, and SD.Next's would change another tab's
    assert page.evaluate("window.sdnextCalls") == []


@pytest.mark.slow
def test_details_page_search_and_sort_read_our_panel(page):
    assert page.evaluate("window.fpkNetworks.page()") == "Lora"
    page.evaluate("document.querySelector('#fpk_extra_details_btn').onclick = () => { window.detailsShown = true; }")
    page.click("#style .details")
    state = page.evaluate("JSON.parse(document.querySelector('#fpk_extra_state textarea').value)")
    assert state == {"op": "getCardDetails", "item": "tiny_style", "page": "Lora", "tab": "fpk"}
    page.wait_for_function("window.detailsShown === true")
    assert _value(page, "#fpk_prompt") == "a fox" and page.evaluate("window.sdnextCalls") == []
    page.click("#fpk_lora_subdirs button")  # a folder button filters our cards
    assert _value(page, "#fpk_extra_search") == "sub/"
    shown = page.evaluate("[...document.querySelectorAll('#fpk_lora_cards .card')].map(c => c.style.display)")
    assert shown == ["none", ""]
    page.fill("#fpk_extra_search textarea", "")
    page.wait_for_function("[...document.querySelectorAll('#fpk_lora_cards .card')].every(c => c.style.display === '')")
    assert page.evaluate("window.fpkNetworks.sort()") == "Name [A-Z]"
    names = page.evaluate("[...document.querySelectorAll('#fpk_lora_cards .card')].map(c => c.dataset.name)")
    assert names == ["motion", "tiny_style"]  # the Lora page's cards


# ----------------------------------------------------------------------------- Gradio + the page script

@pytest.mark.slow
def test_the_panel_in_a_served_tab(sd, chromium, tmp_path):
    """Our tab inside the fake SD.Next, served by Gradio 3.43 and opened in Chromium with the page
    script (SD.Next injects javascript/*.js): SD.Next's toggle shows the panel, its refresh (with
    our page script naming our selected page) lists a LoRA added meanwhile, and its card goes into
    #fpk_prompt through the real Gradio DOM."""
    import socket

    from framepack.host.sdnext import SdnextHost

    blocks = _tab(SdnextHost())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    blocks.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    page = chromium.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("#fpk_extra_networks_btn")
        page.evaluate(SDNEXT_DECOYS)
        page.add_script_tag(content=SCRIPT.read_text(encoding="utf-8"))
        assert not page.is_visible("#fpk_extra_networks")
        page.click("#fpk_extra_networks_btn")
        page.wait_for_selector("#fpk_extra_networks .card[data-name='tiny_style']", state="visible")
        assert page.evaluate("window.fpkNetworks.page()") == "Lora"  # Gradio's own tab bar
        (Path(sd.shared.cmd_opts.lora_dir) / "late.safetensors").write_bytes(b"")
        page.click("#fpk_extra_refresh")  # the refresh's script names our page: the server lists it again
        page.wait_for_selector("#fpk_extra_networks .card[data-name='late']", state="visible", timeout=30_000)
        page.fill("#fpk_prompt textarea", "a paper boat")
        page.click("#fpk_extra_networks .card[data-name='late'] .name")
        page.wait_for_function("document.querySelector('#fpk_prompt textarea').value.includes('<lora:late:')")
        assert page.input_value("#fpk_prompt textarea") == "a paper boat <lora:late:1.0>"
        assert page.evaluate("window.sdnextCalls") == [] and errors == []
    finally:
        page.close()
        blocks.close()
