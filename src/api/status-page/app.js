/* global document, localStorage, fetch, AbortController, CSS, crypto, setTimeout, setInterval, clearInterval */
// The status page: today's generations, live over SSE, plus the inbox. No framework, no build step.
import { readEventStream } from './event-stream.js';

const KEY_STORAGE = 'videogen.apiKey';
const RANK = { queued: 0, running: 1, succeeded: 2, failed: 2, canceled: 2, expired: 2 };
const isTerminal = (status) => RANK[status] === 2;
const $ = (id) => document.getElementById(id);

const state = { key: null, session: 0, stream: null, lastEventId: undefined, generations: new Map(), fetching: new Set(), awaiting: new Set(), timer: undefined, since: new Date() };

/** One API call with the bearer key; a 401 means the key is wrong, which stops the session. */
async function api(method, path, body, headers = {}) {
  const res = await fetch(path, {
    method,
    headers: { authorization: `Bearer ${state.key}`, ...(body ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json().catch(() => undefined);
  if (res.status === 401) keyRejected();
  return { status: res.status, body: json, headers: res.headers };
}

const errorText = (res) => res.body?.error?.message ?? `request failed (HTTP ${res.status})`;

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
  const progress = el('progress', { max: 100, value: percent });
  progress.setAttribute('aria-label', `Progress of “${g.prompt}”`);
  row.replaceChildren(
    el('td', { className: 'created', textContent: time(g.created_at) }),
    el('td', { className: 'prompt', textContent: g.prompt, title: g.batch_id ? `${g.prompt} (an item of ${g.batch_id})` : g.prompt }),
    el(
      'td',
      {},
      el('span', { className: `status status-${g.status}`, textContent: g.status }),
      g.priority === 'batch' ? el('small', { className: 'lane', textContent: ' batch' }) : null,
      g.attempt > 1 ? el('small', { textContent: ` attempt ${g.attempt}` }) : null,
    ),
    el('td', { className: 'queue', textContent: queue }),
    el('td', { className: 'progress' }, progress, el('span', { textContent: ` ${percent}%` })),
    el('td', { className: 'result' }, result),
    el('td', {}, cancelButton),
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
    const res = await api('GET', `/v1/generations/${encodeURIComponent(id)}`);
    if (session === state.session && res.status === 200) addGeneration(res.body);
  } finally {
    state.fetching.delete(id);
  }
}

async function loadToday(session) {
  state.since = new Date();
  state.since.setHours(0, 0, 0, 0);
  let cursor = null;
  for (let page = 0; page < 10; page++) {
    const query = `created_after=${encodeURIComponent(state.since.toISOString())}&limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const res = await api('GET', `/v1/generations?${query}`);
    if (session !== state.session || res.status !== 200) return;
    res.body.data.forEach(addGeneration);
    cursor = res.body.next_cursor;
    if (!res.body.has_more) return;
  }
}

async function cancel(id) {
  const button = document.querySelector(`tr[data-id="${CSS.escape(id)}"] button.cancel`);
  if (button) button.disabled = true;
  const res = await api('POST', `/v1/generations/${encodeURIComponent(id)}/cancel`);
  if (res.status === 200 || res.status === 202) merge(id, res.body);
  else {
    message(errorText(res), true);
    if (button) button.disabled = false;
  }
}

// ---- live events: fetch() streaming (event-stream.js), because EventSource cannot send the Authorization header ----

function onEvent(type, data) {
  // The server could not replay what was missed (too long away): today's list is read again; the stream goes on live.
  if (type === 'stream.resync_required') return void loadToday(state.session);
  // The key was revoked: the session ends as for a key that is refused.
  if (type === 'stream.closed') return void keyRejected();
  const id = data.generation_id;
  if (!id) return;
  // A job's end is also an inbox entry: look for it.
  if (isTerminal(data.status)) void awaitNotification(id, state.session);
  if (!state.generations.has(id)) return void fetchGeneration(id, state.session);
  if (type === 'generation.queue_position') return merge(id, { status: 'queued', queue_position: data.queue_position, eta_seconds: data.eta_seconds });
  merge(id, { status: data.status, progress: data.progress, attempt: data.attempt, video_url: data.video_url, error: data.error, updated_at: data.updated_at });
}

/** Keeps the stream open, resuming after Last-Event-ID; resolves once the first connection is up (or has failed). */
function openStream(session) {
  return new Promise((connected) => {
    void (async () => {
      let delay = 1000;
      while (session === state.session) {
        const controller = new AbortController();
        state.stream = controller;
        try {
          const headers = { authorization: `Bearer ${state.key}`, accept: 'text/event-stream' };
          if (state.lastEventId) headers['last-event-id'] = state.lastEventId;
          const res = await fetch('/v1/events', { headers, signal: controller.signal, cache: 'no-store' });
          if (res.status === 401) return void keyRejected();
          if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
          connection('live', 'Live');
          connected();
          await readEventStream(res.body, {
            isOpen: () => session === state.session,
            onEvent,
            onId: (id) => (state.lastEventId = id),
            onRetry: (ms) => (delay = ms),
          });
        } catch {
          if (controller.signal.aborted) return;
        }
        if (session !== state.session) return;
        connection('retrying', 'Reconnecting…');
        connected();
        await new Promise((resume) => setTimeout(resume, delay));
      }
    })();
  });
}

// ---- notifications ----

async function refreshNotifications(session) {
  const res = await api('GET', '/v1/notifications?limit=20');
  if (session !== state.session || res.status !== 200) return [];
  const items = res.body.data;
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
  const res = await api('POST', `/v1/notifications/${encodeURIComponent(id)}/read`);
  if (res.status === 200) await refreshNotifications(state.session);
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
  const session = state.session;
  const usage = await api('GET', '/v1/usage').catch(() => ({ status: 0 }));
  if (session !== state.session) return;
  if (usage.status !== 200) {
    $('account').textContent = usage.status === 0 ? 'The API cannot be reached.' : errorText(usage);
    $('account').className = 'error';
    return;
  }
  const { credits } = usage.body;
  $('account').className = '';
  $('account').textContent = `Tier ${usage.body.tier} · ${credits.available} credits available, ${credits.reserved} reserved`;
  // The stream is open before the list is read, so nothing that happens in between is missed.
  await openStream(session);
  await loadToday(session);
  await refreshNotifications(session);
  state.timer = setInterval(() => void refreshNotifications(session), 30_000);
}

function idempotencyKey() {
  return [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, '0')).join('');
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
    const res = await api('POST', '/v1/generations', body, { 'idempotency-key': idempotencyKey() });
    if (res.status !== 202) {
      const retry = res.headers.get('retry-after');
      return message(`${errorText(res)}${retry ? ` (retry in ${retry} s)` : ''}`, true);
    }
    addGeneration(res.body);
    $('prompt').value = '';
    message('Submitted.');
  } catch {
    message('The request did not reach the server; try again.', true);
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
  stop();
});
$('submit-form').addEventListener('submit', submit);

const saved = localStorage.getItem(KEY_STORAGE);
if (saved) {
  $('api-key').value = saved;
  void start(saved);
}
