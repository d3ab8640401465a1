/**
 * The pretrained + linear baseline of Tian, Wang, Krishnan, Tenenbaum and Isola, "Rethinking
 * few-shot image classification: a good embedding is all you need?" (ECCV 2020), on the conv4
 * backbone.
 *
 * Pretraining: conv4 with a linear head over all training classes at once, trained on ordinary
 * batches of the training classes' images (softmax cross-entropy, Adam). A test episode: the
 * support and query images are embedded with the pretrained layers up to flatten (the head is
 * dropped), each embedding is L2-normalised, and a multinomial logistic regression fitted on the
 * support embeddings classifies the queries. The regression runs on the CPU in float64: weights
 * W [N, F] and bias [N] from zero, full-batch Adam on the mean cross-entropy plus
 * (l2 / 2) |W|^2 (the bias is not penalised); its learning rate, L2 strength and number of steps
 * are chosen on validation episodes.
 *
 * Differences from the paper: conv4 rather than ResNet-12, Adam with a constant learning rate
 * rather than SGD with decay, no augmentation or self-distillation, batch norm with each batch's
 * own statistics (no running statistics; see embedding.ts), and the logistic regression by Adam
 * rather than scikit-learn's L-BFGS.
 *
 * @module
 */
import type { Dataset } from "../data/split.ts";
import { BatchAssembler, type ImageStore } from "../data/sampler.ts";
import { type BatchSource, StepProgram } from "../engine.ts";
import type { Gpu } from "../gpu/device.ts";
import { tunePending } from "../gpu/tune.ts";
import type { Dispatch } from "../gpu/kernel.ts";
import type { Tensor } from "../gpu/tensor.ts";
import { PlainNet } from "../model/supernet.ts";
import { optimizerConfig, ParamGroup } from "../optim.ts";
import { mean } from "../stats.ts";
import { Random } from "../random.ts";
import {
  type Backbone,
  type EmbeddedEpisode,
  readEmbedding,
  type TrainedEmbedding,
} from "./embedding.ts";
import type { ClassPool } from "./episodes.ts";

/** How the backbone is pretrained. */
export interface PretrainOptions {
  /** The images by class. */
  pool: ClassPool;
  /** The classes of the head (the training classes); label i is `classes[i]`. */
  classes: readonly number[];
  /** Images per step. */
  batch: number;
  /** Adam steps. */
  steps: number;
  /** Adam's learning rate (constant). */
  lr: number;
  /** Seed of the initial weights and of the batches. */
  seed: number;
  /** Steps between loss readbacks (besides the first and the last). */
  report: number;
  /** Called with each loss read back. */
  onProgress?: (step: number, loss: number) => void;
}

/**
 * Batches of B images of some classes, labelled by the class's position in the list: every
 * image once per epoch, in a fresh random order each epoch.
 */
class ClassBatches implements BatchSource {
  readonly #assembler: BatchAssembler;
  readonly #images: Uint32Array<ArrayBuffer>;
  readonly #labels: Float32Array<ArrayBuffer>;
  readonly #order: number[];
  readonly #random: Random;
  readonly #choice: {
    tasks: Uint32Array<ArrayBuffer>;
    images: Uint32Array<ArrayBuffer>;
    labels: Float32Array<ArrayBuffer>;
  };
  #at = Infinity;

  /** Prepares batches of `batch` images of `classes` from `store`. */
  constructor(
    gpu: Gpu,
    dataset: Pick<Dataset, "mean" | "std">,
    options: {
      store: ImageStore;
      pool: ClassPool;
      classes: readonly number[];
      batch: number;
      seed: number;
    },
  ) {
    const { pool, classes, batch } = options;
    this.#images = Uint32Array.from(classes.flatMap((c) => pool.byClass[c]!));
    this.#labels = Float32Array.from(classes.flatMap((c, i) => pool.byClass[c]!.map(() => i)));
    if (this.#images.length < batch) {
      throw new RangeError(
        `Pretraining batches of ${batch} images need as many images of the training classes, ` +
          `got ${this.#images.length}; use a smaller profile or a larger dataset`,
      );
    }
    this.#order = [...this.#images.keys()];
    this.#random = new Random(options.seed);
    this.#assembler = new BatchAssembler(gpu, options.store, {
      tasks: 1,
      batch,
      mean: dataset.mean,
      std: dataset.std,
    });
    this.#choice = {
      tasks: new Uint32Array(1),
      images: new Uint32Array(batch),
      labels: new Float32Array(batch),
    };
    this.x = this.#assembler.x;
    this.y = this.#assembler.y;
    this.taskIndices = this.#assembler.taskIndices;
  }

  /** Images [1, B, C, H, W]. */
  readonly x: Tensor;
  /** Labels [1, B]. */
  readonly y: Tensor;
  /** Task indices [1] (0). */
  readonly taskIndices: Tensor;

  /** Writes the next B images of the epoch (starting a new epoch when too few are left). */
  next(step: number): Dispatch[] {
    const { images, labels } = this.#choice;
    if (this.#at + images.length > this.#order.length) {
      this.#random.shuffle(this.#order);
      this.#at = 0;
    }
    for (let b = 0; b < images.length; b++) {
      const k = this.#order[this.#at + b]!;
      images[b] = this.#images[k]!;
      labels[b] = this.#labels[k]!;
    }
    this.#at += images.length;
    this.#assembler.write(this.#choice, step);
    return this.#assembler.dispatches;
  }

  /** Frees the batch tensors (not the store). */
  destroy(): void {
    this.#assembler.destroy();
  }
}

