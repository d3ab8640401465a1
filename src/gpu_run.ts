/**
 * `deno task gpu-run`: the GPU benchmark in one command, for a machine with a GPU and no network
 * (the deno binary, its module cache and a Python with PyTorch carried in). It prints the adapter,
 * fills the kernel tuner's cache (`deno task tune`), runs `deno task bench` into <out>/gpu/ (on a
 * GPU it measures the GPU's fp32 GEMM peak through PyTorch's cuBLAS and times the same training
 * steps with PyTorch on CUDA, src/peers/torch_step.py, for the ratio ours / PyTorch CUDA of the
 * seed_cnn step at T = 1, 16 and 64 and of the few-shot conv4 step), and writes
 * <out>/benchmarks-gpu.md; the whole within a time budget (default 8 minutes), each stage stopped
 * if it would overrun.
 *
 * Flags: --out DIR (default runs/gpu; `--out docs` updates the committed pages), --budget SECONDS (default 480), --python PATH (the interpreter
 * with PyTorch), --tune-cache FILE, --no-tune, --tiny (tiny sizes, to check the command end to
 * end on any adapter, a software one included).
 *
 * @module
 */
import { join } from "node:path";
import { type Flag, HELP_FLAG, parseFlags, usage, UsageError } from "./cli/flags.ts";
import { getGpu } from "./gpu/device.ts";

/** Options of {@linkcode gpuRun}. */
export interface GpuRunOptions {
  /** Folder of benchmarks-gpu.md; the bench writes into its gpu/ subfolder. */
  out: string;
  /** Seconds for everything. */
  budget: number;
  /** Python interpreter with PyTorch to try first. */
  python?: string;
  /** The tuner's cache file. */
  tuneCache?: string;
  /** False: built-in kernels, no tuning. */
  tune: boolean;
  /** Tiny sizes. */
  tiny: boolean;
  /** Progress lines. */
  onProgress?: (line: string) => void;
}

/** What one stage (a child process) did. */
interface Stage {
  name: string;
  ok: boolean;
  seconds: number;
  note: string;
}

/** Runs this deno binary on `script` with `args` in a child process, killed after `limit` s. */
async function child(
  name: string,
  script: string,
  args: string[],
  limit: number,
  progress: (line: string) => void,
): Promise<Stage> {
  const t0 = performance.now();
  if (limit < 5) return { name, ok: false, seconds: 0, note: "skipped: time budget spent" };
  progress(`${name}: starting (at most ${limit.toFixed(0)} s)`);
  const proc = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-write", "--allow-env", "--allow-run", script, ...args],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => proc.kill("SIGKILL"), limit * 1000);
  // Pass the child's progress lines through as they come.
  const lines: string[] = [];
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of proc.stderr) {
    pending += decoder.decode(chunk, { stream: true });
    const parts = pending.split("\n");
    pending = parts.pop()!;
    for (const line of parts) {
      lines.push(line);
      progress(`${name}: ${line}`);
    }
  }
  const status = await proc.status;
  clearTimeout(timer);
  const seconds = (performance.now() - t0) / 1000;
  const killed = status.signal === "SIGKILL";
  return {
    name,
    ok: status.success,
    seconds,
    note: killed
      ? `stopped after ${limit.toFixed(0)} s (time budget)`
      : status.success
      ? "ok"
      : `failed (exit ${status.code}): ${lines.at(-1) ?? ""}`,
  };
}

/** One bench row as written into benchmarks.json. */
interface JsonRow {
  group: string;
  name: string;
  seconds: number;
  imagesPerSecond?: number;
  bytes?: number;
  ratio?: number;
}

