import { Writable } from 'node:stream';
import { createLogger } from './logger';

describe('createLogger', () => {
  test("a line carries its own fields only, never an earlier line's", () => {
    const lines: Array<Record<string, unknown>> = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString('utf8')) as Record<string, unknown>);
        done();
      },
    });
    const logger = createLogger('test', 'info', { destination });
    logger.warn({ jobId: 'gen_a', error: { type: 'GpuTaskHandedBack' } }, 'activity failed');
    logger.child({ component: 'gpu' }).info({ jobId: 'gen_b' }, 'backend job accepted');
    logger.info('worker stopped');
    expect(lines.map(({ msg, jobId, error, component }) => ({ msg, jobId, error, component }))).toEqual([
      { msg: 'activity failed', jobId: 'gen_a', error: { type: 'GpuTaskHandedBack' }, component: undefined },
      { msg: 'backend job accepted', jobId: 'gen_b', error: undefined, component: 'gpu' },
      { msg: 'worker stopped', jobId: undefined, error: undefined, component: undefined },
    ]);
  });
});
