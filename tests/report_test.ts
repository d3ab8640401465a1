/**
 * The experiment report's statistics on made-up results (no GPU): z - method differences are
 * paired by held-out task with Student-t intervals over the tasks, few-shot rows paired by subset
 * and then over tasks, verdicts three-valued, old files without per-subset values still readable,
 * and the combined report averaging seeds per task before taking spreads over tasks. Expected
 * intervals were computed with SciPy 1.17 (`stats.ttest_1samp(d, 0).confidence_interval()` of
 * the per-task differences).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { ExperimentResults, HeldOutResult } from "../src/experiment.ts";
import { combineReports, verdict } from "../src/report.ts";
import { hierarchicalPaired, type Interval, pairedInterval } from "../src/stats.ts";
import { BUILT_IN_RECIPE } from "../src/adapt/recipe.ts";
import type { BaselineResults } from "../src/baseline.ts";

type Shot = HeldOutResult["shots"][number];

/** A held-out task with the given test accuracies and few-shot rows. */
function task(name: string, accuracy: Record<string, number>, shots: Shot[] = []): HeldOutResult {
  return {
    task: 0,
    name,
    methods: Object.entries(accuracy).map(([method, acc]) => ({
      method,
      trainable: method === "full" ? 1000 : 100,
      accuracy: acc,
      loss: 1 - acc,
      steps: 1,
      stepsRun: 1,
      seconds: 1,
      lr: 0.01,
      collapsed: false,
      curve: [],
    })),
    controls: {
      meanZ: 0.5,
      randomZ: 0.5,
      bestTrainingZ: 0.6,
      bestTrainingZFair: 0.6,
      meanOverTrainingZ: 0.55,
      perTrainingZ: [],
    },
    shots,
  } as unknown as HeldOutResult;
}

/** A few-shot row of z or full: the mean of `values`, with or without them (files from before). */
function shot(shots: number, method: "z" | "full", values: number[], keep = true): Shot {
  const accuracy = values.reduce((a, b) => a + b, 0) / values.length;
  return {
    shots,
    method,
    accuracy,
    loss: 1 - accuracy,
    std: 0,
    subsets: values.length,
    ...(keep ? { values } : {}),
  };
}

function results(heldOut: HeldOutResult[], seed = 1): ExperimentResults {
  return {
    options: { name: "exp1", dataset: "mnist", profile: "smoke", seed },
    command: "deno task experiment exp1",
    adapter: "test",
    dataset: "made up",
    family: "one_vs_anchor",
    taskCounts: { train: 4, heldOut: heldOut.length },
    trainedAccuracy: 0.9,
    trainSeconds: 1,
    reserve: 0.1,
    heldOut,
    ablations: [],
    seconds: 2,
  } as unknown as ExperimentResults;
}

const line = (lines: string[], start: string) => lines.find((l) => l.startsWith(start)) ?? "";

Deno.test("verdicts pair by task and by subset, with t intervals over the held-out tasks", () => {
  const r = results([
    task("a", { z: 0.90, full: 0.88 }, [
      shot(1, "z", [0.70, 0.60]),
      shot(1, "full", [0.50, 0.52]),
      shot(5, "z", [0.80, 0.80]),
      shot(5, "full", [0.60, 0.60]),
    ]),
    task("b", { z: 0.85, full: 0.84 }, [
      shot(1, "z", [0.66, 0.64]),
      shot(1, "full", [0.55, 0.53]),
      shot(5, "z", [0.70, 0.70]),
      shot(5, "full", [0.65, 0.65]),
    ]),
    task("c", { z: 0.80, full: 0.79 }, [
      shot(1, "z", [0.72, 0.70]),
      shot(1, "full", [0.58, 0.60]),
      shot(5, "z", [0.76, 0.76]),
      shot(5, "full", [0.60, 0.60]),
    ]),
  ]);
  const lines = verdict(r);
  // z - full per task 2, 1, 1 points: +1.33 [-0.10, +2.77] clears -1 point.
  const whole = line(lines, "**z alone");
  assert.match(whole, /\): met\.\*\*/);
  assert.match(
    whole,
    /z - full \+1\.33 points, 95% t interval \[-0\.10, \+2\.77\] over 3 held-out/,
  );
  // One image: per-task means of the subset differences 14, 11, 12 points: [+8.54, +16.13].
  const one = line(lines, "**1 image(s)");
  assert.match(one, /target: z >= full \+ 5 points\): met\./);
  assert.match(
    one,
    /\+12\.33 points, 95% t interval \[\+8\.54, \+16\.13\] over 3 held-out tasks, each the mean of 2 paired subsets/,
  );
  // Five images: +13.67 meets the target, but the interval [-5.63, +32.96] does not clear it.
  const five = line(lines, "**5 image(s)");
  assert.match(five, /\): not established\./);
  assert.match(five, /\+13\.67 points, 95% t interval \[-5\.63, \+32\.96\]/);
  // A file from before per-subset values gives the same intervals from each task's means.
  const old = structuredClone(r);
  for (const h of old.heldOut) for (const s of h.shots) delete s.values;
  assert.deepEqual(verdict(old), lines);
});

