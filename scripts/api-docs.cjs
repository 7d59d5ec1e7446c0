#!/usr/bin/env node
'use strict';
/**
 * `npm run docs:api`: docs/API.md, the API reference, generated from the package's type
 * declarations (dist/index.d.ts, built by `npm run build:ts`) and their JSDoc with the
 * TypeScript compiler API. It walks every export of the entry point: functions with their
 * signatures, classes (the Tensor, the error classes) with their public members, option and
 * result interfaces with their fields, and type aliases. For each error class it lists the
 * codes lib/ throws as `new <Class>('KILN_…')`.
 *
 *   node scripts/api-docs.cjs           write docs/API.md
 *   node scripts/api-docs.cjs --check   exit 1 when docs/API.md is out of date
 *
 * `generateApiDoc()` returns the text without writing it (test/docs.test.ts compares it with
 * the committed file, so the reference cannot drift from the code). Members and symbols
 * tagged `@internal` are left out. No dependency beyond typescript (a devDependency).
 */
const fs = require('node:fs');
const path = require('node:path');
const ts = require('typescript');

const ROOT = path.join(__dirname, '..');
const OUT = path.join('docs', 'API.md');
const FLAGS = ts.TypeFormatFlags.NoTruncation | ts.TypeFormatFlags.UseSingleQuotesForStringLiteralType;

/** JSDoc text of a symbol or signature, with its tags (other than @internal) appended. */
function docOf(thing, checker) {
  const text = ts.displayPartsToString(thing.getDocumentationComment(checker)).trim();
  const tags = (thing.getJsDocTags ? thing.getJsDocTags(checker) : [])
    .filter((t) => t.name !== 'internal')
    .map((t) => `*@${t.name}* ${ts.displayPartsToString(t.text ?? [])}`.trim());
  return [text, ...tags].filter(Boolean).join('\n\n');
}

const isInternal = (node) => ts.getJSDocTags(node).some((t) => t.tagName.text === 'internal');

/** A markdown table cell: one line, pipes escaped. */
const cell = (s) => s.replace(/\s*\n\s*/g, ' ').replace(/\|/g, '\\|');

/** Markdown heading anchors as GitHub makes them. */
const anchor = (s) =>
  s
    .toLowerCase()
    .replace(/[^\w\- ]/g, '')
    .replace(/ /g, '-');

/** The error codes lib/ throws per error class, from `new XError('KILN_…'` in its sources. */
function errorCodes(root) {
  const codes = new Map();
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts')) {
        for (const m of fs.readFileSync(p, 'utf8').matchAll(/new (\w+Error)\(\s*['"`](KILN_[A-Z0-9_]+)/g)) {
          if (!codes.has(m[1])) codes.set(m[1], new Set());
          codes.get(m[1]).add(m[2]);
        }
      }
    }
  };
  walk(path.join(root, 'lib'));
  return codes;
}

