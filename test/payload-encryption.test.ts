import { Client, Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { ENCRYPTED_ENCODING, EncryptionCodec, newPayloadKey, parsePayloadKeys } from '../src/lib/payload-codec';
import { apiClient, startStack, type Stack } from './harness';
import { TEST_PAYLOAD_KEYS } from './payload-keys';

/**
 * Prompts and results are sealed before they reach Temporal: its stored history holds ciphertext, the service's own
 * workers read it, and operators read it through the admin-only codec endpoint the Web UI and CLI call.
 */
jest.setTimeout(120_000);

let stack: Stack;
let raw: Client;
let connection: Connection;
beforeAll(async () => {
  stack = await startStack();
  // A client without the codec: what Temporal's database, Web UI and CLI see.
  connection = await Connection.connect({ address: stack.config.temporal.address });
  raw = new Client({ connection });
});
afterAll(async () => {
  await connection?.close();
  await stack?.close();
});

type JsonPayload = { metadata: Record<string, string>; data: string };
const toJson = (p: temporal.api.common.v1.IPayload): JsonPayload => ({
  metadata: Object.fromEntries(Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v).toString('base64')])),
  data: Buffer.from(p.data ?? new Uint8Array()).toString('base64'),
});

/**
 * Every payload in a workflow's stored history, as Temporal keeps it, but two kinds the SDK writes itself and the server
 * reads: search attributes (indexed: user id, tier, status, backend job id) and markers' bookkeeping (a patch's id; a
 * local activity's sequence number, type and times — its result is a payload of its own, and sealed).
 */
const sdkBookkeeping = (where: string, key: string) =>
  key === 'searchAttributes' || (where.endsWith('markerRecordedEventAttributes.details') && (key === 'patch-data' || key === 'data'));

async function storedPayloads(workflowId: string): Promise<Array<{ where: string; payload: temporal.api.common.v1.IPayload }>> {
  const history = await raw.workflow.getHandle(workflowId).fetchHistory();
  const found: Array<{ where: string; payload: temporal.api.common.v1.IPayload }> = [];
  const walk = (value: unknown, where: string) => {
    if (!value || typeof value !== 'object' || value instanceof Uint8Array) return;
    const record = value as Record<string, unknown>;
    if (record.metadata && record.data instanceof Uint8Array) found.push({ where, payload: record as temporal.api.common.v1.IPayload });
    else for (const [key, child] of Object.entries(record)) if (!sdkBookkeeping(where, key)) walk(child, `${where}.${key}`);
  };
  (history.events ?? []).forEach((event, i) => walk(event, `event ${i + 1}`));
  return found;
}