/**
 * Trains conv4 with a head over all of `classes` from PyTorch's default init; returns the
 * embedding's weights (the head dropped) and the training loss.
 */
export async function pretrain(
  backbone: Backbone,
  options: PretrainOptions,
): Promise<TrainedEmbedding> {
  const { gpu } = backbone;
  const { steps } = options;
  const config = { ...backbone.config, outputs: options.classes.length, seed: options.seed };
  const net = new PlainNet(gpu, { ...config, tasks: 1 });
  const group = new ParamGroup(gpu, net.params, {
    optimizer: optimizerConfig("adam", options.lr),
    schedule: { lr: options.lr, kind: "constant", warmup: 0, steps },
  });
  const source = new ClassBatches(gpu, backbone.dataset, { ...options, store: backbone.store });
  const program = new StepProgram(gpu, {
    source,
    forward: (tape, inputs) => net.forward(tape, { ...inputs, grads: group.grads }),
    groups: [group],
  });
  try {
    // Kernels of shape classes new to this adapter are timed once, before the first step.
    await tunePending(gpu);
    const loss = { first: NaN, last: NaN };
    for (let step = 1; step <= steps; step++) {
      program.run(step);
      if (step === 1 || step % options.report === 0 || step === steps) {
        loss.last = (await program.readMetrics()).loss;
        if (step === 1) loss.first = loss.last;
        options.onProgress?.(step, loss.last);
      }
    }
    return { weights: await readEmbedding(gpu, config, net.params), loss };
  } finally {
    program.destroy();
    source.destroy();
    group.destroy();
    net.destroy();
  }
}

/** A multinomial logistic regression: logits = W x + bias. */
export interface LinearModel {
  /** Weights [N, F], row-major. */
  weight: Float64Array;
  /** Bias [N]. */
  bias: Float64Array;
}

/** Rows of `x` ([n, F]) scaled to unit Euclidean length (a zero row stays zero). */
export function l2Normalize(x: ArrayLike<number>, features: number): Float64Array {
  const out = Float64Array.from(x);
  for (let i = 0; i < out.length; i += features) {
    let sum = 0;
    for (let f = 0; f < features; f++) sum += out[i + f]! ** 2;
    const scale = sum > 0 ? 1 / Math.sqrt(sum) : 0;
    for (let f = 0; f < features; f++) out[i + f]! *= scale;
  }
  return out;
}

/**
 * Fits a logistic regression on rows x [n, F] with labels 0..N-1 (`classes` = N) by full-batch
 * Adam from zero on mean cross-entropy + (l2 / 2) |W|^2; returns the model after each number of
 * steps in `checkpoints` (in their order).
 */
