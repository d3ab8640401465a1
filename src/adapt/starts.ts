/**
 * Where a new task's z starts: the trained z's mean and spread, the single-z inits, and the
 * trained z ranked by how well they already fit the new task's training images.
 *
 * @module
 */
import { restoreArenas } from "../checkpoint.ts";
import type { Examples, TaskFamily } from "../data/tasks.ts";
import { Evaluator } from "../engine.ts";
import { initTaskVectors, SuperNet } from "../model/supernet.ts";
import { mixSeed, Random } from "../random.ts";
import type { RunState } from "../train.ts";
import type { RankedZ, ZInitName } from "./options.ts";
import type { Context } from "./context.ts";
import type { TaskData } from "./tasks.ts";

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
export interface Start {
  z: Float32Array;
  label: string;
}

/** The candidates a task's z starts from under `options.init`, the preferred one first. */
export function startingZs(ctx: Context, task: number, ranking: RankedZ[]): Start[] {
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
export async function rankTrainedZs(ctx: Context, data: TaskData[]): Promise<RankedZ[][]> {
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
export function sampleExamples(examples: Examples, limit: number, seed: number): Examples {
  if (examples.indices.length <= limit) return examples;
  const ks = [...examples.indices.keys()];
  new Random(mixSeed(seed, 0x5c0e)).shuffle(ks);
  const kept = ks.slice(0, limit).sort((a, b) => a - b);
  return {
    indices: Uint32Array.from(kept, (k) => examples.indices[k]!),
    labels: Float32Array.from(kept, (k) => examples.labels[k]!),
  };
}
