/**
 * 2D convolution batched over tasks, each task with its own weights (shaders/conv2d.wgsl):
 * forward with fused bias and activation, and the backward kernels for input, weight and bias.
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, grid, pipeline, prepare, Uniform } from "../gpu/kernel.ts";
import { createTensor, type Tensor } from "../gpu/tensor.ts";
import {
  chunkTasks,
  fitsStaging,
  type StagedTextures,
  throughStaging,
  unusedTextures,
} from "../gpu/texture.ts";
import { sizeClass, tunedDispatch, type TuneRequest } from "../gpu/tune.ts";
import { type Activation, activationCode } from "./activation.ts";

/** Options of {@linkcode conv2d}. */
export interface Conv2dOptions {
  /** Step between output pixels in input pixels; default 1. */
  stride?: number;
  /** Zero rows and columns added on every side of the input; default 0. */
  padding?: number;
  /** Activation after the bias; default "identity". */
  activation?: Activation;
  /** Slope of leaky_relu for negative inputs; default 0.01. */
  slope?: number;
  /**
   * "tiled" keeps several output channels per invocation in registers (best on software
   * rasterisers; "tiled_texture" is the same here, see the backward options); "gemm" is an
   * implicit GEMM through workgroup-memory tiles; "direct" (for GPUs) computes one output per
   * invocation, and its
   * backward weight shares each weight plane's reduction over a workgroup; "naive" computes one
   * output per invocation in every pass and exists as the benchmark's baseline. Unset: the
   * tuner's choice among {@linkcode conv2dCandidates}.
   */
  variant?: Conv2dVariant;
}

/** The kernels of each pass in shaders/conv2d.wgsl. */
export type Conv2dVariant = "tiled" | "tiled_texture" | "gemm" | "direct" | "naive";

/** The variants the tuner times for each convolution pass, the built-in default first. */
export const CONV2D_TUNED: readonly Conv2dVariant[] = ["tiled", "tiled_texture", "gemm", "direct"];

/**
 * The candidates for `pass` ("forward", "backward_input" or "backward_weight") on `gpu`: on a
 * software adapter "direct" is left out, since one output per invocation there measured about
 * 10 times slower than the tiled kernels (docs/benchmarks.md, the naive rows) and timing it would
 * only lengthen the tuning; "tiled_texture" only for backward_weight, the one pass that measured
 * faster reading through textures (1.3-1.9x on llvmpipe; forward and backward_input, bound by
 * their arithmetic, not at all).
 */
export function conv2dCandidates(gpu: Gpu, pass = "backward_weight"): readonly Conv2dVariant[] {
  return CONV2D_TUNED.filter((v) =>
    !(gpu.isFallback && v === "direct") && (v !== "tiled_texture" || pass === "backward_weight")
  );
}

/** Options of the backward convolutions. */
export interface Conv2dBackwardOptions {
  /** Stride of the forward convolution; default 1. */
  stride?: number;
  /** Padding of the forward convolution; default 0. */
  padding?: number;
  /** False (default): out = grad; true: out += grad. */
  accumulate?: boolean;
  /**
   * "tiled" (the naive kernel is used where a tile does not fit), "tiled_texture" (for dw: the
   * same reading x and dy through the staging texture, in chunks of tasks that fit it, see
   * src/gpu/texture.ts; for dx the same as "tiled"), "gemm" (implicit GEMM through
   * workgroup-memory tiles), "direct" (for GPUs: one dx value per invocation; dw by a workgroup
   * per weight plane, k <= 7, else the naive kernel) or "naive" (one output per invocation, the
   * benchmark's baseline). Unset: the tuner's choice among {@linkcode conv2dCandidates}.
   */
  variant?: Conv2dVariant;
}

/** Output side length of a convolution: floor((size + 2 * padding - k) / stride) + 1. */
export function conv2dOutputSize(
  size: number,
  options: { k: number; stride?: number; padding?: number },
): number {
  const { k, stride = 1, padding = 0 } = options;
  return Math.floor((size + 2 * padding - k) / stride) + 1;
}

const WG = 64;

interface Geometry {
  tasks: number;
  batch: number;
  cin: number;
  h: number;
  w: number;
  cout: number;
  k: number;
  ho: number;
  wo: number;
  stride: number;
  padding: number;
}

function expectShape(name: string, t: Tensor, shape: readonly number[]): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new RangeError(`Expected ${name} of shape [${shape}], got [${t.shape}]`);
  }
  expectFloat(name, t);
}

function expectFloat(name: string, t: Tensor): void {
  if (t.dtype !== "f32") throw new RangeError(`Expected ${name} of dtype f32, got ${t.dtype}`);
}

