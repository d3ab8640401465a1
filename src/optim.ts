/**
 * Learning-rate schedules and parameter groups: an arena of parameters, its gradient twin and the
 * optimiser kernels that update it.
 *
 * @module
 */
import type { Gpu } from "./gpu/device.ts";
import type { Arena } from "./gpu/tensor.ts";
import { createOptimizer, type Optimizer, type OptimizerConfig } from "./ops/optim.ts";

/** Names accepted by `--optimizer`. */
export const OPTIMIZERS = ["adam", "rmsprop", "sgd"] as const;
/** Names accepted by `--schedule`. */
export const SCHEDULES = ["constant", "cosine"] as const;

/** A learning-rate schedule over a run of `steps` steps. */
export interface Schedule {
  /** Peak learning rate. */
  lr: number;
  /** constant, or cosine decay to zero after a linear warm-up. */
  kind: typeof SCHEDULES[number];
  /** Linear warm-up steps from lr / warmup to lr (both kinds). */
  warmup: number;
  /** Total steps of the run. */
  steps: number;
}

/** The learning rate of 1-based `step`. */
export function learningRate(step: number, s: Schedule): number {
  if (s.warmup > 0 && step <= s.warmup) return (s.lr * step) / s.warmup;
  if (s.kind === "constant") return s.lr;
  const span = Math.max(1, s.steps - s.warmup);
  const progress = Math.min(1, (step - s.warmup) / span);
  return 0.5 * s.lr * (1 + Math.cos(Math.PI * progress));
}

/** The optimiser config for a kind name, learning rate and weight decay; PyTorch's defaults otherwise. */
export function optimizerConfig(
  kind: typeof OPTIMIZERS[number],
  lr: number,
  weightDecay?: number,
): OptimizerConfig {
  if (!weightDecay) return { kind, lr } as OptimizerConfig;
  // Adam's decay is decoupled (AdamW); SGD's and RMSprop's add weightDecay * p to the gradient.
  return (kind === "adam" ? { kind, lr, weightDecay, decoupled: true } : { kind, lr, weightDecay });
}

/** Parameters trained together: values, gradients and the update kernels. */
export class ParamGroup {
  /** Gradient arena, same layout as the parameters. */
  readonly grads: Arena;
  /** The update kernels. */
  readonly optimizer: Optimizer;

  /** Allocates gradients and optimiser state for `params`. */
  constructor(
    gpu: Gpu,
    readonly params: Arena,
    options: { optimizer: OptimizerConfig; clip?: number; schedule: Schedule },
  ) {
    this.grads = params.twin();
    this.optimizer = createOptimizer(gpu, params.flat, this.grads.flat, {
      ...options.optimizer,
      clip: options.clip ? { maxNorm: options.clip } : undefined,
    });
    this.schedule = options.schedule;
  }

  /** The schedule of this group's learning rate. */
  readonly schedule: Schedule;

  /** Sets the step count and this step's learning rate; call before submitting the step. */
  setStep(step: number): void {
    this.optimizer.setStep(step, learningRate(step, this.schedule));
  }

  /** Frees gradients and optimiser state (not the parameters). */
  destroy(): void {
    this.grads.destroy();
    this.optimizer.destroy();
  }
}