Deno.test("one held-out task: intervals over its subsets, or none from an older file", () => {
  const z = [0.70, 0.80, 0.60, 0.75, 0.65];
  const full = [0.50, 0.50, 0.50, 0.50, 0.50];
  const fresh = verdict(results([
    task("a", { z: 0.9, full: 0.95 }, [shot(1, "z", z), shot(1, "full", full)]),
  ]));
  assert.match(line(fresh, "**z alone"), /\): not established\..*no interval from 1 held-out task/);
  // Subset differences 20, 30, 10, 25, 15 points: +20.00 [+10.18, +29.82].
  const one = line(fresh, "**1 image(s)");
  assert.match(one, /\): met\./);
  assert.match(
    one,
    /\+20\.00 points, 95% t interval \[\+10\.18, \+29\.82\] over 5 paired subsets of the 1 held-out task \(this task only\)/,
  );
  const old = verdict(results([
    task("a", { z: 0.9, full: 0.95 }, [shot(1, "z", z, false), shot(1, "full", full, false)]),
  ]));
  const missing = line(old, "**1 image(s)");
  assert.match(missing, /\): not established\./);
  assert.match(
    missing,
    /\+20\.00 points over 5 subsets of 1 held-out task; the interval .* cannot be recomputed/,
  );
});

/** The combined report's lines over `runs`, each written to its own folder under `dir`. */
async function combined(
  dir: string,
  runs: readonly unknown[],
  baselines: readonly unknown[] = [],
): Promise<string[]> {
  const dirs: string[] = [];
  for (const [i, r] of runs.entries()) {
    dirs.push(join(dir, `s${i + 1}`));
    await Deno.mkdir(dirs[i]!);
    await Deno.writeTextFile(join(dirs[i]!, "results.json"), JSON.stringify(r));
    if (baselines[i]) {
      await Deno.writeTextFile(join(dirs[i]!, "baseline.json"), JSON.stringify(baselines[i]));
    }
  }
  return (await Deno.readTextFile(await combineReports(dirs, join(dir, "all.md")))).split("\n");
}

