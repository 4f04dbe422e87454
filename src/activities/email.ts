import { randomUUID } from 'node:crypto';
import { Context } from '@temporalio/activity';
import type { Config } from '../config';
import type { Sql } from '../db/client';
import type { Logger } from '../lib/logger';
import { digestMail, unsubscribeUrl } from '../notifications/email-content';
import { abandonEarlierClaims, claimPendingEndings, markClaimSent, markClaimUnknown, MAX_ENDINGS_PER_MAIL, releaseClaim } from '../notifications/email-store';
import { certainlyNotSent, type Mailer } from '../notifications/mailer';

export interface EmailActivityDeps {
  sql: Sql;
  mailer: Mailer;
  config: Config;
  logger: Logger;
}

export interface SendEmailDigestInput {
  userId: string;
  /** One ending per mail (a digest window of 0). */
  single: boolean;
}

export interface SendEmailDigestResult {
  /** Endings the mail listed (0: nothing was pending, or nothing was sent). */
  mailed: number;
  /** Pending endings were left for another mail. */
  more: boolean;
}

/**
 * The digest's one activity: claim the user's pending endings (committed before anything is sent), mail them in one
 * message, then record the outcome. A retry never mails a claimed ending again: a crash after the claim loses that mail
 * rather than repeat it (at most once; docs/decisions.md, "Email notifications").
 */
export function createEmailActivities({ sql, mailer, config, logger }: EmailActivityDeps) {
  async function sendEmailDigest({ userId, single }: SendEmailDigestInput): Promise<SendEmailDigestResult> {
    const info = Context.current().info;
    const send = `${info.workflowExecution?.runId ?? randomUUID()}:${info.activityId}:`;
    if (info.attempt > 1) {
      const abandoned = await abandonEarlierClaims(sql, send);
      if (abandoned > 0) logger.warn({ userId, endings: abandoned }, 'email digest: an earlier attempt ended without an outcome; its endings are recorded unknown, not sent again');
    }
    const claim = `${send}${info.attempt}`;
    const { digest, more } = await claimPendingEndings(sql, userId, claim, single ? 1 : MAX_ENDINGS_PER_MAIL);
    if (!digest) return { mailed: 0, more };
    const mail = digestMail(digest.endings, { unsubscribe: unsubscribeUrl(config.api.publicUrl, digest.unsubscribeToken) });
    try {
      const { messageId } = await mailer.send({ to: digest.email, ...mail });
      await markClaimSent(sql, claim);
      logger.info({ userId, endings: digest.endings.length, messageId, more }, 'email digest sent');
      return { mailed: digest.endings.length, more };
    } catch (err) {
      if (certainlyNotSent(err)) {
        // Refused or never handed over: the endings go back to pending and the retried activity claims them again.
        await releaseClaim(sql, claim);
        throw err;
      }
      await markClaimUnknown(sql, claim);
      logger.error({ err, userId, endings: digest.endings.length }, 'email digest: SMTP broke off after the message may have been accepted; not sent again');
      return { mailed: 0, more };
    }
  }

  return { sendEmailDigest };
}
