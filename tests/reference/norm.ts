/**
 * CPU reference of shaders/norm.wgsl: batch normalisation with per-batch statistics per task and
 * channel, and its full backward, written as plain loops in float64.
 *
 * @module
 */

/** Sizes of x [T, B, C, H, W]. */
export type NormShape = readonly [number, number, number, number, number];

/** Calls `f(offset)` for each of the B * H * W values of task t and channel c, in order. */
function forEachValue(shape: NormShape, t: number, c: number, f: (i: number) => void): void {
  const [, batch, channels, h, w] = shape;
  const plane = h * w;
  for (let b = 0; b < batch; b++) {
    const start = ((t * batch + b) * channels + c) * plane;
    for (let i = 0; i < plane; i++) f(start + i);
  }
}

/**
 * y = gamma * (x - mean) * invstd + beta with the mean and the biased variance (divided by
 * N = B * H * W) of each task and channel, invstd = 1 / sqrt(variance + eps); eps defaults to
 * 1e-5. Returns y [T, B, C, H, W] and mean, invstd [T, C].
 */
export function batchNorm(
  x: ArrayLike<number>,
  shape: NormShape,
  options: { gamma: ArrayLike<number>; beta: ArrayLike<number>; eps?: number },
): { y: Float64Array; mean: Float64Array; invstd: Float64Array } {
  const { gamma, beta, eps = 1e-5 } = options;
  const [tasks, batch, channels, h, w] = shape;
  const count = batch * h * w;
  const y = new Float64Array(x.length);
  const mean = new Float64Array(tasks * channels);
  const invstd = new Float64Array(tasks * channels);
  for (let t = 0; t < tasks; t++) {
    for (let c = 0; c < channels; c++) {
      const g = t * channels + c;
      let sum = 0;
      forEachValue(shape, t, c, (i) => sum += x[i]!);
      const m = sum / count;
      let squares = 0;
      forEachValue(shape, t, c, (i) => squares += (x[i]! - m) ** 2);
      const s = 1 / Math.sqrt(squares / count + eps);
      forEachValue(shape, t, c, (i) => y[i] = gamma[g]! * (x[i]! - m) * s + beta[g]!);
      mean[g] = m;
      invstd[g] = s;
    }
  }
  return { y, mean, invstd };
}

/**
 * Gradients of `batchNorm` from dy, through the statistics (recomputed here from x): dGamma =
 * sum(dy * xhat), dBeta = sum(dy), dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)).
 */
export function batchNormBackward(
  dy: ArrayLike<number>,
  shape: NormShape,
  options: { x: ArrayLike<number>; gamma: ArrayLike<number>; eps?: number },
): { dx: Float64Array; dGamma: Float64Array; dBeta: Float64Array } {
  const { x, gamma } = options;
  const [tasks, batch, channels, h, w] = shape;
  const count = batch * h * w;
  const { mean, invstd } = batchNorm(x, shape, {
    gamma,
    beta: new Float64Array(gamma.length),
    eps: options.eps,
  });
  const dx = new Float64Array(x.length);
  const dGamma = new Float64Array(tasks * channels);
  const dBeta = new Float64Array(tasks * channels);
  for (let t = 0; t < tasks; t++) {
    for (let c = 0; c < channels; c++) {
      const g = t * channels + c;
      const m = mean[g]!;
      const s = invstd[g]!;
      let sumDy = 0;
      let sumDyXhat = 0;
      forEachValue(shape, t, c, (i) => {
        sumDy += dy[i]!;
        sumDyXhat += dy[i]! * (x[i]! - m) * s;
      });
      forEachValue(shape, t, c, (i) => {
        const xhat = (x[i]! - m) * s;
        dx[i] = gamma[g]! * s * (dy[i]! - sumDy / count - xhat * sumDyXhat / count);
      });
      dGamma[g] = sumDyXhat;
      dBeta[g] = sumDy;
    }
  }
  return { dx, dGamma, dBeta };
}
