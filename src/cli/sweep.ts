/**
 * `deno task sweep`: runs a plan's grid of experiments here or on Slurm (`--cell` runs one cell,
 * what each job does), and `--status` shows each cell of a sweep folder.
 *
 * @module
 */
import { basename, join, resolve } from "node:path";
import { EXPERIMENTS, runExperiment } from "../experiment.ts";
import type { Gpu } from "../gpu/device.ts";
import { writeReport } from "../report.ts";
import { slurmLog, type SweepTarget } from "../sweep/backend.ts";
import { type CellStatus, runCell } from "../sweep/cell.ts";
import { localBackend, LOG_ENV } from "../sweep/local.ts";
import { runSweep, sweepStatus } from "../sweep/mod.ts";
import {
  expandCells,
  isSweepDir,
  loadPlan,
  readSweep,
  sameCell,
  type SlurmSettings,
  SweepError,
  type SweepRecord,
  writeSweep,
} from "../sweep/plan.ts";
import { slurmBackend } from "../sweep/slurm.ts";
import { FEWSHOT_EXPERIMENT, fewShotRules, runFewShotCell } from "../sweep/fewshot.ts";
import { type Command, minutes, printAdapter, shown } from "./command.ts";
import { EXPERIMENT_FLAGS, experimentOptions, FEWSHOT_FLAGS } from "./experiment.ts";
import { checkOption, type Flag, UsageError } from "./flags.ts";

/** The flags of `sweep`; the options of its cells are those of `experiment`, in the plan. */
export const SWEEP_FLAGS: Flag[] = [
  { flag: "out", key: "out", kind: "string", help: "sweep folder (default runs/<plan name>)" },
  {
    flag: "backend",
    key: "backend",
    kind: "string",
    values: ["local", "slurm"],
    help: "where cells run",
  },
  { flag: "parallel", key: "parallel", kind: "int", help: "cells at once (slurm: the array's %P)" },
  { flag: "dry-run", key: "dryRun", kind: "bool", help: "print the cells and stop" },
  { flag: "force", key: "force", kind: "bool", help: "rerun cells that are done" },
  { flag: "cell", key: "cell", kind: "int", help: "run one cell by index (what each job runs)" },
  { flag: "status", key: "status", kind: "string", help: "print each cell's state in this folder" },
  { flag: "wait", key: "wait", kind: "bool", help: "slurm: wait until the array ends" },
  { flag: "poll", key: "poll", kind: "number", help: "slurm: seconds between squeue polls" },
  { flag: "partition", key: "partition", kind: "string", help: "slurm: partition" },
  { flag: "time", key: "time", kind: "string", help: "slurm: time limit per cell" },
  { flag: "cpus", key: "cpus", kind: "int", help: "slurm: CPUs per cell" },
  { flag: "mem", key: "mem", kind: "string", help: "slurm: memory per cell (e.g. 8G)" },
  { flag: "gres", key: "gres", kind: "string", help: "slurm: generic resources (e.g. gpu:1)" },
  {
    flag: "sbatch-arg",
    key: "args",
    kind: "strings",
    help: "slurm: one more sbatch argument (repeatable)",
  },
];

/** Defaults of `sweep`. */
const SWEEP_DEFAULTS = { backend: "local", parallel: 1, poll: 5 };

/** `sweep`: a plan's grid of experiments, or with `--status` the state of each cell. */
export const SWEEP_COMMAND: Command = {
  summary: "run a plan's grid of experiments here or on Slurm; --status DIR shows each cell",
  flags: SWEEP_FLAGS,
  defaults: SWEEP_DEFAULTS,
  positional: "PLAN.json",
  optional: true,
  run: runSweepCommand,
};

