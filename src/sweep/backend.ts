/**
 * What the sweep's backends share: the small interface they implement, the command that runs one
 * cell, and where cells' logs go.
 *
 * @module
 */
import { join, resolve } from "node:path";
import type { Cell, SweepRecord } from "./plan.ts";

/** Progress of a sweep. */
export type SweepEvent =
  | { kind: "start"; cell: Cell; log: string }
  | { kind: "end"; cell: Cell; code: number; log: string }
  | { kind: "submitted"; jobId: string; cells: Cell[]; script: string }
  | { kind: "queue"; jobId: string; counts: Record<string, number> };

/** A sweep folder and its record. */
export interface SweepTarget {
  /** The sweep folder. */
  dir: string;
  /** Its `sweep.json`. */
  record: SweepRecord;
}

/** What a backend did. */
export interface Launch {
  /** Whether the cells have ended (false: submitted and left to run). */
  ended: boolean;
  /** Slurm array job id, when submitted to Slurm. */
  jobId?: string;
}

/** How cells run: one small interface for this machine and for Slurm. */
export interface Backend {
  /** Runs or submits `cells` of the sweep; resolves when they ended, or when submitted. */
  launch(
    sweep: SweepTarget,
    cells: Cell[],
    hooks: { onEvent?: (e: SweepEvent) => void; signal?: AbortSignal },
  ): Promise<Launch>;
}

/** The project root (where deno.json is), from this file's place in it. */
export const PROJECT_ROOT = resolve(new URL("../..", import.meta.url).pathname);

/**
 * The arguments of `deno` that run cell `index` of a sweep: `task sweep PLAN --out DIR --cell I`
 * (absolute paths), with `--force` when asked. The index is left off when `index` is undefined.
 */
export function cellArgs(
  sweep: SweepTarget,
  options: { force: boolean; index?: number },
): string[] {
  return [
    "task",
    "sweep",
    sweep.record.plan,
    "--out",
    resolve(sweep.dir),
    ...(options.force ? ["--force"] : []),
    "--cell",
    ...(options.index === undefined ? [] : [String(options.index)]),
  ];
}

/** The log file of a cell run by the local backend. */
export function localLog(sweep: SweepTarget, cell: Cell): string {
  return join(resolve(sweep.dir), "logs", `${cell.name}.log`);
}

/** The log file of a Slurm array element (`<job>_<index>`), as sbatch is told to write it. */
export function slurmLog(sweepDir: string, element: string): string {
  return join(resolve(sweepDir), "logs", `slurm-${element}.log`);
}
