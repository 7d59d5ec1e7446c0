/** kiln's own version, from package.json (read once). */
import { readFileSync } from 'fs';
import { join } from 'path';

let memo: string | undefined;

/** The version of this kiln package, e.g. `0.1.0`. */
export function kilnVersion(): string {
  // lib/util/version.ts and dist/util/version.js both sit two levels below package.json.
  memo ??= (JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version;
  return memo;
}
