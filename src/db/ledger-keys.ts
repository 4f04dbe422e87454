/**
 * How the credit ledger's job entries are keyed (credit_ledger.entry_key, unique): a job's reservation is its id plus
 * RESERVATION_KEY_SUFFIX (a run an operator starts again, or a job under the id of one retention pruned, adds `:<run>`),
 * and its one settlement is the reservation's key plus SETTLEMENT_KEY_SUFFIX. The ledger (src/credits/ledger.ts) writes
 * them; the reconciler and retention find a reservation's settlement, and the reverse, in SQL built from the same
 * suffixes. Here, below both, so retention (which may not import the ledger) reads them too.
 */
export const RESERVATION_KEY_SUFFIX = ':reserve';
export const SETTLEMENT_KEY_SUFFIX = ':settle';

/**
 * The ledger key of a job's reservation: the submit's (its first run's, which admission makes: the API puts this key
 * in its claim, src/api/admission-store.ts) or, for a run an operator starts again (a reset) or a job under the id of
 * one retention pruned, that run's own. Reservations are made in one place, vg_reserve_credits
 * (drizzle/routines/credit_reservation.sql), by admission and by reserveCredits (src/credits/ledger.ts).
 */
export const reservationKey = (jobId: string, run?: string) =>
  run ? `${jobId}${RESERVATION_KEY_SUFFIX}:${run}` : `${jobId}${RESERVATION_KEY_SUFFIX}`;
/** One settlement per reservation: capture and release share the key, so they exclude each other. */
export const settlementKey = (reservation: string) => `${reservation}${SETTLEMENT_KEY_SUFFIX}`;
