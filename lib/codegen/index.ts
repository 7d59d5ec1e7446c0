/**
 * lib/codegen: the C-style renderer base and the C++ backend.
 */
export { CODE_FOR_OP, CStyleRenderer, type OpCode } from './cstyle';
export { CppRenderer, cppFlags, renderCpp, renderCppUnit, type CppUnitEntry } from './cpp';
export { PARALLEL_MIN_WORK } from './loops';
export { packSlotOf } from './gemm';
