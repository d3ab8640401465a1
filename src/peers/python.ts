/**
 * The Python peers of the benchmarks: the CPU's fp32 GEMM peak through numpy and PyTorch
 * (src/peers/blas_peak.py, with the BLAS library each actually ran) and the same training step in
 * PyTorch (src/peers/torch_step.py), run with the strongest interpreter found.
 *
 * @module
 */
import { userCacheDir } from "../gpu/tune.ts";

/**
 * Some machines pin OpenBLAS to an older core type (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE) for
 * correctness with old builds; a current build then runs far below its peak, so the peer
 * processes run without them.
 */
function peerEnv(): Record<string, string> {
  return Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([k]) => !k.startsWith("OPENBLAS_")),
  );
}

/** What one interpreter offers: its numpy and PyTorch GEMM rates and BLAS libraries. */
export interface PythonReport {
  /** The interpreter as given (e.g. "python3"). */
  command: string;
  /** sys.executable. */
  python: string;
  /** numpy's GEMM, when installed. */
  numpy: {
    version: string;
    gflops: number;
    blas: { internal_api?: string; version?: string; filepath?: string }[];
    source: string;
  } | null;
  /** PyTorch's GEMM, when installed. */
  torch: {
    version: string;
    gflops: number;
    blas: string[];
    cpu_capability: string | null;
    threads: number;
    cuda: string | null;
    /** The CUDA GPU's fp32 GEMM rate (cuBLAS, TF32 off), when PyTorch sees one. */
    cuda_fp32?: { device: string; gflops: number; by_size: Record<string, number> } | null;
  } | null;
}

/** The virtual environment `installPeers` fills: peers in SuperNet's folder of the OS cache. */
export function peerVenv(): string {
  return `${userCacheDir()}/peers`;
}

/** The Python of a virtual environment. */
function venvPython(dir: string): string {
  return Deno.build.os === "windows" ? `${dir}/Scripts/python.exe` : `${dir}/bin/python3`;
}

/**
 * The interpreters to try, strongest candidates first: `explicit` (--python), SUPERNET_PYTHON,
 * the peers' virtual environment (when `installPeers` made one), then python3 on the PATH and
 * the system's /usr/bin/python3; duplicates dropped.
 */
export function pythonCandidates(explicit?: string): string[] {
  let env: string | undefined;
  let venv: string | undefined = venvPython(peerVenv());
  try {
    env = Deno.env.get("SUPERNET_PYTHON") || undefined;
    Deno.statSync(venv);
  } catch {
    venv = undefined;
  }
  const all = [explicit, env, venv, "python3", "/usr/bin/python3"];
  return [...new Set(all.filter((p): p is string => Boolean(p)))];
}

/**
 * Makes the peers' virtual environment (`peerVenv()`) with a current PyTorch CPU wheel, numpy and
 * threadpoolctl from pip's configured index; returns its Python. Throws with pip's last line when
 * the index cannot provide them.
 */
export async function installPeers(
  options: { python?: string; onLine?: (line: string) => void } = {},
): Promise<string> {
  const dir = peerVenv();
  const steps: [string, string[]][] = [
    [options.python ?? "python3", ["-m", "venv", dir]],
    [venvPython(dir), ["-m", "pip", "install", "--upgrade", "torch", "numpy", "threadpoolctl"]],
  ];
  for (const [command, args] of steps) {
    options.onLine?.(`${command} ${args.join(" ")}`);
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command(command, { args, stdout: "piped", stderr: "piped" }).output();
    } catch (e) {
      throw new Error(`Could not run ${command}: ${e instanceof Error ? e.message : e}`);
    }
    if (!out.success) {
      const last = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1) ?? "";
      throw new Error(`${command} ${args.slice(0, 3).join(" ")} failed: ${last}`);
    }
  }
  return venvPython(dir);
}

/**
 * Runs one of the peer scripts beside this file with `python` in the peers' clean environment;
 * its standard output, or undefined when it cannot run or fails.
 */
async function runPeerScript(
  python: string,
  script: string,
  args: string[],
): Promise<string | undefined> {
  try {
    const out = await new Deno.Command(python, {
      args: [new URL(`./${script}`, import.meta.url).pathname, ...args],
      stdout: "piped",
      stderr: "null",
      env: peerEnv(),
      clearEnv: true,
    }).output();
    return out.success ? new TextDecoder().decode(out.stdout) : undefined;
  } catch {
    return undefined;
  }
}