Deno.test("the combined report averages seeds per task before the spread over tasks", async () => {
  const dir = await Deno.makeTempDir();
  const runs = [
    results([task("a", { z: 0.9, full: 0.85 }), task("b", { z: 0.7, full: 0.72 })], 1),
    results([task("a", { z: 0.8, full: 0.83 }), task("b", { z: 0.6, full: 0.64 })], 2),
  ];
  const md = await combined(dir, runs);
  // z per task over the seeds: 85% and 65%, so 75.00% ± 14.14 over the 2 tasks (pooling the four
  // (seed, task) values would give ± 12.91 with n = 4).
  assert.match(
    line(md, "| exp1 mnist one_vs_anchor | smoke"),
    /\| 2 x 2 \| [^|]+ \| 75\.00% ± 14\.14 \|/,
  );
  // z - full per task over the seeds: +1 and -3 points: -1.00 [-26.41, +24.41] over 2 tasks.
  const gap = md.filter((l) => l.startsWith("| exp1 mnist one_vs_anchor | smoke"))[1]!;
  assert.match(
    gap,
    /\| -1\.00 \| \[-26\.41, \+24\.41\] \(2 held-out tasks\) \| not established \|/,
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a converged whole network never pools with one held to the step cap", async () => {
  const dir = await Deno.makeTempDir();
  const held = { epochs: 0, weightDecays: [0], augment: false, flip: false };
  const converged = { epochs: 30, weightDecays: [0, 0.1], augment: true, flip: false };
  const runs = [
    results([task("a", { z: 0.9, full: 0.85 }), task("b", { z: 0.7, full: 0.72 })], 1),
    {
      ...results([task("a", { z: 0.8, full: 0.83 }), task("b", { z: 0.6, full: 0.64 })], 2),
      fullBudget: held,
    },
    {
      ...results([task("a", { z: 0.8, full: 0.9 }), task("b", { z: 0.6, full: 0.7 })], 3),
      fullBudget: converged,
    },
  ];
  const md = await combined(dir, runs);
  // Seeds 1 and 2 pool (a budget of the step cap is what runs before the record had).
  assert.match(line(md, "| exp1 mnist one_vs_anchor | smoke, kept-out slice |"), /\| 2 x 2 \|/);
  assert.match(
    line(md, "| exp1 mnist one_vs_anchor | smoke, kept-out slice, converged full |"),
    /\| 1 x 2 \|/,
  );
  await Deno.remove(dir, { recursive: true });
});

/** A baseline.json of `results(...)`'s options: the converged whole network per task. */
function baseline(seed: number, full: Record<string, number>): BaselineResults {
  return {
    kind: "baseline",
    options: { name: "exp1", dataset: "mnist", profile: "smoke", seed },
    command: "deno task experiment exp1 --baseline",
    adapter: "test",
    dataset: "made up",
    family: "one_vs_anchor",
    reserve: 0.1,
    fullBudget: { epochs: 30, weightDecays: [0, 0.1], augment: true, flip: false },
    heldOut: Object.entries(full).map(([name, accuracy], task) => ({
      task,
      name,
      full: { ...task_(accuracy), imagesSeen: 1000, weightDecay: 0.1 },
    })),
    seconds: 3,
  } as unknown as BaselineResults;
}

const task_ = (accuracy: number) => task("x", { full: accuracy }).methods[0]!;

Deno.test("a baseline.json pairs the converged whole network with the experiment's z by task", async () => {
  const dir = await Deno.makeTempDir();
  const runs = [
    results([task("a", { z: 0.9, full: 0.85 }), task("b", { z: 0.7, full: 0.72 })], 1),
    results([task("a", { z: 0.8, full: 0.83 }), task("b", { z: 0.6, full: 0.64 })], 2),
  ];
  const md = await combined(dir, runs, [
    baseline(1, { a: 0.95, b: 0.75 }),
    baseline(2, { a: 0.93, b: 0.71 }),
  ]);
  // z - converged full per task over the seeds: -9 and -8 points; t(1) interval over the 2 tasks
  // (SciPy: ttest_1samp([-0.09, -0.08], 0).confidence_interval() = [-0.1485, -0.0215]). The step
  // cap drew 1 step x the smoke profile's batch of 8 images; the converged runs 1,000.
  const row = md.filter((l) => l.startsWith("| exp1 mnist one_vs_anchor | smoke"))[2]!;
  assert.match(
    row,
    /\| 2 x 2 \| 75\.00% \| 76\.00% \| 83\.50% \| 8 \/ 1,000 \| -8\.50 \| \[-14\.85, -2\.15\] \(2 held-out tasks\) \| missed \|/,
  );
  const own = await Deno.readTextFile(join(dir, "s1", "report.md"));
  assert.match(own, /### The whole network trained to convergence/);
  assert.match(own, /\| a \| 90\.00% \| 85\.00% \| 95\.00% \|/);
  // Copied beside results.json, so the numbers travel with the report.
  assert.ok(
    (await Deno.readTextFile(join(dir, "all", "s1", "baseline.json"))).includes("baseline"),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a baseline.json of other options is refused, naming the file and the option", async () => {
  const dir = await Deno.makeTempDir();
  const runs = [results([task("a", { z: 0.9, full: 0.85 })], 2)];
  await assert.rejects(
    () => combined(dir, runs, [baseline(3, { a: 0.95 })]),
    /s1\/baseline\.json: made with seed 3, not the experiment's 2; run the experiment's command with --baseline/,
  );
  const other = await Deno.makeTempDir();
  await assert.rejects(
    () => combined(other, runs, [baseline(2, { c: 0.95 })]),
    /made with held-out tasks "c", not the experiment's "a"/,
  );
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(other, { recursive: true });
});

Deno.test("recipe runs: a table paired by task over seeds; the old lowest-loss rule apart", async () => {
  const dir = await Deno.makeTempDir();
  const recipe = (name: string, chosenLoss: number) => ({
    chosen: { name, init: "population", population: 3, lr: 0.01, zSteps: 50, prior: 0.05 },
    validationTasks: [7],
    validation: {
      chosen: { accuracy: 1, loss: chosenLoss },
      defaults: { accuracy: 1, loss: 0.0021 },
      seedRecipe: { accuracy: 1, loss: 0.01 },
      zeroShot: { accuracy: 0.5, loss: 0.69 },
    },
    seconds: 1,
    builtInDefaults: [{ task: 1, accuracy: 0.9, loss: 0.1 }, { task: 2, accuracy: 0.7, loss: 0.3 }],
  });
  const two = (z: [number, number], seed: [number, number], full: [number, number]) =>
    [
      { ...task("a", { "zero-shot": 0.5, z: z[0], "z-seed": seed[0], full: full[0] }), task: 1 },
      { ...task("b", { "zero-shot": 0.5, z: z[1], "z-seed": seed[1], full: full[1] }), task: 2 },
    ] as HeldOutResult[];
  const runs = [
    {
      ...results(two([0.9, 0.7], [0.8, 0.72], [0.95, 0.8]), 1),
      recipe: recipe(BUILT_IN_RECIPE, 0.0021),
    },
    {
      ...results(two([0.8, 0.6], [0.8, 0.6], [0.9, 0.7]), 2),
      recipe: recipe(BUILT_IN_RECIPE, 0.0021),
    },
    // Chosen for a loss 0.002 below the defaults': less than MIN_GAIN, so the old rule's choice.
    { ...results(two([0.8, 0.6], [0.8, 0.6], [0.9, 0.7]), 3), recipe: recipe("lr x3", 0.0001) },
  ];
  const md = await combined(dir, runs);
  const rows = md.filter((l) => l.startsWith("| exp1 mnist one_vs_anchor | smoke"));
  // Summary, z - full and recipe rows for each of the two groups.
  assert.equal(rows.length, 6);
  const pooled = rows.filter((l) => l.includes("| smoke, kept-out slice | 2 x 2 |"));
  // z - z-seed per task over the 2 seeds: +5 and -1 points, mean +2.00, t(1) interval.
  assert.match(pooled[2]!, /\| \+2\.00 \[-36\.12, \+40\.12\]: met \|/);
  assert.ok(rows.some((l) => l.includes("smoke, kept-out slice, recipe by lowest loss | 1 x 2")));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("the combined report regenerates in place over run folders already beside it", async () => {
  const root = await Deno.makeTempDir();
  const name = "mnist-exp1-long-reserve-s1";
  await Deno.mkdir(join(root, "results", name), { recursive: true });
  const committed = join("docs", "results", name, "results.json");
  const results = await Deno.readTextFile(committed);
  await Deno.writeTextFile(join(root, "results", name, "results.json"), results);
  const file = await combineReports([join(root, "results", name)], join(root, "results.md"));
  assert.match(await Deno.readTextFile(file), /95% t interval over tasks/);
  assert.equal(await Deno.readTextFile(join(root, "results", name, "results.json")), results);
  await Deno.remove(root, { recursive: true });
});

/** An interval as docs/results.md's cells: "| -7.29 | [-10.03, -4.56] (10 held-out tasks) |". */
function intervalCells(gap: Interval): string {
  const points = (x: number) => `${x >= 0 ? "+" : ""}${(100 * x).toFixed(2)}`.replace("+-", "-");
  return `| ${points(gap.estimate)} | [${points(gap.lo)}, ${
    points(gap.hi)
  }] (${gap.n} held-out tasks) |`;
}

Deno.test("an interval in docs/results.md is recomputed from its committed results.json", async () => {
  const file = join("docs", "results", "cifar10-allpairs-quick-h10", "results.json");
  const results = JSON.parse(await Deno.readTextFile(file)) as ExperimentResults;
  const of = (method: string) =>
    results.heldOut.map((h) => h.methods.find((m) => m.method === method)!.accuracy);
  const gap = pairedInterval(of("z"), of("full"));
  assert.equal(gap.n, 10);
  const row = intervalCells(gap);
  assert.equal(row, "| -7.29 | [-10.03, -4.56] (10 held-out tasks) |");
  assert.ok((await Deno.readTextFile(join("docs", "results.md"))).includes(row));
});

Deno.test("the converged whole network's interval in docs/results.md is recomputed from the committed files", async () => {
  const rows: { unit: string; a: number; b: number }[] = [];
  for (const seed of [1, 2]) {
    const dir = join("docs", "results", `mnist-exp1-long-reserve-s${seed}`);
    const results = JSON.parse(
      await Deno.readTextFile(join(dir, "results.json")),
    ) as ExperimentResults;
    const baseline = JSON.parse(
      await Deno.readTextFile(join(dir, "baseline.json")),
    ) as BaselineResults;
    assert.equal(baseline.options.seed, seed);
    for (const h of results.heldOut) {
      const z = h.methods.find((m) => m.method === "z")!.accuracy;
      const full = baseline.heldOut.find((b) => b.name === h.name)!.full.accuracy;
      rows.push({ unit: h.name, a: z, b: full });
    }
  }
  const gap = hierarchicalPaired(rows);
  assert.equal(gap.n, 3);
  const cell = intervalCells(gap);
  assert.equal(cell, "| -2.23 | [-7.27, +2.81] (3 held-out tasks) |");
  assert.ok((await Deno.readTextFile(join("docs", "results.md"))).includes(cell));
});
