/**
 * CPU reference of shaders/matmul.wgsl.
 *
 * @module
 */

import type { Activation } from "../../src/ops/activation.ts";
import { act } from "./elementwise.ts";

/** Sizes and options of a reference matmul. */
export interface MatmulReferenceOptions {
  /** Batch entries. */
  T: number;
  /** Rows of op(a) and of the output. */
  M: number;
  /** Columns of op(a), rows of op(b). */
  K: number;
  /** Columns of op(b) and of the output. */
  N: number;
  /** a is stored [T, K, M] instead of [T, M, K]. */
  transA?: boolean;
  /** b is stored [T, N, K] instead of [T, K, N]. */
  transB?: boolean;
  /** Bias [T, N], added to every row. */
  bias?: ArrayLike<number>;
  /** Activation after the bias (default identity). */
  activation?: Activation;
  /** Negative slope of leaky_relu (default 0.01). */
  slope?: number;
  /** Factor after the activation (default 1). */
  scale?: number;
  /** Previous output [T, M, N] to add the result to. */
  accumulateInto?: ArrayLike<number>;
}

/**
 * out[t, i, j] = scale * act(sum_k op(a)[t, i, k] * op(b)[t, k, j] + bias[t, j])
 * (+ accumulateInto[t, i, j]), summed in float64.
 */
export function matmul(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  options: MatmulReferenceOptions,
): Float64Array {
  const { T, M, K, N, transA = false, transB = false, bias, slope = 0.01, scale = 1 } = options;
  const activation = options.activation ?? "identity";
  const out = new Float64Array(T * M * N);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let sum = 0;
        for (let k = 0; k < K; k++) {
          const av = transA ? a[(t * K + k) * M + i]! : a[(t * M + i) * K + k]!;
          const bv = transB ? b[(t * N + j) * K + k]! : b[(t * K + k) * N + j]!;
          sum += av * bv;
        }
        if (bias) sum += bias[t * N + j]!;
        const o = (t * M + i) * N + j;
        out[o] = scale * act(activation, sum, slope) + (options.accumulateInto?.[o] ?? 0);
      }
    }
  }
  return out;
}

/** Stores a [T, rows, cols] array transposed, as [T, cols, rows]. */
export function transpose(
  x: ArrayLike<number>,
  T: number,
  rows: number,
  cols: number,
): Float32Array {
  const out = new Float32Array(T * rows * cols);
  for (let t = 0; t < T; t++) {
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) out[(t * cols + c) * rows + r] = x[(t * rows + r) * cols + c]!;
    }
  }
  return out;
}
