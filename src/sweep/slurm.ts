/**
 * The Slurm backend: one array job per submission, `sbatch --array=<cells>%P`, each element
 * running `deno task sweep PLAN --out DIR --cell $SLURM_ARRAY_TASK_ID` in the project folder; with
 * `wait`, polls `squeue` until the array has left the queue. The sweep folder must be on a
 * filesystem every node shares.
 *
 * Nothing from the plan is pasted into the job script: its only values are the project folder,
 * the deno executable, the plan and the sweep folder, each single-quoted; sbatch options (from the
 * plan or flags) are passed to sbatch as separate arguments, never through a shell. Final states
 * come from `squeue --states=all` (jobs stay listed for MinJobAge, 300 s by default) and from the
 * cells' own records, so no accounting database (`sacct`) is needed.
 *
 * @module
 */
import { basename, join, resolve } from "node:path";
import { writeAtomic } from "../safetensors.ts";
import {
  type Backend,
  cellArgs,
  type Launch,
  PROJECT_ROOT,
  type SweepEvent,
  type SweepTarget,
} from "./backend.ts";
import type { Cell, SlurmSettings } from "./plan.ts";

/** A Slurm command failed or is missing. */
export class SlurmError extends Error {}

/** Options of the Slurm backend (plan settings with flags applied). */
export interface SlurmOptions extends SlurmSettings {
  /** Rerun cells that are done. */
  force: boolean;
  /** Wait for the array to end. */
  wait: boolean;
  /** Seconds between polls while waiting. */
  poll: number;
  /** The deno executable the job runs (default: this one). */
  deno?: string;
}

/** One submission, as kept in `<sweep>/slurm/jobs.json`. */
export interface Submission {
  /** Array job id. */
  jobId: string;
  /** Cell indices submitted (array indices). */
  cells: number[];
  /** ISO time. */
  submitted: string;
  /** The sbatch arguments used. */
  sbatch: string[];
}

/** Slurm states in which an element has not ended. */
const ACTIVE = new Set([
  "PENDING",
  "CONFIGURING",
  "RUNNING",
  "COMPLETING",
  "SUSPENDED",
  "REQUEUED",
  "REQUEUE_HOLD",
  "REQUEUE_FED",
  "RESIZING",
  "SIGNALING",
  "STAGE_OUT",
  "STOPPED",
]);

/** `text` as one word for bash: single-quoted, with single quotes spelled '\''. */
export function shellQuote(text: string): string {
  if (text.includes("\0")) throw new SlurmError(`a NUL byte cannot pass through a job script`);
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

/** A path for sbatch's filename patterns: `%` doubled so it stays literal. */
function literalPattern(path: string): string {
  return path.replaceAll("%", "%%");
}

/** The `--array` value for these indices: ranges joined by commas, then `%parallel`. */
export function arraySpec(indices: readonly number[], parallel?: number): string {
  const sorted = [...new Set(indices)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length;) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(",") + (parallel ? `%${parallel}` : "");
}

/** The job script: change to the project folder and run the element's cell. */
export function jobScript(
  sweep: SweepTarget,
  options: { force: boolean; deno?: string; root?: string },
): string {
  const args = cellArgs(sweep, { force: options.force }).map(shellQuote).join(" ");
  return [
    "#!/bin/bash",
    "# One SuperNet sweep cell per array element (the cell index is the array index).",
    "# Written by 'deno task sweep'; its options are passed to sbatch on the command line.",
    `cd ${shellQuote(options.root ?? PROJECT_ROOT)} || exit 1`,
    `exec ${shellQuote(options.deno ?? Deno.execPath())} ${args} "$SLURM_ARRAY_TASK_ID"`,
    "",
  ].join("\n");
}

/** The sbatch arguments of a submission (without the script). */
export function sbatchArgs(
  sweep: SweepTarget,
  cells: readonly number[],
  settings: SlurmSettings,
): string[] {
  const name = `supernet-${basename(resolve(sweep.dir)).replace(/[^A-Za-z0-9._-]/g, "-")}`;
  const logs = join(resolve(sweep.dir), "logs");
  return [
    "--parsable",
    `--array=${arraySpec(cells, settings.parallel)}`,
    `--job-name=${name}`,
    `--output=${join(literalPattern(logs), "slurm-%A_%a.log")}`,
    ...(settings.partition ? [`--partition=${settings.partition}`] : []),
    ...(settings.time ? [`--time=${settings.time}`] : []),
    ...(settings.cpus ? [`--cpus-per-task=${settings.cpus}`] : []),
    ...(settings.mem ? [`--mem=${settings.mem}`] : []),
    ...(settings.gres ? [`--gres=${settings.gres}`] : []),
    ...(settings.args ?? []),
  ];
}

/** Runs a Slurm command; errors name it and give its first line of stderr. */
async function slurm(command: string, args: string[]): Promise<string> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new SlurmError(
        `${command} not found: --backend slurm needs Slurm's client commands on PATH (see README, "Sweeps"); or use --backend local`,
      );
    }
    throw e;
  }
  const stdout = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").filter(Boolean);
    throw new SlurmError(
      `${command} failed (exit ${out.code}): ${err.at(-1) ?? stdout.trim() ?? "no message"}`,
    );
  }
  return stdout;
}

