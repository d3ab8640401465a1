/**
 * `adapt`: learn held-out tasks with the trained generator frozen, by optimising only their task
 * vectors z, and compare in the same harness (same images, same budget rule, same evaluation)
 * with the baselines: a whole network from scratch (`full`), the last layer of the generated
 * network (`head`), generator and z together (`finetune`), the seed's z-only recipe (`z-seed`),
 * z through an untrained generator (`z-untrained`) and the mean z without training (`zero-shot`).
 *
 * Every method learns from the task's training images less a validation slice carved from them
 * (from a run trained with a reserve, the task's reserved images, which the generator never saw);
 * the slice picks the learning rate (baselines, from a small grid), the step to stop at, and for
 * z the winner among several starting points. Test images only score the result. Several tasks
 * (and several starting z per task) adapt side by side as one batched program of T slots.
 *
 * @module
 */
import { join } from "node:path";
import { loadCheckpoint, restoreArenas } from "./checkpoint.ts";
import { loadDataset } from "./data/dataset.ts";
import type { Dataset } from "./data/split.ts";
import { fewShot, ImageStore, type Slot, SlotSampler } from "./data/sampler.ts";
import {
  type Examples,
  selectExamples,
  splitReserve,
  type Task,
  taskExamples,
  type TaskFamily,
} from "./data/tasks.ts";
import type { Gpu } from "./gpu/device.ts";
import type { Dispatch } from "./gpu/kernel.ts";
import { read, tensorFrom, write } from "./gpu/tensor.ts";
import { tunePending } from "./gpu/tune.ts";
import { Evaluator, type ForwardBuilder, StepProgram } from "./engine.ts";
import { generateWeights } from "./export/network.ts";
import { initTaskVectors, PlainNet, SuperNet } from "./model/supernet.ts";
import { weightCount } from "./model/target.ts";
import { axpby } from "./ops/elementwise.ts";
import { optimizerConfig, OPTIMIZERS, ParamGroup } from "./optim.ts";
import { mixSeed, Random } from "./random.ts";
import { type NamedTensor, saveSafetensors, writeAtomic } from "./safetensors.ts";
import { MODEL_FILE, type RunState, spread, type TrainOptions } from "./train.ts";

/**
 * Ways to learn a held-out task: `zero-shot` (mean z, no training), `z` (z only, generator
 * frozen), `z-seed` (z only with the seed's recipe: mean z, fixed lr and steps, no validation),
 * `head` (the network generated from the starting z with only its last layer trained), `full`
 * (the whole target network from scratch), `finetune` (generator and z), and `z-untrained` (z
 * only through an untrained generator, a control).
 */
export const METHODS = [
  "zero-shot",
  "z",
  "z-seed",
  "head",
  "full",
  "finetune",
  "z-untrained",
] as const;
/** One of {@link METHODS}. */
export type Method = typeof METHODS[number];
/**
 * Initial z of a new task: `population` (the K trained z that fit the task's training images
 * best, plus the mean z, adapted side by side; the validation slice picks the winner), `best`
 * (the trained z with the lowest training loss), `mean`, `zero`, `random`, `one_hot`.
 */
export const Z_INITS = ["population", "best", "mean", "zero", "random", "one_hot"] as const;
/** One of {@link Z_INITS}. */
export type ZInitName = typeof Z_INITS[number];

/** Options of `adapt` (the CLI maps its flags 1:1 onto these). */
export interface AdaptOptions {
  /** Run folder written by `train`. */
  run: string;
  /**
   * Tasks to learn: an index or name, a comma list of them, or `all-heldout` (every held-out
   * task, adapted together in one batched program). Default: the first held-out task.
   */
  task?: string;
  /** Methods to compare, in order. */
  methods: Method[];
  /** Initial z of `z` (and the start of `head` and `finetune`). */
  init: ZInitName;
  /** K of `population`: trained z adapted beside the mean z. */
  population: number;
  /** Most steps of every method (early stopping may stop sooner). */
  steps: number;
  /** Images per step (at most the images a task learns from). */
  batch: number;
  /** Images per class to learn from (0: all of the task's training images). */
  shots: number;
  /** Learning rate of z-only adaptation (0: the rule, 0.1 x the trained z's spread). */
  lr: number;
  /** Learning rate of `full` (the centre of its grid). */
  fullLr: number;
  /** Learning rate of `head` (the centre of its grid). */
  headLr: number;
  /** Learning rate of `finetune` (the centre of its grid). */
  finetuneLr: number;
  /** Baselines pick their learning rate on the validation slice from lr x {1/3, 1, 3}. */
  lrGrid: boolean;
  /**
   * Strength of the Gaussian prior on z around the trained z's mean, in units of their spread:
   * the loss gains prior / 2 * |z - mean|^2 / (zDim * spread^2) (0: off).
   */
  prior: number;
  /**
   * The number of learning images `prior` was chosen for (0 or absent: the prior is used as
   * given). With n learning images per task (the mean over the call's tasks) the prior becomes
   * prior x priorImages / n: the mean loss over n images weighs the data as 1 / n would in a
   * posterior, so the prior's relative weight scales as 1 / n.
   */
  priorImages?: number;
  /** Steps of the z methods (`z`, `z-untrained`; absent: `steps`), e.g. a recipe's choice. */
  zSteps?: number;
  /**
   * The validation slice, carved from the task's training images. For a run trained without a
   * reserve, the fraction of each class held out as the slice (0: none). For a run trained with
   * one (`train --reserve` > 0, the default), the slice is the task's reserved images, which the
   * generator never trained on, whatever the fraction: any value > 0 turns that slice on and 0
   * turns it off. Classes with fewer than 10 images give none: few-shot runs use every image to
   * learn from, end every slot at its last step, and pick among starting points by their
   * training loss there.
   */
  validation: number;
  /** Optimiser of every method. */
  optimizer: typeof OPTIMIZERS[number];
  /** Evaluate (validation and test) every N steps. */
  evalEvery: number;
  /** Stop after this many evaluations without a lower validation loss (0: run every step). */
  patience: number;
  /** Re-score the training tasks after `finetune` to measure forgetting. */
  forgetting: boolean;
  /**
   * Score the test images at every evaluation (learning curves); off, the test images are
   * scored once, at the chosen point.
   */
  curves: boolean;
  /** Seed of sampling, few-shot subsets and the random init. */
  seed: number;
  /** Folder of dataset files (default: as in training). */
  dataDir?: string;
  /** Check dataset files against their published sums (default: as in training). */
  verify?: boolean;
  /** Folder of the results (default: <run>/adapt). */
  out?: string;
  /** A task of the caller's own (e.g. from image folders) instead of one of the run's family. */
  custom?: CustomTask;
}

