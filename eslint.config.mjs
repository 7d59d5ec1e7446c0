// Lint: typescript-eslint's recommended rules, no import cycles, and the layer directions
// of the design (util ← ir ← passes ← codegen ← runtime ← cache ← engine ← tensor/api).
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';

// Each layer may import only the layers listed for it (and itself).
const layers = {
  util: [],
  ir: ['util'],
  tensor: ['util', 'ir', 'runtime'],
  passes: ['util', 'ir'],
  codegen: ['util', 'ir', 'passes'],
  runtime: ['util', 'ir'],
  cache: ['util', 'ir'],
  io: ['util', 'ir'],
  engine: ['util', 'ir', 'passes', 'codegen', 'runtime', 'cache'],
  cli: ['util', 'ir', 'passes', 'codegen', 'runtime', 'cache', 'io', 'engine', 'tensor', 'api', 'bench'],
  api: ['util', 'ir', 'passes', 'codegen', 'runtime', 'cache', 'io', 'engine', 'tensor'],
  bench: ['util', 'ir', 'passes', 'codegen', 'runtime', 'cache', 'io', 'engine', 'tensor', 'api'],
};
const all = Object.keys(layers);
const zones = all.flatMap((layer) =>
  all
    .filter((other) => other !== layer && !layers[layer].includes(other))
    .map((other) => ({
      target: `./lib/${layer}`,
      from: `./lib/${other}`,
      message: `lib/${layer} must not import lib/${other} (see STYLE.md, Layout).`,
    })),
);

export default tseslint.config(
  { ignores: ['dist/**', 'build/**', 'prebuilds/**', 'node_modules/**', 'coverage/**', '.device/**'] },
  ...tseslint.configs.recommended,
  {
    files: ['lib/**/*.ts', 'test/**/*.ts'],
    plugins: { 'import-x': importX },
    settings: { 'import-x/resolver': { node: { extensions: ['.ts', '.js'] } } },
    rules: {
      'import-x/no-cycle': ['error', { maxDepth: Infinity }],
      'import-x/no-restricted-paths': ['error', { zones }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['**/*.cjs', 'bin/**/*.js', 'examples/**/*.js', '*.js', '*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly', module: 'writable', process: 'readonly', __dirname: 'readonly', console: 'readonly', Buffer: 'readonly' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
