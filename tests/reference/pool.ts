/**
 * CPU reference of shaders/pool.wgsl: 2x2 max pooling with stride 2 as PyTorch's MaxPool2d(2) on
 * the CPU (windows scanned in row-major order, `v > max || isNaN(v)` takes the lead).
 *
 * @module
 */

/**
 * y [T, B, C, floor(H / 2), floor(W / 2)] = max of each 2x2 window of x [T, B, C, H, W] (`shape`),
 * and indices = the winner's position in its window (0 top left, 1 top right, 2 bottom left,
 * 3 bottom right).
 */
export function maxPool2d(
  x: ArrayLike<number>,
  shape: readonly number[],
): { y: Float64Array; indices: Uint32Array } {
  const [t, b, c, h, w] = shape as [number, number, number, number, number];
  const ho = Math.floor(h / 2);
  const wo = Math.floor(w / 2);
  const planes = t * b * c;
  const y = new Float64Array(planes * ho * wo);
  const indices = new Uint32Array(y.length);
  let o = 0;
  for (let plane = 0; plane < planes; plane++) {
    for (let oy = 0; oy < ho; oy++) {
      for (let ox = 0; ox < wo; ox++) {
        let best = -Infinity;
        let at = 0;
        for (let k = 0; k < 4; k++) {
          const v = x[plane * h * w + (2 * oy + (k >> 1)) * w + 2 * ox + (k & 1)]!;
          if (v > best || Number.isNaN(v)) {
            best = v;
            at = k;
          }
        }
        y[o] = best;
        indices[o++] = at;
      }
    }
  }
  return { y, indices };
}

/**
 * dx [T, B, C, H, W] (`shape`, x's) = (initial or 0) + dy scattered to the window positions that
 * `indices` name; inputs that win nothing keep their initial value (or 0).
 */
export function maxPool2dBackward(
  dy: ArrayLike<number>,
  indices: ArrayLike<number>,
  shape: readonly number[],
  initial?: ArrayLike<number>,
): Float64Array {
  const [t, b, c, h, w] = shape as [number, number, number, number, number];
  const ho = Math.floor(h / 2);
  const wo = Math.floor(w / 2);
  const dx = initial ? Float64Array.from(initial) : new Float64Array(t * b * c * h * w);
  let o = 0;
  for (let plane = 0; plane < t * b * c; plane++) {
    for (let oy = 0; oy < ho; oy++) {
      for (let ox = 0; ox < wo; ox++) {
        const k = indices[o]!;
        if (k < 4) dx[plane * h * w + (2 * oy + (k >> 1)) * w + 2 * ox + (k & 1)]! += dy[o]!;
        o++;
      }
    }
  }
  return dx;
}
