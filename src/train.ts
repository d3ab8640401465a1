/**
 * `train`: the generator and task vectors on a task family, every step T tasks x B images through
 * the batched model, with evaluation on the test split, checkpoints and resume.
 *
 * @module
 */
import { join } from "node:path";
import {
  arenaTensors,
  CHECKPOINT_FORMAT,
  CheckpointError,
  loadCheckpoint,
  restoreArenas,
  saveCheckpoint,
} from "./checkpoint.ts";
import { loadDataset } from "./data/dataset.ts";
import { classCounts, type Dataset } from "./data/split.ts";
import { ImageStore, Sampler } from "./data/sampler.ts";
import { makeFamily, type TaskFamily } from "./data/tasks.ts";
import type { Gpu } from "./gpu/device.ts";
import { sync } from "./gpu/kernel.ts";
import { type Arena, read, write } from "./gpu/tensor.ts";
import { tunePending } from "./gpu/tune.ts";
import { Evaluator, mean, StepProgram, type TaskScore } from "./engine.ts";
import type { GeneratorConfig } from "./model/generator.ts";
import { SuperNet, type SuperNetConfig, superNetConfig, type ZInit } from "./model/supernet.ts";
import { MetaStep } from "./meta.ts";
import { optimizerConfig, OPTIMIZERS, ParamGroup, SCHEDULES } from "./optim.ts";
import type { NamedTensor } from "./safetensors.ts";

/** Options of `train` (the CLI maps its flags 1:1 onto these). */
export interface TrainOptions {
  /** mnist (embedded), cifar10 or cifar100. */
  dataset: string;
  /** Folder of dataset files (default: SUPERNET_DATA, else data/). */
  dataDir?: string;
  /** Check dataset files against their published sizes and md5 sums. */
  verify: boolean;
  /** Download the official archive when the dataset is missing (verified by md5). */
  download?: boolean;
  /** one_vs_anchor (seed Experiment 1), pairs_reversed (Experiment 2) or all_pairs. */
  family: string;
  /** Hold out the last K tasks (default: the family's own held-out task). */
  holdoutLast?: number;
  /** Hold out these task indices instead. */
  holdout?: number[];
  /** Target network (seed_cnn, mlp, wide_cnn). */
  target: string;
  /** Length of z. */
  zDim: number;
  /** Generator hidden layer widths (none in the seed). */
  hidden: number[];
  /** tanh (bounded, the seed's) or linear generator output. */
  output: "tanh" | "linear";
  /** Generated weight = scale * tanh(...). */
  outputScale: number;
  /** Per-head output scaling: none (the seed's) or fan_in (see GeneratorConfig). */
  headScale?: "none" | "fan_in";
  /** one_hot (default when tasks <= z size) or gaussian initial z. */
  zInit?: ZInit;
  /** Training steps. */
  steps: number;
  /** T: tasks per step (default: 8, or every training task when the family has fewer). */
  tasksPerStep?: number;
  /** B: images per task per step. */
  batch: number;
  /** Balanced batches (half positive). */
  balanced: boolean;
  /** Random crop (4 pixels) and flip. */
  augment: boolean;
  /**
   * Fraction of the training images kept out of training (a fixed set per dataset, see
   * `isReserved`): adaptation draws a held-out task's validation slice from them, so its choices
   * never score images the generator was trained on. 0 trains on every image (the seed's way).
   */
  reserve: number;
  /**
   * Tasks kept out of training, like held-out ones, to choose the adaptation recipe on (see
   * src/adapt/recipe.ts). Default ({@link defaultValidationTasks}): none where every class has
   * at least 100 training images, else up to 10.
   */
  validationTasks?: number;
  /** adam, rmsprop (the seed's) or sgd. */
  optimizer: typeof OPTIMIZERS[number];
  /** Peak learning rate of the generator. */
  lr: number;
  /** Learning rate of the task vectors (default: lr). */
  zLr?: number;
  /** constant or cosine. */
  schedule: typeof SCHEDULES[number];
  /** Linear warm-up steps. */
  warmup: number;
  /** Clip the gradient's global norm (0: off). */
  clip: number;
  /** Evaluate on the test split every N steps (0: only at the end). */
  evalEvery: number;
  /** Evaluate at most this many training tasks (0: all), a fixed spread over them. */
  evalTasks: number;
  /** Read the loss back every N steps. */
  logEvery: number;
  /** Save a checkpoint every N steps (0: only at the end). */
  saveEvery: number;
  /** Seed of initialisation and sampling. */
  seed: number;
  /** Run folder. */
  out: string;
  /** Continue the run in `out` from its checkpoint. */
  resume: boolean;
  /** Meta-train for adaptability (first-order; see src/meta.ts) on every `metaEvery`-th step. */
  meta: boolean;
  /** Every N-th step is a meta step. */
  metaEvery: number;
  /** Inner z steps of a meta step. */
  metaInnerSteps: number;
  /** Learning rate of the inner z steps. */
  metaInnerLr: number;
}

