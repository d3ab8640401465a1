/**
 * SuperNet as a library: train a generator, adapt it to a task (one of its family, or your own
 * folders of pictures), evaluate a run, classify pictures and export a task's network, from
 * TypeScript without the command line. Each function takes the same options as the command of
 * the same name (flags in camelCase; omitted options take the command's defaults) and acquires
 * the WebGPU device itself.
 *
 * ```ts
 * import * as supernet from "./mod.ts";
 *
 * await supernet.train({ steps: 300, out: "runs/digits" });
 * const adapted = await supernet.adapt({ run: "runs/digits", images: "my_digits" });
 * const { predictions } = await supernet.predict({
 *   run: "runs/digits",
 *   z: `${adapted.out}/z_my_digits.safetensors`,
 *   paths: ["new_pictures"],
 * });
 * await supernet.exportNetwork({ run: "runs/digits", z: "...", out: "export", format: "onnx" });
 * ```
 *
 * @module
 */
import { join } from "node:path";
import {
  adapt as adaptTask,
  ADAPT_DEFAULTS,
  type AdaptEvent,
  type AdaptOptions,
  type AdaptResult,
} from "./src/adapt/mod.ts";
import {
  type EvaluatedTask,
  evaluateRun,
  exportFromRun,
  type ExportOptions,
} from "./src/evaluate.ts";
import { getGpu } from "./src/gpu/device.ts";
import { imageTask, type ImageTaskOptions, type ImageTaskReport } from "./src/image_task.ts";
import type { SkippedImage } from "./src/images.ts";
import {
  predict as predictImages,
  PREDICT_DEFAULTS,
  type PredictOptions,
  type PredictResult,
} from "./src/predict.ts";
import type { RunDataOptions } from "./src/run.ts";
import {
  train as trainRun,
  TRAIN_DEFAULTS,
  type TrainEvent,
  type TrainOptions,
  type TrainResult,
} from "./src/train.ts";

export { ADAPT_DEFAULTS, PREDICT_DEFAULTS, TRAIN_DEFAULTS };
export type {
  AdaptEvent,
  AdaptOptions,
  AdaptResult,
  EvaluatedTask,
  ExportOptions,
  ImageTaskOptions,
  ImageTaskReport,
  PredictOptions,
  PredictResult,
  SkippedImage,
  TrainEvent,
  TrainOptions,
  TrainResult,
};
export { MAX_PIXELS, type Preprocessing } from "./src/images.ts";
export type { ExportedArchitecture } from "./src/export/mod.ts";

/**
 * Trains a generator and task vectors into `options.out` (default runs/latest). `onEvent` gets
 * progress; `signal` stops it cleanly with a checkpoint.
 */
export async function train(
  options: Partial<TrainOptions> = {},
  hooks: { onEvent?: (e: TrainEvent) => void; signal?: AbortSignal } = {},
): Promise<TrainResult> {
  return await trainRun(await getGpu(), { ...TRAIN_DEFAULTS, ...options }, hooks);
}

/** Options of {@link adapt}: those of `deno task adapt`, with `images` for your own pictures. */
export type AdaptTaskOptions =
  & Partial<Omit<AdaptOptions, "custom">>
  & Partial<Omit<ImageTaskOptions, keyof RunDataOptions>>;

/**
 * Learns a task with the run's generator frozen (z only) and the baselines asked for: the run's
 * held-out task, `task`, or with `images` (a folder of two class subfolders) your own task, whose
 * z goes to `<out>/z_<folder>.safetensors` (default out: `<run>/adapt_<folder>`). Skipped
 * pictures are told to `onSkip`; `report` says what was read.
 */
export async function adapt(
  options: AdaptTaskOptions = {},
  hooks: { onEvent?: (e: AdaptEvent) => void; onSkip?: (s: SkippedImage) => void } = {},
): Promise<AdaptResult & { report?: ImageTaskReport }> {
  const { images, testDir, positive, fit, strict, ...rest } = options;
  const resolved: AdaptOptions = { ...ADAPT_DEFAULTS, ...rest };
  const gpu = await getGpu();
  if (images === undefined) return await adaptTask(gpu, resolved, hooks);
  const { custom, report } = await imageTask(resolved.run, {
    images,
    testDir,
    positive,
    fit,
    strict,
    dataDir: resolved.dataDir,
    verify: resolved.verify,
  }, hooks);
  const result = await adaptTask(gpu, {
    ...resolved,
    custom,
    out: resolved.out ?? join(resolved.run, `adapt_${custom.name}`),
  }, hooks);
  return { ...result, report };
}

/**
 * Test accuracy of every trained task of a run (its own z) and of each held-out task with the
 * mean z of the trained tasks.
 */
export async function evaluate(
  options: { run?: string } & RunDataOptions = {},
): Promise<{ tasks: EvaluatedTask[]; trainedAccuracy: number; heldOutAccuracy: number }> {
  return await evaluateRun(await getGpu(), { ...options, run: options.run ?? ADAPT_DEFAULTS.run });
}

/**
 * Classifies pictures (files, or folders of PNG and JPEG files) with the network the run's
 * generator makes for a z file (`z`) or a task of the run (`task`).
 */
export async function predict(
  options: Partial<PredictOptions> & Pick<PredictOptions, "paths">,
  hooks: { onSkip?: (s: SkippedImage) => void } = {},
): Promise<PredictResult> {
  return await predictImages(await getGpu(), { ...PREDICT_DEFAULTS, ...options }, hooks);
}

/**
 * Writes a task's generated network into `out` (default `<run>/export`): safetensors or ONNX,
 * with the JSON description of its layers, preprocessing, labels and source.
 */
export async function exportNetwork(
  options: Partial<ExportOptions> = {},
): Promise<{ weights?: string; onnx?: string; architecture: string }> {
  const run = options.run ?? ADAPT_DEFAULTS.run;
  return await exportFromRun(await getGpu(), {
    ...options,
    run,
    out: options.out ?? join(run, "export"),
  });
}

export { exportNetwork as export };
