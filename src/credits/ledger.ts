import { and, eq, gte, sql } from 'drizzle-orm';
import type { Db } from '../db/client';
import { creditAccounts, creditLedger } from '../db/schema';

/** A transaction or the database itself: every ledger movement runs inside the caller's transaction when given one. */
type Tx = Parameters<Parameters<Db['transaction']>[0]>[0] | Db;

export class InsufficientCreditsError extends Error {
  constructor(readonly needed: number, readonly available: number) {
    super(`this generation costs ${needed} credits; ${available} available`);
    this.name = 'InsufficientCreditsError';
  }
}

const reserveKey = (jobId: string) => `${jobId}:reserve`;
const settleKey = (jobId: string) => `${jobId}:settle`;

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

/** Moves `amount` from available to reserved for a job, once. Throws InsufficientCreditsError when it cannot be paid for. */
export async function reserveCredits(tx: Tx, userId: string, jobId: string, amount: number): Promise<void> {
  const [entry] = await tx
    .insert(creditLedger)
    .values({ userId, jobId, kind: 'reserve', amount, entryKey: reserveKey(jobId) })
    .onConflictDoNothing()
    .returning({ id: creditLedger.id });
  if (!entry) return; // already reserved for this job
  const moved = await tx
    .update(creditAccounts)
    .set({ available: sql`${creditAccounts.available} - ${amount}`, reserved: sql`${creditAccounts.reserved} + ${amount}`, updatedAt: sql`now()` })
    .where(and(eq(creditAccounts.userId, userId), gte(creditAccounts.available, amount)))
    .returning({ userId: creditAccounts.userId });
  if (moved.length === 0) {
    const [account] = await tx.select().from(creditAccounts).where(eq(creditAccounts.userId, userId));
    throw new InsufficientCreditsError(amount, account?.available ?? 0);
  }
}

/** Undoes a reservation whose job never started (its workflow could not be created): as if it never happened. */
export async function undoReservation(tx: Tx, jobId: string): Promise<void> {
  const [entry] = await tx.delete(creditLedger).where(eq(creditLedger.entryKey, reserveKey(jobId))).returning();
  if (!entry) return;
  await tx
    .update(creditAccounts)
    .set({ available: sql`${creditAccounts.available} + ${entry.amount}`, reserved: sql`${creditAccounts.reserved} - ${entry.amount}`, updatedAt: sql`now()` })
    .where(eq(creditAccounts.userId, entry.userId));
}

/**
 * Settles a job's reservation once: captured on success, released otherwise. The single `${jobId}:settle` key makes a
 * second settlement (a retried activity, a replayed workflow, the reconciler) a no-op, and capture and release exclusive.
 * Returns what this call did.
 */
export async function settleCredits(db: Db, jobId: string, outcome: 'capture' | 'release'): Promise<'capture' | 'release' | 'already_settled' | 'nothing_reserved'> {
  return db.transaction(async (tx) => {
    const [reserve] = await tx.select().from(creditLedger).where(eq(creditLedger.entryKey, reserveKey(jobId)));
    if (!reserve) return 'nothing_reserved';
    const [entry] = await tx
      .insert(creditLedger)
      .values({ userId: reserve.userId, jobId, kind: outcome, amount: reserve.amount, entryKey: settleKey(jobId) })
      .onConflictDoNothing()
      .returning({ id: creditLedger.id });
    if (!entry) return 'already_settled';
    const amount = reserve.amount;
    await tx
      .update(creditAccounts)
      .set(
        outcome === 'capture'
          ? { reserved: sql`${creditAccounts.reserved} - ${amount}`, used: sql`${creditAccounts.used} + ${amount}`, updatedAt: sql`now()` }
          : { reserved: sql`${creditAccounts.reserved} - ${amount}`, available: sql`${creditAccounts.available} + ${amount}`, updatedAt: sql`now()` },
      )
      .where(eq(creditAccounts.userId, reserve.userId));
    return outcome;
  });
}

export async function creditBalance(db: Db, userId: string) {
  const [account] = await db.select().from(creditAccounts).where(eq(creditAccounts.userId, userId));
  return { available: account?.available ?? 0, reserved: account?.reserved ?? 0, used: account?.used ?? 0 };
}
