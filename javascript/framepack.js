/* FramePack tab helpers (SD.Next injects javascript/*.js; the standalone app adds this file itself).
 * Every global name starts with `fpk` (the host's built-in FramePack sub-tab has its own submit function).
 *
 * fpkSubmit(...args)  Generate's _js: creates a progress task id (host randomId() when defined), starts the
 *                     host progress bar (requestProgress) when there is one, returns args with the id first
 * fpkLoopVideos()     result <video>: loop, autoplay, muted, inline (also run by a MutationObserver)
 */
/* global randomId, requestProgress, gradioApp, onUiLoaded */

window.fpkScriptLoaded = true;

function fpkApp() {
  if (typeof gradioApp === 'function') return gradioApp();
  const app = document.querySelector('gradio-app');
  return (app && app.shadowRoot) ? app.shadowRoot : document;
}

function fpkRandomId() {
  if (typeof randomId === 'function') return randomId(); // the host's format: task(xxxxxxxxxxxxxxx)
  const part = () => Math.random().toString(36).slice(2, 7);
  return `task(fpk${part()}${part()})`;
}

function fpkButtonLabel(text) {
  const button = fpkApp().querySelector('#fpk_generate');
  if (button) button.innerText = text;
}

function fpkOnProgress(res) {
  if (!res) return;
  const percent = res.progress > 0 && res.progress < 1 ? ` ${Math.round(100 * res.progress)}%` : '';
  const eta = res.eta ? ` ETA ${Math.round(res.eta)}s` : '';
  fpkButtonLabel(res.paused ? 'Paused' : `Generating${percent}${eta}`);
}

function fpkProgressDone() {
  fpkButtonLabel('Generate');
}

function fpkSubmit(...args) {
  const id = fpkRandomId();
  window.fpkLastTask = id;
  if (typeof requestProgress === 'function') {
    try {
      // SD.Next: requestProgress(id_task, progressEl, galleryEl, atEnd, onProgress); the live preview
      // is our own image output, so no gallery element is handed over
      requestProgress(id, null, null, fpkProgressDone, fpkOnProgress);
    } catch (err) {
      console.warn('FramePack: host progress unavailable', err); // eslint-disable-line no-console
    }
  }
  const res = Array.from(args);
  res[0] = id; // the first input is the hidden task id textbox
  return res;
}

function fpkLoopVideos() {
  const videos = fpkApp().querySelectorAll('#fpk_video video');
  videos.forEach((video) => {
    if (video.dataset.fpkLoop) return;
    video.dataset.fpkLoop = '1';
    video.loop = true;
    video.muted = true; // browsers only autoplay muted media
    video.autoplay = true;
    video.playsInline = true;
    video.setAttribute('loop', '');
    video.addEventListener('loadeddata', () => { video.play().catch(() => {}); });
  });
}

function fpkInit() {
  if (window.fpkObserver) return;
  const root = fpkApp();
  window.fpkObserver = new MutationObserver(() => fpkLoopVideos());
  window.fpkObserver.observe(root === document ? document.body : root, { childList: true, subtree: true });
  fpkLoopVideos();
}

if (typeof onUiLoaded === 'function') onUiLoaded(fpkInit);
else if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', fpkInit);
else fpkInit();
