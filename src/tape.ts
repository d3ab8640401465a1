/**
 * The tape: records the ops of a forward pass as prepared dispatches and builds their backward in
 * reverse order. Built once for fixed shapes; a training step then replays `forward` and
 * `backward` without allocating anything.
 *
 * Gradients are written by the first op that produces them and accumulated by later ones, so no
 * gradient buffer needs clearing; parameter gradients that no op reached are zero-filled.
 *
 * @module
 */
import type { Gpu } from "./gpu/device.ts";
import { type Dispatch, uniformsOf } from "./gpu/kernel.ts";
import { createTensor, type Tensor, write } from "./gpu/tensor.ts";
import {
  conv2d,
  conv2dBackwardBias,
  conv2dBackwardInput,
  conv2dBackwardWeight,
  conv2dOutputSize,
} from "./ops/conv2d.ts";
import type { Activation } from "./ops/activation.ts";
import { squaredDistance, squaredDistanceBackward } from "./ops/distance.ts";
import { activation, activationBackward, axpby } from "./ops/elementwise.ts";
import { fill } from "./ops/fill.ts";
import { gatherRows, scatterRowsAdd } from "./ops/gather.ts";
import { batchNorm, batchNormBackward } from "./ops/norm.ts";
import { maxPool2d, maxPool2dBackward, poolOutputSize } from "./ops/pool.ts";
import { matmul } from "./ops/matmul.ts";
import { reduceSum } from "./ops/reduce.ts";

/** Where a variable's gradient lives, shared by all reshaped views of it. */
interface GradSlot {
  readonly requiresGrad: boolean;
  grad?: Tensor;
  written: boolean;
  readonly isParam: boolean;
}

/** A tensor on the tape, with its (lazily allocated) gradient. */
export class Var {
  /** The value. */
  readonly tensor: Tensor;
  readonly #slot: GradSlot;

  /** Wraps a tensor; use the tape's `param`/`input` rather than this constructor. */
  constructor(tensor: Tensor, slot: GradSlot) {
    this.tensor = tensor;
    this.#slot = slot;
  }

  /** Shape of the value. */
  get shape(): readonly number[] {
    return this.tensor.shape;
  }

  /** Whether gradients flow into this variable. */
  get requiresGrad(): boolean {
    return this.#slot.requiresGrad;
  }

