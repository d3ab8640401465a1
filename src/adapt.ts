/**
 * `adapt`: learn a held-out task with the trained generator frozen, by optimising only its task
 * vector z, and compare in the same harness (same images, same step budget, same evaluation)
 * with training a whole network from scratch (`full`), fine-tuning generator and z (`finetune`),
 * and the mean z without training (`zero-shot`).
 *
 * @module
 */
import { join } from "node:path";
import { loadCheckpoint, restoreArenas } from "./checkpoint.ts";
import { type Dataset, loadDataset, type Split } from "./data/dataset.ts";
import { fewShot, ImageStore, Sampler } from "./data/sampler.ts";
import { type Examples, type Task, taskExamples, type TaskFamily } from "./data/tasks.ts";
import type { Gpu } from "./gpu/device.ts";
import { read, Tensor, write } from "./gpu/tensor.ts";
import { Evaluator, type ForwardBuilder, StepProgram } from "./engine.ts";
import { initTaskVectors, PlainNet, SuperNet } from "./model/supernet.ts";
import { weightCount } from "./model/target.ts";
import { optimizerConfig, OPTIMIZERS, ParamGroup } from "./optim.ts";
import { Random } from "./random.ts";
import { type NamedTensor, saveSafetensors, writeAtomic } from "./safetensors.ts";
import { MODEL_FILE, modelArenas, type RunState, type TrainOptions } from "./train.ts";

/**
 * Ways to learn the held-out task: `zero-shot` (mean z, no training), `z` (z only, generator
 * frozen), `full` (the whole target network from scratch), `finetune` (generator and z), and
 * `z-untrained` (z only through an untrained generator, a control).
 */
export const METHODS = ["zero-shot", "z", "full", "finetune", "z-untrained"] as const;
/** One of {@link METHODS}. */
export type Method = typeof METHODS[number];
/** Initial z of the new task. */
export const Z_INITS = ["mean", "zero", "random", "one_hot"] as const;

