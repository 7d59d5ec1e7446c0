/**
 * Jest setup: tests run kiln.compile with the bundle cache off and pointed away from the
 * user's cache, so a test's first call always compiles (as its assertions expect) and no
 * run leaves bundles behind or loads ones from an earlier run. Tests of the cache pass
 * their own options, or start children with their own environment (test/bundle-e2e*).
 */
 
const { join } = require('path');
 
const { tmpdir } = require('os');

process.env.KILN_CACHE = 'off';
process.env.KILN_CACHE_DIR = join(tmpdir(), `kiln-jest-no-cache-${process.pid}`); // never created in 'off' mode
