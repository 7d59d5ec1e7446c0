#!/usr/bin/env node
// Startup benchmark (cold vs warm fresh processes): see lib/bench/startup.ts. Needs dist/
// (npm run build:ts); writes bench-results/startup.json.
'use strict';
require('../dist/bench/startup.js')
  .startupBench(process.argv.slice(2))
  .then((code) => {
    process.exitCode = code;
  });
