/**
 * CPU reference of shaders/loss.wgsl, in float64: per-task cross-entropy (binary and K-way), its
 * mean over tasks, the gradient of that mean, and accuracy. Labels < 0 (and K-way labels >= K)
 * are padding.
 *
 * @module
 */

/** Sizes: T tasks of B samples with K logits each (K = 1 for binary). */
export interface Sizes {
  /** T. */
  tasks: number;
  /** B. */
  batch: number;
  /** K; 1 for binary logits. */
  classes: number;
}

/** What a cross-entropy returns. */
export interface LossResult {
  /** [T] mean loss of the valid samples of each task (0 when none). */
  perTask: Float64Array;
  /** Mean of perTask over the tasks with valid samples (0 when none). */
  loss: number;
  /** d loss / d logits times gradScale, shaped like the logits. */
  dLogits: Float64Array;
}

/** What accuracy returns; all [T]. */
export interface AccuracyResult {
  /** correct / valid per task (0 when no valid sample). */
  perTask: Float64Array;
  /** Correctly classified samples per task. */
  correct: Float64Array;
  /** Valid samples per task. */
  valid: Float64Array;
}

/** Binary cross-entropy with logits, logits [T, B], labels [T, B] in [0, 1] or < 0 (padding). */
export function sigmoidCrossEntropy(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  options: { tasks: number; batch: number; gradScale?: number },
): LossResult {
  const sizes = { ...options, classes: 1 };
  return crossEntropy(sizes, options.gradScale ?? 1, (row) => {
    const y = labels[row]!;
    if (y < 0) return undefined;
    const z = logits[row]!;
    const sigmoid = 1 / (1 + Math.exp(-z));
    return {
      loss: Math.max(z, 0) - z * y + Math.log1p(Math.exp(-Math.abs(z))),
      grad: [sigmoid - y],
    };
  });
}

/** Softmax cross-entropy, logits [T, B, K], labels [T, B] class indices or < 0 (padding). */
export function softmaxCrossEntropy(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  options: Sizes & { gradScale?: number },
): LossResult {
  const k = options.classes;
  return crossEntropy(options, options.gradScale ?? 1, (row) => {
    const y = labels[row]!;
    if (y < 0 || y >= k) return undefined;
    const z = Array.from({ length: k }, (_, j) => logits[row * k + j]!);
    const max = Math.max(...z);
    const sum = z.reduce((s, v) => s + Math.exp(v - max), 0);
    const lse = max + Math.log(sum);
    const c = Math.floor(y);
    return {
      loss: lse - z[c]!,
      grad: z.map((v, j) => Math.exp(v - max) / sum - (j === c ? 1 : 0)),
    };
  });
}

/**
 * Accuracy per task: binary (classes = 1) predicts 1 when z > 0; K-way predicts the argmax, the
 * lowest index among equal maxima.
 */
export function accuracy(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  options: Sizes,
): AccuracyResult {
  const { tasks, batch, classes: k } = options;
  const result = {
    perTask: new Float64Array(tasks),
    correct: new Float64Array(tasks),
    valid: new Float64Array(tasks),
  };
  for (let t = 0; t < tasks; t++) {
    for (let b = 0; b < batch; b++) {
      const row = t * batch + b;
      const y = labels[row]!;
      if (y < 0 || (k > 1 && y >= k)) continue;
      let hit: boolean;
      if (k === 1) {
        hit = (logits[row]! > 0) === (y > 0.5);
      } else {
        let best = 0;
        for (let j = 1; j < k; j++) {
          if (logits[row * k + j]! > logits[row * k + best]!) best = j;
        }
        hit = best === Math.floor(y);
      }
      result.valid[t]! += 1;
      if (hit) result.correct[t]! += 1;
    }
    const valid = result.valid[t]!;
    result.perTask[t] = valid > 0 ? result.correct[t]! / valid : 0;
  }
  return result;
}

/** Shared averaging: `sample(row)` gives the loss and dl/dz of one row, or undefined for padding. */
function crossEntropy(
  sizes: Sizes,
  gradScale: number,
  sample: (row: number) => { loss: number; grad: number[] } | undefined,
): LossResult {
  const { tasks, batch, classes } = sizes;
  const perTask = new Float64Array(tasks);
  const dLogits = new Float64Array(tasks * batch * classes);
  const counts = new Float64Array(tasks);
  let sum = 0;
  let withSamples = 0;
  for (let t = 0; t < tasks; t++) {
    let taskSum = 0;
    for (let b = 0; b < batch; b++) {
      const s = sample(t * batch + b);
      if (!s) continue;
      taskSum += s.loss;
      counts[t]! += 1;
    }
    if (counts[t]! > 0) {
      perTask[t] = taskSum / counts[t]!;
      sum += perTask[t]!;
      withSamples += 1;
    }
  }
  for (let t = 0; t < tasks; t++) {
    for (let b = 0; b < batch; b++) {
      const row = t * batch + b;
      const s = sample(row);
      if (!s) continue;
      s.grad.forEach((g, j) => {
        dLogits[row * classes + j] = g * gradScale / (counts[t]! * withSamples);
      });
    }
  }
  return { perTask, loss: withSamples > 0 ? sum / withSamples : 0, dLogits };
}
