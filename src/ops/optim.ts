/**
 * Optimisers as kernels (shaders/optim.wgsl): SGD (momentum, Nesterov), RMSprop and Adam/AdamW
 * with PyTorch's update formulas, over one flat parameter tensor and its flat gradient, with
 * optional global gradient-norm clipping computed on the GPU in the same step.
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, grid, pipeline, prepare, Uniform } from "../gpu/kernel.ts";
import { createTensor, Tensor } from "../gpu/tensor.ts";

/**
 * An optimiser and its hyperparameters. Defaults follow PyTorch: momentum 0, weightDecay 0
 * (also for AdamW, where PyTorch's default is 1e-2), RMSprop alpha 0.99, Adam betas 0.9 and
 * 0.999, eps 1e-8. `decoupled` turns Adam into AdamW (p *= 1 - lr * weightDecay instead of
 * adding weightDecay * p to the gradient).
 */
export type OptimizerConfig =
  | { kind: "sgd"; lr: number; momentum?: number; nesterov?: boolean; weightDecay?: number }
  | {
    kind: "rmsprop";
    lr: number;
    alpha?: number;
    eps?: number;
    momentum?: number;
    weightDecay?: number;
  }
  | {
    kind: "adam";
    lr: number;
    beta1?: number;
    beta2?: number;
    eps?: number;
    weightDecay?: number;
    decoupled?: boolean;
  };

/** An optimiser prepared over one flat parameter tensor; it owns its state. */
export interface Optimizer {
  /** Dispatches of one update (clip-norm computation if enabled, then the update); replayed each step. */
  readonly dispatches: Dispatch[];
  /**
   * Set before each step's submit: the 1-based step count (Adam bias correction) and the
   * learning rate (schedules). Writes the uniform; no allocation.
   */
  setStep(step: number, lr: number): void;
  /** The state tensors (moments etc.) in a fixed order, for checkpoints; PyTorch's names. */
  readonly state: { name: string; tensor: Tensor }[];
  /** The global gradient norm tensor [1] (before clipping) when clipping is enabled, for logging. */
  readonly gradNorm?: Tensor;
  /** Frees the state and the uniform. */
  destroy(): void;
}

/** Gradient vec4s summed by one workgroup of the norm's first stage (256 invocations x 16). */
const NORM_CHUNK = 256 * 16;

/**
 * Creates the state (zeroed) and prepares the dispatches. With `clip.maxNorm` the gradient is
 * scaled by min(1, maxNorm / (norm + 1e-6)) inside the update kernel, the norm being computed in
 * the same step by a deterministic two-stage reduction of squares over the whole flat gradient.
 * `params` and `grads` are f32 tensors of the same size in different buffers, each starting at
 * a 16-byte aligned offset of a buffer that extends to a whole vec4 past its end (true of
 * `createTensor` tensors and of `Arena.flat`); elements past the end are never changed.
 */
export function createOptimizer(
  gpu: Gpu,
  params: Tensor,
  grads: Tensor,
  config: OptimizerConfig & { clip?: { maxNorm: number } },
): Optimizer {
  checkTensors(gpu, params, grads);
  const h = hyperparameters(config);
  const n = params.size;
  const n4 = Math.ceil(n / 4);
  // Slots start 256-byte aligned (as bindings must) so checkpoint code can bind the views too.
  const align = Math.max(64, gpu.limits.minStorageBufferOffsetAlignment / 4);
  const stride = Math.ceil((n4 * 4) / align) * align;
  const names = slotNames(config);
  const stateBuffer = createTensor(gpu, [align + names.length * stride]);
  const state = names.map((name, slot) => ({
    name,
    tensor: new Tensor(stateBuffer.buffer, [n], { byteOffset: (align + slot * stride) * 4 }),
  }));
  const gradNorm = new Tensor(stateBuffer.buffer, [1]);
  const partials = Math.ceil(n4 / NORM_CHUNK);
  // The fields of struct Params (shaders/optim.wgsl) in order: five u32 sizes, then twelve f32
  // values from lr to max_norm that setStep writes.
  const sizes = [n, n4, align / 4, stride / 4, partials];
  const uniform = new Uniform(gpu, [
    ...sizes.map((v): ["u32", number] => ["u32", v]),
    ...new Array(12).fill(0).map((): ["f32", number] => ["f32", 0]),
  ]);
  const values = [...sizes, ...new Array<number>(12).fill(0)];

  const clip = config.clip !== undefined;
  const dispatches: Dispatch[] = [];
  let partialSums: Tensor | undefined;
  if (clip) {
    partialSums = createTensor(gpu, [partials]);
    dispatches.push(
      prepare(
        gpu,
        pipeline(gpu, "optim", { entry: "norm_partial" }),
        [vec4Binding(grads, n4), partialSums],
        grid(partials),
        uniform,
      ),
      prepare(
        gpu,
        pipeline(gpu, "optim", { entry: "norm_final" }),
        [partialSums, gradNorm],
        [1, 1, 1],
        uniform,
      ),
    );
  }
  const constants = {
    KIND: { sgd: 0, rmsprop: 1, adam: 2 }[config.kind],
    MOMENTUM: h.momentum > 0 ? 1 : 0,
    NESTEROV: config.kind === "sgd" && config.nesterov ? 1 : 0,
    DECOUPLED: config.kind === "adam" && config.decoupled ? 1 : 0,
    CLIP: clip ? 1 : 0,
  };
  dispatches.push(prepare(
    gpu,
    pipeline(gpu, "optim", { entry: "update", constants }),
    [
      vec4Binding(params, n4),
      vec4Binding(grads, n4),
      { buffer: stateBuffer.buffer, offset: 0, size: stateBuffer.byteLength },
    ],
    grid(Math.ceil(n4 / 256)),
    uniform,
  ));

  function setStep(step: number, lr: number): void {
    if (!Number.isInteger(step) || step < 1) {
      throw new RangeError(`Optimizer step must be an integer >= 1, got ${step}`);
    }
    if (!(lr >= 0) || !Number.isFinite(lr)) {
      throw new RangeError(`Learning rate must be finite and >= 0, got ${lr}`);
    }
    // Adam's bias corrections, in float64 as PyTorch computes them in Python floats.
    const bc1 = 1 - h.beta1 ** step;
    const bc2Sqrt = Math.sqrt(1 - h.beta2 ** step);
    values[5] = lr;
    values[6] = h.weightDecay;
    values[7] = h.momentum;
    values[8] = h.beta1;
    values[9] = h.beta2;
    values[10] = 1 - h.beta1;
    values[11] = 1 - h.beta2;
    values[12] = 1 - lr * h.weightDecay;
    values[13] = h.eps;
    values[14] = config.kind === "adam" ? lr / bc1 : lr;
    values[15] = config.kind === "adam" ? bc2Sqrt : 1;
    values[16] = h.maxNorm;
    uniform.set(values);
  }
  setStep(1, config.lr);

  return {
    dispatches,
    setStep,
    state,
    gradNorm: clip ? gradNorm : undefined,
    destroy() {
      stateBuffer.destroy();
      partialSums?.destroy();
      uniform.destroy();
    },
  };
}