/** Options of `adapt` (the CLI maps its flags 1:1 onto these). */
export interface AdaptOptions {
  /** Run folder written by `train`. */
  run: string;
  /** Task to learn: an index into the family or a task name (default: the first held-out). */
  task?: string;
  /** Methods to compare, in order. */
  methods: Method[];
  /** Initial z: mean of the trained z (default), zero, random, or one-hot of the task's index. */
  init: typeof Z_INITS[number];
  /** Training steps of every method. */
  steps: number;
  /** Images per step. */
  batch: number;
  /** Images per class to learn from (0: all of the task's training images). */
  shots: number;
  /** Learning rate of z-only adaptation. */
  lr: number;
  /** Learning rate of the `full` baseline. */
  fullLr: number;
  /** Learning rate of `finetune` (generator and z). */
  finetuneLr: number;
  /** Optimiser of every method. */
  optimizer: typeof OPTIMIZERS[number];
  /** Evaluate on the test split every N steps. */
  evalEvery: number;
  /** Stop after this many evaluations without validation improvement (0: off). */
  patience: number;
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

/** Defaults: z-only adaptation against the `full` baseline, sized for a CPU. */
export const ADAPT_DEFAULTS: AdaptOptions = {
  run: "runs/latest",
  methods: ["zero-shot", "z", "full"],
  init: "mean",
  steps: 150,
  batch: 64,
  shots: 0,
  lr: 0.01,
  fullLr: 0.001,
  finetuneLr: 0.0003,
  optimizer: "adam",
  evalEvery: 25,
  patience: 0,
  seed: 1,
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

/** What one method reached. */
export interface MethodResult {
  /** The method. */
  method: Method;
  /** Numbers trained for this task. */
  trainable: number;
  /** Final test accuracy (at the best validation point when early stopping). */
  accuracy: number;
  /** Final test loss. */
  loss: number;
  /** Steps run. */
  steps: number;
  /** Wall time in seconds. */
  seconds: number;
  /** Test accuracy and loss along the way. */
  curve: CurvePoint[];
}

/** The comparison on one task. */
export interface AdaptResult {
  /** Task index in the family. */
  task: number;
  /** Task name, e.g. "8 vs 9". */
  taskName: string;
  /** Training images the methods learned from. */
  trainImages: number;
  /** Test images evaluated. */
  testImages: number;
  /** One entry per method, in the order asked. */
  results: MethodResult[];
  /** Folder the results were written to. */
  out: string;
}

/** Progress while adapting. */
export type AdaptEvent =
  | { kind: "method"; method: Method; trainable: number }
  | { kind: "eval"; method: Method; step: number; steps: number; accuracy: number; loss: number };

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

/** A copy of `dataset` whose train split holds only the given images (for few-shot sampling). */
function restrictTrain(dataset: Dataset, indices: Uint32Array): Dataset {
  const [c, h, w] = dataset.shape;
  const size = c * h * w;
  const images = new Uint8Array(indices.length * size);
  const labels = new Uint16Array(indices.length);
  indices.forEach((i, k) => {
    images.set(dataset.train.images.subarray(i * size, (i + 1) * size), k * size);
    labels[k] = dataset.train.labels[i]!;
  });
  const train: Split = { images, labels, count: indices.length };
  return { ...dataset, train };
}

/** Splits a task's training images into the ones to learn from and a validation slice. */
function chooseExamples(
  all: Examples,
  options: { fewShot?: Examples; validation: boolean; seed: number },
): { learn: Uint32Array; validation?: Examples } {
  const learn = options.fewShot?.indices ?? all.indices;
  if (!options.validation) return { learn };
  const used = new Set(learn);
  const rest = [...all.indices.keys()].filter((k) => !used.has(all.indices[k]!));
  new Random(options.seed ^ 0x7a11).shuffle(rest);
  const size = options.fewShot
    ? Math.min(200, rest.length)
    : Math.max(1, Math.round(all.indices.length / 10));
  const picked = rest.slice(0, size).sort((a, b) => a - b);
  const validation = {
    indices: Uint32Array.from(picked, (k) => all.indices[k]!),
    labels: Float32Array.from(picked, (k) => all.labels[k]!),
  };
  const held = new Set(validation.indices);
  return { learn: options.fewShot ? learn : learn.filter((i) => !held.has(i)), validation };
}

/** Runs every method of `options.methods` on the task and writes the results. */
export async function adapt(
  gpu: Gpu,
  options: AdaptOptions,
  hooks: { onEvent?: (e: AdaptEvent) => void } = {},
): Promise<AdaptResult> {
  const { info, tensors } = await loadCheckpoint<TrainOptions>(options.run, [MODEL_FILE]);
  const state = info.state as unknown as RunState;
  const taskIndex = resolveTask(state.family, options.task ?? customRow(state.family, options));
  const { custom } = options;
  // A custom task takes the place of the row's task; everything below runs unchanged on it.
  const family = custom
    ? { ...state.family, tasks: state.family.tasks.with(taskIndex, custom.task) }
    : state.family;
  const dataset = custom?.dataset ?? await loadDataset(state.dataset.name, {
    dataDir: options.dataDir ?? info.options.dataDir,
    verify: options.verify ?? info.options.verify,
  });
  const task = family.tasks[taskIndex]!;
  const all = taskExamples(task, dataset.train);
  const shots = options.shots > 0
    ? fewShot(task, dataset.train, { shots: options.shots, seed: options.seed })
    : undefined;
  const { learn, validation } = chooseExamples(all, {
    fewShot: shots,
    validation: options.patience > 0,
    seed: options.seed,
  });
  const learnSet = restrictTrain(dataset, learn);
  const out = options.out ?? join(options.run, "adapt");
  await Deno.mkdir(out, { recursive: true });
  const trainStore = new ImageStore(gpu, learnSet.train, { shape: dataset.shape });
  const testStore = new ImageStore(gpu, dataset.test, { shape: dataset.shape });
  const valStore = validation
    ? new ImageStore(gpu, dataset.train, { shape: dataset.shape })
    : undefined;
  const results: MethodResult[] = [];
  const z0 = initialZ(family, state, tensors[MODEL_FILE]!.get("task.z")!.data as Float32Array, {
    task: taskIndex,
    init: options.init,
    seed: options.seed,
  });
  let testImages = 0;
  try {
    for (const method of options.methods) {
      const started = performance.now();
      const model = prepareMethod(gpu, method, {
        state,
        tensors: tensors[MODEL_FILE]!,
        path: join(options.run, MODEL_FILE),
        taskIndex,
        z0,
        options,
      });
      hooks.onEvent?.({ kind: "method", method, trainable: model.trainable });
      // Test split and (for early stopping) the validation slice: one task, whole passes.
      const single = { dataset, family, tasks: [taskIndex], forward: model.forward, batch: 200 };
      const evaluator = new Evaluator(gpu, { ...single, tasksPerChunk: 1, store: testStore });
      const validator = validation
        ? new Evaluator(gpu, {
          ...single,
          tasksPerChunk: 1,
          store: valStore,
          split: "train",
          examples: [validation],
        })
        : undefined;
      const curve: CurvePoint[] = [];
      const evaluate = async (step: number): Promise<CurvePoint> => {
        const [score] = await evaluator.evaluate();
        testImages = score!.count;
        const point = { step, accuracy: score!.accuracy, loss: score!.loss };
        curve.push(point);
        hooks.onEvent?.({ kind: "eval", method, steps: options.steps, ...point });
        return point;
      };
      let final = await evaluate(0);
      let steps = 0;
      if (model.groups.length > 0) {
        const sampler = new Sampler(gpu, learnSet, {
          family,
          trainTasks: [taskIndex],
          tasksPerStep: 1,
          batch: options.batch,
          seed: options.seed,
          balanced: true,
          store: trainStore,
        });
        const program = new StepProgram(gpu, {
          source: sampler,
          forward: model.trainForward,
          groups: model.groups,
        });
        let best = { accuracy: -1, point: final, snapshot: [] as Float32Array[] };
        let stale = 0;
        for (steps = 1; steps <= options.steps; steps++) {
          program.run(steps);
          if (steps % options.evalEvery !== 0 && steps !== options.steps) continue;
          final = await evaluate(steps);
          if (validator) {
            const [v] = await validator.evaluate();
            if (v!.accuracy > best.accuracy) {
              best = {
                accuracy: v!.accuracy,
                point: final,
                snapshot: await snapshot(gpu, model.groups),
              };
              stale = 0;
            } else if (++stale >= options.patience) break;
          }
        }
        steps = Math.min(steps, options.steps);
        if (validator && best.snapshot.length > 0) {
          restoreSnapshot(gpu, model.groups, best.snapshot);
          final = best.point;
        }
        program.destroy();
        sampler.destroy();
        if (method === "z") {
          const z = await read(gpu, model.zRow!);
          await saveSafetensors(
            join(out, `z_${custom?.name ?? taskIndex}.safetensors`),
            new Map([["z", { shape: [z.length], data: z }]]),
            {
              task: task.name,
              run: options.run,
              classes: JSON.stringify(sideNames(task, dataset.classNames)),
            },
          );
        }
      }
      results.push({
        method,
        trainable: model.trainable,
        accuracy: final.accuracy,
        loss: final.loss,
        steps,
        seconds: (performance.now() - started) / 1000,
        curve,
      });
      evaluator.destroy();
      validator?.destroy();
      model.destroy();
    }
  } finally {
    trainStore.destroy();
    testStore.destroy();
    valStore?.destroy();
  }
  const result: AdaptResult = {
    task: taskIndex,
    taskName: task.name,
    trainImages: learn.length,
    testImages,
    results,
    out,
  };
  const { custom: _, ...recorded } = options;
  await writeAtomic(
    join(out, "adapt.json"),
    JSON.stringify(
      { options: { ...recorded, source: custom?.dataset.source }, ...result },
      null,
      2,
    ) +
      "\n",
  );
  return result;
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

/** The new task's initial z from the trained table. */
export function initialZ(
  family: TaskFamily,
  state: RunState,
  table: Float32Array,
  options: { task: number; init: typeof Z_INITS[number]; seed: number },
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
    default: {
      const z = new Float32Array(d);
      for (const t of family.train) {
        for (let k = 0; k < d; k++) z[k]! += table[t * d + k]! / family.train.length;
      }
      return z;
    }
  }
}

interface PreparedMethod {
  trainable: number;
  forward: ForwardBuilder;
  trainForward: ForwardBuilder;
  groups: ParamGroup[];
  zRow?: Tensor;
  destroy(): void;
}

function prepareMethod(
  gpu: Gpu,
  method: Method,
  ctx: {
    state: RunState;
    tensors: Map<string, NamedTensor>;
    path: string;
    taskIndex: number;
    z0: Float32Array;
    options: AdaptOptions;
  },
): PreparedMethod {
  const { state, options } = ctx;
  const schedule = (lr: number) => ({
    lr,
    kind: "constant" as const,
    warmup: 0,
    steps: options.steps,
  });
  if (method === "full") {
    const net = new PlainNet(gpu, {
      target: state.model.target,
      inputShape: state.model.inputShape,
      outputs: state.model.outputs,
      slope: state.model.slope,
      seed: options.seed,
      tasks: 1,
    });
    const group = new ParamGroup(gpu, net.params, {
      optimizer: optimizerConfig(options.optimizer, options.fullLr),
      schedule: schedule(options.fullLr),
    });
    return {
      trainable: weightCount(net.spec),
      forward: (tape, inputs) => net.forward(tape, inputs),
      trainForward: (tape, inputs) => net.forward(tape, { ...inputs, grads: group.grads }),
      groups: [group],
      destroy: () => {
        group.destroy();
        net.destroy();
      },
    };
  }
  // z-untrained: the same z-only adaptation through a freshly initialised generator, which
  // separates what training contributed from what any 100-dimensional family can express.
  const net = method === "z-untrained"
    ? SuperNet.create(gpu, { ...state.model, seed: state.model.seed + 1 })
    : new SuperNet(gpu, state.model);
  if (method !== "z-untrained") restoreArenas(gpu, ctx.tensors, modelArenas(net), ctx.path);
  const zTable = net.z.get("z");
  const d = state.model.generator.zDim;
  const zRow = zTable.reshape([zTable.size]);
  const table = new Float32Array(zTable.size);
  table.set(ctx.tensors.get("task.z")!.data as Float32Array);
  table.set(ctx.z0, ctx.taskIndex * d);
  write(gpu, zTable, table);
  const groups: ParamGroup[] = [];
  if (method === "z" || method === "z-untrained" || method === "finetune") {
    const lr = method === "finetune" ? options.finetuneLr : options.lr;
    groups.push(
      new ParamGroup(gpu, net.z, {
        optimizer: optimizerConfig(options.optimizer, lr),
        schedule: schedule(lr),
      }),
    );
  }
  if (method === "finetune") {
    groups.push(
      new ParamGroup(gpu, net.params, {
        optimizer: optimizerConfig(options.optimizer, options.finetuneLr),
        schedule: schedule(options.finetuneLr),
      }),
    );
  }
  const zGrads = groups[0]?.grads;
  const paramGrads = groups[1]?.grads;
  return {
    trainable: method === "finetune" ? net.parameterCount + d : method === "zero-shot" ? 0 : d,
    forward: (tape, inputs) => net.forward(tape, inputs),
    trainForward: (tape, inputs) =>
      net.forward(tape, { ...inputs, grads: { z: zGrads, params: paramGrads } }),
    groups,
    zRow: sliceRow(zRow, ctx.taskIndex, d),
    destroy: () => {
      for (const g of groups) g.destroy();
      net.destroy();
    },
  };
}

function sliceRow(flat: Tensor, row: number, width: number): Tensor {
  return new Tensor(flat.buffer, [width], { byteOffset: flat.byteOffset + row * width * 4 });
}

async function snapshot(gpu: Gpu, groups: ParamGroup[]): Promise<Float32Array[]> {
  return await Promise.all(groups.map((g) => read(gpu, g.params.flat)));
}

function restoreSnapshot(gpu: Gpu, groups: ParamGroup[], values: Float32Array[]): void {
  groups.forEach((g, i) => write(gpu, g.params.flat, values[i]!));
}