async function runSweepCommand(
  getGpuFn: () => Promise<Gpu>,
  given: Record<string, unknown>,
  quiet: boolean,
  [planPath]: string[],
): Promise<void> {
  if (typeof given.status === "string") {
    if (planPath) throw new UsageError("--status takes the sweep folder only; give no PLAN.json");
    await printSweepStatus(given.status);
    return;
  }
  if (!planPath) throw new UsageError("missing PLAN.json (or --status DIR)");
  const options = { ...SWEEP_DEFAULTS, ...given } as typeof SWEEP_DEFAULTS & {
    out?: string;
    dryRun?: boolean;
    force?: boolean;
    cell?: number;
    wait?: boolean;
  } & SlurmSettings;
  const plan = await loadPlan(planPath, {
    experiments: EXPERIMENTS,
    // A cell is an experiment: its folder, and whether it is whole, are the sweep's to decide.
    check: (key, value) =>
      checkOption(
        EXPERIMENT_FLAGS.filter((f) => f.key !== "out" && f.key !== "baseline"),
        key,
        value,
      ),
    listOptions: new Set(
      EXPERIMENT_FLAGS.filter((f) => f.kind === "ints" || f.kind === "numbers").map((f) => f.key),
    ),
    separate: {
      [FEWSHOT_EXPERIMENT]: fewShotRules((key, value) =>
        checkOption(
          FEWSHOT_FLAGS.filter((f) => f.key !== "out" && f.key !== "resume"),
          key,
          value,
        )
      ),
    },
  });
  const cells = expandCells(plan);
  const out = options.out ?? join("runs", basename(planPath).replace(/\.json$/, ""));
  const record: SweepRecord = { format: 1, plan: resolve(planPath), content: plan, cells };
  if (options.cell !== undefined) {
    await runSweepCell(getGpuFn, { dir: out, record }, {
      index: options.cell,
      force: Boolean(options.force),
      planPath,
      quiet,
    });
    return;
  }
  if (options.parallel < 1) throw new UsageError("--parallel must be at least 1");
  if (!(options.poll > 0)) throw new UsageError("--poll must be more than 0 seconds");
  const target = { dir: out, record };
  const before = await sweepStatus(target);
  const width = Math.max(4, ...cells.map((c) => c.name.length));
  console.log(`Sweep ${out}: ${cells.length} cell(s) from ${planPath}`);
  const fixed = Object.entries(plan.options).filter(([, v]) => v.length === 1);
  if (fixed.length > 0) {
    console.log(`  every cell: ${fixed.map(([k, v]) => `${k}=${JSON.stringify(v[0])}`).join(" ")}`);
  }
  for (const s of before) {
    const action = s.state === "done" && !options.force
      ? "skip (done)"
      : s.state === "running" || s.state === "queued"
      ? `leave (${s.state})`
      : "run";
    console.log(`  ${String(s.cell.index).padStart(3)}  ${s.cell.name.padEnd(width)}  ${action}`);
  }
  if (options.dryRun) {
    console.log("Dry run: nothing was started.");
    return;
  }
  await writeSweep(out, { path: planPath, content: plan, cells });
  const slurmSettings: SlurmSettings = { ...plan.slurm };
  for (const key of ["partition", "time", "cpus", "mem", "gres", "args"] as const) {
    if (given[key] !== undefined) (slurmSettings as Record<string, unknown>)[key] = given[key];
  }
  if (given.parallel !== undefined) slurmSettings.parallel = options.parallel;
  const backend = options.backend === "slurm"
    ? slurmBackend({
      ...slurmSettings,
      force: Boolean(options.force),
      wait: Boolean(options.wait),
      poll: options.poll,
    })
    : localBackend({ parallel: options.parallel, force: Boolean(options.force) });
  const started = performance.now();
  const stamp = () => `[${minutes((performance.now() - started) / 1000)}]`;
  const outcome = await runSweep(target, backend, {
    force: Boolean(options.force),
    onEvent: (e) => {
      if (e.kind === "submitted") {
        console.log(
          `Submitted Slurm array job ${e.jobId}: ${e.cells.length} cell(s), job script ${e.script}, logs ${
            join(out, "logs", `slurm-${e.jobId}_<cell>.log`)
          }`,
        );
      } else if (quiet) return;
      else if (e.kind === "start") {
        console.error(`${stamp()} cell ${e.cell.index} ${e.cell.name}: started, log ${e.log}`);
      } else if (e.kind === "end") {
        console.error(
          `${stamp()} cell ${e.cell.index} ${e.cell.name}: ${
            e.code === 0 ? "finished" : `failed (exit ${e.code})`
          }`,
        );
      } else if (e.kind === "queue") {
        const counts = Object.entries(e.counts).map(([k, v]) => `${v} ${k}`).join(", ");
        console.error(`${stamp()} Slurm job ${e.jobId}: ${counts || "not listed"}`);
      }
    },
  });
  if (outcome.launch && !outcome.launch.ended) {
    console.log(`Follow it with: deno task sweep --status ${shown(out)}`);
    return;
  }
  printStatusTable(outcome.status);
  if (outcome.busy.length > 0) {
    console.log(
      `Left alone (another process runs them): ${outcome.busy.map((c) => c.name).join(", ")}`,
    );
  }
  const failed = outcome.status.filter((s) => s.state === "failed");
  if (failed.length > 0) {
    throw new SweepError(
      `${failed.length} of ${cells.length} cell(s) failed: ${
        failed.map((s) => `${s.cell.name}${s.log ? ` (log ${s.log})` : ""}`).join(", ")
      }; the same command reruns them`,
    );
  }
  const done = outcome.status.filter((s) => s.state === "done").length;
  console.log(
    `${done} of ${cells.length} cell(s) done. Report: deno task report ${shown(out)}`,
  );
}

