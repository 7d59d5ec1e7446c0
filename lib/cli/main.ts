/**
 * The `kiln` command. Each subcommand has a one-line summary and its own `--help`.
 */
import { buildCommand, buildSummary, buildUsage } from './build';
import { cacheCommand, cacheSummary, cacheUsage } from './cache';
import { doctor, DOCTOR_USAGE } from './doctor';
import { KilnError } from '../util/errors';
import { ENV_VARS } from '../util/env';
import { kilnVersion } from '../util/version';

interface Command {
  summary: string;
  usage: string;
  run(args: string[]): number | Promise<number>;
}

const commands: Record<string, Command> = {
  doctor: {
    summary: 'show what kiln found (addon, CUDA driver, GPUs, NVRTC, C++ compiler, cache) and the backend it would use: whether it can run bundles, and compile',
    usage: DOCTOR_USAGE,
    run: doctor,
  },
  build: {
    summary: buildSummary,
    usage: buildUsage,
    run: buildCommand,
  },
  bench: {
    summary: 'benchmarks: kiln vs onnxruntime-node on the CPU; `kiln bench startup`: cold vs warm start; `kiln bench report`: docs/BENCHMARKS.md',
    usage:
      'kiln bench [--threads N] [--models mlp,block,gpt] [--iters N] [--out PATH] [--report]\n       kiln bench startup [options]\n       kiln bench report [options]\n(each lists all its options with --help)',
    run: runBench,
  },
  cache: {
    summary: cacheSummary,
    usage: cacheUsage,
    run: cacheCommand,
  },
};

/** Loaded on demand: the benchmark needs onnxruntime-node, a development dependency. */
async function runBench(args: string[]): Promise<number> {
  if (args[0] === 'startup') return (await import('../bench/startup')).startupBench(args.slice(1));
  if (args[0] === 'report') return (await import('../bench/report')).reportCommand(args.slice(1));
  let mod: typeof import('../bench/main');
  try {
    mod = await import('../bench/main');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND' || !String((e as Error).message).includes('onnxruntime-node')) throw e;
    console.error('kiln bench compares against onnxruntime-node, which is not installed: npm install --no-save onnxruntime-node');
    return 1;
  }
  return mod.bench(args);
}

function help(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length)) + 2;
  const list = Object.entries(commands)
    .map(([name, c]) => `  ${name.padEnd(width)}${c.summary}`)
    .join('\n');
  const env = ENV_VARS.map((v) => `  ${v.name.padEnd(24)}${v.doc}`).join('\n');
  return `kiln — ahead-of-time compiled tensor programs for Node.js\n\nUsage: kiln <command> [options]\n\nCommands:\n${list}\n\nRun \`kiln <command> --help\` for a command's options.\n\nEnvironment:\n${env}`;
}

/** Entry point of the CLI; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(help());
    return name === undefined ? 1 : 0;
  }
  if (name === '--version' || name === '-v') {
    console.log(kilnVersion());
    return 0;
  }
  const cmd = commands[name];
  if (!cmd) {
    console.error(`kiln: unknown command '${name}'. Commands: ${Object.keys(commands).join(', ')}. See \`kiln --help\`.`);
    return 2;
  }
  // `kiln cmd --help` is answered here; deeper help (`kiln cache prune --help`) by the command.
  if ((rest[0] === '--help' || rest[0] === '-h') && name !== 'bench') {
    console.log(`${cmd.summary}\n\nUsage: ${cmd.usage}`);
    return 0;
  }
  try {
    return await cmd.run(rest);
  } catch (e) {
    if (e instanceof KilnError) {
      console.error(`kiln ${name}: ${e.message} [${e.code}]`);
      return 1;
    }
    throw e;
  }
}
