/**
 * Few-shot cells of a sweep: a plan whose experiment is `fewshot` takes the options of
 * `experiment fewshot` (the keys of its flags: `ways`, `shots`, `episodes`, `profile`, `seed` ...),
 * and each cell runs that experiment into its own folder and writes its report there. Cells that
 * differ only by seed are aggregated by `report` (src/fewshot/report.ts).
 *
 * @module
 */
import {
  FEWSHOT_DEFAULTS,
  FEWSHOT_METHODS,
  type FewShotEvent,
  type FewShotOptions,
  type FewShotResults,
  runFewShot,
  TRAININGS,
} from "../fewshot/experiment.ts";
import { writeFewShotReport } from "../fewshot/report.ts";
import type { Gpu } from "../gpu/device.ts";
import type { OptionCheck, OptionRules } from "./plan.ts";

/** The name of the few-shot experiment in a plan's `experiment`. */
export const FEWSHOT_EXPERIMENT = "fewshot";

/** Few-shot options whose single value is itself a list. */
export const FEWSHOT_LIST_OPTIONS: ReadonlySet<string> = new Set(["shots", "trainings", "methods"]);

/**
 * The plan rules of `fewshot`: `check` (the flags' own check of each value), and for the list
 * options what the command line also refuses: an empty list, shots below 1, a method or training
 * that does not exist, so a plan fails before any cell is submitted.
 */
export function fewShotRules(check: OptionCheck): OptionRules {
  const sets: Record<string, readonly string[]> = {
    methods: FEWSHOT_METHODS,
    trainings: TRAININGS,
  };
  return {
    listOptions: new Set(FEWSHOT_LIST_OPTIONS),
    check: (key, value) => {
      const problem = check(key, value);
      if (problem || !FEWSHOT_LIST_OPTIONS.has(key)) return problem;
      const list = value as unknown[];
      if (list.length === 0) return `option '${key}' is an empty list; give at least one value`;
      if (key === "shots") {
        return list.every((k) => (k as number) >= 1)
          ? undefined
          : `option 'shots' is ${JSON.stringify(value)}; expected support images per class, >= 1`;
      }
      const bad = list.find((v) => !sets[key]!.includes(v as string));
      return bad === undefined
        ? undefined
        : `option '${key}' lists ${JSON.stringify(bad)}; expected some of ${sets[key]!.join(", ")}`;
    },
  };
}

/**
 * Runs one few-shot cell: `experiment fewshot` with the cell's values over the defaults, into
 * `out`, then its report.md. A cell stopped part-way keeps its finished trainings and rows when
 * the sweep reruns it (`resume`); `--force` starts it afresh.
 */
export async function runFewShotCell(
  gpu: Gpu,
  values: Record<string, unknown>,
  options: {
    out: string;
    command: string;
    resume?: boolean;
    onEvent?: (e: FewShotEvent) => void;
  },
): Promise<FewShotResults> {
  const fewShot = {
    ...FEWSHOT_DEFAULTS,
    ...values,
    out: options.out,
    resume: options.resume ?? false,
  } as FewShotOptions;
  const results = await runFewShot(gpu, fewShot, {
    command: options.command,
    onEvent: options.onEvent,
  });
  await writeFewShotReport(options.out);
  return results;
}
