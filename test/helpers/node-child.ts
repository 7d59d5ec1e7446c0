/**
 * Fresh node processes for tests that start programs as users do: `node -r register.cjs …`
 * (test/fixtures/cache/register.cjs lets the child require kiln's TypeScript sources), run to
 * the end with stdout and stderr collected.
 */
import { spawn } from 'child_process';
import { join } from 'path';

const REGISTER = join(__dirname, '..', 'fixtures', 'cache', 'register.cjs');

export interface NodeChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** `env` and `cwd` default to the test's own, as with `spawn`; `gid` defaults to `uid`. */
export interface NodeChildOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  uid?: number;
  gid?: number;
}

/** Runs `node -r register.cjs ...args`; rejects only when the child cannot be started. */
export function runNode(args: string[], opts: NodeChildOptions = {}): Promise<NodeChildResult> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, ['-r', REGISTER, ...args], {
      env: opts.env,
      cwd: opts.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.gid ?? opts.uid } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', fail);
    child.on('close', (code, signal) => done({ code, signal, stdout, stderr }));
  });
}

/** The test's environment without any of the runner's KILN_* settings, then `extra`. */
export function envWithoutKiln(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KILN_')) env[k] = v;
  return { ...env, ...extra };
}