/** Runs everything and writes <out>/benchmarks-gpu.md; returns its text. */
export async function gpuRun(options: GpuRunOptions): Promise<string> {
  const progress = options.onProgress ?? (() => {});
  const started = performance.now();
  const left = () => options.budget - (performance.now() - started) / 1000;
  const gpu = await getGpu();
  const adapter = `${gpu.description}${gpu.isFallback ? " (software)" : ""}`;
  progress(`adapter: ${adapter}; features: ${[...gpu.features].join(", ") || "none"}`);
  if (gpu.isFallback && !options.tiny) {
    throw new Error(
      `No hardware GPU adapter: WebGPU offers only ${adapter}. Run on a machine with a GPU and ` +
        `its Vulkan (or Metal, D3D12) driver, or pass --tiny to check the command here`,
    );
  }
  const benchOut = join(options.out, "gpu");
  const cache = options.tuneCache ? ["--tune-cache", options.tuneCache] : [];
  const src = (file: string) => new URL(file, import.meta.url).pathname;
  const stages: Stage[] = [];
  if (options.tune) {
    stages.push(
      await child(
        "tune",
        src("./autotune.ts"),
        [
          ...(options.tiny ? ["--tiny"] : []),
          ...(options.tuneCache ? ["--cache", options.tuneCache] : []),
        ],
        Math.min(left() * 0.3, left() - 60),
        progress,
      ),
    );
  }
  // The bench measures the GPU's fp32 GEMM peak and times the PyTorch CUDA step itself.
  stages.push(
    await child(
      "bench",
      src("./bench.ts"),
      [
        "--out",
        benchOut,
        "--no-tfjs",
        ...(options.tiny ? ["--tiny"] : []),
        ...(options.tune ? cache : ["--no-tune"]),
        ...(options.python ? ["--python", options.python] : []),
      ],
      left() - 10,
      progress,
    ),
  );
  let rows: JsonRow[] = [];
  let summary: string[] = [];
  let ratios: string[] = [];
  try {
    rows = JSON.parse(await Deno.readTextFile(join(benchOut, "benchmarks.json"))).rows;
    const md = await Deno.readTextFile(join(benchOut, "benchmarks.md"));
    // The bullet points before the first section: the adapter, the yardsticks and the targets.
    const head = md.split("\n## ")[0]!;
    summary = head.split("\n").filter((l) => l.startsWith("- "));
    ratios = summary.filter((l) => l.startsWith("- Ours / PyTorch CUDA"));
  } catch {
    // The bench did not finish: the stage table says why.
  }
  const memory = rows.filter((r) => r.group === "memory");
  const md = [
    "# Benchmarks on a GPU",
    "",
    "Written by `deno task gpu-run`" +
    (options.tiny ? " --tiny (tiny sizes: an end-to-end check; figures mean nothing)" : "") +
    `. Full tables: [gpu/benchmarks.md](gpu/benchmarks.md).`,
    "",
    `- Adapter: ${adapter}; features: ${[...gpu.features].join(", ") || "none"}; limits: ` +
    `${gpu.limits.maxComputeWorkgroupStorageSize} bytes of workgroup memory, ` +
    `${gpu.limits.maxComputeInvocationsPerWorkgroup} invocations per workgroup.`,
    `- Date: ${new Date().toISOString()}; total ${
      ((performance.now() - started) / 1000).toFixed(0)
    } s of a ${options.budget} s budget.`,
    "",
    "## Ours / PyTorch CUDA (same step)",
    "",
    ...(ratios.length
      ? ratios
      : ["- Not measured (no PyTorch that sees a CUDA device, or the bench did not finish)."]),
    "",
    "## Peak GPU memory per training step",
    "",
    ...(memory.length
      ? memory.map((m) =>
        `- ${m.name}: ${(m.bytes! / 2 ** 20).toFixed(1)} MiB, ${
          m.ratio!.toFixed(2)
        }x the lower bound.`
      )
      : ["- Not measured (the bench did not finish)."]),
    "",
    "## The bench's summary",
    "",
    ...(summary.length ? summary : ["- The bench did not finish."]),
    "",
    "## Stages",
    "",
    "| stage | result | seconds |",
    "| --- | --- | ---: |",
    ...stages.map((s) => `| ${s.name} | ${s.note} | ${s.seconds.toFixed(0)} |`),
    "",
  ].join("\n");
  await Deno.mkdir(options.out, { recursive: true });
  await Deno.writeTextFile(join(options.out, "benchmarks-gpu.md"), md);
  return md;
}

/** Flags of `deno task gpu-run`, one per {@linkcode GpuRunOptions} field. */
export const GPU_RUN_FLAGS: Flag[] = [
  {
    flag: "out",
    key: "out",
    kind: "string",
    help: "folder of benchmarks-gpu.md; the bench writes into its gpu/ subfolder",
  },
  { flag: "budget", key: "budget", kind: "number", help: "seconds for everything" },
  {
    flag: "python",
    key: "python",
    kind: "string",
    help: "Python interpreter with PyTorch to try first",
  },
  { flag: "tune-cache", key: "tuneCache", kind: "string", help: "the kernel tuner's cache file" },
  { flag: "no-tune", key: "tune", kind: "bool", help: "built-in kernels, no tuning" },
  {
    flag: "tiny",
    key: "tiny",
    kind: "bool",
    help: "tiny sizes, to check the command end to end on any adapter (a software one too)",
  },
];

/** Defaults of `deno task gpu-run`. */
export const GPU_RUN_DEFAULTS = { out: "runs/gpu", budget: 480, tune: true, tiny: false };

/** The run's options from its flags' values (by key), over {@linkcode GPU_RUN_DEFAULTS}. */
export function gpuRunOptions(values: Record<string, unknown>): GpuRunOptions {
  const options: GpuRunOptions = { ...GPU_RUN_DEFAULTS, ...values };
  if (!(options.budget > 0)) {
    throw new RangeError(`--budget ${options.budget}: expected seconds > 0`);
  }
  return options;
}

const GPU_RUN_HELP = {
  summary: "the GPU benchmark in one command: tune, bench, PyTorch CUDA; benchmarks-gpu.md",
  flags: [...GPU_RUN_FLAGS, HELP_FLAG],
  defaults: GPU_RUN_DEFAULTS,
};

if (import.meta.main) {
  let options: GpuRunOptions;
  const t0 = performance.now();
  try {
    const { values, help, positionals } = await parseFlags(Deno.args, {
      flags: GPU_RUN_FLAGS,
      common: [HELP_FLAG],
    });
    if (help) {
      console.log(usage("gpu-run", GPU_RUN_HELP));
      Deno.exit(0);
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
    options = {
      ...gpuRunOptions(values),
      onProgress: (line) =>
        console.error(`[${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${line}`),
    };
  } catch (e) {
    console.error(`gpu-run: ${e instanceof Error ? e.message : e}`);
    console.error("usage: deno task gpu-run [flags]; 'deno task gpu-run --help' lists them");
    Deno.exit(2);
  }
  try {
    console.log(await gpuRun(options));
  } catch (e) {
    console.error(`gpu-run: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
