/**
 * A sweep plan: lists of values per option of `experiment`, expanded into cells (the cartesian
 * product), each with a stable name and its own run folder under the sweep folder.
 *
 * ```json
 * {
 *   "experiment": ["exp1", "exp2"],
 *   "options": { "profile": "smoke", "seed": [1, 2, 3], "lr": [0.001, 0.003], "shots": [[0]] },
 *   "slurm": { "parallel": 4, "time": "01:00:00", "cpus": 2, "gres": "gpu:1" }
 * }
 * ```
 *
 * An option's value is the list of values to try; a single value may be written without the list,
 * except for options whose values are themselves lists (`shots`, `hidden`), which are always a
 * list of lists.
 *
 * An experiment with options of its own (`fewshot`, the options of `experiment fewshot`) is swept
 * by a plan of its own:
 *
 * ```json
 * { "experiment": "fewshot", "options": { "ways": 5, "shots": [[1, 5]], "seed": [1, 2, 3] } }
 * ```
 *
 * @module
 */
import { join, resolve } from "node:path";
import { writeAtomic } from "../safetensors.ts";

/** A mistake in a plan, named with the file and the value (a usage error). */
export class PlanError extends Error {}

/** A sweep that cannot go on: a folder that is not a sweep's, a cell another process runs. */
export class SweepError extends Error {}

/** Slurm settings a plan may carry (flags override them). */
export interface SlurmSettings {
  /** Partition (`--partition`). */
  partition?: string;
  /** Time limit per cell (`--time`, e.g. "01:00:00"). */
  time?: string;
  /** CPUs per cell (`--cpus-per-task`). */
  cpus?: number;
  /** Memory per cell (`--mem`, e.g. "8G"). */
  mem?: string;
  /** Generic resources per cell (`--gres`, e.g. "gpu:1"). */
  gres?: string;
  /** At most this many cells at once (the `%P` of `--array`). */
  parallel?: number;
  /** Further sbatch arguments, one per element (e.g. "--qos=short"). */
  args?: string[];
}

/** A sweep plan as written in its JSON file. */
export interface Plan {
  /** Experiments to run (`exp1`, `exp2`). */
  experiment: string[];
  /** Option (the keys of `experiment --config`) -> the values to try. */
  options: Record<string, unknown[]>;
  /** Slurm settings. */
  slurm: SlurmSettings;
}

/** One cell of a sweep: an experiment with one value per option. */
export interface Cell {
  /** Position in the expansion (the Slurm array index). */
  index: number;
  /** Stable, unique folder name, e.g. `exp1_lr-0.003_seed-2`. */
  name: string;
  /** The experiment. */
  experiment: string;
  /** Every option's value for this cell, in the plan's order. */
  values: Record<string, unknown>;
}

/** What `sweep` records in `<sweep folder>/sweep.json`. */
export interface SweepRecord {
  /** Format version. */
  format: 1;
  /** Absolute path of the plan file. */
  plan: string;
  /** The plan as read. */
  content: Plan;
  /** The cells. */
  cells: Cell[];
}

/** The file a sweep folder is recognised by. */
export const SWEEP_FILE = "sweep.json";
/** The folder of the cells' run folders inside a sweep folder. */
export const CELLS_DIR = "cells";
/** The option that repeats a cell; cells that differ only by it are grouped in reports. */
export const SEED_OPTION = "seed";

/** Checks one option value; returns what is wrong with it, or undefined when it is fine. */
export type OptionCheck = (key: string, value: unknown) => string | undefined;

/** How the options of an experiment are checked. */
export interface OptionRules {
  /** Checks one value. */
  check: OptionCheck;
  /** Options whose single value is itself a list (default {@link LIST_OPTIONS}). */
  listOptions?: Set<string>;
}

const SLURM_KEYS: Record<keyof SlurmSettings, "string" | "int" | "strings"> = {
  partition: "string",
  time: "string",
  cpus: "int",
  mem: "string",
  gres: "string",
  parallel: "int",
  args: "strings",
};

/** Options whose single value is itself a list, so the plan always gives a list of lists. */
export const LIST_OPTIONS = new Set(["shots", "hidden"]);

