/**
 * Classification losses and accuracy per task (shaders/loss.wgsl): sigmoid (binary) and softmax
 * (K-way) cross-entropy with their gradient, and accuracy with exact counts. Labels are f32; a
 * negative label marks padding, which every output ignores.
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, grid, pipeline, prepare, Uniform } from "../gpu/kernel.ts";
import { createTensor, type Tensor } from "../gpu/tensor.ts";

/** Outputs of a cross-entropy loss; all caller-allocated f32 tensors. */
export interface LossOutputs {
  /** [T]: mean loss over the valid samples of each task (0 for a task with none). */
  perTask: Tensor;
  /** [1]: mean of `perTask` over the tasks that have valid samples (0 when none has). */
  loss: Tensor;
  /** Same shape as the logits: d loss[0] / d logits times `gradScale`, 0 on padding. */
  dLogits?: Tensor;
  /** Factor applied to `dLogits` (not to the loss), e.g. a loss weight; default 1. */
  gradScale?: number;
  /**
   * [T + 1] scratch the dispatches share (valid samples per task, tasks with samples); the caller
   * destroys it with them. Without it the call allocates one that lives until garbage collection.
   */
  stats?: Tensor;
}

/** Outputs of `accuracy`; all caller-allocated f32 tensors of T elements. */
export interface AccuracyOutputs {
  /** Fraction of the valid samples of each task classified correctly (0 for a task with none). */
  perTask: Tensor;
  /** Count of correctly classified samples per task. */
  correct?: Tensor;
  /** Count of valid (non-padding) samples per task. */
  valid?: Tensor;
}

/** Sizes read from the logits: tasks T, samples per task B, logits per sample K. */
interface Sizes {
  tasks: number;
  batch: number;
  classes: number;
}

/**
 * Binary cross-entropy with logits. `logits` [T, B] or [T, B, 1]; `labels` [T, B] f32 targets in
 * [0, 1], or -1 for padding. Writes `perTask` (stable form max(z, 0) - z y + log1p(exp(-|z|))),
 * `loss` and, when given, `dLogits` = (sigmoid(z) - y) * gradScale / (validCount_t * tasksWithSamples).
 * Deterministic: one workgroup per task reducing over B with a fixed tree, then a fixed-order
 * sum over T.
 */
export function sigmoidCrossEntropy(
  gpu: Gpu,
  logits: Tensor,
  labels: Tensor,
  out: LossOutputs,
): Dispatch[] {
  const sizes = binarySizes("sigmoidCrossEntropy", logits);
  return crossEntropy(gpu, [logits, labels], { sizes, out, kind: "sigmoid" });
}

/**
 * Softmax cross-entropy. `logits` [T, B, K]; `labels` [T, B] f32 class indices 0..K-1, or -1 for
 * padding. Same outputs as `sigmoidCrossEntropy` with the per-sample loss logsumexp(z) - z[y]
 * (stabilised by subtracting max z) and `dLogits` = (softmax(z) - onehot(y)) * gradScale /
 * (validCount_t * tasksWithSamples).
 */
export function softmaxCrossEntropy(
  gpu: Gpu,
  logits: Tensor,
  labels: Tensor,
  out: LossOutputs,
): Dispatch[] {
  if (logits.shape.length !== 3) {
    throw new RangeError(
      `softmaxCrossEntropy expects logits of shape [T, B, K], got [${logits.shape}]`,
    );
  }
  const [tasks, batch, classes] = logits.shape as [number, number, number];
  const sizes = { tasks, batch, classes };
  checkSizes("softmaxCrossEntropy", logits, sizes);
  return crossEntropy(gpu, [logits, labels], { sizes, out, kind: "softmax" });
}

/**
 * Accuracy per task. Binary when `logits` is [T, B] or [T, B, 1] (z > 0 predicts 1, so z = 0
 * predicts 0); K-way when [T, B, K] with K >= 2 (argmax, the lowest index among equal maxima).
 * `labels` as for the losses; padding is not counted. Writes `perTask` = correct / valid (0 for a
 * task without valid samples) and, when given, the exact counts `correct` and `valid`, so callers
 * can sum them over several evaluation batches.
 */