export function fitLogistic(
  x: ArrayLike<number>,
  labels: ArrayLike<number>,
  options: { classes: number; l2: number; lr: number; checkpoints: readonly number[] },
): LinearModel[] {
  const { classes: N, l2, lr } = options;
  const n = labels.length;
  const F = x.length / n;
  if (!Number.isInteger(F) || n === 0) {
    throw new RangeError(`Expected rows [n, F] for ${n} labels, got ${x.length} values`);
  }
  const params = new Float64Array(N * F + N);
  const grad = new Float64Array(params.length);
  const m = new Float64Array(params.length);
  const v = new Float64Array(params.length);
  const logits = new Float64Array(N);
  const [beta1, beta2, eps] = [0.9, 0.999, 1e-8];
  const snapshots = new Map<number, LinearModel>();
  const last = Math.max(0, ...options.checkpoints);
  const keep = (step: number) => {
    if (options.checkpoints.includes(step)) {
      snapshots.set(step, {
        weight: params.slice(0, N * F),
        bias: params.slice(N * F),
      });
    }
  };
  keep(0);
  for (let step = 1; step <= last; step++) {
    for (let j = 0; j < N * F; j++) grad[j] = l2 * params[j]!;
    grad.fill(0, N * F);
    for (let i = 0; i < n; i++) {
      let max = -Infinity;
      for (let k = 0; k < N; k++) {
        let z = params[N * F + k]!;
        for (let f = 0; f < F; f++) z += params[k * F + f]! * x[i * F + f]!;
        logits[k] = z;
        max = Math.max(max, z);
      }
      let sum = 0;
      for (let k = 0; k < N; k++) sum += logits[k] = Math.exp(logits[k]! - max);
      for (let k = 0; k < N; k++) {
        const d = (logits[k]! / sum - (labels[i] === k ? 1 : 0)) / n;
        for (let f = 0; f < F; f++) grad[k * F + f]! += d * x[i * F + f]!;
        grad[N * F + k]! += d;
      }
    }
    const c1 = 1 - beta1 ** step;
    const c2 = 1 - beta2 ** step;
    for (let j = 0; j < params.length; j++) {
      m[j] = beta1 * m[j]! + (1 - beta1) * grad[j]!;
      v[j] = beta2 * v[j]! + (1 - beta2) * grad[j]! ** 2;
      params[j]! -= lr * (m[j]! / c1) / (Math.sqrt(v[j]! / c2) + eps);
    }
    keep(step);
  }
  return options.checkpoints.map((s) => snapshots.get(s)!);
}

/** The class of each row of x [n, F]: the largest logit, the lowest index among equal ones. */
export function predictLogistic(model: LinearModel, x: ArrayLike<number>): Int32Array {
  const N = model.bias.length;
  const F = model.weight.length / N;
  const n = x.length / F;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = -Infinity;
    for (let k = 0; k < N; k++) {
      let z = model.bias[k]!;
      for (let f = 0; f < F; f++) z += model.weight[k * F + f]! * x[i * F + f]!;
      if (z > best) [best, out[i]] = [z, k];
    }
  }
  return out;
}

/** The logistic regression's settings. */
export interface LinearSettings {
  /** Adam's learning rate. */
  lr: number;
  /** L2 strength on W. */
  l2: number;
}

/**
 * Query accuracy of each embedded episode after each number of steps in `checkpoints`
 * ([checkpoint][episode]): L2-normalised embeddings, a logistic regression fitted on the support
 * rows, the query rows classified.
 */
export function linearAccuracies(
  episodes: readonly EmbeddedEpisode[],
  options: LinearSettings & { ways: number; checkpoints: readonly number[] },
): number[][] {
  const { ways } = options;
  const out = options.checkpoints.map(() => [] as number[]);
  for (const e of episodes) {
    const { features } = e;
    const shots = e.support.length / features / ways;
    const support = l2Normalize(e.support, features);
    const query = l2Normalize(e.query, features);
    const labels = Int32Array.from({ length: ways * shots }, (_, i) => Math.floor(i / shots));
    const queries = query.length / features / ways;
    const models = fitLogistic(support, labels, { ...options, classes: ways });
    models.forEach((model, c) => {
      const predicted = predictLogistic(model, query);
      let correct = 0;
      predicted.forEach((p, i) => correct += p === Math.floor(i / queries) ? 1 : 0);
      out[c]!.push(correct / predicted.length);
    });
  }
  return out;
}

/**
 * The (lr, l2, steps) with the best mean query accuracy over embedded validation episodes, with
 * that accuracy.
 */
export function chooseLinear(
  episodes: readonly EmbeddedEpisode[],
  options: { ways: number; lrs: readonly number[]; l2s: readonly number[]; steps: number[] },
): LinearSettings & { steps: number; validationAccuracy: number } {
  let best: LinearSettings & { steps: number; validationAccuracy: number } | undefined;
  for (const lr of options.lrs) {
    for (const l2 of options.l2s) {
      const accs = linearAccuracies(episodes, {
        ways: options.ways,
        lr,
        l2,
        checkpoints: options.steps,
      });
      options.steps.forEach((steps, i) => {
        const a = mean(accs[i]!);
        if (!best || a > best.validationAccuracy) best = { lr, l2, steps, validationAccuracy: a };
      });
    }
  }
  if (!best) throw new RangeError("chooseLinear needs at least one lr, l2 and step count");
  return best;
}