/** Reads `<sweep>/slurm/jobs.json` (empty when absent). */
export async function submissions(sweepDir: string): Promise<Submission[]> {
  try {
    return JSON.parse(await Deno.readTextFile(join(sweepDir, "slurm", "jobs.json")));
  } catch {
    return [];
  }
}

/** Writes the job script and submits the cells as one array; returns the job id. */
export async function submit(
  sweep: SweepTarget,
  cells: readonly Cell[],
  options: SlurmOptions,
): Promise<{ jobId: string; script: string }> {
  const folder = join(resolve(sweep.dir), "slurm");
  await Deno.mkdir(folder, { recursive: true });
  await Deno.mkdir(join(resolve(sweep.dir), "logs"), { recursive: true });
  const script = join(folder, "job.sh");
  await writeAtomic(script, jobScript(sweep, options));
  await Deno.chmod(script, 0o755).catch(() => {});
  const args = sbatchArgs(sweep, cells.map((c) => c.index), options);
  const out = await slurm("sbatch", [...args, script]);
  const jobId = out.trim().split(";")[0]!;
  if (!/^\d+$/.test(jobId)) throw new SlurmError(`sbatch printed '${out.trim()}', not a job id`);
  const list = await submissions(sweep.dir);
  list.push({
    jobId,
    cells: cells.map((c) => c.index),
    submitted: new Date().toISOString(),
    sbatch: args,
  });
  await writeAtomic(join(folder, "jobs.json"), JSON.stringify(list, null, 2) + "\n");
  return { jobId, script };
}

/**
 * Slurm's states of the elements of these array jobs (`<job>_<index>` -> state), including ended
 * ones still listed; jobs Slurm no longer knows are left out.
 */
export async function queueStates(jobIds: readonly string[]): Promise<Map<string, string>> {
  const states = new Map<string, string>();
  for (const id of jobIds) {
    let text: string;
    try {
      text = await slurm("squeue", [
        "--noheader",
        "--array",
        "--states=all",
        "--jobs",
        id,
        "--format=%i|%T",
      ]);
    } catch (e) {
      if (e instanceof SlurmError && /Invalid job id/i.test(e.message)) continue;
      throw e;
    }
    for (const line of text.split("\n")) {
      const [element, state] = line.trim().split("|");
      if (element && state) states.set(element, state);
    }
  }
  return states;
}

/** Polls squeue every `poll` seconds until no element of the array is pending or running. */
async function waitForArray(
  jobId: string,
  options: { poll: number; onEvent?: (e: SweepEvent) => void; signal?: AbortSignal },
): Promise<void> {
  let last = "";
  while (!options.signal?.aborted) {
    const states = await queueStates([jobId]);
    const counts: Record<string, number> = {};
    for (const s of states.values()) counts[s.toLowerCase()] = (counts[s.toLowerCase()] ?? 0) + 1;
    const text = JSON.stringify(counts);
    if (text !== last) options.onEvent?.({ kind: "queue", jobId, counts });
    last = text;
    if (![...states.values()].some((s) => ACTIVE.has(s))) return;
    await new Promise((r) => setTimeout(r, options.poll * 1000));
  }
}

/** The Slurm backend. */
export function slurmBackend(options: SlurmOptions): Backend {
  return {
    async launch(sweep, cells, hooks): Promise<Launch> {
      const { jobId, script } = await submit(sweep, cells, options);
      hooks.onEvent?.({ kind: "submitted", jobId, cells, script });
      if (!options.wait) return { ended: false, jobId };
      await waitForArray(jobId, { poll: options.poll, ...hooks });
      return { ended: !hooks.signal?.aborted, jobId };
    },
  };
}

/**
 * Slurm's view of a sweep: the states of its submissions' elements, and each cell's latest
 * element. Without Slurm's commands, both are empty.
 */
export async function slurmQueue(
  sweep: SweepTarget,
): Promise<{ queue: Map<string, string>; elements: Map<number, string> }> {
  const list = await submissions(sweep.dir);
  const elements = new Map<number, string>();
  for (const s of list) for (const i of s.cells) elements.set(i, `${s.jobId}_${i}`);
  if (list.length === 0) return { queue: new Map(), elements };
  try {
    return { queue: await queueStates([...new Set(list.map((s) => s.jobId))]), elements };
  } catch (e) {
    if (e instanceof SlurmError) return { queue: new Map(), elements };
    throw e;
  }
}
