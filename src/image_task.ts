/**
 * A task of the user's own for `adapt --images`: two folders of pictures become an in-memory
 * dataset with the run's input shape and normalisation statistics and a two-class task over it,
 * handed to the ordinary adaptation (same samplers, evaluator and methods as any held-out task).
 *
 * @module
 */
import { basename, resolve } from "node:path";
import type { CustomTask } from "./adapt/mod.ts";
import { loadCheckpoint } from "./checkpoint.ts";
import type { Dataset, Split } from "./data/split.ts";
import { type Fit, readClassFolders, type SkippedImage } from "./images.ts";
import { type RunDataOptions, runStatistics } from "./run.ts";
import type { RunState, TrainOptions } from "./train.ts";

/** Where the pictures of a custom task are and how they are read. */
export interface ImageTaskOptions extends RunDataOptions {
  /** Folder with two subfolders of pictures, one per class (their names are the class names). */
  images: string;
  /** Folder of the same layout with held-out pictures to score on. */
  testDir?: string;
  /** The subfolder whose class is the positive one (label 1); default: the second by name. */
  positive?: string;
  /** crop (default) or stretch pictures to the input's shape. */
  fit?: Fit;
  /** Fail on the first bad picture instead of skipping it. */
  strict?: boolean;
}

/** What was read for a custom task. */
export interface ImageTaskReport {
  /** [negative, positive] class names. */
  classNames: [string, string];
  /** Pictures learned from, per class [negative, positive]. */
  train: [number, number];
  /** Pictures scored, per class. */
  test: [number, number];
  /** Whether scores are on held-out pictures (`testDir`) or on the training pictures. */
  heldOut: boolean;
  /** Files not used, with reasons. */
  skipped: SkippedImage[];
}

function perClass(split: Split): [number, number] {
  let positive = 0;
  for (let i = 0; i < split.count; i++) positive += split.labels[i]!;
  return [split.count - positive, positive];
}

/**
 * Reads the pictures of `options.images` (and `testDir`) into a {@link CustomTask} for the run in
 * `run`; without `testDir` the test split is the training pictures themselves.
 */
export async function imageTask(
  run: string,
  options: ImageTaskOptions,
  hooks: { onSkip?: (skipped: SkippedImage) => void } = {},
): Promise<{ custom: CustomTask; report: ImageTaskReport }> {
  const { info } = await loadCheckpoint<TrainOptions>(run, []);
  const state = info.state as unknown as RunState;
  const shape = state.model.inputShape;
  const read = { shape, fit: options.fit, strict: options.strict, onSkip: hooks.onSkip };
  const train = await readClassFolders(options.images, { ...read, positive: options.positive });
  const test = options.testDir
    ? await readClassFolders(options.testDir, {
      ...read,
      classNames: train.classNames,
      flag: "--test-dir",
    })
    : undefined;
  const stats = await runStatistics(state, info.options, options);
  const [negative, positive] = train.classNames;
  const dataset: Dataset = {
    name: "images",
    shape: [...shape],
    classNames: [negative, positive],
    train: train.split,
    test: test?.split ?? train.split,
    mean: stats.mean,
    std: stats.std,
    source: `pictures in ${resolve(options.images)}` +
      (options.testDir ? `, scored on ${resolve(options.testDir)}` : ""),
  };
  const name = basename(resolve(options.images)).replaceAll(/[^A-Za-z0-9_.-]+/g, "_");
  return {
    custom: {
      dataset,
      task: { name: `${negative} vs ${positive}`, negative: [0], positive: [1] },
      name,
    },
    report: {
      classNames: train.classNames,
      train: perClass(train.split),
      test: perClass(dataset.test),
      heldOut: test !== undefined,
      skipped: [...train.skipped, ...(test?.skipped ?? [])],
    },
  };
}