/** Runs blas_peak.py with `python` for an n x n GEMM; undefined when it cannot run. */
export async function pythonReport(python: string, n: number): Promise<PythonReport | undefined> {
  const text = await runPeerScript(python, "blas_peak.py", [String(n)]);
  if (text === undefined) return undefined;
  try {
    return { command: python, ...JSON.parse(text) };
  } catch {
    return undefined;
  }
}

/** A version string as numbers for ordering ("2.5.1+cpu" -> [2, 5, 1]). */
function versionKey(v: string): number[] {
  return (v.match(/^[0-9.]+/)?.[0] ?? "0").split(".").filter(Boolean).map(Number);
}

/** True if version a is newer than b. */
export function newer(a: string, b: string): boolean {
  const x = versionKey(a);
  const y = versionKey(b);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) > (y[i] ?? 0);
  }
  return false;
}

/** The GEMM yardstick: the best rate over every interpreter's numpy and PyTorch. */
export interface Yardstick {
  /** GFLOP/s of the fastest. */
  gflops: number;
  /** Which library gave it, e.g. "numpy 1.26.4 (python3)". */
  via: string;
  /** The BLAS library it ran, as the library reported it. */
  blas: string;
  /** True when that library is a known optimised BLAS (OpenBLAS, MKL, BLIS, Accelerate, ...). */
  optimised: boolean;
  /** Every rate measured, for the record. */
  all: { via: string; gflops: number; blas: string }[];
}

const OPTIMISED = /openblas|mkl|blis|accelerate|armpl|onednn|mkldnn/i;

/** Describes the BLAS a report's numpy ran. */
function numpyBlas(r: NonNullable<PythonReport["numpy"]>): string {
  if (r.blas.length === 0) return `no BLAS library found in the process (${r.source})`;
  // The library's file name says which build it is; its folder only where this machine keeps it.
  const file = (path?: string) => path?.split(/[\\/]/).at(-1);
  return r.blas.map((b) => [b.internal_api, b.version, file(b.filepath)].filter(Boolean).join(" "))
    .join("; ") + ` (${r.source})`;
}

/** The best GEMM rate over `reports`, with the library that gave it; undefined if none ran. */
export function yardstick(reports: readonly PythonReport[]): Yardstick | undefined {
  const all: Yardstick["all"] = [];
  for (const r of reports) {
    if (r.numpy) {
      all.push({
        via: `numpy ${r.numpy.version} (${r.python})`,
        gflops: r.numpy.gflops,
        blas: numpyBlas(r.numpy),
      });
    }
    if (r.torch) {
      const cap = r.torch.cpu_capability ? `, CPU capability ${r.torch.cpu_capability}` : "";
      all.push({
        via: `PyTorch ${r.torch.version} torch.mm, ${r.torch.threads} threads (${r.python})`,
        gflops: r.torch.gflops,
        blas: `${r.torch.blas.join(", ") || "no BLAS in torch.__config__.show()"}${cap}`,
      });
    }
  }
  if (all.length === 0) return undefined;
  const best = all.reduce((a, b) => (b.gflops > a.gflops ? b : a));
  return { ...best, optimised: OPTIMISED.test(best.blas), all };
}

/** The fp32 GEMM peak of a CUDA GPU, as PyTorch measured it. */
export interface GpuYardstick {
  /** GFLOP/s, the best over the sizes measured. */
  gflops: number;
  /** What gave it, e.g. "PyTorch 2.11.0 torch.mm (cuBLAS, TF32 off) on NVIDIA H200". */
  via: string;
  /** GFLOP/s per matrix size. */
  bySize: Record<string, number>;
}

/** The best CUDA fp32 GEMM rate over `reports`; undefined where no PyTorch sees a CUDA GPU. */
export function gpuYardstick(reports: readonly PythonReport[]): GpuYardstick | undefined {
  let best: GpuYardstick | undefined;
  for (const r of reports) {
    const c = r.torch?.cuda_fp32;
    if (c && (!best || c.gflops > best.gflops)) {
      best = {
        gflops: c.gflops,
        via: `PyTorch ${r.torch!.version} torch.mm (cuBLAS, TF32 off) on ${c.device}`,
        bySize: c.by_size,
      };
    }
  }
  return best;
}

/** The interpreter with the newest PyTorch among `reports` (the strongest peer a user has). */
export function strongestTorch(reports: readonly PythonReport[]): PythonReport | undefined {
  let best: PythonReport | undefined;
  for (const r of reports) {
    if (r.torch && (!best || newer(r.torch.version, best.torch!.version))) best = r;
  }
  return best;
}

