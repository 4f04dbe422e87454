import fs from 'node:fs';
import path from 'node:path';
import { SERVICE_NODE_OPTIONS, serviceNodeOptions } from '../scripts/lib/node-options';

describe('service Node flags', () => {
  it('are the ones the image starts its processes with', () => {
    const dockerfile = fs.readFileSync(path.resolve(__dirname, '../Dockerfile'), 'utf8');
    expect(dockerfile).toMatch(new RegExp(`^ENV NODE_OPTIONS="${SERVICE_NODE_OPTIONS}"$`, 'm'));
  });

  it('come after flags the caller set, which are kept', () => {
    expect(serviceNodeOptions(undefined)).toBe(SERVICE_NODE_OPTIONS);
    expect(serviceNodeOptions('  ')).toBe(SERVICE_NODE_OPTIONS);
    expect(serviceNodeOptions('--enable-source-maps')).toBe(`--enable-source-maps ${SERVICE_NODE_OPTIONS}`);
  });
});