/** Tasks per step when not given (fewer when the family has fewer training tasks). */
export const DEFAULT_TASKS_PER_STEP = 8;

/** Defaults: the seed's Experiment 1 training phase on the embedded MNIST, sized for a CPU. */
export const TRAIN_DEFAULTS: TrainOptions = {
  dataset: "mnist",
  verify: true,
  family: "one_vs_anchor",
  target: "seed_cnn",
  zDim: 100,
  hidden: [],
  output: "tanh",
  outputScale: 1,
  steps: 300,
  batch: 32,
  balanced: true,
  augment: false,
  reserve: 0.1,
  optimizer: "adam",
  lr: 0.001,
  schedule: "constant",
  warmup: 0,
  clip: 0,
  evalEvery: 100,
  evalTasks: 0,
  logEvery: 10,
  saveEvery: 0,
  seed: 1,
  out: "runs/latest",
  resume: false,
  meta: false,
  metaEvery: 2,
  metaInnerSteps: 3,
  metaInnerLr: 0.05,
};

/** The seed's generator and training (`--preset seed`): no hidden layer, tanh, no meta-training. */
export const SEED_TRAIN_PRESET: Partial<TrainOptions> = {
  zDim: 100,
  hidden: [],
  output: "tanh",
  outputScale: 1,
  headScale: "none",
  meta: false,
  reserve: 0,
};

/** Progress reported while training. */
export type TrainEvent =
  | { kind: "start"; tasks: number; trainTasks: number; parameters: number; step: number }
  | {
    kind: "step";
    step: number;
    steps: number;
    loss: number;
    accuracy: number;
    imagesPerSecond: number;
    secondsLeft: number;
  }
  | { kind: "eval"; step: number; accuracy: number; loss: number }
  | { kind: "checkpoint"; step: number; dir: string };

/** What a finished (or interrupted) run reports. */
export interface TrainResult {
  /** Steps completed. */
  step: number;
  /** Last evaluation on the test split of the training tasks. */
  scores: TaskScore[];
  /** Wall time in seconds. */
  seconds: number;
  /** True when stopped by the signal before the last step. */
  interrupted: boolean;
}

/** Training stopped because the loss became NaN or infinite. */
export class NonFiniteLossError extends Error {
  /** Names the step and where the last good checkpoint is. */
  constructor(step: number, saved: { dir: string; step: number } | undefined) {
    super(
      `Loss became non-finite at step ${step}; ` +
        (saved
          ? `the last good checkpoint (step ${saved.step}) in ${saved.dir} is kept. `
          : `no checkpoint was saved yet (--save-every sets how often). `) +
        `Lower --lr or set --clip`,
    );
    this.name = "NonFiniteLossError";
  }
}

/** What a run folder records about the task family and dataset, besides the options. */
export interface RunState {
  /**
   * Dataset identity (name and source, e.g. verified files), and the per-channel mean and std on
   * [0, 1] that inputs were normalised with (absent in runs written before they were recorded).
   */
  dataset: { name: string; source: string; classes: string[]; mean?: number[]; std?: number[] };
  /** The family with its tasks, held-out and training indices. */
  family: TaskFamily;
  /** The SuperNet's architecture and init. */
  model: SuperNetConfig;
}

/** The SuperNet config that `options` describe, for a family of `tasks` tasks. */
export function modelConfig(
  options: TrainOptions,
  dataset: Dataset,
  tasks: number,
): SuperNetConfig {
  const generator: GeneratorConfig = {
    zDim: options.zDim,
    hidden: options.hidden,
    hiddenActivation: "leaky_relu",
    output: options.output,
    outputScale: options.outputScale,
    ...(options.headScale === "fan_in" ? { headScale: "fan_in" as const } : {}),
  };
  return superNetConfig({
    target: options.target,
    inputShape: dataset.shape,
    tasks,
    generator,
    seed: options.seed,
    ...(options.zInit ? { zInit: options.zInit } : {}),
  });
}

