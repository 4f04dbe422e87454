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
    // Every exec-form command that runs node, in the image and in compose, is node, the service's arguments, the entry.
    const execForms = [...read('Dockerfile').matchAll(/^CMD (\["node".*\])$/gm), ...read('docker-compose.yml').matchAll(/command: (\["node".*\])$/gm)];
    expect(execForms.length).toBeGreaterThanOrEqual(5);
    for (const [, command] of execForms) {
      const argv = JSON.parse(command) as string[];
      expect(argv).toEqual(['node', ...serviceNodeArgs(argv[argv.length - 1])]);
    }
    const scripts = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts;
    for (const name of ['api', 'worker', 'simulator']) {
      const entry = scripts[name].split(' ').pop()!;
      expect(scripts[name]).toBe(['node', ...serviceNodeArgs(entry)].join(' '));
    }
  });
});
