/**
 * `experiment --baseline`: the whole network (`full`) re-measured on an experiment's held-out
 * tasks under today's budget, without training the generator. `full` trains a network of its own
 * from a seeded start and never reads the generator, so an experiment whose results.json predates
 * a budget change gets its baseline again in minutes instead of hours: the same held-out tasks,
 * validation slices, step cap, evaluation steps and seed as the experiment, from the same options.
 * Writes `baseline.json`; `report` pairs it with the results.json of the same options beside it.
 *
 * @module
 */
import { join } from "node:path";
import { adapt, fullAugment, type MethodResult } from "./adapt/mod.ts";
import { describeCommit } from "./commit.ts";
import type { Gpu } from "./gpu/device.ts";
import {
  type ExperimentEvent,
  type ExperimentOptions,
  type ExperimentResults,
  resolveExperiment,
} from "./experiment.ts";
import { writeAtomic } from "./safetensors.ts";
import { train } from "./train.ts";

/** The file `experiment --baseline` writes into the experiment's folder. */
export const BASELINE_FILE = "baseline.json";

/** What `experiment --baseline` writes. */
export interface BaselineResults {
  /** Marks the file: a whole-network baseline, not an experiment. */
  kind: "baseline";
  /** The experiment's options, resolved (held-out count included). */
  options: ExperimentOptions;
  /** The command that reproduces this. */
  command: string;
  /** Adapter description. */
  adapter: string;
  /** Dataset identity. */
  dataset: string;
  /** Task family name. */
  family: string;
  /** Fraction of each class the experiment's training kept out (the validation slices). */
  reserve: number;
  /** `git describe --always --dirty` when the run started. */
  commit?: string;
  /** The whole network's budget, as in results.json. */
  fullBudget: NonNullable<ExperimentResults["fullBudget"]>;
  /** Per held-out task, the whole network's result. */
  heldOut: { task: number; name: string; full: MethodResult }[];
  /** Total wall time in seconds. */
  seconds: number;
}

/** Whether parsed JSON is a baseline.json. */
export function isBaselineResults(data: unknown): data is BaselineResults {
  return typeof data === "object" && data !== null &&
    (data as { kind?: unknown }).kind === "baseline";
}

/**
 * The options of an experiment that decide its held-out tasks and the baseline's budget: a
 * baseline pairs only with an experiment that agrees on all of them.
 */
export const PAIRING_OPTIONS = [
  "name",
  "dataset",
  "family",
  "profile",
  "holdoutLast",
  "target",
  "seed",
] as const;

/**
 * Re-measures the whole network on the experiment's held-out tasks and writes
 * {@link BASELINE_FILE} into `options.out`. The generator is created (0 training steps) only
 * because adaptation reads a run's tasks and dataset from a run folder; `full` never uses it.
 */
export async function runBaseline(
  gpu: Gpu,
  given: ExperimentOptions,
  hooks: { onEvent?: (e: ExperimentEvent) => void; command?: string } = {},
): Promise<BaselineResults> {
  const started = performance.now();
  const { family, dataset, options, baseTrain, adaptBase } = await resolveExperiment(given);
  const say = (text: string) => hooks.onEvent?.({ kind: "phase", text });
  const commit = await describeCommit();
  const run = join(options.out, "baseline_train");
  await Deno.mkdir(options.out, { recursive: true });
  await Deno.remove(run, { recursive: true }).catch(() => {});
  await train(gpu, { ...baseTrain, steps: 0, evalEvery: 0, saveEvery: 0, out: run });
  say("held-out tasks: the whole network (full)");
  const result = await adapt(gpu, {
    ...adaptBase,
    run,
    task: "all-heldout",
    methods: ["full"],
    out: join(options.out, "baseline_adapt"),
  }, {
    onEvent: (e) => {
      if (e.kind !== "method") return;
      const decay = e.weightDecay !== undefined ? `, weight decay ${e.weightDecay}` : "";
      const cap = e.steps ? `, up to ${e.steps} steps` : "";
      say(`held-out tasks: full, ${e.slots} slot(s), lr ${e.lr.toPrecision(2)}${decay}${cap}`);
    },
  });
  const results: BaselineResults = {
    kind: "baseline",
    options,
    command: hooks.command ?? "",
    adapter: `${gpu.description}${gpu.isFallback ? " (software)" : ""}`,
    dataset: dataset.source,
    family,
    reserve: baseTrain.reserve,
    commit,
    fullBudget: {
      epochs: adaptBase.fullEpochs,
      weightDecays: adaptBase.fullWeightDecay,
      augment: adaptBase.fullAugment,
      flip: fullAugment(adaptBase, dataset)?.flip ?? false,
    },
    heldOut: result.tasks.map((t) => ({
      task: t.task,
      name: t.taskName,
      full: t.results.find((r) => r.method === "full")!,
    })),
    seconds: (performance.now() - started) / 1000,
  };
  await writeAtomic(join(options.out, BASELINE_FILE), JSON.stringify(results, null, 2) + "\n");
  return results;
}
