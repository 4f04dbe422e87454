import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { Sql } from '../../src/db/client';
import type { GenerationState } from '../../src/domain/generation';
import type { ReceivedWebhook } from '../../test/notification-helpers';

/**
 * What must hold once the service has converged after chaos, read from Postgres (projection, ledger, inbox, webhook
 * deliveries), from Temporal (each job's workflow and its result) and from the webhook receiver.
 */
export interface InvariantCounts {
  accepted: number;
  terminal: number;
  /** Accepted jobs without a terminal projection row or without a finished workflow. */
  lost: number;
  /** Notifications beyond the first, per job. */
  duplicate_notifications: number;
  /** Terminal jobs with no in-app notification. */
  missing_notifications: number;
  /** (job, event type) pairs delivered under more than one webhook-id. */
  multi_id_webhook_events: number;
  /** Jobs reserved more than once, settled more than once, or captured without succeeding. */
  double_charges: number;
  /** Terminal jobs whose reservation was never settled. */
  unsettled_charges: number;
  /** Users whose available + reserved + used differs from their grants, or who still have credits reserved. */
  unbalanced_accounts: number;
  /** Projection rows whose status, attempt, backend, backend job, video or error code differ from the workflow's result. */
  diverged_rows: number;
  /** A few of the disagreements, for the report. */
  diverged_examples: Array<{ id: string; row: Omit<Row, 'id' | 'status_rank'>; workflow: Partial<GenerationState> }>;
}

type Row = { id: string; status: string; status_rank: number; attempt: number; backend_job_id: string | null; backend: string | null; video_url: string | null; error_code: string | null };

/** Accepted jobs whose row is terminal (for the convergence wait). */
export async function countTerminal(sql: Sql, ids: string[]): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from generations where id = any(${ids}) and status_rank = 2`;
  return row.n;
}

export async function pendingDeliveries(sql: Sql, ids: string[]): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from webhook_deliveries where job_id = any(${ids}) and status = 'pending'`;
  return row.n;
}

/** Accepted jobs whose workflow has not completed (still running, or ended any other way). */
export async function unfinishedWorkflows(client: Client, ids: string[]): Promise<number> {
  let unfinished = 0;
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      for (let i = next++; i < ids.length; i = next++) {
        const status = await client.workflow
          .getHandle(ids[i])
          .describe()
          .then((d) => d.status.name, () => 'MISSING');
        if (status !== 'COMPLETED') unfinished++;
      }
    }),
  );
  return unfinished;
}

async function workflowResults(client: Client, ids: string[]): Promise<Map<string, GenerationState | 'missing' | 'open'>> {
  const results = new Map<string, GenerationState | 'missing' | 'open'>();
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      for (let i = next++; i < ids.length; i = next++) {
        const handle = client.workflow.getHandle(ids[i]);
        try {
          const { status } = await handle.describe();
          results.set(ids[i], status.name === 'COMPLETED' ? ((await handle.result()) as GenerationState) : 'open');
        } catch (err) {
          if (!(err instanceof WorkflowNotFoundError)) throw err;
          results.set(ids[i], 'missing');
        }
      }
    }),
  );
  return results;
}

