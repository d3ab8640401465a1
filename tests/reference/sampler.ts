/**
 * CPU reference of shaders/sampler.wgsl: the per-sample augmentation hash and the assembly of
 * a normalised batch x [T, B, C, H, W] from image bytes [N, C, H, W].
 *
 * @module
 */

/** The PCG output hash on 32-bit unsigned integers, as in the shader. */
export function pcg(v: number): number {
  const state = (Math.imul(v >>> 0, 747796405) + 2891336453) >>> 0;
  const word = Math.imul((state >>> ((state >>> 28) + 4)) ^ state, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/** The crop offset (ox, oy in [0, 2 pad]) and flip of sample (t, b) at `step`. */
export function augmentation(
  key: { seed: number; step: number; t: number; b: number },
  options: { pad: number; flip: boolean },
): { ox: number; oy: number; flip: boolean } {
  let h = pcg(key.seed);
  h = pcg((h ^ key.step) >>> 0);
  h = pcg((h ^ key.t) >>> 0);
  h = pcg((h ^ key.b) >>> 0);
  const span = 2 * options.pad + 1;
  const ox = h % span;
  h = pcg(h);
  const oy = h % span;
  h = pcg(h);
  return { ox, oy, flip: options.flip && (h & 1) === 1 };
}

/**
 * x[t, b, c, y, x] = (p / 255 - mean[c]) / std[c], p the pixel of image indices[t * B + b] at
 * (c, y + oy - pad, (flip ? W - 1 - x : x) + ox - pad), or 0 outside the image; the crop and
 * flip are keyed by (t, b), or by (image, b) with `byImage`.
 */
export function assemble(
  images: Uint8Array,
  options: {
    shape: readonly [number, number, number];
    indices: ArrayLike<number>;
    tasks: number;
    batch: number;
    mean: readonly number[];
    std: readonly number[];
    seed?: number;
    step?: number;
    augment?: { pad: number; flip: boolean; byImage?: boolean };
  },
): Float32Array {
  const [channels, height, width] = options.shape;
  const { tasks, batch, mean, std } = options;
  const pad = options.augment?.pad ?? 0;
  const out = new Float32Array(tasks * batch * channels * height * width);
  let e = 0;
  for (let t = 0; t < tasks; t++) {
    for (let b = 0; b < batch; b++) {
      const image = options.indices[t * batch + b]!;
      const aug = augmentation(
        {
          seed: options.seed ?? 0,
          step: options.step ?? 0,
          t: options.augment?.byImage ? image : t,
          b,
        },
        { pad, flip: options.augment?.flip ?? false },
      );
      for (let c = 0; c < channels; c++) {
        for (let y = 0; y < height; y++) {
          for (let x = 0; x < width; x++) {
            const sy = y + aug.oy - pad;
            const sx = (aug.flip ? width - 1 - x : x) + aug.ox - pad;
            const inside = sy >= 0 && sy < height && sx >= 0 && sx < width;
            const p = inside ? images[((image * channels + c) * height + sy) * width + sx]! : 0;
            out[e++] = (p / 255 - mean[c]!) / std[c]!;
          }
        }
      }
    }
  }
  return out;
}
