import fs from 'node:fs';
import path from 'node:path';
import { SERVICE_NODE_ARGS, SERVICE_NODE_OPTIONS, serviceNodeArgs, serviceNodeOptions } from '../scripts/lib/node-options';

const read = (file: string) => fs.readFileSync(path.resolve(__dirname, '..', file), 'utf8');

describe('service Node flags', () => {
  it('are the ones the image starts its processes with', () => {
    expect(read('Dockerfile')).toMatch(new RegExp(`^ENV NODE_OPTIONS="${SERVICE_NODE_OPTIONS}"$`, 'm'));
  });

  it('come after flags the caller set, which are kept', () => {
    expect(serviceNodeOptions(undefined)).toBe(SERVICE_NODE_OPTIONS);
    expect(serviceNodeOptions('  ')).toBe(SERVICE_NODE_OPTIONS);
    expect(serviceNodeOptions('--enable-source-maps')).toBe(`--enable-source-maps ${SERVICE_NODE_OPTIONS}`);
  });

  it('on the command line: every service the image, compose and npm scripts start takes them before its entry', () => {
    expect(SERVICE_NODE_ARGS.length).toBeGreaterThan(0);
    const expected = JSON.stringify(['node', ...serviceNodeArgs('ENTRY')]).replace('"ENTRY"]', '');
    // Every exec-form command that runs node, in the image and in compose.
    const execForms = [...read('Dockerfile').matchAll(/^CMD (\["node".*\])$/gm), ...read('docker-compose.yml').matchAll(/command: (\["node".*\])$/gm)].map((m) => m[1]);
    expect(execForms.length).toBeGreaterThanOrEqual(5);
    for (const command of execForms) expect(command.replaceAll(', ', ',')).toContain(expected);
    const scripts = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts;
    for (const name of ['api', 'worker', 'simulator']) expect(scripts[name]).toMatch(new RegExp(`^node ${SERVICE_NODE_ARGS.join(' ')} --import tsx `));
  });
});