/** Generates the API reference; `root` is the package root (dist/ must be built). */
function generateApiDoc({ root = ROOT } = {}) {
  const entry = path.join(root, 'dist', 'index.d.ts');
  if (!fs.existsSync(entry)) throw new Error(`${entry} is missing: run \`npm run build:ts\` first`);
  const program = ts.createProgram([entry], {
    noEmit: true,
    strict: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.Node10,
    lib: ['lib.es2022.d.ts', 'lib.esnext.disposable.d.ts'],
    types: ['node'],
    typeRoots: [path.join(root, 'node_modules', '@types')],
  });
  const checker = program.getTypeChecker();
  const moduleSymbol = checker.getSymbolAtLocation(program.getSourceFile(entry));
  const exported = checker.getExportsOfModule(moduleSymbol).map((s) => ({ name: s.getName(), symbol: s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s }));
  const exportedNames = new Set(exported.map((e) => e.name));

  /** A type as text; a type alias that the package does not export is spelled out. */
  const typeText = (type) => {
    const alias = type.aliasSymbol;
    return checker.typeToString(type, undefined, alias && !exportedNames.has(alias.getName()) ? FLAGS | ts.TypeFormatFlags.InTypeAlias : FLAGS);
  };
  /**
   * A type annotation as declared (`Uint8Array`, `Tensor | null`), except that a reference to
   * a type alias the package does not export is spelled out, and `ns.Name` becomes `Name`.
   */
  const nodeText = (typeNode) => {
    const base = typeNode.getStart();
    const edits = [];
    const visit = (n) => {
      if (ts.isTypeReferenceNode(n)) {
        let sym = checker.getSymbolAtLocation(ts.isQualifiedName(n.typeName) ? n.typeName.right : n.typeName);
        if (sym && sym.flags & ts.SymbolFlags.Alias) sym = checker.getAliasedSymbol(sym);
        // Spell out the package's own unexported aliases (CacheMode); keep Record, Readonly, ….
        const own = sym && sym.flags & ts.SymbolFlags.TypeAlias && sym.declarations.some((d) => !program.isSourceFileDefaultLibrary(d.getSourceFile()) && !program.isSourceFileFromExternalLibrary(d.getSourceFile()));
        if (own && !exportedNames.has(sym.getName())) {
          edits.push([n.getStart() - base, n.getEnd() - base, typeText(checker.getTypeFromTypeNode(n))]);
          return;
        }
        if (ts.isQualifiedName(n.typeName)) edits.push([n.typeName.getStart() - base, n.typeName.getEnd() - base, n.typeName.right.getText()]);
      }
      ts.forEachChild(n, visit);
    };
    visit(typeNode);
    let text = typeNode.getText();
    for (const [from, to, repl] of edits.sort((a, b) => b[0] - a[0])) text = text.slice(0, from) + repl + text.slice(to);
    return text.replace(/\s*\n\s*/g, ' ');
  };
  const typeOfNode = (node) => (node.type ? nodeText(node.type) : typeText(checker.getTypeAtLocation(node)));
  const signatureText = (sig) => {
    const typeParams = sig.typeParameters?.length ? `<${sig.typeParameters.map((t) => checker.typeToString(t, undefined, FLAGS) + (t.getConstraint() ? ` extends ${typeText(t.getConstraint())}` : '')).join(', ')}>` : '';
    const params = sig.parameters.map((p) => {
      const decl = p.valueDeclaration;
      const rest = decl && decl.dotDotDotToken ? '...' : '';
      const optional = decl && (decl.questionToken || decl.initializer) ? '?' : '';
      return `${rest}${p.getName()}${optional}: ${decl ? typeOfNode(decl) : typeText(checker.getTypeOfSymbol(p))}`;
    });
    const returns = sig.declaration && sig.declaration.type ? nodeText(sig.declaration.type) : typeText(sig.getReturnType());
    return `${typeParams}(${params.join(', ')}): ${returns}`;
  };

  const kindOf = ({ symbol }) => {
    const d = symbol.declarations?.[0];
    if (!d) return 'other';
    if (ts.isClassDeclaration(d)) return /Error$/.test(symbol.getName()) ? 'error' : 'class';
    if (ts.isFunctionDeclaration(d)) return 'function';
    if (ts.isVariableDeclaration(d)) return checker.getTypeOfSymbol(symbol).getCallSignatures().length ? 'function' : 'other';
    if (ts.isInterfaceDeclaration(d)) return 'interface';
    if (ts.isTypeAliasDeclaration(d)) return 'type';
    return 'other';
  };
  const byName = (a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  const groups = { function: [], class: [], interface: [], type: [], error: [], other: [] };
  for (const e of exported) if (!(e.symbol.declarations ?? []).every(isInternal)) groups[kindOf(e)].push(e);
  for (const g of Object.values(groups)) g.sort(byName);
  // Documented functions get a section each; the rest (the op functions) share one table.
  const documented = groups.function.filter((e) => docOf(e.symbol, checker));
  const plain = groups.function.filter((e) => !docOf(e.symbol, checker));
  // KilnError first: the others extend it.
  groups.error.sort((a, b) => (a.name === 'KilnError' ? -1 : b.name === 'KilnError' ? 1 : byName(a, b)));

  const out = [];
  const say = (...lines) => out.push(...lines);
  const functionSignatures = (e) => checker.getTypeOfSymbol(e.symbol).getCallSignatures().map((s) => `${e.name}${signatureText(s)}`);

  const memberRows = (decl) => {
    const props = [];
    const methods = [];
    for (const m of decl.members) {
      if (!m.name || isInternal(m) || ts.isPrivateIdentifier(m.name)) continue; // constructors, #private, @internal
      const mods = ts.getCombinedModifierFlags(m);
      if (mods & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) continue;
      const name = m.name.getText();
      const sym = m.symbol;
      const doc = sym ? docOf(sym, checker) : '';
      const isStatic = mods & ts.ModifierFlags.Static ? 'static ' : '';
      if (ts.isMethodDeclaration(m) || ts.isMethodSignature(m)) {
        const sig = checker.getSignatureFromDeclaration(m);
        methods.push([`${isStatic}${name}${signatureText(sig)}`, docOf(sig, checker) || doc]);
      } else if (ts.isGetAccessorDeclaration(m)) {
        const hasSetter = decl.members.some((o) => ts.isSetAccessorDeclaration(o) && o.name.getText() === name);
        props.push([`${isStatic}${hasSetter ? '' : 'readonly '}${name}: ${typeOfNode(m)}`, doc]);
      } else if (ts.isPropertyDeclaration(m) || ts.isPropertySignature(m)) {
        const ro = mods & ts.ModifierFlags.Readonly ? 'readonly ' : '';
        props.push([`${isStatic}${ro}${name}${m.questionToken ? '?' : ''}: ${typeOfNode(m)}`, doc]);
      }
    }
    return { props, methods };
  };
  const table = (head, rows) => {
    if (!rows.length) return;
    say(`| ${head[0]} | ${head[1]} |`, '| --- | --- |', ...rows.map(([a, b]) => `| \`${cell(a)}\` | ${cell(b)} |`), '');
  };
  const classBody = (e) => {
    const decl = e.symbol.declarations.find(ts.isClassDeclaration);
    const heritage = decl.heritageClauses?.flatMap((h) => h.types.map((t) => t.getText())) ?? [];
    say(`### ${e.name}`, '');
    if (heritage.length) say(`\`class ${e.name} extends ${heritage.join(', ')}\``, '');
    const doc = docOf(e.symbol, checker);
    if (doc) say(doc, '');
    const { props, methods } = memberRows(decl);
    table(['property', ''], props);
    table(['method', ''], methods);
  };

  say(
    '# API reference',
    '',
    '<!-- Generated by `npm run docs:api` (scripts/api-docs.cjs) from dist/index.d.ts and its JSDoc. Do not edit: change the JSDoc in lib/ and regenerate. -->',
    '',
    "Everything `require('kiln')` / `import * as kiln from 'kiln'` exports, generated from the",
    "package's type declarations and their doc comments. The guides: [README](../README.md),",
    '[ARCHITECTURE.md](ARCHITECTURE.md), [BUNDLES.md](BUNDLES.md).',
    '',
    '## Contents',
    '',
  );
  const contents = [
    ['Functions', documented],
    ['Tensor op functions', plain],
    ['Classes', groups.class],
    ['Interfaces', groups.interface],
    ['Types', groups.type],
    ['Errors', groups.error],
    ['Other exports', groups.other],
  ].filter(([, list]) => list.length);
  for (const [title, list] of contents) {
    const link = (e) => (title === 'Tensor op functions' ? `\`${e.name}\`` : `[\`${e.name}\`](#${anchor(e.name)})`);
    say(`- [${title}](#${anchor(title)}): ${list.map(link).join(', ')}`);
  }
  say('');

  if (documented.length) {
    say('## Functions', '');
    for (const e of documented) {
      say(`### ${e.name}`, '', '```ts', ...functionSignatures(e).map((s) => `kiln.${s}`), '```', '', docOf(e.symbol, checker), '');
    }
  }
  if (plain.length) {
    say(
      '## Tensor op functions',
      '',
      'The functional forms of the ops: `kiln.add(a, b)` is `a.add(b)` (see [Tensor](#tensor)). Binary ops',
      'broadcast (NumPy rules) and accept a number for either operand.',
      '',
    );
    say('```ts', ...plain.flatMap((e) => functionSignatures(e).map((sig) => `kiln.${sig}`)), '```', '');
  }
  if (groups.class.length) {
    say('## Classes', '');
    for (const e of groups.class) classBody(e);
  }
  if (groups.interface.length) {
    say('## Interfaces', '');
    for (const e of groups.interface) {
      say(`### ${e.name}`, '');
      const doc = docOf(e.symbol, checker);
      if (doc) say(doc, '');
      const decl = e.symbol.declarations.find(ts.isInterfaceDeclaration);
      const { props, methods } = memberRows(decl);
      table(['field', ''], props);
      table(['method', ''], methods);
    }
  }
  if (groups.type.length) {
    say('## Types', '');
    for (const e of groups.type) {
      const decl = e.symbol.declarations.find(ts.isTypeAliasDeclaration);
      const params = decl.typeParameters ? `<${decl.typeParameters.map((p) => p.getText()).join(', ')}>` : '';
      say(`### ${e.name}`, '', '```ts', `type ${e.name}${params} = ${decl.type.getText().replace(/\n {4}/g, '\n  ').replace(/\n\s*\/\*\*[^]*?\*\/\s*\n/g, '\n')}`, '```', '');
      const doc = docOf(e.symbol, checker);
      if (doc) say(doc, '');
    }
  }
  if (groups.error.length) {
    const codes = errorCodes(root);
    say(
      '## Errors',
      '',
      'Every error kiln throws is a `KilnError`; its `code` is stable, for programs to branch on. The',
      'codes listed under each class are those lib/ throws as `new <Class>(code, …)`, found in the',
      'sources when this page was generated; a few more come through helpers.',
      '',
    );
    for (const e of groups.error) {
      classBody(e);
      const list = [...(codes.get(e.name) ?? [])].sort();
      if (list.length) say(`Codes: ${list.map((c) => `\`${c}\``).join(', ')}.`, '');
    }
  }
  if (groups.other.length) {
    say('## Other exports', '');
    for (const e of groups.other) say(`### ${e.name}`, '', '```ts', `${e.name}: ${typeText(checker.getTypeOfSymbol(e.symbol))}`, '```', '', docOf(e.symbol, checker), '');
  }
  return `${out.join('\n').replace(/\n{3,}/g, '\n\n').trimEnd()}\n`;
}

module.exports = { generateApiDoc, OUT };

if (require.main === module) {
  const text = generateApiDoc();
  const file = path.join(ROOT, OUT);
  if (process.argv.includes('--check')) {
    const same = fs.existsSync(file) && fs.readFileSync(file, 'utf8') === text;
    console.log(same ? `${OUT} is up to date` : `${OUT} is out of date: run npm run docs:api`);
    process.exitCode = same ? 0 : 1;
  } else {
    fs.writeFileSync(file, text);
    console.log(`wrote ${OUT}`);
  }
}
