import { KEY_PROBE_MAX_BATCH, KeyProbes } from './key-probes';

/** A look-up that records what it was asked and answers from a fixed set of taken keys. */
function recordingLookUp(taken: string[]) {
  const calls: Array<{ userId: string; keys: string[] }> = [];
  let fail: Error | undefined;
  return {
    calls,
    failWith: (err?: Error) => (fail = err),
    lookUp: async (userId: string, keys: string[]) => {
      calls.push({ userId, keys });
      if (fail) throw fail;
      return new Set(keys.filter((k) => taken.includes(`${userId}/${k}`)));
    },
  };
}

describe('KeyProbes', () => {
  test('keys asked about together are looked up in one statement per user, each answered for itself', async () => {
    const probe = recordingLookUp(['u1/old']);
    const probes = new KeyProbes(probe.lookUp, 20);
    const answers = await Promise.all([probes.taken('u1', 'new-1'), probes.taken('u1', 'old'), probes.taken('u1', 'new-2'), probes.taken('u2', 'old'), probes.taken('u1', 'old')]);
    expect(answers).toEqual([false, true, false, false, true]);
    expect(probe.calls).toEqual([
      { userId: 'u1', keys: ['new-1', 'old', 'new-2'] },
      { userId: 'u2', keys: ['old'] },
    ]);
    expect(probes.gathering).toBe(0);
  });

  test('a full batch is looked up at once, and the next key opens a batch of its own', async () => {
    const probe = recordingLookUp([]);
    const probes = new KeyProbes(probe.lookUp, 60_000);
    const full = Array.from({ length: KEY_PROBE_MAX_BATCH }, (_, i) => probes.taken('u1', `k${i}`));
    expect(await Promise.all(full)).toEqual(Array(KEY_PROBE_MAX_BATCH).fill(false));
    expect(probe.calls).toHaveLength(1);
    expect(probes.gathering).toBe(0);
    void probes.taken('u1', 'later');
    expect(probes.gathering).toBe(1);
    expect(probe.calls).toHaveLength(1);
  });

  test("a failed look-up fails every submit that waited on it, and the next key is looked up afresh", async () => {
    const probe = recordingLookUp(['u1/a']);
    const probes = new KeyProbes(probe.lookUp, 10);
    probe.failWith(new Error('database down'));
    const failed = [probes.taken('u1', 'a'), probes.taken('u1', 'b')];
    for (const p of failed) await expect(p).rejects.toThrow('database down');
    probe.failWith();
    await expect(probes.taken('u1', 'a')).resolves.toBe(true);
    expect(probe.calls.map((c) => c.keys)).toEqual([['a', 'b'], ['a']]);
  });
});