export function accuracy(
  gpu: Gpu,
  logits: Tensor,
  labels: Tensor,
  out: AccuracyOutputs,
): Dispatch[] {
  const sizes = logits.shape.length === 3 && logits.shape[2] !== 1
    ? {
      tasks: logits.shape[0]!,
      batch: logits.shape[1]!,
      classes: logits.shape[2]!,
    }
    : binarySizes("accuracy", logits);
  checkSizes("accuracy", logits, sizes);
  checkLabels("accuracy", labels, sizes);
  checkCount("accuracy", "perTask", out.perTask, sizes.tasks);
  if (out.correct) checkCount("accuracy", "correct", out.correct, sizes.tasks);
  if (out.valid) checkCount("accuracy", "valid", out.valid, sizes.tasks);
  // The kernel always writes both counts; a missing one goes to a scratch tensor of this call.
  const correct = out.correct ?? createTensor(gpu, [sizes.tasks]);
  const valid = out.valid ?? createTensor(gpu, [sizes.tasks]);
  const entry = sizes.classes === 1 ? "accuracy_binary" : "accuracy_softmax";
  const uniform = paramsOf(gpu, sizes, 1);
  return [
    prepare(
      gpu,
      pipeline(gpu, "loss", { entry }),
      [logits, labels, out.perTask, correct, valid],
      grid(sizes.tasks),
      uniform,
    ),
  ];
}

function crossEntropy(
  gpu: Gpu,
  [logits, labels]: [Tensor, Tensor],
  options: { sizes: Sizes; out: LossOutputs; kind: "sigmoid" | "softmax" },
): Dispatch[] {
  const { sizes, out, kind } = options;
  const what = `${kind}CrossEntropy`;
  checkLabels(what, labels, sizes);
  checkCount(what, "perTask", out.perTask, sizes.tasks);
  checkCount(what, "loss", out.loss, 1);
  if (out.dLogits && out.dLogits.size !== logits.size) {
    throw new RangeError(
      `${what} expects dLogits of the logits' shape [${logits.shape}], got [${out.dLogits.shape}]`,
    );
  }
  // stats[t] = valid samples of task t, stats[T] = tasks with samples: what the gradient needs.
  // It lives as long as these dispatches, like their uniform (see LossOutputs.stats).
  if (out.stats) checkCount(what, "stats", out.stats, sizes.tasks + 1);
  const stats = out.stats ?? createTensor(gpu, [sizes.tasks + 1]);
  const uniform = paramsOf(gpu, sizes, out.gradScale ?? 1);
  const dispatches = [
    prepare(
      gpu,
      pipeline(gpu, "loss", { entry: `${kind}_task` }),
      [logits, labels, out.perTask, stats],
      grid(sizes.tasks),
      uniform,
    ),
    prepare(
      gpu,
      pipeline(gpu, "loss", { entry: "task_mean" }),
      [out.perTask, stats, out.loss],
      [1, 1, 1],
      uniform,
    ),
  ];
  if (out.dLogits) {
    // One invocation per logit (binary) or per row of K logits (K-way): T * B either way.
    const rows = sizes.tasks * sizes.batch;
    dispatches.push(prepare(
      gpu,
      pipeline(gpu, "loss", { entry: `${kind}_grad` }),
      [logits, labels, stats, out.dLogits],
      grid(Math.ceil(rows / 256)),
      uniform,
    ));
  }
  return dispatches;
}

function paramsOf(gpu: Gpu, sizes: Sizes, gradScale: number): Uniform {
  return new Uniform(gpu, [
    ["u32", sizes.tasks],
    ["u32", sizes.batch],
    ["u32", sizes.classes],
    ["f32", gradScale],
  ]);
}

function binarySizes(what: string, logits: Tensor): Sizes {
  const [tasks, batch, classes = 1] = logits.shape;
  const rank = logits.shape.length;
  if (tasks === undefined || batch === undefined || rank > 3 || classes !== 1) {
    throw new RangeError(
      `${what} expects binary logits of shape [T, B] or [T, B, 1], got [${logits.shape}]`,
    );
  }
  const sizes = { tasks, batch, classes: 1 };
  checkSizes(what, logits, sizes);
  return sizes;
}

function checkSizes(what: string, logits: Tensor, sizes: Sizes): void {
  if (sizes.tasks < 1 || sizes.batch < 1 || sizes.classes < 1) {
    throw new RangeError(`${what} expects non-empty logits, got shape [${logits.shape}]`);
  }
}

function checkLabels(what: string, labels: Tensor, sizes: Sizes): void {
  const { tasks, batch } = sizes;
  const [t, b, ...rest] = labels.shape;
  if (labels.dtype !== "f32" || t !== tasks || b !== batch || rest.length > 0) {
    throw new RangeError(
      `${what} expects f32 labels of shape [${tasks}, ${batch}], ` +
        `got ${labels.dtype} [${labels.shape}]`,
    );
  }
}

function checkCount(what: string, name: string, t: Tensor, n: number): void {
  if (t.size !== n) {
    throw new RangeError(`${what} expects ${name} of ${n} elements, got shape [${t.shape}]`);
  }
}