/** Files of a training checkpoint. */
export const MODEL_FILE = "model.safetensors";
/** Optimiser state file of a training checkpoint. */
export const OPTIMIZER_FILE = "optimizer.safetensors";

/** Up to `limit` items spread evenly over `items` (all when limit is 0 or large enough). */
export function spread<T>(items: readonly T[], limit: number): T[] {
  if (limit <= 0 || limit >= items.length) return [...items];
  return Array.from({ length: limit }, (_, i) => items[Math.floor((i * items.length) / limit)]!);
}

/** The dataset and task family that training options name. */
export async function loadTasks(
  options: Pick<
    TrainOptions,
    | "dataset"
    | "dataDir"
    | "verify"
    | "download"
    | "family"
    | "holdout"
    | "holdoutLast"
    | "validationTasks"
  >,
): Promise<{ dataset: Dataset; family: TaskFamily }> {
  const dataset = await loadDataset(options.dataset, {
    dataDir: options.dataDir,
    verify: options.verify,
    download: options.download,
  });
  const holdout = { holdoutLast: options.holdoutLast, holdout: options.holdout };
  const validationTasks = options.validationTasks ??
    defaultValidationTasks(dataset, makeFamily(options.family, dataset.classNames, holdout));
  const family = makeFamily(options.family, dataset.classNames, { ...holdout, validationTasks });
  return { dataset, family };
}

/** Fewest training images per class for which a task's own validation slice is trusted. */
export const FEW_IMAGES = 100;

/**
 * Validation tasks a family keeps out of training by default: where some class has fewer than
 * {@link FEW_IMAGES} training images, a task's own images are too few to choose its adaptation
 * on, so the recipe is chosen on validation tasks: a fifth of the tasks left for training, at
 * most 10 (none when that is under 2). Otherwise 0: the task's validation slice chooses.
 */
export function defaultValidationTasks(dataset: Dataset, family: TaskFamily): number {
  const fewest = Math.min(...classCounts(dataset.train.labels, dataset.classNames.length));
  if (fewest >= FEW_IMAGES) return 0;
  const count = Math.min(10, Math.floor(family.train.length / 5));
  return count >= 2 ? count : 0;
}

