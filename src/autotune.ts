/**
 * `deno task tune`: fills the kernel tuner's cache ahead of time for the shapes training,
 * adaptation and the benchmarks use (the SuperNet's training step at the given task counts,
 * batch and input shapes), then prints the winners for this adapter. Shape classes already in
 * the cache are not timed again (remove the cache file, or pass --cache elsewhere, to redo them).
 *
 * Flags: --tasks 1,8,16,64 (task counts), --batch 32, --input 3x32x32,1x28x28 (C x H x W of
 * each dataset), --cache PATH (the cache file), --tiny (T = 1, 2 and B = 4: a quick check).
 *
 * @module
 */
import { type Flag, HELP_FLAG, parseFlags, usage, UsageError } from "./cli/flags.ts";
import type { BatchSource } from "./engine.ts";
import { StepProgram } from "./engine.ts";
import { getGpu, type Gpu } from "./gpu/device.ts";
import type { Dispatch } from "./gpu/kernel.ts";
import { createTensor } from "./gpu/tensor.ts";
import {
  configureTuning,
  readTuneCache,
  type TuneEntry,
  tunePending,
  type TuneResult,
  tuneSaveProblem,
  tuneSettings,
} from "./gpu/tune.ts";
import { SuperNet, superNetConfig } from "./model/supernet.ts";
import { optimizerConfig, ParamGroup } from "./optim.ts";

/** Options of {@linkcode autotune}. */
export interface TuneOptions {
  /** Task counts per step to tune for. */
  tasks: number[];
  /** Images per task. */
  batch: number;
  /** Input shapes [C, H, W] of the datasets. */
  inputs: [number, number, number][];
  /** The cache file (default: the tuner's own). */
  cache?: string;
  /** Called after each shape class is timed. */
  onResult?: (r: TuneResult) => void;
}

/** Parses "3x32x32" as [3, 32, 32]. */
export function parseInputShape(text: string): [number, number, number] {
  const parts = text.split("x").map(Number);
  if (parts.length !== 3 || parts.some((p) => !Number.isInteger(p) || p < 1)) {
    throw new RangeError(`--input ${text}: expected C x H x W, e.g. 3x32x32`);
  }
  return parts as [number, number, number];
}

/** Parses "1,8,16" as [1, 8, 16] (positive integers). */
export function parseCounts(flag: string, text: string): number[] {
  const values = text.split(",").map(Number);
  if (values.some((v) => !Number.isInteger(v) || v < 1)) {
    throw new RangeError(`${flag} ${text}: expected positive integers separated by commas`);
  }
  return values;
}

/** A source of zeros: tuning needs the shapes only. */
function zeroSource(gpu: Gpu, T: number, B: number, input: readonly number[]): BatchSource {
  const none: Dispatch[] = [];
  return {
    x: createTensor(gpu, [T, B, ...input]),
    y: createTensor(gpu, [T, B]),
    taskIndices: createTensor(gpu, [T], "u32"),
    next: () => none,
  };
}

/**
 * Builds the training step of every (input shape, task count) and times the candidate kernels of
 * every shape class not yet cached; returns this adapter's cache entries afterwards.
 */
export async function autotune(
  gpu: Gpu,
  options: TuneOptions,
): Promise<Record<string, TuneEntry>> {
  configureTuning(gpu, { mode: "auto", ...(options.cache ? { path: options.cache } : {}) });
  for (const input of options.inputs) {
    const maxT = Math.max(...options.tasks);
    const net = SuperNet.create(gpu, superNetConfig({ inputShape: input, tasks: maxT }));
    const schedule = { lr: 1e-3, kind: "constant" as const, warmup: 0, steps: 1 };
    const groups = [net.params, net.z].map((arena) =>
      new ParamGroup(gpu, arena, { optimizer: optimizerConfig("adam", 1e-3), schedule })
    );
    try {
      for (const T of options.tasks) {
        const source = zeroSource(gpu, T, options.batch, input);
        const program = new StepProgram(gpu, {
          source,
          forward: (tape, inputs) =>
            net.forward(tape, {
              ...inputs,
              grads: { params: groups[0]!.grads, z: groups[1]!.grads },
            }),
          groups,
        });
        try {
          await tunePending(gpu, { onResult: options.onResult });
        } finally {
          program.destroy();
          for (const t of [source.x, source.y, source.taskIndices]) t.destroy();
        }
      }
    } finally {
      for (const g of groups) g.destroy();
      net.destroy();
    }
  }
  return readTuneCache(tuneSettings(gpu).path).adapters[gpu.adapterKey] ?? {};
}

