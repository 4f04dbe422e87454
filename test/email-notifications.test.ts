import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { emailDigestWorkflowId } from '../src/contracts/email-digest';
import { endedEventType } from '../src/notifications/events';
import { queueEndingForEmail } from '../src/notifications/email-queue';
import { abandonEarlierClaims, claimPendingEndings, queueEndingEmail } from '../src/notifications/email-store';
import { apiClient, eventually, settled, startStack, type Stack } from './harness';
import { artifactPath, launchChromium } from './chromium';
import { mailHeaders, mailpitUrl, mailTo, readMail } from './mailpit';

/**
 * Email notifications through the whole stack: the API's settings and links, the notify step, the per-user digest
 * workflow on the run's Temporal, nodemailer to the run's real Mailpit, read back through Mailpit's API.
 */
let stack: Stack;

beforeAll(async () => {
  stack = await startStack();
});

afterAll(async () => {
  await stack?.close();
});

const newAddress = () => `user-${randomBytes(5).toString('hex')}@mail.test`;

/** A user with a verified address: PUT the settings, open the link mailed to it with a plain GET (no key). */
async function verifiedUser(settings: { on?: string[]; digest_seconds: number }) {
  const { userId, apiKey } = await stack.createUser('pro');
  const api = apiClient(stack.apiUrl, apiKey);
  const email = newAddress();
  const put = await api.call('PUT', '/v1/notification-settings', { email, ...settings });
  expect(put.status).toBe(200);
  expect(put.body).toMatchObject({ email, email_verified: false });
  const [mail] = await eventually(async () => ((await mailTo(email)).length > 0 ? mailTo(email) : undefined), { what: `the verification mail to ${email}` });
  const link = /(http:\/\/\S+\/v1\/notification-settings\/verify\?token=\S+)/.exec((await readMail(mail.ID)).Text)?.[1];
  expect(link).toBeDefined();
  return { userId, api, email, link: link! };
}

async function mailsListing(email: string, count: number) {
  return eventually(
    async () => {
      const mails = (await mailTo(email)).filter((m) => !/Confirm your address/.test(m.Subject));
      return mails.length >= count ? mails : undefined;
    },
    { timeoutMs: 60_000, what: `${count} mail(s) to ${email}` },
  );
}

/**
 * Opens a mail in Mailpit's web UI as a person would, in headless Chromium: its subject in the page, a job id in the
 * rendered body; the page is kept in test/artifacts/mailpit-digest.png.
 */
