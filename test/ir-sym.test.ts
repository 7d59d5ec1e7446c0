import { dimAdd, dimDivExact, dimEq, dimMul, dimProd, dimStr, dimSub, evalDim, parseDim, sym, Sym } from '../lib/ir/sym';
import { ShapeError, TraceError } from '../lib/util/errors';

describe('symbolic dims', () => {
  const s0 = sym('s0');
  const s1 = sym('s1');

  it('keeps one canonical form', () => {
    expect(dimStr(dimAdd(s0, 3))).toBe('s0+3');
    expect(dimStr(dimAdd(3, s0))).toBe('s0+3');
    expect(dimStr(dimMul(s1, s0))).toBe('s0*s1');
    expect(dimStr(dimSub(dimMul(2, s0), 1))).toBe('2*s0-1');
    expect(dimStr(dimMul(dimAdd(s0, 1), dimAdd(s0, -1)))).toBe('s0*s0-1');
    expect(dimStr(dimAdd(dimMul(s1, s0), dimMul(s0, dimMul(-2, s1))))).toBe('-s0*s1');
    expect(dimEq(dimMul(768, s0), dimMul(s0, 768))).toBe(true);
    expect(dimEq(s0, s1)).toBe(false);
    expect(dimEq(s0, 3)).toBe(false);
  });

  it('normalizes variable-free results to numbers', () => {
    expect(dimSub(s0, s0)).toBe(0);
    expect(dimSub(dimAdd(s0, 5), s0)).toBe(5);
    expect(dimDivExact(dimMul(768, s0), dimMul(s0, 768))).toBe(1);
    expect(dimProd([2, 3, 4])).toBe(24);
  });

  it('divides exactly or throws', () => {
    expect(dimStr(dimDivExact(dimMul(768, s0), 768))).toBe('s0');
    expect(dimStr(dimDivExact(dimProd([2, s0, s1, 6]), dimMul(3, s1)))).toBe('4*s0');
    expect(dimStr(dimDivExact(dimAdd(dimMul(4, s0), 8), 4))).toBe('s0+2');
    expect(dimDivExact(12, 4)).toBe(3);
    expect(() => dimDivExact(dimAdd(s0, 1), 2)).toThrow(ShapeError);
    expect(() => dimDivExact(dimMul(s0, 4), s1)).toThrow(ShapeError);
    expect(() => dimDivExact(10, 4)).toThrow(ShapeError);
    expect(() => dimDivExact(s0, dimAdd(s0, 1))).toThrow(ShapeError);
  });

  it('parses its own text back', () => {
    const exprs = [s0, dimAdd(s0, 3), dimSub(dimMul(2, s0), 1), dimProd([s0, s1, s0]), dimSub(5, dimMul(s1, 7)), dimAdd(dimMul(s0, s1), dimMul(-3, s1))];
    for (const e of exprs) {
      const back = parseDim(dimStr(e));
      expect(dimEq(back, e)).toBe(true);
      expect(dimStr(back)).toBe(dimStr(e));
    }
    expect(dimStr(parseDim('3*s1 + s0*2 - 4'))).toBe('2*s0+3*s1-4');
    expect(parseDim('2*3')).toBe(6);
    for (const bad of ['', 's0+', '*s0', 's0**2', '(s0)', 's0 s1', '1.5']) expect(() => parseDim(bad)).toThrow(ShapeError);
  });

  it('evaluates with bindings', () => {
    const e = dimSub(dimMul(dimMul(2, s0), s1), 1);
    expect(evalDim(e, { s0: 7, s1: 3 })).toBe(41);
    expect(evalDim(12, {})).toBe(12);
    expect(() => evalDim(e, { s0: 7 })).toThrow(/s1/);
  });

  it('refuses to act as a number', () => {
    expect(s0).toBeInstanceOf(Sym);
    expect(() => (s0 as unknown as number) * 2).toThrow(TraceError);
    expect(`${s0}`).toBe('s0');
  });
});
