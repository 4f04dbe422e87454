import { Router, type Request, type Response } from 'express';
import { z } from 'zod';
import type { Config } from '../config';
import type { Db, Sql } from '../db/client';
import type { Logger } from '../lib/logger';
import { verificationMail, verifyUrl } from '../notifications/email-content';
import {
  DIGEST_SECONDS_MAX,
  EMAIL_ON_STATUSES,
  getNotificationSettings,
  putNotificationSettings,
  unsubscribe,
  verificationNotSent,
  verifyEmail,
  type NotificationSettings,
} from '../notifications/email-store';
import { createMailer, type Mailer } from '../notifications/mailer';
import { ApiError } from '../wire/errors';
import { currentUser, requireUser } from './auth';
import { parseOr400 } from './validation';

export const notificationSettingsBody = z
  .object({
    email: z.email().max(254).nullable().meta({ description: 'where to mail; null stops mail. A new address is unverified until its link is opened' }),
    on: z
      .array(z.enum(EMAIL_ON_STATUSES))
      .max(EMAIL_ON_STATUSES.length)
      .refine((on) => new Set(on).size === on.length, 'must not repeat a status')
      .optional()
      .meta({ description: 'which endings to mail (default: all); [] mails none' }),
    digest_seconds: z
      .number()
      .int()
      .min(0)
      .max(DIGEST_SECONDS_MAX)
      .optional()
      .meta({ description: 'endings within this many seconds of the first go in one mail; 0 mails each on its own (default 300)' }),
  })
  .strict();

export const emailLinkQuery = z.object({ token: z.string().min(16).max(200) }).strict();

export const toSettingsResource = (s: NotificationSettings) => ({
  object: 'notification_settings' as const,
  email: s.email,
  email_verified: s.emailVerified,
  on: s.on,
  digest_seconds: s.digestSeconds,
});

/**
 * /v1/notification-settings: a user's email notifications (behind their key), and the two links the mails carry, which
 * work without one: the address's verification and the unsubscribe (GET, and POST for RFC 8058 one-click).
 */
export function notificationSettingsRouter({ db, sql, config, logger, mailer = createMailer(config.mail) }: { db: Db; sql: Sql; config: Config; logger: Logger; mailer?: Mailer }): Router {
  const router = Router();

  router.get('/verify', async (req, res) => {
    const { token } = parseOr400(emailLinkQuery, req.query);
    const verified = await verifyEmail(sql, token);
    if (!verified) throw new ApiError(404, 'invalid_link', 'this verification link is unknown, used or expired: save the address again for a new one');
    answer(req, res, { object: 'email_verification', email: verified.email, email_verified: true }, `${verified.email} is verified: mail about your videos will go there.`);
  });

  const unsubscribeHandler = async (req: Request, res: Response) => {
    const { token } = parseOr400(emailLinkQuery, req.query);
    const done = await unsubscribe(sql, token);
    if (!done) throw new ApiError(404, 'invalid_link', 'this unsubscribe link is unknown (the address changed since it was sent)');
    answer(req, res, { object: 'email_unsubscribe', email: done.email, on: [] }, `${done.email ?? 'This address'} gets no more mail about your videos.`);
  };
  router.get('/unsubscribe', unsubscribeHandler);
  router.post('/unsubscribe', unsubscribeHandler);

  router.get('/', requireUser(db), async (req, res) => {
    res.json(toSettingsResource(await getNotificationSettings(sql, currentUser(req).id)));
  });

  router.put('/', requireUser(db), async (req, res) => {
    const user = currentUser(req);
    const body = parseOr400(notificationSettingsBody, req.body);
    const current = await getNotificationSettings(sql, user.id);
    const { settings, verification } = await putNotificationSettings(sql, user.id, {
      email: body.email === null ? null : body.email.trim(),
      on: body.on ?? current.on,
      digestSeconds: body.digest_seconds ?? current.digestSeconds,
    });
    if (verification) {
      const mail = verificationMail(verifyUrl(publicBase(config, req), verification.token));
      try {
        await mailer.send({ to: verification.email, ...mail });
      } catch (err) {
        // Saved, but the link never left: the next PUT sends one at once.
        await verificationNotSent(sql, user.id);
        logger.warn({ err, userId: user.id }, 'verification mail not sent');
        throw new ApiError(503, 'mail_unavailable', 'the settings are saved, but the verification mail could not be sent: PUT again later', undefined, { 'retry-after': '30' });
      }
    }
    res.json(toSettingsResource(settings));
  });

  return router;
}

/** Where links point: PUBLIC_URL, or when none is configured and the port is chosen at start (0), the socket's own port. */
function publicBase(config: Config, req: Request): string {
  if (!config.api.publicUrl.endsWith(':0')) return config.api.publicUrl;
  return `http://127.0.0.1:${req.socket.localPort}`;
}

/** A link opened in a browser gets a line of HTML; anything else the JSON. */
function answer(req: Request, res: Response, json: Record<string, unknown>, sentence: string): void {
  if (req.accepts(['json', 'html']) === 'html') {
    const text = sentence.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
    res.type('html').send(`<!doctype html><html><head><meta charset="utf-8"><title>Video notifications</title></head><body style="font-family: sans-serif"><p>${text}</p></body></html>`);
    return;
  }
  res.json(json);
}