/**
 * A two-class task brought by the caller: its images (train split to learn from, test split to
 * score on; the run's input shape and normalisation statistics) and its task over their classes.
 * It borrows the z-table row of `task` (default: the first held-out task) while adapting.
 */
export interface CustomTask {
  /** The images, shaped and normalised like the run's. */
  dataset: Dataset;
  /** The task over the dataset's classes, e.g. negative [0], positive [1]. */
  task: Task;
  /** Name of the learned z file: `z_<name>.safetensors`. */
  name: string;
}

/** Defaults: population init, validation-based stopping and the prior, sized for a CPU. */
export const ADAPT_DEFAULTS: AdaptOptions = {
  run: "runs/latest",
  methods: ["zero-shot", "z", "full"],
  init: "population",
  population: 3,
  steps: 200,
  batch: 64,
  shots: 0,
  lr: 0,
  fullLr: 0.001,
  headLr: 0.01,
  finetuneLr: 0.0003,
  lrGrid: true,
  prior: 0.05,
  validation: 0.1,
  optimizer: "adam",
  evalEvery: 25,
  patience: 3,
  forgetting: true,
  curves: true,
  seed: 1,
};

/**
 * The seed's adaptation recipe (`--preset seed`, and the `z-seed` method): the mean z, Adam at
 * 0.01 for a fixed 150 steps, no validation slice, no prior, no learning-rate grid.
 */
export const SEED_ADAPT_PRESET: Partial<AdaptOptions> = {
  init: "mean",
  population: 0,
  steps: 150,
  lr: 0.01,
  lrGrid: false,
  prior: 0,
  validation: 0,
  patience: 0,
};

/** A point of a learning curve on the test split. */
export interface CurvePoint {
  /** Steps done. */
  step: number;
  /** Test accuracy. */
  accuracy: number;
  /** Test loss. */
  loss: number;
}

/** What one method reached on one task. */
export interface MethodResult {
  /** The method. */
  method: Method;
  /** Numbers trained for this task. */
  trainable: number;
  /** Test accuracy at the chosen point (best validation loss, else the last step). */
  accuracy: number;
  /** Test loss at the chosen point. */
  loss: number;
  /** Steps at the chosen point. */
  steps: number;
  /** Steps run in all. */
  stepsRun: number;
  /** Wall time in seconds (a batched program's time is shared equally by its tasks). */
  seconds: number;
  /** Learning rate used (the grid's pick for baselines). */
  lr: number;
  /** Where z started (z methods, head and finetune). */
  start?: string;
  /** Validation loss at the chosen point, when there was a validation slice. */
  validationLoss?: number;
  /**
   * The network predicts one class for every test image (accuracy equals a class's share and
   * the loss is at least ln 2): it learned nothing about this task.
   */
  collapsed: boolean;
  /** Mean test accuracy of (up to 8) training tasks before and after this method (finetune). */
  forgetting?: { tasks: number; before: number; after: number };
  /** Test accuracy and loss along the way (of the chosen slot). */
  curve: CurvePoint[];
}

/** A trained task's z scored on the new task's training images. */
export interface RankedZ {
  /** The trained task. */
  task: number;
  /** Its mean loss on (up to 256 of) the new task's training images. */
  trainLoss: number;
}

/** The comparison on one task. */
export interface TaskAdaptResult {
  /** Task index in the family. */
  task: number;
  /** Task name, e.g. "8 vs 9". */
  taskName: string;
  /** Training images the methods learned from (validation slice excluded). */
  trainImages: number;
  /** Images of the validation slice. */
  validationImages: number;
  /** Test images evaluated. */
  testImages: number;
  /** Trained z ranked by training loss on this task, best first (population and best inits). */
  ranking: RankedZ[];
  /** One entry per method, in the order asked. */
  results: MethodResult[];
}

/** The comparison on every adapted task. */
export interface AdaptResult {
  /** One entry per task, in the order asked. */
  tasks: TaskAdaptResult[];
  /** Folder the results were written to. */
  out: string;
}

/** Progress while adapting. */
export type AdaptEvent =
  | { kind: "method"; method: Method; trainable: number; slots: number; lr: number }
  | {
    kind: "eval";
    method: Method;
    step: number;
    steps: number;
    /** Which images were scored: the test images (curves on) or the selection images. */
    split: "test" | "validation";
    accuracy: number;
    loss: number;
  };

