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
 * The rooms: `options.ts` (options, defaults, result types), `tasks.ts` (which tasks, their
 * splits), `context.ts` (what a call shares), `starts.ts` (starting z and their ranking),
 * `slots.ts` (the batched slot harness), `baselines.ts`, `methods.ts` (one method on every task);
 * this file loads the run, loops over the methods and saves.
 *
 * @module
 */
import { join } from "node:path";
import { loadCheckpoint } from "../checkpoint.ts";
import { loadDataset } from "../data/dataset.ts";
import { fewShot, ImageStore } from "../data/sampler.ts";
import { type Examples, taskExamples } from "../data/tasks.ts";
import type { Gpu } from "../gpu/device.ts";
import { saveSafetensors, writeAtomic } from "../safetensors.ts";
import { MODEL_FILE, type RunState, type TrainOptions } from "../train.ts";
import type {
  AdaptEvent,
  AdaptOptions,
  AdaptResult,
  Method,
  MethodResult,
  RankedZ,
} from "./options.ts";
import type { Context } from "./context.ts";
import { runMethod } from "./methods.ts";
import { rankTrainedZs, startingZs } from "./starts.ts";
import { customRow, resolveTasks, sideNames, splitValidation, type TaskData } from "./tasks.ts";

export {
  ADAPT_DEFAULTS,
  type AdaptEvent,
  type AdaptOptions,
  type AdaptResult,
  type CurvePoint,
  type CustomTask,
  type Method,
  type MethodResult,
  METHODS,
  type RankedZ,
  SEED_ADAPT_PRESET,
  type TaskAdaptResult,
  Z_INITS,
  type ZInitName,
} from "./options.ts";
export { resolveTask, resolveTasks, sideNames, splitValidation } from "./tasks.ts";
export { initialZ, trainedZStats } from "./starts.ts";
export { isCollapsed } from "./slots.ts";
export { fullAugment, fullBudget } from "./methods.ts";

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
