/**
 * CPU reference of shaders/conv2d.wgsl: a task-batched 2D cross-correlation with bias and
 * activation, and its gradients, written as plain loops and accumulated in float64.
 *
 * @module
 */

import type { Activation } from "../../src/ops/activation.ts";
import { act } from "./elementwise.ts";

/** Sizes of a convolution: x [T, B, C, H, W], w [T, O, C, k, k], y [T, B, O, Ho, Wo]. */
export interface ConvShape {
  /** Tasks T. */
  tasks: number;
  /** Images per task B. */
  batch: number;
  /** Input channels C. */
  cin: number;
  /** Input height H. */
  h: number;
  /** Input width W. */
  w: number;
  /** Output channels O. */
  cout: number;
  /** Kernel side k. */
  k: number;
  /** Stride (default 1). */
  stride?: number;
  /** Zero padding on every side (default 0). */
  padding?: number;
}

/** Output height and width of a convolution. */
export function outputSize(s: ConvShape): { ho: number; wo: number } {
  const stride = s.stride ?? 1;
  const padding = s.padding ?? 0;
  return {
    ho: Math.floor((s.h + 2 * padding - s.k) / stride) + 1,
    wo: Math.floor((s.w + 2 * padding - s.k) / stride) + 1,
  };
}

/** y = act(conv(x, w) + bias) per task; returns y [T, B, O, Ho, Wo]. */
export function conv2d(
  s: ConvShape,
  data: {
    x: ArrayLike<number>;
    w: ArrayLike<number>;
    bias: ArrayLike<number>;
    activation?: Activation;
    slope?: number;
  },
): Float64Array {
  const { tasks, batch, cin, h, w, cout, k } = s;
  const stride = s.stride ?? 1;
  const padding = s.padding ?? 0;
  const { ho, wo } = outputSize(s);
  const y = new Float64Array(tasks * batch * cout * ho * wo);
  for (let t = 0; t < tasks; t++) {
    for (let b = 0; b < batch; b++) {
      for (let o = 0; o < cout; o++) {
        for (let oy = 0; oy < ho; oy++) {
          for (let ox = 0; ox < wo; ox++) {
            let sum = data.bias[t * cout + o]!;
            for (let c = 0; c < cin; c++) {
              for (let ky = 0; ky < k; ky++) {
                for (let kx = 0; kx < k; kx++) {
                  const iy = oy * stride - padding + ky;
                  const ix = ox * stride - padding + kx;
                  if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                  const xv = data.x[(((t * batch + b) * cin + c) * h + iy) * w + ix]!;
                  const wv = data.w[(((t * cout + o) * cin + c) * k + ky) * k + kx]!;
                  sum += xv * wv;
                }
              }
            }
            y[(((t * batch + b) * cout + o) * ho + oy) * wo + ox] = act(
              data.activation ?? "identity",
              sum,
              data.slope,
            );
          }
        }
      }
    }
  }
  return y;
}

/**
 * Gradients of sum(dy * conv(x, w)) (the pre-activation output) w.r.t. x, w and bias:
 * dx [T, B, C, H, W], dw [T, O, C, k, k], dbias [T, O].
 */
export function conv2dBackward(
  s: ConvShape,
  data: { x: ArrayLike<number>; w: ArrayLike<number>; dy: ArrayLike<number> },
): { dx: Float64Array; dw: Float64Array; dbias: Float64Array } {
  const { tasks, batch, cin, h, w, cout, k } = s;
  const stride = s.stride ?? 1;
  const padding = s.padding ?? 0;
  const { ho, wo } = outputSize(s);
  const dx = new Float64Array(tasks * batch * cin * h * w);
  const dw = new Float64Array(tasks * cout * cin * k * k);
  const dbias = new Float64Array(tasks * cout);
  for (let t = 0; t < tasks; t++) {
    for (let b = 0; b < batch; b++) {
      for (let o = 0; o < cout; o++) {
        for (let oy = 0; oy < ho; oy++) {
          for (let ox = 0; ox < wo; ox++) {
            const g = data.dy[(((t * batch + b) * cout + o) * ho + oy) * wo + ox]!;
            dbias[t * cout + o]! += g;
            for (let c = 0; c < cin; c++) {
              for (let ky = 0; ky < k; ky++) {
                for (let kx = 0; kx < k; kx++) {
                  const iy = oy * stride - padding + ky;
                  const ix = ox * stride - padding + kx;
                  if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                  const xi = (((t * batch + b) * cin + c) * h + iy) * w + ix;
                  const wi = (((t * cout + o) * cin + c) * k + ky) * k + kx;
                  dx[xi]! += g * data.w[wi]!;
                  dw[wi]! += g * data.x[xi]!;
                }
              }
            }
          }
        }
      }
    }
  }
  return { dx, dw, dbias };
}
