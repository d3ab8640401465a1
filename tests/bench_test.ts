import assert from "node:assert/strict";
import {
  fewShotStep,
  fewShotStepRows,
  homeRelative,
  interleaved,
  memoryRows,
  targetLine,
} from "../src/bench.ts";
import { getGpu } from "../src/gpu/device.ts";
import { readMany } from "../src/gpu/tensor.ts";
import {
  gpuYardstick,
  newer,
  peerVenv,
  pythonCandidates,
  type PythonReport,
  pythonReport,
  strongestTorch,
  torchDescribedStep,
  yardstick,
  yardstickProblem,
} from "../src/peers/python.ts";
import { parseCounts, parseInputShape } from "../src/autotune.ts";

/** A report of one interpreter with numpy on `blas` and, optionally, PyTorch. */
function report(
  python: string,
  numpy: { gflops: number; blas: string } | null,
  torch?: { version: string; gflops: number },
): PythonReport {
  return {
    command: python,
    python,
    numpy: numpy &&
      {
        version: "1.26.4",
        gflops: numpy.gflops,
        blas: [{ filepath: numpy.blas }],
        source: "loaded shared objects",
      },
    torch: torch
      ? {
        version: torch.version,
        gflops: torch.gflops,
        blas: ["BLAS_INFO=mkl"],
        cpu_capability: "AVX2",
        threads: 2,
        cuda: null,
      }
      : null,
  };
}

Deno.test("the GEMM yardstick is the best of numpy and PyTorch, with the library that gave it", () => {
  const y = yardstick([
    report("/usr/bin/python3", {
      gflops: 6.1,
      blas: "/usr/lib/x86_64-linux-gnu/blas/libblas.so.3",
    }),
    report("/venv/bin/python3", null, { version: "2.5.1+cpu", gflops: 190 }),
  ])!;
  assert.equal(y.gflops, 190);
  assert.match(y.via, /PyTorch 2\.5\.1\+cpu/);
  assert.match(y.blas, /BLAS_INFO=mkl/);
  assert.equal(y.optimised, true);
  assert.equal(y.all.length, 2);
  assert.equal(yardstick([]), undefined);
});

Deno.test("no verdict against reference BLAS or a peak below our own kernel", () => {
  // The second machine's case: reference BLAS at 6.1 GFLOP/s against our 18.4.
  const reference = yardstick([
    report("python3", { gflops: 6.1, blas: "/usr/lib/x86_64-linux-gnu/blas/libblas.so.3" }),
  ])!;
  assert.equal(reference.optimised, false);
  assert.match(yardstickProblem(reference, 18.4)!, /not a known optimised BLAS/);
  const low = yardstick([
    report("python3", { gflops: 12, blas: "/usr/lib/openblas-pthread/libopenblasp-r0.3.21.so" }),
  ])!;
  assert.equal(low.optimised, true);
  assert.match(yardstickProblem(low, 18.4)!, /below our own kernel/);
  assert.equal(yardstickProblem(low, 10), undefined);
  assert.match(yardstickProblem(undefined, 1)!, /no GEMM peak/);
  const line = targetLine(
    { what: "Best matmul", value: 300.7, goal: 25, unit: "%", noVerdict: "the peak is low" },
    false,
  );
  assert.equal(line, "Best matmul: 300.7% (target >= 25.0%): no verdict, the peak is low.");
});

Deno.test("targets state met or missed with the measured ratio", () => {
  assert.equal(
    targetLine({ what: "Loop", value: 3.9, goal: 5, unit: "x" }, false),
    "Loop: 3.90x (target >= 5.00x: missed).",
  );
  assert.equal(
    targetLine({ what: "Memory", value: 1.2, goal: 2, unit: "x", atMost: true }, true),
    "Memory: 1.20x (target <= 2.00x: met, on a busy machine).",
  );
  assert.equal(
    targetLine({ what: "Peer", goal: 1, unit: "x" }, false),
    "Peer: not measured in this run (target >= 1.00x).",
  );
});

Deno.test("the GPU yardstick is the best CUDA fp32 GEMM any PyTorch measured", () => {
  const cpuOnly = report("python3", null, { version: "2.13.0+cpu", gflops: 120 });
  assert.equal(gpuYardstick([cpuOnly]), undefined);
  const withCuda = (version: string, gflops: number): PythonReport => {
    const r = report("/opt/python3", null, { version, gflops: 900 });
    r.torch!.cuda = "NVIDIA H200";
    r.torch!.cuda_fp32 = {
      device: "NVIDIA H200",
      gflops,
      by_size: { "4096": gflops * 0.9, "8192": gflops },
    };
    return r;
  };
  const y = gpuYardstick([cpuOnly, withCuda("2.11.0", 51000), withCuda("2.9.0", 48000)])!;
  assert.equal(y.gflops, 51000);
  assert.equal(y.via, "PyTorch 2.11.0 torch.mm (cuBLAS, TF32 off) on NVIDIA H200");
  assert.equal(y.bySize["8192"], 51000);
  assert.equal(
    targetLine({ what: "Step at T = 64", value: 123456.7, goal: 2e5, unit: "/s" }, false),
    "Step at T = 64: 123,457 images/s (target >= 200,000 images/s: missed).",
  );
});

