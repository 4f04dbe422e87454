import type { ClaimedEnding } from './email-store';

/** The words and links of the mails the service sends: a digest of endings, and an address's verification. */

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const shorten = (text: string, max = 80) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);
// A prompt is the user's own text: in a header or a line of its own it must not start a new one.
const oneLine = (text: string) => text.replace(/[\r\n\t]+/g, ' ').trim();

export function unsubscribeUrl(publicUrl: string, token: string): string {
  return `${publicUrl}/v1/notification-settings/unsubscribe?token=${encodeURIComponent(token)}`;
}

export function verifyUrl(publicUrl: string, token: string): string {
  return `${publicUrl}/v1/notification-settings/verify?token=${encodeURIComponent(token)}`;
}

const WORDS: Record<string, string> = { succeeded: 'succeeded', failed: 'failed', expired: 'expired', canceled: 'canceled' };

function subjectOf(endings: ClaimedEnding[]): string {
  if (endings.length === 1) {
    const [e] = endings;
    return `Your video ${WORDS[e.status] ?? e.status}: "${shorten(oneLine(e.prompt), 50)}"`;
  }
  const counts = new Map<string, number>();
  for (const e of endings) counts.set(e.status, (counts.get(e.status) ?? 0) + 1);
  const parts = [...counts].map(([status, n]) => `${n} ${WORDS[status] ?? status}`);
  return `${endings.length} of your videos ended: ${parts.join(', ')}`;
}

function lineOf(e: ClaimedEnding): string {
  const outcome = e.status === 'succeeded' ? (e.videoUrl ?? '') : e.errorMessage ? `${e.status}: ${oneLine(e.errorMessage)}` : e.status;
  return `- [${e.status}] "${shorten(oneLine(e.prompt))}" (${e.jobId})${outcome && outcome !== e.status ? ` ${outcome}` : ''}`;
}

export function digestMail(endings: ClaimedEnding[], links: { unsubscribe: string }) {
  const subject = subjectOf(endings);
  const text = [
    endings.length === 1 ? 'One of your video generations ended:' : `${endings.length} of your video generations ended:`,
    '',
    ...endings.map(lineOf),
    '',
    `Stop these mails: ${links.unsubscribe}`,
    'Change them: PUT /v1/notification-settings',
  ].join('\n');
  const rows = endings
    .map((e) => {
      const outcome =
        e.status === 'succeeded' && e.videoUrl
          ? `<a href="${escapeHtml(e.videoUrl)}">video</a>`
          : escapeHtml(e.errorMessage ? oneLine(e.errorMessage) : '');
      return `<tr><td>${escapeHtml(e.status)}</td><td>${escapeHtml(shorten(oneLine(e.prompt)))}</td><td><code>${escapeHtml(e.jobId)}</code></td><td>${outcome}</td></tr>`;
    })
    .join('\n');
  const html = `<!doctype html><html><body style="font-family: sans-serif">
<p>${endings.length === 1 ? 'One of your video generations ended:' : `${endings.length} of your video generations ended:`}</p>
<table cellpadding="4" style="border-collapse: collapse">
<tr><th align="left">status</th><th align="left">prompt</th><th align="left">job</th><th align="left"></th></tr>
${rows}
</table>
<p style="color: #666; font-size: small"><a href="${escapeHtml(links.unsubscribe)}">Unsubscribe</a> from these mails, or change them with <code>PUT /v1/notification-settings</code>.</p>
</body></html>`;
  return {
    subject,
    text,
    html,
    // RFC 2369 and RFC 8058: mail clients offer the link, and may POST to it (one click).
    headers: { 'List-Unsubscribe': `<${links.unsubscribe}>`, 'List-Unsubscribe-Post': 'List-Unsubscribe=One-Click' },
  };
}

export function verificationMail(link: string) {
  return {
    subject: 'Confirm your address for video notifications',
    text: `Open this link to receive mail when your video generations end:\n\n${link}\n\nIt works once, for 24 hours. If you did not ask for this, ignore this mail.`,
    html: `<!doctype html><html><body style="font-family: sans-serif"><p>Open this link to receive mail when your video generations end:</p><p><a href="${escapeHtml(link)}">${escapeHtml(link)}</a></p><p style="color: #666; font-size: small">It works once, for 24 hours. If you did not ask for this, ignore this mail.</p></body></html>`,
  };
}
