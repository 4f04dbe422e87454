import { createHash, randomBytes } from 'node:crypto';
import type { Sql } from '../db/client';
import type { TransactionSql } from 'postgres';

/**
 * Email notifications in Postgres (drizzle/0020): a user's settings with the verification and unsubscribe tokens, and
 * every ending queued for mail. An ending is mailed at most once: a digest claims its rows (`pending` → `sending`) in a
 * transaction that commits before the mail is handed to SMTP, so a crash after the claim can lose a mail but never send
 * one twice (docs/decisions.md, "Email notifications: at most once").
 */

/** The endings a user may ask to be mailed about (`expired` is accepted before any job can end so). */
export const EMAIL_ON_STATUSES = ['succeeded', 'failed', 'expired', 'canceled'] as const;
export type EmailOnStatus = (typeof EMAIL_ON_STATUSES)[number];
export const DIGEST_SECONDS_MAX = 3_600;
export const DEFAULT_DIGEST_SECONDS = 300;
/** A verification link works this long, once. */
export const VERIFY_TOKEN_TTL_MS = 24 * 3_600_000;
/** At most one verification mail per user this often (a PUT meanwhile saves the settings and sends none). */
export const VERIFY_RESEND_MS = 60_000;
/** Endings one mail lists at most; more go in the next mail, sent at once. */
export const MAX_ENDINGS_PER_MAIL = 500;

export interface NotificationSettings {
  email: string | null;
  emailVerified: boolean;
  on: EmailOnStatus[];
  digestSeconds: number;
}

interface SettingsRow {
  email: string | null;
  verified: boolean;
  on_statuses: string[];
  digest_seconds: number;
}

const toSettings = (row: SettingsRow): NotificationSettings => ({
  email: row.email,
  emailVerified: row.verified,
  on: EMAIL_ON_STATUSES.filter((s) => row.on_statuses.includes(s)),
  digestSeconds: row.digest_seconds,
});

const DEFAULTS: NotificationSettings = { email: null, emailVerified: false, on: [...EMAIL_ON_STATUSES], digestSeconds: DEFAULT_DIGEST_SECONDS };

export const hashToken = (token: string) => createHash('sha256').update(token).digest('hex');
const newToken = () => randomBytes(32).toString('base64url');

export async function getNotificationSettings(sql: Sql, userId: string): Promise<NotificationSettings> {
  const [row] = await sql<SettingsRow[]>`
    select email, email_verified_at is not null as verified, on_statuses, digest_seconds
    from notification_settings where user_id = ${userId}`;
  return row ? toSettings(row) : { ...DEFAULTS };
}

export interface PutSettingsResult {
  settings: NotificationSettings;
  /** A verification link's token to mail to `email`, when this change calls for one. */
  verification?: { email: string; token: string };
}

/**
 * Replaces a user's settings. A new address is unverified and gets a verification token (and a new unsubscribe token);
 * the same unverified address gets a new one when the last was sent at least VERIFY_RESEND_MS ago.
 */
export async function putNotificationSettings(
  sql: Sql,
  userId: string,
  next: { email: string | null; on: EmailOnStatus[]; digestSeconds: number },
): Promise<PutSettingsResult> {
  const token = newToken();
  return sql.begin(async (tx) => {
    const [before] = await tx<Array<{ email: string | null; verified: boolean; resend_due: boolean }>>`
      select email, email_verified_at is not null as verified,
             verify_sent_at is null or verify_sent_at < now() - make_interval(secs => ${VERIFY_RESEND_MS / 1000}) as resend_due
      from notification_settings where user_id = ${userId} for update`;
    const changed = (before?.email ?? null) !== next.email;
    const sendVerification = next.email !== null && (changed || (!before!.verified && before!.resend_due));
    const [row] = await tx<SettingsRow[]>`
      insert into notification_settings as s (user_id, email, on_statuses, digest_seconds, unsubscribe_token,
        verify_token_hash, verify_expires_at, verify_sent_at)
      values (${userId}, ${next.email}, ${next.on}, ${next.digestSeconds}, ${newToken()},
        ${sendVerification ? hashToken(token) : null},
        ${sendVerification ? sql`now() + make_interval(secs => ${VERIFY_TOKEN_TTL_MS / 1000})` : null},
        ${sendVerification ? sql`now()` : null})
      on conflict (user_id) do update set
        email = excluded.email,
        on_statuses = excluded.on_statuses,
        digest_seconds = excluded.digest_seconds,
        email_verified_at = case when ${changed} then null else s.email_verified_at end,
        unsubscribe_token = case when ${changed} then excluded.unsubscribe_token else s.unsubscribe_token end,
        verify_token_hash = case when ${sendVerification} then excluded.verify_token_hash when ${changed} then null else s.verify_token_hash end,
        verify_expires_at = case when ${sendVerification} then excluded.verify_expires_at when ${changed} then null else s.verify_expires_at end,
        verify_sent_at = case when ${sendVerification} then excluded.verify_sent_at else s.verify_sent_at end,
        updated_at = now()
      returning email, email_verified_at is not null as verified, on_statuses, digest_seconds`;
    return { settings: toSettings(row), verification: sendVerification ? { email: next.email!, token } : undefined };
  });
}