/** Finds a task by index or name. */
export function resolveTask(family: TaskFamily, task: string | undefined): number {
  if (task === undefined) {
    const first = family.heldOut[0];
    if (first === undefined) throw new RangeError(`The run holds out no task; pass --task`);
    return first;
  }
  if (/^\d+$/.test(task)) {
    const index = Number(task);
    if (index < family.tasks.length) return index;
  }
  const byName = family.tasks.findIndex((t) => t.name === task);
  if (byName < 0) {
    throw new RangeError(
      `Unknown task '${task}': expected an index 0..${family.tasks.length - 1} or a name such as '${
        family.tasks[0]?.name
      }' (see 'deno task tasks')`,
    );
  }
  return byName;
}

/** Resolves `--task`: one task, a comma list, or `all-heldout`. */
export function resolveTasks(family: TaskFamily, task: string | undefined): number[] {
  if (task === "all-heldout") {
    if (family.heldOut.length === 0) throw new RangeError(`The run holds out no task; pass --task`);
    return [...family.heldOut];
  }
  if (task === undefined || !task.includes(",")) return [resolveTask(family, task)];
  const tasks = task.split(",").map((t) => resolveTask(family, t.trim()));
  if (new Set(tasks).size !== tasks.length) {
    throw new RangeError(`--task '${task}' names a task twice; name each task once`);
  }
  return tasks;
}

/** The learning and validation examples of one task. */
interface TaskData {
  task: number;
  learn: Examples;
  validation?: Examples;
  test: Examples;
}

/**
 * Splits a task's training examples (or its few-shot subset) into the ones to learn from and a
 * validation slice. From a run trained with a reserve (`reserve` > 0), the slice is the reserved
 * images (`isReserved`), which the generator never saw; otherwise `fraction` of each class,
 * chosen by a seeded shuffle. No slice when `fraction` is 0 or a class would get fewer than 10.
 */
export function splitValidation(
  examples: Examples,
  options: { fraction: number; seed: number; reserve?: number },
): { learn: Examples; validation?: Examples } {
  if (!(options.fraction > 0)) return { learn: examples };
  if (options.reserve && options.reserve > 0) {
    const { kept, reserved } = splitReserve(examples, options.reserve);
    const positives = reserved.labels.reduce((n, l) => n + (l > 0.5 ? 1 : 0), 0);
    if (positives < 10 || reserved.labels.length - positives < 10) return { learn: examples };
    return { learn: kept, validation: reserved };
  }
  const bySide: number[][] = [[], []];
  examples.labels.forEach((l, k) => bySide[l > 0.5 ? 1 : 0]!.push(k));
  if (bySide.some((ks) => ks.length < 10)) return { learn: examples };
  const random = new Random(mixSeed(options.seed, 0x7a11));
  const held = new Set<number>();
  for (const ks of bySide) {
    random.shuffle(ks);
    const size = Math.max(1, Math.round(ks.length * options.fraction));
    for (const k of ks.slice(0, size)) held.add(k);
  }
  return {
    learn: selectExamples(examples, (k) => !held.has(k)),
    validation: selectExamples(examples, (k) => held.has(k)),
  };
}

/** What every method of one `adapt` call shares. */
interface Context {
  gpu: Gpu;
  options: AdaptOptions;
  state: RunState;
  family: TaskFamily;
  dataset: Dataset;
  tensors: Map<string, NamedTensor>;
  path: string;
  table: Float32Array;
  trainStore: ImageStore;
  testStore: ImageStore;
  onEvent?: (e: AdaptEvent) => void;
}

/**
 * Runs every method of `options.methods` on the tasks and writes the results. `adapt.json` is
 * rewritten after each method (`finished` lists the methods done), so a call that fails in a
 * late method keeps the earlier ones; `hooks.kept`, such a file's result for the same options,
 * skips the methods it finished.
 */
