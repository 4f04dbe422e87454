import { randomBytes } from 'node:crypto';
import { newApiKey } from '../api/auth';
import { generateWebhookSecret } from './webhook-signature';
import { CENSOR, secretScrubber } from './redact';

describe('secretScrubber', () => {
  const adminKey = `admin-${randomBytes(16).toString('hex')}`;
  const scrub = secretScrubber([adminKey, undefined, 'short']);

  test('censors configured values, also as JSON escapes them, and leaves short ones to their shape', () => {
    const quoted = `ops"key\\${randomBytes(8).toString('hex')}`;
    const withQuote = secretScrubber([quoted]);
    expect(withQuote(JSON.stringify({ key: quoted }))).toBe(`{"key":"${CENSOR}"}`);
    expect(scrub(`admin key ${adminKey} used`)).toBe(`admin key ${CENSOR} used`);
    expect(scrub('a short word stays')).toBe('a short word stays');
  });

  test('censors API keys, whsec_ secrets (with or without their prefix when configured) and bearer tokens by shape', () => {
    const apiKey = newApiKey();
    const secret = generateWebhookSecret();
    expect(scrub(`key=${apiKey}; secret=${secret}`)).toBe(`key=${CENSOR}; secret=${CENSOR}`);
    expect(secretScrubber([secret])(`signing with ${secret.slice('whsec_'.length)}`)).toBe(`signing with ${CENSOR}`);
    expect(scrub('{"authorization":"Bearer abc.def-ghi"}')).toBe(`{"authorization":"Bearer ${CENSOR}"}`);
    expect(scrub('authorization: basic dXNlcjpwdw==')).toBe(`authorization: basic ${CENSOR}`);
  });

  test('takes the password out of URLs and keeps the rest', () => {
    expect(scrub('connect failed: postgres://app:s3cr%40t@db.internal:5432/videogen')).toBe(`connect failed: postgres://app:${CENSOR}@db.internal:5432/videogen`);
    expect(scrub('http://127.0.0.1:3000/v1/generations')).toBe('http://127.0.0.1:3000/v1/generations');
  });

  test('leaves names that merely start like a key, and key prefixes, alone', () => {
    const text = 'function vg_admit_submission failed; key vg_AbC12 revoked; vg_submissions_total; whsec_ secrets';
    expect(scrub(text)).toBe(text);
  });
});
