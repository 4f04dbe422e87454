/**
 * The production-topology suite (test/topology/*.e2e.ts): run only by `npm run topology:test` (scripts/topology.ts),
 * which starts the topology and passes its addresses in TOPOLOGY_* variables. Not part of `npm test`'s match.
 */
const base = require('./jest.config');
module.exports = {
  ...base,
  testMatch: ['<rootDir>/test/topology/**/*.e2e.ts'],
  globalSetup: undefined,
  globalTeardown: undefined,
  testTimeout: 90_000,
};
