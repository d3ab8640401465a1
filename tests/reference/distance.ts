/**
 * CPU reference of shaders/distance.wgsl, in float64.
 *
 * @module
 */

/** Sizes: tasks T, queries Q, centres K, features F. */
export interface DistanceSizes {
  tasks: number;
  queries: number;
  centres: number;
  features: number;
}

/** out[t, q, k] = scale * sum_f (x[t, q, f] - c[t, k, f])^2; x [T, Q, F], c [T, K, F]. */
export function squaredDistance(
  x: ArrayLike<number>,
  c: ArrayLike<number>,
  sizes: DistanceSizes & { scale?: number },
): Float64Array {
  const { tasks: T, queries: Q, centres: K, features: F, scale = 1 } = sizes;
  const out = new Float64Array(T * Q * K);
  for (let t = 0; t < T; t++) {
    for (let q = 0; q < Q; q++) {
      for (let k = 0; k < K; k++) {
        let sum = 0;
        for (let f = 0; f < F; f++) {
          const diff = x[(t * Q + q) * F + f]! - c[(t * K + k) * F + f]!;
          sum += diff * diff;
        }
        out[(t * Q + q) * K + k] = scale * sum;
      }
    }
  }
  return out;
}

/**
 * The gradients of {@link squaredDistance} from dOut [T, Q, K], added to `initial` values when
 * given: dx[t, q, f] = 2 scale * sum_k dOut[t, q, k] (x - c), dc[t, k, f] = 2 scale * sum_q
 * dOut[t, q, k] (c - x).
 */
export function squaredDistanceBackward(
  dOut: ArrayLike<number>,
  x: ArrayLike<number>,
  c: ArrayLike<number>,
  sizes: DistanceSizes & {
    scale?: number;
    initial?: { dx?: ArrayLike<number>; dc?: ArrayLike<number> };
  },
): { dx: Float64Array; dc: Float64Array } {
  const { tasks: T, queries: Q, centres: K, features: F, scale = 1, initial } = sizes;
  const dx = initial?.dx ? Float64Array.from(initial.dx) : new Float64Array(T * Q * F);
  const dc = initial?.dc ? Float64Array.from(initial.dc) : new Float64Array(T * K * F);
  for (let t = 0; t < T; t++) {
    for (let q = 0; q < Q; q++) {
      for (let k = 0; k < K; k++) {
        const g = 2 * scale * dOut[(t * Q + q) * K + k]!;
        for (let f = 0; f < F; f++) {
          const diff = x[(t * Q + q) * F + f]! - c[(t * K + k) * F + f]!;
          dx[(t * Q + q) * F + f]! += g * diff;
          dc[(t * K + k) * F + f]! -= g * diff;
        }
      }
    }
  }
  return { dx, dc };
}