/**
 * Checks x [T, B, C, H, W] (named `input` in messages: x or dx) and w [T, O, C, k, k] against each
 * other and the options, and returns every size of the convolution.
 */
function geometry(
  x: Tensor,
  w: Tensor,
  options: { stride?: number; padding?: number; input: string },
): Geometry {
  const { stride = 1, padding = 0, input } = options;
  if (!Number.isInteger(stride) || stride < 1) {
    throw new RangeError(`Expected an integer stride >= 1, got ${stride}`);
  }
  if (!Number.isInteger(padding) || padding < 0) {
    throw new RangeError(`Expected an integer padding >= 0, got ${padding}`);
  }
  if (x.shape.length !== 5) {
    throw new RangeError(`Expected ${input} of shape [T, B, C, H, W], got [${x.shape}]`);
  }
  if (w.shape.length !== 5 || w.shape[3] !== w.shape[4]) {
    throw new RangeError(`Expected weights of shape [T, O, C, k, k], got [${w.shape}]`);
  }
  expectFloat(input, x);
  expectFloat("weights", w);
  const [tasks, batch, cin, h, wd] = x.shape as [number, number, number, number, number];
  const [wt, cout, wc, k] = w.shape as [number, number, number, number];
  if (wt !== tasks || wc !== cin) {
    throw new RangeError(
      `Expected weights of shape [${tasks}, O, ${cin}, k, k] for ${input} of shape [${x.shape}], ` +
        `got [${w.shape}]`,
    );
  }
  const ho = conv2dOutputSize(h, { k, stride, padding });
  const wo = conv2dOutputSize(wd, { k, stride, padding });
  if (ho < 1 || wo < 1 || k < 1) {
    throw new RangeError(
      `Kernel ${k}x${k} with padding ${padding} does not fit an input of ${h}x${wd}`,
    );
  }
  if (tasks * batch * cout * cin === 0) {
    throw new RangeError(
      `Expected non-empty tensors, got ${input} [${x.shape}] and weights [${w.shape}]`,
    );
  }
  return { tasks, batch, cin, h, w: wd, cout, k, ho, wo, stride, padding };
}

function uniform(
  gpu: Gpu,
  g: Geometry,
  blocks: { a: number; b: number; slope?: number; task0?: number },
): Uniform {
  return new Uniform(gpu, [
    ["u32", g.tasks],
    ["u32", g.batch],
    ["u32", g.cin],
    ["u32", g.h],
    ["u32", g.w],
    ["u32", g.cout],
    ["u32", g.k],
    ["u32", g.ho],
    ["u32", g.wo],
    ["u32", g.stride],
    ["u32", g.padding],
    ["u32", blocks.a],
    ["u32", blocks.b],
    ["f32", blocks.slope ?? 0],
    ["u32", blocks.task0 ?? 0],
  ]);
}

/** Values in a row window of the tiled kernels: 4 vec4s less the 3 floats of misalignment. */
const WINDOW_SPAN = 13;
/** Largest kernel whose weights for 16 channels of one input channel fit workgroup memory. */
const MAX_TILED_K = 22;
/** backward_weight: elements per workgroup (EL in the shader). */
const ELEMENTS_PER_GROUP = 16;
/** Largest kernel of backward_weight_direct (MAX_TAPS = 49 accumulators in the shader). */
const MAX_DIRECT_K = 7;

/**
 * The binding of `t` as an array of vec4s, its size rounded up to 16 bytes (the tiled kernels
 * read whole vec4s and mask what lies past the end, and write only inside `t`); undefined where
 * the buffer ends too soon.
 */
function vec4Binding(t: Tensor): GPUBufferBinding | undefined {
  const size = Math.ceil(t.byteLength / 16) * 16;
  if (t.byteOffset % 16 !== 0 || t.byteOffset + size > t.buffer.size) return undefined;
  return { buffer: t.buffer, offset: t.byteOffset, size };
}

/**
 * Prepares y[t, b] = act(conv(x[t, b], w[t]) + bias[t]) for x [T, B, C, H, W], w [T, O, C, k, k],
 * bias [T, O] and y [T, B, O, Ho, Wo], Ho = floor((H + 2 * padding - k) / stride) + 1 (same for
 * Wo). Cross-correlation, like PyTorch's conv2d.
 */