export async function adapt(
  gpu: Gpu,
  options: AdaptOptions,
  hooks: {
    onEvent?: (e: AdaptEvent) => void;
    kept?: AdaptResult & { finished?: Method[] };
    /**
     * Scores on training images instead of test ones: each task learns from `learn` and is
     * scored on `score`, both drawn from its training images (choosing a recipe on validation
     * tasks, which must never see test images).
     */
    folds?: (task: number, train: Examples) => { learn: Examples; score: Examples };
  } = {},
): Promise<AdaptResult> {
  const { info, tensors } = await loadCheckpoint<TrainOptions>(options.run, [MODEL_FILE]);
  const state = info.state as unknown as RunState;
  const { custom } = options;
  const taskList = resolveTasks(state.family, options.task ?? customRow(state.family, options));
  if (custom && taskList.length !== 1) {
    throw new RangeError("A task of your own adapts alone; name at most one --task row for it");
  }
  // A custom task takes the place of the row's task; everything below runs unchanged on it.
  const family = custom
    ? { ...state.family, tasks: state.family.tasks.with(taskList[0]!, custom.task) }
    : state.family;
  const loaded = custom?.dataset ?? await loadDataset(state.dataset.name, {
    dataDir: options.dataDir ?? info.options.dataDir,
    verify: options.verify ?? info.options.verify,
  });
  // Scoring on training images: the "test" split is the training split, test images unused.
  const { folds } = hooks;
  const dataset = folds ? { ...loaded, test: loaded.train } : loaded;
  // The training tasks' own images are not in a custom dataset: forgetting cannot be scored.
  if (custom) options = { ...options, forgetting: false };
  const data: TaskData[] = taskList.map((task) => {
    const all = taskExamples(family.tasks[task]!, dataset.train);
    if (folds) {
      const { learn, score } = folds(task, all);
      return { task, learn, test: score };
    }
    const pool = options.shots > 0
      ? fewShot(family.tasks[task]!, dataset.train, { shots: options.shots, seed: options.seed })
      : all;
    const split = splitValidation(pool, {
      fraction: options.validation,
      seed: options.seed,
      reserve: custom ? 0 : info.options.reserve,
    });
    return { task, ...split, test: taskExamples(family.tasks[task]!, dataset.test) };
  });
  const out = options.out ?? join(options.run, "adapt");
  await Deno.mkdir(out, { recursive: true });
  const ctx: Context = {
    gpu,
    options,
    state,
    family,
    dataset,
    tensors: tensors[MODEL_FILE]!,
    path: join(options.run, MODEL_FILE),
    table: tensors[MODEL_FILE]!.get("task.z")!.data as Float32Array,
    trainStore: new ImageStore(gpu, dataset.train, { shape: dataset.shape }),
    testStore: new ImageStore(gpu, dataset.test, { shape: dataset.shape }),
    onEvent: hooks.onEvent,
  };
  const results: MethodResult[][] = data.map(() => []);
  let ranking: RankedZ[][] = data.map(() => []);
  const finished: Method[] = [];
  const { custom: _, ...recorded } = options;
  const result = (): AdaptResult => ({
    tasks: data.map((d, i) => ({
      task: d.task,
      taskName: family.tasks[d.task]!.name,
      trainImages: d.learn.indices.length,
      validationImages: d.validation?.indices.length ?? 0,
      testImages: d.test.indices.length,
      ranking: ranking[i]!,
      results: options.methods.flatMap((m) => results[i]!.filter((r) => r.method === m)),
    })),
    out,
  });
  const save = () =>
    writeAtomic(
      join(out, "adapt.json"),
      JSON.stringify(
        { options: { ...recorded, source: custom?.dataset.source }, finished, ...result() },
        null,
        2,
      ) + "\n",
    );
  const kept = keptMethods(hooks.kept, data.map((d) => d.task));
  try {
    if (options.init === "best" || options.init === "population") {
      ranking = await rankTrainedZs(ctx, data);
    }
    const starts = data.map((d, i) => startingZs(ctx, d.task, ranking[i]!));
    for (const method of options.methods) {
      const earlier = kept.get(method);
      if (earlier) {
        earlier.forEach((r, i) => results[i]!.push(r));
        finished.push(method);
        continue;
      }
      const perTask = await runMethod(ctx, method, { data, starts });
      perTask.forEach((r, i) => results[i]!.push(r.result));
      if (method === "z") {
        for (const [i, r] of perTask.entries()) {
          const task = family.tasks[data[i]!.task]!;
          await saveSafetensors(
            join(out, `z_${custom?.name ?? data[i]!.task}.safetensors`),
            new Map([["z", { shape: [r.z!.length], data: r.z! }]]),
            {
              task: task.name,
              run: options.run,
              start: r.result.start ?? "",
              classes: JSON.stringify(sideNames(task, dataset.classNames)),
            },
          );
        }
      }
      finished.push(method);
      await save();
    }
  } finally {
    ctx.trainStore.destroy();
    ctx.testStore.destroy();
  }
  await save();
  return result();
}

/**
 * Per method, the results an earlier call finished for exactly these tasks (in this order), from
 * its `adapt.json`; empty when there is none or its tasks differ.
 */
function keptMethods(
  kept: (AdaptResult & { finished?: Method[] }) | undefined,
  tasks: number[],
): Map<Method, MethodResult[]> {
  const found = new Map<Method, MethodResult[]>();
  if (!kept || kept.tasks.map((t) => t.task).join() !== tasks.join()) return found;
  for (const method of kept.finished ?? []) {
    const rows = kept.tasks.map((t) => t.results.find((r) => r.method === method));
    if (rows.every((r) => r !== undefined)) found.set(method, rows as MethodResult[]);
  }
  return found;
}

/** A custom task borrows the first held-out row, or row 0 when the run holds none out. */
function customRow(family: TaskFamily, options: AdaptOptions): string | undefined {
  if (!options.custom) return undefined;
  return String(family.heldOut[0] ?? 0);
}

/** Names of a task's label 0 and label 1, e.g. ["cat", "dog"] ("a+b" when a side has several). */
export function sideNames(task: Task, classNames: readonly string[]): [string, string] {
  const side = (classes: number[]) => classes.map((c) => classNames[c] ?? String(c)).join("+");
  return [side(task.negative), side(task.positive)];
}

/** The mean of the trained z, and their spread: the RMS over tasks and coordinates of z - mean. */
export function trainedZStats(
  family: TaskFamily,
  table: Float32Array,
  zDim: number,
): { mean: Float32Array; spread: number } {
  const mean = new Float32Array(zDim);
  for (const t of family.train) {
    for (let k = 0; k < zDim; k++) mean[k]! += table[t * zDim + k]! / family.train.length;
  }
  let sum = 0;
  for (const t of family.train) {
    for (let k = 0; k < zDim; k++) sum += (table[t * zDim + k]! - mean[k]!) ** 2;
  }
  const spread = Math.sqrt(sum / Math.max(1, family.train.length * zDim));
  return { mean, spread: spread > 0 ? spread : 1 };
}

/** The new task's initial z from the trained table, for the single-z inits. */
export function initialZ(
  family: TaskFamily,
  state: RunState,
  table: Float32Array,
  options: { task: number; init: ZInitName; seed: number },
): Float32Array {
  const d = state.model.generator.zDim;
  switch (options.init) {
    case "zero":
      return new Float32Array(d);
    case "random":
      return initTaskVectors(1, d, { init: "gaussian", seed: options.seed });
    case "one_hot": {
      const z = new Float32Array(d);
      z[options.task % d] = 1;
      return z;
    }
    default:
      return trainedZStats(family, table, d).mean;
  }
}

/** A starting z and where it came from. */
interface Start {
  z: Float32Array;
  label: string;
}

