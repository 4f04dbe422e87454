/** Reads what arrived at the run's Mailpit (test/global-setup.ts) through its HTTP API. */

export interface MailSummary {
  ID: string;
  Subject: string;
  To: Array<{ Address: string }>;
  Created: string;
}

export interface Mail extends MailSummary {
  Text: string;
  HTML: string;
}

export function mailpitUrl(): string {
  const url = process.env.TEST_MAILPIT_URL;
  if (!url) throw new Error('run the tests through jest (test/global-setup.ts starts Mailpit)');
  return url;
}

/** Every message to `address`, oldest first. */
export async function mailTo(address: string, base = mailpitUrl()): Promise<MailSummary[]> {
  const res = await fetch(`${base}/api/v1/search?query=${encodeURIComponent(`to:"${address}"`)}&limit=1000`);
  if (!res.ok) throw new Error(`mailpit search: ${res.status} ${await res.text()}`);
  const body = (await res.json()) as { messages: MailSummary[] };
  // The search matches by substring; keep the exact address only.
  return body.messages.filter((m) => m.To.some((t) => t.Address.toLowerCase() === address.toLowerCase())).reverse();
}

export async function readMail(id: string, base = mailpitUrl()): Promise<Mail> {
  const res = await fetch(`${base}/api/v1/message/${id}`);
  if (!res.ok) throw new Error(`mailpit message ${id}: ${res.status}`);
  return (await res.json()) as Mail;
}

/** The message's headers, each a list of values. */
export async function mailHeaders(id: string): Promise<Record<string, string[]>> {
  const res = await fetch(`${mailpitUrl()}/api/v1/message/${id}/headers`);
  if (!res.ok) throw new Error(`mailpit headers ${id}: ${res.status}`);
  return (await res.json()) as Record<string, string[]>;
}