/** The hyperparameters of any kind, defaults filled in and validated. */
function hyperparameters(config: OptimizerConfig & { clip?: { maxNorm: number } }) {
  const h = {
    weightDecay: config.weightDecay ?? 0,
    momentum: config.kind === "adam" ? 0 : config.momentum ?? 0,
    beta1: config.kind === "adam"
      ? config.beta1 ?? 0.9
      : config.kind === "rmsprop"
      ? config.alpha ?? 0.99
      : 0,
    beta2: config.kind === "adam" ? config.beta2 ?? 0.999 : 0,
    eps: config.kind === "sgd" ? 0 : config.eps ?? 1e-8,
    maxNorm: config.clip?.maxNorm ?? 0,
  };
  const check = (ok: boolean, what: string, value: unknown) => {
    if (!ok) throw new RangeError(`Invalid ${config.kind} ${what}: ${value}`);
  };
  check(
    ["sgd", "rmsprop", "adam"].includes(config.kind),
    "kind, expected sgd, rmsprop or adam",
    "",
  );
  check(config.lr >= 0 && Number.isFinite(config.lr), "learning rate, expected >= 0", config.lr);
  check(h.weightDecay >= 0, "weight decay, expected >= 0", h.weightDecay);
  check(h.momentum >= 0, "momentum, expected >= 0", h.momentum);
  check(h.eps >= 0, "eps, expected >= 0", h.eps);
  check(h.beta1 >= 0 && h.beta1 < 1, "beta1 or alpha, expected in [0, 1)", h.beta1);
  check(h.beta2 >= 0 && h.beta2 < 1, "beta2, expected in [0, 1)", h.beta2);
  if (config.kind === "sgd" && config.nesterov) {
    check(h.momentum > 0, "nesterov setting, which needs momentum > 0; momentum", h.momentum);
  }
  if (config.clip) {
    check(config.clip.maxNorm > 0, "clip.maxNorm, expected > 0", config.clip.maxNorm);
  }
  return h;
}

function slotNames(config: OptimizerConfig): string[] {
  if (config.kind === "adam") return ["exp_avg", "exp_avg_sq"];
  const momentum = (config.momentum ?? 0) > 0 ? ["momentum_buffer"] : [];
  return config.kind === "rmsprop" ? ["square_avg", ...momentum] : momentum;
}

function checkTensors(gpu: Gpu, params: Tensor, grads: Tensor): void {
  if (params.dtype !== "f32" || grads.dtype !== "f32" || params.size !== grads.size) {
    throw new RangeError(
      `createOptimizer expects f32 params and grads of the same size, got ` +
        `${params.dtype} [${params.shape}] and ${grads.dtype} [${grads.shape}]`,
    );
  }
  if (params.size === 0) throw new RangeError("createOptimizer expects at least one parameter");
  if (params.buffer === grads.buffer) {
    throw new RangeError("createOptimizer expects params and grads in different buffers");
  }
  const bytes = Math.ceil(params.size / 4) * 16;
  if (bytes > gpu.limits.maxStorageBufferBindingSize) {
    throw new RangeError(
      `createOptimizer supports up to ${gpu.limits.maxStorageBufferBindingSize / 4} parameters ` +
        `per tensor on this device, got ${params.size}; split the parameters into groups`,
    );
  }
  for (const [name, t] of [["params", params], ["grads", grads]] as const) {
    if (t.byteOffset % 16 !== 0 || t.byteOffset + bytes > t.buffer.size) {
      throw new RangeError(
        `createOptimizer expects ${name} at a 16-byte aligned offset with its buffer extending ` +
          `to a whole vec4 (${bytes} bytes) past it, got offset ${t.byteOffset} in a buffer of ` +
          `${t.buffer.size} bytes; allocate it with createTensor or an Arena`,
      );
    }
  }
}

/** The binding of a tensor's ceil(n / 4) vec4s. */
function vec4Binding(t: Tensor, n4: number): GPUBufferBinding {
  return { buffer: t.buffer, offset: t.byteOffset, size: n4 * 16 };
}