/** Runs (or resumes) training; `onEvent` receives progress; `signal` stops it cleanly. */
export async function train(
  gpu: Gpu,
  given: TrainOptions,
  hooks: { onEvent?: (e: TrainEvent) => void; signal?: AbortSignal } = {},
): Promise<TrainResult> {
  const started = performance.now();
  const { dataset, family } = await loadTasks(given);
  // The resolved T is what the run folder records.
  const options = {
    ...given,
    tasksPerStep: given.tasksPerStep ?? Math.min(DEFAULT_TASKS_PER_STEP, family.train.length),
    validationTasks: family.validation?.length ?? 0,
  };
  if (!((options.reserve ?? 0) >= 0 && (options.reserve ?? 0) < 0.5)) {
    throw new RangeError(`--reserve ${options.reserve} must be in [0, 0.5)`);
  }
  if (options.tasksPerStep > family.train.length) {
    throw new RangeError(
      `--tasks-per-step ${options.tasksPerStep} is more than the ${family.train.length} training ` +
        `tasks of ${family.name} on ${dataset.name}; use at most ${family.train.length}`,
    );
  }
  const config = modelConfig(options, dataset, family.tasks.length);
  const net = SuperNet.create(gpu, config);
  const schedule = {
    lr: options.lr,
    kind: options.schedule,
    warmup: options.warmup,
    steps: options.steps,
  };
  const groups = {
    params: new ParamGroup(gpu, net.params, {
      optimizer: optimizerConfig(options.optimizer, options.lr),
      clip: options.clip,
      schedule,
    }),
    z: new ParamGroup(gpu, net.z, {
      optimizer: optimizerConfig(options.optimizer, options.zLr ?? options.lr),
      clip: options.clip,
      schedule: { ...schedule, lr: options.zLr ?? options.lr },
    }),
  };
  const trainStore = new ImageStore(gpu, dataset.train, { shape: dataset.shape });
  const testStore = new ImageStore(gpu, dataset.test, { shape: dataset.shape });
  const sampler = new Sampler(gpu, dataset, {
    family,
    tasksPerStep: options.tasksPerStep,
    batch: options.batch,
    seed: options.seed,
    balanced: options.balanced,
    augment: options.augment ? { pad: 4, flip: true } : undefined,
    store: trainStore,
    reserve: options.reserve,
  });
  const program = new StepProgram(gpu, {
    source: sampler,
    forward: (tape, inputs) =>
      net.forward(tape, { ...inputs, grads: { params: groups.params.grads, z: groups.z.grads } }),
    groups: [groups.params, groups.z],
  });
  const meta = options.meta
    ? new MetaStep(gpu, {
      net,
      dataset,
      family,
      store: trainStore,
      tasksPerStep: sampler.x.shape[0]!,
      batch: options.batch,
      seed: options.seed,
      reserve: options.reserve,
      params: groups.params,
      meta: { innerSteps: options.metaInnerSteps, innerLr: options.metaInnerLr },
    })
    : undefined;
  const evaluator = new Evaluator(gpu, {
    dataset,
    family,
    tasks: spread(family.train, options.evalTasks),
    forward: (tape, inputs) => net.forward(tape, inputs),
    batch: 100,
    tasksPerChunk: Math.min(16, family.train.length),
    store: testStore,
  });
  // Kernels of shape classes new to this adapter are timed once, before the first step, so the
  // whole run uses one set of kernels (src/gpu/tune.ts).
  await tunePending(gpu);
  const state: RunState = {
    dataset: {
      name: dataset.name,
      source: dataset.source,
      classes: dataset.classNames,
      mean: dataset.mean,
      std: dataset.std,
    },
    family,
    model: config,
  };
  let step = 0;
  // Wall time of earlier sessions of this run, so a checkpoint records the whole run's time.
  let earlierSeconds = 0;
  if (options.resume) {
    ({ step, seconds: earlierSeconds } = await restore(gpu, options.out, { net, groups, config }));
  }
  await Deno.mkdir(options.out, { recursive: true });
  const metricsPath = join(options.out, "metrics.jsonl");
  if (!options.resume) await Deno.remove(metricsPath).catch(() => {});
  const metricsFile = await Deno.open(metricsPath, { create: true, append: true });
  const encoder = new TextEncoder();
  const emit = (e: TrainEvent): void => {
    if (e.kind === "step" || e.kind === "eval") {
      metricsFile.writeSync(encoder.encode(JSON.stringify({ ...e, time: Date.now() }) + "\n"));
    }
    hooks.onEvent?.(e);
  };
  emit({
    kind: "start",
    tasks: family.tasks.length,
    trainTasks: family.train.length,
    parameters: net.parameterCount,
    step,
  });
  let saved = options.resume ? step : 0;
  const save = async (): Promise<void> => {
    const seconds = earlierSeconds + (performance.now() - started) / 1000;
    const written = await saveRun(gpu, options, { step, seconds, state, net, groups });
    if (!written) {
      throw new NonFiniteLossError(step, saved ? { dir: options.out, step: saved } : undefined);
    }
    saved = step;
    emit({ kind: "checkpoint", step, dir: options.out });
  };
  let scores: TaskScore[] = [];
  const imagesPerStep = sampler.x.shape[0]! * options.batch;
  let windowStart = performance.now();
  let windowSteps = 0;
  let interrupted = false;
  try {
    while (step < options.steps) {
      if (hooks.signal?.aborted) {
        interrupted = true;
        break;
      }
      step++;
      const metaStep = meta !== undefined && step % options.metaEvery === 0;
      if (metaStep) meta.run(step);
      else program.run(step);
      windowSteps++;
      if (step % options.logEvery === 0 || step === options.steps) {
        const m = await (metaStep ? meta.outer : program).readMetrics();
        if (!Number.isFinite(m.loss)) {
          throw new NonFiniteLossError(step, saved ? { dir: options.out, step: saved } : undefined);
        }
        const seconds = (performance.now() - windowStart) / 1000;
        const correct = m.correct.reduce((a, b) => a + b, 0);
        const valid = m.valid.reduce((a, b) => a + b, 0);
        emit({
          kind: "step",
          step,
          steps: options.steps,
          loss: m.loss,
          accuracy: valid > 0 ? correct / valid : 0,
          imagesPerSecond: (windowSteps * imagesPerStep) / seconds,
          secondsLeft: ((options.steps - step) * seconds) / windowSteps,
        });
        windowStart = performance.now();
        windowSteps = 0;
      }
      const evalNow = options.evalEvery > 0 && step % options.evalEvery === 0;
      if (evalNow || step === options.steps) {
        scores = await evaluator.evaluate();
        emit({
          kind: "eval",
          step,
          accuracy: mean(scores.map((s) => s.accuracy)),
          loss: mean(scores.map((s) => s.loss)),
        });
        windowStart = performance.now();
        windowSteps = 0;
      }
      if (options.saveEvery > 0 && step % options.saveEvery === 0) await save();
    }
    await sync(gpu);
    await save();
  } finally {
    metricsFile.close();
    program.destroy();
    meta?.destroy();
    evaluator.destroy();
    sampler.destroy();
    trainStore.destroy();
    testStore.destroy();
    groups.params.destroy();
    groups.z.destroy();
    net.destroy();
  }
  return { step, scores, seconds: (performance.now() - started) / 1000, interrupted };
}

