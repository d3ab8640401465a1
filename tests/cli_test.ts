/**
 * End-to-end runs of every subcommand in a temporary folder, through the real command line:
 * files written, numbers finite, the loss falls, resume is bit-exact, and bad input gets one clear
 * line and the right exit code.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadSafetensors } from "../src/safetensors.ts";
import { type CliOutput, runMain } from "./util.ts";
import { minutes } from "../src/cli/command.ts";

const root = new URL("..", import.meta.url).pathname;

function cli(...args: string[]): Promise<CliOutput> {
  return runMain(args);
}

const TINY = [
  "--steps",
  "8",
  "--tasks-per-step",
  "2",
  "--batch",
  "8",
  "--eval-every",
  "0",
  "--eval-tasks",
  "2",
  "--log-every",
  "1",
  "--lr",
  "0.003",
  "--quiet",
];

async function metrics(dir: string): Promise<{ kind: string; loss: number }[]> {
  const text = await Deno.readTextFile(join(dir, "metrics.jsonl"));
  return text.trim().split("\n").map((l) => JSON.parse(l));
}

Deno.test("train, adapt, evaluate, export and tasks run end to end", async () => {
  const dir = await Deno.makeTempDir();
  const run = join(dir, "run");
  const trained = await cli("train", ...TINY, "--out", run);
  assert.equal(trained.code, 0, trained.stderr);
  for (
    const f of ["checkpoint.json", "model.safetensors", "optimizer.safetensors", "options.json"]
  ) {
    assert.ok((await Deno.stat(join(run, f))).size > 0, f);
  }
  const steps = (await metrics(run)).filter((m) => m.kind === "step");
  assert.equal(steps.length, 8);
  for (const s of steps) assert.ok(Number.isFinite(s.loss));
  const first = (steps[0]!.loss + steps[1]!.loss) / 2;
  const last = (steps[6]!.loss + steps[7]!.loss) / 2;
  assert.ok(last < first, `loss should fall: first ${first}, last ${last}`);

  const adapted = await cli(
    "adapt",
    "--run",
    run,
    "--steps",
    "4",
    "--eval-every",
    "2",
    "--batch",
    "8",
    "--methods",
    "zero-shot,z,full,finetune",
    "--full-epochs",
    "0",
    "--quiet",
  );
  assert.equal(adapted.code, 0, adapted.stderr);
  assert.match(adapted.stdout, /zero-shot/);
  assert.match(adapted.stdout, /finetune/);
  const result = JSON.parse(await Deno.readTextFile(join(run, "adapt", "adapt.json"))).tasks[0];
  assert.equal(result.results.length, 4);
  for (const r of result.results) {
    assert.ok(r.accuracy >= 0 && r.accuracy <= 1 && Number.isFinite(r.loss), JSON.stringify(r));
  }
  assert.equal(result.results[1].trainable, 100);
  const zFile = join(run, "adapt", `z_${result.task}.safetensors`);
  assert.equal((await loadSafetensors(zFile)).tensors.get("z")!.data.length, 100);

  // The seed's recipe is one flag away, and the run folder records what it resolved to.
  const seeded = await cli(
    "adapt",
    "--run",
    run,
    "--preset",
    "seed",
    "--steps",
    "2",
    "--methods",
    "z",
    "--out",
    join(dir, "seeded"),
    "--quiet",
  );
  assert.equal(seeded.code, 0, seeded.stderr);
  const seededOptions = JSON.parse(await Deno.readTextFile(join(dir, "seeded", "adapt.json")))
    .options;
  assert.equal(seededOptions.init, "mean");
  assert.equal(seededOptions.prior, 0);
  assert.equal(seededOptions.validation, 0);
  assert.equal(seededOptions.steps, 2, "a flag overrides the preset");

  const evaluated = await cli("evaluate", "--run", run, "--quiet");
  assert.equal(evaluated.code, 0, evaluated.stderr);
  assert.match(evaluated.stdout, /held-out \(mean z\)/);

  const exported = await cli("export", "--run", run, "--z", zFile, "--out", join(dir, "export"));
  assert.equal(exported.code, 0, exported.stderr);
  const names = [...Deno.readDirSync(join(dir, "export"))].map((e) => e.name);
  assert.ok(names.some((n) => n.endsWith(".safetensors")), names.join(","));
  assert.ok(names.some((n) => n.endsWith(".json")), names.join(","));

  const tasks = await cli("tasks", "--family", "pairs_reversed");
  assert.equal(tasks.code, 0, tasks.stderr);
  assert.match(tasks.stdout, /held-out/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a resumed run ends with bit-identical weights to an uninterrupted one", async () => {
  const dir = await Deno.makeTempDir();
  const straight = await cli("train", ...TINY, "--out", join(dir, "a"));
  assert.equal(straight.code, 0, straight.stderr);
  const half = await cli("train", ...TINY, "--steps", "4", "--out", join(dir, "b"));
  assert.equal(half.code, 0, half.stderr);
  const resumed = await cli(
    "train",
    "--resume",
    "--steps",
    "8",
    "--out",
    join(dir, "b"),
    "--quiet",
  );
  assert.equal(resumed.code, 0, resumed.stderr);
  const a = await loadSafetensors(join(dir, "a", "model.safetensors"));
  const b = await loadSafetensors(join(dir, "b", "model.safetensors"));
  assert.deepEqual([...a.tensors.keys()], [...b.tensors.keys()]);
  for (const [name, t] of a.tensors) {
    assert.deepEqual(
      new Uint8Array(t.data.buffer),
      new Uint8Array(b.tensors.get(name)!.data.buffer),
      `${name} differs after resume`,
    );
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("bad input gets one clear line and the right exit code", async () => {
  const dir = await Deno.makeTempDir();
  const cases: { args: string[]; code: number; message: RegExp }[] = [
    { args: ["train", "--dataset", "imagenet"], code: 2, message: /expected one of mnist/ },
    { args: ["train", "--target", "resnet"], code: 2, message: /expected one of seed_cnn/ },
    { args: ["train", "--family", "nope"], code: 2, message: /expected one of one_vs_anchor/ },
    { args: ["train", "--steps", "-3"], code: 2, message: /--steps/ },
    { args: ["train", "--bogus"], code: 2, message: /bogus/ },
    { args: ["frobnicate"], code: 2, message: /unknown command 'frobnicate'/ },
    { args: ["adapt", "--run", join(dir, "none")], code: 1, message: /checkpoint\.json not found/ },
    {
      args: ["train", "--dataset", "cifar100", "--data-dir", dir],
      code: 1,
      message: /cifar-100/,
    },
    { args: ["train", "--config", join(dir, "missing.json")], code: 2, message: /not found/ },
    {
      args: ["experiment", "exp1", "--out", join(dir, "done")],
      code: 2,
      message: /done already holds an experiment; pass --resume to keep what it finished/,
    },
    {
      args: ["experiment", "fewshot", "--out", join(dir, "done")],
      code: 2,
      message: /done already holds a few-shot run; pass --resume to keep what it finished/,
    },
    // Few-shot options a run cannot use are refused before anything trains.
    ...([
      [["--queries", "0"], /--queries must be at least 1, got 0/],
      [["--episodes", "1"], /--episodes must be at least 2 \(an interval needs two\), got 1/],
      [["--width", "0"], /--width must be at least 1, got 0/],
      [["--chunk", "0"], /--chunk must be a whole number of episodes, at least 1, got 0/],
      [
        ["--queries", "5000"],
        /training class '\d' has \d+ images, fewer than 1 shots \+ 5000 queries; use --queries \d+ or fewer/,
      ],
    ] as const).map(([flags, message]) => ({
      args: [
        "experiment",
        "fewshot",
        "--dataset",
        "mnist",
        "--ways",
        "2",
        "--shots",
        "1",
        ...flags,
        "--out",
        join(dir, "fs"),
      ],
      code: 1,
      message,
    })),
    {
      args: ["experiment", "exp1", "--baseline", "--out", join(dir, "done")],
      code: 2,
      message: /done\/baseline\.json already exists; move it away to measure the baseline again/,
    },
    {
      args: ["sweep", join(dir, "plan.json"), "--dry-run"],
      code: 2,
      message: /unknown option 'baseline'/,
    },
  ];
  await Deno.mkdir(join(dir, "done"));
  await Deno.writeTextFile(join(dir, "done", "results.json"), "{}\n");
  // What an earlier --baseline wrote is never overwritten; a sweep cell is a whole experiment.
  await Deno.writeTextFile(join(dir, "done", "baseline.json"), "{}\n");
  await Deno.writeTextFile(
    join(dir, "plan.json"),
    JSON.stringify({ experiment: ["exp1"], options: { baseline: true } }),
  );
  for (const c of cases) {
    const r = await cli(...c.args);
    assert.equal(r.code, c.code, `${c.args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, c.message, c.args.join(" "));
    assert.doesNotMatch(r.stderr, /^\s+at /m, `stack trace for ${c.args.join(" ")}`);
  }
  const run = join(dir, "run");
  assert.equal((await cli("train", ...TINY, "--steps", "2", "--out", run)).code, 0);
  // A checkpoint of another architecture: the mismatched tensors are listed.
  const other = await cli("train", "--resume", "--out", run, "--z-dim", "20", "--quiet");
  assert.equal(other.code, 1, other.stderr);
  assert.match(
    other.stderr,
    /does not match this architecture: generator\.head\.conv1\.weight\.weight is \[100,400\], expected \[20,400\]/,
  );
  // Training that diverges stops at the step and keeps the last good checkpoint.
  const diverged = await cli(
    "train",
    ...TINY,
    "--output",
    "linear",
    "--lr",
    "1e30",
    "--save-every",
    "1",
    "--out",
    join(dir, "nan"),
  );
  assert.equal(diverged.code, 1, diverged.stderr);
  assert.match(
    diverged.stderr,
    /Loss became non-finite at step (\d+); the last good checkpoint \(step \d+\)/,
  );
  const kept = await loadSafetensors(join(dir, "nan", "model.safetensors"));
  for (const [name, t] of kept.tensors) assert.ok(t.data.every(Number.isFinite), name);
  // A corrupt checkpoint: truncated model file.
  const model = join(run, "model.safetensors");
  const bytes = await Deno.readFile(model);
  await Deno.writeFile(model, bytes.subarray(0, bytes.length >> 1));
  const r = await cli("adapt", "--run", run, "--quiet");
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /model\.safetensors.*truncated/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("every subcommand prints its help", async () => {
  for (const name of ["train", "adapt", "evaluate", "export", "tasks"]) {
    const r = await cli(name, "--help");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`Usage: deno task ${name}`));
  }
});

const COMMANDS = [
  "train",
  "adapt",
  "evaluate",
  "export",
  "predict",
  "tasks",
  "experiment",
  "experiment fewshot",
  "sweep",
  "report",
];

Deno.test("every help names each flag's default at most once", async () => {
  for (const name of COMMANDS) {
    const r = await cli(...name.split(" "), "--help");
    assert.equal(r.code, 0, r.stderr);
    const flags = r.stdout.split("\n").filter((l) => l.startsWith("  --"));
    assert.ok(flags.length > 0, name);
    for (const line of flags) {
      assert.ok(line.split("(default").length <= 2, `${name}: ${line}`);
    }
  }
  const train = await cli("train", "--help");
  assert.match(train.stdout, /--reserve <value> .*validation \(default 0\.1\)$/m);
  for (const name of ["predict", "adapt"]) {
    const r = await cli(name, "--help");
    assert.match(r.stdout, /--fit <crop\|stretch> .*or stretch \(default crop\)$/m, name);
  }
});

Deno.test("experiment's help names its real defaults: runs/<exp>, 3 held-out tasks", async () => {
  const r = await cli("experiment", "--help");
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stdout,
    /^ {2}--out <value> +output folder \(default runs\/<exp>, e\.g\. runs\/exp1\)$/m,
  );
  assert.doesNotMatch(r.stdout, /runs\/experiment/);
  assert.match(
    r.stdout,
    /^ {2}--holdout-last <value> +hold out the last K tasks \(default 3, fewer where the family would keep under 2 training tasks\)$/m,
  );
  assert.doesNotMatch(r.stdout, /--holdout </);
});

Deno.test("experiment --holdout is a usage error that points to --holdout-last", async () => {
  const dir = await Deno.makeTempDir();
  for (const args of [["exp1", "--holdout", "2"], ["exp1", "--holdout", "2", "--help"]]) {
    const r = await cli("experiment", ...args, "--out", join(dir, "exp"));
    assert.equal(r.code, 2, r.stderr);
    const [first] = r.stderr.split("\n");
    assert.equal(
      first,
      "error: --holdout is not an experiment flag: use --holdout-last K to hold out the last K " +
        "tasks (--holdout takes task indices in train and tasks)",
    );
    assert.equal(r.stdout, "");
  }
  // Nor is it an option of a config file or a sweep plan.
  const config = join(dir, "config.json");
  await Deno.writeTextFile(config, JSON.stringify({ holdout: 2 }));
  const r = await cli("experiment", "exp1", "--config", config);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--config .*: unknown option 'holdout'/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("Ctrl-C during training saves a checkpoint and says how to resume", async () => {
  const dir = await Deno.makeTempDir();
  const run = join(dir, "run");
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      join(root, "main.ts"),
      "train",
      ...TINY,
      "--steps",
      "100000",
      "--out",
      run,
    ],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const metricsFile = join(run, "metrics.jsonl");
  for (let i = 0; i < 600; i++) {
    const text = await Deno.readTextFile(metricsFile).catch(() => "");
    if (text.includes('"kind":"step"')) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill("SIGINT");
  const out = await child.output();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.match(
    stdout,
    /Interrupted at step \d+; checkpoint saved\. Resume with: deno task train --resume/,
  );
  const info = JSON.parse(await Deno.readTextFile(join(run, "checkpoint.json")));
  assert.ok(info.step >= 1 && info.step < 100000);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("progress clocks round before splitting minutes and seconds", () => {
  assert.equal(minutes(0), "0:00");
  assert.equal(minutes(59.4), "0:59");
  // Rounded after the split, these printed 0:60 and 37:60.
  assert.equal(minutes(59.6), "1:00");
  assert.equal(minutes(37 * 60 + 59.7), "38:00");
  assert.equal(minutes(3 * 3600 + 5), "180:05");
  assert.equal(minutes(NaN), "?");
});
