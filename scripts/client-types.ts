/**
 * `npm run generate -w clients/typescript`: writes the client package's types (clients/typescript/src/schema.ts) from the
 * OpenAPI document the API serves at /openapi.json, by openapi-typescript. With `--check` it writes nothing and exits 1
 * when the committed file differs from what the current document generates (npm test runs it): a changed route or
 * schema must come with regenerated client types.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { openApiDocument } from '../src/api/openapi';

const root = path.resolve(__dirname, '..');
const target = path.join(root, 'clients/typescript/src/schema.ts');

/** The generator's own CLI, fed the document on stdin: the same file whoever runs it, no temporary file. */
export function generatedClientTypes(): string {
  const bin = path.join(root, 'node_modules/.bin/openapi-typescript');
  return execFileSync(bin, ['--default-non-nullable', 'false'], { input: JSON.stringify(openApiDocument()), encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

if (require.main === module) {
  const fresh = generatedClientTypes();
  const relative = path.relative(root, target);
  if (process.argv.includes('--check')) {
    const committed = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : '';
    if (committed !== fresh) {
      process.stderr.write(`${relative} is stale against the OpenAPI document: run \`npm run generate -w clients/typescript\` and commit it\n`);
      process.exit(1);
    }
    process.stdout.write(`${relative} matches the OpenAPI document\n`);
  } else {
    fs.writeFileSync(target, fresh);
    process.stdout.write(`wrote ${relative}\n`);
  }
}