/**
 * Writes the run's checkpoint (model, optimiser state, checkpoint.json) and options.json; returns
 * false, writing nothing, when a parameter is not finite.
 */
async function saveRun(
  gpu: Gpu,
  options: TrainOptions,
  run: {
    step: number;
    seconds: number;
    state: RunState;
    net: SuperNet;
    groups: Record<string, ParamGroup>;
  },
): Promise<boolean> {
  // A step whose update made a parameter non-finite must not replace the last good checkpoint.
  const model = await arenaTensors(gpu, modelArenas(run.net));
  for (const t of model.values()) if (!t.data.every(Number.isFinite)) return false;
  const optimizerState = new Map<string, NamedTensor>();
  for (const [groupName, group] of Object.entries(run.groups)) {
    for (const { name, tensor } of group.optimizer.state) {
      optimizerState.set(`${groupName}.${name}`, {
        shape: [...tensor.shape],
        data: await read(gpu, tensor),
      });
    }
  }
  await saveCheckpoint(options.out, {
    format: CHECKPOINT_FORMAT,
    step: run.step,
    options,
    seconds: run.seconds,
    state: run.state as unknown as Record<string, unknown>,
    versions: { deno: Deno.version.deno, supernet: "0.1.0" },
  }, {
    [MODEL_FILE]: model,
    [OPTIMIZER_FILE]: optimizerState,
  });
  await Deno.writeTextFile(
    join(options.out, "options.json"),
    JSON.stringify(options, null, 2) + "\n",
  );
  return true;
}

/**
 * Restores model and optimiser state from `dir`; returns the step to continue from and the wall
 * time the run had taken up to it.
 */
async function restore(
  gpu: Gpu,
  dir: string,
  run: { net: SuperNet; groups: Record<string, ParamGroup>; config: SuperNetConfig },
): Promise<{ step: number; seconds: number }> {
  const { info, tensors } = await loadCheckpoint<TrainOptions>(dir, [MODEL_FILE, OPTIMIZER_FILE]);
  restoreArenas(gpu, tensors[MODEL_FILE]!, modelArenas(run.net), join(dir, MODEL_FILE));
  const saved = tensors[OPTIMIZER_FILE]!;
  for (const [groupName, group] of Object.entries(run.groups)) {
    for (const { name, tensor } of group.optimizer.state) {
      const found = saved.get(`${groupName}.${name}`);
      if (!found || found.data.length !== tensor.size) {
        throw new CheckpointError(
          `${
            join(dir, OPTIMIZER_FILE)
          } lacks state '${groupName}.${name}' of ${tensor.size} values; resume with the same --optimizer`,
        );
      }
      write(gpu, tensor, found.data as Float32Array);
    }
  }
  return { step: info.step, seconds: info.seconds ?? 0 };
}

/** Arenas of a SuperNet by checkpoint prefix. */
export function modelArenas(net: SuperNet): Record<string, Arena> {
  return { generator: net.params, task: net.z };
}