/** Runs one cell of a sweep in this process (what each job and each local worker runs). */
async function runSweepCell(
  getGpuFn: () => Promise<Gpu>,
  sweep: SweepTarget,
  options: { index: number; force: boolean; planPath: string; quiet: boolean },
): Promise<void> {
  const cells = sweep.record.cells;
  const cell = cells[options.index];
  if (!cell) {
    throw new UsageError(
      `--cell ${options.index}: the plan has ${cells.length} cell(s), numbered 0 to ${
        cells.length - 1
      }`,
    );
  }
  if (await isSweepDir(sweep.dir)) {
    const written = (await readSweep(sweep.dir)).cells[options.index];
    if (!written || !sameCell(written, cell)) {
      throw new SweepError(
        `${options.planPath} changed since ${
          join(sweep.dir, "sweep.json")
        } was written: cell ${options.index} is now '${cell.name}', there '${
          written?.name ?? "absent"
        }'; run the sweep again to resubmit`,
      );
    }
  } else {
    await writeSweep(sweep.dir, {
      path: options.planPath,
      content: sweep.record.content,
      cells,
    });
  }
  const arrayJob = Deno.env.get("SLURM_ARRAY_JOB_ID");
  const arrayTask = Deno.env.get("SLURM_ARRAY_TASK_ID");
  const slurmJob = arrayJob && arrayTask ? `${arrayJob}_${arrayTask}` : undefined;
  const log = Deno.env.get(LOG_ENV) ?? (slurmJob ? slurmLog(sweep.dir, slurmJob) : undefined);
  const started = performance.now();
  const outcome = await runCell(sweep.dir, cell, {
    force: options.force,
    log,
    slurmJob,
    onStop: (signal) => {
      console.error(`Cell ${cell.index} '${cell.name}' stopped by ${signal}; recorded as failed`);
      Deno.exit(signal === "SIGINT" ? 130 : 143);
    },
    work: async (dir) => {
      const gpu = await getGpuFn();
      printAdapter(gpu, options.quiet);
      if (cell.experiment === FEWSHOT_EXPERIMENT) {
        await runFewShotCell(gpu, cell.values, {
          out: dir,
          resume: !options.force,
          command: `deno task sweep ${shown(options.planPath)} --out ${
            shown(sweep.dir)
          } --cell ${cell.index}`,
          onEvent: (e) => {
            if (!options.quiet) {
              console.error(`[${minutes((performance.now() - started) / 1000)}] ${e.text}`);
            }
          },
        });
        return;
      }
      // A cell stopped part-way (a time limit, a kill) goes on from what it finished; --force
      // starts it afresh.
      const experiment = {
        ...experimentOptions(cell.experiment, cell.values),
        out: dir,
        resume: !options.force,
      };
      await runExperiment(gpu, experiment, {
        command: `deno task sweep ${shown(options.planPath)} --out ${
          shown(sweep.dir)
        } --cell ${cell.index}`,
        onEvent: (e) => {
          if (!options.quiet) {
            console.error(`[${minutes((performance.now() - started) / 1000)}] ${e.text}`);
          }
        },
      });
      await writeReport(dir);
    },
  });
  console.log(
    outcome === "skipped"
      ? `Cell ${cell.index} '${cell.name}' is done; skipped (--force reruns it)`
      : `Cell ${cell.index} '${cell.name}' done in ${
        minutes((performance.now() - started) / 1000)
      }: ${join(sweep.dir, "cells", cell.name, "results.json")}`,
  );
}

function printStatusTable(status: CellStatus[]): void {
  const width = Math.max(4, ...status.map((s) => s.cell.name.length));
  for (const s of status) {
    console.log(
      `  ${String(s.cell.index).padStart(3)}  ${s.cell.name.padEnd(width)}  ${
        s.state.padEnd(7)
      }  ${s.detail}${s.state === "failed" && s.log ? ` (log ${s.log})` : ""}`,
    );
  }
  const count = (state: string) => status.filter((s) => s.state === state).length;
  const queued = count("queued");
  console.log(
    `${count("done")} done, ${count("running")} running, ${count("failed")} failed, ${
      count("missing")
    } missing${queued ? `, ${queued} queued` : ""}`,
  );
}

async function printSweepStatus(dir: string): Promise<void> {
  const record = await readSweep(dir);
  console.log(`Sweep ${dir}: ${record.cells.length} cell(s) from ${record.plan}`);
  printStatusTable(await sweepStatus({ dir, record }));
}
