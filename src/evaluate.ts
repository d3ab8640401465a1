/**
 * `evaluate` and `export`: read a run folder, score its tasks on the test split, and write a
 * task's generated network for use without SuperNet.
 *
 * @module
 */
import { join } from "node:path";
import { initialZ, resolveTask } from "./adapt.ts";
import { loadCheckpoint, restoreArenas } from "./checkpoint.ts";
import { type Dataset, loadDataset } from "./data/dataset.ts";
import { ImageStore } from "./data/sampler.ts";
import { Evaluator } from "./engine.ts";
import { exportTaskNetwork } from "./export.ts";
import type { Gpu } from "./gpu/device.ts";
import { write } from "./gpu/tensor.ts";
import { SuperNet } from "./model/supernet.ts";
import { loadSafetensors } from "./safetensors.ts";
import { MODEL_FILE, modelArenas, type RunState, type TrainOptions } from "./train.ts";

/** A run's trained generator and task vectors, restored on the GPU. */
export async function loadRun(
  gpu: Gpu,
  run: string,
): Promise<{ net: SuperNet; state: RunState; options: TrainOptions; table: Float32Array }> {
  const { info, tensors } = await loadCheckpoint<TrainOptions>(run, [MODEL_FILE]);
  const state = info.state as unknown as RunState;
  const net = new SuperNet(gpu, state.model);
  restoreArenas(gpu, tensors[MODEL_FILE]!, modelArenas(net), join(run, MODEL_FILE));
  const table = tensors[MODEL_FILE]!.get("task.z")!.data as Float32Array;
  return { net, state, options: info.options, table };
}

/** The dataset a run was trained on, from `dataDir` if given, else the run's own data folder. */
function runDataset(
  state: RunState,
  trained: Pick<TrainOptions, "dataDir">,
  options: { dataDir?: string; verify: boolean },
): Promise<Dataset> {
  return loadDataset(state.dataset.name, {
    dataDir: options.dataDir ?? trained.dataDir,
    verify: options.verify,
  });
}

/** One evaluated task. */
export interface EvaluatedTask {
  /** Index in the family. */
  task: number;
  /** Readable name. */
  name: string;
  /** Held out of training (scored with the mean z of the trained tasks). */
  heldOut: boolean;
  /** Test accuracy. */
  accuracy: number;
  /** Test loss. */
  loss: number;
  /** Test images. */
  count: number;
}

/**
 * Scores every training task with its own z and every held-out task with the mean z of the
 * training tasks (zero-shot), on the test split.
 */
export async function evaluateRun(
  gpu: Gpu,
  options: { run: string; dataDir?: string; verify: boolean },
): Promise<{ tasks: EvaluatedTask[]; trainedAccuracy: number; heldOutAccuracy: number }> {
  const { net, state, options: trainOptions, table } = await loadRun(gpu, options.run);
  const family = state.family;
  const dataset = await runDataset(state, trainOptions, options);
  const d = state.model.generator.zDim;
  const withMean = table.slice();
  for (const t of family.heldOut) {
    withMean.set(initialZ(family, state, table, { task: t, init: "mean", seed: 0 }), t * d);
  }
  write(gpu, net.z.get("z"), withMean);
  const store = new ImageStore(gpu, dataset.test, { shape: dataset.shape });
  const tasks = [...family.train, ...family.heldOut];
  const evaluator = new Evaluator(gpu, {
    dataset,
    family,
    tasks,
    forward: (tape, inputs) => net.forward(tape, inputs),
    batch: 100,
    tasksPerChunk: Math.min(16, tasks.length),
    store,
  });
  try {
    const scores = await evaluator.evaluate();
    const held = new Set(family.heldOut);
    const out = scores.map((s) => ({
      task: s.task,
      name: family.tasks[s.task]!.name,
      heldOut: held.has(s.task),
      accuracy: s.accuracy,
      loss: s.loss,
      count: s.count,
    }));
    const avg = (xs: EvaluatedTask[]) =>
      xs.length ? xs.reduce((a, b) => a + b.accuracy, 0) / xs.length : 0;
    return {
      tasks: out,
      trainedAccuracy: avg(out.filter((t) => !t.heldOut)),
      heldOutAccuracy: avg(out.filter((t) => t.heldOut)),
    };
  } finally {
    evaluator.destroy();
    store.destroy();
    net.destroy();
  }
}

/**
 * Writes the generated network of a task: its trained z, or the z in a file written by `adapt`
 * (`z_<task>.safetensors`), or for a held-out task without one the mean z.
 */
export async function exportFromRun(
  gpu: Gpu,
  options: { run: string; task?: string; z?: string; out: string },
): Promise<{ weights: string; architecture: string }> {
  const { net, state, table } = await loadRun(gpu, options.run);
  try {
    const family = state.family;
    const task = resolveTask(family, options.task);
    const d = state.model.generator.zDim;
    let z: Float32Array;
    if (options.z) {
      const loaded = await loadSafetensors(options.z);
      const found = loaded.tensors.get("z");
      if (!found || found.data.length !== d) {
        throw new RangeError(`${options.z}: expected a tensor 'z' of ${d} numbers`);
      }
      z = found.data as Float32Array;
    } else if (family.heldOut.includes(task) || family.excluded.includes(task)) {
      z = initialZ(family, state, table, { task, init: "mean", seed: 0 });
    } else {
      z = table.slice(task * d, (task + 1) * d);
    }
    await Deno.mkdir(options.out, { recursive: true });
    return await exportTaskNetwork(gpu, net, z, options.out, {
      name: family.tasks[task]!.name.replaceAll(/[^A-Za-z0-9_-]+/g, "_"),
    });
  } finally {
    net.destroy();
  }
}

/**
 * Test accuracy of one task under each of several task vectors (the task's own row of the table
 * is replaced by each z in turn): the controls for "did the generator learn a general network?".
 */
export async function scoreTaskWithZs(
  gpu: Gpu,
  options: { run: string; task: number; zs: Float32Array[]; dataDir?: string; verify: boolean },
): Promise<{ accuracy: number; loss: number }[]> {
  const { net, state, options: trainOptions, table } = await loadRun(gpu, options.run);
  const dataset = await runDataset(state, trainOptions, options);
  const d = state.model.generator.zDim;
  const store = new ImageStore(gpu, dataset.test, { shape: dataset.shape });
  const evaluator = new Evaluator(gpu, {
    dataset,
    family: state.family,
    tasks: [options.task],
    forward: (tape, inputs) => net.forward(tape, inputs),
    batch: 200,
    tasksPerChunk: 1,
    store,
  });
  try {
    const out: { accuracy: number; loss: number }[] = [];
    const values = table.slice();
    for (const z of options.zs) {
      values.set(z, options.task * d);
      write(gpu, net.z.get("z"), values);
      const [score] = await evaluator.evaluate();
      out.push({ accuracy: score!.accuracy, loss: score!.loss });
    }
    return out;
  } finally {
    evaluator.destroy();
    store.destroy();
    net.destroy();
  }
}
