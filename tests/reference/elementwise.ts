/**
 * CPU reference of shaders/elementwise.wgsl, computed in float64.
 *
 * @module
 */
import type { Activation } from "../../src/ops/activation.ts";

/** The scalar activation before the output scale. */
export function act(kind: Activation, x: number, slope = 0.01): number {
  switch (kind) {
    case "identity":
      return x;
    case "relu":
      return x > 0 ? x : 0;
    case "leaky_relu":
      return x > 0 ? x : slope * x;
    case "tanh":
      return Math.tanh(x);
    case "sigmoid":
      return 1 / (1 + Math.exp(-x));
  }
}

/** y = scale * act(x). */
export function activation(
  x: ArrayLike<number>,
  options: { activation: Activation; slope?: number; scale?: number },
): Float64Array {
  const { slope = 0.01, scale = 1 } = options;
  return Float64Array.from(x, (v) => scale * act(options.activation, v, slope));
}

/** dx = dy * scale * act'(x), written in terms of u = y / scale. */
export function activationBackward(
  y: ArrayLike<number>,
  dy: ArrayLike<number>,
  options: { activation: Activation; slope?: number; scale?: number },
): Float64Array {
  const { slope = 0.01, scale = 1 } = options;
  const dx = new Float64Array(y.length);
  for (let i = 0; i < y.length; i++) {
    const u = y[i]! / scale;
    let d: number;
    switch (options.activation) {
      case "identity":
        d = 1;
        break;
      case "relu":
        d = u > 0 ? 1 : 0;
        break;
      case "leaky_relu":
        d = u > 0 ? 1 : slope;
        break;
      case "tanh":
        d = 1 - u * u;
        break;
      case "sigmoid":
        d = u * (1 - u);
        break;
    }
    dx[i] = dy[i]! * scale * d;
  }
  return dx;
}

/** alpha * a + beta * b (b absent: alpha * a). */
export function axpby(
  a: ArrayLike<number>,
  options: { b?: ArrayLike<number>; alpha?: number; beta?: number } = {},
): Float64Array {
  const { b, alpha = 1, beta = 1 } = options;
  return Float64Array.from(a, (v, i) => alpha * v + (b ? beta * b[i]! : 0));
}

/** y[t, r, n] = x[t, r, n] + bias[t, n] for x: [T, R, N], bias: [T, N]. */
export function biasAdd(
  x: ArrayLike<number>,
  bias: ArrayLike<number>,
  shape: readonly [number, number, number],
): Float64Array {
  const [t, r, n] = shape;
  const y = new Float64Array(t * r * n);
  for (let ti = 0; ti < t; ti++) {
    for (let ri = 0; ri < r; ri++) {
      for (let ni = 0; ni < n; ni++) {
        const i = (ti * r + ri) * n + ni;
        y[i] = x[i]! + bias[ti * n + ni]!;
      }
    }
  }
  return y;
}
