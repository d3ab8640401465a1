/**
 * `sweep`: runs a plan's cells through a backend (this machine, or a Slurm array), skipping cells
 * that are done, and reports every cell's state. Each cell runs as its own process,
 * `deno task sweep PLAN --out DIR --cell I`, on either backend, so both give the same results.
 *
 * @module
 */
import { join } from "node:path";
import {
  type Backend,
  type Launch,
  localLog,
  slurmLog,
  type SweepEvent,
  type SweepTarget,
} from "./backend.ts";
import { type Cell, SweepError } from "./plan.ts";
import { type CellStatus, cellStatus, recordLostCell } from "./cell.ts";
import { queueStates, slurmQueue } from "./slurm.ts";

/** Every cell's state; Slurm is asked about the cells it was given, if any. */
export async function sweepStatus(sweep: SweepTarget): Promise<CellStatus[]> {
  const slurm = await slurmQueue(sweep);
  const out: CellStatus[] = [];
  for (const cell of sweep.record.cells) {
    out.push(
      await cellStatus(sweep.dir, cell, {
        queue: slurm.queue,
        element: slurm.elements.get(cell.index),
      }),
    );
  }
  return out;
}

/** What `runSweep` did. */
export interface SweepOutcome {
  /** Cells launched. */
  launched: Cell[];
  /** Cells skipped because they are done. */
  skipped: Cell[];
  /** Cells left alone because another process runs them. */
  busy: Cell[];
  /** The backend's report. */
  launch?: Launch;
  /** Every cell's state afterwards. */
  status: CellStatus[];
}

/**
 * Runs the sweep: every cell that is not done (all with `force`), except cells another live
 * process is running, through `backend`. Cells that ended without a record of their own (killed
 * Slurm elements) get an error record.
 */
export async function runSweep(
  sweep: SweepTarget,
  backend: Backend,
  options: {
    force: boolean;
    onEvent?: (e: SweepEvent) => void;
    signal?: AbortSignal;
  },
): Promise<SweepOutcome> {
  const before = await sweepStatus(sweep);
  const stale = before.filter((s) => s.state === "missing" && s.detail.includes("other options"));
  if (stale.length > 0 && !options.force) {
    throw new SweepError(
      `${stale.map((s) => s.cell.name).join(", ")} in ${
        join(sweep.dir, "cells")
      } hold runs of other options; pass --force to replace them or use another --out`,
    );
  }
  const launched: Cell[] = [];
  const skipped: Cell[] = [];
  const busy: Cell[] = [];
  for (const s of before) {
    if (s.state === "running" || s.state === "queued") busy.push(s.cell);
    else if (s.state === "done" && !options.force) skipped.push(s.cell);
    else launched.push(s.cell);
  }
  let launch: Launch | undefined;
  if (launched.length > 0) {
    launch = await backend.launch(sweep, launched, {
      onEvent: options.onEvent,
      signal: options.signal,
    });
  }
  let status = await sweepStatus(sweep);
  if (launch?.ended) {
    const queue = launch.jobId ? await queueStates([launch.jobId]) : new Map<string, string>();
    let changed = false;
    for (const s of status) {
      if (!launched.includes(s.cell) || s.state === "done") continue;
      const element = launch.jobId ? `${launch.jobId}_${s.cell.index}` : undefined;
      const state = element ? queue.get(element) : undefined;
      if (s.state === "failed" && !s.detail.startsWith("stopped without a record")) {
        // A cell stopped by a signal says so; add why Slurm sent it (TIMEOUT, CANCELLED, ...).
        if (s.detail.startsWith("stopped by") && state && state !== "FAILED") {
          await recordLostCell(
            sweep.dir,
            s.cell,
            `${s.detail} (Slurm element ${element}: ${state})`,
            {
              log: s.log,
              slurmJob: element,
            },
          );
          changed = true;
        }
        continue;
      }
      await recordLostCell(
        sweep.dir,
        s.cell,
        `${element ? `Slurm element ${element}` : "the cell's process"} ended${
          state ? ` ${state}` : ""
        } without finishing the cell (killed, timed out or out of memory?)`,
        {
          log: s.log ?? (element ? slurmLog(sweep.dir, element) : localLog(sweep, s.cell)),
          ...(element ? { slurmJob: element } : {}),
        },
      );
      changed = true;
    }
    if (changed) status = await sweepStatus(sweep);
  }
  return { launched, skipped, busy, launch, status };
}