export function conv2d(
  gpu: Gpu,
  x: Tensor,
  w: Tensor,
  bias: Tensor,
  y: Tensor,
  options: Conv2dOptions = {},
): Dispatch[] {
  const g = geometry(x, w, { ...options, input: "x" });
  expectShape("bias", bias, [g.tasks, g.cout]);
  expectShape("y", y, [g.tasks, g.batch, g.cout, g.ho, g.wo]);
  const act = activationCode(options.activation ?? "identity");
  const slope = options.slope ?? 0.01;
  const build = (variant: string, [fx, fw, fb, fy]: Tensor[]) =>
    forwardDispatch(gpu, [fx!, fw!, fb!, fy!], { g, act, slope, variant });
  return tuned(gpu, "conv2d.forward", g, [x, w, bias, y], build, options.variant);
}

/**
 * The one dispatch of `build` with `variant`, or, without one, the tuner's choice; timing runs
 * on fresh tensors of the same shapes.
 */
function tuned(
  gpu: Gpu,
  kernel: string,
  g: Geometry,
  tensors: Tensor[],
  build: (variant: string, tensors: Tensor[]) => Dispatch,
  variant: Conv2dVariant | undefined,
): Dispatch[] {
  if (variant) return [build(variant, tensors)];
  // The tiled kernels need vec4-aligned tensors; where they are not, "tiled" is the naive kernel.
  const aligned = tensors.every((t) => vec4Binding(t) !== undefined);
  const request: TuneRequest = {
    kernel,
    shapeClass: `T${sizeClass(g.tasks)} B${sizeClass(g.batch)} C${g.cin} ${g.h}x${g.w} ` +
      `O${g.cout} k${g.k} s${g.stride} p${g.padding}${aligned ? "" : " unaligned"}`,
    variants: conv2dCandidates(gpu, kernel.replace("conv2d.", "")),
    build: (v) => build(v, tensors),
    measure: (v) => {
      const fresh = tensors.map((t) => createTensor(gpu, t.shape));
      return { dispatch: build(v, fresh), destroy: () => fresh.forEach((t) => t.destroy()) };
    },
  };
  return [tunedDispatch(gpu, request)];
}

/** Workgroups of the implicit-GEMM kernels: T x ceil(M / 32) x ceil(N / 32) tiles. */
function gemmBlocks(g: Geometry, m: number, n: number): { a: number; b: number; groups: number } {
  const a = Math.ceil(m / 32);
  const b = Math.ceil(n / 32);
  return { a, b, groups: g.tasks * a * b };
}

function forwardDispatch(
  gpu: Gpu,
  [x, w, bias, y]: [Tensor, Tensor, Tensor, Tensor],
  o: { g: Geometry; act: number; slope: number; variant: string },
): Dispatch {
  const { g, act, slope, variant } = o;
  if (variant === "gemm") {
    const blocks = gemmBlocks(g, g.cout, g.batch * g.ho * g.wo);
    const u = uniform(gpu, g, { ...blocks, slope });
    const pipe = pipeline(gpu, "conv2d", { entry: "forward_gemm", constants: { ACT: act } });
    return prepare(gpu, pipe, [x, w, bias, y], grid(blocks.groups), u);
  }
  const x4 = vec4Binding(x);
  const y4 = vec4Binding(y);
  // A window covers the 4 columns' taps, at least one: 3 stride + 1 floats.
  // "tiled_texture" reads x from storage here: the forward measured no faster through a texture.
  const tiled = (variant === "tiled" || variant === "tiled_texture") && x4 !== undefined &&
    y4 !== undefined && g.k <= MAX_TILED_K && 3 * g.stride + 1 <= WINDOW_SPAN;
  if (!tiled) {
    const u = uniform(gpu, g, { a: 0, b: 0, slope });
    const pipe = pipeline(gpu, "conv2d", { entry: "forward_naive", constants: { ACT: act } });
    return prepare(gpu, pipe, [x, w, bias, y], grid(Math.ceil(y.size / WG)), u);
  }
  // 4 output rows per invocation where that leaves no row of an invocation idle, else 2.
  const tall = g.ho >= 8;
  const tiles = g.batch * Math.ceil(g.ho / (tall ? 4 : 2)) * Math.ceil(g.wo / 4);
  const pixelBlocks = Math.ceil(tiles / WG);
  const channelBlocks = Math.ceil(g.cout / 16);
  const u = uniform(gpu, g, { a: pixelBlocks, b: channelBlocks, slope });
  const pipe = pipeline(gpu, "conv2d", {
    entry: "forward",
    constants: {
      ACT: act,
      STRIDE: g.stride,
      TALL: tall ? 1 : 0,
      Y_ALIGNED: g.wo % 4 === 0 ? 1 : 0,
    },
  });
  const groups = grid(g.tasks * channelBlocks * pixelBlocks);
  return prepare(gpu, pipe, [x4!, w, bias, y4!], groups, u, unusedTextures(gpu, 1));
}

