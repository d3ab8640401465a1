/**
 * 2x2 max pooling with stride 2 (shaders/pool.wgsl), as in each block of the few-shot conv4
 * backbone: the forward writes the pooled maxima and their argmax, and the backward sends each
 * output's gradient to its argmax without recomputing the forward.
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, grid, pipeline, prepare, Uniform } from "../gpu/kernel.ts";
import type { Tensor } from "../gpu/tensor.ts";

/** Invocations per workgroup (one element each). */
const GROUP = 256;

/**
 * The shape of the pooled output (and of its indices) for x of shape [T, B, C, H, W]:
 * [T, B, C, floor(H / 2), floor(W / 2)]. An odd H or W drops the last row or column, as PyTorch's
 * MaxPool2d(2) does. Throws a RangeError for another rank or for H or W below 2.
 */
export function poolOutputSize(shape: readonly number[]): number[] {
  if (shape.length !== 5 || shape.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new RangeError(
      `Max pooling expects an input of shape [T, B, C, H, W], got ${dims(shape)}`,
    );
  }
  const [t, b, c, h, w] = shape as [number, number, number, number, number];
  if (h < 2 || w < 2) {
    const got = `got an input ${dims(shape)}`;
    throw new RangeError(
      `Max pooling 2x2 needs H and W of at least 2, ${got}; pool fewer times or use larger images`,
    );
  }
  return [t, b, c, Math.floor(h / 2), Math.floor(w / 2)];
}

/**
 * Prepares y = max over each 2x2 window (stride 2) of x [T, B, C, H, W], and `indices` = the
 * winner's position in its window, row-major: 0 top left, 1 top right, 2 bottom left, 3 bottom
 * right. y (f32) and indices (u32) have the shape {@linkcode poolOutputSize} gives. Of equal
 * values the first in window order wins; a NaN wins over numbers (the last NaN over earlier
 * ones), as PyTorch on the CPU.
 */
export function maxPool2d(gpu: Gpu, x: Tensor, y: Tensor, indices: Tensor): Dispatch[] {
  const sizes = check("maxPool2d", { input: ["x", x], output: ["y", y], indices });
  if (y.buffer === x.buffer || indices.buffer === x.buffer || indices.buffer === y.buffer) {
    throw new RangeError("maxPool2d needs x, y and indices in three different buffers");
  }
  if (y.size === 0) return [];
  const uniform = params(gpu, y.size, sizes);
  const pipe = pipeline(gpu, "pool", { entry: "max_pool" });
  return [prepare(gpu, pipe, [x, y, indices], grid(Math.ceil(y.size / GROUP)), uniform)];
}

/**
 * Prepares dx (+)= the gradient of {@linkcode maxPool2d}: each dy element goes to the input its
 * index names, and every other element of dx [T, B, C, H, W] (the dropped last row or column of an
 * odd H or W included) gets 0. dy (f32) and indices (u32, as the forward wrote them) have the
 * pooled shape. Windows do not overlap, so each dx element is written by one invocation and the
 * result is the same bits every run. With `accumulate`, dy is added into dx and elements that win
 * nothing are left untouched.
 */
export function maxPool2dBackward(
  gpu: Gpu,
  dy: Tensor,
  indices: Tensor,
  dx: Tensor,
  options: { accumulate?: boolean } = {},
): Dispatch[] {
  const sizes = check("maxPool2dBackward", { input: ["dx", dx], output: ["dy", dy], indices });
  if (dx.buffer === dy.buffer || dx.buffer === indices.buffer) {
    throw new RangeError("maxPool2dBackward cannot write dx into the buffer of dy or indices");
  }
  if (dx.size === 0) return [];
  const uniform = params(gpu, dx.size, sizes);
  const pipe = pipeline(gpu, "pool", {
    entry: "max_pool_backward",
    constants: { ACCUMULATE: options.accumulate ? 1 : 0 },
  });
  return [prepare(gpu, pipe, [dy, dx, indices], grid(Math.ceil(dx.size / GROUP)), uniform)];
}

interface Sizes {
  h: number;
  w: number;
  ho: number;
  wo: number;
}

/** The uniform block of shaders/pool.wgsl: `n` invocations with work, then the plane sizes. */
function params(gpu: Gpu, n: number, { h, w, ho, wo }: Sizes): Uniform {
  return new Uniform(gpu, [["u32", n], ["u32", h], ["u32", w], ["u32", ho], ["u32", wo]]);
}

/**
 * Checks an f32 input-sized tensor [T, B, C, H, W], an f32 output-sized one of the pooled shape
 * and u32 indices of the pooled shape; returns the plane sizes.
 */
function check(
  op: string,
  { input, output, indices }: {
    input: [string, Tensor];
    output: [string, Tensor];
    indices: Tensor;
  },
): Sizes {
  const [inName, inTensor] = input;
  const [outName, outTensor] = output;
  if (inTensor.dtype !== "f32" || outTensor.dtype !== "f32" || indices.dtype !== "u32") {
    throw new RangeError(
      `${op} expects f32 ${inName} and ${outName} and u32 indices, got ${inTensor.dtype}, ` +
        `${outTensor.dtype} and ${indices.dtype}`,
    );
  }
  const pooled = poolOutputSize(inTensor.shape);
  for (const [name, t] of [[outName, outTensor], ["indices", indices]] as const) {
    if (!sameShape(t.shape, pooled)) {
      throw new RangeError(
        `${op} of ${inName} ${dims(inTensor.shape)} expects ${name} of shape ${dims(pooled)}, ` +
          `got ${dims(t.shape)}`,
      );
    }
  }
  const [h, w] = inTensor.shape.slice(3) as [number, number];
  const [ho, wo] = pooled.slice(3) as [number, number];
  return { h, w, ho, wo };
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** A shape as it reads in messages: [2, 3, 4]. */
function dims(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}
