/**
 * kiln's typed errors. Every error kiln throws is a `KilnError` with a stable string
 * `code` that programs can branch on; the message says what was wrong, where, and what
 * to do. Errors raised inside the native addon are translated into these in lib/
 * (addon errors are not `instanceof Error` under some test runners).
 */
export class KilnError extends Error {
  /** Stable machine-readable code, e.g. `KILN_NVRTC_COMPILE`. */
  readonly code: string;
  /** The public tensor op whose call raised it (set once, by the tensor API). */
  op?: string;
  /** The user's call site of that op, `file:line:col` (set once, with `op`). */
  site?: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** The native addon could not be loaded (no prebuild for this platform, no local build). */
export class AddonError extends KilnError {}

/** CUDA is unavailable (no driver, no device) or a CUDA driver call failed. */
export class CudaError extends KilnError {
  /** The CUDA result name, e.g. `CUDA_ERROR_OUT_OF_MEMORY`, when a driver call failed. */
  readonly cudaError?: string;
  constructor(code: string, message: string, cudaError?: string) {
    super(code, message);
    if (cudaError !== undefined) this.cudaError = cudaError;
  }
}

/** NVRTC is missing, or a compile failed; `log` holds the compiler's log. */
export class NvrtcError extends KilnError {
  readonly log: string;
  constructor(code: string, message: string, log = '') {
    super(code, message);
    this.log = log;
  }
}

/** The C++ compiler for the CPU backend is missing or failed; `log` holds its output. */
export class CompilerError extends KilnError {
  readonly log: string;
  constructor(code: string, message: string, log = '') {
    super(code, message);
    this.log = log;
  }
}

/** A shape, dtype or argument error in a tensor op; names the op, the shapes and the call site. */
export class ShapeError extends KilnError {}

/** Invalid argument or option to a kiln API. */
export class ArgumentError extends KilnError {}

/** Reading a traced tensor's data, or another thing impossible inside a trace. */
export class TraceError extends KilnError {}

/** A serialized graph or bundle is malformed, of an unknown version, or fails verification. */
export class FormatError extends KilnError {}

/** A bundle or cache problem (missing in force-load mode, failed guard, lock trouble). */
export class CacheError extends KilnError {}

/**
 * A file kiln was asked to read or write (a weights file) could not be: `KILN_FILE_READ` or
 * `KILN_FILE_WRITE`. `systemCode` is the operating system's reason as Node names it
 * (`ENOENT`, `EACCES`, `EISDIR`, ...), `path` the file, `cause` the original error.
 */
export class FileError extends KilnError {
  readonly path: string;
  readonly systemCode?: string;
  constructor(code: string, message: string, path: string, cause?: unknown) {
    super(code, message, cause === undefined ? undefined : { cause });
    this.path = path;
    const sys = (cause as { code?: unknown } | undefined)?.code;
    if (typeof sys === 'string') this.systemCode = sys;
  }
}