/** The candidates a task's z starts from under `options.init`, the preferred one first. */
function startingZs(ctx: Context, task: number, ranking: RankedZ[]): Start[] {
  const { family, state, table, options } = ctx;
  const d = state.model.generator.zDim;
  const own = (t: number): Start => ({
    z: table.slice(t * d, (t + 1) * d),
    label: `z of '${family.tasks[t]!.name}'`,
  });
  const mean = {
    z: initialZ(family, state, table, { task, init: "mean", seed: 0 }),
    label: "mean z",
  };
  if (options.init === "best") return [own(ranking[0]!.task)];
  if (options.init === "population") {
    return [...ranking.slice(0, options.population).map((r) => own(r.task)), mean];
  }
  if (options.init === "mean") return [mean];
  return [{
    z: initialZ(family, state, table, { task, init: options.init, seed: options.seed }),
    label: `${options.init} z`,
  }];
}

/**
 * Scores every trained task's z on each new task's training images (up to 256 of them), all
 * trained networks at once: the loss ranks the z a new task can start from.
 */
async function rankTrainedZs(ctx: Context, data: TaskData[]): Promise<RankedZ[][]> {
  const { gpu, state, family } = ctx;
  const net = new SuperNet(gpu, state.model);
  restoreArenas(gpu, ctx.tensors, { generator: net.params, task: net.z }, ctx.path);
  try {
    const out: RankedZ[][] = [];
    for (const d of data) {
      const subset = sampleExamples(d.learn, 256, ctx.options.seed);
      const evaluator = new Evaluator(gpu, {
        dataset: ctx.dataset,
        family,
        tasks: family.train,
        forward: (tape, inputs) => net.forward(tape, inputs),
        batch: Math.min(64, subset.indices.length),
        tasksPerChunk: Math.min(16, family.train.length),
        store: ctx.trainStore,
        split: "train",
        examples: family.train.map(() => subset),
      });
      try {
        const scores = await evaluator.evaluate();
        out.push(
          scores.map((s) => ({ task: s.task, trainLoss: s.loss }))
            .sort((a, b) => a.trainLoss - b.trainLoss || a.task - b.task),
        );
      } finally {
        evaluator.destroy();
      }
    }
    return out;
  } finally {
    net.destroy();
  }
}

/** Up to `limit` of `examples`, a seeded choice kept in ascending image order. */
function sampleExamples(examples: Examples, limit: number, seed: number): Examples {
  if (examples.indices.length <= limit) return examples;
  const ks = [...examples.indices.keys()];
  new Random(mixSeed(seed, 0x5c0e)).shuffle(ks);
  const kept = ks.slice(0, limit).sort((a, b) => a - b);
  return {
    indices: Uint32Array.from(kept, (k) => examples.indices[k]!),
    labels: Float32Array.from(kept, (k) => examples.labels[k]!),
  };
}

/** One adaptation slot: which task (index into the call's tasks) and its starting z. */
interface SlotSpec {
  data: TaskData;
  start?: Start;
}

/** A model prepared over T slots: its forward and the groups a step trains. */
interface SlotModel {
  trainable: number;
  forward: ForwardBuilder;
  trainForward: ForwardBuilder;
  groups: ParamGroup[];
  regularize?: Dispatch[];
  destroy(): void;
}

/** How one slot ended. */
interface SlotOutcome {
  point: CurvePoint;
  stepsRun: number;
  selection?: number;
  curve: CurvePoint[];
}

/**
 * Trains T slots side by side and keeps, per slot, the point with the lowest validation loss, or
 * without a validation slice the last step (with its training loss, for tiny few-shot sets, to
 * rank the slots). Stops when every slot has gone `patience` evaluations without improving.
 * Leaves each slot's chosen values in its groups.
 */
