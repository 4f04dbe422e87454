import fs from 'node:fs';
import path from 'node:path';
import type { DataConverter } from '@temporalio/common';
import { EncryptionCodec, parsePayloadKeys } from '../src/lib/payload-codec';

/**
 * The payload key every test stack, the history recorder and the replay test share: a key for tests only, committed
 * with the recorded histories it opens (test/fixtures/histories).
 */
export const TEST_PAYLOAD_KEYS = fs.readFileSync(path.join(__dirname, 'fixtures', 'payload-keys'), 'utf8').trim();

export const testDataConverter = (keys = TEST_PAYLOAD_KEYS): DataConverter => ({ payloadCodecs: [new EncryptionCodec(parsePayloadKeys(keys))] });