/** What a plan may run: `experiments` share `check` and `listOptions`; each of `separate` has
 * options of its own, so a plan that names it names no other experiment. */
export interface PlanRules extends OptionRules {
  /** Experiments that share these rules (`exp1`, `exp2`). */
  experiments: readonly string[];
  /** Experiment -> its own rules (`fewshot`). */
  separate?: Readonly<Record<string, OptionRules>>;
}

/**
 * Reads and checks a plan: experiments, option names and values (each checked by its
 * experiment's `check`), Slurm settings. Errors name the file and the offending entry.
 */
export async function loadPlan(path: string, options: PlanRules): Promise<Plan> {
  let data: unknown;
  try {
    data = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new PlanError(
      `${path}: ${
        e instanceof Deno.errors.NotFound ? "not found" : `not valid JSON (${(e as Error).message})`
      }; expected a sweep plan (see README, "Sweeps")`,
    );
  }
  return parsePlan(data, { ...options, source: path });
}

/** Checks a plan already parsed from JSON; `source` names it in errors. */
export function parsePlan(data: unknown, options: PlanRules & { source: string }): Plan {
  const src = options.source;
  const separate = options.separate ?? {};
  const known = [...options.experiments, ...Object.keys(separate)];
  if (!isObject(data)) throw new PlanError(`${src}: expected a JSON object with "experiment"`);
  for (const key of Object.keys(data)) {
    if (!["experiment", "options", "slurm"].includes(key)) {
      throw new PlanError(
        `${src}: unknown field '${key}'; expected "experiment", "options" and "slurm"`,
      );
    }
  }
  const experiment = asList(data.experiment);
  if (experiment.length === 0) {
    throw new PlanError(`${src}: "experiment" is missing; expected e.g. ["exp1", "exp2"]`);
  }
  for (const e of experiment) {
    if (typeof e !== "string" || !known.includes(e)) {
      throw new PlanError(
        `${src}: experiment ${JSON.stringify(e)} is not one of ${known.join(", ")}`,
      );
    }
  }
  const names = [...new Set(experiment as string[])];
  const own = names.find((e) => Object.hasOwn(separate, e));
  if (own !== undefined && names.length > 1) {
    throw new PlanError(
      `${src}: experiment "${own}" takes options of its own, so it cannot share a plan with ${
        names.filter((e) => e !== own).join(", ")
      }; give it a plan of its own`,
    );
  }
  const rules: OptionRules = own !== undefined ? separate[own]! : options;
  const lists = rules.listOptions ?? LIST_OPTIONS;
  const given = data.options ?? {};
  if (!isObject(given)) throw new PlanError(`${src}: "options" must be an object of lists`);
  const planOptions: Record<string, unknown[]> = {};
  for (const [key, raw] of Object.entries(given)) {
    if (key === "out" || key === "config") {
      throw new PlanError(
        `${src}: options.${key} is set by the sweep (each cell has its own folder); remove it`,
      );
    }
    const values = lists.has(key)
      ? (Array.isArray(raw) && raw.every(Array.isArray) ? raw : undefined)
      : asList(raw);
    if (values === undefined) {
      throw new PlanError(
        `${src}: options.${key} takes lists, so give a list of them, e.g. "${key}": [[1, 5], [0]]`,
      );
    }
    if (values.length === 0) throw new PlanError(`${src}: options.${key} is an empty list`);
    const seen = new Set<string>();
    values.forEach((v, i) => {
      const problem = rules.check(key, v);
      if (problem) throw new PlanError(`${src}: options.${key}[${i}]: ${problem}`);
      const text = JSON.stringify(v);
      if (seen.has(text)) throw new PlanError(`${src}: options.${key} lists ${text} twice`);
      seen.add(text);
    });
    planOptions[key] = values;
  }
  const slurm = data.slurm ?? {};
  if (!isObject(slurm)) throw new PlanError(`${src}: "slurm" must be an object`);
  for (const [key, v] of Object.entries(slurm)) {
    const kind = SLURM_KEYS[key as keyof SlurmSettings];
    const ok = kind === "string"
      ? typeof v === "string" && v !== ""
      : kind === "int"
      ? Number.isInteger(v) && (v as number) >= 1
      : kind === "strings"
      ? Array.isArray(v) && v.every((x) => typeof x === "string")
      : false;
    if (!ok) {
      throw new PlanError(
        kind === undefined
          ? `${src}: unknown slurm setting '${key}'; expected ${Object.keys(SLURM_KEYS).join(", ")}`
          : `${src}: slurm.${key} must be ${
            kind === "int"
              ? "a positive integer"
              : kind === "string"
              ? "a string"
              : "a list of strings"
          }`,
      );
    }
  }
  return {
    experiment: names,
    options: planOptions,
    slurm: slurm as SlurmSettings,
  };
}