async function lookInMailpit(id: string, subject: string, bodyText: string) {
  const browser = await launchChromium();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${mailpitUrl()}/view/${id}`);
    await page.getByText(subject).first().waitFor({ timeout: 30_000 });
    await page.frameLocator('iframe').first().getByText(bodyText).first().waitFor({ timeout: 30_000 });
    const screenshot = artifactPath('mailpit-digest.png');
    mkdirSync(path.dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot });
  } finally {
    await browser.close();
  }
}

const endingMails = async (email: string) => (await mailTo(email)).filter((m) => !/Confirm your address/.test(m.Subject));

describe('email notifications', () => {
  test('an address is verified by the link mailed to it, with a plain GET, once; nothing is mailed before', async () => {
    const { api, email, link } = await verifiedUser({ digest_seconds: 0 });
    // Before verification, an ending is not mailed.
    const early = await api.submit({ prompt: 'before the address is verified' });
    await api.waitForTerminal(early.body.id);

    const opened = await fetch(link);
    expect(opened.status).toBe(200);
    expect(await opened.json()).toMatchObject({ email, email_verified: true });
    expect((await api.call('GET', '/v1/notification-settings')).body).toEqual({
      object: 'notification_settings',
      email,
      email_verified: true,
      on: ['succeeded', 'failed', 'expired', 'canceled'],
      digest_seconds: 0,
    });
    // Single use.
    const again = await fetch(link);
    expect(again.status).toBe(404);
    expect(((await again.json()) as { error: { code: string } }).error.code).toBe('invalid_link');
    // A browser gets a page.
    expect((await fetch(link.replace(/token=.*/, 'token=not-a-token-at-all'), { headers: { accept: 'text/html' } })).status).toBe(404);
    expect(await settled(() => endingMails(email), 1_000)).toEqual([]);

    // Bad input is a 400 with the error shape.
    for (const body of [{ email: 'not an address' }, { email, on: ['finished'] }, { email, digest_seconds: 3601 }, { email, digest_seconds: -1 }, { email, on: ['failed', 'failed'] }]) {
      const res = await api.call('PUT', '/v1/notification-settings', body);
      expect({ body, status: res.status, code: res.body?.error?.code }).toEqual({ body, status: 400, code: 'invalid_request' });
    }
  });

  test('several endings within the window are one mail listing them all, mailed once', async () => {
    const { userId, api, email, link } = await verifiedUser({ digest_seconds: 4 });
    expect((await fetch(link)).status).toBe(200);
    const jobs = await Promise.all(Array.from({ length: 6 }, (_, i) => api.submit({ prompt: `digest job ${i}` })));
    expect(jobs.map((j) => (j.status === 202 ? 202 : j.text))).toEqual(Array(6).fill(202));
    const ids = jobs.map((j) => j.body.id as string);
    await Promise.all(ids.map((id) => api.waitForTerminal(id)));

    const [mail] = await mailsListing(email, 1);
    const body = await readMail(mail.ID);
    for (const id of ids) expect(body.Text).toContain(id);
    expect(mail.Subject).toBe('6 of your videos ended: 6 succeeded');
    await lookInMailpit(mail.ID, '6 of your videos ended', ids[0]);

    // A retried notify step (the same endings queued again) mails nothing more, and neither does the settle window.
    for (const id of ids) {
      await queueEndingForEmail({ sql: stack.database.sql, client: stack.client, taskQueue: stack.config.worker.generationTaskQueue }, { userId, jobId: id, event: endedEventType('succeeded'), status: 'succeeded', endedAt: new Date().toISOString() });
    }
    expect(await settled(() => endingMails(email), 6_000)).toHaveLength(1);
    const rows = await stack.database.sql<{ status: string; n: number }[]>`
      select status, count(*)::int as n from email_notifications where user_id = ${userId} group by status`;
    expect(rows).toEqual([{ status: 'sent', n: 6 }]);
    // One workflow per user, with a short history.
    const history = await stack.client.workflow.getHandle(emailDigestWorkflowId(userId)).fetchHistory();
    expect(history.events!.length).toBeLessThan(40);
  });

  test('a batch of 100 endings is one mail', async () => {
    const { userId, email, link } = await verifiedUser({ digest_seconds: 3 });
    expect((await fetch(link)).status).toBe(200);
    // 100 endings queued as the notify step queues them, four at a time (as four workers would).
    const ids = Array.from({ length: 100 }, (_, i) => `gen_batch_${randomBytes(4).toString('hex')}_${i}`);
    const queue = { sql: stack.database.sql, client: stack.client, taskQueue: stack.config.worker.generationTaskQueue };
    const woke: boolean[] = [];
    for (let i = 0; i < ids.length; i += 4) {
      woke.push(...(await Promise.all(ids.slice(i, i + 4).map((jobId) => queueEndingForEmail(queue, { userId, jobId, event: endedEventType('failed'), status: 'failed', endedAt: new Date().toISOString() })))));
    }
    // Only the first ending since the last mail signals the workflow: one signal for the whole window.
    expect(woke.filter(Boolean)).toHaveLength(1);
    const [mail] = await mailsListing(email, 1);
    expect(mail.Subject).toBe('100 of your videos ended: 100 failed');
    const text = (await readMail(mail.ID)).Text;
    for (const id of ids) expect(text).toContain(id);
    expect(await settled(() => endingMails(email), 4_000)).toHaveLength(1);
  });

  test('only the endings in `on` are mailed', async () => {
    const { userId, api, email, link } = await verifiedUser({ on: ['failed'], digest_seconds: 1 });
    expect((await fetch(link)).status).toBe(200);
    const ok = await api.submit({ prompt: 'this one succeeds' });
    const bad = await api.submit({ prompt: 'this one fails [fail:permanent]' });
    await api.waitForTerminal(ok.body.id);
    expect((await api.waitForTerminal(bad.body.id)).status).toBe('failed');

    const [mail] = await mailsListing(email, 1);
    const text = (await readMail(mail.ID)).Text;
    expect(text).toContain(bad.body.id);
    expect(text).not.toContain(ok.body.id);
    expect(await settled(() => endingMails(email), 2_500)).toHaveLength(1);
    const rows = await stack.database.sql`select job_id from email_notifications where user_id = ${userId}`;
    expect(rows.map((r) => r.job_id)).toEqual([bad.body.id]);
  });

  test('the unsubscribe link in every mail works without a key, and stops the mail', async () => {
    const { api, email, link } = await verifiedUser({ digest_seconds: 0 });
    expect((await fetch(link)).status).toBe(200);
    const first = await api.submit({ prompt: 'one before unsubscribing' });
    await api.waitForTerminal(first.body.id);
    const [mail] = await mailsListing(email, 1);
    expect(mail.Subject).toMatch(/^Your video succeeded/);

    const headers = await mailHeaders(mail.ID);
    const listUnsubscribe = /<([^>]+)>/.exec(headers['List-Unsubscribe']?.[0] ?? '')?.[1];
    expect(listUnsubscribe).toBeDefined();
    expect(headers['List-Unsubscribe-Post']).toEqual(['List-Unsubscribe=One-Click']);
    const inText = /(http:\/\/\S+\/v1\/notification-settings\/unsubscribe\?token=\S+)/.exec((await readMail(mail.ID)).Text)?.[1];
    expect(inText).toBe(listUnsubscribe);

    const res = await fetch(inText!, { headers: { accept: 'text/html' } });
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('gets no more mail');
    expect((await api.call('GET', '/v1/notification-settings')).body).toMatchObject({ email, email_verified: true, on: [] });
    // The one-click POST a mail client sends works too.
    expect((await fetch(inText!, { method: 'POST', body: 'List-Unsubscribe=One-Click', headers: { 'content-type': 'application/x-www-form-urlencoded' } })).status).toBe(200);

    const after = await api.submit({ prompt: 'one after unsubscribing' });
    await api.waitForTerminal(after.body.id);
    expect(await settled(() => endingMails(email), 2_000)).toHaveLength(1);
  });

  test('what a send attempt claimed and never settled (its worker died) is recorded unknown by the retry, not mailed again', async () => {
    const { userId, email, link } = await verifiedUser({ digest_seconds: 3_600 });
    expect((await fetch(link)).status).toBe(200);
    const { sql } = stack.database;
    // Ended after the address was verified (a millisecond clock may read a little behind Postgres's).
    const ending = (jobId: string) => ({ userId, jobId, event: endedEventType('succeeded'), status: 'succeeded', endedAt: new Date(Date.now() + 1_000).toISOString() });
    // Queued without waking the digest workflow: this test plays the send's attempts itself. Attempt 1 of activity 1
    // claims two endings; another send (activity 10 of the run) claims the third, queued after.
    for (const jobId of ['gen_claimed_1', 'gen_claimed_2']) await queueEndingEmail(sql, ending(jobId));
    const { digest } = await claimPendingEndings(sql, userId, 'run-a:1:1', 10);
    expect(digest?.endings.map((e) => e.jobId).sort()).toEqual(['gen_claimed_1', 'gen_claimed_2']);
    await queueEndingEmail(sql, ending('gen_other_send'));
    expect((await claimPendingEndings(sql, userId, 'run-a:10:1', 10)).digest?.endings.map((e) => e.jobId)).toEqual(['gen_other_send']);

    // Attempt 2 of activity 1 gives up what attempt 1 claimed, and leaves activity 10's claim alone.
    expect(await abandonEarlierClaims(sql, 'run-a:1:')).toBe(2);
    const statuses = await sql<{ job_id: string; status: string }[]>`select job_id, status from email_notifications where user_id = ${userId} order by job_id`;
    expect(statuses).toEqual([
      { job_id: 'gen_claimed_1', status: 'unknown' },
      { job_id: 'gen_claimed_2', status: 'unknown' },
      { job_id: 'gen_other_send', status: 'sending' },
    ]);
    // The retry's own claim finds nothing of theirs to mail.
    expect((await claimPendingEndings(sql, userId, 'run-a:1:2', 10)).digest).toBeUndefined();
    expect(await endingMails(email)).toHaveLength(0);
  });
});
