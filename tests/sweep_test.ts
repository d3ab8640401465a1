/**
 * Sweeps without Slurm: plans expand into uniquely named cells; plan values that reach sbatch or
 * the job script stay one argument and run nothing; a cell's records decide its state (a result
 * without its done record is not done); and the local backend end to end through the command
 * line: cells run, a failing cell leaves its log and error record and fails the sweep by name, a
 * rerun skips what is done, `--status` and the seed-grouped report, whose method − z column has the
 * sign its header says.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { cellStatus, RECORDS } from "../src/sweep/cell.ts";
import { type Cell, expandCells, parsePlan, type Plan } from "../src/sweep/plan.ts";
import { arraySpec, jobScript, sbatchArgs, shellQuote } from "../src/sweep/slurm.ts";
import type { ExperimentResults } from "../src/experiment.ts";
import { barChart, type Done, groupBySeed, versusZTable } from "../src/sweep/report.ts";
import { type CliOutput, runMain } from "./util.ts";

const root = new URL("..", import.meta.url).pathname;

/** Runs main.ts as the sweep task does (it starts processes and reads the host name). */
function cli(args: string[], env: Record<string, string> = {}): Promise<CliOutput> {
  return runMain(args, { allow: ["--allow-run", "--allow-sys=hostname"], env });
}

const check = (key: string, value: unknown) =>
  ["seed", "lr", "profile", "shots", "ablations"].includes(key)
    ? (key === "seed" && typeof value !== "number" ? "expected a number" : undefined)
    : `unknown option '${key}'`;

function plan(data: unknown): Plan {
  return parsePlan(data, { experiments: ["exp1", "exp2"], check, source: "plan.json" });
}

Deno.test("a plan expands into named cells, experiments outermost, the last option fastest", () => {
  const cells = expandCells(plan({
    experiment: ["exp1", "exp2"],
    options: { profile: "smoke", lr: [0.001, 0.003], seed: [1, 2], shots: [[1, 5], [0]] },
  }));
  assert.equal(cells.length, 16);
  assert.deepEqual(cells.map((c) => c.index), [...cells.keys()]);
  assert.equal(cells[0]!.name, "exp1_lr-0.001_seed-1_shots-1+5");
  assert.equal(cells[1]!.name, "exp1_lr-0.001_seed-1_shots-0");
  assert.equal(cells[15]!.name, "exp2_lr-0.003_seed-2_shots-0");
  assert.deepEqual(cells[2]!.values, { profile: "smoke", lr: 0.001, seed: 2, shots: [1, 5] });
  assert.equal(new Set(cells.map((c) => c.name)).size, cells.length);
  // The same plan gives the same names: a rerun finds its cells.
  assert.deepEqual(
    expandCells(plan({ experiment: "exp1", options: { seed: [1, 2] } })).map((c) => c.name),
    ["exp1_seed-1", "exp1_seed-2"],
  );
});

Deno.test("names that would collide on disk get a hash, so no two cells share a folder", () => {
  const cells = expandCells(
    parsePlan({ experiment: "exp1", options: { profile: ["a/b", "a b"] } }, {
      experiments: ["exp1"],
      check: () => undefined,
      source: "p.json",
    }),
  );
  assert.equal(cells.length, 2);
  assert.notEqual(cells[0]!.name, cells[1]!.name);
  for (const c of cells) assert.match(c.name, /^exp1_profile-a-b_[0-9a-f]{8}$/);
});

