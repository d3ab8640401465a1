/**
 * One cell of a sweep on disk: its run folder holds `cell.json` (what it runs), `running.json`
 * (a lock: host, process, Slurm element), then either `done.json` (written last, after the
 * experiment's `results.json`) or `error.json` (the message and where the log is). A cell counts
 * as done only when `done.json` and `results.json` exist and `cell.json` matches the plan, so a
 * cell killed at any moment is never taken for done.
 *
 * @module
 */
import { join } from "node:path";
import { writeAtomic } from "../safetensors.ts";
import { type Cell, cellDir, sameCell, SweepError } from "./plan.ts";

/** Where a cell stands. `queued`: waiting in Slurm. */
export type CellState = "done" | "running" | "failed" | "missing" | "queued";

/** A cell's state with a few words of detail. */
export interface CellStatus {
  /** The cell. */
  cell: Cell;
  /** Its state. */
  state: CellState;
  /** Why, where, or how long, in words. */
  detail: string;
  /** The log to read, when known. */
  log?: string;
}

/** The lock of a running cell. */
export interface RunningRecord {
  /** Host name. */
  host: string;
  /** Process id on that host. */
  pid: number;
  /** ISO time it started. */
  started: string;
  /** Slurm array element (`<array job>_<index>`), when run by Slurm. */
  slurmJob?: string;
  /** Its log file. */
  log?: string;
}

/** Why a cell failed. */
export interface ErrorRecord {
  /** The error, one line. */
  message: string;
  /** ISO time. */
  at: string;
  /** Host name. */
  host: string;
  /** Slurm array element, when run by Slurm. */
  slurmJob?: string;
  /** Its log file. */
  log?: string;
  /** The stack, for bugs. */
  stack?: string;
}

/** A finished cell. */
export interface DoneRecord {
  /** ISO time it finished. */
  finished: string;
  /** Wall seconds of the cell. */
  seconds: number;
  /** Host name. */
  host: string;
  /** Slurm array element, when run by Slurm. */
  slurmJob?: string;
}

/** File names of a cell's records. */
export const RECORDS = {
  cell: "cell.json",
  running: "running.json",
  error: "error.json",
  done: "done.json",
  results: "results.json",
} as const;

/** This machine's name (from HOSTNAME, or `unknown`, without permission to ask; never prompts). */
export function hostName(): string {
  const granted = Deno.permissions.querySync({ name: "sys", kind: "hostname" }).state === "granted";
  return granted ? Deno.hostname() : Deno.env.get("HOSTNAME") ?? "unknown";
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(path)) as T;
  } catch {
    return undefined;
  }
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/**
 * Whether process `pid` on this host is a running cell: `ps` shows its command line with
 * `--cell`; without `ps`, whether it exists (`kill -0`). Undefined without permission to run them
 * (never prompts).
 */
async function cellProcessAlive(pid: number): Promise<boolean | undefined> {
  const allowed = (command: string) =>
    Deno.permissions.querySync({ name: "run", command }).state === "granted";
  const run = async (command: string, args: string[]) =>
    await new Deno.Command(command, { args, stdin: "null", stdout: "piped", stderr: "null" })
      .output();
  try {
    if (!allowed("ps")) return undefined;
    const out = await run("ps", ["-o", "args=", "-p", String(pid)]);
    return out.success && new TextDecoder().decode(out.stdout).includes("--cell");
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound) || !allowed("sh")) return undefined;
    return (await run("sh", ["-c", 'kill -0 "$1"', "sh", String(pid)])).success;
  }
}

/**
 * Whether the process of a running record is alive: asked of this host's process table when the
 * record is from this host, of Slurm's queue (`queue`: element -> state) for an element
 * elsewhere; undefined when it cannot be told.
 */
