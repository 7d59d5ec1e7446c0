/**
 * kiln's graph IR: dtypes, symbolic dims, primitive ops, interned nodes, graphs, the
 * printer and serialization. Other layers import from here.
 */
export * from './dtype';
export * from './sym';
export * from './ops';
export * from './args';
export * from './infer';
export * from './node';
export * from './graph';
export * from './serialize';
