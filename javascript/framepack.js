/* FramePack tab helpers (SD.Next injects javascript/*.js; the standalone app adds this file itself).
 * Every global name starts with `fpk` (the host's built-in FramePack sub-tab has its own submit function).
 *
 * fpkNewTask()         inside SD.Next, Generate's own click listener: creates the page's task id (host randomId())
 *                      at the click, for a Stop / Skip / Pause clicked before Gradio gets round to fpkSubmit
 * fpkSubmit(...args)   Generate's _js: takes that task id (or creates one), remembers it for Stop / Skip / Pause
 *                      (window.fpkLastTask), and inside SD.Next starts fpkFollow(id); returns args with the id first
 * fpkFollow(id)        inside SD.Next: polls SD.Next's progress API (/internal/progress, the one its own tabs use)
 *                      about once a second and draws the progress box and the live preview straight into the
 *                      page. Gradio updates are expensive there (each one re-renders SD.Next's thousands of
 *                      components, ~1 s of browser time on 2 cores), so Generate sends only its start and end
 *                      through Gradio. Ends when the Generate stream's last status line for this task arrives
 * fpkControl(action)   inside SD.Next, Stop / Skip / Pause (plain click listeners, not Gradio events: even a
 *                      script-only Gradio event re-renders SD.Next's page first): posts the page's task id to the
 *                      tab's page routes (framepack/ui/routes.py, under SD.Next's --auth) and shows the answer in
 *                      the status line, unless the job's own final line has arrived meanwhile. The standalone page
 *                      is light: there they are Gradio events, covered by its own login
 * fpkJobs()           the jobs panel (#fpk_jobs) every 2 s while the tab is shown: inside SD.Next from the page route
 *                      .../page/jobs, its Stop / Remove, Resume and Cancel batch buttons posting the job (batch) id to
 *                      .../page/stop, .../page/resume, .../page/cancel-batch; on the standalone page through the
 *                      hidden Gradio buttons #fpk_jobs_refresh / #fpk_job_stop / #fpk_job_command; its Load settings
 *                      clicks the hidden #fpk_load_job button (a Gradio event that fills every control), Continue
 *                      video the hidden #fpk_job_extend (the tab's current settings go with it), Re-roll… fills
 *                      "Job to re-roll" in the "Continue a video, re-roll, batch" accordion
 * fpkRemember(values)  Generate keeps its settings (not the images) in localStorage; after a reload the hidden
 *                      #fpk_restore button puts them back into the controls
 * fpkLoopVideos()      result <video>: loop, autoplay, muted, inline
 * fpkSidebarButton()   ModernUI: its sidebar button for our tab says "framepack" with Video's icon; give it our
 *                      name, a tooltip and its own icon
 */
/* global randomId, gradioApp, onUiLoaded */

window.fpkScriptLoaded = true;

const fpkPollMs = 1000;
const fpkJobsMs = 2000; // the jobs panel's refresh
const fpkGiveUpMs = 120000; // no sign of the task for this long (a refused or lost submission): stop following

function fpkApp() {
  if (typeof gradioApp === 'function') return gradioApp();
  const app = document.querySelector('gradio-app');
  return (app && app.shadowRoot) ? app.shadowRoot : document;
}

function fpkEl(selector) {
  return fpkApp().querySelector(selector);
}

function fpkInSdnext() {
  return !!fpkEl('#fpk_root.fpk-host-sdnext');
}

function fpkRandomId() {
  if (typeof randomId === 'function') return randomId(); // the host's format: task(xxxxxxxxxxxxxxx)
  const part = () => Math.random().toString(36).slice(2, 7);
  return `task(fpk${part()}${part()})`;
}

function fpkEscape(text) {
  const div = document.createElement('div');
  div.innerText = String(text);
  return div.innerHTML;
}

function fpkRewrite(selector, html) {
  // Gradio renders an HTML output's value as its own nodes and replaces them on the next update: only the
  // root element of our value is rewritten in place (attributes and content), never replaced or added to
  const holder = fpkEl(selector);
  const root = holder ? holder.querySelector('.prose > *, .fpk-progress, .fpk-info, .fpk-error, [data-fpk-final]') : null;
  const template = document.createElement('div');
  template.innerHTML = html;
  const fresh = template.firstElementChild;
  if (!root || !fresh) return false;
  Array.from(root.attributes).forEach((attr) => root.removeAttribute(attr.name));
  Array.from(fresh.attributes).forEach((attr) => root.setAttribute(attr.name, attr.value));
  root.innerHTML = fresh.innerHTML;
  return true;
}