export async function isAlive(
  record: RunningRecord,
  queue?: ReadonlyMap<string, string>,
): Promise<boolean | undefined> {
  if (record.host === hostName()) {
    const alive = await cellProcessAlive(record.pid);
    if (alive !== undefined) return alive;
  }
  if (record.slurmJob && queue) {
    const state = queue.get(record.slurmJob);
    return state === "RUNNING" || state === "COMPLETING" || state === "CONFIGURING";
  }
  return undefined;
}

/**
 * The state of a cell from its records. `queue` is Slurm's view (element -> state) and
 * `element` the Slurm element the cell was last submitted as, when there is one.
 */
export async function cellStatus(
  sweepDir: string,
  cell: Cell,
  options: { queue?: ReadonlyMap<string, string>; element?: string } = {},
): Promise<CellStatus> {
  const dir = cellDir(sweepDir, cell);
  const recorded = await readJson<Cell>(join(dir, RECORDS.cell));
  if (recorded && !sameCell({ ...recorded, index: cell.index }, cell)) {
    return {
      cell,
      state: "missing",
      detail: "its folder holds a run of other options; --force replaces it",
    };
  }
  const done = await readJson<DoneRecord>(join(dir, RECORDS.done));
  if (done && recorded && await exists(join(dir, RECORDS.results))) {
    return {
      cell,
      state: "done",
      detail: `${done.seconds.toFixed(0)} s on ${done.host}${
        done.slurmJob ? ` (Slurm ${done.slurmJob})` : ""
      }`,
    };
  }
  const running = await readJson<RunningRecord>(join(dir, RECORDS.running));
  if (running || await exists(join(dir, RECORDS.running))) {
    const alive = running ? await isAlive(running, options.queue) : true;
    if (alive !== false) {
      return {
        cell,
        state: "running",
        detail: running
          ? `since ${running.started} on ${running.host}, pid ${running.pid}${
            running.slurmJob ? `, Slurm ${running.slurmJob}` : ""
          }${alive === undefined ? " (not verifiable from here)" : ""}`
          : "starting",
        log: running?.log,
      };
    }
    return {
      cell,
      state: "failed",
      detail: `stopped without a record (killed?) after starting ${running!.started} on ${
        running!.host
      }`,
      log: running!.log,
    };
  }
  const error = await readJson<ErrorRecord>(join(dir, RECORDS.error));
  if (error) return { cell, state: "failed", detail: error.message, log: error.log };
  const queued = options.element ? options.queue?.get(options.element) : undefined;
  if (queued === "PENDING" || queued === "CONFIGURING" || queued === "RUNNING") {
    return { cell, state: "queued", detail: `Slurm ${options.element} ${queued.toLowerCase()}` };
  }
  return { cell, state: "missing", detail: "not run yet" };
}

/** How `runCell` ended. */
export type CellOutcome = "done" | "skipped";

/**
 * Runs one cell: skips it when done (unless `force`), takes its lock (refusing when another live
 * process holds it), records it, runs `work(dir)`, and writes `done.json` or `error.json`. On
 * SIGINT or SIGTERM it records the stop, releases the lock and calls `onStop` (which exits).
 */
