import { condition, continueAsNew, proxyActivities, setHandler, sleep, workflowInfo } from '@temporalio/workflow';
import type * as emailActivities from '../activities/email';
import { endingQueuedSignal, type EmailDigestInput } from '../contracts/email-digest';

type EmailActivities = ReturnType<typeof emailActivities.createEmailActivities>;

const { sendEmailDigest } = proxyActivities<EmailActivities>({
  // A send gives up on a silent SMTP server within 40 s (src/notifications/mailer.ts); an attempt whose worker died is
  // retried after this, and the retry records what that attempt claimed as `unknown` (never mailed twice).
  startToCloseTimeout: '1m',
  // An SMTP refusal or an unreachable server: the endings went back to pending, and a retry mails them.
  retry: { initialInterval: '5s', backoffCoefficient: 2, maximumInterval: '10m' },
});

/**
 * Without a new ending for this long after a mail, the run ends; the next ending starts another (signalWithStart), which
 * costs about what a signal to a waiting run costs, so there is little to gain from waiting longer.
 */
const IDLE_MS = 10_000;
/** Mails per run before it continues as new, so a run's history stays short (about ten events per mail). */
const MAILS_PER_RUN = 50;

/**
 * One per user (id `email-digest-<user>`): the first ending queued since the last mail wakes it (signalWithStart from
 * the notify step), it waits out the user's digest window, then one activity mails every ending pending by then in one
 * message. Which endings those are lives in Postgres, not here: the run holds no list, a window costs one signal
 * however many jobs end in it (only the first ending since a mail signals), and a history grows by a handful of events
 * per mail whatever the volume.
 */
export async function emailDigestWorkflow({ userId, pending }: EmailDigestInput): Promise<void> {
  let woken = pending !== undefined;
  let digestSeconds = pending?.digestSeconds ?? 0;
  setHandler(endingQueuedSignal, (signal) => {
    woken = true;
    digestSeconds = signal.digestSeconds;
  });
  let now = pending?.now ?? false;
  for (let mails = 0; ; mails++) {
    if (!now && !(await condition(() => woken, IDLE_MS))) return;
    if (!now && digestSeconds > 0) await sleep(digestSeconds * 1_000);
    // An ending queued from here on is either claimed by this mail or wakes the next window.
    woken = false;
    const { more } = await sendEmailDigest({ userId, single: digestSeconds === 0 });
    // Beyond one mail's worth: the rest now, without another window.
    now = more;
    if (mails + 1 >= MAILS_PER_RUN || workflowInfo().continueAsNewSuggested) {
      await continueAsNew<typeof emailDigestWorkflow>({ userId, pending: woken || now ? { digestSeconds, now } : undefined });
    }
  }
}
