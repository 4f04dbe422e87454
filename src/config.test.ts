import { loadConfig } from './config';

describe('retention settings', () => {
  test('default to windows that keep a reused Idempotency-Key safe', () => {
    const { retention, temporal } = loadConfig({});
    expect(retention).toMatchObject({ jobsDays: 30, notificationsDays: 30, deliveriesDays: 30, ledgerDays: 400, apiKeysDays: 30, batchSize: 1000 });
    expect(temporal.retentionDays).toBe(7);
  });

  test.each([
    [{ TEMPORAL_RETENTION_DAYS: '30' }, /TEMPORAL_RETENTION_DAYS must be less than RETENTION_JOBS_DAYS/],
    [{ RETENTION_NOTIFICATIONS_DAYS: '31' }, /RETENTION_NOTIFICATIONS_DAYS may not exceed RETENTION_JOBS_DAYS/],
    [{ RETENTION_DELIVERIES_DAYS: '45' }, /RETENTION_DELIVERIES_DAYS may not exceed RETENTION_JOBS_DAYS/],
    [{ RETENTION_LEDGER_DAYS: '20' }, /RETENTION_LEDGER_DAYS may not be less than RETENTION_JOBS_DAYS/],
    [{ RETENTION_JOBS_DAYS: '0' }, /RETENTION_JOBS_DAYS/],
  ])('refuses %j', (env, message) => {
    expect(() => loadConfig(env)).toThrow(message);
  });
});
