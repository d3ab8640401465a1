/**
 * Reading a run folder back for the commands that use a trained generator (evaluate, export,
 * predict, adapt from images): the generator on the GPU, the dataset it was trained on, the
 * normalisation its inputs had, and the task vector to use with the names of its two labels.
 *
 * @module
 */
import { join } from "node:path";
import { initialZ, resolveTask, sideNames } from "./adapt/mod.ts";
import { loadCheckpoint, restoreArenas } from "./checkpoint.ts";
import { loadDataset } from "./data/dataset.ts";
import type { Dataset } from "./data/split.ts";
import type { Gpu } from "./gpu/device.ts";
import { SuperNet } from "./model/supernet.ts";
import { loadSafetensors, SafetensorsError } from "./safetensors.ts";
import { MODEL_FILE, modelArenas, type RunState, type TrainOptions } from "./train.ts";

/** A run's trained generator and task vectors, restored on the GPU, and its checkpoint's step. */
export async function loadRun(
  gpu: Gpu,
  run: string,
): Promise<
  { net: SuperNet; state: RunState; options: TrainOptions; table: Float32Array; step: number }
> {
  const { info, tensors } = await loadCheckpoint<TrainOptions>(run, [MODEL_FILE]);
  const state = info.state as unknown as RunState;
  const net = new SuperNet(gpu, state.model);
  restoreArenas(gpu, tensors[MODEL_FILE]!, modelArenas(net), join(run, MODEL_FILE));
  const table = tensors[MODEL_FILE]!.get("task.z")!.data as Float32Array;
  return { net, state, options: info.options, table, step: info.step };
}

/** Where a run's dataset is read from, and how it is checked (each defaults to the run's own). */
export interface RunDataOptions {
  /** Folder of dataset files (default: the one the run was trained from). */
  dataDir?: string;
  /** Check files against their published sums (default: as the run was trained). */
  verify?: boolean;
}

/** The dataset a run was trained on; the run's own data folder and checking unless overridden. */
export function runDataset(
  state: RunState,
  trained: Pick<TrainOptions, "dataDir" | "verify">,
  options: RunDataOptions,
): Promise<Dataset> {
  return loadDataset(state.dataset.name, {
    dataDir: options.dataDir ?? trained.dataDir,
    verify: options.verify ?? trained.verify,
  });
}

/**
 * The per-channel mean and std on [0, 1] the run's inputs were normalised with: recorded in runs
 * written since they were, recomputed from the dataset for older runs.
 */
export async function runStatistics(
  state: RunState,
  trained: Pick<TrainOptions, "dataDir" | "verify">,
  options: RunDataOptions,
): Promise<{ mean: number[]; std: number[] }> {
  const { mean, std } = state.dataset;
  if (mean && std) return { mean, std };
  const dataset = await runDataset(state, trained, options);
  return { mean: dataset.mean, std: dataset.std };
}

/** A task vector and what it means. */
export interface ChosenTask {
  /** The z, zDim numbers. */
  z: Float32Array;
  /** A name for files and records, e.g. "8 vs 9" or "cats vs dogs". */
  name: string;
  /** Names of label 0 and label 1 (the positive class, whose probability the network gives). */
  classNames: [string, string];
  /** Where z came from: a z file, or "task N of the run" (trained or mean z). */
  source: string;
}

/**
 * The task vector to use from a run: the z in a file written by `adapt` (`zFile`), else task
 * `task` (index or name; default the first held-out) with its trained z, or the mean z of the
 * trained tasks for a task held out of training.
 */
export async function chooseTask(
  state: RunState,
  table: Float32Array,
  options: { task?: string; zFile?: string },
): Promise<ChosenTask> {
  const family = state.family;
  const d = state.model.generator.zDim;
  if (options.zFile) {
    let loaded;
    try {
      loaded = await loadSafetensors(options.zFile);
    } catch (e) {
      if (e instanceof SafetensorsError || e instanceof Deno.errors.NotFound) {
        throw new RangeError(
          `--z ${options.zFile}: ${
            e instanceof Deno.errors.NotFound ? "not found" : e.message
          }; expected a z_*.safetensors file written by 'deno task adapt'`,
        );
      }
      throw e;
    }
    const found = loaded.tensors.get("z");
    if (!found || found.data.length !== d) {
      throw new RangeError(
        `--z ${options.zFile}: expected a tensor 'z' of ${d} numbers (this run's z size)`,
      );
    }
    const name = loaded.metadata.task ?? "task";
    return {
      z: Float32Array.from(found.data),
      name,
      classNames: zClassNames(state, loaded.metadata),
      source: options.zFile,
    };
  }
  const index = resolveTask(family, options.task);
  const task = family.tasks[index]!;
  const trained = !family.heldOut.includes(index) && !family.excluded.includes(index);
  return {
    z: trained
      ? table.slice(index * d, (index + 1) * d)
      : initialZ(family, state, table, { task: index, init: "mean", seed: 0 }),
    name: task.name,
    classNames: sideNames(task, state.dataset.classes),
    source: `task ${index} of the run (${trained ? "its trained z" : "mean z, no training"})`,
  };
}

/** Label names recorded in a z file, else those of the run's task of the same name. */
function zClassNames(state: RunState, metadata: Record<string, string>): [string, string] {
  if (metadata.classes) {
    const names = JSON.parse(metadata.classes);
    if (Array.isArray(names) && names.length === 2) return [String(names[0]), String(names[1])];
  }
  const task = state.family.tasks.find((t) => t.name === metadata.task);
  return task ? sideNames(task, state.dataset.classes) : ["0", "1"];
}
