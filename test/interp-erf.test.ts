import { erf, erfc } from '../lib/runtime/interpreter';

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

describe('erfc', () => {
  it('is relatively accurate where it is tiny (no 1 - erf), and exact at the ends', () => {
    // math.erfc of CPython (glibc), correctly rounded or within an ulp
    const ref: [number, number][] = [
      [-3, 1.9999779095030015],
      [-0.5, 1.5204998778130465],
      [0, 1],
      [0.5, 0.4795001221869535],
      [0.99, 0.1614919304446302],
      [1, 0.15729920705028513],
      [1.2, 0.08968602177036465],
      [1.5, 0.033894853524689274],
      [2, 0.004677734981047265],
      [2.5, 0.0004069520174449589],
      [3, 2.2090496998585438e-5],
      [4, 1.541725790028002e-8],
      [5, 1.5374597944280351e-12],
      [6, 2.1519736712498916e-17],
      [10, 2.088487583762545e-45],
      [20, 5.3958656116079005e-176],
      [26, 5.663192408856143e-296],
    ];
    for (const [x, y] of ref) expect(Math.abs(erfc(x) - y)).toBeLessThanOrEqual(8e-16 * y);
    expect(erfc(Infinity)).toBe(0);
    expect(erfc(-Infinity)).toBe(2);
    expect(erfc(30)).toBe(0);
    expect(erfc(NaN)).toBeNaN();
  });
});
