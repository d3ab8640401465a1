/**
 * Batch normalisation with per-batch statistics (shaders/norm.wgsl), as MAML's conv4 backbone
 * uses it: training mode, no running statistics, and per task its own statistics and its own
 * (generated) scale and shift. The backward is the full one, through the mean and variance.
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, grid, pipeline, prepare, Uniform } from "../gpu/kernel.ts";
import type { Tensor } from "../gpu/tensor.ts";

/** Invocations per workgroup (one workgroup per task and channel). */
const TREE_GROUP = 64;
/** PyTorch's default. */
const DEFAULT_EPS = 1e-5;

/** The tensors and settings of `batchNorm` besides x and y. */
export interface BatchNormOptions {
  /** Scale per task and channel, [T, C]. */
  gamma: Tensor;
  /** Shift per task and channel, [T, C]. */
  beta: Tensor;
  /** Written: the mean of x per task and channel, [T, C], for the backward. */
  mean: Tensor;
  /** Written: 1 / sqrt(variance + eps) per task and channel, [T, C], for the backward. */
  invstd: Tensor;
  /** Added to the variance before the square root; default 1e-5 (PyTorch's). */
  eps?: number;
}

/**
 * Prepares y = gamma * (x - mean) * invstd + beta for x, y [T, B, C, H, W] and gamma, beta
 * [T, C], with the statistics of each task and channel taken over its B * H * W values: the
 * mean and the biased variance (divided by B * H * W, as PyTorch's training-mode batch norm
 * normalises), invstd = 1 / sqrt(variance + eps). Also writes `mean` and `invstd` [T, C] for
 * `batchNormBackward`. Outputs must not share a buffer with an input. One dispatch; each
 * statistic is summed in a fixed order, so results are the same bits run to run.
 */
export function batchNorm(
  gpu: Gpu,
  x: Tensor,
  y: Tensor,
  options: BatchNormOptions,
): Dispatch[] {
  const { gamma, beta, mean, invstd, eps = DEFAULT_EPS } = options;
  if (!(Number.isFinite(eps) && eps >= 0)) {
    throw new RangeError(`batchNorm expects eps to be finite and at least 0, got ${eps}`);
  }
  const sizes = checkShapes("batchNorm", x, { y }, { gamma, beta, mean, invstd });
  expectApart("batchNorm", [x, gamma, beta], { y, mean, invstd });
  if (sizes.groups === 0) return [];
  const pipe = pipeline(gpu, "norm", { entry: "forward" });
  const bindings = [x, gamma, beta, y, mean, invstd];
  return [prepare(gpu, pipe, bindings, grid(sizes.groups), params(gpu, sizes, eps))];
}

/** The tensors and settings of `batchNormBackward` besides dy. */
export interface BatchNormBackwardOptions {
  /** The forward's input, [T, B, C, H, W]. */
  x: Tensor;
  /** The forward's scale, [T, C]. */
  gamma: Tensor;
  /** The mean the forward wrote, [T, C]. */
  mean: Tensor;
  /** The invstd the forward wrote, [T, C]. */
  invstd: Tensor;
  /** Gradient with respect to x, [T, B, C, H, W]; not computed when absent. */
  dx?: Tensor;
  /** Gradient with respect to gamma, [T, C]; not computed when absent. */
  dGamma?: Tensor;
  /** Gradient with respect to beta, [T, C]; not computed when absent. */
  dBeta?: Tensor;
  /**
   * Add the gradients to what the outputs hold rather than overwrite it: true or false for all
   * three, or per output (default false).
   */
  accumulate?: boolean | { dx?: boolean; dGamma?: boolean; dBeta?: boolean };
}

/**
 * Prepares the gradients of `batchNorm` from dy [T, B, C, H, W], through the statistics: with
 * xhat = (x - mean) * invstd and sums over the B * H * W values of each task and channel,
 * dGamma = sum(dy * xhat), dBeta = sum(dy) and
 * dx = gamma * invstd * (dy - sum(dy) / N - xhat * sum(dy * xhat) / N), N = B * H * W. Writes
 * (or with `accumulate`, adds to) whichever of dx, dGamma and dBeta are given, in one dispatch;
 * each output has one writer and sums run in a fixed order (no atomics). Outputs must not share a
 * buffer with an input.
 */
export function batchNormBackward(
  gpu: Gpu,
  dy: Tensor,
  options: BatchNormBackwardOptions,
): Dispatch[] {
  const { x, gamma, mean, invstd, dx, dGamma, dBeta } = options;
  const perChannel = { gamma, mean, invstd, dGamma, dBeta };
  const sizes = checkShapes("batchNormBackward", x, { dy, dx }, perChannel);
  expectApart("batchNormBackward", [dy, x, gamma, mean, invstd], { dx, dGamma, dBeta });
  const outputs = [dx, dGamma, dBeta];
  if (sizes.groups === 0 || outputs.every((t) => t === undefined)) return [];
  const flags = typeof options.accumulate === "object"
    ? options.accumulate
    : { dx: options.accumulate, dGamma: options.accumulate, dBeta: options.accumulate };
  const pipe = pipeline(gpu, "norm", {
    entry: "backward",
    constants: {
      WRITE_DX: dx ? 1 : 0,
      WRITE_DGAMMA: dGamma ? 1 : 0,
      WRITE_DBETA: dBeta ? 1 : 0,
      ACCUMULATE_DX: flags.dx ? 1 : 0,
      ACCUMULATE_DGAMMA: flags.dGamma ? 1 : 0,
      ACCUMULATE_DBETA: flags.dBeta ? 1 : 0,
    },
  });
  // At least one output is given, so at most two need a stand-in, each its own range.
  let absent = 0;
  const bound = outputs.map((t) => t ?? standIn(gpu, absent++));
  const bindings = [x, gamma, mean, invstd, dy, ...bound];
  return [prepare(gpu, pipe, bindings, grid(sizes.groups), params(gpu, sizes, 0))];
}

