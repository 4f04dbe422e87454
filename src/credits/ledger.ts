import { and, eq, inArray, sql } from 'drizzle-orm';
import type { Db, Sql } from '../db/client';
import { creditAccounts, creditLedger } from '../db/schema';
import { reservationKey, settlementKey, SETTLEMENT_KEY_SUFFIX } from '../db/ledger-keys';

/** A transaction or the database itself: every ledger movement runs inside the caller's transaction when given one. */
type Tx = Parameters<Parameters<Db['transaction']>[0]>[0] | Db;

export class InsufficientCreditsError extends Error {
  constructor(readonly needed: number, readonly available: number) {
    super(`this generation costs ${needed} credits; ${available} available`);
    this.name = 'InsufficientCreditsError';
  }
}

/** How a job's reservation and settlement are keyed is defined beside the schema, for retention too (src/db/ledger-keys.ts). */
export { reservationKey };

/** Adds credits once per `grantKey`. */
export async function grantCredits(tx: Tx, userId: string, amount: number, grantKey: string): Promise<void> {
  const [entry] = await tx
    .insert(creditLedger)
    .values({ userId, kind: 'grant', amount, entryKey: grantKey })
    .onConflictDoNothing()
    .returning({ id: creditLedger.id });
  if (!entry) return;
  await tx
    .insert(creditAccounts)
    .values({ userId, available: amount })
    .onConflictDoUpdate({ target: creditAccounts.userId, set: { available: sql`${creditAccounts.available} + ${amount}`, updatedAt: sql`now()` } });
}

/**
 * Moves `amount` from available to reserved for a job, once (vg_reserve_credits). Throws InsufficientCreditsError when it
 * cannot be paid for, and then writes nothing.
 */
export async function reserveCredits(tx: Tx, userId: string, jobId: string, amount: number, run?: string): Promise<void> {
  const [reservation] = await tx.execute<{ outcome: 'reserved' | 'held' | 'insufficient'; available: number }>(
    sql`select outcome, available from vg_reserve_credits(${userId}, ${jobId}, ${reservationKey(jobId, run)}, ${amount}::int)`,
  );
  if (reservation.outcome === 'insufficient') throw new InsufficientCreditsError(amount, reservation.available);
}

/**
 * Undoes a reservation whose job never started (its workflow could not be created): as if it never happened. A settled
 * one is never undone: its job ran.
 */
export async function undoReservation(tx: Tx, jobId: string): Promise<void> {
  const key = reservationKey(jobId);
  const [entry] = await tx
    .delete(creditLedger)
    .where(and(eq(creditLedger.entryKey, key), sql`not exists (select 1 from credit_ledger s where s.entry_key = ${settlementKey(key)})`))
    .returning();
  if (!entry) return;
  await tx
    .update(creditAccounts)
    .set({ available: sql`${creditAccounts.available} + ${entry.amount}`, reserved: sql`${creditAccounts.reserved} - ${entry.amount}`, updatedAt: sql`now()` })
    .where(eq(creditAccounts.userId, entry.userId));
}

/** How far the API's clock (a job's acceptance) and Postgres's (its ledger entries) may differ. */
const CLOCK_SKEW_ALLOWANCE_MS = 3_600_000;

/** The job's reservation not yet settled, if any. */
async function openReservation(tx: Tx, jobId: string) {
  const rows = await tx.select().from(creditLedger).where(and(eq(creditLedger.jobId, jobId), inArray(creditLedger.kind, ['reserve', 'capture', 'release'])));
  const settled = new Set(rows.filter((r) => r.kind !== 'reserve').map((r) => r.entryKey));
  return rows.find((r) => r.kind === 'reserve' && !settled.has(settlementKey(r.entryKey)));
}

/**
 * A workflow run's opening: the job must hold an unsettled reservation. The first run's was made at submit. When the
 * submit's key is taken by a settled reservation, this run reserves the request's price under its own key (and may
 * find the credits gone): it is a run an operator started again after the job ended, or a new job under the id of an
 * earlier one whose row retention has deleted (an Idempotency-Key used again after its job's window: admission found
 * the key taken and reserved nothing). A first run that finds no reservation at all reserves the job's price itself:
 * the submit's was undone after a start that failed as far as the API could tell (a timeout) while the workflow did
 * start, or while a replay of the submit started it.
 *
 * `firstRunAcceptedAt`: the run is the job's first, opening at its GPU slot (GenerationSettings.opensAtSlot), which can
 * come after the run has already ended (canceled or timed out in the queue while a dispatcher was taking its task).
 * Then the submit's reservation is this job's own, settled by that ending, and nothing is reserved again ('ended'). It
 * is told from an earlier job's under the same id by its age: that one is at least a retention window older than this
 * job's acceptance (an hour is allowed for the clocks of the API and of Postgres to differ).
 */
