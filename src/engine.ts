/**
 * The step machinery shared by training and adaptation: a `StepProgram` is one training step
 * (assemble the batch, forward, loss, backward, optimiser updates) prepared once and replayed as a
 * single submit; an `Evaluator` runs full passes over fixed batches and sums exact counts.
 *
 * @module
 */
import type { Dataset } from "./data/split.ts";
import { FixedBatches, type FixedBatchesOptions, type ImageStore } from "./data/sampler.ts";
import type { TaskFamily } from "./data/tasks.ts";
import type { Gpu } from "./gpu/device.ts";
import { type Dispatch, run, uniformsOf } from "./gpu/kernel.ts";
import { createTensor, readMany, type Tensor } from "./gpu/tensor.ts";
import { accuracy, sigmoidCrossEntropy, softmaxCrossEntropy } from "./ops/loss.ts";
import type { ParamGroup } from "./optim.ts";
import { Tape, type Var } from "./tape.ts";

/** Builds a model's forward on a tape for inputs x [T, B, ...] and task indices [T]. */
export type ForwardBuilder = (
  tape: Tape,
  inputs: { x: Tensor; taskIndices: Tensor },
) => Var;

/**
 * Per-task outputs of the loss and accuracy kernels. Separate buffers: the loss kernel reads
 * per-task values while writing the mean, and WebGPU forbids reading and writing one buffer in a
 * dispatch; `read` still fetches them all with one wait.
 */
export class Metrics {
  readonly loss: Tensor;
  readonly perTaskLoss: Tensor;
  readonly perTaskAccuracy: Tensor;
  readonly correct: Tensor;
  readonly valid: Tensor;
  readonly #stats: Tensor;
  readonly #uniforms = new Set<{ destroy(): void }>();

  constructor(gpu: Gpu, tasks: number) {
    this.#stats = createTensor(gpu, [tasks + 1]);
    this.loss = createTensor(gpu, [1]);
    this.perTaskLoss = createTensor(gpu, [tasks]);
    this.perTaskAccuracy = createTensor(gpu, [tasks]);
    this.correct = createTensor(gpu, [tasks]);
    this.valid = createTensor(gpu, [tasks]);
  }

  /**
   * Prepares loss (with dLogits when given, times `gradScale`) and accuracy of logits against
   * y [T, B]: binary (sigmoid) for logits [T, B, 1] with labels 0/1, N-way (softmax) for
   * [T, B, N] with N >= 2 and labels 0..N-1.
   */
  prepare(gpu: Gpu, logits: Var, y: Tensor, dLogits?: Tensor, gradScale = 1): Dispatch[] {
    const ways = logits.shape[2] ?? 1;
    const flat = ways === 1 ? logits.tensor.reshape(y.shape) : logits.tensor;
    const loss = ways === 1 ? sigmoidCrossEntropy : softmaxCrossEntropy;
    const dispatches = [
      ...loss(gpu, flat, y, {
        perTask: this.perTaskLoss,
        loss: this.loss,
        dLogits: dLogits?.reshape(flat.shape),
        gradScale,
        stats: this.#stats,
      }),
      ...accuracy(gpu, flat, y, {
        perTask: this.perTaskAccuracy,
        correct: this.correct,
        valid: this.valid,
      }),
    ];
    for (const d of dispatches) for (const u of uniformsOf(d)) this.#uniforms.add(u);
    return dispatches;
  }

  /** Reads everything back: the mean loss and per-task loss, correct and valid counts. */
  async read(gpu: Gpu): Promise<MetricValues> {
    const [loss, perTaskLoss, correct, valid] = await readMany(gpu, [
      this.loss,
      this.perTaskLoss,
      this.correct,
      this.valid,
    ]);
    return { loss: loss![0]!, perTaskLoss: perTaskLoss!, correct: correct!, valid: valid! };
  }