/** Images/s of the training step in PyTorch, and what ran it. */
export interface TorchStep {
  /** Images per second. */
  imagesPerSecond: number;
  /** PyTorch version. */
  version: string;
  /** CPU threads. */
  threads: number;
  /** "cpu" or the CUDA device's name. */
  device: string;
}

/**
 * The training step of src/peers/torch_step.py at T tasks x B images on `device` ("cpu" or
 * "cuda"); undefined when it cannot run (no PyTorch, no CUDA).
 */
export async function torchStep(
  python: string,
  options: { tasks: number; batch: number; device?: string },
): Promise<TorchStep | undefined> {
  const text = await runPeerScript(python, "torch_step.py", [
    String(options.tasks),
    String(options.batch),
    options.device ?? "cpu",
  ]);
  if (text === undefined) return undefined;
  const [rate, version, threads, ...device] = text.trim().split(" ");
  return {
    imagesPerSecond: Number(rate),
    version: version!,
    threads: Number(threads),
    device: device.join(" ") || "cpu",
  };
}

/**
 * A SuperNet training step as src/peers/torch_step.py runs it (`described`): the sizes, the
 * target's layers and the generator that writes their weights, each from the model's own
 * description, so the peer runs the step ours does.
 */
export interface PeerStepDescription {
  /** Tasks (episodes) per step, T. */
  tasks: number;
  /** Images per task, B. */
  batch: number;
  /** Input [C, H, W]. */
  input: readonly [number, number, number];
  /** Logits per image (N ways; 1: binary). */
  outputs: number;
  /** The target's layers in order, as src/model/target.ts describes them. */
  layers: readonly unknown[];
  /** Negative slope of leaky ReLU. */
  slope: number;
  /** The generator's hyperparameters that shape its forward. */
  generator: {
    zDim: number;
    hidden: readonly number[];
    hiddenActivation: string;
    output: "tanh" | "linear";
  };
  /** The generator's parameters in order (the order of the values in `init`). */
  params: readonly { name: string; shape: readonly number[] }[];
  /** The generated target tensors: name, shape without T, and the head's output scale. */
  heads: readonly { name: string; shape: readonly number[]; scale: number }[];
  /** Adam's learning rate (PyTorch's defaults otherwise, as ours). */
  lr: number;
  /**
   * A file of little-endian float32 values: the parameters in `params` order, then z [T, zDim],
   * then the images [T, B, C, H, W]. Absent: random values, one warm-up and 5 timed steps.
   */
  init?: string;
  /** With `init`: steps to run from those values. */
  steps?: number;
}

/** A described step in PyTorch: its time and losses, and what ran it. */
export interface TorchDescribedStep {
  /** Median seconds of a timed step. */
  seconds: number;
  /** The loss of every step run, before its update (warm-up included). */
  losses: number[];
  /** PyTorch version. */
  version: string;
  /** CPU threads. */
  threads: number;
  /** "cpu" or the CUDA device's name. */
  device: string;
}

/**
 * The step `description` gives, run by src/peers/torch_step.py on `device` ("cpu" or "cuda");
 * undefined when it cannot run (no PyTorch, no CUDA).
 */
export async function torchDescribedStep(
  python: string,
  description: PeerStepDescription,
  options: { device?: string } = {},
): Promise<TorchDescribedStep | undefined> {
  const text = await runPeerScript(python, "torch_step.py", [
    "described",
    JSON.stringify(description),
    options.device ?? "cpu",
  ]);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * Why `peak` cannot judge a target for a kernel whose best rate is `ownBest` GFLOP/s: no peak, a
 * library that is not a known optimised BLAS, or a peak below our own kernel (then it measured
 * something else than this CPU's GEMM peak); undefined when it can.
 */
export function yardstickProblem(peak: Yardstick | undefined, ownBest: number): string | undefined {
  if (!peak) return "no GEMM peak was measured (neither numpy nor PyTorch found)";
  if (!peak.optimised) return `the peak came from ${peak.blas}, not a known optimised BLAS`;
  if (peak.gflops < ownBest) {
    return `the measured peak (${peak.gflops.toFixed(1)} GFLOP/s) is below our own kernel ` +
      `(${ownBest.toFixed(1)} GFLOP/s), so it is no yardstick`;
  }
  return undefined;
}
