import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { Payload, PayloadCodec } from '@temporalio/common';

/**
 * Prompts, results and signals are the users' data: Temporal stores them encrypted (AES-256-GCM), so its database, its
 * Web UI and anyone who reads its histories see ciphertext. Each encrypted payload names the key that sealed it, so keys
 * rotate: the first key seals, every listed key opens. A payload that is not encrypted (a history from before, or one a
 * tool wrote in the clear) passes through as it is.
 */
export const ENCRYPTED_ENCODING = 'binary/encrypted';
const KEY_ID = 'encryption-key-id';
const IV_BYTES = 12;
const TAG_BYTES = 16;

export interface PayloadKey {
  id: string;
  /** 32 bytes. */
  key: Buffer;
}

const text = new TextEncoder();
const untext = new TextDecoder();
const ENCRYPTED_ENCODING_BYTES = Buffer.from(ENCRYPTED_ENCODING);

/**
 * Random bytes for IVs, drawn 256 IVs at a time: one randomBytes call per payload cost more than its cipher. Each IV
 * is still 12 fresh random bytes, used once.
 */
let ivPool = Buffer.alloc(0);
let ivOffset = 0;
function freshIv(): Buffer {
  if (ivOffset + IV_BYTES > ivPool.length) {
    ivPool = randomBytes(IV_BYTES * 256);
    ivOffset = 0;
  }
  const iv = ivPool.subarray(ivOffset, ivOffset + IV_BYTES);
  ivOffset += IV_BYTES;
  return iv;
}

/** `id:base64,id:base64…` (the first seals): the format of PAYLOAD_KEYS. Throws with what is wrong, never the key. */
export function parsePayloadKeys(setting: string): PayloadKey[] {
  const keys = setting
    .split(',')
    .map((part) => part.trim())
    .filter(Boolean)
    .map((part, i) => {
      const [id, encoded, ...rest] = part.split(':');
      if (!id || !encoded || rest.length > 0 || !/^[A-Za-z0-9_-]{1,32}$/.test(id)) throw new Error(`key ${i + 1}: must be <id>:<base64 of 32 bytes>, the id 1-32 letters, digits, _ or -`);
      const key = Buffer.from(encoded, 'base64');
      if (key.length !== 32) throw new Error(`key ${id}: must be the base64 of 32 random bytes (openssl rand -base64 32)`);
      return { id, key };
    });
  if (keys.length === 0) throw new Error('must list at least one key');
  if (new Set(keys.map((k) => k.id)).size !== keys.length) throw new Error('key ids must differ');
  return keys;
}

/** A new key in the PAYLOAD_KEYS format. */
export const newPayloadKey = (id: string): string => `${id}:${randomBytes(32).toString('base64')}`;

/** The fields of a payload, as bytes: what gets sealed (its metadata too: it says how the data is encoded). */
function serialise(payload: Payload): Uint8Array {
  const metadata = Object.fromEntries(Object.entries(payload.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v ?? new Uint8Array()).toString('base64')]));
  return text.encode(JSON.stringify({ m: metadata, d: Buffer.from(payload.data ?? new Uint8Array()).toString('base64') }));
}

function deserialise(bytes: Uint8Array): Payload {
  const { m, d } = JSON.parse(untext.decode(bytes)) as { m: Record<string, string>; d: string };
  return { metadata: Object.fromEntries(Object.entries(m).map(([k, v]) => [k, new Uint8Array(Buffer.from(v, 'base64'))])), data: new Uint8Array(Buffer.from(d, 'base64')) };
}

export class EncryptionCodec implements PayloadCodec {
  private readonly byId: Map<string, Buffer>;
  private readonly sealing: PayloadKey;
  /** The sealing key's id as bytes: the AAD and metadata of every payload it seals. */
  private readonly sealingId: Uint8Array;

  /** seal false: decrypt only (a cluster turning encryption on, whose older workers cannot open sealed payloads yet). */
  constructor(
    keys: PayloadKey[],
    private readonly seal = true,
  ) {
    if (keys.length === 0) throw new Error('an encryption codec needs a key');
    this.sealing = keys[0];
    this.sealingId = text.encode(this.sealing.id);
    this.byId = new Map(keys.map((k) => [k.id, k.key]));
  }

  async encode(payloads: Payload[]): Promise<Payload[]> {
    if (!this.seal) return payloads;
    return payloads.map((payload) => {
      const iv = freshIv();
      const cipher = createCipheriv('aes-256-gcm', this.sealing.key, iv);
      // The key id is authenticated too: a payload cannot be passed off as sealed by another key.
      cipher.setAAD(this.sealingId);
      const sealed = Buffer.concat([iv, cipher.update(serialise(payload)), cipher.final(), cipher.getAuthTag()]);
      return { metadata: { encoding: text.encode(ENCRYPTED_ENCODING), [KEY_ID]: this.sealingId.slice() }, data: new Uint8Array(sealed) };
    });
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((payload) => {
      const encoding = payload.metadata?.encoding;
      if (!encoding || !ENCRYPTED_ENCODING_BYTES.equals(encoding)) return payload;
      const keyIdBytes = payload.metadata?.[KEY_ID];
      const keyId = keyIdBytes ? untext.decode(keyIdBytes) : '';
      const key = this.byId.get(keyId);
      if (!key) throw new Error(`payload sealed with key "${keyId}", which is not in PAYLOAD_KEYS`);
      const data = Buffer.from(payload.data ?? new Uint8Array());
      if (data.length < IV_BYTES + TAG_BYTES) throw new Error('encrypted payload too short');
      const decipher = createDecipheriv('aes-256-gcm', key, data.subarray(0, IV_BYTES));
      decipher.setAAD(text.encode(keyId));
      decipher.setAuthTag(data.subarray(data.length - TAG_BYTES));
      return deserialise(Buffer.concat([decipher.update(data.subarray(IV_BYTES, data.length - TAG_BYTES)), decipher.final()]));
    });
  }
}
