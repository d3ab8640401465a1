/**
 * Elementwise ops (shaders/elementwise.wgsl): activations and their backward,
 * `alpha * a + beta * b`, and the per-task bias add. Flat ops run one vec4 dispatch over the first
 * `4 * floor(n / 4)` elements and, when `n % 4 != 0`, one scalar dispatch over the tail; both
 * share one uniform.
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, grid, pipeline, prepare, Uniform } from "../gpu/kernel.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { type Activation, activationCode } from "./activation.ts";

/** Options of `activation` and `activationBackward`. */
export interface ActivationOptions {
  /** Which activation. */
  activation: Activation;
  /** Slope of `leaky_relu` for x <= 0; >= 0 so the sign of y tells the branch. Default 0.01. */
  slope?: number;
  /**
   * Output scale s > 0: y = s * act(x). The generator's bounded output is
   * `{ activation: "tanh", scale }`, i.e. y = s * tanh(x), whose backward is
   * dy * s * (1 - (y / s)^2). Default 1.
   */
  scale?: number;
}

/** Invocations per workgroup of the vec4 entry points (each handles 4 floats). */
const VEC4_GROUP = 64;
/** Invocations per workgroup of the scalar entry points. */
const SCALAR_GROUP = 256;

/**
 * Prepares y = scale * act(x) elementwise. x and y have the same number of elements and live in
 * different buffers.
 */
export function activation(
  gpu: Gpu,
  x: Tensor,
  y: Tensor,
  options: ActivationOptions,
): Dispatch[] {
  const { code, slope, scale } = activationParams(options);
  expectF32({ x, y });
  expectSameSize("activation", { x, y });
  expectDistinct("activation", [x], y);
  return flat(gpu, "activation", [x], y, {
    constants: { ACTIVATION: code },
    alpha: 1,
    beta: 0,
    slope,
    scale,
  });
}

/**
 * Prepares dx (+)= dy * act'(x) computed from the forward output y (for all five activations:
 * relu and leaky relu use y > 0, tanh 1 - u^2 and sigmoid u (1 - u) with u = y / scale, times
 * scale). With `accumulate` the gradient is added to dx, otherwise it overwrites dx.
 */
export function activationBackward(
  gpu: Gpu,
  y: Tensor,
  dy: Tensor,
  dx: Tensor,
  options: ActivationOptions & { accumulate?: boolean },
): Dispatch[] {
  const { code, slope, scale } = activationParams(options);
  expectF32({ y, dy, dx });
  expectSameSize("activationBackward", { y, dy, dx });
  expectDistinct("activationBackward", [y, dy], dx);
  return flat(gpu, "activation_backward", [y, dy], dx, {
    constants: { ACTIVATION: code, ACCUMULATE: options.accumulate ? 1 : 0 },
    alpha: 1,
    beta: 0,
    slope,
    scale,
  });
}

/**
 * Prepares out = alpha * a + beta * b, or out = alpha * a when `b` is absent; with `accumulate`
 * the value is added to out. alpha defaults to 1, beta to 1.
 */
export function axpby(
  gpu: Gpu,
  a: Tensor,
  out: Tensor,
  options: { b?: Tensor; alpha?: number; beta?: number; accumulate?: boolean } = {},
): Dispatch[] {
  const { b, alpha = 1, beta = 1, accumulate = false } = options;
  expectFinite({ alpha, beta });
  const inputs = b ? [a, b] : [a];
  expectF32(b ? { a, b, out } : { a, out });
  expectSameSize("axpby", b ? { a, b, out } : { a, out });
  expectDistinct("axpby", inputs, out);
  return flat(gpu, b ? "axpby" : "scale", inputs, out, {
    constants: { ACCUMULATE: accumulate ? 1 : 0 },
    alpha,
    beta,
    slope: 0,
    scale: 1,
  });
}

/**
 * Prepares y[t, r, n] = x[t, r, n] + bias[t, n] for x, y: [T, R, N] and bias: [T, N] (x may have
 * more dimensions, [T, ..., N], which count as rows). y must not share x's buffer.
 */
export function biasAdd(gpu: Gpu, x: Tensor, bias: Tensor, y: Tensor): Dispatch[] {
  expectF32({ x, bias, y });
  if (x.shape.length < 2 || bias.shape.length !== 2) {
    throw new RangeError(
      `biasAdd expects x [T, R, N] and bias [T, N], ` +
        `got x ${dims(x.shape)} and bias ${dims(bias.shape)}`,
    );
  }
  const t = x.shape[0]!;
  const n = x.shape[x.shape.length - 1]!;
  if (bias.shape[0] !== t || bias.shape[1] !== n) {
    throw new RangeError(
      `biasAdd expects bias [${t}, ${n}] for x ${dims(x.shape)}, got bias ${dims(bias.shape)}`,
    );
  }
  expectSameSize("biasAdd", { x, y });
  expectDistinct("biasAdd", [x, bias], y);
  if (x.size === 0) return [];
  const perTask = x.size / t;
  const vec4 = n % 4 === 0;
  const width = vec4 ? 4 : 1;
  const uniform = new Uniform(
    gpu,
    params({
      n: x.size,
      start: 0,
      n4: vec4 ? x.size / 4 : 0,
      perTask: perTask / width,
      perRow: n / width,
      alpha: 1,
      beta: 0,
      slope: 0,
      scale: 1,
    }),
  );
  const entry = vec4 ? "bias_add_vec4" : "bias_add_scalar";
  const bindings = vec4 ? [x, bias, y].map((u) => vec4View(u, u.size / 4)) : [x, bias, y];
  const groups = grid(Math.ceil(x.size / width / (vec4 ? VEC4_GROUP : SCALAR_GROUP)));
  return [prepare(gpu, pipeline(gpu, "elementwise", { entry }), bindings, groups, uniform)];
}

