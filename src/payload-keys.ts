import fs from 'node:fs';
import path from 'node:path';
import type { DataConverter } from '@temporalio/common';
import { ConfigError, type Config } from './config';
import { EncryptionCodec, newPayloadKey, parsePayloadKeys, type PayloadKey } from './lib/payload-codec';

const FILE_NAME = 'payload-keys';

/**
 * The keys Temporal payloads are sealed with: PAYLOAD_KEYS, or — in development and test only, where the configuration
 * lets it be unset — one key kept in DATA_DIR/payload-keys (mode 0600), made on first start and shared by every process
 * of that folder (`npm start`'s API and worker). Like the admin key, its path may be printed, never the key.
 */
export function resolvePayloadKeys(config: Config): PayloadKey[] {
  if (config.temporal.payloadKeys) return config.temporal.payloadKeys;
  const file = path.resolve(config.database.dataDir, FILE_NAME);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  try {
    fs.writeFileSync(file, `${newPayloadKey('dev1')}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  fs.chmodSync(file, 0o600);
  try {
    return parsePayloadKeys(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ConfigError(`${file}: ${(err as Error).message} (delete it to have a key made)`);
  }
}

/** What every Temporal client and worker of the service converts payloads with: JSON, then sealed (src/lib/payload-codec.ts). */
export function serviceDataConverter(config: Config): DataConverter {
  return { payloadCodecs: [new EncryptionCodec(resolvePayloadKeys(config), config.temporal.sealPayloads)] };
}