async function runSlots(
  ctx: Context,
  method: Method,
  options: {
    slots: SlotSpec[];
    model: SlotModel;
    steps: number;
    patience: number;
    select: boolean;
  },
): Promise<SlotOutcome[]> {
  const { gpu, dataset, options: opts } = ctx;
  const { slots, model } = options;
  const T = slots.length;
  const virtual: TaskFamily = {
    name: "slots",
    tasks: slots.map((s) => ctx.family.tasks[s.data.task]!),
    heldOut: [],
    excluded: [],
    train: [],
  };
  const evalBatch = Math.max(16, Math.min(200, Math.floor(1600 / Math.min(T, 8))));
  // Full passes over each slot's own examples (test images, or the selection images).
  const passes = (store: ImageStore, split: "train" | "test", examples: Examples[]) =>
    new Evaluator(gpu, {
      dataset,
      family: virtual,
      tasks: [...slots.keys()],
      forward: model.forward,
      batch: evalBatch,
      tasksPerChunk: Math.min(T, 8),
      store,
      split,
      examples,
    });
  const test = passes(ctx.testStore, "test", slots.map((s) => s.data.test));
  const selectionSets = slots.map((s) =>
    s.data.validation ?? (s.data.learn.indices.length <= 400 ? s.data.learn : undefined)
  );
  const selecting = options.select && selectionSets.every((e) => e !== undefined);
  const selector = selecting
    ? passes(ctx.trainStore, "train", selectionSets as Examples[])
    : undefined;
  const stopEarly = selecting && options.patience > 0 && slots.every((s) => s.data.validation);
  const curves: CurvePoint[][] = slots.map(() => []);
  const best: { selection: number; step: number }[] = [];
  const chosen: Float32Array[][] = slots.map(() => []);
  const stale = new Array<number>(T).fill(0);
  let stepsRun = 0;
  const evaluate = async (step: number): Promise<void> => {
    const scores = opts.curves ? await test.evaluate() : undefined;
    const picks = selector ? await selector.evaluate() : undefined;
    let improved = false;
    slots.forEach((slot, t) => {
      const s = scores?.[t];
      if (s) curves[t]!.push({ step, accuracy: s.accuracy, loss: s.loss });
      const selection = picks ? picks[t]!.loss : -step;
      // Without a validation slice the training images only rank the slots at their last step:
      // their loss is lowest where z has overshot (few-shot, measured on kept-out images), so it
      // must not choose the stopping point.
      // Such a slot needs no snapshot: its values at the end are its last step's.
      if (!slot.data.validation) {
        best[t] = { selection, step };
        stale[t] = 0;
      } else if (best[t] === undefined || selection < best[t]!.selection) {
        best[t] = { selection, step };
        stale[t] = 0;
        improved = true;
      } else stale[t]!++;
    });
    const shown = scores ?? picks;
    if (shown) {
      ctx.onEvent?.({
        kind: "eval",
        method,
        step,
        steps: options.steps,
        split: scores ? "test" : "validation",
        accuracy: average(shown.map((s) => s.accuracy)),
        loss: average(shown.map((s) => s.loss)),
      });
    }
    if (improved && model.groups.length > 0) {
      const values = await Promise.all(model.groups.map((g) => read(gpu, g.params.flat)));
      best.forEach((b, t) => {
        if (b.step === step && slots[t]!.data.validation) chosen[t] = values;
      });
    }
  };
  try {
    await evaluate(0);
    if (model.groups.length > 0 && options.steps > 0) {
      const sampler = new SlotSampler(gpu, dataset, {
        slots: slots.map((s, t): Slot => ({
          task: virtual.tasks[t]!,
          examples: s.data.learn,
          seed: mixSeed(opts.seed, s.data.task),
        })),
        batch: Math.min(opts.batch, Math.min(...slots.map((s) => s.data.learn.indices.length))),
        store: ctx.trainStore,
        balanced: true,
      });
      const program = new StepProgram(gpu, {
        source: sampler,
        forward: model.trainForward,
        groups: model.groups,
        gradScale: T,
        regularize: model.regularize,
      });
      try {
        // Shape classes new to this adapter are timed once, before the first step, as in training.
        await tunePending(gpu);
        for (let step = 1; step <= options.steps; step++) {
          program.run(step);
          stepsRun = step;
          if (step % opts.evalEvery !== 0 && step !== options.steps) continue;
          await evaluate(step);
          if (stopEarly && stale.every((s) => s >= options.patience)) break;
        }
      } finally {
        program.destroy();
        sampler.destroy();
      }
      await restoreChosen(gpu, model.groups, chosen, T);
    }
    // The test images score each slot once more, at its chosen point.
    const final = await test.evaluate();
    return slots.map((_, t) => ({
      point: { step: best[t]!.step, accuracy: final[t]!.accuracy, loss: final[t]!.loss },
      stepsRun,
      selection: selecting ? best[t]!.selection : undefined,
      curve: curves[t]!,
    }));
  } finally {
    test.destroy();
    selector?.destroy();
  }
}

/**
 * Writes back each slot's chosen values: for an arena whose tensors all lead with the slot
 * dimension T, slot t's rows come from its own snapshot; a slot without one (no validation
 * slice) keeps its current values, its last step's.
 */
async function restoreChosen(gpu: Gpu, groups: ParamGroup[], chosen: Float32Array[][], T: number) {
  for (const [i, g] of groups.entries()) {
    const own = chosen.map((c) => c[i]);
    if (own.every((c) => c === undefined)) continue;
    if (T === 1) {
      write(gpu, g.params.flat, own[0]!);
      continue;
    }
    const merged = own.every((c) => c !== undefined)
      ? own[0]!.slice()
      : await read(gpu, g.params.flat);
    for (const { tensor } of g.params.entries) {
      if (tensor.shape[0] !== T) {
        throw new RangeError(`Slot values need tensors [${T}, ...], got [${tensor.shape}]`);
      }
      const per = tensor.size / T;
      const base = tensor.byteOffset / 4 - g.params.flat.byteOffset / 4;
      own.forEach((values, t) => {
        const from = base + t * per;
        if (values) merged.set(values.subarray(from, from + per), from);
      });
    }
    write(gpu, g.params.flat, merged);
  }
}

/** One method's result on one task, and (z methods) the winning z. */
interface TaskOutcome {
  result: MethodResult;
  z?: Float32Array;
}

/** True when a network predicts one class for every test image: accuracy at a class share, loss >= ln 2. */
export function isCollapsed(point: CurvePoint, test: Examples): boolean {
  const positive = test.labels.reduce((a, b) => a + b, 0) / Math.max(1, test.labels.length);
  const atShare = Math.abs(point.accuracy - positive) < 0.005 ||
    Math.abs(point.accuracy - (1 - positive)) < 0.005;
  return atShare && point.loss >= Math.LN2 - 0.005;
}

