/* global document, localStorage, CSS, setTimeout, setInterval, clearInterval, AbortController */
// The status page: today's generations, live over SSE, plus the inbox. No framework, no build step of its own: it talks
// to the API through the TypeScript client package (clients/typescript), which the API serves built at /client/.
import { createVideogenClient, isTerminal, VideogenError } from '/client/index.js';

const KEY_STORAGE = 'videogen.apiKey';
const RANK = { queued: 0, running: 1, succeeded: 2, failed: 2, canceled: 2, expired: 2 };
const $ = (id) => document.getElementById(id);

const state = { key: null, client: null, session: 0, stream: null, lastEventId: undefined, generations: new Map(), fetching: new Set(), awaiting: new Set(), timer: undefined, since: new Date(), remixOf: null };

/** One API call through the client; a 401 means the key is wrong, which stops the session. */
async function call(run) {
  try {
    return await run(state.client);
  } catch (err) {
    if (err instanceof VideogenError && err.status === 401) keyRejected();
    throw err;
  }
}

const errorText = (err) => (err instanceof VideogenError ? err.message : 'The request did not reach the server; try again.');

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

const time = (iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' }) : '');
const eta = (seconds) => (seconds < 90 ? `~${Math.max(1, Math.round(seconds))} s` : `~${Math.round(seconds / 60)} min`);

// ---- generations ----

function renderRow(g) {
  let row = document.querySelector(`tr[data-id="${CSS.escape(g.id)}"]`);
  if (!row) {
    row = el('tr');
    row.dataset.id = g.id;
    row.dataset.created = g.created_at;
    const later = [...$('generations').tBodies[0].rows].find((r) => r.dataset.created < g.created_at);
    $('generations').tBodies[0].insertBefore(row, later ?? null);
    $('empty').hidden = true;
  }
  row.dataset.status = g.status;
  const percent = Math.round((g.progress ?? 0) * 100);
  const queue = g.status === 'queued' && g.queue_position != null ? `#${g.queue_position}${g.eta_seconds != null ? ` · ${eta(g.eta_seconds)}` : ''}` : '—';
  let result = '';
  if (g.video_url && /^https?:\/\//.test(g.video_url)) result = el('a', { href: g.video_url, target: '_blank', rel: 'noopener noreferrer', className: 'video-link', textContent: 'Video' });
  else if (g.error) result = el('span', { className: 'error' }, el('code', { textContent: g.error.code }), el('small', { textContent: g.error.message }));
  const cancelButton = isTerminal(g.status) ? '' : el('button', { type: 'button', className: 'cancel', textContent: 'Cancel', onclick: () => cancel(g.id) });
  if (cancelButton) cancelButton.setAttribute('aria-label', `Cancel “${g.prompt}”`);
  // A succeeded job can be remixed: the next submit starts from its video.
  const remixButton = g.status === 'succeeded' ? el('button', { type: 'button', className: 'remix', textContent: 'Remix', onclick: () => remix(g) }) : '';
  if (remixButton) remixButton.setAttribute('aria-label', `Remix “${g.prompt}”`);
  const sources = [g.input_reference ? `from image ${g.input_reference}` : null, g.remix_of ? `remix of ${g.remix_of}` : null].filter(Boolean).join(' · ');
  const progress = el('progress', { max: 100, value: percent });
  progress.setAttribute('aria-label', `Progress of “${g.prompt}”`);
  row.replaceChildren(
    el('td', { className: 'created', textContent: time(g.created_at) }),
    el('td', { className: 'prompt', title: [g.prompt, g.batch_id ? `(an item of ${g.batch_id})` : '', sources].filter(Boolean).join(' ') }, g.prompt, sources ? el('small', { className: 'source', textContent: sources }) : null),
    el(
      'td',
      {},
      el('span', { className: `status status-${g.status}`, textContent: g.status }),
      g.priority === 'batch' ? el('small', { className: 'lane', textContent: ' batch' }) : null,
      g.attempt > 1 ? el('small', { textContent: ` attempt ${g.attempt}` }) : null,
      // The backend that ran it (several configured: BACKENDS), and the one it left when that was down.
      g.backend ? el('small', { className: 'backend', textContent: ` on ${g.backend}${g.failed_over_from ? ` (failed over from ${g.failed_over_from})` : ''}` }) : null,
    ),
    el('td', { className: 'queue', textContent: queue }),
    el('td', { className: 'progress' }, progress, el('span', { textContent: ` ${percent}%` })),
    el('td', { className: 'result' }, result),
    el('td', {}, cancelButton || remixButton),
  );
}

/** Applies a newer view of a job; writes never move a job backwards (the stream and the list can race). */
function merge(id, fields) {
  const current = state.generations.get(id);
  if (!current) return;
  if (RANK[fields.status] < RANK[current.status] || (isTerminal(current.status) && fields.status !== current.status)) return;
  // Progress only grows within an attempt; a new attempt starts again.
  const sameAttempt = (fields.attempt ?? current.attempt) === current.attempt;
  if (fields.status === current.status && sameAttempt && fields.progress < current.progress) delete fields.progress;
  for (const [key, value] of Object.entries(fields)) if (value !== undefined) current[key] = value;
  if (current.status !== 'queued') Object.assign(current, { queue_position: null, eta_seconds: null });
  renderRow(current);
}

function addGeneration(g) {
  if (new Date(g.created_at) < state.since) return;
  if (state.generations.has(g.id)) return merge(g.id, { ...g });
  state.generations.set(g.id, { ...g });
  renderRow(state.generations.get(g.id));
}

async function fetchGeneration(id, session) {
  if (state.fetching.has(id)) return;
  state.fetching.add(id);
  try {
    const generation = await call((client) => client.generations.get(id));
    if (session === state.session) addGeneration(generation);
  } catch {
    // Gone or unreachable: the next event or reload shows it.
  } finally {
    state.fetching.delete(id);
  }
}

async function loadToday(session) {
  state.since = new Date();
  state.since.setHours(0, 0, 0, 0);
  let shown = 0;
  try {
    for await (const generation of state.client.generations.list({ created_after: state.since.toISOString(), limit: 100 })) {
      if (session !== state.session || ++shown > 1000) return;
      addGeneration(generation);
    }
  } catch (err) {
    if (err instanceof VideogenError && err.status === 401) keyRejected();
  }
}

async function cancel(id) {
  const button = document.querySelector(`tr[data-id="${CSS.escape(id)}"] button.cancel`);
  if (button) button.disabled = true;
  try {
    merge(id, await call((client) => client.generations.cancel(id)));
  } catch (err) {
    message(errorText(err), true);
    if (button) button.disabled = false;
  }
}

/** The next submit remixes this job (its video is where the backend starts); the form says so until it is sent or dropped. */
function remix(g) {
  state.remixOf = g.id;
  $('remix-text').textContent = `Remixing “${g.prompt}” (${g.id})`;
  $('remix').hidden = false;
  $('prompt').focus();
}

function dropRemix() {
  state.remixOf = null;
  $('remix').hidden = true;
  $('remix-text').textContent = '';
}

// ---- live events: the client's events(), which reconnects after a drop and resumes with Last-Event-ID ----

function onEvent({ type, data }) {
  // The server could not replay what was missed (too long away): today's list is read again; the stream goes on live.
  if (type === 'stream.resync_required') return void loadToday(state.session);
  // The key was revoked: the session ends as for a key that is refused.
  if (type === 'stream.closed') return void keyRejected();
  const id = data.generation_id;
  if (!id) return;
  // A job's end is also an inbox entry: look for it.
  if (data.status && isTerminal(data.status)) void awaitNotification(id, state.session);
  if (!state.generations.has(id)) return void fetchGeneration(id, state.session);
  if (type === 'generation.queue_position') return merge(id, { status: 'queued', queue_position: data.queue_position, eta_seconds: data.eta_seconds });
  merge(id, { status: data.status, progress: data.progress, attempt: data.attempt, video_url: data.video_url, error: data.error, updated_at: data.updated_at });
  // Events do not name the backend: a job that started or ended is read once more for it.
  if (data.status && data.status !== 'queued' && data.status !== state.generations.get(id)?.backendReadAt) {
    state.generations.get(id).backendReadAt = data.status;
    void fetchGeneration(id, state.session);
  }
}

/** Keeps the stream open; resolves once the first connection is up (or has failed). */
function openStream(session) {
  return new Promise((connected) => {
    void (async () => {
      while (session === state.session) {
        const controller = new AbortController();
        state.stream = controller;
        const onConnection = (up) => {
          if (up) connection('live', 'Live');
          else connection('retrying', 'Reconnecting…');
          connected();
        };
        try {
          for await (const event of state.client.events({ signal: controller.signal, lastEventId: state.lastEventId, onConnection })) {
            if (session !== state.session) return;
            if (event.id !== undefined) state.lastEventId = event.id;
            onEvent(event);
          }
        } catch (err) {
          if (err instanceof VideogenError && err.status === 401) return void keyRejected();
        }
        if (session !== state.session || controller.signal.aborted) return;
        // Refused (too many streams, say) or ended: open a new one shortly.
        onConnection(false);
        await new Promise((resume) => setTimeout(resume, 2000));
      }
    })();
  });
}

// ---- notifications ----

async function refreshNotifications(session) {
  let items;
  try {
    items = (await call((client) => client.notifications.list({ limit: 20 }))).data;
  } catch {
    return [];
  }
  if (session !== state.session) return [];
  $('notifications').replaceChildren(...items.map(renderNotification));
  $('no-notifications').hidden = items.length > 0;
  const unread = items.filter((n) => !n.read).length;
  $('unread-count').textContent = unread > 0 ? `${unread} unread` : '';
  return items;
}

function renderNotification(n) {
  const read = el('button', { type: 'button', className: 'mark-read', textContent: 'Mark read', onclick: () => markRead(n.id) });
  read.setAttribute('aria-label', `Mark “${n.title}” read`);
  const item = el('li', { className: n.read ? 'read' : 'unread' }, el('strong', { textContent: n.title }), el('p', { textContent: n.message }), el('small', { textContent: time(n.created_at) }), n.read ? null : read);
  item.dataset.id = n.id;
  // A batch's notification (batch.completed) names no generation.
  if (n.generation_id) item.dataset.generationId = n.generation_id;
  return item;
}

async function markRead(id) {
  await call((client) => client.notifications.markRead(id))
    .then(() => refreshNotifications(state.session))
    .catch(() => undefined);
}

/** The inbox row is written just after the job's terminal state: look until it is there, backing off, for ~15 s. */
async function awaitNotification(generationId, session) {
  if (state.awaiting.has(generationId)) return;
  state.awaiting.add(generationId);
  try {
    for (let delay = 200; delay < 10_000 && session === state.session; delay *= 2) {
      const items = await refreshNotifications(session);
      if (items.some((n) => n.generation_id === generationId)) return;
      await new Promise((resume) => setTimeout(resume, delay));
    }
  } finally {
    state.awaiting.delete(generationId);
  }
}

// ---- key, submit, session ----

function connection(kind, text) {
  $('connection').dataset.state = kind;
  $('connection').textContent = text;
}

function message(text, isError = false) {
  $('submit-message').textContent = text;
  $('submit-message').className = isError ? 'error' : '';
}

function stop() {
  state.session += 1;
  state.stream?.abort();
  clearInterval(state.timer);
  Object.assign(state, { lastEventId: undefined, generations: new Map(), awaiting: new Set() });
  dropRemix();
  $('generations').tBodies[0].replaceChildren();
  $('notifications').replaceChildren();
  $('empty').hidden = false;
  $('unread-count').textContent = '';
  connection('off', 'Not connected');
}

function keyRejected() {
  stop();
  $('account').textContent = 'That API key was not accepted.';
  $('account').className = 'error';
}

async function start(key) {
  stop();
  state.key = key;
  state.client = createVideogenClient({ baseUrl: document.location.origin, apiKey: key });
  const session = state.session;
  let usage;
  try {
    usage = await call((client) => client.usage());
  } catch (err) {
    if (session !== state.session) return;
    $('account').textContent = err instanceof VideogenError ? err.message : 'The API cannot be reached.';
    $('account').className = 'error';
    return;
  }
  if (session !== state.session) return;
  const { credits } = usage;
  $('account').className = '';
  const byBackend = (usage.backends ?? []).map((b) => `${b.backend}: ${b.jobs} jobs, ${b.credits_used} credits`).join('; ');
  $('account').textContent = `Tier ${usage.tier} · ${credits.available} credits available, ${credits.reserved} reserved${byBackend ? ` · ${byBackend}` : ''}`;
  // The stream is open before the list is read, so nothing that happens in between is missed.
  await openStream(session);
  await loadToday(session);
  await refreshNotifications(session);
  state.timer = setInterval(() => void refreshNotifications(session), 30_000);
}

async function submit(event) {
  event.preventDefault();
  if (!state.key) return message('Enter an API key first.', true);
  const button = $('submit-button');
  button.disabled = true;
  try {
    const body = { prompt: $('prompt').value, duration_seconds: Number($('duration').value), resolution: $('resolution').value };
    // Left empty, the server's queue limit applies; past the limit the job ends "expired", never charged.
    if ($('max-queue').value) body.max_queue_seconds = Number($('max-queue').value);
    // Batch: cheaper, waits while interactive jobs wait (and may wait longer); interactive is the default, sent as nothing.
    if ($('priority').value === 'batch') body.priority = 'batch';
    // Image-to-video: the server checks the image (an image/* of at most 10 MB at an address it may reach) before admission.
    if ($('image-url').value.trim()) body.input_reference = $('image-url').value.trim();
    if (state.remixOf) body.remix_of = state.remixOf;
    // The client sends an Idempotency-Key of its own making: a repeated click is a new job, a retried request is not.
    addGeneration(await call((client) => client.generations.create(body)));
    $('prompt').value = '';
    $('image-url').value = '';
    dropRemix();
    message('Submitted.');
  } catch (err) {
    const retry = err instanceof VideogenError && err.retryAfter !== undefined ? ` (retry in ${err.retryAfter} s)` : '';
    message(`${errorText(err)}${retry}`, true);
  } finally {
    button.disabled = false;
  }
}

$('key-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const key = $('api-key').value.trim();
  localStorage.setItem(KEY_STORAGE, key);
  void start(key);
});
$('forget-key').addEventListener('click', () => {
  localStorage.removeItem(KEY_STORAGE);
  $('api-key').value = '';
  $('account').textContent = '';
  state.key = null;
  state.client = null;
  stop();
});
$('submit-form').addEventListener('submit', submit);
$('remix-clear').addEventListener('click', dropRemix);

const saved = localStorage.getItem(KEY_STORAGE);
if (saved) {
  $('api-key').value = saved;
  void start(saved);
}