Deno.test("plan mistakes name the file and the entry", () => {
  const cases: [unknown, RegExp][] = [
    [[], /expected a JSON object/],
    [{ options: {} }, /"experiment" is missing/],
    [{ experiment: "exp3" }, /experiment "exp3" is not one of exp1, exp2/],
    [{ experiment: "exp1", options: { bogus: [1] } }, /options\.bogus\[0\]: unknown option/],
    [{ experiment: "exp1", options: { seed: ["x"] } }, /options\.seed\[0\]: expected a number/],
    [{ experiment: "exp1", options: { seed: [1, 1] } }, /options\.seed lists 1 twice/],
    [{ experiment: "exp1", options: { seed: [] } }, /options\.seed is an empty list/],
    [{ experiment: "exp1", options: { shots: [1, 5] } }, /takes lists, so give a list of them/],
    [{ experiment: "exp1", options: { out: ["x"] } }, /options\.out is set by the sweep/],
    [{ experiment: "exp1", slurm: { cpus: "2" } }, /slurm\.cpus must be a positive integer/],
    [{ experiment: "exp1", slurm: { args: "--qos=x" } }, /slurm\.args must be a list of strings/],
    [{ experiment: "exp1", slurm: { queue: "x" } }, /unknown slurm setting 'queue'/],
    [{ experiment: "exp1", grid: {} }, /unknown field 'grid'/],
  ];
  for (const [data, message] of cases) {
    assert.throws(() => plan(data), (e: Error) => {
      assert.match(e.message, /^plan\.json: /);
      assert.match(e.message, message);
      return true;
    });
  }
});

const NASTY = `it's "a" $HOME; touch pwned $(touch pwned2) \`touch pwned3\` 100%`;

