/**
 * `predict`: classify users' pictures with a run's generator and a task vector (a z file written by
 * `adapt`, or a task of the run), batched on the GPU: one probability and predicted class each.
 *
 * @module
 */
import type { Dataset } from "./data/split.ts";
import { FixedBatches } from "./data/sampler.ts";
import type { Task } from "./data/tasks.ts";
import type { Gpu } from "./gpu/device.ts";
import { run } from "./gpu/kernel.ts";
import { read, write } from "./gpu/tensor.ts";
import { expandPaths, type Fit, readImages, type SkippedImage } from "./images.ts";
import type { SuperNet } from "./model/supernet.ts";
import { chooseTask, loadRun, type RunDataOptions, runStatistics } from "./run.ts";
import { Tape } from "./tape.ts";

/** Options of `predict` (the CLI maps its flags 1:1 onto these). */
export interface PredictOptions extends RunDataOptions {
  /** Run folder written by `train`. */
  run: string;
  /** A z file written by `adapt` (e.g. by `adapt --images`). */
  z?: string;
  /** Otherwise a task of the run, by index or name (default: the first held-out, mean z). */
  task?: string;
  /** Image files and folders of images. */
  paths: string[];
  /** crop (default) or stretch pictures to the input's shape. */
  fit: Fit;
  /** Fail on the first bad image instead of skipping it. */
  strict: boolean;
  /** Images per GPU batch. */
  batch: number;
}

/** Defaults of `predict`. */
export const PREDICT_DEFAULTS: Omit<PredictOptions, "paths"> = {
  run: "runs/latest",
  fit: "crop",
  strict: false,
  batch: 256,
};

/** The network's answer for one picture. */
export interface Prediction {
  /** The file. */
  file: string;
  /** Log-odds of the positive class (label 1). */
  logit: number;
  /** sigmoid(logit): probability of the positive class. */
  probability: number;
  /** 1 when the probability is above 1/2, else 0. */
  label: 0 | 1;
  /** Name of the predicted class. */
  className: string;
}

/** What `predict` found. */
export interface PredictResult {
  /** One per usable image, in the order given. */
  predictions: Prediction[];
  /** Files not used, with reasons. */
  skipped: SkippedImage[];
  /** Names of label 0 and label 1. */
  classNames: [string, string];
  /** The task's name. */
  task: string;
}

/** Classifies the pictures of `options.paths`; bad files are skipped (told to `onSkip`). */
export async function predict(
  gpu: Gpu,
  options: PredictOptions,
  hooks: { onSkip?: (skipped: SkippedImage) => void } = {},
): Promise<PredictResult> {
  const files = await expandPaths(options.paths);
  const { net, state, table, options: trained } = await loadRun(gpu, options.run);
  try {
    const chosen = await chooseTask(state, table, { task: options.task, zFile: options.z });
    const stats = await runStatistics(state, trained, options);
    const shape = state.model.inputShape;
    const loaded = await readImages(files, {
      shape,
      fit: options.fit,
      strict: options.strict,
      onSkip: hooks.onSkip,
    });
    const logits = loaded.used.length === 0
      ? new Float32Array()
      : await taskLogits(gpu, net, chosen.z, {
        images: loaded.images,
        ...stats,
        batch: options.batch,
      });
    const predictions = loaded.used.map((file, i): Prediction => {
      const logit = logits[i]!;
      const probability = 1 / (1 + Math.exp(-logit));
      const label = probability > 0.5 ? 1 : 0;
      return { file, logit, probability, label, className: chosen.classNames[label] };
    });
    return {
      predictions,
      skipped: loaded.skipped,
      classNames: chosen.classNames,
      task: chosen.name,
    };
  } finally {
    net.destroy();
  }
}

/**
 * Logits of the network that `net` generates for z on images [N, C, H, W] (bytes, the run's input
 * shape), normalised on the GPU with `mean` and `std`, in batches of `batch`.
 */
export async function taskLogits(
  gpu: Gpu,
  net: SuperNet,
  z: Float32Array,
  options: { images: Uint8Array; mean: readonly number[]; std: readonly number[]; batch: number },
): Promise<Float32Array> {
  const shape = net.config.inputShape;
  const size = shape[0] * shape[1] * shape[2];
  const count = options.images.length / size;
  if (!Number.isInteger(count) || count < 1) {
    throw new RangeError(
      `Expected images of [${shape}] (${size} bytes each), got ${options.images.length} bytes`,
    );
  }
  const d = net.config.generator.zDim;
  if (z.length !== d) throw new RangeError(`Expected a z of ${d} numbers, got ${z.length}`);
  // Row 0 of the z table carries z; the single task slot reads it.
  const table = new Float32Array(net.z.get("z").size);
  table.set(z);
  write(gpu, net.z.get("z"), table);
  const labels = new Uint8Array(count);
  const split = { images: options.images, labels, count };
  const task: Task = { name: "predict", negative: [0], positive: [1] };
  const dataset: Dataset = {
    name: "images",
    shape: [...shape],
    classNames: ["0", "1"],
    train: split,
    test: split,
    mean: [...options.mean],
    std: [...options.std],
    source: "images",
  };
  const batch = Math.min(options.batch, count);
  const batches = new FixedBatches(gpu, dataset, {
    tasks: [0],
    family: { name: "images", tasks: [task], heldOut: [], excluded: [], train: [] },
    batch,
    examples: [{
      indices: Uint32Array.from({ length: count }, (_, i) => i),
      labels: new Float32Array(count),
    }],
  });
  const tape = new Tape(gpu);
  try {
    const logits = net.forward(tape, { x: batches.x, taskIndices: batches.taskIndices });
    const out = new Float32Array(count);
    for (let k = 0; k < batches.count; k++) {
      run(gpu, [...batches.load(k), ...tape.forward]);
      const values = await read(gpu, logits.tensor);
      out.set(values.subarray(0, Math.min(batch, count - k * batch)), k * batch);
    }
    return out;
  } finally {
    tape.destroy();
    batches.destroy();
  }
}