describe('payload encryption', () => {
  const prompt = `a lighthouse keeper's secret garden ${Date.now()}`;
  let jobId: string;
  let payloads: temporal.api.common.v1.IPayload[];
  const encodingOf = (p: temporal.api.common.v1.IPayload) => Buffer.from(p.metadata!.encoding!).toString();

  test("a job's prompt and result are ciphertext in Temporal, and the job runs to its end", async () => {
    const user = apiClient(stack.apiUrl, (await stack.createUser()).apiKey);
    const submitted = await user.submit({ prompt });
    expect(submitted.status).toBe(202);
    jobId = submitted.body.id;
    expect(await user.waitForTerminal(jobId)).toMatchObject({ status: 'succeeded', video_url: expect.any(String) });

    // The service's own client opens the sealed result. (The row is terminal before the workflow completes: wait for it.)
    expect(await stack.client.workflow.getHandle(jobId).result()).toMatchObject({ status: 'succeeded' });
    const stored = await storedPayloads(jobId);
    payloads = stored.map((s) => s.payload);
    expect(payloads.length).toBeGreaterThan(3);
    expect(stored.filter((s) => encodingOf(s.payload) !== ENCRYPTED_ENCODING).map((s) => `${s.where}: ${encodingOf(s.payload)}`)).toEqual([]);
    const bytes = Buffer.concat(payloads.map((p) => Buffer.from(p.data!)));
    expect(bytes.includes(Buffer.from('lighthouse keeper'))).toBe(false);
    expect(bytes.includes(Buffer.from('https://'))).toBe(false);
  });

  test('the codec endpoint opens them for an operator, by the admin key or a signed-in session, and for nobody else', async () => {
    const body = JSON.stringify({ payloads: payloads.map(toJson) });
    const decode = (headers: Record<string, string>) => fetch(`${stack.adminUrl}/codec/decode`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });

    const opened = await decode({ authorization: `Bearer ${stack.adminApiKey}` });
    expect(opened.status).toBe(200);
    const decoded = ((await opened.json()) as { payloads: JsonPayload[] }).payloads.map((p) => Buffer.from(p.data, 'base64').toString());
    expect(decoded.some((d) => d.includes(prompt))).toBe(true);
    expect(decoded.some((d) => d.includes('"status":"succeeded"'))).toBe(true);

    const userKey = (await stack.createUser()).apiKey;
    const refusedHeaders: Array<Record<string, string>> = [{}, { authorization: `Bearer ${userKey}` }, { cookie: 'vg_codec=9999999999999.forged' }];
    for (const headers of refusedHeaders) {
      const refused = await decode(headers);
      expect(refused.status).toBe(401);
      expect(await refused.json()).toMatchObject({ error: { code: 'unauthorized' } });
    }

    // The Web UI's way: sign in once with the admin key; the cookie then opens payloads.
    const wrong = await fetch(`${stack.adminUrl}/codec/login`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'key=not-the-key' });
    expect(wrong.status).toBe(401);
    const login = await fetch(`${stack.adminUrl}/codec/login`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `key=${encodeURIComponent(stack.adminApiKey)}` });
    expect(login.status).toBe(200);
    const cookie = login.headers.get('set-cookie')!;
    expect(cookie).toMatch(/HttpOnly/i);
    expect(cookie).toMatch(/SameSite=Strict/i);
    expect((await decode({ cookie: cookie.split(';')[0] })).status).toBe(200);
  });

  test("browsers may call it only from the Web UI's origin", async () => {
    const preflight = (origin: string) =>
      fetch(`${stack.adminUrl}/codec/decode`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,x-namespace' } });
    const ui = await preflight('http://127.0.0.1:8233');
    expect(ui.status).toBe(204);
    expect(ui.headers.get('access-control-allow-origin')).toBe('http://127.0.0.1:8233');
    expect(ui.headers.get('access-control-allow-credentials')).toBe('true');
    const other = await preflight('https://evil.example');
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
  });
});

describe('keys rotate', () => {
  const plain = { metadata: { encoding: new TextEncoder().encode('json/plain') }, data: new TextEncoder().encode('"a fox in the snow"') };

  test('the first key seals, every listed key opens, an unknown or tampered payload is refused, a plain one passes', async () => {
    const [oldKey, newKey] = [newPayloadKey('old'), newPayloadKey('new')];
    const [sealedByOld] = await new EncryptionCodec(parsePayloadKeys(oldKey)).encode([plain]);
    const rotated = new EncryptionCodec(parsePayloadKeys(`${newKey},${oldKey}`));
    expect(await rotated.decode([sealedByOld])).toEqual([plain]);
    const [sealedByNew] = await rotated.encode([plain]);
    expect(Buffer.from(sealedByNew.metadata!['encryption-key-id']!).toString()).toBe('new');

    await expect(new EncryptionCodec(parsePayloadKeys(newKey)).decode([sealedByOld])).rejects.toThrow(/key "old", which is not in PAYLOAD_KEYS/);
    const tampered = { ...sealedByNew, data: Uint8Array.from(sealedByNew.data!, (b, i) => (i === 20 ? b ^ 1 : b)) };
    await expect(rotated.decode([tampered])).rejects.toThrow();
    expect(await rotated.decode([plain])).toEqual([plain]);
    expect(TEST_PAYLOAD_KEYS).toMatch(/^fixture1:/);

    // Decrypt only (PAYLOAD_ENCRYPT=false, the first step of turning encryption on): opens sealed payloads, seals none.
    const openingOnly = new EncryptionCodec(parsePayloadKeys(`${newKey},${oldKey}`), false);
    expect(await openingOnly.encode([plain])).toEqual([plain]);
    expect(await openingOnly.decode([sealedByNew])).toEqual([plain]);
  });

  test('a malformed key list is refused with the reason, never the key', () => {
    const short = Buffer.from('too short').toString('base64');
    expect(() => parsePayloadKeys(`k1:${short}`)).toThrow(/k1: must be the base64 of 32 random bytes/);
    expect(() => parsePayloadKeys(`k1:${short}`)).not.toThrow(new RegExp(short.replace(/[+/=]/g, '.')));
    expect(() => parsePayloadKeys(`${newPayloadKey('a')},${newPayloadKey('a')}`)).toThrow(/ids must differ/);
    expect(() => parsePayloadKeys('')).toThrow(/at least one key/);
  });
});