export async function checkInvariants(sql: Sql, client: Client, ids: string[], userIds: string[], received: ReceivedWebhook[]): Promise<InvariantCounts> {
  const rows = await sql<Row[]>`
    select id, status, status_rank, attempt, backend_job_id, backend, video_url, error->>'code' as error_code from generations where id = any(${ids})`;
  const byId = new Map(rows.map((r) => [r.id, r]));
  const results = await workflowResults(client, ids);

  let lost = 0;
  let diverged = 0;
  const examples: InvariantCounts['diverged_examples'] = [];
  for (const id of ids) {
    const row = byId.get(id);
    const result = results.get(id);
    if (!row || row.status_rank !== 2 || typeof result !== 'object') {
      lost++;
      continue;
    }
    const same =
      row.status === result.status &&
      row.attempt === result.attempt &&
      row.backend_job_id === result.backendJobId &&
      row.backend === (result.backend ?? null) &&
      row.video_url === result.videoUrl &&
      row.error_code === (result.error?.code ?? null);
    if (!same) {
      diverged++;
      const { id: _id, status_rank: _rank, ...shown } = row;
      const { status, attempt, backendJobId, backend, videoUrl, error } = result;
      if (examples.length < 5) examples.push({ id, row: shown, workflow: { status, attempt, backendJobId, backend, videoUrl, error } });
    }
  }

  const [inbox] = await sql<{ duplicates: number; missing: number }[]>`
    select coalesce(sum(greatest(n - 1, 0)), 0)::int as duplicates, count(*) filter (where n = 0)::int as missing
    from (select g.id, count(n.id) as n from generations g left join notifications n on n.job_id = g.id
          where g.id = any(${ids}) and g.status_rank = 2 group by g.id) as per_job`;

  const multiIds = new Set<string>();
  const stored = await sql<{ job_id: string; event_type: string }[]>`
    select job_id, event_type from webhook_deliveries where job_id = any(${ids})
    group by job_id, event_type having count(distinct webhook_id) > 1`;
  for (const r of stored) multiIds.add(`${r.job_id} ${r.event_type}`);
  const seen = new Map<string, Set<string>>();
  for (const delivery of received) {
    const body = JSON.parse(delivery.raw) as { type: string; data: { id: string } };
    const key = `${body.data.id} ${body.type}`;
    seen.set(key, (seen.get(key) ?? new Set()).add(String(delivery.headers['webhook-id'])));
  }
  for (const [key, webhookIds] of seen) if (webhookIds.size > 1) multiIds.add(key);

  const [charges] = await sql<{ double: number; unsettled: number }[]>`
    select count(*) filter (where reserves > 1 or captures + releases > 1 or (captures > 0 and status <> 'succeeded'))::int as double,
           count(*) filter (where status_rank = 2 and reserves = 1 and captures + releases = 0)::int as unsettled
    from (select g.id, g.status, g.status_rank,
                 count(*) filter (where l.kind = 'reserve') as reserves,
                 count(*) filter (where l.kind = 'capture') as captures,
                 count(*) filter (where l.kind = 'release') as releases
          from generations g left join credit_ledger l on l.job_id = g.id
          where g.id = any(${ids}) group by g.id, g.status, g.status_rank) as per_job`;
  const [accounts] = await sql<{ n: number }[]>`
    select count(*)::int as n from credit_accounts a
    where a.user_id = any(${userIds})
      and (a.reserved <> 0 or a.available + a.reserved + a.used <> (select coalesce(sum(amount), 0) from credit_ledger l where l.user_id = a.user_id and l.kind = 'grant'))`;

  return {
    accepted: ids.length,
    terminal: rows.filter((r) => r.status_rank === 2).length,
    lost,
    duplicate_notifications: inbox.duplicates,
    missing_notifications: inbox.missing,
    multi_id_webhook_events: multiIds.size,
    double_charges: charges.double,
    unsettled_charges: charges.unsettled,
    unbalanced_accounts: accounts.n,
    diverged_rows: diverged,
    diverged_examples: examples,
  };
}

/** What became of the endings queued for mail, read from Postgres, and what Mailpit received, read through its API. */
export interface MailCounts {
  /** Messages that arrived, verification mails aside. */
  mails: number;
  /** Endings that appeared in a mail. */
  endings_mailed: number;
  /** Endings that appeared in more than one mail: at most once means none. */
  endings_mailed_twice: number;
  /** Endings queued for mail, by status (pending, sending, sent, skipped, unknown). */
  queued: Record<string, number>;
  /** Endings recorded as sent that never arrived. */
  sent_not_arrived: number;
}

/**
 * Endings of these jobs still waiting for their digest, or claimed by a send that has not recorded its outcome (one
 * whose worker died is settled by the send's retry): for the convergence wait.
 */
export async function pendingMail(sql: Sql, ids: string[]): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from email_notifications where job_id = any(${ids}) and status in ('pending', 'sending')`;
  return row.n;
}

export async function checkMail(sql: Sql, ids: string[], mailpitUrl: string): Promise<MailCounts> {
  const mailedIn = new Map<string, number>();
  let mails = 0;
  for (let start = 0; ; start += 200) {
    const page = (await (await fetch(`${mailpitUrl}/api/v1/messages?start=${start}&limit=200`)).json()) as { messages: Array<{ ID: string; Subject: string }>; total: number };
    for (const message of page.messages) {
      if (/Confirm your address/.test(message.Subject)) continue;
      mails++;
      const { Text } = (await (await fetch(`${mailpitUrl}/api/v1/message/${message.ID}`)).json()) as { Text: string };
      // Each ending is a line "- [status] "prompt" (job id)"; a job ends once, so its id names its ending.
      for (const [, id] of Text.matchAll(/\((gen_[\w-]+)\)/g)) mailedIn.set(id, (mailedIn.get(id) ?? 0) + 1);
    }
    if (page.messages.length < 200 || start + 200 >= page.total) break;
  }
  const queued = await sql<{ status: string; n: number }[]>`
    select status, count(*)::int as n from email_notifications where job_id = any(${ids}) group by status`;
  const sent = await sql<{ job_id: string }[]>`select job_id from email_notifications where job_id = any(${ids}) and status = 'sent'`;
  return {
    mails,
    endings_mailed: mailedIn.size,
    endings_mailed_twice: [...mailedIn.values()].filter((n) => n > 1).length,
    queued: Object.fromEntries(queued.map((q) => [q.status, q.n])),
    sent_not_arrived: sent.filter((s) => !mailedIn.has(s.job_id)).length,
  };
}