  /** The gradient tensor (allocated on first use), viewed in this variable's shape. */
  gradTensor(tape: Tape): Tensor {
    if (!this.#slot.grad) this.#slot.grad = tape.scratch(this.tensor.shape);
    return this.#slot.grad.reshape(this.tensor.shape);
  }

  /** Whether a gradient has already been written in the backward being built. */
  get gradWritten(): boolean {
    return this.#slot.written;
  }

  /** Returns the accumulate flag for the next write and marks the gradient as written. */
  claimGrad(): boolean {
    const accumulate = this.#slot.written;
    this.#slot.written = true;
    return accumulate;
  }

  /** A view of the same value and gradient with another shape. */
  reshape(shape: readonly number[]): Var {
    return new Var(this.tensor.reshape(shape), this.#slot);
  }

  /** @internal the slot, for the tape */
  get slot(): GradSlot {
    return this.#slot;
  }
}

/** Options of a fused linear op (matmul + bias + activation). */
export interface LinearOptions {
  /** a is stored transposed. */
  transA?: boolean;
  /** b is stored transposed. */
  transB?: boolean;
  /** Bias [T, N] added to every row. */
  bias?: Var;
  /** Activation applied after the bias. */
  activation?: Activation;
  /** Negative slope of leaky ReLU. */
  slope?: number;
  /** Multiplies the result after the activation (default 1). */
  scale?: number;
}

/** Options of a fused convolution (conv + bias + activation). */
export interface ConvOptions {
  /** Stride (default 1). */
  stride?: number;
  /** Zero padding on each side (default 0). */
  padding?: number;
  /** Activation applied after the bias. */
  activation?: Activation;
  /** Negative slope of leaky ReLU. */
  slope?: number;
}

/** Records forward dispatches and builds backward dispatches in reverse. */
export class Tape {
  /** Forward dispatches in execution order. */
  readonly forward: Dispatch[] = [];
  /** Backward dispatches in execution order (filled by `backward`). */
  readonly backward: Dispatch[] = [];
  readonly #pending: (() => void)[] = [];
  readonly #owned: Tensor[] = [];
  readonly #params: Var[] = [];

  /** An empty tape on `gpu`. */
  constructor(readonly gpu: Gpu) {}

  /** A tensor owned (and destroyed) by the tape. */
  scratch(shape: readonly number[]): Tensor {
    const t = createTensor(this.gpu, shape);
    this.#owned.push(t);
    return t;
  }

  /** A parameter: gradients are written into `grad` (e.g. a view in a gradient arena). */
  param(tensor: Tensor, grad: Tensor): Var {
    if (grad.size !== tensor.size) {
      throw new RangeError(
        `Gradient of [${grad.shape}] does not match parameter [${tensor.shape}]`,
      );
    }
    const v = new Var(tensor, { requiresGrad: true, grad, written: false, isParam: true });
    this.#params.push(v);
    return v;
  }

  /** A value no gradient flows into (data, labels, frozen weights). */
  input(tensor: Tensor): Var {
    return new Var(tensor, { requiresGrad: false, written: false, isParam: false });
  }

  #result(shape: readonly number[], ...from: (Var | undefined)[]): Var {
    const requiresGrad = from.some((v) => v?.requiresGrad);
    return new Var(this.scratch(shape), { requiresGrad, written: false, isParam: false });
  }

  /** Registers a backward step, run (in reverse order) when its output received a gradient. */
  #onBackward(out: Var, step: (dOut: Tensor) => void): void {
    if (!out.requiresGrad) return;
    this.#pending.push(() => {
      if (out.gradWritten) step(out.gradTensor(this));
    });
  }

  /**
   * Gradient w.r.t. the input of an activation from the gradient of its output; returns dOut
   * itself for the identity, else a scratch tensor.
   */
  #undoActivation(
    y: Var,
    dOut: Tensor,
    options: { activation: Activation; slope?: number; scale?: number },
  ): Tensor {
    if (options.activation === "identity" && (options.scale ?? 1) === 1) return dOut;
    const dPre = this.scratch(y.shape);
    this.backward.push(...activationBackward(this.gpu, y.tensor, dOut, dPre, options));
    return dPre;
  }

  /** out = act(op(a) @ op(b) + bias); a: [T, M, K], b: [T, K, N] (2-D means T = 1). */
  linear(a: Var, b: Var, options: LinearOptions = {}): Var {
    const { transA = false, transB = false, bias, activation: act = "identity", slope, scale } =
      options;
    const a3 = a.shape.length === 2 ? a.reshape([1, ...a.shape]) : a;
    const b3 = b.shape.length === 2 ? b.reshape([1, ...b.shape]) : b;
    const [T, ar, ac] = a3.shape as [number, number, number];
    const [, br, bc] = b3.shape as [number, number, number];
    const M = transA ? ac : ar;
    const N = transB ? br : bc;
    const out3 = this.#result([T, M, N], a, b, bias);
    this.forward.push(
      ...matmul(this.gpu, a3.tensor, b3.tensor, out3.tensor, {
        transA,
        transB,
        bias: bias?.tensor,
        activation: act,
        slope,
        scale,
      }),
    );
    this.#onBackward(out3, (dOut) => {
      const dPre = this.#undoActivation(out3, dOut, { activation: act, slope, scale });
      if (a3.requiresGrad) {
        // dA = dPre @ op(B)^T, stored in A's layout.
        const dA = a3.gradTensor(this);
        const accumulate = a3.claimGrad();
        this.backward.push(
          ...(transA
            ? matmul(this.gpu, b3.tensor, dPre, dA, { transA: transB, transB: true, accumulate })
            : matmul(this.gpu, dPre, b3.tensor, dA, { transB: !transB, accumulate })),
        );
      }
      if (b3.requiresGrad) {
        // dB = op(A)^T @ dPre, stored in B's layout.
        const dB = b3.gradTensor(this);
        const accumulate = b3.claimGrad();
        this.backward.push(
          ...(transB
            ? matmul(this.gpu, dPre, a3.tensor, dB, { transA: true, transB: transA, accumulate })
            : matmul(this.gpu, a3.tensor, dPre, dB, { transA: !transA, accumulate })),
        );
      }
      if (bias?.requiresGrad) {
        const dBias = bias.gradTensor(this);
        const accumulate = bias.claimGrad();
        this.backward.push(
          ...reduceSum(this.gpu, dPre.reshape([T, M, N]), dBias.reshape([T, N]), {
            axes: [1],
            accumulate,
          }),
        );
      }
    });
    return a.shape.length === 2 && b.shape.length === 2 ? out3.reshape([M, N]) : out3;
  }

  /** y = act(conv2d(x, w) + bias); x [T, B, C, H, W], w [T, O, C, k, k], bias [T, O]. */
  conv2d(x: Var, w: Var, bias: Var, options: ConvOptions = {}): Var {
    const { stride = 1, padding = 0, activation: act = "identity", slope } = options;
    const [T, B, , H, W] = x.shape as [number, number, number, number, number];
    const [, O, , k] = w.shape as [number, number, number, number];
    const Ho = conv2dOutputSize(H, { k, stride, padding });
    const Wo = conv2dOutputSize(W, { k, stride, padding });
    const y = this.#result([T, B, O, Ho, Wo], x, w, bias);
    this.forward.push(
      ...conv2d(this.gpu, x.tensor, w.tensor, bias.tensor, y.tensor, {
        stride,
        padding,
        activation: act,
        slope,
      }),
    );
    this.#onBackward(y, (dOut) => {
      const dPre = this.#undoActivation(y, dOut, { activation: act, slope });
      if (x.requiresGrad) {
        const accumulate = x.claimGrad();
        this.backward.push(
          ...conv2dBackwardInput(this.gpu, dPre, w.tensor, x.gradTensor(this), {
            stride,
            padding,
            accumulate,
          }),
        );
      }
      if (w.requiresGrad) {
        const accumulate = w.claimGrad();
        this.backward.push(
          ...conv2dBackwardWeight(this.gpu, x.tensor, dPre, w.gradTensor(this), {
            stride,
            padding,
            accumulate,
          }),
        );
      }
      if (bias.requiresGrad) {
        const accumulate = bias.claimGrad();
        this.backward.push(
          ...conv2dBackwardBias(this.gpu, dPre, bias.gradTensor(this), { accumulate }),
        );
      }
    });
    return y;
  }

  /** y = act(x) elementwise. */
  activation(x: Var, act: Activation, slope?: number): Var {
    const y = this.#result(x.shape, x);
    this.forward.push(...activation(this.gpu, x.tensor, y.tensor, { activation: act, slope }));
    this.#onBackward(y, (dOut) => {
      if (!x.requiresGrad) return;
      const accumulate = x.claimGrad();
      this.backward.push(
        ...activationBackward(this.gpu, y.tensor, dOut, x.gradTensor(this), {
          activation: act,
          slope,
          accumulate,
        }),
      );
    });
    return y;
  }

  /**
   * Batch norm with each task's own batch statistics: x [T, B, C, H, W], scale and shift [T, C];
   * y = (scale + scaleOffset) * xhat + shift. `scaleOffset` 1 stores the scale as an offset from
   * 1, so weights near 0 (generated or fresh) normalise near the identity.
   */
  batchNorm(x: Var, scale: Var, shift: Var, options: { scaleOffset?: number } = {}): Var {
    const [T, , C] = x.shape as [number, number, number];
    if (scale.shape.join() !== `${T},${C}` || shift.shape.join() !== `${T},${C}`) {
      throw new RangeError(
        `batchNorm expects scale and shift of shape [${T}, ${C}] for x [${x.shape}], got ` +
          `[${scale.shape}] and [${shift.shape}]`,
      );
    }
    const y = this.#result(x.shape, x, scale, shift);
    const mean = this.scratch([T, C]);
    const invstd = this.scratch([T, C]);
    let gamma = scale.tensor;
    if (options.scaleOffset) {
      gamma = this.scratch([T, C]);
      // The offset is a constant: written once here, not filled again on every replay.
      const offset = this.scratch([T, C]);
      write(this.gpu, offset, new Float32Array(T * C).fill(options.scaleOffset));
      this.forward.push(...axpby(this.gpu, scale.tensor, gamma, { b: offset }));
    }
    this.forward.push(
      ...batchNorm(this.gpu, x.tensor, y.tensor, { gamma, beta: shift.tensor, mean, invstd }),
    );
    this.#onBackward(y, (dOut) => {
      const wants = (v: Var) =>
        v.requiresGrad ? { grad: v.gradTensor(this), acc: v.claimGrad() } : undefined;
      const [dx, dGamma, dBeta] = [wants(x), wants(scale), wants(shift)];
      this.backward.push(
        ...batchNormBackward(this.gpu, dOut, {
          x: x.tensor,
          gamma,
          mean,
          invstd,
          dx: dx?.grad,
          dGamma: dGamma?.grad,
          dBeta: dBeta?.grad,
          accumulate: { dx: dx?.acc, dGamma: dGamma?.acc, dBeta: dBeta?.acc },
        }),
      );
    });
    return y;
  }

  /** 2x2 max-pool, stride 2: x [T, B, C, H, W] -> [T, B, C, floor(H/2), floor(W/2)]. */
  maxPool2d(x: Var): Var {
    const shape = poolOutputSize(x.shape);
    const y = this.#result(shape, x);
    const indices = createTensor(this.gpu, shape, "u32");
    this.#owned.push(indices);
    this.forward.push(...maxPool2d(this.gpu, x.tensor, y.tensor, indices));
    this.#onBackward(y, (dOut) => {
      if (!x.requiresGrad) return;
      const accumulate = x.claimGrad();
      this.backward.push(
        ...maxPool2dBackward(this.gpu, dOut, indices, x.gradTensor(this), { accumulate }),
      );
    });
    return y;
  }

  /**
   * out[t, q, k] = scale * sum_f (x[t, q, f] - c[t, k, f])^2 for x [T, Q, F] and c [T, K, F]:
   * [T, Q, K]. `scale` -1 gives ProtoNet's logits (minus the distance to each prototype).
   */
  squaredDistance(x: Var, c: Var, options: { scale?: number } = {}): Var {
    if (x.shape.length !== 3 || c.shape.length !== 3) {
      throw new RangeError(
        `squaredDistance expects x [T, Q, F] and c [T, K, F], got [${x.shape}] and [${c.shape}]`,
      );
    }
    const [T, Q] = x.shape as [number, number];
    const K = c.shape[1]!;
    const out = this.#result([T, Q, K], x, c);
    this.forward.push(...squaredDistance(this.gpu, x.tensor, c.tensor, out.tensor, options));
    this.#onBackward(out, (dOut) => {
      const wants = (v: Var) =>
        v.requiresGrad ? { grad: v.gradTensor(this), acc: v.claimGrad() } : undefined;
      const [dx, dc] = [wants(x), wants(c)];
      this.backward.push(
        ...squaredDistanceBackward(this.gpu, dOut, {
          x: x.tensor,
          c: c.tensor,
          dx: dx?.grad,
          dc: dc?.grad,
          scale: options.scale,
          accumulate: { dx: dx?.acc, dc: dc?.acc },
        }),
      );
    });
    return out;
  }

  /** out[t] = table[indices[t]]; table [N, D], indices u32 [T]. */
  gatherRows(table: Var, indices: Tensor): Var {
    const out = this.#result([indices.size, table.shape[1]!], table);
    this.forward.push(...gatherRows(this.gpu, table.tensor, indices, out.tensor));
    this.#onBackward(out, (dOut) => {
      if (!table.requiresGrad) return;
      const accumulate = table.claimGrad();
      this.backward.push(
        ...scatterRowsAdd(this.gpu, dOut, indices, table.gradTensor(this), { accumulate }),
      );
    });
    return out;
  }

  /**
   * Builds the backward pass from `root`, whose gradient `dRoot` the caller's dispatches have
   * already written (a loss kernel writes d loss / d logits). Parameters the backward did not
   * reach get a zero-fill so their gradient arena holds no stale values.
   */
  buildBackward(root: Var, dRoot: Tensor): void {
    if (this.backward.length > 0) throw new Error("Backward was already built on this tape");
    if (dRoot.size !== root.tensor.size) {
      throw new RangeError(`Root gradient [${dRoot.shape}] does not match root [${root.shape}]`);
    }
    root.slot.grad = dRoot;
    root.slot.written = true;
    for (let i = this.#pending.length - 1; i >= 0; i--) this.#pending[i]!();
    for (const p of this.#params) {
      if (!p.gradWritten) {
        this.backward.push(...fill(this.gpu, p.gradTensor(this), 0));
        p.claimGrad();
      }
    }
  }

  /** Frees every tensor and uniform block the tape allocated. */
  destroy(): void {
    for (const t of this.#owned) t.destroy();
    for (const d of [...this.forward, ...this.backward]) uniformsOf(d).forEach((u) => u.destroy());
    this.#owned.length = 0;
  }
}
