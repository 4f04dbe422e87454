/**
 * Takes secrets out of text bound for a log or a terminal: the values this process was configured with, and anything
 * shaped like a secret of ours (whsec_ secrets, vg_ API keys, vgadmin_ keys, bearer tokens, passwords in URLs), so a
 * key pasted into a header, an error message or a URL is censored even where no code knew it was one.
 */
export const CENSOR = '[redacted]';

// Our keys are 32 characters after the prefix, which spares names like vg_admit_submission.
const SECRET_SHAPES = [/whsec_[A-Za-z0-9+/=]{16,}/.source, /\bvg(?:admin)?_[A-Za-z0-9_-]{32,}/.source];
/** The scheme stays, so a reader still sees that a credential was there. */
const AUTH_SCHEMES = /\b(Bearer|Basic)\s+[^\s"'\\,;]+/gi;
/** `scheme://user:password@`: the password goes; the user and host stay (they help whoever reads the error). */
const URL_PASSWORD = /(\b[a-z][a-z0-9+.-]*:\/\/[^\s:/@"'\\]*:)[^\s@/"'\\]+@/gi;

/** Configured secrets shorter than this are censored only by their shape: a short value would blank out ordinary words. */
const MIN_LITERAL = 12;

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

export type Scrubber = (text: string) => string;

/** A function that censors `secrets` (exact values, as written and as JSON escapes them) and every secret-shaped string. */
export function secretScrubber(secrets: ReadonlyArray<string | undefined> = []): Scrubber {
  const literals = new Set<string>();
  for (const secret of secrets) {
    if (!secret || secret.length < MIN_LITERAL) continue;
    literals.add(secret);
    literals.add(JSON.stringify(secret).slice(1, -1));
    // A whsec_ secret's key part travels alone too (signing strips the prefix).
    if (secret.startsWith('whsec_')) literals.add(secret.slice('whsec_'.length));
  }
  // Longest first, so a secret that contains another is censored whole.
  const exact = [...literals].sort((a, b) => b.length - a.length).map(escapeRegExp);
  const secretsAndShapes = new RegExp([...exact, ...SECRET_SHAPES].join('|'), 'g');
  return (text) => text.replace(secretsAndShapes, CENSOR).replace(AUTH_SCHEMES, `$1 ${CENSOR}`).replace(URL_PASSWORD, `$1${CENSOR}@`);
}