/** Sizes the kernels address. */
interface Sizes {
  /** Pairs (t, c): T * C. */
  groups: number;
  channels: number;
  /** Values per pair: B * H * W. */
  count: number;
  /** H * W. */
  plane: number;
}

/**
 * Checks that x is an f32 [T, B, C, H, W] with B, H, W at least 1, that every tensor of `likeX`
 * has its shape and every one of `perChannel` the shape [T, C] (absent ones are skipped), all
 * f32; throws a RangeError naming the first that does not.
 */
function checkShapes(
  op: string,
  x: Tensor,
  likeX: Record<string, Tensor | undefined>,
  perChannel: Record<string, Tensor | undefined>,
): Sizes {
  if (x.shape.length !== 5 || x.dtype !== "f32") {
    throw new RangeError(
      `${op} expects x to be an f32 tensor [T, B, C, H, W], got ${x.dtype} ${dims(x.shape)}`,
    );
  }
  const [tasks, batch, channels, h, w] = x.shape as [number, number, number, number, number];
  if (tasks * channels > 0 && batch * h * w === 0) {
    throw new RangeError(
      `${op} needs at least one value per task and channel, got x ${dims(x.shape)}`,
    );
  }
  const expect = (name: string, t: Tensor | undefined, shape: readonly number[]) => {
    if (t && (t.dtype !== "f32" || !sameShape(t.shape, shape))) {
      throw new RangeError(
        `${op} expects ${name} to be f32 ${dims(shape)} for x ${dims(x.shape)} ` +
          `([T, B, C, H, W]), got ${t.dtype} ${dims(t.shape)}`,
      );
    }
  };
  for (const [name, t] of Object.entries(likeX)) expect(name, t, x.shape);
  for (const [name, t] of Object.entries(perChannel)) expect(name, t, [tasks, channels]);
  return { groups: tasks * channels, channels, count: batch * h * w, plane: h * w };
}

/**
 * Throws unless every output is in a buffer no input uses (WebGPU forbids binding a buffer as
 * read-only and read-write storage in one dispatch) and no two outputs overlap.
 */
function expectApart(
  op: string,
  inputs: readonly Tensor[],
  outputs: Record<string, Tensor | undefined>,
): void {
  const given = Object.entries(outputs).filter((e): e is [string, Tensor] => e[1] !== undefined);
  for (const [name, t] of given) {
    if (inputs.some((i) => i.buffer === t.buffer)) {
      throw new RangeError(
        `${op} cannot write ${name} into the buffer of one of its inputs: WebGPU forbids ` +
          `binding a buffer as read-only and read-write storage in one dispatch`,
      );
    }
  }
  for (let i = 0; i < given.length; i++) {
    for (let j = i + 1; j < given.length; j++) {
      const [a, ta] = given[i]!;
      const [b, tb] = given[j]!;
      const overlap = ta.buffer === tb.buffer &&
        ta.byteOffset < tb.byteOffset + tb.byteLength &&
        tb.byteOffset < ta.byteOffset + ta.byteLength;
      if (overlap) throw new RangeError(`${op} cannot write ${a} and ${b} into the same memory`);
    }
  }
}

/** The uniform block `Params` of shaders/norm.wgsl. */
function params(gpu: Gpu, s: Sizes, eps: number): Uniform {
  const stepInPlane = TREE_GROUP % s.plane;
  const image = s.channels * s.plane;
  return new Uniform(gpu, [
    ["u32", s.groups],
    ["u32", s.channels],
    ["u32", s.count],
    ["u32", s.plane],
    ["u32", Math.floor(TREE_GROUP / s.plane) * image + stepInPlane],
    ["u32", stepInPlane],
    ["u32", image - s.plane],
    ["f32", eps],
  ]);
}

/**
 * Per device, a small buffer whose ranges stand in for the outputs a backward does not compute:
 * the shader declares all three, so the bind group must fill them, but never touches these
 * (WRITE_* off). Each range is separate, as WebGPU forbids aliasing writable bindings. Like the
 * pipeline cache, it lives as long as the device.
 */
const standIns = new WeakMap<GPUDevice, GPUBuffer>();

/** Range `slot` (0 or 1) of the device's stand-in buffer. */
function standIn(gpu: Gpu, slot: number): GPUBufferBinding {
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  let buffer = standIns.get(gpu.device);
  if (!buffer) {
    buffer = gpu.device.createBuffer({ size: 2 * align, usage: GPUBufferUsage.STORAGE });
    standIns.set(gpu.device, buffer);
  }
  return { buffer, offset: slot * align, size: 4 };
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** A shape as it reads in messages: [2, 3, 4]. */
function dims(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}