Deno.test("the PyTorch peer is the newest one found", () => {
  assert.equal(newer("2.5.1+cpu", "1.13.0a0"), true);
  assert.equal(newer("1.13.0a0", "2.0"), false);
  assert.equal(newer("2.1", "2.1.0"), false);
  const best = strongestTorch([
    report("/usr/bin/python3", null, { version: "1.13.0a0", gflops: 30 }),
    report("/venv/bin/python3", null, { version: "2.5.1+cpu", gflops: 20 }),
    report("/other/python3", null),
  ]);
  assert.equal(best?.python, "/venv/bin/python3");
  assert.equal(strongestTorch([report("python3", null)]), undefined);
});

Deno.test("tune flags are checked", () => {
  assert.deepEqual(parseInputShape("3x32x32"), [3, 32, 32]);
  assert.throws(() => parseInputShape("32x32"), /expected C x H x W/);
  assert.deepEqual(parseCounts("--tasks", "1,8,64"), [1, 8, 64]);
  assert.throws(() => parseCounts("--tasks", "1,0"), /positive integers/);
});

const software = (await getGpu()).isFallback;

Deno.test({
  name: "gpu-run refuses a software adapter without --tiny, with one clear line",
  ignore: !software,
  fn: async () => {
    const out = await Deno.makeTempDir();
    const result = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "src/gpu_run.ts", "--out", out],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(result.stderr).trim().split("\n");
    assert.equal(result.code, 1);
    assert.match(stderr.at(-1)!, /^gpu-run: No hardware GPU adapter: .* pass --tiny/);
    await assert.rejects(Deno.stat(`${out}/benchmarks-gpu.md`), Deno.errors.NotFound);
    await Deno.remove(out, { recursive: true });
  },
});

Deno.test("gpu-run and tune reject bad flags with usage (exit 2)", async () => {
  for (
    const [script, args] of [["src/gpu_run.ts", ["--budget", "-3"]], ["src/autotune.ts", [
      "--tasks",
      "x",
    ]]] as const
  ) {
    const result = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(result.code, 2, script);
    assert.match(new TextDecoder().decode(result.stderr), /usage: deno task/);
  }
});