/** A verification link's GET: marks the address verified when the token is current; single use. */
export async function verifyEmail(sql: Sql, token: string): Promise<{ email: string } | undefined> {
  const [row] = await sql<Array<{ email: string }>>`
    update notification_settings set email_verified_at = now(), verify_token_hash = null, verify_expires_at = null, updated_at = now()
    where verify_token_hash = ${hashToken(token)} and verify_expires_at > now() and email is not null
    returning email`;
  return row;
}

/** An unsubscribe link's GET (or one-click POST): no more mail of any ending. */
export async function unsubscribe(sql: Sql, token: string): Promise<{ email: string | null } | undefined> {
  const [row] = await sql<Array<{ email: string | null }>>`
    update notification_settings set on_statuses = '{}', updated_at = now()
    where unsubscribe_token = ${token}
    returning email`;
  return row;
}

/**
 * Queues one ending for mail when its user asked for it (an address verified before the job ended, the ending's status
 * in `on`: an ending from before the verification is not mailed, however late its notify step runs). Returns the
 * user's digest window when this call must wake the digest workflow: for the first ending since the last digest claimed,
 * and again for a retry of that same ending's notify step (its first signal may not have been sent). Keyed by
 * (user, job, event): queued once however often the notify step runs.
 */
export async function queueEndingEmail(
  sql: Sql,
  { userId, jobId, event, status, endedAt }: { userId: string; jobId: string; event: string; status: string; endedAt: string },
): Promise<{ digestSeconds: number } | undefined> {
  const wants = (q: Sql | TransactionSql) =>
    q`user_id = ${userId} and email is not null and email_verified_at <= ${endedAt}::timestamptz and ${status} = any(on_statuses)`;
  // Every job's ending asks, and most users have no verified address for it: one statement says so, without the
  // transaction (whose locking read would find no row either).
  const [wanted] = await sql`select 1 from notification_settings where ${wants(sql)}`;
  if (!wanted) return undefined;
  return sql.begin(async (tx) => {
    const [settings] = await tx<Array<{ digest_seconds: number; due: boolean; wake_job: string | null }>>`
      select digest_seconds, digest_due_at is not null as due, digest_wake_job as wake_job from notification_settings
      where ${wants(tx)}
      for update`;
    if (!settings) return undefined;
    await tx`insert into email_notifications (user_id, job_id, event) values (${userId}, ${jobId}, ${event}) on conflict do nothing`;
    if (settings.due && settings.wake_job !== jobId) return undefined;
    if (!settings.due) await tx`update notification_settings set digest_due_at = now(), digest_wake_job = ${jobId} where user_id = ${userId}`;
    return { digestSeconds: settings.digest_seconds };
  });
}

export interface ClaimedEnding {
  jobId: string;
  event: string;
  status: string;
  prompt: string;
  videoUrl: string | null;
  errorMessage: string | null;
  endedAt: string | null;
}

export interface ClaimedDigest {
  email: string;
  unsubscribeToken: string;
  endings: ClaimedEnding[];
}

/**
 * Claims up to `limit` of the user's pending endings for one mail, in one transaction that commits before the mail is
 * sent: they become `sending` under `claim`. Endings the user no longer wants (unsubscribed, address changed or gone,
 * status taken out of `on`) become `skipped`. Clears the digest's due mark, so the next ending queued wakes the
 * workflow again. `more`: pending endings were left for another mail.
 */
