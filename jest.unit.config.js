/** Pure-logic and in-process unit tests that need neither Temporal nor Postgres. */
const base = require('./jest.config');
module.exports = { ...base, globalSetup: undefined, globalTeardown: undefined };
