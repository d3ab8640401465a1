/**
 * `evaluate` and `export`: read a run folder, score its tasks on the test split, and write a
 * task's generated network for use without SuperNet.
 *
 * @module
 */
import { initialZ } from "./adapt/mod.ts";
import { ImageStore } from "./data/sampler.ts";
import { Evaluator } from "./engine.ts";
import { type ExportFormat, exportTaskNetwork } from "./export/mod.ts";
import type { Gpu } from "./gpu/device.ts";
import { write } from "./gpu/tensor.ts";
import { describePreprocessing } from "./images.ts";
import { chooseTask, loadRun, type RunDataOptions, runDataset, runStatistics } from "./run.ts";

export { loadRun };

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
  options: { run: string } & RunDataOptions,
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

/** Options of `export`. */
export interface ExportOptions extends RunDataOptions {
  /** Run folder written by `train`. */
  run: string;
  /** Task index or name (default: the first held-out task). */
  task?: string;
  /** A z file written by `adapt` (overrides `task`). */
  z?: string;
  /** Output folder. */
  out: string;
  /** safetensors (default) or onnx; the JSON description is always written. */
  format?: ExportFormat;
}

/**
 * Writes the generated network of a task: its trained z, or the z in a file written by `adapt`
 * (`z_<task>.safetensors`), or for a held-out task without one the mean z; the JSON records the
 * preprocessing (the run's normalisation statistics), the label names and the source.
 */
export async function exportFromRun(
  gpu: Gpu,
  options: ExportOptions,
): Promise<{ weights?: string; onnx?: string; architecture: string }> {
  const { net, state, table, step, options: trained } = await loadRun(gpu, options.run);
  try {
    const chosen = await chooseTask(state, table, { task: options.task, zFile: options.z });
    const stats = await runStatistics(state, trained, options);
    return await exportTaskNetwork(gpu, net, chosen.z, options.out, {
      name: chosen.name.replaceAll(/[^A-Za-z0-9_-]+/g, "_"),
      format: options.format,
      preprocessing: describePreprocessing(state.model.inputShape, stats),
      classNames: chosen.classNames,
      source: {
        run: options.run,
        step,
        dataset: state.dataset.source,
        z: chosen.source,
      },
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
  options: { run: string; task: number; zs: Float32Array[] } & RunDataOptions,
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
