/**
 * CPU reference of shaders/reduce.wgsl, computed in float64.
 *
 * @module
 */

/**
 * Sum of x (row-major, `shape`) over `axes`, times `scale`; the result holds the kept dimensions in
 * row-major order.
 */
export function reduceSum(
  x: ArrayLike<number>,
  shape: readonly number[],
  options: { axes: number[]; scale?: number },
): Float64Array {
  const { axes, scale = 1 } = options;
  const kept = shape.map((_, i) => i).filter((i) => !axes.includes(i));
  const out = new Float64Array(kept.reduce((s, i) => s * shape[i]!, 1));
  const index = new Array<number>(shape.length).fill(0);
  for (let flat = 0; flat < x.length; flat++) {
    let o = 0;
    for (const i of kept) o = o * shape[i]! + index[i]!;
    out[o]! += x[flat]!;
    // Advance the multi-index in row-major order.
    for (let d = shape.length - 1; d >= 0; d--) {
      index[d]!++;
      if (index[d]! < shape[d]!) break;
      index[d] = 0;
    }
  }
  return out.map((v) => v * scale);
}

/** Sum of squares of every element. */
export function sumOfSquares(x: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += x[i]! * x[i]!;
  return sum;
}
