/**
 * CPU reference of shaders/optim.wgsl, in float64: PyTorch's torch.optim.SGD, RMSprop and
 * Adam/AdamW step formulas (dampening 0, no amsgrad, not centred), after optional
 * torch.nn.utils.clip_grad_norm_.
 *
 * @module
 */
import type { OptimizerConfig } from "../../src/ops/optim.ts";

/** An optimiser over `n` parameters with its state, stepped in place on float64 parameters. */
export class ReferenceOptimizer {
  /** State by PyTorch's names, zero at the start. */
  readonly state: Record<string, Float64Array> = {};
  readonly #config: OptimizerConfig & { clip?: { maxNorm: number } };

  /** Zeroed state for `n` parameters. */
  constructor(n: number, config: OptimizerConfig & { clip?: { maxNorm: number } }) {
    this.#config = config;
    const names = config.kind === "adam"
      ? ["exp_avg", "exp_avg_sq"]
      : config.kind === "rmsprop"
      ? ["square_avg", ...((config.momentum ?? 0) > 0 ? ["momentum_buffer"] : [])]
      : (config.momentum ?? 0) > 0
      ? ["momentum_buffer"]
      : [];
    for (const name of names) this.state[name] = new Float64Array(n);
  }

  /**
   * One step at 1-based `step` with learning rate `lr`: updates `params` in place and returns
   * the gradient's L2 norm before clipping.
   */
  step(
    params: Float64Array,
    grads: ArrayLike<number>,
    options: { step: number; lr: number },
  ): number {
    const c = this.#config;
    const { step, lr } = options;
    const n = params.length;
    let sumSq = 0;
    for (let i = 0; i < n; i++) sumSq += grads[i]! * grads[i]!;
    const norm = Math.sqrt(sumSq);
    const scale = c.clip ? Math.min(1, c.clip.maxNorm / (norm + 1e-6)) : 1;
    const wd = c.weightDecay ?? 0;
    for (let i = 0; i < n; i++) {
      let g = grads[i]! * scale;
      let p = params[i]!;
      if (c.kind === "sgd") {
        const momentum = c.momentum ?? 0;
        g += wd * p;
        if (momentum > 0) {
          const buf = this.state.momentum_buffer!;
          buf[i] = momentum * buf[i]! + g;
          g = c.nesterov ? g + momentum * buf[i]! : buf[i]!;
        }
        p -= lr * g;
      } else if (c.kind === "rmsprop") {
        const alpha = c.alpha ?? 0.99;
        const momentum = c.momentum ?? 0;
        g += wd * p;
        const sq = this.state.square_avg!;
        sq[i] = alpha * sq[i]! + (1 - alpha) * g * g;
        const avg = Math.sqrt(sq[i]!) + (c.eps ?? 1e-8);
        if (momentum > 0) {
          const buf = this.state.momentum_buffer!;
          buf[i] = momentum * buf[i]! + g / avg;
          p -= lr * buf[i]!;
        } else {
          p -= lr * g / avg;
        }
      } else {
        const beta1 = c.beta1 ?? 0.9;
        const beta2 = c.beta2 ?? 0.999;
        if (c.decoupled) p *= 1 - lr * wd;
        else g += wd * p;
        const m = this.state.exp_avg!;
        const v = this.state.exp_avg_sq!;
        m[i] = beta1 * m[i]! + (1 - beta1) * g;
        v[i] = beta2 * v[i]! + (1 - beta2) * g * g;
        const stepSize = lr / (1 - beta1 ** step);
        const bc2Sqrt = Math.sqrt(1 - beta2 ** step);
        p -= stepSize * m[i]! / (Math.sqrt(v[i]!) / bc2Sqrt + (c.eps ?? 1e-8));
      }
      params[i] = p;
    }
    return norm;
  }
}