/** Runs one method on every task (batched where the method allows) and picks each winner. */
async function runMethod(
  ctx: Context,
  method: Method,
  options: { data: TaskData[]; starts: Start[][] },
): Promise<TaskOutcome[]> {
  const { data, starts } = options;
  const opts = ctx.options;
  const started = performance.now();
  const d = ctx.state.model.generator.zDim;
  const stats = trainedZStats(ctx.family, ctx.table, d);
  const zLr = opts.lr > 0 ? opts.lr : 0.1 * stats.spread;
  const finish = (
    outcomes: {
      slot: SlotSpec;
      outcome: SlotOutcome;
      lr: number;
      trainable: number;
      z?: Float32Array;
    }[],
  ): TaskOutcome[] =>
    data.map((td) => {
      // The task's winner among its slots (starting points, learning rates) by selection loss.
      const mine = outcomes.filter((o) => o.slot.data === td);
      const win = mine.reduce((a, b) =>
        (b.outcome.selection ?? 0) < (a.outcome.selection ?? 0) ? b : a
      );
      return {
        result: {
          method,
          trainable: win.trainable,
          accuracy: win.outcome.point.accuracy,
          loss: win.outcome.point.loss,
          steps: win.outcome.point.step,
          stepsRun: win.outcome.stepsRun,
          seconds: (performance.now() - started) / 1000 / data.length,
          lr: win.lr,
          ...(win.slot.start && method !== "full" ? { start: win.slot.start.label } : {}),
          ...(win.outcome.selection !== undefined && td.validation
            ? { validationLoss: win.outcome.selection }
            : {}),
          collapsed: isCollapsed(win.outcome.point, td.test),
          curve: win.outcome.curve,
        },
        z: win.z,
      };
    });

  if (method === "zero-shot" || method === "z" || method === "z-seed" || method === "z-untrained") {
    const seedRecipe = method === "z-seed";
    const slots: SlotSpec[] = data.flatMap((td, i): SlotSpec[] => {
      if (method === "z") return starts[i]!.map((start) => ({ data: td, start }));
      return [{ data: td, start: undefined }];
    });
    const untrained = method === "z-untrained";
    const net = untrained
      ? SuperNet.create(ctx.gpu, {
        ...ctx.state.model,
        tasks: slots.length,
        seed: ctx.state.model.seed + 1,
      })
      : new SuperNet(ctx.gpu, { ...ctx.state.model, tasks: slots.length });
    if (!untrained) restoreArenas(ctx.gpu, ctx.tensors, { generator: net.params }, ctx.path);
    // z-untrained starts from the mean of its own initial table, like the seed's mean z.
    const own = untrained
      ? initTaskVectors(ctx.family.tasks.length, d, {
        init: ctx.state.model.zInit,
        seed: ctx.state.model.seed + 1,
      })
      : ctx.table;
    const ownStats = untrained ? trainedZStats(ctx.family, own, d) : stats;
    const table = new Float32Array(slots.length * d);
    slots.forEach((s, t) => table.set(s.start?.z ?? ownStats.mean, t * d));
    write(ctx.gpu, net.z.get("z"), table);
    const lr = seedRecipe ? (SEED_ADAPT_PRESET.lr ?? 0.01) : zLr * ownStats.spread / stats.spread;
    const training = method !== "zero-shot";
    const group = training
      ? new ParamGroup(ctx.gpu, net.z, {
        optimizer: optimizerConfig(opts.optimizer, lr),
        schedule: { lr, kind: "constant", warmup: 0, steps: opts.zSteps ?? opts.steps },
      })
      : undefined;
    const learning = average(data.map((td) => td.learn.indices.length));
    const prior = seedRecipe
      ? 0
      : opts.prior * (opts.priorImages ? opts.priorImages / learning : 1);
    const steps = training ? (seedRecipe ? opts.steps : opts.zSteps ?? opts.steps) : 0;
    const centre = group && prior > 0
      ? tensorFrom(ctx.gpu, [slots.length, d], table.map((_, k) => ownStats.mean[k % d]!))
      : undefined;
    const c = prior / (d * ownStats.spread ** 2);
    const model: SlotModel = {
      trainable: training ? d : 0,
      forward: (tape, inputs) => net.forward(tape, inputs),
      trainForward: (tape, inputs) => net.forward(tape, { ...inputs, grads: { z: group?.grads } }),
      groups: group ? [group] : [],
      regularize: centre && group
        ? axpby(ctx.gpu, net.z.get("z"), group.grads.get("z"), {
          b: centre,
          alpha: c,
          beta: -c,
          accumulate: true,
        })
        : undefined,
      destroy: () => {
        group?.destroy();
        centre?.destroy();
        net.destroy();
      },
    };
    ctx.onEvent?.({ kind: "method", method, trainable: model.trainable, slots: slots.length, lr });
    try {
      const outcomes = await runSlots(ctx, method, {
        slots,
        model,
        steps,
        patience: seedRecipe ? 0 : opts.patience,
        select: !seedRecipe,
      });
      const zs = training ? await read(ctx.gpu, net.z.get("z")) : table;
      return finish(outcomes.map((outcome, t) => ({
        slot: slots[t]!,
        outcome,
        lr,
        trainable: model.trainable,
        z: zs.slice(t * d, (t + 1) * d),
      })));
    } finally {
      model.destroy();
    }
  }

  // Baselines: one slot per task (finetune: one task at a time, as the generator is shared),
  // each learning rate of the grid in turn; the validation slice picks the rate per task.
  const base = method === "full" ? opts.fullLr : method === "head" ? opts.headLr : opts.finetuneLr;
  const canSelect = data.every((td) => td.validation);
  const grid = opts.lrGrid && canSelect ? [base / 3, base, base * 3] : [base];
  const groupsOfTasks = method === "finetune" ? data.map((td) => [td]) : [data];
  const outcomes: { slot: SlotSpec; outcome: SlotOutcome; lr: number; trainable: number }[] = [];
  const forgetting = new Map<TaskData, MethodResult["forgetting"]>();
  for (const lr of grid) {
    for (const tasks of groupsOfTasks) {
      const slots = tasks.map((td) => ({ data: td, start: starts[data.indexOf(td)]![0] }));
      const model = await baselineModel(ctx, method, { slots, lr });
      ctx.onEvent?.({
        kind: "method",
        method,
        trainable: model.trainable,
        slots: slots.length,
        lr,
      });
      try {
        const res = await runSlots(ctx, method, {
          slots,
          model,
          steps: opts.steps,
          patience: opts.patience,
          select: true,
        });
        res.forEach((outcome, t) =>
          outcomes.push({ slot: slots[t]!, outcome, lr, trainable: model.trainable })
        );
        if (method === "finetune" && opts.forgetting) {
          const key = tasks[0]!;
          const measured = await measureForgetting(ctx, model);
          const prev = outcomes.filter((o) => o.slot.data === key);
          // Keep the forgetting of the learning rate this task will pick.
          const latest = prev[prev.length - 1]!;
          const bestSoFar = prev.reduce((a, b) =>
            (b.outcome.selection ?? 0) < (a.outcome.selection ?? 0) ? b : a
          );
          if (bestSoFar === latest) forgetting.set(key, measured);
        }
      } finally {
        model.destroy();
      }
    }
  }
  return finish(outcomes).map((o, i) => {
    const f = forgetting.get(data[i]!);
    return f ? { ...o, result: { ...o.result, forgetting: f } } : o;
  });
}