interface FlatParams {
  constants: Record<string, number>;
  alpha: number;
  beta: number;
  slope: number;
  scale: number;
}

/**
 * The vec4 dispatch over the first 4 * floor(n / 4) elements and, if n % 4 != 0, the scalar one
 * over the rest, of entry points `<name>_vec4` and `<name>_scalar`.
 */
function flat(
  gpu: Gpu,
  name: string,
  inputs: Tensor[],
  out: Tensor,
  options: FlatParams,
): Dispatch[] {
  const n = out.size;
  if (n === 0) return [];
  const n4 = Math.floor(n / 4);
  const start = n4 * 4;
  const uniform = new Uniform(
    gpu,
    params({ n, start, n4, perTask: 0, perRow: 0, ...options }),
  );
  const tensors = [...inputs, out];
  const dispatches: Dispatch[] = [];
  if (n4 > 0) {
    const pipe = pipeline(gpu, "elementwise", {
      entry: `${name}_vec4`,
      constants: options.constants,
    });
    const bindings = tensors.map((t) => vec4View(t, n4));
    dispatches.push(prepare(gpu, pipe, bindings, grid(Math.ceil(n4 / VEC4_GROUP)), uniform));
  }
  if (start < n) {
    const pipe = pipeline(gpu, "elementwise", {
      entry: `${name}_scalar`,
      constants: options.constants,
    });
    dispatches.push(
      prepare(gpu, pipe, tensors, grid(Math.ceil((n - start) / SCALAR_GROUP)), uniform),
    );
  }
  return dispatches;
}

/** The first 4 * n4 elements of a tensor, bound as array<vec4f>. */
function vec4View(t: Tensor, n4: number): GPUBufferBinding {
  return { buffer: t.buffer, offset: t.byteOffset, size: n4 * 16 };
}

/** The uniform fields of shaders/elementwise.wgsl's Params, in declaration order. */
function params(p: {
  n: number;
  start: number;
  n4: number;
  perTask: number;
  perRow: number;
  alpha: number;
  beta: number;
  slope: number;
  scale: number;
}): ["u32" | "f32", number][] {
  return [
    ["u32", p.n],
    ["u32", p.start],
    ["u32", p.n4],
    ["u32", p.perTask],
    ["u32", p.perRow],
    ["f32", p.alpha],
    ["f32", p.beta],
    ["f32", p.slope],
    ["f32", p.scale],
  ];
}

function activationParams(options: ActivationOptions): {
  code: number;
  slope: number;
  scale: number;
} {
  const code = activationCode(options.activation);
  const { slope = 0.01, scale = 1 } = options;
  if (!(Number.isFinite(slope) && slope >= 0)) {
    throw new RangeError(`Leaky relu slope must be a finite number >= 0, got ${slope}`);
  }
  if (!(Number.isFinite(scale) && scale > 0)) {
    throw new RangeError(`Activation scale must be a finite number > 0, got ${scale}`);
  }
  return { code, slope, scale };
}

function expectFinite(values: Record<string, number>): void {
  for (const [name, v] of Object.entries(values)) {
    if (!Number.isFinite(v)) throw new RangeError(`${name} must be a finite number, got ${v}`);
  }
}

function expectF32(tensors: Record<string, Tensor>): void {
  for (const [name, t] of Object.entries(tensors)) {
    if (t.dtype !== "f32") throw new RangeError(`Expected ${name} to be f32, got ${t.dtype}`);
  }
}

function expectSameSize(op: string, tensors: Record<string, Tensor>): void {
  const entries = Object.entries(tensors);
  const [firstName, first] = entries[0]!;
  for (const [name, t] of entries.slice(1)) {
    if (t.size !== first.size) {
      throw new RangeError(
        `${op} expects ${name} to have ${first.size} elements like ${firstName} ` +
          `${dims(first.shape)}, got ${dims(t.shape)} (${t.size} elements)`,
      );
    }
  }
}

function expectDistinct(op: string, inputs: Tensor[], out: Tensor): void {
  if (inputs.some((t) => t.buffer === out.buffer)) {
    throw new RangeError(
      `${op} cannot write its output into the buffer of one of its inputs: ` +
        `WebGPU forbids binding a buffer as read-only and read-write storage in one dispatch`,
    );
  }
}

/** A shape as it reads in messages: [2, 3, 4]. */
function dims(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}
