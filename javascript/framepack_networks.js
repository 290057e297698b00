/* SD.Next's Networks panel in the FramePack tab (framepack/host/sdnext_networks.py builds it, tab name `fpk`).
 *
 * SD.Next's own panel script (ui/extraNetworks.ts) looks for "the active tab" among txt2img, img2img, control
 * and video only: from our tab a card click would go into the Control tab's prompt. So inside
 * #fpk_extra_networks this file takes the clicks first (a capture listener, before the cards' own onclick):
 *
 * - a card whose onclick is SD.Next's cardClicked("<text>") (LoRA, embedding, wildcard): adds the text to our
 *   prompt (#fpk_prompt), or to the negative prompt when that had the focus last, or removes it when it is
 *   there already, exactly as SD.Next's cardClicked does in its tabs; the LoRA cards named in the prompt are
 *   marked as selected;
 * - a card's details icon: shows the card in our panel's details box;
 * - a style card: nothing (our tab has no styles; SD.Next's selectStyle would change another tab's styles);
 * - model / VAE / UNet / history cards act on SD.Next itself, as in its own tabs (their own onclick).
 *
 * window.fpkNetworks: page() (the selected page's title), sort(), closeDetails(refresh): the scripts of the
 * panel's Gradio events point here instead of SD.Next's tab-blind ones (sdnext_networks.OUR_SCRIPTS).
 * The search box filters the cards of our panel. Nothing of SD.Next's is replaced.
 */
/* global gradioApp */