/** `full`, `head` or `finetune` over the given slots at learning rate `lr`. */
async function baselineModel(
  ctx: Context,
  method: Method,
  options: { slots: SlotSpec[]; lr: number },
): Promise<SlotModel & { generator?: SuperNet }> {
  const { gpu, state, options: opts } = ctx;
  const { slots, lr } = options;
  const schedule = { lr, kind: "constant" as const, warmup: 0, steps: opts.steps };
  const optimizer = optimizerConfig(opts.optimizer, lr);
  if (method === "finetune") {
    const net = new SuperNet(gpu, { ...state.model, tasks: 1 });
    restoreArenas(gpu, ctx.tensors, { generator: net.params }, ctx.path);
    write(gpu, net.z.get("z"), slots[0]!.start!.z);
    const z = new ParamGroup(gpu, net.z, { optimizer, schedule });
    const params = new ParamGroup(gpu, net.params, { optimizer, schedule });
    return {
      trainable: net.parameterCount + state.model.generator.zDim,
      forward: (tape, inputs) => net.forward(tape, inputs),
      trainForward: (tape, inputs) =>
        net.forward(tape, { ...inputs, grads: { z: z.grads, params: params.grads } }),
      groups: [z, params],
      generator: net,
      destroy: () => {
        z.destroy();
        params.destroy();
        net.destroy();
      },
    };
  }
  const spec = {
    ...state.model,
    seed: opts.seed,
    seeds: slots.map((s) => mixSeed(opts.seed, s.data.task)),
    tasks: slots.length,
  };
  let frozen: Set<string> | undefined;
  if (method === "head") {
    const generator = new SuperNet(gpu, { ...state.model, tasks: 1 });
    restoreArenas(gpu, ctx.tensors, { generator: generator.params }, ctx.path);
    const last = generator.spec.layers.filter((l) => l.kind === "linear").at(-1)!;
    frozen = new Set(generator.weights.map((w) => w.name));
    frozen.delete(`${last.name}.weight`);
    frozen.delete(`${last.name}.bias`);
    const generated: Map<string, Float32Array>[] = [];
    for (const s of slots) generated.push(await generateWeights(gpu, generator, s.start!.z));
    generator.destroy();
    const net = new PlainNet(gpu, { ...spec, frozen });
    net.assign(
      new Map(
        [...generated[0]!.keys()].map((name) => {
          const parts = generated.map((g) => g.get(name)!);
          const all = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
          parts.forEach((p, t) => all.set(p, t * p.length));
          return [name, all];
        }),
      ),
    );
    return plainModel(gpu, net, { optimizer, schedule, perSlot: slots.length });
  }
  return plainModel(gpu, new PlainNet(gpu, spec), { optimizer, schedule, perSlot: slots.length });
}

function plainModel(
  gpu: Gpu,
  net: PlainNet,
  options: {
    optimizer: ReturnType<typeof optimizerConfig>;
    schedule: ParamGroup["schedule"];
    perSlot: number;
  },
): SlotModel {
  const group = new ParamGroup(gpu, net.params, options);
  const trainable = net.params.entries.reduce((n, e) => n + e.tensor.size, 0) / options.perSlot;
  return {
    trainable: net.fixed.entries.length > 0 ? trainable : weightCount(net.spec),
    forward: (tape, inputs) => net.forward(tape, inputs),
    trainForward: (tape, inputs) => net.forward(tape, { ...inputs, grads: group.grads }),
    groups: [group],
    destroy: () => {
      group.destroy();
      net.destroy();
    },
  };
}

/**
 * Mean test accuracy of up to 8 training tasks (their own trained z) through the original
 * generator and through the fine-tuned one: the points `finetune` costs the tasks already
 * learned.
 */
async function measureForgetting(
  ctx: Context,
  model: SlotModel & { generator?: SuperNet },
): Promise<MethodResult["forgetting"]> {
  const { gpu, state, family } = ctx;
  const tasks = spread(family.train, 8);
  const net = new SuperNet(gpu, state.model);
  restoreArenas(gpu, ctx.tensors, { generator: net.params, task: net.z }, ctx.path);
  const evaluator = new Evaluator(gpu, {
    dataset: ctx.dataset,
    family,
    tasks,
    forward: (tape, inputs) => net.forward(tape, inputs),
    batch: 100,
    tasksPerChunk: tasks.length,
    store: ctx.testStore,
  });
  try {
    const before = average((await evaluator.evaluate()).map((s) => s.accuracy));
    write(gpu, net.params.flat, await read(gpu, model.generator!.params.flat));
    const after = average((await evaluator.evaluate()).map((s) => s.accuracy));
    return { tasks: tasks.length, before, after };
  } finally {
    evaluator.destroy();
    net.destroy();
  }
}

function average(xs: readonly number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}
