import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { artifactPath, launchChromium } from './chromium';
import { apiClient, startStack, type Stack } from './harness';
import { startImageServer, type ImageServer } from './image-server';

/** The status page at / driven in Debian's headless Chromium: key, submit, live updates, cancel, notifications. */

const SCREENSHOT = artifactPath('status-page.png');
const WAIT = { timeout: 60_000 };

// Runs in the page before its own script: records every status a row shows, however fast the events come.
const RECORD_STATUS_HISTORY = `
window.statusHistory = {};
new MutationObserver((records) => {
  for (const record of records) {
    const id = record.target.getAttribute('data-id');
    if (id) (window.statusHistory[id] = window.statusHistory[id] || []).push(record.oldValue);
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-status'], attributeOldValue: true });`;

describe('the status page at /, in headless Chromium', () => {
  let stack: Stack;
  let browser: Browser;
  let page: Page;
  let apiKey: string;
  let images: ImageServer;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    // The page imports the client package, built, from the API (/client/index.js).
    execFileSync('bash', [path.join(__dirname, '..', 'scripts', 'client-build.sh')], { stdio: 'inherit' });
    // Two GPU slots: two hanging jobs are enough to make a third one wait in the queue.
    images = await startImageServer();
    [stack, browser] = await Promise.all([startStack({ env: { GPU_SLOTS: '2', SSE_QUEUE_POSITION_MS: '300' } }), launchChromium()]);
    ({ apiKey } = await stack.createUser('pro'));
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.addInitScript({ content: RECORD_STATUS_HISTORY });
    page.on('pageerror', (err) => pageErrors.push(err.message));
    // Every error the browser logs counts (a refused script, a 404 for an icon), but the API's own answers, which the page
    // handles (a 401 for a mistyped key).
    page.on('console', (msg) => {
      if ((msg.type() === 'error' && !msg.location().url.includes('/v1/')) || /Content Security Policy/i.test(msg.text())) pageErrors.push(msg.text());
    });
    page.on('response', (res) => {
      if (res.status() >= 400 && !res.url().includes('/v1/')) pageErrors.push(`${res.status()} ${res.url()}`);
    });
  });
  afterAll(async () => {
    await browser?.close();
    await stack?.close();
    await images?.close();
  });

  const row = (id: string, status?: string) => page.locator(`#generations tr[data-id="${id}"]${status ? `[data-status="${status}"]` : ''}`);
  /** The statuses a row has shown, in order. */
  const statusHistory = (id: string) =>
    page.evaluate(`(() => {
      const row = document.querySelector('tr[data-id="${id}"]');
      const seen = (window.statusHistory['${id}'] || []).filter(Boolean).concat(row ? [row.dataset.status] : []);
      return seen.filter((status, i) => status !== seen[i - 1]);
    })()`);

  async function submitThroughPage(prompt: string, lane: 'interactive' | 'batch' = 'interactive'): Promise<string> {
    const before = await page.locator('#generations tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-id')));
    await page.getByLabel('Prompt').fill(prompt);
    await page.getByLabel('Lane').selectOption(lane);
    await page.getByRole('button', { name: 'Generate' }).click();
    const fresh = page.locator('#generations tbody tr', { hasText: prompt });
    await fresh.first().waitFor(WAIT);
    const id = await fresh.first().getAttribute('data-id');
    if (!id || before.includes(id)) throw new Error(`no new row for "${prompt}"`);
    return id;
  }

  test('a wrong key is refused, a right one connects the live stream and is remembered', async () => {
    await page.goto(`${stack.apiUrl}/`);
    await page.getByRole('textbox', { name: 'API key' }).fill('vg_not-a-key');
    await page.getByRole('button', { name: 'Use key' }).click();
    await page.getByText('That API key was not accepted.').waitFor(WAIT);

    await page.getByRole('textbox', { name: 'API key' }).fill(apiKey);
    await page.getByRole('button', { name: 'Use key' }).click();
    await page.locator('#connection[data-state="live"]').waitFor(WAIT);
    await page.getByText(/Tier pro · \d+ credits available/).waitFor(WAIT);
    expect(await page.evaluate(`localStorage.getItem('videogen.apiKey')`)).toBe(apiKey);
    await page.getByText('No generations today.').waitFor(WAIT);
  });

  test('a submitted prompt goes queued → running → succeeded live, with a link to its video', async () => {
    const id = await submitThroughPage('a red fox running through snow [slow]');
    await row(id).locator('a.video-link').waitFor(WAIT);

    expect(await statusHistory(id)).toEqual(['queued', 'running', 'succeeded']);
    const job = (await apiClient(stack.apiUrl, apiKey).get(id)).body;
    expect(job).toMatchObject({ status: 'succeeded', video_url: expect.stringMatching(/^https:\/\/videos\.sim\.local\/.+\.mp4$/) });
    expect(await row(id).locator('a.video-link').getAttribute('href')).toBe(job.video_url);
    expect(await row(id).locator('td.progress').innerText()).toContain('100%');
    expect(await row(id).getByRole('button', { name: /^Cancel/ }).count()).toBe(0);
    await page.locator(`#notifications li[data-generation-id="${id}"]`, { hasText: 'Your video is ready' }).waitFor(WAIT);
  });

  test('a job waiting for a GPU shows its queue position; canceling a hanging job frees its slot', async () => {
    const first = await submitThroughPage('a clock that never stops [hang]');
    const second = await submitThroughPage('a river that never ends [hang]');
    await row(first, 'running').waitFor(WAIT);
    await row(second, 'running').waitFor(WAIT);
    const waiting = await submitThroughPage('a lighthouse in a storm');
    await row(waiting).locator('td.queue', { hasText: /^#\d+/ }).waitFor(WAIT);
    expect(await row(waiting).getAttribute('data-status')).toBe('queued');

    await page.getByRole('button', { name: 'Cancel “a clock that never stops [hang]”' }).click();
    await row(first, 'canceled').waitFor(WAIT);
    expect(await row(first).locator('td.result').innerText()).toContain('canceled_by_user');
    // The freed slot goes to the waiting job.
    await row(waiting).locator('a.video-link').waitFor(WAIT);
    expect(await statusHistory(waiting)).toEqual(['queued', 'running', 'succeeded']);
    expect(await row(waiting).locator('td.queue').innerText()).toBe('—');
    expect((await apiClient(stack.apiUrl, apiKey).get(first)).body.status).toBe('canceled');
  });

  test('a failure shows its typed error, notifications arrive for every ended job, and one can be marked read', async () => {
    const failed = await submitThroughPage('a forbidden scene [fail:permanent]');
    await row(failed, 'failed').waitFor(WAIT);
    expect(await row(failed).locator('td.result code').innerText()).toMatch(/^[a-z_]+$/);

    const ended = ['Your video is ready', 'Generation canceled', 'Your video is ready', 'Your video could not be generated'];
    await page.locator('#notifications li').nth(ended.length - 1).waitFor(WAIT);
    const titles = await page.locator('#notifications li strong').allInnerTexts();
    expect([...titles].sort()).toEqual([...ended].sort());
    await page.getByText(`${ended.length} unread`).waitFor(WAIT);

    const newest = page.locator('#notifications li').first();
    const notificationId = await newest.getAttribute('data-id');
    await newest.getByRole('button', { name: /^Mark .* read$/ }).click();
    await page.getByText(`${ended.length - 1} unread`).waitFor(WAIT);
    const inbox = (await apiClient(stack.apiUrl, apiKey).call('GET', '/v1/notifications')).body.data;
    expect(inbox.find((n: { id: string }) => n.id === notificationId)).toMatchObject({ read: true });

    mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
  });

  test("a reload keeps the key and shows today's generations as they are", async () => {
    await page.reload();
    await page.locator('#connection[data-state="live"]').waitFor(WAIT);
    expect(await page.getByRole('textbox', { name: 'API key' }).inputValue()).toBe(apiKey);
    await page.locator('#generations tbody tr').nth(4).waitFor(WAIT);
    const statuses = await page.locator('#generations tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-status')));
    // Newest first: the failure, the lighthouse, the second and first hanging jobs, the fox.
    expect(statuses).toEqual(['failed', 'succeeded', 'running', 'canceled', 'succeeded']);
    expect(pageErrors).toEqual([]);
  });

  test('the lane selector submits a batch job, and its row says so', async () => {
    const id = await submitThroughPage('a meadow at dawn, whenever a GPU is spare', 'batch');
    await row(id).locator('small.lane', { hasText: 'batch' }).waitFor(WAIT);
    await row(id).locator('a.video-link').waitFor(WAIT);
    expect((await apiClient(stack.apiUrl, apiKey).get(id)).body).toMatchObject({ priority: 'batch', status: 'succeeded' });
    expect(pageErrors).toEqual([]);
  });

  test('an image URL starts a job from an image, a refused one says why, and Remix on a succeeded job remixes it', async () => {
    await page.getByLabel('Start from image').fill(`${images.url}/page.html`);
    await page.getByLabel('Prompt').fill('a page that is not a picture');
    await page.getByRole('button', { name: 'Generate' }).click();
    await page.locator('#submit-message.error', { hasText: 'input_reference: its content type is text/html, not image/*' }).waitFor(WAIT);

    await page.getByLabel('Start from image').fill(`${images.url}/cat.png`);
    const fromImage = await submitThroughPage('a cat that starts to dance');
    await row(fromImage).locator('small.source', { hasText: `from image ${images.url}/cat.png` }).waitFor(WAIT);
    await row(fromImage).locator('a.video-link').waitFor(WAIT);
    expect(await page.getByLabel('Start from image').inputValue()).toBe('');

    await page.getByRole('button', { name: 'Remix “a cat that starts to dance”' }).click();
    await page.locator('#remix', { hasText: `Remixing “a cat that starts to dance” (${fromImage})` }).waitFor(WAIT);
    const remixed = await submitThroughPage('the same cat, now in the rain');
    await row(remixed).locator('small.source', { hasText: `remix of ${fromImage}` }).waitFor(WAIT);
    await row(remixed).locator('a.video-link').waitFor(WAIT);
    expect(await page.locator('#remix').isHidden()).toBe(true);
    const api = apiClient(stack.apiUrl, apiKey);
    expect((await api.get(fromImage)).body).toMatchObject({ input_reference: `${images.url}/cat.png`, remix_of: null, status: 'succeeded' });
    expect((await api.get(remixed)).body).toMatchObject({ input_reference: null, remix_of: fromImage, status: 'succeeded' });
    mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: artifactPath('status-page-inputs.png'), fullPage: true });
    expect(pageErrors).toEqual([]);
  });

  test("the API's other pages (the reference, the codec sign-in) load in the browser without an error: their icon is served", async () => {
    for (const pathname of ['/docs', '/codec/login']) {
      const res = await page.goto(`${stack.apiUrl}${pathname}`);
      expect(res?.status()).toBe(200);
      // The browser asks for /favicon.ico on a page that names no icon, once the page has loaded.
      await page.waitForLoadState('networkidle');
    }
    const icon = await fetch(`${stack.apiUrl}/favicon.ico`);
    expect([icon.status, icon.headers.get('content-type')]).toEqual([200, 'image/svg+xml']);
    expect(pageErrors).toEqual([]);
  });
});
