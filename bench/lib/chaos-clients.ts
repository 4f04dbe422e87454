import { mailTo, readMail } from '../../test/mailpit';

/**
 * Clients that keep the API's contract under chaos: every submit carries an Idempotency-Key, and a 5xx, a 429 or a
 * connection error is retried with the same key and body (after Retry-After, capped) until a definite answer.
 */
export interface ChaosUser {
  userId: string;
  apiKey: string;
  tier: string;
}

export interface Submission {
  index: number;
  key: string;
  user: ChaosUser;
  /** The job id of the first 202. */
  id?: string;
  outcome: 'accepted' | 'refused' | 'gave_up';
  /** 202 answers with another job id than the first (must never happen). */
  conflictingIds: number;
  attempts: number;
  problem?: string;
}

export interface ClientStats {
  requests: number;
  serverErrors: number;
  /** When each 5xx answer's request was sent and answered (epoch ms): set against the cluster's outages. */
  serverErrorSpans: Array<{ sentAt: number; answeredAt: number }>;
  connectionErrors: number;
  throttled: number;
  replays: number;
}

export const newClientStats = (): ClientStats => ({ requests: 0, serverErrors: 0, serverErrorSpans: [], connectionErrors: 0, throttled: 0, replays: 0 });

async function admin(apiUrl: string, adminKey: string, body: unknown) {
  const res = await fetch(`${apiUrl}/admin/users`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (res.status !== 201) throw new Error(`create user: ${res.status} ${await res.text()}`);
  return (await res.json()) as { user: { id: string }; api_key: string };
}

/** Users of mixed tiers, each with a webhook endpoint pointing at `webhookUrl`. */
export async function createUsers(apiUrl: string, adminKey: string, count: number, webhookUrl: string, mailpitUrl: string): Promise<ChaosUser[]> {
  const tiers = ['free', 'pro', 'pro', 'enterprise'];
  const users: ChaosUser[] = [];
  for (let i = 0; i < count; i++) {
    const tier = tiers[i % tiers.length];
    const created = await admin(apiUrl, adminKey, { name: `chaos-${i}`, tier });
    const endpoint = await fetch(`${apiUrl}/v1/webhook-endpoints`, {
      method: 'POST',
      headers: { authorization: `Bearer ${created.api_key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ url: webhookUrl, description: 'chaos receiver' }),
    });
    if (endpoint.status !== 201) throw new Error(`create webhook endpoint: ${endpoint.status} ${await endpoint.text()}`);
    await verifyEmail(apiUrl, created.api_key, chaosEmail(i), mailpitUrl);
    users.push({ userId: created.user.id, apiKey: created.api_key, tier });
  }
  return users;
}

/** Where user `i`'s endings are mailed. */
export const chaosEmail = (i: number) => `chaos-${i}@chaos.test`;

/** Sets the user's address with a short digest window and opens the verification link Mailpit received. */
async function verifyEmail(apiUrl: string, apiKey: string, email: string, mailpitUrl: string): Promise<void> {
  const put = await fetch(`${apiUrl}/v1/notification-settings`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ email, digest_seconds: 2 }),
  });
  if (put.status !== 200) throw new Error(`notification settings: ${put.status} ${await put.text()}`);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const [mail] = await mailTo(email, mailpitUrl);
    const link = mail && /(http:\/\/\S+\/v1\/notification-settings\/verify\?token=\S+)/.exec((await readMail(mail.ID, mailpitUrl)).Text)?.[1];
    if (link) {
      const opened = await fetch(link);
      if (opened.status !== 200) throw new Error(`verification link: ${opened.status} ${await opened.text()}`);
      return;
    }
    if (Date.now() > deadline) throw new Error(`no verification mail to ${email} within 30 s`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** One job's submit, retried per the contract until accepted, refused (a 4xx other than 429), or `deadline`. */
export async function submitUntilAnswered(
  apiUrl: string,
  submission: Pick<Submission, 'index' | 'key' | 'user'>,
  body: unknown,
  { deadline, stats }: { deadline: number; stats: ClientStats },
): Promise<Submission> {
  const result: Submission = { ...submission, outcome: 'gave_up', conflictingIds: 0, attempts: 0 };
  for (let retry = 0; Date.now() < deadline; retry++) {
    result.attempts++;
    stats.requests++;
    let waitMs = Math.min(2_000, 100 * 2 ** retry);
    const sentAt = Date.now();
    try {
      const res = await fetch(`${apiUrl}/v1/generations`, {
        method: 'POST',
        headers: { authorization: `Bearer ${submission.user.apiKey}`, 'content-type': 'application/json', 'idempotency-key': submission.key },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(15_000),
      });
      const text = await res.text();
      if (res.status === 202) {
        const id = (JSON.parse(text) as { id: string }).id;
        if (res.headers.get('idempotent-replayed') === 'true') stats.replays++;
        if (result.id && result.id !== id) result.conflictingIds++;
        result.id ??= id;
        result.outcome = 'accepted';
        return result;
      }
      result.problem = `${res.status} ${text.slice(0, 200)}`;
      if (res.status === 429) stats.throttled++;
      else if (res.status >= 500) {
        stats.serverErrors++;
        stats.serverErrorSpans.push({ sentAt, answeredAt: Date.now() });
      }
      else {
        result.outcome = 'refused';
        return result;
      }
      const retryAfter = Number(res.headers.get('retry-after'));
      if (Number.isFinite(retryAfter) && retryAfter > 0) waitMs = Math.min(2_000, retryAfter * 1000);
    } catch (err) {
      stats.connectionErrors++;
      result.problem = err instanceof Error ? err.message : String(err);
    }
    await new Promise((r) => setTimeout(r, waitMs));
  }
  return result;
}
