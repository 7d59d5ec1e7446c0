#!/usr/bin/env node
// Prints lines of code per folder (lib/*, native, test, scripts) so growth stays visible.
'use strict';
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const exts = new Set(['.ts', '.cc', '.h', '.cjs', '.js', '.mjs']);

function count(dir) {
  let files = 0;
  let lines = 0;
  if (!fs.existsSync(dir)) return { files, lines };
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      const sub = count(p);
      files += sub.files;
      lines += sub.lines;
    } else if (exts.has(path.extname(entry.name))) {
      files += 1;
      lines += fs.readFileSync(p, 'utf8').split('\n').filter((l) => l.trim() !== '').length;
    }
  }
  return { files, lines };
}

const rows = [];
for (const d of fs.readdirSync(path.join(root, 'lib'), { withFileTypes: true })) {
  if (d.isDirectory()) rows.push([`lib/${d.name}`, count(path.join(root, 'lib', d.name))]);
}
rows.push(['lib/*.ts', { files: 0, lines: 0 }]);
for (const f of fs.readdirSync(path.join(root, 'lib'))) {
  if (f.endsWith('.ts')) {
    const n = fs.readFileSync(path.join(root, 'lib', f), 'utf8').split('\n').filter((l) => l.trim() !== '').length;
    rows[rows.length - 1][1].files += 1;
    rows[rows.length - 1][1].lines += n;
  }
}
let core = 0;
for (const [, c] of rows) core += c.lines;
for (const d of ['native', 'test', 'scripts']) rows.push([d, count(path.join(root, d))]);

console.log('folder'.padEnd(16) + 'files'.padStart(6) + 'lines'.padStart(8));
for (const [name, c] of rows) console.log(name.padEnd(16) + String(c.files).padStart(6) + String(c.lines).padStart(8));
console.log('lib total'.padEnd(16) + ''.padStart(6) + String(core).padStart(8) + '  (non-blank lines)');