  destroy(): void {
    const tensors = [this.loss, this.perTaskLoss, this.perTaskAccuracy, this.correct, this.valid];
    for (const t of [...tensors, this.#stats]) t.destroy();
    for (const u of this.#uniforms) u.destroy();
  }
}

/** Numbers read back from a step or an evaluation batch. */
export interface MetricValues {
  /** Mean over tasks of the per-task mean loss. */
  loss: number;
  /** Mean loss of each task slot over its valid samples. */
  perTaskLoss: Float32Array;
  /** Correctly classified samples per task slot. */
  correct: Float32Array;
  /** Valid (non-padding) samples per task slot. */
  valid: Float32Array;
}

/** Where a step's batch comes from: tensors it fills and the call that fills them. */
export interface BatchSource {
  /** Inputs [T, B, C, H, W]. */
  readonly x: Tensor;
  /** Labels [T, B]. */
  readonly y: Tensor;
  /** Task indices [T] (u32). */
  readonly taskIndices: Tensor;
  /** Writes step `step`'s choice and returns the dispatches that assemble it. */
  next(step: number): Dispatch[];
}

/** One training step, prepared once: batch, forward, loss, backward and updates. */
export class StepProgram {
  readonly #tape: Tape;
  readonly #metrics: Metrics;
  readonly #source: BatchSource;
  readonly #groups: ParamGroup[];
  readonly #body: Dispatch[];
  readonly #dLogits: Tensor;

  /**
   * Builds the tape of `forward` on `source`'s tensors with gradients into `groups`. The loss is
   * the mean over task slots of each slot's mean loss; `gradScale` multiplies its gradient (T
   * makes each slot's gradient the one it would get alone, as batched adaptation needs).
   * `regularize` builds dispatches that run after the backward and before the updates (e.g. a
   * prior's gradient added to a group's gradients).
   */
  constructor(
    readonly gpu: Gpu,
    options: {
      source: BatchSource;
      forward: ForwardBuilder;
      groups: ParamGroup[];
      gradScale?: number;
      regularize?: Dispatch[];
    },
  ) {
    this.#source = options.source;
    this.#groups = options.groups;
    this.#tape = new Tape(gpu);
    const logits = options.forward(this.#tape, {
      x: options.source.x,
      taskIndices: options.source.taskIndices,
    });
    this.#dLogits = this.#tape.scratch(logits.shape);
    this.#metrics = new Metrics(gpu, options.source.taskIndices.size);
    const loss = this.#metrics.prepare(
      gpu,
      logits,
      options.source.y,
      this.#dLogits,
      options.gradScale,
    );
    this.#tape.buildBackward(logits, this.#dLogits);
    this.phases = {
      forward: this.#tape.forward,
      loss,
      backward: [...this.#tape.backward, ...(options.regularize ?? [])],
      update: options.groups.flatMap((g) => g.optimizer.dispatches),
    };
    this.#body = [
      ...this.phases.forward,
      ...this.phases.loss,
      ...this.phases.backward,
      ...this.phases.update,
    ];
  }

  /** The step's dispatches by phase, in order (for timing breakdowns). */
  readonly phases: {
    forward: readonly Dispatch[];
    loss: readonly Dispatch[];
    backward: readonly Dispatch[];
    update: readonly Dispatch[];
  };

  /** Number of dispatches a step runs (batch assembly excluded). */
  get dispatchCount(): number {
    return this.#body.length;
  }

  /** Submits 1-based step `step` (nothing is read back). */
  run(step: number): void {
    for (const g of this.#groups) g.setStep(step);
    const batch = this.#source.next(step);
    // Sources return the same prepared dispatches every step; join them with the body once.
    if (batch !== this.#batch) {
      this.#batch = batch;
      this.#all = [...batch, ...this.#body];
    }
    run(this.gpu, this.#all);
  }

  #batch: Dispatch[] | undefined;
  #all: Dispatch[] = [];

  /** Reads the loss and counts of the last submitted step (waits for it). */
  readMetrics(): Promise<MetricValues> {
    return this.#metrics.read(this.gpu);
  }

  /** Frees the tape and metric buffers (not the source or groups). */
  destroy(): void {
    this.#tape.destroy();
    this.#metrics.destroy();
  }
}

/** Accuracy and loss of each evaluated task. */
export interface TaskScore {
  /** Index into the family's tasks. */
  task: number;
  /** Fraction of test images classified correctly. */
  accuracy: number;
  /** Mean loss over the test images. */
  loss: number;
  /** Test images evaluated. */
  count: number;
}

/**
 * Full passes over every test image of some tasks (or given example lists), in chunks of T task
 * slots; the forward has no backward and leaves parameters untouched.
 */
export class Evaluator {
  readonly #chunks: { batches: FixedBatches; tape: Tape; metrics: Metrics; body: Dispatch[] }[] =
    [];

  /** Prepares one tape per chunk of `tasksPerChunk` tasks over batches of `batch` images. */
  constructor(
    readonly gpu: Gpu,
    options: {
      dataset: Dataset;
      family: TaskFamily;
      tasks: readonly number[];
      forward: ForwardBuilder;
      batch: number;
      tasksPerChunk: number;
      store?: ImageStore;
      split?: "train" | "test";
      examples?: FixedBatchesOptions["examples"];
    },
  ) {
    const { tasks, tasksPerChunk } = options;
    for (let from = 0; from < tasks.length; from += tasksPerChunk) {
      const slice = tasks.slice(from, from + tasksPerChunk);
      const batches = new FixedBatches(gpu, options.dataset, {
        tasks: slice,
        family: options.family,
        batch: options.batch,
        split: options.split,
        store: options.store,
        examples: options.examples?.slice(from, from + tasksPerChunk),
      });
      const tape = new Tape(gpu);
      const logits = options.forward(tape, { x: batches.x, taskIndices: batches.taskIndices });
      const metrics = new Metrics(gpu, slice.length);
      const body = [...tape.forward, ...metrics.prepare(gpu, logits, batches.y)];
      this.#chunks.push({ batches, tape, metrics, body });
    }
    this.tasks = [...tasks];
  }

  /** The evaluated tasks, in order. */
  readonly tasks: number[];

  /** Evaluates every task; returns one score per task in `tasks` order. */
  async evaluate(): Promise<TaskScore[]> {
    const scores: TaskScore[] = [];
    for (const chunk of this.#chunks) {
      const slots = chunk.batches.taskIndices.size;
      const correct = new Float64Array(slots);
      const valid = new Float64Array(slots);
      const lossSum = new Float64Array(slots);
      for (let k = 0; k < chunk.batches.count; k++) {
        run(this.gpu, [...chunk.batches.load(k), ...chunk.body]);
        const m = await chunk.metrics.read(this.gpu);
        for (let t = 0; t < slots; t++) {
          correct[t]! += m.correct[t]!;
          valid[t]! += m.valid[t]!;
          lossSum[t]! += m.perTaskLoss[t]! * m.valid[t]!;
        }
      }
      for (let t = 0; t < slots; t++) {
        scores.push({
          task: this.tasks[scores.length]!,
          accuracy: valid[t]! > 0 ? correct[t]! / valid[t]! : 0,
          loss: valid[t]! > 0 ? lossSum[t]! / valid[t]! : 0,
          count: valid[t]!,
        });
      }
    }
    return scores;
  }

  /** Frees every chunk's buffers. */
  destroy(): void {
    for (const c of this.#chunks) {
      c.batches.destroy();
      c.tape.destroy();
      c.metrics.destroy();
    }
  }
}

/** Mean of a list of numbers (0 for none). */
export function mean(values: readonly number[]): number {
  return values.length === 0 ? 0 : values.reduce((a, b) => a + b, 0) / values.length;
}