Deno.test("plan values reach sbatch and the job script as single arguments that run nothing", async () => {
  const dir = await Deno.makeTempDir();
  const sweepDir = join(dir, `sweep ${NASTY}`);
  const planPath = join(dir, `plan ${NASTY}.json`);
  const sweep = {
    dir: sweepDir,
    record: {
      format: 1 as const,
      plan: planPath,
      content: plan({ experiment: "exp1" }),
      cells: [] as Cell[],
    },
  };
  // A stand-in for deno that writes its arguments, one per line, so the test sees what bash passed.
  const argsFile = join(dir, "args.txt");
  const fake = join(dir, `deno ${NASTY}`);
  await Deno.writeTextFile(fake, `#!/bin/bash\nprintf '%s\\n' "$@" > ${shellQuote(argsFile)}\n`);
  await Deno.chmod(fake, 0o755);
  const script = join(dir, "job.sh");
  await Deno.writeTextFile(script, jobScript(sweep, { force: true, deno: fake, root: dir }));
  const run = await new Deno.Command("bash", {
    args: [script],
    cwd: dir,
    env: { SLURM_ARRAY_TASK_ID: "7", HOME: dir },
  }).output();
  assert.equal(run.code, 0, new TextDecoder().decode(run.stderr));
  assert.deepEqual((await Deno.readTextFile(argsFile)).split("\n").slice(0, -1), [
    "task",
    "sweep",
    planPath,
    "--out",
    sweepDir,
    "--force",
    "--cell",
    "7",
  ]);
  for (const f of ["pwned", "pwned2", "pwned3"]) {
    assert.equal(await Deno.stat(join(dir, f)).then(() => true, () => false), false, f);
  }
  const args = sbatchArgs(sweep, [0, 1, 2, 5], {
    partition: "gpu q",
    time: "1:00:00",
    cpus: 2,
    mem: "8G",
    gres: "gpu:1",
    parallel: 2,
    args: [`--comment=${NASTY}`, "--qos=short"],
  });
  assert.ok(args.includes(`--comment=${NASTY}`), args.join("\n"));
  assert.ok(args.includes("--partition=gpu q"));
  assert.ok(args.includes("--array=0-2,5%2"));
  for (const a of ["--time=1:00:00", "--cpus-per-task=2", "--mem=8G", "--gres=gpu:1"]) {
    assert.ok(args.includes(a), a);
  }
  // sbatch expands %A and %a in the log name; a % in the folder is doubled to stay literal.
  const output = args.find((a) => a.startsWith("--output="))!;
  assert.ok(output.endsWith("/logs/slurm-%A_%a.log"), output);
  assert.ok(output.includes("100%%/logs"), output);
  assert.throws(() => shellQuote("a\0b"), /NUL/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("array specs compress indices into ranges", () => {
  assert.equal(arraySpec([0, 1, 2]), "0-2");
  assert.equal(arraySpec([4, 0, 2, 3, 9], 3), "0,2-4,9%3");
  assert.equal(arraySpec([1]), "1");
});

Deno.test("a cell is done only with its done record, results and matching options", async () => {
  const dir = await Deno.makeTempDir();
  const [cell] = expandCells(plan({ experiment: "exp1", options: { seed: 1 } }));
  const cellDir = join(dir, "cells", cell!.name);
  await Deno.mkdir(cellDir, { recursive: true });
  const write = (f: string, v: unknown) => Deno.writeTextFile(join(cellDir, f), JSON.stringify(v));
  const state = async () => (await cellStatus(dir, cell!)).state;
  assert.equal(await state(), "missing");
  await write(RECORDS.cell, cell);
  await write(RECORDS.results, {});
  assert.equal(await state(), "missing", "results without done.json (killed while finishing)");
  await write(RECORDS.done, { finished: "", seconds: 1, host: "h" });
  assert.equal(await state(), "done");
  await write(RECORDS.cell, { ...cell, values: { seed: 2 } });
  const other = await cellStatus(dir, cell!);
  assert.equal(other.state, "missing");
  assert.match(other.detail, /other options/);
  await write(RECORDS.cell, cell);
  await Deno.remove(join(cellDir, RECORDS.done));
  // A lock whose process is gone: the cell was killed without a record.
  const gone = new Deno.Command("true").spawn();
  const pid = gone.pid;
  await gone.status;
  const { hostName } = await import("../src/sweep/cell.ts");
  await write(RECORDS.running, { host: hostName(), pid, started: "then" });
  const killed = await cellStatus(dir, cell!);
  assert.equal(killed.state, "failed");
  assert.match(killed.detail, /stopped without a record/);
  // A live process holding the lock: running.
  const live = new Deno.Command("bash", { args: ["-c", "sleep 30; true", "--cell"] }).spawn();
  await write(RECORDS.running, { host: hostName(), pid: live.pid, started: "now" });
  assert.equal(await state(), "running");
  live.kill("SIGKILL");
  await live.status;
  await Deno.remove(join(cellDir, RECORDS.running));
  await write(RECORDS.error, { message: "boom", at: "", host: "h" });
  const failed = await cellStatus(dir, cell!);
  assert.equal(failed.state, "failed");
  assert.equal(failed.detail, "boom");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("bar charts draw one bar per value and an error bar per interval", () => {
  const svg = barChart(["z", "full"], [
    { label: "a<b", values: [{ n: 3, mean: 0.5, std: 0.1, lo: 0.25, hi: 0.75 }, undefined] },
    { label: "c", values: [{ n: 1, mean: 0.9, std: NaN, lo: NaN, hi: NaN }, undefined] },
  ], { title: "t", yLabel: "y" });
  assert.match(svg, /^<svg[^]*<\/svg>\n$/);
  assert.match(svg, /a&lt;b/);
  assert.equal([...svg.matchAll(/class="bar"/g)].length, 2);
  assert.equal([...svg.matchAll(/class="error"/g)].length, 1);
});

Deno.test("the method − z column is method minus z: a method below z is negative", () => {
  // docs/sweeps/smoke.md once showed zero-shot at +12.47 while it scored 50.30% against z's
  // 62.77%: the column said method − z and held z − method.
  const z = [0.60, 0.70, 0.65];
  const below = [0.50, 0.52, 0.49];
  const above = [0.80, 0.95, 0.85];
  const done: Done[] = z.map((zAcc, i) => ({
    cell: { index: i, name: `exp1_seed-${i + 1}`, experiment: "exp1", values: { seed: i + 1 } },
    results: {
      options: { seed: i + 1 },
      heldOut: [{
        methods: [
          { method: "zero-shot", accuracy: below[i] },
          { method: "z", accuracy: zAcc },
          { method: "full", accuracy: above[i] },
        ],
        shots: [],
      }],
    } as unknown as ExperimentResults,
  }));
  const [group] = groupBySeed(done);
  const zeroShot = group!.versusZ.get("zero-shot")!;
  const full = group!.versusZ.get("full")!;
  assert.ok(Math.abs(zeroShot.meanDiff - (-0.1466666666666667)) < 1e-12, `${zeroShot.meanDiff}`);
  assert.ok(zeroShot.lo < zeroShot.hi && zeroShot.hi < 0 && zeroShot.t < 0);
  assert.ok(Math.abs(full.meanDiff - 0.2166666666666667) < 1e-12 && full.t > 0);
  const md = versusZTable([group!]);
  const header = md.find((l) => l.startsWith("| group"))!.split(" | ");
  const column = header.indexOf("method − z");
  assert.ok(column > 0, header.join(" | "));
  const row = (m: string) => md.find((l) => l.startsWith(`| exp1 | ${m} |`))!.split(" | ");
  assert.equal(row("zero-shot")[column], "-14.67");
  assert.equal(row("full")[column], "21.67");
  assert.deepEqual(versusZTable([]), []);
});

Deno.test("a local sweep runs, fails by name, resumes, reports status and statistics", async () => {
  const dir = await Deno.makeTempDir();
  const empty = join(dir, "no-data");
  await Deno.mkdir(empty);
  const planPath = join(dir, "plan.json");
  await Deno.writeTextFile(
    planPath,
    JSON.stringify({
      experiment: "exp1",
      options: {
        profile: "smoke",
        shots: [[0]],
        ablations: false,
        steps: 2,
        adaptSteps: 2,
        holdoutLast: 1,
        dataset: ["mnist", "cifar10"],
        dataDir: empty,
        seed: [1, 2],
      },
    }),
  );
  const out = join(dir, "sweep");
  const dry = await cli(["sweep", planPath, "--out", out, "--dry-run"]);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /4 cell\(s\)/);
  assert.match(dry.stdout, /exp1_dataset-cifar10_seed-2\s+run/);
  assert.equal(await Deno.stat(out).then(() => true, () => false), false, "dry run writes nothing");

  const first = await cli(["sweep", planPath, "--out", out, "--parallel", "2"]);
  assert.equal(first.code, 1, first.stderr);
  assert.match(
    first.stderr,
    /error: 2 of 4 cell\(s\) failed: exp1_dataset-cifar10_seed-1 \(log [^)]*exp1_dataset-cifar10_seed-1\.log\), exp1_dataset-cifar10_seed-2/,
  );
  assert.doesNotMatch(first.stderr, /^\s+at /m);
  const failedDir = join(out, "cells", "exp1_dataset-cifar10_seed-1");
  const error = JSON.parse(await Deno.readTextFile(join(failedDir, "error.json")));
  assert.match(error.message, /cifar-10/);
  assert.match(await Deno.readTextFile(error.log), /cifar-10/);
  for (const seed of [1, 2]) {
    const cell = join(out, "cells", `exp1_dataset-mnist_seed-${seed}`);
    const results = JSON.parse(await Deno.readTextFile(join(cell, "results.json")));
    assert.deepEqual(results.options.train, { steps: 2 }, "training override applied");
    assert.deepEqual(results.options.adapt, { steps: 2 }, "adaptation override applied");
    assert.equal(results.options.seed, seed);
    assert.ok(results.heldOut[0].methods.every((m: { steps: number }) => m.steps <= 2));
    assert.ok(await Deno.stat(join(cell, "done.json")));
    assert.ok(await Deno.stat(join(cell, "report.md")));
  }

  const status = await cli(["sweep", "--status", out]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /exp1_dataset-mnist_seed-1\s+done/);
  assert.match(status.stdout, /exp1_dataset-cifar10_seed-2\s+failed\s+.*cifar-10/);
  assert.match(status.stdout, /2 done, 0 running, 2 failed, 0 missing/);

  // A rerun leaves the done cells alone and retries only the failed ones.
  const before = await Deno.readTextFile(
    join(out, "cells", "exp1_dataset-mnist_seed-1", "done.json"),
  );
  const again = await cli(["sweep", planPath, "--out", out, "--quiet"]);
  assert.equal(again.code, 1);
  assert.match(again.stdout, /exp1_dataset-mnist_seed-1\s+skip \(done\)/);
  assert.match(again.stdout, /exp1_dataset-cifar10_seed-1\s+run/);
  assert.equal(
    await Deno.readTextFile(join(out, "cells", "exp1_dataset-mnist_seed-1", "done.json")),
    before,
  );
  // One cell by index, as a Slurm element runs it: done, so skipped.
  const one = await cli(["sweep", planPath, "--out", out, "--cell", "0"]);
  assert.equal(one.code, 0, one.stderr);
  assert.match(one.stdout, /Cell 0 'exp1_dataset-mnist_seed-1' is done; skipped/);
  const range = await cli(["sweep", planPath, "--out", out, "--cell", "9"]);
  assert.equal(range.code, 2);
  assert.match(range.stderr, /--cell 9: the plan has 4 cell\(s\), numbered 0 to 3/);

  const report = await cli(["report", out, "--out", join(dir, "docs", "sweep.md")]);
  assert.equal(report.code, 0, report.stderr);
  assert.match(report.stdout, /dataset=mnist\s+z\s+2\s+\d+\.\d\d% ± \d+\.\d\d\s+\[/);
  assert.match(report.stdout, /Not done, not counted: exp1_dataset-cifar10_seed-1/);
  const md = await Deno.readTextFile(join(dir, "docs", "sweep.md"));
  assert.match(md, /\| dataset=mnist \| z \| 2 \| /);
  assert.match(md, /Groups with fewer than 3 seeds: dataset=mnist \(n = 2\)/);
  assert.match(md, /\(sweep\/cells\/exp1_dataset-mnist_seed-2\/results\.json\)/);
  const copied = JSON.parse(
    await Deno.readTextFile(
      join(dir, "docs", "sweep", "cells", "exp1_dataset-mnist_seed-2", "results.json"),
    ),
  );
  assert.equal(copied.options.seed, 2);
  assert.match(await Deno.readTextFile(join(dir, "docs", "sweep", "sweep_accuracy.svg")), /<svg/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("sweep usage errors get one line and exit 2", async () => {
  const dir = await Deno.makeTempDir();
  const bad = join(dir, "bad.json");
  await Deno.writeTextFile(bad, JSON.stringify({ experiment: "exp1", options: { lr: ["x"] } }));
  const cases: [string[], RegExp][] = [
    [["sweep"], /missing PLAN\.json/],
    [["sweep", join(dir, "none.json")], /none\.json: not found/],
    [
      ["sweep", bad],
      /bad\.json: options\.lr\[0\]: option 'lr' is "x"; expected a non-negative number/,
    ],
    [["sweep", bad, "--backend", "pbs"], /expected one of local, slurm/],
  ];
  for (const [args, message] of cases) {
    const r = await cli(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
  const help = await cli(["sweep", "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Usage: deno task sweep PLAN\.json/);
  assert.match(help.stdout, /--sbatch-arg/);
  const experimentHelp = await cli(["experiment", "--help"]);
  assert.match(
    experimentHelp.stdout,
    /--adapt-steps <value>\s+adaptation: most steps of every method/,
  );
  const noSlurm = await cli(
    [
      "sweep",
      join(root, "docs", "sweeps", "smoke.json"),
      "--out",
      join(dir, "s"),
      "--backend",
      "slurm",
    ],
    { PATH: join(dir, "empty") },
  );
  assert.equal(noSlurm.code, 1, noSlurm.stderr);
  assert.match(noSlurm.stderr, /sbatch not found: --backend slurm needs Slurm's client commands/);
  const notSweep = await cli(["sweep", "--status", dir]);
  assert.equal(notSweep.code, 1);
  assert.match(notSweep.stderr, /sweep\.json: not found; expected a folder written by/);
  await Deno.remove(dir, { recursive: true });
});
