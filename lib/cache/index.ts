/**
 * The bundle cache: keys, the v1 bundle format, verification, the store and its modes.
 * The engine calls `openCache()` and `bundleKey()`; everything else is for tests and the CLI.
 */
export * from './key';
export * from './target';
export * from './manifest';
export * from './bundle';
export * from './store';
export * from './evict';
export { lockFile, lockDir, tmpDir, sweep, type StoreConfig } from './layout';
export * from './mode';
export { withFileLock, isLocked, readLock, type LockOptions, type LockOutcome } from './lock';
export { cacheDir, dirStatus } from './dirs';