function fpkButtonText(selector, text) {
  // change the button's text node itself, so Gradio's own later label updates still reach it
  const button = fpkEl(selector);
  if (!button) return;
  const node = Array.from(button.childNodes).find((child) => child.nodeType === Node.TEXT_NODE && child.data.trim());
  if (node) node.data = text;
  else button.appendChild(document.createTextNode(text));
}

function fpkSend(path, body) {
  const send = (typeof window.authFetch === 'function') ? window.authFetch : fetch; // authFetch: SD.Next --auth
  return send(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
}

async function fpkControl(action) {
  const task = window.fpkLastTask || '';
  const endedBefore = !!task && fpkFinished(task); // the page's last job had ended when the button was clicked
  let html;
  let label = null;
  try {
    const res = await fpkSend(`./framepack/v1/page/${action}`, { job: '', task });
    const data = res ? await res.json() : null;
    if (!res || !res.ok) throw new Error((data && data.detail) || `HTTP ${res ? res.status : '?'}`);
    html = data.status;
    label = data.label || null;
  } catch (err) {
    html = `<div class="fpk-error" role="alert">${fpkEscape(`${action}: ${err.message || err}`)}</div>`;
  }
  const template = document.createElement('div');
  template.innerHTML = html || '';
  const answerIsFinal = !!template.querySelector('[data-fpk-final]');
  // the job ended while this request was out: its final line stays. A job that had ended before the click does
  // not hide the answer ("Nothing to pause" after a finished run)
  if (task && !endedBefore && fpkFinished(task) && !answerIsFinal) return;
  if (html) fpkRewrite('#fpk_status', html);
  if (label) fpkButtonText('#fpk_pause', label);
}

function fpkControlClick(event) {
  // one listener on the app (capture phase) instead of one per button: SD.Next's page re-renders our buttons
  // now and then, and a listener on the old node would be lost with it
  const button = event.target && event.target.closest ? event.target.closest('#fpk_generate, #fpk_stop, #fpk_skip, #fpk_pause') : null;
  if (!button || !fpkInSdnext()) return;
  if (button.id === 'fpk_generate') fpkNewTask();
  else fpkControl(button.id.slice(4));
}

function fpkControls() {
  if (!fpkEl('#fpk_root')) return false; // not rendered yet
  if (!fpkInSdnext()) return true; // the standalone page: Gradio events (framepack/ui/tab.py), under its own login
  if (!window.fpkControlsBound) {
    window.fpkControlsBound = true;
    fpkApp().addEventListener('click', fpkControlClick, true); // capture: before Gradio's own Generate handler
  }
  return true;
}

function fpkFinalLine(task) {
  return Array.from(fpkApp().querySelectorAll('#fpk_status [data-fpk-final]')).find((el) => el.dataset.fpkFinal === task);
}

function fpkFinished(task) {
  return !!fpkFinalLine(task);
}

function fpkRefused(task) {
  // Generate's own answer was an error (bad input, queue full): no job to ask about
  const line = fpkFinalLine(task);
  return !!(line && line.querySelector('.fpk-error'));
}

function fpkSeconds(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '-';
  const secs = Math.max(0, Math.round(value));
  return secs >= 60 ? `${Math.floor(secs / 60)}m ${String(secs % 60).padStart(2, '0')}s` : `${secs} s`;
}

function fpkDrawProgress(res, started) {
  const fraction = Math.max(0, Math.min(1, Number(res.progress) || 0));
  const percent = Math.round(fraction * 100);
  let text;
  if (res.queued && !res.active) text = 'Waiting in the queue';
  else if (res.paused) text = `${(res.textinfo || '').replace(/^FramePack: /, '')} · PAUSED`;
  else text = (res.textinfo || 'Starting').replace(/^FramePack: /, '');
  const elapsed = fpkSeconds((Date.now() - started) / 1000);
  const eta = res.eta ? ` · ETA ${fpkSeconds(res.eta)}` : '';
  fpkRewrite('#fpk_progress', `<div class="fpk-progress fpk-progress-live"><div class="fpk-bar"><div class="fpk-bar-fill" style="width:${percent}%"></div></div>`
    + `<div class="fpk-progress-text">${percent}% · ${fpkEscape(text)}${eta} · elapsed ${elapsed}</div></div>`);
  fpkButtonText('#fpk_generate', res.paused ? 'Paused' : `Generating ${percent}%`);
}

function fpkDrawPreview(dataUri) {
  const box = fpkEl('#fpk_preview .fpk-live');
  const img = box ? box.querySelector('img.fpk-live-image') : null;
  if (!img || !dataUri) return;
  img.src = dataUri;
  img.hidden = false;
  box.classList.remove('fpk-live-empty');
}

async function fpkProgress(task, lastPreview) {
  const res = await fpkSend('./internal/progress', { id_task: task, id_live_preview: lastPreview });
  if (!res || !res.ok) throw new Error(`progress: ${res ? res.status : 'no answer'}`);
  return res.json();
}

function fpkPageNews() {
  // inside SD.Next no Gradio event is held for the whole job (each pending one costs SD.Next's page a timer per
  // output): a short event brings the job's line when it starts running and its end (framepack/ui/actions.py)
  const news = fpkEl('#fpk_page_news');
  if (news) news.click();
}

async function fpkFollow(task) {
  window.fpkFollowing = task;
  const started = Date.now();
  let lastSeen = Date.now();
  let lastPreview = 0;
  let waited = false; // queued behind another job: its "running" line is news when it starts
  while (window.fpkFollowing === task && !fpkFinished(task)) {
    await new Promise((resolve) => { setTimeout(resolve, fpkPollMs); });
    if (window.fpkFollowing !== task || fpkFinished(task)) break;
    let res;
    try {
      res = await fpkProgress(task, lastPreview);
    } catch (err) {
      console.warn('FramePack:', err); // eslint-disable-line no-console
      if (Date.now() - lastSeen > fpkGiveUpMs) break;
      continue; // eslint-disable-line no-continue
    }
    if (fpkFinished(task)) break; // the final line arrived while this request was out (Stop's answer)
    if (res.completed) break;
    if (res.active || res.queued) lastSeen = Date.now();
    else if (Date.now() - lastSeen > fpkGiveUpMs) break;
    if (res.queued && !res.active) waited = true;
    else if (res.active && waited) { waited = false; fpkPageNews(); }
    if (res.active || res.queued) fpkDrawProgress(res, started);
    if (res.live_preview) fpkDrawPreview(res.live_preview);
    if (typeof res.id_live_preview === 'number' && res.id_live_preview >= 0) lastPreview = res.id_live_preview;
  }
  const replaced = window.fpkFollowing !== task; // a newer Generate's follower asks instead
  if (!replaced) window.fpkFollowing = null;
  // the end (video, timings) even when Stop's answer already brought the final line; asked once more it is empty
  if (!replaced && !fpkRefused(task)) fpkPageNews();
  fpkButtonText('#fpk_generate', 'Generate');
}

function fpkRemember(values) {
  // the last Generate's settings survive a reload: images and keyframes (data URLs, objects) are left out
  const kept = values.map((v) => (((typeof v === 'string' && v.startsWith('data:')) || (v && typeof v === 'object')) ? null : v));
  try {
    window.localStorage.setItem('fpk-last-settings', JSON.stringify(kept));
  } catch (err) {
    console.warn('FramePack: settings not kept', err); // eslint-disable-line no-console
  }
}

function fpkNewTask() {
  // Generate's click, before Gradio's own handler: inside SD.Next Gradio may call fpkSubmit a second or more
  // later (it re-renders the page first), and a Stop clicked meanwhile must name this new task, not the last one
  const id = fpkRandomId();
  window.fpkLastTask = id;
  window.fpkPendingTask = id;
}

function fpkSubmit(...args) {
  const id = window.fpkPendingTask || fpkRandomId();
  window.fpkPendingTask = null;
  window.fpkLastTask = id;
  if (fpkInSdnext()) fpkFollow(id);
  const res = Array.from(args);
  res[0] = id; // the first input is the hidden task id textbox, the second this page's id
  fpkRemember(res.slice(2));
  setTimeout(fpkJobs, 500);
  return res;
}

async function fpkJobs() {
  // the jobs panel: running and queued jobs (stoppable), then the history, newest first
  const holder = fpkEl('#fpk_jobs');
  if (!holder || document.visibilityState === 'hidden' || !holder.offsetParent) return;
  if (!fpkInSdnext()) { // the standalone page: a Gradio event (covered by its own login), cheap on this page
    const refresh = fpkEl('#fpk_jobs_refresh');
    if (refresh) refresh.click();
    return;
  }
  try {
    const res = await fpkSend('./framepack/v1/page/jobs', { job: '', task: '' });
    if (!res || !res.ok) return;
    const data = await res.json();
    const root = holder.querySelector('.fpk-jobs');
    if (root && data.html && root.outerHTML !== data.html) fpkRewrite('#fpk_jobs', data.html);
  } catch (err) {
    console.warn('FramePack: jobs', err); // eslint-disable-line no-console
  }
}

function fpkShowReroll(job) {
  // Re-roll…: the job's id into the accordion's "Job to re-roll" (opened when closed), for its section and seed
  const fill = () => {
    const box = fpkEl('#fpk_reroll_job input, #fpk_reroll_job textarea');
    if (!box || !box.offsetParent) return false;
    box.value = job;
    box.dispatchEvent(new Event('input', { bubbles: true }));
    box.scrollIntoView({ block: 'center' });
    return true;
  };
  if (fill()) return;
  const label = fpkEl('#fpk_continue_accordion > button, #fpk_continue_accordion .label-wrap');
  if (label) label.click();
  setTimeout(fill, 200);
}

async function fpkJobAction(event) {
  const button = event.target.closest('[data-fpk-job-action]');
  if (!button) return;
  const job = button.dataset.fpkJob;
  const action = button.dataset.fpkJobAction;
  if (action === 'load') {
    window.fpkJobToLoad = job;
    const load = fpkEl('#fpk_load_job');
    if (load) load.click();
    return;
  }
  if (action === 'reroll') {
    fpkShowReroll(job);
    return;
  }
  button.disabled = true;
  if (action === 'extend') { // a Gradio event everywhere: it sends the tab's current prompt, duration, ...
    window.fpkJobToExtend = job;
    const extend = fpkEl('#fpk_job_extend');
    if (extend) extend.click();
    return;
  }
  if (!fpkInSdnext()) {
    if (action === 'stop') {
      window.fpkJobToStop = job;
      const stop = fpkEl('#fpk_job_stop');
      if (stop) stop.click();
      return;
    }
    window.fpkJobCommand = [action, job]; // resume, cancel-batch
    const command = fpkEl('#fpk_job_command');
    if (command) command.click();
    return;
  }
  try {
    const res = await fpkSend(`./framepack/v1/page/${button.dataset.fpkJobAction}`, { job, task: '' });
    const data = res ? await res.json() : null;
    if (data && data.status) fpkRewrite('#fpk_status', data.status);
  } catch (err) {
    fpkRewrite('#fpk_status', `<div class="fpk-error" role="alert">${fpkEscape(`${err.message || err}`)}</div>`);
  }
  fpkJobs();
}

function fpkJobsPanel() {
  const holder = fpkEl('#fpk_jobs');
  if (!holder) return false;
  if (holder.dataset.fpkBound) return true;
  holder.dataset.fpkBound = '1';
  holder.addEventListener('click', fpkJobAction);
  fpkJobs();
  setInterval(fpkJobs, fpkJobsMs);
  const restore = fpkEl('#fpk_restore'); // the last Generate's settings, kept by this browser
  if (restore && window.localStorage.getItem('fpk-last-settings')) restore.click();
  return true;
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

function fpkSidebarButton() {
  const button = document.querySelector('#other_extensions button[tabitemid*="#tab_framepack_tabitem"]');
  if (!button) return false;
  if (button.dataset.fpkNamed) return true;
  button.dataset.fpkNamed = '1';
  button.title = 'FramePack: image to long video';
  const label = button.querySelector('span');
  if (label) label.textContent = 'FramePack';
  const icon = button.querySelector('.mask-icon');
  if (icon) {
    icon.classList.remove('icon-video');
    icon.classList.add('fpk-sidebar-icon');
  }
  return true;
}

function fpkWatch() {
  // only our video box is observed: the whole app changes constantly inside SD.Next
  const video = fpkEl('#fpk_video');
  if (video && !window.fpkObserver) {
    window.fpkObserver = new MutationObserver(() => fpkLoopVideos());
    window.fpkObserver.observe(video, { childList: true, subtree: true });
    fpkLoopVideos();
  }
  return !!video;
}

function fpkInit() {
  let tries = 0;
  const retry = () => { // ModernUI builds its sidebar some time after the page has loaded (up to a minute here)
    const watching = fpkWatch() && fpkControls() && fpkJobsPanel();
    const named = fpkSidebarButton();
    tries += 1;
    if (!(watching && named) && tries < 240) setTimeout(retry, 500); // Standard theme: no sidebar, 2 min of cheap checks
  };
  retry();
}

if (typeof onUiLoaded === 'function') onUiLoaded(fpkInit);
else if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', fpkInit);
else fpkInit();
