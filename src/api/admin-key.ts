import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, type Config } from '../config';

const FILE_NAME = 'admin-api-key';

/**
 * The admin key: ADMIN_API_KEY, or — in development and test only, where the configuration lets it be unset — a key kept
 * in DATA_DIR/admin-api-key (mode 0600), made on first start. Its path is what gets printed, never the key: terminals,
 * CI logs and log shippers keep what they are shown.
 */
export function resolveAdminApiKey(config: Config): { key: string; file?: string } {
  if (config.api.adminApiKey) return { key: config.api.adminApiKey };
  const file = path.resolve(config.database.dataDir, FILE_NAME);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const made = `vgadmin_${randomBytes(24).toString('base64url')}`;
  try {
    fs.writeFileSync(file, `${made}\n`, { mode: 0o600, flag: 'wx' });
    return { key: made, file };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  // Kept from an earlier start (or made just now by another API process): only its owner may read it.
  fs.chmodSync(file, 0o600);
  const key = fs.readFileSync(file, 'utf8').trim();
  if (key.length < 32) throw new ConfigError(`${file} does not hold an admin key of 32 characters or more: delete it to have one made`);
  return { key, file };
}