Deno.test({
  name: "the peers' virtual environment is a candidate once it exists",
  // The cache folder is XDG_CACHE_HOME on Linux only.
  ignore: Deno.build.os !== "linux",
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const before = Deno.env.get("XDG_CACHE_HOME");
    Deno.env.set("XDG_CACHE_HOME", dir);
    try {
      assert.equal(peerVenv(), `${dir}/supernet/peers`);
      assert.ok(!pythonCandidates().some((p) => p.startsWith(dir)));
      await Deno.mkdir(`${dir}/supernet/peers/bin`, { recursive: true });
      await Deno.writeTextFile(`${dir}/supernet/peers/bin/python3`, "");
      const found = pythonCandidates("/opt/py/bin/python3");
      assert.equal(found[0], "/opt/py/bin/python3");
      assert.ok(found.includes(`${dir}/supernet/peers/bin/python3`));
      assert.ok(found.indexOf(`${dir}/supernet/peers/bin/python3`) < found.indexOf("python3"));
    } finally {
      if (before === undefined) Deno.env.delete("XDG_CACHE_HOME");
      else Deno.env.set("XDG_CACHE_HOME", before);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("peak memory of a step is counted from live buffers and stays within 2x of its bound", async () => {
  const gpu = await getGpu();
  const before = gpu.memory.live;
  const [row] = await memoryRows(gpu, { tasks: [2], B: 2 }, () => {});
  assert.equal(row?.group, "memory");
  assert.match(row!.name, /T=2 B=2 step peak \(lower bound/);
  // Everything the step allocated is freed again (the loss's scratch and uniforms included);
  // the peak covers at least its lower bound.
  assert.equal(gpu.memory.live - before, 0, `${gpu.memory.live - before} bytes left`);
  assert.ok(row!.ratio! >= 1 && row!.ratio! <= 2, `ratio ${row!.ratio}`);
  assert.ok(row!.bytes! > 0);
});

Deno.test("reports name files under the home folder as ~/..., never by one machine's absolute path", () => {
  const before = Deno.env.get("HOME");
  try {
    Deno.env.set("HOME", "/home/someone");
    assert.equal(
      homeRelative("cache /home/someone/.cache/supernet/tune.json and /usr/bin/python3"),
      "cache ~/.cache/supernet/tune.json and /usr/bin/python3",
    );
    // A folder that merely starts like the home folder is left alone.
    assert.equal(homeRelative("/home/someone2/x"), "/home/someone2/x");
  } finally {
    if (before === undefined) Deno.env.delete("HOME");
    else Deno.env.set("HOME", before);
  }
});

Deno.test("timings to compare are taken in turn, round by round, with the paired peer between", async () => {
  const log: string[] = [];
  const timer = (name: string, seconds: number) => () => {
    log.push(name);
    return Promise.resolve(seconds + log.length / 1000);
  };
  const times = await interleaved([timer("a", 1), timer("b", 2)], 3, (round) => {
    log.push(`peer ${round}`);
    return Promise.resolve();
  });
  assert.deepEqual(log, ["a", "b", "peer 0", "a", "b", "peer 1", "a", "b", "peer 2"]);
  assert.deepEqual(times, [[1.001, 1.004, 1.007], [2.002, 2.005, 2.008]]);
});

/** The interpreter with the newest PyTorch the bench would find; undefined without one. */
async function torchPython(): Promise<string | undefined> {
  const reports: PythonReport[] = [];
  for (const python of pythonCandidates()) {
    const r = await pythonReport(python, 64);
    if (r) reports.push(r);
  }
  return strongestTorch(reports)?.python;
}

const python = await torchPython();

Deno.test({
  name:
    "the PyTorch peer runs the bench's few-shot conv4 step: the same losses from the same values",
  ignore: python === undefined,
  fn: async () => {
    const gpu = await getGpu();
    const step = fewShotStep(gpu, { tasks: 2, ways: 3, per: 2, width: 4 });
    const { net, program, description } = step;
    // The peer starts from our values: the generator's parameters in order, z, then the images.
    const values = await readMany(gpu, [
      ...net.params.entries.map((e) => e.tensor),
      net.z.get("z"),
      step.x,
    ]);
    const flat = new Float32Array(values.reduce((n, v) => n + v.length, 0));
    values.reduce((at, v) => (flat.set(v, at), at + v.length), 0);
    const ours: number[] = [];
    for (const s of [1, 2]) {
      program.run(s);
      ours.push((await program.readMetrics()).loss);
    }
    step.destroy();
    const init = await Deno.makeTempFile({ suffix: ".f32" });
    try {
      await Deno.writeFile(init, new Uint8Array(flat.buffer));
      const theirs = await torchDescribedStep(python!, { ...description, init, steps: 2 });
      assert.ok(theirs, "the peer did not run");
      // The first loss checks the forward; the second, one Adam step through the backward.
      assert.equal(theirs.losses.length, 2);
      for (const [i, loss] of ours.entries()) {
        assert.ok(
          Math.abs(theirs.losses[i]! - loss) < 1e-4,
          `step ${i + 1}: ours ${loss}, PyTorch ${theirs.losses[i]}`,
        );
      }
      assert.ok(ours[1]! < ours[0]!, `the loss did not fall: ${ours}`);
    } finally {
      await Deno.remove(init);
    }
  },
});

Deno.test({
  name: "the few-shot row reports ours and PyTorch in episodes per second, and the ratio",
  ignore: python === undefined,
  fn: async () => {
    const gpu = await getGpu();
    const runs: number[] = [];
    const rows = await fewShotStepRows(gpu, { tasks: 2, ways: 3, per: 2, width: 4 }, {
      pair: {
        step: async (d) => {
          // The bench's own call: random values, one warm-up and 5 timed steps.
          const p = await torchDescribedStep(python!, d);
          assert.ok(p, "the peer did not run");
          assert.equal(p.losses.length, 6);
          assert.ok(p.losses.every(Number.isFinite), `losses ${p.losses}`);
          runs.push(p.seconds);
          return p;
        },
        name: (p) => `PyTorch ${p.version}`,
      },
    });
    assert.equal(runs.length, 3);
    const [ours, theirs] = rows;
    assert.match(
      ours!.name,
      /^conv4 width 4 3-way T=2 B=6 \(.* generator parameters\), [0-9.]+ episodes\/s$/,
    );
    assert.match(theirs!.name, /^conv4 width 4 3-way T=2 B=6 PyTorch .*, [0-9.]+ episodes\/s$/);
    assert.equal(theirs!.group, "peer");
    assert.ok(theirs!.ratio! > 0 && Number.isFinite(theirs!.ratio), `ratio ${theirs!.ratio}`);
  },
});
