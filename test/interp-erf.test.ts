import { erf } from '../lib/runtime/interpreter';

describe('erf', () => {
  it('matches reference values to float64 accuracy', () => {
    const ref: [number, number][] = [
      [0, 0],
      [1e-10, 1.1283791670955126e-10],
      [0.1, 0.1124629160182849],
      [0.5, 0.5204998778130465],
      [1, 0.8427007929497149],
      [1.5, 0.9661051464753108],
      [2, 0.9953222650189527],
      [2.49, 0.9995707121322661],
      [2.5, 0.999593047982555],
      [3, 0.9999779095030014],
      [4, 0.9999999845827421],
      [5.9, 0.9999999999999999],
    ];
    for (const [x, y] of ref) {
      expect(Math.abs(erf(x) - y)).toBeLessThanOrEqual(5e-16 * Math.max(1, Math.abs(y)));
      expect(erf(-x)).toBe(-erf(x));
    }
    expect(1 - erf(3)).toBeCloseTo(2.209049699858544e-5, 15);
    expect(erf(Infinity)).toBe(1);
    expect(erf(-Infinity)).toBe(-1);
    expect(erf(NaN)).toBeNaN();
  });
});
