import { randomBytes } from 'node:crypto';

/** What scripts/topology.ts passes to the end-to-end suites, in TOPOLOGY_* variables. */
export function setting(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this suite with \`npm run topology:test\` (scripts/topology.ts)`);
  return value;
}

/** A new user, created through the given API (the admin key is the same on every API). */
export async function createUser(apiUrl: string, tier = 'pro'): Promise<{ userId: string; apiKey: string }> {
  const res = await fetch(`${apiUrl}/admin/users`, {
    method: 'POST',
    headers: { authorization: `Bearer ${setting('TOPOLOGY_ADMIN_API_KEY')}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: `topology-${randomBytes(3).toString('hex')}`, tier }),
  });
  if (res.status !== 201) throw new Error(`create user: ${res.status} ${await res.text()}`);
  const body = (await res.json()) as { user: { id: string }; api_key: string };
  return { userId: body.user.id, apiKey: body.api_key };
}

export function note(line: string): void {
  process.stdout.write(`    ${line}\n`);
}