(() => {
  const panelId = 'fpk_extra_networks';
  const prompts = ['fpk_prompt', 'fpk_negative_prompt'];
  const sortOrders = ['Default', 'Name [A-Z]', 'Name [Z-A]', 'Date [Newest]', 'Date [Oldest]', 'Size [Largest]',
    'Size [Smallest]']; // SD.Next's, in its order (its sort button cycles through them)
  let target = 'fpk_prompt';
  let sortIndex = -1;
  let dirty = false;
  let searchTimer;

  const app = () => {
    if (typeof gradioApp === 'function') return gradioApp();
    const root = document.querySelector('gradio-app');
    return (root && root.shadowRoot) ? root.shadowRoot : document;
  };
  const el = (selector) => app().querySelector(selector);
  const panel = () => app().getElementById ? app().getElementById(panelId) : el(`#${panelId}`);

  function fireInput(textarea) {
    if (typeof window.updateInput === 'function') window.updateInput(textarea);
    else textarea.dispatchEvent(new Event('input', { bubbles: true }));
  }

  function page() {
    const selected = el('#fpk_extra_tabs > .tab-nav > .selected') || el('#fpk_extra_tabs .tab-nav .selected');
    return selected ? selected.innerText.trim() : '';
  }

  function cardText(card) {
    // the card's onclick is cardClicked(<JSON string>) for the cards that add text to a prompt
    const call = (card.getAttribute('onclick') || '').trim().replace(/;$/, '');
    if (!call.startsWith('cardClicked(') || !call.endsWith(')')) return null;
    try {
      const text = JSON.parse(call.slice('cardClicked('.length, -1));
      return typeof text === 'string' ? text : null;
    } catch (error) {
      return null;
    }
  }

  function loraNames(prompt) {
    const names = [];
    for (const part of prompt.split('<lora:').slice(1)) {
      const end = part.indexOf('>');
      if (end > 0) names.push(part.slice(0, end).split(':')[0]);
    }
    return names;
  }

  function markSelected(prompt) {
    const names = loraNames(prompt);
    const root = panel();
    if (!root) return;
    for (const card of root.querySelectorAll('.extra-network-cards .card')) {
      if (card.dataset.page !== 'lora') continue;
      card.classList.toggle('card-selected', names.includes(card.dataset.name) || names.includes(card.dataset.short));
    }
  }

  function insert(text) {
    let textarea = el(`#${target} textarea`);
    // the negative prompt is hidden while CFG is 1: then the prompt takes the text
    if (!textarea || (textarea.offsetParent === null && target !== 'fpk_prompt')) textarea = el('#fpk_prompt textarea');
    if (!textarea) return;
    if (textarea.value.indexOf(text) !== -1) textarea.value = textarea.value.replace(text, '');
    else textarea.value += text;
    fireInput(textarea);
    markSelected(textarea.value);
  }

  function showDetails(card) {
    const state = el('#fpk_extra_state textarea');
    if (state) {
      state.value = JSON.stringify({ op: 'getCardDetails', item: card.dataset.name, page: page(), tab: 'fpk' });
      fireInput(state);
    }
    const button = el('#fpk_extra_details_btn');
    if (button) setTimeout(() => button.click(), 150); // after the state above has reached the server
  }

  function closeDetails(changed) {
    if (changed) dirty = true;
    const close = el('#fpk_extra_details_close');
    const refresh = el('#fpk_extra_refresh');
    if (changed && close) setTimeout(() => close.click(), 100);
    if (dirty && refresh) setTimeout(() => refresh.click(), 100);
    if (!changed) dirty = false;
  }

  function cardsOfPage() {
    const name = page().toLowerCase();
    const root = panel();
    if (!root || !name) return [];
    return Array.from(root.querySelectorAll('.extra-network-cards'))
      .filter((cards) => cards.id.toLowerCase().includes(name));
  }

  function sort() {
    if (sortIndex === -1) sortIndex = Math.max(0, sortOrders.indexOf((window.opts || {}).extra_networks_sort));
    sortIndex = (sortIndex + 1) % sortOrders.length;
    const number = (value) => (Number.isNaN(parseFloat(value)) ? 0 : parseFloat(value));
    const compare = [
      () => 0,
      (a, b) => (a.dataset.name || '').localeCompare(b.dataset.name || ''),
      (a, b) => (b.dataset.name || '').localeCompare(a.dataset.name || ''),
      (a, b) => new Date(b.dataset.mtime).getTime() - new Date(a.dataset.mtime).getTime(),
      (a, b) => new Date(a.dataset.mtime).getTime() - new Date(b.dataset.mtime).getTime(),
      (a, b) => number(b.dataset.size) - number(a.dataset.size),
      (a, b) => number(a.dataset.size) - number(b.dataset.size),
    ][sortIndex];
    for (const cards of cardsOfPage()) {
      const items = Array.from(cards.querySelectorAll('.card')).sort(compare);
      for (const card of items) cards.appendChild(card);
    }
    return sortOrders[sortIndex]; // SD.Next saves it as its sort setting, as its own button does
  }

  function filter(term) {
    const wanted = term.trim().toLowerCase();
    const root = panel();
    if (!root) return;
    for (const card of root.querySelectorAll('.extra-network-cards .card')) {
      const text = `${card.dataset.filename || ''} ${card.dataset.name || ''} ${card.dataset.tags || ''}`
        .toLowerCase().split('\\').join('/');
      card.style.display = (wanted === '' || wanted === 'all/' || text.includes(wanted)) ? '' : 'none';
    }
  }

  function setSearch(text) {
    const search = el('#fpk_extra_search textarea');
    if (!search) return;
    search.value = text;
    fireInput(search);
    filter(text);
  }

  function onClick(event) {
    const start = event.composedPath ? event.composedPath()[0] : event.target;
    if (!start || !start.closest) return;
    const root = start.closest(`#${panelId}`);
    if (!root) return;
    const folder = start.closest('.extra-network-subdirs button');
    const card = start.closest('.card');
    if (folder) { // SD.Next's extraNetworksSearchButton would fill another tab's search box
      event.stopPropagation();
      event.preventDefault();
      setSearch(`${folder.textContent.trim()}/`);
      return;
    }
    if (!card || !root.contains(card)) return;
    const onclick = card.getAttribute('onclick') || '';
    const text = cardText(card);
    if (start.closest('.details')) {
      event.stopPropagation();
      event.preventDefault();
      showDetails(card);
    } else if (text !== null) {
      event.stopPropagation();
      event.preventDefault();
      insert(text);
    } else if (onclick.includes('selectStyle(')) {
      event.stopPropagation();
      event.preventDefault();
    }
  }

  function onFocus(event) {
    const start = event.composedPath ? event.composedPath()[0] : event.target;
    if (!start || !start.closest) return;
    const box = prompts.find((id) => start.closest(`#${id}`));
    if (box) target = box;
  }

  function onInput(event) {
    const start = event.composedPath ? event.composedPath()[0] : event.target;
    if (!start || !start.closest || !start.closest('#fpk_extra_search')) return;
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => filter(start.value || ''), 100);
  }

  window.fpkNetworks = { page, sort, closeDetails, cardText, insert, filter };
  // capture phase: before the cards' own onclick (SD.Next's cardClicked); only clicks inside our panel are taken
  document.addEventListener('click', onClick, true);
  document.addEventListener('focusin', onFocus, true);
  document.addEventListener('input', onInput, true);
})();
