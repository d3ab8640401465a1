/**
 * The scripts behind `deno task bench`, `tune` and `gpu-run`: each answers --help with every flag
 * it accepts, and their options resolve as documented (the bench writes into runs/bench unless
 * told `--out docs`), without running a benchmark.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { BENCH_FLAGS, benchOptions } from "../src/bench.ts";
import { GPU_RUN_FLAGS, gpuRunOptions } from "../src/gpu_run.ts";
import { TUNE_FLAGS, tuneOptions } from "../src/autotune.ts";
import { type Flag, HELP_FLAG, parseFlags } from "../src/cli/flags.ts";

const root = new URL("..", import.meta.url).pathname;

async function script(file: string, args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-write", "--allow-env", join(root, file), ...args],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

const SCRIPTS: [string, string, Flag[]][] = [
  ["bench", "src/bench.ts", BENCH_FLAGS],
  ["tune", "src/autotune.ts", TUNE_FLAGS],
  ["gpu-run", "src/gpu_run.ts", GPU_RUN_FLAGS],
];

Deno.test("bench, tune and gpu-run list every flag they accept, one line each", async () => {
  for (const [name, file, flags] of SCRIPTS) {
    const r = await script(file, ["--help"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^Usage: deno task ${name} \\[flags\\]`));
    const lines = r.stdout.split("\n").filter((l) => l.startsWith("  --"));
    const listed = lines.map((l) => l.trim().split(/\s/)[0]);
    assert.deepEqual(listed, [...flags, HELP_FLAG].map((f) => `--${f.flag}`), name);
    for (const l of lines) {
      assert.ok(l.length > 46, `${name}: no help on '${l}'`);
      assert.ok(l.split("(default").length <= 2, `${name}: ${l}`);
    }
  }
  const bench = await script("src/bench.ts", ["--help"]);
  assert.match(bench.stdout, /^ {2}--out <value> .*\(default runs\/bench\)$/m);
  const tune = await script("src/autotune.ts", ["--help"]);
  assert.match(tune.stdout, /^ {2}--tasks <value> .*\(default 1,8,16,64\)$/m);
  const gpuRun = await script("src/gpu_run.ts", ["--help"]);
  assert.match(gpuRun.stdout, /^ {2}--budget <value> .*\(default 480\)$/m);
});

Deno.test("a flag a script does not take is a usage error (exit 2)", async () => {
  for (const [name, file] of SCRIPTS) {
    for (const args of [["--bogus"], ["stray"]]) {
      const r = await script(file, args);
      assert.equal(r.code, 2, `${name} ${args}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`usage: deno task ${name} \\[flags\\]`));
    }
  }
});

/** The options a script's flags resolve to. */
async function values(flags: Flag[], args: string[]): Promise<Record<string, unknown>> {
  return (await parseFlags(args, { flags, common: [HELP_FLAG] })).values;
}

Deno.test("bench writes into runs/bench unless told --out docs", async () => {
  const defaults = benchOptions(await values(BENCH_FLAGS, []));
  assert.equal(defaults.out, "runs/bench");
  assert.deepEqual(
    [defaults.tune, defaults.tfjs, defaults.adapt, defaults.quick, defaults.tiny],
    [true, true, true, false, false],
  );
  assert.equal(benchOptions(await values(BENCH_FLAGS, ["--out", "docs"])).out, "docs");
  const off = benchOptions(
    await values(BENCH_FLAGS, ["--no-tune", "--no-tfjs", "--no-adapt", "--tiny"]),
  );
  assert.deepEqual([off.tune, off.tfjs, off.adapt, off.tiny], [false, false, false, true]);
});

Deno.test("tune and gpu-run resolve their flags as before", async () => {
  assert.deepEqual(tuneOptions(await values(TUNE_FLAGS, [])), {
    tasks: [1, 8, 16, 64],
    batch: 32,
    inputs: [[3, 32, 32], [1, 28, 28]],
    cache: undefined,
  });
  const tiny = tuneOptions(await values(TUNE_FLAGS, ["--tiny", "--cache", "c.json"]));
  assert.deepEqual([tiny.tasks, tiny.batch, tiny.cache], [[1, 2], 4, "c.json"]);
  assert.throws(() => tuneOptions({ tasks: "1,0" }), /positive integers/);
  const run = gpuRunOptions(await values(GPU_RUN_FLAGS, []));
  // A run folder by default: the committed docs/ change only when asked (--out docs).
  assert.deepEqual(run, { out: "runs/gpu", budget: 480, tune: true, tiny: false });
  const changed = gpuRunOptions(await values(GPU_RUN_FLAGS, ["--budget", "60", "--no-tune"]));
  assert.deepEqual([changed.budget, changed.tune], [60, false]);
  assert.throws(() => gpuRunOptions({ budget: 0 }), /expected seconds > 0/);
});

Deno.test("a list flag takes a comma list or repeats, and checks every item", async () => {
  const flags: Flag[] = [
    { flag: "methods", key: "methods", kind: "strings", values: ["z", "full"], help: "methods" },
  ];
  const parse = (args: string[]) => parseFlags(args, { flags, common: [HELP_FLAG] });
  assert.deepEqual((await parse(["--methods", "z,full"])).values.methods, ["z", "full"]);
  assert.deepEqual((await parse(["--methods", "z", "--methods", "full"])).values.methods, [
    "z",
    "full",
  ]);
  await assert.rejects(parse(["--methods", "z,protonet"]), /--methods 'protonet' is not valid/);
});