/**
 * Prepares dx from dy and w: dy [T, B, O, Ho, Wo] is the gradient w.r.t. the convolution's
 * pre-activation output (the caller undoes the activation), w [T, O, C, k, k], dx
 * [T, B, C, H, W].
 */
export function conv2dBackwardInput(
  gpu: Gpu,
  dy: Tensor,
  w: Tensor,
  dx: Tensor,
  options: Conv2dBackwardOptions = {},
): Dispatch[] {
  const g = geometry(dx, w, { ...options, input: "dx" });
  expectShape("dy", dy, [g.tasks, g.batch, g.cout, g.ho, g.wo]);
  const accumulate = options.accumulate ?? false;
  const build = (variant: string, [fdy, fw, fdx]: Tensor[]) =>
    backwardInputDispatch(gpu, [fdy!, fw!, fdx!], { g, accumulate, variant });
  return tuned(gpu, "conv2d.backward_input", g, [dy, w, dx], build, options.variant);
}

function backwardInputDispatch(
  gpu: Gpu,
  [dy, w, dx]: [Tensor, Tensor, Tensor],
  o: { g: Geometry; accumulate: boolean; variant: string },
): Dispatch {
  const { g, variant } = o;
  const constants = { ACCUMULATE: o.accumulate ? 1 : 0 };
  if (variant === "gemm") {
    // One product per stride phase; the column tiles cover the largest phase.
    const s = g.stride;
    const blocks = gemmBlocks(g, g.cin, g.batch * Math.ceil(g.h / s) * Math.ceil(g.w / s));
    const u = uniform(gpu, g, blocks);
    const pipe = pipeline(gpu, "conv2d", { entry: "backward_input_gemm", constants });
    return prepare(gpu, pipe, [dy, w, dx], grid(blocks.groups * s * s), u);
  }
  const dy4 = vec4Binding(dy);
  // "tiled_texture" reads dy from storage here: this pass measured no faster through a texture.
  const tiled = (variant === "tiled" || variant === "tiled_texture") && dy4 !== undefined &&
    g.k <= MAX_TILED_K;
  if (!tiled) {
    const u = uniform(gpu, g, { a: 0, b: 0 });
    const pipe = pipeline(gpu, "conv2d", { entry: "backward_input_naive", constants });
    return prepare(gpu, pipe, [dy, w, dx], grid(Math.ceil(dx.size / WG)), u);
  }
  const s = g.stride;
  // 8 columns per invocation where the phase grid is that wide and a window holds 8 columns of
  // a phase's taps along x (at most ceil(k / stride) <= 6).
  const wide = Math.ceil(g.w / s) >= 8 && Math.ceil(g.k / s) <= 6;
  const tiles = g.batch * Math.ceil(Math.ceil(g.h / s) / 2) *
    Math.ceil(Math.ceil(g.w / s) / (wide ? 8 : 4));
  const pixelBlocks = Math.ceil(tiles / WG);
  const channelBlocks = Math.ceil(g.cin / 16);
  const u = uniform(gpu, g, { a: pixelBlocks, b: channelBlocks });
  const pipe = pipeline(gpu, "conv2d", {
    entry: "backward_input",
    constants: { ...constants, WIDE_COLUMNS: wide ? 1 : 0 },
  });
  const groups = grid(g.tasks * s * s * channelBlocks * pixelBlocks);
  return prepare(gpu, pipe, [dy4!, w, dx], groups, u, unusedTextures(gpu, 1));
}

/**
 * Prepares dw[t] = sum over b of the correlation of x[t, b] with dy[t, b], for x
 * [T, B, C, H, W], dy [T, B, O, Ho, Wo] (pre-activation gradient) and dw [T, O, C, k, k]; the sum
 * runs in a fixed order, so it is deterministic.
 */
export function conv2dBackwardWeight(
  gpu: Gpu,
  x: Tensor,
  dy: Tensor,
  dw: Tensor,
  options: Conv2dBackwardOptions = {},
): Dispatch[] {
  const g = geometry(x, dw, { ...options, input: "x" });
  expectShape("dy", dy, [g.tasks, g.batch, g.cout, g.ho, g.wo]);
  const accumulate = options.accumulate ?? false;
  const build = (variant: string, [fx, fdy, fdw]: Tensor[]) =>
    backwardWeightDispatch(gpu, [fx!, fdy!, fdw!], { g, accumulate, variant });
  return tuned(gpu, "conv2d.backward_weight", g, [x, dy, dw], build, options.variant);
}

