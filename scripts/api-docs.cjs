#!/usr/bin/env node
'use strict';
/**
 * `npm run docs:api`: docs/API.md, the API reference, generated from the package's type
 * declarations (dist/index.d.ts, built by `npm run build:ts`) and their JSDoc with the
 * TypeScript compiler API. It walks every export of the entry point: functions with their
 * signatures, classes (the Tensor, the error classes) with their public members, option and
 * result interfaces with their fields, and type aliases. For each error class it lists every
 * code kiln throws as that class, and then every warning code (`thrownCodes`).
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

// ---- the codes kiln throws and the warnings it emits -----------------------------------

/** Each warning code kiln emits and what it means; the generator refuses a code missing here (or listed but no longer emitted). */
const WARNINGS = {
  KILN_BUNDLE_INVALID: 'A bundle failed verification (a checksum, a guard, a changed source file): `auto` ignores it, compiles, and the publish replaces it.',
  KILN_BUNDLE_LOAD: "A bundle verified but could not be loaded (dlopen refused kernels.so, the driver rejected the image): `auto` removes it (a shipped one is passed over) and compiles once.",
  KILN_CACHE_READ_ONLY: 'The cache dir is not writable: bundles are loaded from it, none are written.',
  KILN_CACHE_UNAVAILABLE: 'This user cannot reach the cache dir: it is left alone (shipped bundles are still searched) and programs compile as with `cache: \'off\'`.',
  KILN_CACHE_WRITE: 'Publishing a bundle failed (ENOSPC, EACCES, EROFS, ...): the compiled program runs without a bundle.',
  KILN_CAPTURED_TENSORS: 'The compiled function captures tensors from its closure: its program is kept in memory only, never published (pass them as arguments).',
  KILN_CUDA_SPILL: 'CUDA kernels spill registers to local memory (slower); the warning names them.',
  KILN_PTX_JIT: "The GPU is newer than the NVRTC here supports: kiln compiles PTX for the newest architecture NVRTC knows, which the driver JIT-compiles at load (a slower first load, maybe slower kernels). Install a newer NVRTC for native cubins.",
};

/** The class the native addon's error `code` becomes in lib/ (translateNativeError in lib/runtime/native.ts). */
function nativeErrorClass(code) {
  if (code === 'KILN_CUDA_OOM') return 'CudaOomError';
  if (code.startsWith('KILN_CUDA')) return 'CudaError';
  if (code.startsWith('KILN_NVRTC')) return 'NvrtcError';
  if (code === 'KILN_ARGUMENT') return 'ArgumentError';
  return 'KilnError';
}

/** The environment variable names of lib/util/env.ts's registry (never error codes). */
function envNames(root) {
  const text = fs.readFileSync(path.join(root, 'lib', 'util', 'env.ts'), 'utf8');
  return new Set([...text.matchAll(/name: '([A-Z_][A-Z0-9_]*)'/g)].map((m) => m[1]));
}

const sourceFiles = (dir, ext) => {
  const out = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (ext.some((x) => e.name.endsWith(x))) out.push(p);
    }
  };
  walk(dir);
  return out;
};

const CODE_RE = /^KILN_[A-Z0-9_]+$/;

/** The `KILN_…` string literals anywhere in an expression (both arms of `a ? 'KILN_X' : 'KILN_Y'`). */
function codeLiterals(node) {
  const out = [];
  const visit = (n) => {
    if ((ts.isStringLiteral(n) || ts.isNoSubstitutionTemplateLiteral(n)) && CODE_RE.test(n.text)) out.push(n.text);
    ts.forEachChild(n, visit);
  };
  if (node) visit(node);
  return out;
}

/**
 * Every error code kiln throws, by the class it is thrown as, and every warning code it
 * emits, from the sources: in lib/, `new XError(code, …)` and `super(code, …)` in an error
 * class, and calls of helpers that throw (`fail(op, msg, 'KILN_DTYPE')`, `bad('KILN_X', …)`:
 * any function that passes a parameter on as the code of `new XError`, also through another
 * such helper, and a parameter's default code); warnings from `process.emitWarning(…, { code })`
 * and helpers that pass a parameter on as that code (`warnOnce`). In native/, the quoted codes
 * the addon throws, as the class `translateNativeError` makes of them (`nativeErrorClass`).
 * Classes are reported as their nearest exported ancestor (`exported`: class names).
 */