export async function runCell(
  sweepDir: string,
  cell: Cell,
  options: {
    force: boolean;
    work: (dir: string) => Promise<void>;
    log?: string;
    slurmJob?: string;
    onStop?: (signal: Deno.Signal) => void;
  },
): Promise<CellOutcome> {
  const dir = cellDir(sweepDir, cell);
  const status = await cellStatus(sweepDir, cell);
  if (status.state === "done" && !options.force) return "skipped";
  if (status.state === "missing" && status.detail.includes("other options") && !options.force) {
    throw new SweepError(
      `${dir} holds a run of other options than cell ${cell.index} '${cell.name}'; pass --force to replace it or use another --out`,
    );
  }
  await Deno.mkdir(dir, { recursive: true });
  const host = hostName();
  await takeLock(join(dir, RECORDS.running), {
    host,
    pid: Deno.pid,
    started: new Date().toISOString(),
    ...(options.slurmJob ? { slurmJob: options.slurmJob } : {}),
    ...(options.log ? { log: options.log } : {}),
  });
  const errorRecord = (message: string, stack?: string): string =>
    JSON.stringify(
      {
        message,
        at: new Date().toISOString(),
        host,
        ...(options.slurmJob ? { slurmJob: options.slurmJob } : {}),
        ...(options.log ? { log: options.log } : {}),
        ...(stack ? { stack } : {}),
      } satisfies ErrorRecord,
      null,
      2,
    ) + "\n";
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  const handlers = signals.map((signal) => {
    const handler = () => {
      const path = join(dir, RECORDS.error);
      Deno.writeTextFileSync(`${path}.tmp-${Deno.pid}`, errorRecord(`stopped by ${signal}`));
      Deno.renameSync(`${path}.tmp-${Deno.pid}`, path);
      try {
        Deno.removeSync(join(dir, RECORDS.running));
      } catch {
        // Already gone.
      }
      options.onStop?.(signal);
    };
    Deno.addSignalListener(signal, handler);
    return [signal, handler] as const;
  });
  const started = performance.now();
  try {
    for (const f of [RECORDS.done, RECORDS.error, RECORDS.results]) {
      await Deno.remove(join(dir, f)).catch(() => {});
    }
    await writeAtomic(
      join(dir, RECORDS.cell),
      JSON.stringify(cell, null, 2) + "\n",
    );
    try {
      await options.work(dir);
      if (!await exists(join(dir, RECORDS.results))) {
        throw new Error(`the experiment ended without writing ${RECORDS.results}`);
      }
    } catch (e) {
      const message = ((e as Error)?.message ?? String(e)).split("\n")[0]!;
      await writeAtomic(join(dir, RECORDS.error), errorRecord(message, (e as Error)?.stack));
      throw e;
    }
    const done: DoneRecord = {
      finished: new Date().toISOString(),
      seconds: (performance.now() - started) / 1000,
      host,
      ...(options.slurmJob ? { slurmJob: options.slurmJob } : {}),
    };
    await writeAtomic(join(dir, RECORDS.done), JSON.stringify(done, null, 2) + "\n");
    return "done";
  } finally {
    for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
    await Deno.remove(join(dir, RECORDS.running)).catch(() => {});
  }
}

/** Records that a cell ended without a record of its own (e.g. its Slurm element was killed). */
export async function recordLostCell(
  sweepDir: string,
  cell: Cell,
  message: string,
  extra: { log?: string; slurmJob?: string } = {},
): Promise<void> {
  const dir = cellDir(sweepDir, cell);
  await Deno.mkdir(dir, { recursive: true });
  const record: ErrorRecord = {
    message,
    at: new Date().toISOString(),
    host: hostName(),
    ...extra,
  };
  await writeAtomic(join(dir, RECORDS.error), JSON.stringify(record, null, 2) + "\n");
  await Deno.remove(join(dir, RECORDS.running)).catch(() => {});
}

/** Creates the lock file; a stale lock (its process is gone) is replaced, a live one refused. */
async function takeLock(path: string, record: RunningRecord): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const file = await Deno.open(path, { createNew: true, write: true });
      try {
        await file.write(new TextEncoder().encode(JSON.stringify(record, null, 2) + "\n"));
      } finally {
        file.close();
      }
      return;
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      const other = await readJson<RunningRecord>(path);
      if (!other || await isAlive(other) !== false) {
        throw new SweepError(
          `${path}: the cell is already running${
            other ? ` (pid ${other.pid} on ${other.host} since ${other.started})` : ""
          }; wait for it, or delete this file if that process is gone`,
        );
      }
      await Deno.remove(path).catch(() => {});
    }
  }
  throw new SweepError(`${path}: could not take the cell's lock; another process keeps taking it`);
}
