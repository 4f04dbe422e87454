import { createUser } from '../api/auth';
import { admitSubmission, type SubmissionClaim } from '../api/admission-store';
import { useRunDatabase } from '../../test/run-database';
import { creditBalance, ensureRunReservation, InsufficientCreditsError, reservationKey, reserveCredits, settleCredits, undoReservation } from './ledger';

/**
 * A credit reservation is made in one place (vg_reserve_credits, drizzle/routines/credit_reservation.sql) under the
 * ledger's key: the submit's admission and the ledger make the same one, and the ledger finds, settles and undoes the
 * admission's. Against the run's real Postgres.
 */
describe('one credit reservation for admission and the ledger', () => {
  const database = useRunDatabase({ max: 4 });

  const admit = (userId: string, jobId: string, credits: number) => {
    const claim: SubmissionClaim = {
      userId,
      bucketKey: `test:${userId}`,
      rate: { burst: 100, perSecond: 100 },
      maxActive: 100,
      dailyQuota: 100,
      backlogFull: false,
      idempotencyKey: undefined,
      requestHash: 'h',
      jobId,
      credits,
      acceptedAt: new Date(),
      pool: 'gpu-test',
      tier: 'pro',
      fairnessWeight: 1,
      prompt: 'a test',
      params: {},
    };
    return admitSubmission(database.sql, claim);
  };
  const entries = (jobId: string) =>
    database.sql<{ kind: string; amount: number; entry_key: string }[]>`select kind, amount, entry_key from credit_ledger where job_id = ${jobId} order by id`;

  test("admission reserves what reserveCredits reserves, under the ledger's key; the ledger finds, settles and undoes it", async () => {
    const { user } = await createUser(database.db, { name: 'reserving', tier: 'pro', credits: 100 });
    const [admitted, reserved, undone] = ['admitted', 'reserved', 'undone'].map((name) => `gen_${user.id}_${name}`);

    expect(await admit(user.id, admitted, 30)).toMatchObject({ outcome: 'admitted', available: 70 });
    await database.db.transaction((tx) => reserveCredits(tx, user.id, reserved, 30));
    expect(await entries(admitted)).toEqual([{ kind: 'reserve', amount: 30, entry_key: reservationKey(admitted) }]);
    expect(await entries(reserved)).toEqual([{ kind: 'reserve', amount: 30, entry_key: reservationKey(reserved) }]);
    expect(await creditBalance(database.db, user.id)).toEqual({ available: 40, reserved: 60, used: 0 });

    // The job's first run finds the submit's reservation and reserves nothing; the workflow's end settles it.
    expect(await ensureRunReservation(database.db, { jobId: admitted, userId: user.id, credits: 30 }, 'run-1')).toBe('held');
    expect(await settleCredits(database.db, admitted, 'capture')).toBe('capture');
    expect(await creditBalance(database.db, user.id)).toEqual({ available: 40, reserved: 30, used: 30 });

    // An undone submit gives its reservation back; a settled one is never undone.
    expect(await admit(user.id, undone, 10)).toMatchObject({ outcome: 'admitted', available: 30 });
    await database.db.transaction(async (tx) => {
      await undoReservation(tx, undone);
      await undoReservation(tx, admitted);
    });
    expect(await entries(undone)).toEqual([]);
    expect(await creditBalance(database.db, user.id)).toEqual({ available: 40, reserved: 30, used: 30 });
  });

  test('a reservation is made once per key, and when the credits are short neither writes anything', async () => {
    const { user } = await createUser(database.db, { name: 'short', tier: 'pro', credits: 20 });
    const job = `gen_${user.id}_once`;
    await database.db.transaction((tx) => reserveCredits(tx, user.id, job, 15));
    await database.db.transaction((tx) => reserveCredits(tx, user.id, job, 15));
    expect(await admit(user.id, job, 5)).toMatchObject({ outcome: 'admitted', available: 5 });
    expect(await entries(job)).toEqual([{ kind: 'reserve', amount: 15, entry_key: reservationKey(job) }]);
    expect(await creditBalance(database.db, user.id)).toEqual({ available: 5, reserved: 15, used: 0 });

    const dear = `gen_${user.id}_dear`;
    await expect(database.db.transaction((tx) => reserveCredits(tx, user.id, dear, 6))).rejects.toEqual(new InsufficientCreditsError(6, 5));
    expect(await admit(user.id, dear, 6)).toMatchObject({ outcome: 'insufficient_credits', available: 5 });
    // Short credits refuse even a key already held (a job under the id of one retention pruned): admission's rule.
    expect(await admit(user.id, job, 6)).toMatchObject({ outcome: 'insufficient_credits', available: 5 });
    expect(await entries(dear)).toEqual([]);
    expect(await creditBalance(database.db, user.id)).toEqual({ available: 5, reserved: 15, used: 0 });
  });

  test('a capture of less than the reservation (a routed job on a cheaper backend) uses that much and gives the rest back, in one entry', async () => {
    const { user } = await createUser(database.db, { name: 'routed', tier: 'pro', credits: 100 });
    const job = `gen_${user.id}_routed`;
    await database.db.transaction((tx) => reserveCredits(tx, user.id, job, 15));
    expect(await settleCredits(database.db, job, 'capture', 10)).toBe('capture');
    expect(await settleCredits(database.db, job, 'capture', 10)).toBe('already_settled');
    expect((await entries(job)).map(({ kind, amount }) => ({ kind, amount }))).toEqual([
      { kind: 'reserve', amount: 15 },
      { kind: 'capture', amount: 10 },
    ]);
    expect(await creditBalance(database.db, user.id)).toEqual({ available: 90, reserved: 0, used: 10 });
    // Never more than was reserved.
    const capped = `gen_${user.id}_capped`;
    await database.db.transaction((tx) => reserveCredits(tx, user.id, capped, 5));
    await settleCredits(database.db, capped, 'capture', 8);
    expect(await creditBalance(database.db, user.id)).toEqual({ available: 85, reserved: 0, used: 15 });
  });

  test('a reservation is settled once, however many settle it at once; a run reopened after it reserves and settles anew', async () => {
    const { user } = await createUser(database.db, { name: 'settling', tier: 'pro', credits: 100 });
    const [released, raced] = ['released', 'raced'].map((name) => `gen_${user.id}_${name}`);
    await admit(user.id, released, 20);
    await admit(user.id, raced, 30);

    expect(await settleCredits(database.db, released, 'release')).toBe('release');
    expect(await settleCredits(database.db, released, 'capture')).toBe('already_settled');
    expect(await creditBalance(database.db, user.id)).toEqual({ available: 70, reserved: 30, used: 0 });

    // Three settlers at once (a retried ending beside the reconciler): one entry, one move of the account.
    const outcomes = await Promise.all([settleCredits(database.db, raced, 'capture'), settleCredits(database.db, raced, 'capture'), settleCredits(database.db, raced, 'release')]);
    const won = outcomes.filter((outcome) => outcome !== 'already_settled');
    expect(won).toHaveLength(1);
    expect((await entries(raced)).map((e) => e.entry_key)).toEqual([reservationKey(raced), `${reservationKey(raced)}:settle`]);
    expect(await creditBalance(database.db, user.id)).toEqual(won[0] === 'capture' ? { available: 70, reserved: 0, used: 30 } : { available: 100, reserved: 0, used: 0 });

    // An operator's new run of the released job: the settled reservation does not hold it, so it reserves under its own key.
    expect(await ensureRunReservation(database.db, { jobId: released, userId: user.id, credits: 20 }, 'run-2')).toBe('reserved');
    expect(await ensureRunReservation(database.db, { jobId: released, userId: user.id, credits: 20 }, 'run-2')).toBe('held');
    expect(await settleCredits(database.db, released, 'capture')).toBe('capture');
    expect((await entries(released)).map((e) => [e.kind, e.entry_key])).toEqual([
      ['reserve', reservationKey(released)],
      ['release', `${reservationKey(released)}:settle`],
      ['reserve', reservationKey(released, 'run-2')],
      ['capture', `${reservationKey(released, 'run-2')}:settle`],
    ]);
  });

  test("a first run opening at its GPU slot after its job ended reserves nothing; one under a pruned job's id reserves anew", async () => {
    const { user } = await createUser(database.db, { name: 'at-slot', tier: 'pro', credits: 100 });
    const [ended, reused] = ['ended', 'reused'].map((name) => `gen_${user.id}_${name}`);
    // Canceled in the queue while a dispatcher took its task: the ending released the submit's reservation first.
    const acceptedAt = new Date().toISOString();
    await admit(user.id, ended, 20);
    expect(await settleCredits(database.db, ended, 'release')).toBe('release');
    expect(await ensureRunReservation(database.db, { jobId: ended, userId: user.id, credits: 20 }, 'run-1', acceptedAt)).toBe('ended');
    expect(await creditBalance(database.db, user.id)).toEqual({ available: 100, reserved: 0, used: 0 });
    // The same id a month after an earlier job's (retention pruned its row; the ledger keeps its settled key): reserved anew.
    await admit(user.id, reused, 20);
    expect(await settleCredits(database.db, reused, 'capture')).toBe('capture');
    await database.sql`update credit_ledger set created_at = now() - interval '31 days' where job_id = ${reused}`;
    expect(await ensureRunReservation(database.db, { jobId: reused, userId: user.id, credits: 20 }, 'run-2', new Date().toISOString())).toBe('reserved');
    expect(await creditBalance(database.db, user.id)).toEqual({ available: 60, reserved: 20, used: 20 });
  });
});