function thrownCodes(root, exported) {
  const errors = new Map();
  const warnings = new Set();
  const parent = new Map();
  const add = (cls, code) => {
    if (!errors.has(cls)) errors.set(cls, new Set());
    errors.get(cls).add(code);
  };
  const record = (cls, code) => (cls === '(warning)' ? warnings.add(code) : add(cls, code));
  const files = sourceFiles(path.join(root, 'lib'), ['.ts']).map((p) => ts.createSourceFile(p, fs.readFileSync(p, 'utf8'), ts.ScriptTarget.Latest, true));
  const errorClassOf = (expr) => (ts.isIdentifier(expr) && /Error$/.test(expr.text) ? expr.text : undefined);
  const isEmitWarning = (call) => ts.isPropertyAccessExpression(call.expression) && call.expression.name.text === 'emitWarning';
  const warningCodeArg = (call) =>
    call.arguments
      .filter(ts.isObjectLiteralExpression)
      .flatMap((o) => o.properties.filter((p) => p.name && p.name.getText() === 'code'))
      .map((p) => (ts.isShorthandPropertyAssignment(p) ? p.name : p.initializer))[0];

  // Functions that throw or warn with a code their caller gives: name → { index, cls | warn }, per file.
  const helpers = new Map(files.map((f) => [f.fileName, new Map()]));
  const functionsOf = (f) => {
    const out = [];
    const visit = (n) => {
      if (ts.isFunctionDeclaration(n) && n.name && n.body) out.push({ name: n.name.text, fn: n });
      else if (ts.isVariableDeclaration(n) && ts.isIdentifier(n.name) && n.initializer && (ts.isArrowFunction(n.initializer) || ts.isFunctionExpression(n.initializer))) out.push({ name: n.name.text, fn: n.initializer });
      if (ts.isClassDeclaration(n) && n.name && n.heritageClauses) {
        const ext = n.heritageClauses.find((h) => h.token === ts.SyntaxKind.ExtendsKeyword);
        if (ext) parent.set(n.name.text, ext.types[0].expression.getText());
      }
      ts.forEachChild(n, visit);
    };
    visit(f);
    return out;
  };
  const functions = new Map(files.map((f) => [f.fileName, functionsOf(f)]));
  const helperOf = (file, name) => helpers.get(file).get(name) ?? [...helpers.values()].map((h) => h.get(name)).find((h) => h && h.exported);
  for (let changed = true; changed; ) {
    changed = false;
    for (const f of files) {
      for (const { name, fn } of functions.get(f.fileName)) {
        if (helpers.get(f.fileName).has(name)) continue;
        const params = fn.parameters.map((p) => (ts.isIdentifier(p.name) ? p.name.text : ''));
        let found;
        const visit = (n) => {
          if (found) return;
          let cls;
          let arg;
          if (ts.isNewExpression(n) && (cls = errorClassOf(n.expression))) arg = n.arguments?.[0];
          else if (ts.isCallExpression(n) && isEmitWarning(n)) [cls, arg] = ['(warning)', warningCodeArg(n)];
          else if (ts.isCallExpression(n) && ts.isIdentifier(n.expression)) {
            const h = helperOf(f.fileName, n.expression.text);
            if (h) [cls, arg] = [h.cls, n.arguments[h.index]];
          }
          if (cls && arg && ts.isIdentifier(arg) && params.includes(arg.text)) {
            const index = params.indexOf(arg.text);
            const exportedFn = ts.isFunctionDeclaration(fn) && (ts.getCombinedModifierFlags(fn) & ts.ModifierFlags.Export) !== 0;
            found = { index, cls, exported: exportedFn };
            const init = fn.parameters[index].initializer; // fail(op, msg, code = 'KILN_SHAPE_MISMATCH')
            for (const c of codeLiterals(init)) record(cls, c);
          }
          ts.forEachChild(n, visit);
        };
        visit(fn.body);
        if (found) {
          helpers.get(f.fileName).set(name, found);
          changed = true;
        }
      }
    }
  }

  for (const f of files) {
    let inClass;
    const visit = (n) => {
      const outer = inClass;
      if (ts.isClassDeclaration(n) && n.name) inClass = n.name.text;
      let cls;
      let arg;
      if (ts.isNewExpression(n) && (cls = errorClassOf(n.expression))) arg = n.arguments?.[0];
      else if (ts.isCallExpression(n) && n.expression.kind === ts.SyntaxKind.SuperKeyword && inClass && parent.has(inClass)) [cls, arg] = [inClass, n.arguments[0]];
      else if (ts.isCallExpression(n) && isEmitWarning(n)) [cls, arg] = ['(warning)', warningCodeArg(n)];
      else if (ts.isCallExpression(n) && ts.isIdentifier(n.expression)) {
        const h = helperOf(f.fileName, n.expression.text);
        if (h) [cls, arg] = [h.cls, n.arguments[h.index]];
      }
      for (const c of cls ? codeLiterals(arg) : []) record(cls, c);
      ts.forEachChild(n, visit);
      inClass = outer;
    };
    visit(f);
  }

  const env = envNames(root);
  for (const p of sourceFiles(path.join(root, 'native'), ['.cc', '.h'])) {
    const text = fs.readFileSync(p, 'utf8').replace(/\/\*[^]*?\*\//g, '').replace(/\/\/.*$/gm, '');
    for (const m of text.matchAll(/"(KILN_[A-Z0-9_]+)"/g)) if (!env.has(m[1])) add(nativeErrorClass(m[1]), m[1]);
  }

  // Each class as the nearest exported one it extends (CudaOomError is thrown as a CudaError).
  const byExported = new Map();
  for (const [cls, codes] of errors) {
    let c = cls;
    while (!exported.has(c) && parent.has(c)) c = parent.get(c);
    if (!exported.has(c)) continue; // not a kiln error class
    if (!byExported.has(c)) byExported.set(c, new Set());
    for (const code of codes) byExported.get(c).add(code);
  }
  return { errors: byExported, warnings };
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
  // `export type { X }` (only the type is public) and the JSDoc written on such an export, which
  // speaks for the package where the declaration's own doc speaks inside lib/.
  const typeOnly = new Map();
  for (const st of program.getSourceFile(entry).statements) {
    if (!ts.isExportDeclaration(st) || !st.exportClause || !ts.isNamedExports(st.exportClause)) continue;
    const doc = (st.jsDoc ?? []).map((d) => ts.getTextOfJSDocComment(d.comment) ?? '').join('\n\n').trim();
    for (const el of st.exportClause.elements) if (st.isTypeOnly || el.isTypeOnly) typeOnly.set(el.name.text, doc);
  }

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

  const kindOf = ({ name, symbol }) => {
    const d = symbol.declarations?.[0];
    if (!d) return 'other';
    if (ts.isClassDeclaration(d) && typeOnly.has(name)) return 'type'; // no constructor is public: a type
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
      const cls = e.symbol.declarations.find(ts.isClassDeclaration);
      if (cls) {
        // A class exported as a type only: its export's doc, and its public members' signatures
        // (their docs speak of lib/'s own functions).
        const { props, methods } = memberRows(cls);
        say(`### ${e.name}`, '', typeOnly.get(e.name) || docOf(e.symbol, checker), '');
        say('```ts', `type ${e.name} = {`, ...[...props, ...methods].map(([sig]) => `  ${sig};`), '}', '```', '');
        continue;
      }
      const decl = e.symbol.declarations.find(ts.isTypeAliasDeclaration);
      const params = decl.typeParameters ? `<${decl.typeParameters.map((p) => p.getText()).join(', ')}>` : '';
      say(`### ${e.name}`, '', '```ts', `type ${e.name}${params} = ${decl.type.getText().replace(/\n {4}/g, '\n  ').replace(/\n\s*\/\*\*[^]*?\*\/\s*\n/g, '\n')}`, '```', '');
      const doc = docOf(e.symbol, checker);
      if (doc) say(doc, '');
    }
  }
  if (groups.error.length) {
    const { errors: codes, warnings } = thrownCodes(root, new Set(groups.error.map((e) => e.name)));
    say(
      '## Errors',
      '',
      'Every error kiln throws is a `KilnError`; its `code` is stable, for programs to branch on. The',
      'codes listed under each class are every code kiln throws as that class (or a subclass of it',
      'that is not exported), found in the sources when this page was generated: in lib/, as',
      '`new <Class>(code, …)` or through a helper that throws it; in native/, the codes of the native',
      "addon's errors, as lib/runtime/native.ts translates them. A code thrown as two classes is",
      'listed under both.',
      '',
    );
    for (const e of groups.error) {
      classBody(e);
      const list = [...(codes.get(e.name) ?? [])].sort();
      if (list.length) say(`Codes: ${list.map((c) => `\`${c}\``).join(', ')}.`, '');
    }
    const missing = [...warnings].filter((c) => !WARNINGS[c]);
    const stale = Object.keys(WARNINGS).filter((c) => !warnings.has(c));
    if (missing.length || stale.length) {
      throw new Error(`scripts/api-docs.cjs WARNINGS: ${missing.length ? `describe ${missing.join(', ')}` : ''}${missing.length && stale.length ? '; ' : ''}${stale.length ? `no longer emitted: ${stale.join(', ')}` : ''}`);
    }
    say(
      '### Warnings',
      '',
      'Trouble kiln recovers from is a process warning (`process.emitWarning`, printed once per cause',
      "unless Node runs with `--no-warnings`; `process.on('warning', (w) => w.code)` to watch for one),",
      'never a thrown error:',
      '',
    );
    table(['code', 'when'], [...warnings].sort().map((c) => [c, WARNINGS[c]]));
  }
  if (groups.other.length) {
    say('## Other exports', '');
    for (const e of groups.other) say(`### ${e.name}`, '', '```ts', `${e.name}: ${typeText(checker.getTypeOfSymbol(e.symbol))}`, '```', '', docOf(e.symbol, checker), '');
  }
  return `${out.join('\n').replace(/\n{3,}/g, '\n\n').trimEnd()}\n`;
}

module.exports = { generateApiDoc, OUT, thrownCodes, nativeErrorClass, WARNINGS };

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