/** The cache entries of one adapter as a Markdown table. */
export function tuneTable(entries: Record<string, TuneEntry>): string {
  const lines = [
    "| kernel | shape class | winner | candidates (ms per dispatch) | timer |",
    "| --- | --- | --- | --- | --- |",
  ];
  for (const [key, e] of Object.entries(entries)) {
    const [kernel, shape] = key.split(": ");
    const ms = Object.entries(e.ms).map(([v, m]) => `${v} ${m.toFixed(3)}`).join(", ");
    lines.push(`| ${kernel} | ${shape} | ${e.winner} | ${ms} | ${e.timer} |`);
  }
  return lines.join("\n");
}

/** Flags of `deno task tune`. */
export const TUNE_FLAGS: Flag[] = [
  {
    flag: "tasks",
    key: "tasks",
    kind: "string",
    help: "task counts per step to tune for (comma list; --tiny: 1,2)",
  },
  { flag: "batch", key: "batch", kind: "string", help: "images per task (--tiny: 4)" },
  {
    flag: "input",
    key: "input",
    kind: "string",
    help: "C x H x W of each dataset's images (comma list)",
  },
  {
    flag: "cache",
    key: "cache",
    kind: "string",
    help: "the cache file (default: the tuner's, SUPERNET_TUNE_CACHE or the user cache)",
  },
  { flag: "tiny", key: "tiny", kind: "bool", help: "T = 1, 2 and B = 4: a quick check" },
];

/** Defaults of `deno task tune` (as written on the command line). */
export const TUNE_DEFAULTS = { tasks: "1,8,16,64", batch: "32", input: "3x32x32,1x28x28" };

/** The tuner's options from its flags' values (by key); bad values are RangeErrors. */
export function tuneOptions(values: Record<string, unknown>): TuneOptions {
  const text = (key: "tasks" | "batch" | "input") => values[key] as string | undefined;
  return {
    tasks: parseCounts("--tasks", text("tasks") ?? (values.tiny ? "1,2" : TUNE_DEFAULTS.tasks)),
    batch: parseCounts("--batch", text("batch") ?? (values.tiny ? "4" : TUNE_DEFAULTS.batch))[0]!,
    inputs: (text("input") ?? TUNE_DEFAULTS.input).split(",").map(parseInputShape),
    cache: values.cache as string | undefined,
  };
}

const TUNE_HELP = {
  summary: "time the kernel candidates for training's shapes and cache the winners",
  flags: [...TUNE_FLAGS, HELP_FLAG],
  defaults: TUNE_DEFAULTS,
};

if (import.meta.main) {
  let options: TuneOptions;
  try {
    const { values, help, positionals } = await parseFlags(Deno.args, {
      flags: TUNE_FLAGS,
      common: [HELP_FLAG],
    });
    if (help) {
      console.log(usage("tune", TUNE_HELP));
      Deno.exit(0);
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
    options = tuneOptions(values);
  } catch (e) {
    console.error(`tune: ${e instanceof Error ? e.message : e}`);
    console.error("usage: deno task tune [flags]; 'deno task tune --help' lists them");
    Deno.exit(2);
  }
  try {
    const gpu = await getGpu();
    console.error(`Adapter: ${gpu.description}${gpu.isFallback ? " (software)" : ""}`);
    const t0 = performance.now();
    const entries = await autotune(gpu, {
      ...options,
      onResult: (r) =>
        console.error(
          `[${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${r.kernel} ` +
            `[${r.shapeClass}]: ${r.winner}`,
        ),
    });
    const problem = tuneSaveProblem(gpu);
    if (problem) console.error(`tune: warning: ${problem}; the winners were not saved`);
    console.log(`Kernel choices for ${gpu.adapterKey}`);
    console.log(`Cache: ${tuneSettings(gpu).path}\n`);
    console.log(tuneTable(entries));
  } catch (e) {
    console.error(`tune: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
