import nodemailer from 'nodemailer';
import type { Config } from '../config';

/** One SMTP transport per process (SMTP_URL, or the Mailpit `npm start` runs), every mail from MAIL_FROM. */
export interface OutgoingMail {
  to: string;
  subject: string;
  text: string;
  html: string;
  headers?: Record<string, string>;
}

export interface Mailer {
  send(mail: OutgoingMail): Promise<{ messageId: string }>;
  close(): void;
}

/**
 * How long a send may wait on the server: to connect, for its greeting, and for any answer once talking; together
 * (40 s) inside the digest activity's start-to-close timeout of a minute (src/workflows/email-digest.ts).
 */
const SMTP_TIMEOUTS = { connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 20_000 };

export function createMailer(mail: Config['mail']): Mailer {
  const transport = nodemailer.createTransport(mail.smtpUrl, { from: mail.from, ...SMTP_TIMEOUTS });
  return {
    async send({ to, subject, text, html, headers }) {
      const info = await transport.sendMail({ to, subject, text, html, headers });
      return { messageId: info.messageId };
    },
    close: () => transport.close(),
  };
}

/**
 * Whether a failed send certainly left no mail behind: the server answered with a refusal (a 4xx/5xx reply, the final
 * one included), or the failure came before the message's data was sent (connecting, greeting, TLS, login, envelope).
 * Anything else — the connection broke or timed out while the message was sent or its reply awaited — may have been
 * accepted, and at most once means it is not sent again.
 */
export function certainlyNotSent(err: unknown): boolean {
  const e = err as { responseCode?: number; command?: string; code?: string } | null;
  if (!e || typeof e !== 'object') return false;
  if (typeof e.responseCode === 'number' && e.responseCode >= 400) return true;
  const command = (e.command ?? '').toUpperCase();
  if (['CONN', 'EHLO', 'HELO', 'LHLO', 'STARTTLS', 'AUTH', 'AUTH PLAIN', 'AUTH LOGIN', 'MAIL FROM', 'RCPT TO'].includes(command)) return true;
  return e.code === 'ECONNECTION' || e.code === 'EDNS' || e.code === 'ETLS' || e.code === 'EAUTH';
}