function backwardWeightDispatch(
  gpu: Gpu,
  [x, dy, dw]: [Tensor, Tensor, Tensor],
  o: { g: Geometry; accumulate: boolean; variant: string },
): Dispatch {
  const { g, variant } = o;
  const constants = { ACCUMULATE: o.accumulate ? 1 : 0 };
  if (variant === "gemm") {
    const blocks = gemmBlocks(g, g.cout, g.cin * g.k * g.k);
    const u = uniform(gpu, g, blocks);
    const pipe = pipeline(gpu, "conv2d", { entry: "backward_weight_gemm", constants });
    return prepare(gpu, pipe, [x, dy, dw], grid(blocks.groups), u);
  }
  if (variant === "direct" && g.k <= MAX_DIRECT_K) {
    const u = uniform(gpu, g, { a: 0, b: 0 });
    const pipe = pipeline(gpu, "conv2d", {
      entry: "backward_weight_direct",
      constants: { ...constants, KS: g.k },
    });
    return prepare(gpu, pipe, [x, dy, dw], grid(g.tasks * g.cout * g.cin), u);
  }
  const x4 = vec4Binding(x);
  const dy4 = vec4Binding(dy);
  // A window covers 4 taps of the 4 columns: 3 stride + 4 values.
  const tiled = (variant === "tiled" || variant === "tiled_texture") && x4 !== undefined &&
    dy4 !== undefined && 3 * g.stride + 4 <= WINDOW_SPAN;
  if (!tiled) {
    const u = uniform(gpu, g, { a: 0, b: 0 });
    const pipe = pipeline(gpu, "conv2d", { entry: "backward_weight_naive", constants });
    return prepare(gpu, pipe, [x, dy, dw], grid(Math.ceil(dw.size / WG)), u);
  }
  const wide = g.k > 4;
  const elements = g.cin * g.k * Math.ceil(g.k / (wide ? 8 : 4));
  const elementBlocks = Math.ceil(elements / ELEMENTS_PER_GROUP);
  const channelBlocks = Math.ceil(g.cout / 16);
  const aligned = g.wo % 4 === 0 ? 1 : 0;
  // Tasks per dispatch through the staging texture (0: not through it).
  const perTask = [g.batch * g.cin * g.h * g.w, g.batch * g.cout * g.ho * g.wo];
  const chunk = variant === "tiled_texture" && fitsStaging(x) && fitsStaging(dy)
    ? chunkTasks(gpu, g.tasks, perTask)
    : 0;
  const pipe = pipeline(gpu, "conv2d", {
    entry: "backward_weight",
    constants: {
      ...constants,
      DY_ALIGNED: aligned,
      STRIDE: g.stride,
      WIDE_TAPS: wide ? 1 : 0,
      TEX: chunk > 0 ? 1 : 0,
    },
  });
  const bindings = [x4!, dy4!, dw];
  const part = (first: number, count: number, textures: StagedTextures) => {
    const blocks = { a: elementBlocks, b: channelBlocks, task0: first };
    const u = uniform(gpu, { ...g, tasks: count }, blocks);
    const groups = grid(count * channelBlocks * elementBlocks);
    return prepare(gpu, pipe, bindings, groups, u, textures);
  };
  if (chunk === 0) return part(0, g.tasks, unusedTextures(gpu, 2));
  const operands = [{ tensor: x, perTask: perTask[0]! }, { tensor: dy, perTask: perTask[1]! }];
  return throughStaging(gpu, operands, g.tasks, chunk, part);
}

/** Prepares dbias[t, o] = sum over b, i, j of dy[t, b, o, i, j]; dy [T, B, O, Ho, Wo]. */
export function conv2dBackwardBias(
  gpu: Gpu,
  dy: Tensor,
  dbias: Tensor,
  options: { accumulate?: boolean } = {},
): Dispatch[] {
  if (dy.shape.length !== 5) {
    throw new RangeError(`Expected dy of shape [T, B, O, Ho, Wo], got [${dy.shape}]`);
  }
  const [tasks, batch, cout, ho, wo] = dy.shape as [number, number, number, number, number];
  expectShape("dbias", dbias, [tasks, cout]);
  const g: Geometry = {
    tasks,
    batch,
    cin: 0,
    h: 0,
    w: 0,
    cout,
    k: 0,
    ho,
    wo,
    stride: 1,
    padding: 0,
  };
  const u = uniform(gpu, g, { a: 0, b: 0 });
  const pipe = pipeline(gpu, "conv2d", {
    entry: "backward_bias",
    constants: { ACCUMULATE: options.accumulate ? 1 : 0 },
  });
  return [prepare(gpu, pipe, [dy, dbias], grid(tasks * cout), u)];
}