export async function ensureRunReservation(
  db: Db,
  { jobId, userId, credits }: { jobId: string; userId: string; credits: number },
  run: string,
  firstRunAcceptedAt?: string,
): Promise<'held' | 'reserved' | 'ended'> {
  // Almost always the submit's reservation is there: one read says so, without a transaction (the one below takes no
  // lock either: reserving is idempotent by key, vg_reserve_credits). Statement text, prepared once per connection:
  // every run's opening asks (docs/decisions.md, "Worker CPU per job").
  const sql = db.$client;
  const [{ open }] = await sql<{ open: boolean }[]>`select exists (select 1 from credit_ledger r where ${unsettledReservation(sql, jobId)}) as open`;
  if (open) return 'held';
  return db.transaction(async (tx) => {
    if (await openReservation(tx, jobId)) return 'held';
    const [first] = await tx.select().from(creditLedger).where(eq(creditLedger.entryKey, reservationKey(jobId)));
    if (first && firstRunAcceptedAt !== undefined && first.createdAt.getTime() >= Date.parse(firstRunAcceptedAt) - CLOCK_SKEW_ALLOWANCE_MS) return 'ended';
    if (first) await reserveCredits(tx, userId, jobId, credits, run);
    else await reserveCredits(tx, userId, jobId, credits);
    return 'reserved';
  });
}

/** The condition on a ledger row `r` that it is the job's reservation and not settled yet. */
function unsettledReservation(sql: Sql, jobId: string) {
  return sql`r.job_id = ${jobId} and r.kind = 'reserve'
    and not exists (select 1 from credit_ledger s where s.job_id = ${jobId} and s.kind in ('capture', 'release') and s.entry_key = r.entry_key || ${SETTLEMENT_KEY_SUFFIX})`;
}

/**
 * Settles the job's open reservation once: captured on success, released otherwise. A second settlement (a retried
 * activity, a replayed workflow, the reconciler) finds nothing open and changes nothing. Returns what this call did.
 * `charge`: a capture of less than the reservation (a routed job charged by the backend that ran it): that much is
 * used, the rest goes back to available, in the one settlement entry (whose amount is what was charged).
 * One statement (the job's ending runs it once per job): the settlement entry is keyed by the reservation's key, so of
 * two settlers racing only one inserts it, and the account moves only with the entry inserted.
 */
export async function settleCredits(db: Db, jobId: string, outcome: 'capture' | 'release', charge?: number): Promise<'capture' | 'release' | 'already_settled'> {
  const sql = db.$client;
  const [row] = await sql<{ settled: number }[]>`
    with reserve as (
      select r.user_id, r.amount, r.entry_key from credit_ledger r where ${unsettledReservation(sql, jobId)} order by r.id limit 1
    ), entry as (
      insert into credit_ledger (user_id, job_id, kind, amount, entry_key)
      select user_id, ${jobId}, ${outcome},
        case when ${outcome} = 'capture' then least(amount, coalesce(${charge ?? null}::int, amount)) else amount end,
        entry_key || ${SETTLEMENT_KEY_SUFFIX}
      from reserve
      on conflict do nothing
      returning user_id, amount as charged
    ), moved as (
      update credit_accounts a set
        reserved = a.reserved - reserve.amount,
        used = a.used + case when ${outcome} = 'capture' then entry.charged else 0 end,
        available = a.available + reserve.amount - case when ${outcome} = 'capture' then entry.charged else 0 end,
        updated_at = now()
      from entry, reserve where a.user_id = entry.user_id
      returning 1
    )
    select (select count(*) from entry)::int as settled`;
  return row.settled > 0 ? outcome : 'already_settled';
}

export async function creditBalance(db: Db, userId: string) {
  const [account] = await db.select().from(creditAccounts).where(eq(creditAccounts.userId, userId));
  return { available: account?.available ?? 0, reserved: account?.reserved ?? 0, used: account?.used ?? 0 };
}