export async function claimPendingEndings(sql: Sql, userId: string, claim: string, limit: number): Promise<{ digest?: ClaimedDigest; more: boolean }> {
  return sql.begin(async (tx) => {
    const [settings] = await tx<Array<{ email: string | null; verified: boolean; on_statuses: string[]; unsubscribe_token: string }>>`
      select email, email_verified_at is not null as verified, on_statuses, unsubscribe_token
      from notification_settings where user_id = ${userId} for update`;
    if (settings) await tx`update notification_settings set digest_due_at = null, digest_wake_job = null where user_id = ${userId}`;
    const wanted = settings?.email && settings.verified ? settings.on_statuses : [];
    await tx`
      update email_notifications set status = 'skipped'
      where user_id = ${userId} and status = 'pending' and not (substr(event, length('generation.') + 1) = any(${wanted}::text[]))`;
    if (!settings?.email || wanted.length === 0) return { more: false };
    const claimed = await tx<Array<{ job_id: string; event: string }>>`
      update email_notifications e set status = 'sending', claim = ${claim}, email = ${settings.email}
      from (select job_id, event from email_notifications where user_id = ${userId} and status = 'pending'
            order by created_at limit ${limit + 1}) picked
      where e.user_id = ${userId} and e.job_id = picked.job_id and e.event = picked.event
      returning e.job_id, e.event`;
    // limit + 1 were picked to learn whether more wait; the extra one goes back to pending.
    let more = false;
    if (claimed.length > limit) {
      more = true;
      const back = claimed.pop()!;
      await tx`update email_notifications set status = 'pending', claim = null, email = null
               where user_id = ${userId} and job_id = ${back.job_id} and event = ${back.event}`;
    }
    if (claimed.length === 0) return { more: false };
    const rows = await tx<Array<{ id: string; status: string; prompt: string; video_url: string | null; error: { message?: string } | null; completed_at: string | null }>>`
      select id, status, prompt, video_url, error, completed_at::text from generations where id = any(${claimed.map((c) => c.job_id)}::text[])`;
    const byId = new Map(rows.map((r) => [r.id, r]));
    const endings = claimed.map(({ job_id, event }): ClaimedEnding => {
      const row = byId.get(job_id);
      return {
        jobId: job_id,
        event,
        status: event.slice('generation.'.length),
        prompt: row?.prompt ?? '',
        videoUrl: row?.video_url ?? null,
        errorMessage: row?.error?.message ?? null,
        endedAt: row?.completed_at ?? null,
      };
    });
    endings.sort((a, b) => (a.endedAt ?? '').localeCompare(b.endedAt ?? '') || a.jobId.localeCompare(b.jobId));
    return { digest: { email: settings.email, unsubscribeToken: settings.unsubscribe_token, endings }, more };
  });
}

/** The claimed mail was accepted by the SMTP server. */
export async function markClaimSent(sql: Sql, claim: string): Promise<void> {
  await sql`update email_notifications set status = 'sent', sent_at = now() where claim = ${claim} and status = 'sending'`;
}

/** The SMTP server refused the mail (or could not be reached): nothing was sent, the endings wait for the next try. */
export async function releaseClaim(sql: Sql, claim: string): Promise<void> {
  await sql`update email_notifications set status = 'pending', claim = null, email = null where claim = ${claim} and status = 'sending'`;
}

/** SMTP broke off when the mail may have been accepted: never sent again (at most once). */
export async function markClaimUnknown(sql: Sql, claim: string): Promise<void> {
  await sql`update email_notifications set status = 'unknown' where claim = ${claim} and status = 'sending'`;
}

/**
 * An earlier attempt of the same digest send (its claims start with `prefix`) ended without saying how its mail went
 * (its worker died, or it timed out): what it claimed may have been mailed, so it is never sent again (at most once)
 * and is recorded as `unknown` rather than left `sending`.
 */
export async function abandonEarlierClaims(sql: Sql, prefix: string): Promise<number> {
  const rows = await sql`update email_notifications set status = 'unknown' where status = 'sending' and starts_with(claim, ${prefix}) returning 1`;
  return rows.length;
}

/** The verification mail could not be sent: the next PUT of the settings sends one at once. */
export async function verificationNotSent(sql: Sql, userId: string): Promise<void> {
  await sql`update notification_settings set verify_sent_at = null where user_id = ${userId}`;
}
