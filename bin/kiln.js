#!/usr/bin/env node
'use strict';
// The kiln command; the implementation lives in dist/cli (compiled from lib/cli).
require('../dist/cli/main.js')
  .main(process.argv.slice(2))
  .then((code) => {
    process.exitCode = code;
  });
