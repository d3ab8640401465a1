/**
 * Meta-training for adaptability (first-order, in the manner of CAVIA and first-order MAML): on a
 * meta step, each of the step's T tasks forgets its own z and starts from the z of another task
 * of the step (slot t takes slot t+1's, the kind of start `--init best` and `population` give a
 * new task), adapts it for k inner steps on a support batch with the generator frozen, and the
 * generator is then updated on a query batch of the same tasks through the adapted z.
 *
 * First-order: the generator's gradient is taken at the adapted z and not through the inner
 * updates. The second-order term would need a backward of the backward (Hessian-vector products
 * through every kernel), which this engine does not record; CAVIA and Nichol et al. (2018) report
 * first-order updates close to second-order ones for context-vector adaptation.
 *
 * Every slot's inner steps run in the same batched dispatches. The trained z table is untouched
 * by meta steps; ordinary steps keep training it.
 *
 * @module
 */
import { BatchAssembler, type Choice, type ImageStore, Sampler } from "./data/sampler.ts";
import type { Dataset } from "./data/split.ts";
import type { TaskFamily } from "./data/tasks.ts";
import type { Gpu } from "./gpu/device.ts";
import { type Dispatch, run } from "./gpu/kernel.ts";
import { Arena, type Tensor, tensorFrom, write } from "./gpu/tensor.ts";
import { type BatchSource, StepProgram } from "./engine.ts";
import type { SuperNet } from "./model/supernet.ts";
import { fill } from "./ops/fill.ts";
import { gatherRows } from "./ops/gather.ts";
import { optimizerConfig, ParamGroup } from "./optim.ts";

/** Settings of meta-training. */
export interface MetaOptions {
  /** Inner steps per meta step (k). */
  innerSteps: number;
  /** Learning rate of the inner Adam steps on z (fresh state every meta step). */
  innerLr: number;
}

/** A batch source over a fixed assembler whose batch is written elsewhere. */
function fixedSource(assembler: BatchAssembler, slots: Tensor): BatchSource {
  return {
    x: assembler.x,
    y: assembler.y,
    taskIndices: slots,
    next: () => assembler.dispatches,
  };
}

/** The meta step of a training run, prepared once and replayed. */
export class MetaStep {
  readonly #gpu: Gpu;
  readonly #sampler: Sampler;
  readonly #support: BatchAssembler;
  readonly #query: BatchAssembler;
  readonly #slots: Tensor;
  readonly #starts: Tensor;
  readonly #inner: Arena;
  readonly #innerGroup: ParamGroup;
  readonly #reset: Dispatch[];
  readonly #innerProgram: StepProgram;
  /** The outer step: its metrics are the query loss. */
  readonly outer: StepProgram;
  readonly #innerSteps: number;
  readonly #batch: number;
  readonly #halves: [Choice, Choice];
  readonly #startRows: Uint32Array;

  /**
   * Prepares inner and outer programs for T tasks x B images per step; `params` is the
   * generator's group (shared with ordinary steps, so Adam's state carries over).
   */
  constructor(
    gpu: Gpu,
    options: {
      net: SuperNet;
      dataset: Dataset;
      family: TaskFamily;
      store: ImageStore;
      tasksPerStep: number;
      batch: number;
      seed: number;
      /** The run's reserve: images never drawn (see `isReserved`). */
      reserve?: number;
      params: ParamGroup;
      meta: MetaOptions;
    },
  ) {
    const { net, dataset, tasksPerStep: T, batch: B } = options;
    if (B % 2 !== 0) throw new RangeError(`Meta-training needs an even batch, got ${B}`);
    this.#gpu = gpu;
    this.#batch = B;
    this.#innerSteps = options.meta.innerSteps;
    // Support and query come from one draw of 2B images per task (balanced: even positions
    // negative, odd positive, so each half is balanced too), from a stream of its own.
    this.#sampler = new Sampler(gpu, dataset, {
      family: options.family,
      tasksPerStep: T,
      batch: 2 * B,
      seed: options.seed ^ 0x3e7a,
      balanced: true,
      store: options.store,
      reserve: options.reserve,
    });
    const make = () =>
      new BatchAssembler(gpu, options.store, {
        tasks: T,
        batch: B,
        mean: dataset.mean,
        std: dataset.std,
      });
    this.#support = make();
    this.#query = make();
    this.#slots = tensorFrom(gpu, [T], Uint32Array.from({ length: T }, (_, t) => t));
    this.#starts = tensorFrom(gpu, [T], new Uint32Array(T));
    this.#startRows = new Uint32Array(T);
    const half = (): Choice => ({
      tasks: this.#sampler.chosen.tasks,
      images: new Uint32Array(T * B),
      labels: new Float32Array(T * B),
    });
    this.#halves = [half(), half()];
    this.#inner = new Arena(gpu);
    this.#inner.add("z", [T, net.config.generator.zDim]);
    this.#inner.allocate();
    const lr = options.meta.innerLr;
    this.#innerGroup = new ParamGroup(gpu, this.#inner, {
      optimizer: optimizerConfig("adam", lr),
      schedule: { lr, kind: "constant", warmup: 0, steps: this.#innerSteps },
    });
    this.#reset = [
      ...gatherRows(gpu, net.z.get("z"), this.#starts, this.#inner.get("z")),
      ...this.#innerGroup.optimizer.state.flatMap((s) => fill(gpu, s.tensor, 0)),
    ];
    const table = this.#inner;
    this.#innerProgram = new StepProgram(gpu, {
      source: fixedSource(this.#support, this.#slots),
      forward: (tape, inputs) =>
        net.forward(tape, { ...inputs, table, grads: { z: this.#innerGroup.grads } }),
      groups: [this.#innerGroup],
      gradScale: T,
    });
    this.outer = new StepProgram(gpu, {
      source: fixedSource(this.#query, this.#slots),
      forward: (tape, inputs) =>
        net.forward(tape, { ...inputs, table, grads: { params: options.params.grads } }),
      groups: [options.params],
    });
  }

  /** Submits meta step `step`: reset the slots' z, k inner steps, one generator update. */
  run(step: number): void {
    const sampler = this.#sampler;
    sampler.choose(step);
    const { tasks, images, labels } = sampler.chosen;
    const T = tasks.length;
    const B = this.#batch;
    // Each half is copied into choices allocated once, so a step allocates nothing.
    const [support, query] = this.#halves;
    for (const [half, from] of [[support, 0], [query, B]] as const) {
      for (let t = 0; t < T; t++) {
        const at = t * 2 * B + from;
        half.images.set(images.subarray(at, at + B), t * B);
        half.labels.set(labels.subarray(at, at + B), t * B);
      }
    }
    this.#support.write(support, step);
    this.#query.write(query, step);
    // Slot t starts from the trained z of the next slot's task: a neighbour's z, as a new task
    // starts from some trained task's z.
    for (let t = 0; t < T; t++) this.#startRows[t] = tasks[(t + 1) % T]!;
    write(this.#gpu, this.#starts, this.#startRows);
    run(this.#gpu, this.#reset);
    for (let k = 1; k <= this.#innerSteps; k++) this.#innerProgram.run(k);
    this.outer.run(step);
  }

  /** Frees what the meta step owns (not the generator's group). */
  destroy(): void {
    this.#innerProgram.destroy();
    this.outer.destroy();
    this.#innerGroup.destroy();
    this.#inner.destroy();
    this.#support.destroy();
    this.#query.destroy();
    this.#slots.destroy();
    this.#starts.destroy();
    this.#sampler.destroy();
  }
}
