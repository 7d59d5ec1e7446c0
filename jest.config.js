/** Tests run from TypeScript sources through swc; `npm run typecheck` type-checks them. */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }] },
  testTimeout: 60000,
  setupFiles: ['<rootDir>/test/helpers/cache-env.cjs'],
  reporters: ['default', '<rootDir>/scripts/jest-summary.cjs'],
};