/**
 * The plan's cells: experiments outermost, then the options in the plan's order (the last one
 * varies fastest). Names list the experiment and every option that takes more than one value;
 * names that would collide after making them safe for file names get a short hash of the cell.
 */
export function expandCells(plan: Plan): Cell[] {
  let combos: Record<string, unknown>[] = [{}];
  for (const [key, values] of Object.entries(plan.options)) {
    combos = combos.flatMap((c) => values.map((v) => ({ ...c, [key]: v })));
  }
  const varying = Object.keys(plan.options).filter((k) => plan.options[k]!.length > 1);
  const cells = plan.experiment.flatMap((experiment) =>
    combos.map((values) => ({
      experiment,
      values,
      name: [experiment, ...varying.map((k) => `${k}-${valueName(values[k])}`)].join("_"),
    }))
  );
  const count = new Map<string, number>();
  for (const c of cells) count.set(c.name, (count.get(c.name) ?? 0) + 1);
  return cells.map((c, index) => ({
    index,
    name: count.get(c.name)! > 1 || c.name.length > 120
      ? `${c.name.slice(0, 110)}_${hash(JSON.stringify([c.experiment, c.values]))}`
      : c.name,
    experiment: c.experiment,
    values: c.values,
  }));
}

function valueName(v: unknown): string {
  const text = Array.isArray(v) ? v.map(String).join("+") : String(v);
  return text.replace(/[^A-Za-z0-9.+=-]/g, "-");
}

/** An 8-hex-digit FNV-1a hash (names only; not for security). */
function hash(text: string): string {
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) h = Math.imul(h ^ byte, 0x01000193) >>> 0;
  return h.toString(16).padStart(8, "0");
}

/** Whether two cells run the same thing (experiment and every option value). */
export function sameCell(a: Cell, b: Cell): boolean {
  return a.name === b.name && a.experiment === b.experiment &&
    JSON.stringify(a.values) === JSON.stringify(b.values);
}

/** The run folder of a cell. */
export function cellDir(sweepDir: string, cell: Cell): string {
  return join(sweepDir, CELLS_DIR, cell.name);
}

/** Reads `<dir>/sweep.json`; errors say the folder is not a sweep folder. */
export async function readSweep(dir: string): Promise<SweepRecord> {
  const path = join(dir, SWEEP_FILE);
  try {
    const record = JSON.parse(await Deno.readTextFile(path)) as SweepRecord;
    if (record.format !== 1 || !Array.isArray(record.cells)) throw new SyntaxError("format");
    return record;
  } catch (e) {
    throw new SweepError(
      `${path}: ${
        e instanceof Deno.errors.NotFound ? "not found" : "not a sweep record"
      }; expected a folder written by 'deno task sweep PLAN.json --out DIR'`,
    );
  }
}

/** Whether `dir` is a sweep folder. */
export async function isSweepDir(dir: string): Promise<boolean> {
  return await Deno.stat(join(dir, SWEEP_FILE)).then((s) => s.isFile, () => false);
}

/** Writes `<dir>/sweep.json` for a plan and its cells (atomically). */
export async function writeSweep(
  dir: string,
  plan: { path: string; content: Plan; cells: Cell[] },
): Promise<SweepRecord> {
  const record: SweepRecord = {
    format: 1,
    plan: resolve(plan.path),
    content: plan.content,
    cells: plan.cells,
  };
  await Deno.mkdir(join(dir, CELLS_DIR), { recursive: true });
  await writeAtomic(join(dir, SWEEP_FILE), JSON.stringify(record, null, 2) + "\n");
  return record;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function asList(v: unknown): unknown[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}
