/** The command lines of `kiln bench` and its subcommands: --help and usage errors, the same way for each. */

/** A bad command line: printed with the command's usage text, exit status 2. */
export class UsageError extends Error {}

/**
 * Reads a benchmark command's arguments with `parse`. `--help` or `-h` anywhere prints `usage`
 * to stdout and gives exit status 0; a UsageError from `parse` prints `<command>: <message>`
 * and `usage` to stderr and gives 2. Returns the exit status in those cases, else the arguments.
 */
export function parseCommandLine<A extends object>(argv: string[], command: string, usage: string, parse: (argv: string[]) => A): A | number {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(usage);
    return 0;
  }
  try {
    return parse(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`${command}: ${e.message}\n\n${usage}`);
    return 2;
  }
}
