/**
 * `report`: a Markdown report with SVG plots from an experiment's `results.json`: learning curves
 * per method, accuracy vs shots, a results table, and a plain-words verdict on the seed's claims.
 * Spreads are sample stds and differences paired Student-t intervals over the independent units
 * (held-out tasks; seeds are averaged per task first), each table naming its unit; a verdict is
 * met, not established or missed (src/stats.ts). The SVG writer is ours (no plotting dependency);
 * the files open in any browser.
 *
 * @module
 */
import { basename, join, resolve } from "node:path";
import type { Method, MethodResult } from "./adapt/mod.ts";
import { BUILT_IN_RECIPE, MIN_GAIN } from "./adapt/recipe.ts";
import {
  BASELINE_FILE,
  type BaselineResults,
  isBaselineResults,
  PAIRING_OPTIONS,
} from "./baseline.ts";
import {
  adaptBatchOf,
  type ExperimentResults,
  type HeldOutResult,
  TRAINED_Z,
} from "./experiment.ts";
import type { FewShotResults } from "./fewshot/experiment.ts";
import { isFewShotResults, seedsSection, writeFewShotReport } from "./fewshot/report.ts";
import { writeAtomic } from "./safetensors.ts";
import {
  hierarchicalPaired,
  type Interval,
  mean,
  pairedInterval,
  sampleStd,
  type Verdict,
  verdict as judge,
} from "./stats.ts";

/** A named series of (x, y) points. */
export interface Series {
  /** Legend label. */
  label: string;
  /** Points in x order. */
  points: [number, number][];
}

/** Series colours of every chart. */
export const COLOURS = [
  "#1f77b4",
  "#d62728",
  "#2ca02c",
  "#9467bd",
  "#ff7f0e",
  "#8c564b",
  "#17becf",
];

/** Text made safe inside SVG. */
export function escape(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

/** The opening of every chart: the svg element, a white background and the title centred on titleX. */
export function svgOpen(width: number, height: number, title: string, titleX: number): string[] {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${titleX}" y="22" text-anchor="middle" font-size="15">${escape(title)}</text>`,
  ];
}

function ticks(lo: number, hi: number, count: number): number[] {
  const span = hi - lo || 1;
  const step = 10 ** Math.floor(Math.log10(span / count));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => span / s <= count) ?? span;
  const out: number[] = [];
  for (let v = Math.ceil(lo / nice) * nice; v <= hi + 1e-9; v += nice) out.push(+v.toFixed(10));
  return out;
}

/**
 * A line chart as an SVG document. `logX` spaces x logarithmically (for shots); `xLabels` maps
 * x values to tick labels.
 */
export function lineChart(
  series: readonly Series[],
  options: {
    title: string;
    xLabel: string;
    yLabel: string;
    yRange?: [number, number];
    logX?: boolean;
    xLabels?: Map<number, string>;
  },
): string {
  const width = 640;
  const height = 400;
  const m = { left: 64, right: 170, top: 40, bottom: 52 };
  const all = series.flatMap((s) => s.points);
  const fx = (x: number) => (options.logX ? Math.log10(x) : x);
  const xs = all.map((p) => fx(p[0]));
  const ys = all.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = options.yRange ?? [Math.min(...ys), Math.max(...ys)];
  const px = (x: number) => m.left + ((fx(x) - x0) / (x1 - x0 || 1)) * (width - m.left - m.right);
  const py = (y: number) =>
    height - m.bottom - ((y - y0) / (y1 - y0 || 1)) * (height - m.top - m.bottom);
  const parts = svgOpen(width, height, options.title, width / 2 - m.right / 2 + m.left / 2);
  for (const t of ticks(y0, y1, 6)) {
    parts.push(
      `<line x1="${m.left}" x2="${width - m.right}" y1="${py(t)}" y2="${py(t)}" stroke="#ddd"/>`,
      `<text x="${m.left - 6}" y="${py(t) + 4}" text-anchor="end">${t}</text>`,
    );
  }
  const xTicks = options.xLabels ? [...options.xLabels.keys()] : ticks(x0, x1, 8);
  for (const t of xTicks) {
    parts.push(
      `<line x1="${px(t)}" x2="${px(t)}" y1="${m.top}" y2="${height - m.bottom}" stroke="#eee"/>`,
      `<text x="${px(t)}" y="${height - m.bottom + 16}" text-anchor="middle">${
        escape(options.xLabels?.get(t) ?? String(t))
      }</text>`,
    );
  }
  parts.push(
    `<rect x="${m.left}" y="${m.top}" width="${width - m.left - m.right}" height="${
      height - m.top - m.bottom
    }" fill="none" stroke="#333"/>`,
    `<text x="${m.left + (width - m.left - m.right) / 2}" y="${height - 12}" text-anchor="middle">${
      escape(options.xLabel)
    }</text>`,
    `<text transform="translate(16 ${
      m.top + (height - m.top - m.bottom) / 2
    }) rotate(-90)" text-anchor="middle">${escape(options.yLabel)}</text>`,
  );
  series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const d = s.points.map((p, k) =>
      `${k ? "L" : "M"}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`
    ).join(" ");
    parts.push(`<path d="${d}" fill="none" stroke="${colour}" stroke-width="2"/>`);
    for (const p of s.points) {
      parts.push(
        `<circle cx="${px(p[0]).toFixed(1)}" cy="${py(p[1]).toFixed(1)}" r="3" fill="${colour}"/>`,
      );
    }
    const ly = m.top + 14 + i * 18;
    parts.push(
      `<line x1="${width - m.right + 12}" x2="${width - m.right + 32}" y1="${ly - 4}" y2="${
        ly - 4
      }" stroke="${colour}" stroke-width="2"/>`,
      `<text x="${width - m.right + 38}" y="${ly}">${escape(s.label)}</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}

const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
/** Mean ± sample std in percent (std in points; the mean alone for one value). */
const pm = (xs: number[]) =>
  xs.length > 1 ? `${pct(mean(xs))} ± ${(100 * sampleStd(xs)).toFixed(2)}` : pct(mean(xs));
const points = (x: number) => `${x >= 0 ? "+" : ""}${(100 * x).toFixed(2)}`;
const tasks = (n: number) => (n === 1 ? "1 held-out task" : `${n} held-out tasks`);

/** A method's test accuracy on one held-out task (NaN when it did not run there). */
const accuracyOf = (method: Method) => (h: HeldOutResult) =>
  h.methods.find((m) => m.method === method)?.accuracy ?? NaN;

/** A held-out task's test loss under `method` (NaN where it did not run). */
const lossOf = (method: Method) => (h: HeldOutResult) =>
  h.methods.find((m) => m.method === method)?.loss ?? NaN;

/** Accuracies of a method over the held-out tasks. */
function accuracies(r: ExperimentResults, method: Method): number[] {
  return r.heldOut.map(accuracyOf(method));
}

/** Whether any held-out task's result of `method` collapsed to one class. */
function collapsedIn(r: ExperimentResults, method: Method): number {
  return r.heldOut.filter((h) => h.methods.find((m) => m.method === method)?.collapsed).length;
}

/** The 95% t interval of a - b paired by held-out task, over the tasks where both are known. */
function byTask(
  r: ExperimentResults,
  a: (h: HeldOutResult) => number,
  b: (h: HeldOutResult) => number,
): Interval {
  const pairs = r.heldOut.map((h) => [a(h), b(h)]).filter((p) => p.every(Number.isFinite));
  return pairedInterval(pairs.map((p) => p[0]!), pairs.map((p) => p[1]!));
}

/**
 * A difference and its interval in words: "+1.23 points, 95% t interval [-0.50, +2.96] over 3
 * held-out tasks", or why there is none. `unit` names n independent units, e.g. `tasks`.
 */
function describeInterval(
  i: Interval,
  unit: (n: number) => string,
  format: (x: number) => string = (x) => `${points(x)} points`,
): string {
  if (!Number.isFinite(i.estimate)) return "not measured";
  if (!Number.isFinite(i.lo)) return `${format(i.estimate)}; no interval from ${unit(i.n)}`;
  return `${format(i.estimate)}, ${Math.round(100 * i.level)}% t interval [${
    format(i.lo).replace(/ points$/, "")
  }, ${format(i.hi).replace(/ points$/, "")}] over ${unit(i.n)}`;
}

/** A difference in points with its interval in brackets, "+1.23 [-0.50, +2.96]". */
function bracketed(i: Interval): string {
  if (!Number.isFinite(i.estimate)) return "-";
  return Number.isFinite(i.lo)
    ? `${points(i.estimate)} [${points(i.lo)}, ${points(i.hi)}]`
    : `${points(i.estimate)} (no interval)`;
}

/** The joint verdict of several targets: met if all are, missed if any is. */
function jointVerdict(verdicts: Verdict[]): Verdict {
  if (verdicts.some((v) => v === "missed")) return "missed";
  return verdicts.every((v) => v === "met") ? "met" : "not established";
}

/** z against full with some images per class: the interval and its units, or why there is none. */
type FewShot =
  | { interval: Interval; unit: (n: number) => string; short: string }
  | { missing: string };

/**
 * z against full with `shots` images per class, paired by subset within each held-out task, the
 * differences averaged per task and the t interval taken over the tasks (one task's subsets are
 * not independent units). Files from before per-subset values give the same interval from each
 * task's means: both methods saw the same subsets, so a task's mean difference is the difference
 * of its means. With one task the interval is over its subsets, which needs each subset's value.
 */
function fewShotInterval(r: ExperimentResults, shots: number): FewShot {
  const entries = r.heldOut.map((h) => {
    const of = (m: Method) => h.shots.find((x) => x.shots === shots && x.method === m);
    return { name: h.name, z: of("z"), full: of("full") };
  }).filter((e) => e.z && e.full);
  const subsets = entries[0]?.z?.subsets ?? 0;
  const paired = entries.every((e) => e.z!.values?.length === e.full!.values?.length);
  const values = paired && entries.every((e) => e.z!.values);
  if (entries.length >= 2) {
    const rows = entries.flatMap((e) =>
      values
        ? e.z!.values!.map((a, k) => ({ unit: e.name, a, b: e.full!.values![k]! }))
        : [{ unit: e.name, a: e.z!.accuracy, b: e.full!.accuracy }]
    );
    return {
      interval: hierarchicalPaired(rows),
      unit: (n) =>
        subsets > 1 ? `${tasks(n)}, each the mean of ${subsets} paired subsets` : tasks(n),
      short: `${entries.length} tasks`,
    };
  }
  const one = entries[0];
  if (one && values) {
    return {
      interval: pairedInterval(one.z!.values!, one.full!.values!),
      unit: (n) => `${n} paired subsets of the 1 held-out task (this task only)`,
      short: `${subsets} subsets of 1 task`,
    };
  }
  return {
    missing: `${subsets} subsets of 1 held-out task; the interval over subsets cannot be ` +
      `recomputed: this results.json keeps each method's mean over the subsets, not each subset's ` +
      `accuracy`,
  };
}

/** The plain-words verdict on the seed's and the user's claims, from the numbers. */
export function verdict(r: ExperimentResults): string[] {
  const z = mean(accuracies(r, "z"));
  const full = mean(accuracies(r, "full"));
  const zSeed = mean(accuracies(r, "z-seed"));
  const head = mean(accuracies(r, "head"));
  const zeroShot = mean(accuracies(r, "zero-shot"));
  const untrained = mean(accuracies(r, "z-untrained"));
  const fairOf = (h: HeldOutResult) => h.controls.bestTrainingZFair ?? NaN;
  const oracleOf = (h: HeldOutResult) => h.controls.bestTrainingZ;
  const fair = mean(r.heldOut.map(fairOf));
  const oracle = mean(r.heldOut.map(oracleOf));
  const loss = (m: Method) => mean(r.heldOut.map(lossOf(m)));
  const lines: string[] = [];
  const gap = byTask(r, accuracyOf("z"), accuracyOf("full"));
  lines.push(
    `**z alone against the whole network (target: z >= full - 1 point): ${
      judge(gap, { atLeast: -0.01 })
    }.** z-only adaptation (100 numbers, new defaults) reached ${
      pct(z)
    } on the held-out task(s), the whole network trained from scratch ${pct(full)} (z - full ${
      describeInterval(gap, tasks)
    }), with the same images${
      r.fullBudget && r.fullBudget.epochs > 0
        ? ` and validation slice; the whole network trained up to ${r.fullBudget.epochs} epochs with early stopping, weight decay and augmentation as described below`
        : ", validation slice and step cap"
    }.` +
      (Number.isFinite(zSeed) ? ` The seed's recipe for z reached ${pct(zSeed)}.` : ""),
  );
  if (Number.isFinite(fair)) {
    const overFair = byTask(r, accuracyOf("z"), fairOf);
    const overOracle = byTask(r, accuracyOf("z"), oracleOf);
    lines.push(
      `**z against re-using a trained z (target: z >= both controls): ${
        jointVerdict([judge(overFair, { atLeast: 0 }), judge(overOracle, { atLeast: 0 })])
      }.** The trained z with the lowest loss on the held-out task's training images scores ${
        pct(fair)
      } (a fair control); the best trained z chosen by its test accuracy ${
        pct(oracle)
      } (an oracle no method can use). z-only adaptation: ${pct(z)} (z - fair ${
        describeInterval(overFair, tasks)
      }; z - oracle ${describeInterval(overOracle, tasks)}).`,
    );
  }
  const lossGap = byTask(r, lossOf("full"), lossOf("z"));
  lines.push(
    `**Test loss (target: z's <= the whole network's): ${judge(lossGap, { atLeast: 0 })}.** z ${
      loss("z").toFixed(4)
    }, full ${loss("full").toFixed(4)}, zero-shot ${loss("zero-shot").toFixed(4)} (full - z ${
      describeInterval(lossGap, tasks, (x) => (x >= 0 ? "+" : "") + x.toFixed(4))
    }).`,
  );
  if (Number.isFinite(zSeed)) {
    const overSeed = byTask(r, accuracyOf("z"), accuracyOf("z-seed"));
    const zeroLoss = byTask(r, lossOf("zero-shot"), lossOf("z"));
    lines.push(
      `**z against the seed's recipe (target: z not below z-seed): ${
        // "Not below": anything but an interval that lies below 0.
        judge(overSeed, { atLeast: 0 }) === "missed" ? "missed" : "met"}.** z ${pct(z)}, z-seed ${
        pct(zSeed)
      } (z - z-seed ${
        describeInterval(overSeed, tasks)
      }); met where the interval reaches 0. Test loss against zero-shot (target: z's <= the mean z's): ${
        judge(zeroLoss, { atLeast: 0 })
      } (zero-shot - z ${
        describeInterval(zeroLoss, tasks, (x) => (x >= 0 ? "+" : "") + x.toFixed(4))
      }).`,
    );
  }
  if (r.recipe) {
    const { chosen, validation, validationTasks, builtInDefaults } = r.recipe;
    const byIndex = new Map(builtInDefaults.map((b) => [b.task, b]));
    const builtIn = (h: HeldOutResult) => byIndex.get(h.task)?.accuracy ?? NaN;
    const builtInLoss = (h: HeldOutResult) => byIndex.get(h.task)?.loss ?? NaN;
    const overBuiltIn = byTask(r, accuracyOf("z"), builtIn);
    const builtInVsZeroShot = byTask(r, lossOf("zero-shot"), builtInLoss);
    lines.push(
      `**Adaptation recipe:** chosen on ${validationTasks.length} validation tasks (kept out of training, scored on their own training images): ${chosen.name}, ${chosen.zSteps} steps. On them its score loss was ${
        validation.chosen.loss.toFixed(4)
      } against ${validation.defaults.loss.toFixed(4)} for the built-in defaults, ${
        validation.seedRecipe.loss.toFixed(4)
      } for the seed's recipe and ${
        validation.zeroShot.loss.toFixed(4)
      } without adaptation. On the held-out tasks, z with the recipe - z with the built-in defaults: ${
        describeInterval(overBuiltIn, tasks)
      }; the built-in defaults reached ${pct(mean(r.heldOut.map(builtIn)))} at a test loss of ${
        mean(r.heldOut.map(builtInLoss)).toFixed(4)
      } (zero-shot - built-in ${
        describeInterval(builtInVsZeroShot, tasks, (x) => (x >= 0 ? "+" : "") + x.toFixed(4))
      }).`,
    );
  }
  if (Number.isFinite(head)) {
    lines.push(
      head >= z - 0.005
        ? `**Linear probe:** training only the last layer of the generated network (101 numbers) reaches ${
          pct(head)
        }, as good as z-only (${
          pct(z)
        }): here the generator adds nothing beyond the features of one generated network.`
        : `**Linear probe:** training only the last layer of the generated network (101 numbers) reaches ${
          pct(head)
        }, ${
          (100 * (z - head)).toFixed(2)
        } points below z-only: moving z changes more than the last layer.`,
    );
  }
  const twins = r.heldOut.map((h) => h.controls.reversedTwinZ).filter((x) => x !== undefined);
  if (twins.length > 0) {
    lines.push(
      `**Reversed labels:** the z of the trained task with the same classes and reversed labels scores ${
        pct(mean(twins))
      } on the held-out task, so a single network that ignored z would fail one of the two; z-only adaptation reaches ${
        pct(z)
      }.`,
    );
  }
  const collapsed =
    (["zero-shot", "z", "z-seed", "head", "full", "finetune", "z-untrained"] as const)
      .map((m) => [m, collapsedIn(r, m)] as const).filter(([, n]) => n > 0);
  if (collapsed.length > 0) {
    lines.push(
      `**Collapsed results:** ${
        collapsed.map(([m, n]) => `${m} on ${n} of ${r.heldOut.length} task(s)`).join(", ")
      } predicted one class for every test image (accuracy at a class's share, loss at or above ln 2 = 0.6931): such a network learned nothing about the task, and no verdict below is drawn from it.` +
        (collapsed.some(([m]) => m === "zero-shot")
          ? " For zero-shot this means the mean z generates a network that does not separate the classes."
          : ""),
    );
  }
  lines.push(
    collapsedIn(r, "z-untrained") > 0
      ? `**What training the generator contributes:** not measured here: z-only adaptation through an untrained generator collapsed (see above), so its ${
        pct(untrained)
      } says nothing about what an untrained generator can express.`
      : `**What training the generator contributes:** z-only adaptation through an untrained generator reaches ${
        pct(untrained)
      }, against ${pct(z)} through the trained one (z - z-untrained ${
        describeInterval(byTask(r, accuracyOf("z"), accuracyOf("z-untrained")), tasks)
      }).`,
  );
  const few = r.heldOut.flatMap((h) => h.shots).filter((s) => s.shots > 0);
  const shotValues = [...new Set(few.map((s) => s.shots))].sort((a, b) => a - b);
  const control = (s: number) =>
    mean(few.filter((x) => x.shots === s && x.method === TRAINED_Z).map((x) => x.accuracy));
  for (const s of shotValues) {
    const of = (m: Method) =>
      mean(few.filter((x) => x.shots === s && x.method === m).map((x) => x.accuracy));
    if (!Number.isFinite(of("z")) || !Number.isFinite(of("full"))) continue;
    const found = fewShotInterval(r, s);
    const status = "interval" in found
      ? judge(found.interval, { atLeast: 0.05 })
      : "not established";
    lines.push(
      `**${s} image(s) per class (target: z >= full + 5 points): ${status}.** z ${
        pct(of("z"))
      }, full ${pct(of("full"))} (z - full ${
        "interval" in found
          ? describeInterval(found.interval, found.unit)
          : `${points(of("z") - of("full"))} points over ${found.missing}`
      }).` +
        (Number.isFinite(control(s))
          ? ` Control: the trained z that fits the ${s} image(s) per class best, not adapted, ${
            pct(control(s))
          }.`
          : ""),
    );
  }
  const net = r.heldOut[0]?.methods.find((m) => m.method === "full")?.trainable;
  const tuned = r.heldOut[0]?.methods.find((m) => m.method === "finetune")?.trainable;
  if (net && tuned) {
    const generator = tuned - 100;
    lines.push(
      `**Cost:** the generator holds ${generator.toLocaleString("en")} numbers, one task network ${
        net.toLocaleString("en")
      }; N tasks stored as z cost ${generator.toLocaleString("en")} + 100 N numbers against ${
        net.toLocaleString("en")
      } N for N networks, so the generator pays for itself from ${
        Math.ceil(generator / (net - 100))
      } tasks on.`,
    );
  }
  if (zeroShot >= 0 && r.ablations.length > 0) {
    lines.push(
      `**What made the difference** (held-out z-only, same seed): ${
        r.ablations.map((a) => `${a.name} ${pct(a.zOnly)}`).join("; ")
      }.`,
    );
  }
  return lines;
}

/** Methods of the summary table, in order. */
const SUMMARY: { label: string; of: (h: HeldOutResult) => number }[] = [
  ...(["zero-shot", "z", "z-seed", "head", "full", "finetune", "z-untrained"] as const).map((
    m,
  ) => ({
    label: m === "z" ? "z (new defaults)" : m === "z-seed" ? "z (seed preset)" : m,
    of: accuracyOf(m),
  })),
  { label: "best trained z (fair)", of: (h) => h.controls.bestTrainingZFair ?? NaN },
  { label: "best trained z (oracle)", of: (h) => h.controls.bestTrainingZ },
];

/**
 * Per held-out task (by name, in first-seen order), the mean over the runs (seeds) that have it;
 * `of` reads a task's value, given the index of its run.
 */
function taskMeans(
  runs: readonly ExperimentResults[],
  of: (h: HeldOutResult, run: number) => number,
): number[] {
  const byName = new Map<string, number[]>();
  runs.forEach((r, run) => {
    for (const h of r.heldOut) {
      const x = of(h, run);
      if (Number.isFinite(x)) byName.set(h.name, [...(byName.get(h.name) ?? []), x]);
    }
  });
  return [...byName.values()].map(mean);
}

/**
 * One row per experiment (folders that differ only by seed are pooled): held-out test accuracy
 * of each method as mean ± sample std over the held-out tasks, each task's accuracy first
 * averaged over the seeds (the tasks are the independent units; one task's seeds are not); then
 * z - full per experiment, paired by task and seed, with its 95% t interval over the tasks.
 */
async function summaryTable(dirs: string[]): Promise<string[]> {
  const groups = new Map<
    string,
    { title: string; runs: ExperimentResults[]; baselines: (BaselineResults | undefined)[] }
  >();
  for (const dir of dirs) {
    const r: ExperimentResults = JSON.parse(await Deno.readTextFile(join(dir, "results.json")));
    const baseline = await readBaseline(dir, r);
    // Runs whose validation slices came from images the generator saw are never pooled with runs
    // whose slices were kept out of its training (their selections differ).
    const slice = r.reserve ? "kept-out slice" : "seen-image slice";
    // Nor are runs whose whole network trained to convergence with runs held to the step cap,
    // or runs whose recipe took the lowest validation loss with runs under today's rule.
    const full = convergedFull(r) ? ", converged full" : "";
    const rule = recipeByLowestLoss(r) ? ", recipe by lowest loss" : "";
    const title =
      `${r.options.name} ${r.options.dataset} ${r.family} | ${r.options.profile}, ${slice}${full}${rule}`;
    const key = `${title} | ${r.taskCounts.heldOut}`;
    if (!groups.has(key)) groups.set(key, { title, runs: [], baselines: [] });
    groups.get(key)!.runs.push(r);
    groups.get(key)!.baselines.push(baseline);
  }
  const rows = [
    `| experiment | profile | seeds x tasks | ${SUMMARY.map((m) => m.label).join(" | ")} |`,
    `| --- | --- | ---: | ${SUMMARY.map(() => "---:").join(" | ")} |`,
  ];
  const recipes: string[] = [];
  const converged: string[] = [];
  const budgetTexts = new Set<string>();
  const gaps = [
    "| experiment | profile | seeds x tasks | z | full | z - full (points) | 95% t interval over tasks | target z >= full - 1 |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
  ];
  for (const { title, runs, baselines } of groups.values()) {
    const n = new Set(runs.flatMap((r) => r.heldOut.map((h) => h.name))).size;
    const shape = `${runs.length} x ${runs[0]!.heldOut.length}`;
    rows.push(
      `| ${title} | ${shape} | ${
        SUMMARY.map((m) => {
          const xs = taskMeans(runs, m.of);
          return xs.length === n ? pm(xs) : xs.length ? `${pm(xs)} (${tasks(xs.length)})` : "-";
        }).join(" | ")
      } |`,
    );
    const gap = hierarchicalPaired(
      runs.flatMap((r) =>
        r.heldOut.map((h) => ({ unit: h.name, a: accuracyOf("z")(h), b: accuracyOf("full")(h) }))
      ).filter((x) => Number.isFinite(x.a) && Number.isFinite(x.b)),
    );
    gaps.push(
      `| ${title} | ${shape} | ${pct(mean(taskMeans(runs, accuracyOf("z"))))} | ${
        pct(mean(taskMeans(runs, accuracyOf("full"))))
      } | ${Number.isFinite(gap.estimate) ? points(gap.estimate) : "-"} | ${
        Number.isFinite(gap.lo) ? `[${points(gap.lo)}, ${points(gap.hi)}] (${tasks(gap.n)})` : "-"
      } | ${judge(gap, { atLeast: -0.01 })} |`,
    );
    if (runs.every((r) => r.recipe)) recipes.push(recipeRow(title, shape, runs));
    if (baselines.every((b) => b)) {
      for (const b of baselines) budgetTexts.add(fullBudgetText(b!.fullBudget));
      converged.push(convergedRow(title, shape, runs, baselines as BaselineResults[]));
    }
  }
  return [
    "Held-out test accuracy by method, mean ± sample std over the held-out tasks, each task's accuracy first averaged over its seeds: the tasks are the independent units, so n is the number of tasks, not seeds x tasks (details and commands in each section):",
    "",
    ...rows,
    "",
    "z-only adaptation against the whole network, paired: per held-out task the mean over its seeds of z - full, then the 95% Student-t interval over the tasks. The target is met when the interval clears -1 point, missed when it lies below, and otherwise not established:",
    "",
    ...gaps,
    "",
    ...(converged.length > 0
      ? [
        `The whole network measured again on the same held-out tasks, validation slices and random seeds by the experiment's command with \`--baseline\` (its \`baseline.json\` beside \`results.json\`; \`full\` never reads the generator, so nothing else changes). ${
          budgetTexts.size === 1
            ? `In each, ${[...budgetTexts][0]}`
            : "Each baseline.json records its budget (the folders' reports give it)."
        } z is the experiment's own. z - full is paired by held-out task (per task the mean over its seeds), with the 95% Student-t interval over the tasks; the verdict is as above. Images seen: what the chosen run drew, mean per task:`,
        "",
        "| experiment | profile | seeds x tasks | z | full, step cap | full, converged | images seen, step cap / converged | z - full converged (points) | 95% t interval over tasks | target z >= full - 1 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ...converged,
        "",
      ]
      : []),
    ...(recipes.length > 0
      ? [
        "Runs whose training kept validation tasks out (a class under 100 training images) adapt z with the recipe chosen on them (src/adapt/recipe.ts). Each column is paired by held-out task: per task the mean over its seeds, then the 95% Student-t interval over the tasks. Targets: z not below z-seed (missed only when the interval lies below 0); z >= full - 1 point and zero-shot loss - z loss >= 0 (met when the interval clears the target, missed when it lies below it, otherwise not established). The last column compares the recipe's z with z under the built-in defaults, measured in the same run:",
        "",
        "| experiment | profile | seeds x tasks | z - z-seed (points) | z - full (points) | z - fair control (points) | zero-shot loss - z loss | z (recipe) - z (built-in defaults), points |",
        "| --- | --- | ---: | --- | --- | --- | --- | --- |",
        ...recipes,
        "",
      ]
      : []),
    "The validation slice that picks stopping steps, starts and learning rates is a *kept-out slice* in runs whose training kept 10% of every class out (`--reserve`), and a *seen-image slice* in runs from before: carved from images the generator was trained on, which scores the generator's methods too well.",
    "",
  ];
}

/** The command of an experiment folder's run, on CIFAR-100 at the seed's scale. */
function cifar100Command(dir: string): string {
  let command = `deno task experiment exp1 --dataset cifar100 --data-dir DIR --profile full`;
  try {
    const r: ExperimentResults = JSON.parse(Deno.readTextFileSync(join(dir, "results.json")));
    const family = r.family === (r.options.name === "exp1" ? "one_vs_anchor" : "pairs_reversed")
      ? ""
      : ` --family ${r.family}`;
    command =
      `deno task experiment ${r.options.name}${family} --dataset cifar100 --data-dir DIR --profile full --out runs/cifar100-${r.options.name}${
        family ? `-${r.family}` : ""
      }`;
  } catch {
    // The folder's own report names the problem; keep the generic command here.
  }
  return command;
}

/** The parsed results.json of a run folder when it is a few-shot run's, else undefined. */
async function fewShotResults(dir: string): Promise<FewShotResults | undefined> {
  try {
    const data: unknown = JSON.parse(await Deno.readTextFile(join(dir, "results.json")));
    return isFewShotResults(data) ? data : undefined;
  } catch {
    // Not readable here: writeReport names the problem.
    return undefined;
  }
}

/**
 * Writes the reports of several experiment folders into one Markdown file, copying their plots
 * into `<file without .md>/<folder name>/` next to it; returns the file's path. Few-shot runs
 * (`experiment fewshot`) that differ only by seed are aggregated over the seeds.
 */
export async function combineReports(dirs: string[], file: string): Promise<string> {
  const assets = file.replace(/\.md$/, "");
  const fewShot = await Promise.all(dirs.map(fewShotResults));
  const binary = dirs.filter((_, i) => !fewShot[i]);
  const parts: string[] = [
    "# Results",
    "",
    "Every section below was written by `deno task report` from a run of `deno task experiment`; the command that reproduces it is at the top of each section, and the run's `results.json` lies beside its plots. All accuracies are on test images that training and adaptation never saw.",
    "",
  ];
  if (binary.length > 0) parts.push(...await binarySummary(binary));
  const runs = dirs.flatMap((dir, i) => {
    const results = fewShot[i];
    return results ? [{ name: basename(dir), results }] : [];
  });
  if (runs.length > 0) parts.push(...seedsSection(runs));
  parts.push(
    "Sections whose dataset is marked *(not verified)* read files that did not match the published md5 sums (allowed with `--no-verify`); their numbers may differ slightly from runs on the official files.",
    "",
  );
  for (const [i, dir] of dirs.entries()) {
    const report = await writeReport(dir);
    const name = basename(dir);
    await Deno.mkdir(join(assets, name), { recursive: true });
    // A run folder already under the assets folder (the report regenerated in place) is kept.
    const inPlace = resolve(dir) === resolve(assets, name);
    // The numbers' source travels with the report, so every figure can be recomputed.
    if (!inPlace) {
      await Deno.copyFile(join(dir, "results.json"), join(assets, name, "results.json"));
      await Deno.copyFile(join(dir, BASELINE_FILE), join(assets, name, BASELINE_FILE)).catch(
        (e) => {
          // Most experiments have no baseline.json beside them.
          if (!(e instanceof Deno.errors.NotFound)) throw e;
        },
      );
    }
    let text = await Deno.readTextFile(report);
    if (fewShot[i]) {
      parts.push(text.replace(/^(#+) /gm, "#$1 "), "");
      continue;
    }
    for (const svg of ["accuracy.svg", "loss.svg", "shots.svg"]) {
      const from = join(dir, svg);
      if (await Deno.stat(from).then(() => true, () => false)) {
        if (!inPlace) await Deno.copyFile(from, join(assets, name, svg));
        text = text.replaceAll(`(${svg})`, `(${basename(assets)}/${name}/${svg})`);
      }
    }
    parts.push(text.replace(/^# /, "## ").replace(/\n## /g, "\n### "), "");
  }
  await writeAtomic(file, parts.join("\n"));
  return file;
}

/** The opening of a combined report on the binary experiments: the CIFAR-100 note and the summary. */
async function binarySummary(dirs: string[]): Promise<string[]> {
  return [
    "The seed's experiments are defined on CIFAR-100, which is not on the machines these runs came from: **none of the numbers here are CIFAR-100's.** With the official `cifar-100-binary` folder or archive in DIR, the same experiments run as:",
    "",
    "```sh",
    ...new Set(dirs.map((dir) => cifar100Command(dir))),
    "```",
    "",
    ...(await summaryTable(dirs)),
  ];
}

/** Writes report.md and its SVG plots into `dir`; returns the report's path. */
export async function writeReport(dir: string): Promise<string> {
  const path = join(dir, "results.json");
  let r: ExperimentResults;
  try {
    r = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new RangeError(
      `${path}: ${
        e instanceof Deno.errors.NotFound ? "not found" : "not valid JSON"
      }; expected the folder of 'deno task experiment'`,
    );
  }
  if (isFewShotResults(r)) return await writeFewShotReport(dir);
  const over = tasks(r.heldOut.length);
  const md: string[] = [
    `# ${r.options.name} on ${r.options.dataset} (${r.family}, profile ${r.options.profile})`,
    "",
    `Command: \`${r.command}\``,
    "",
    `Adapter: ${r.adapter}. Dataset: ${r.dataset}. ${r.taskCounts.train} training tasks, ${r.taskCounts.heldOut} held out. ` +
    `Training took ${r.trainSeconds.toFixed(0)} s; the whole experiment ${
      r.seconds.toFixed(0)
    } s. ` +
    `Mean test accuracy of the training tasks: ${
      pct(r.trainedAccuracy)
    }. All accuracies are on the test split (images never used in training or adaptation).${
      r.commit ? ` Code: ${r.commit}.` : ""
    }${
      r.phaseSeconds
        ? ` Adaptation phases (s): ${
          Object.entries(r.phaseSeconds).map(([k, v]) => `${k} ${v.toFixed(0)}`).join("; ")
        }.`
        : ""
    }`,
    "",
    "## Verdict",
    "",
    ...verdict(r).flatMap((l) => [l, ""]),
    "## Held-out task(s), all training images",
    "",
    `Each method learns from the task's training images less a validation slice (${
      r.reserve
        ? `the task's reserved images: ${
          Math.round(100 * r.reserve)
        }% of each class that the generator's training never used`
        : "carved at random from images the generator was trained on, which favours the generator's methods"
    }), which picks its learning rate (baselines: a grid of three), its stopping step and (z) its starting point; ${
      r.fullBudget ? fullBudgetText(r.fullBudget) : "the step cap is the same for all."
    }`,
    "",
    `| method | trainable numbers per task | test accuracy (mean ± sample std over ${over}) | z - method, points [95% t interval over ${over}, paired by task] | test loss (mean) | learning rate | steps (chosen / run) | seconds |${
      r.fullBudget ? " images seen (chosen run / all runs, mean per task) |" : ""
    } collapsed |`,
    `| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |${
      r.fullBudget ? " ---: |" : ""
    } ---: |`,
  ];
  const methods = [...new Set(r.heldOut.flatMap((h) => h.methods.map((m) => m.method)))];
  for (const method of methods) {
    const rows = r.heldOut.map((h) => h.methods.find((m) => m.method === method)!).filter(Boolean);
    const decay = (x: MethodResult) => x.weightDecay ? ` (decay ${x.weightDecay})` : "";
    md.push(
      `| ${method} | ${rows[0]!.trainable.toLocaleString("en")} | ${
        pm(rows.map((x) => x.accuracy))
      } | ${method === "z" ? "-" : bracketed(byTask(r, accuracyOf("z"), accuracyOf(method)))} | ${
        mean(rows.map((x) => x.loss)).toFixed(4)
      } | ${
        rows[0]!.trainable > 0
          ? rows.map((x) => `${(x.lr ?? 0).toPrecision(2)}${decay(x)}`).join(", ")
          : "-"
      } | ${rows.map((x) => `${x.steps}/${x.stepsRun ?? x.steps}`).join(", ")} | ${
        mean(rows.map((x) => x.seconds)).toFixed(1)
      } |${r.fullBudget ? ` ${meanImages(rows)} |` : ""} ${
        rows.filter((x) => x.collapsed).length
      }/${rows.length} |`,
    );
  }
  const baseline = await readBaseline(dir, r);
  if (baseline) md.push("", ...convergedSection(r, baseline));
  md.push(
    "",
    "Controls (no training; held-out task scored with another z):",
    "",
    `| z | test accuracy (mean ± sample std over ${over}) |`,
    "| --- | ---: |",
    `| mean of trained z | ${pm(r.heldOut.map((h) => h.controls.meanZ))} |`,
    `| trained z with the lowest loss on the task's training images (fair) | ${
      pm(r.heldOut.map((h) => h.controls.bestTrainingZFair ?? NaN))
    } |`,
    `| trained z with the best test accuracy (oracle: chosen on test images) | ${
      pm(r.heldOut.map((h) => h.controls.bestTrainingZ))
    } |`,
    `| training tasks' z, mean accuracy | ${
      pm(r.heldOut.map((h) => h.controls.meanOverTrainingZ))
    } |`,
    `| random z | ${pm(r.heldOut.map((h) => h.controls.randomZ))} |`,
    ...(r.heldOut.every((h) => h.controls.reversedTwinZ !== undefined)
      ? [
        `| the reversed twin's z (same classes, labels swapped) | ${
          pm(r.heldOut.map((h) => h.controls.reversedTwinZ!))
        } |`,
      ]
      : []),
    "",
  );
  const forgot = r.heldOut.map((h) => h.methods.find((m) => m.method === "finetune")?.forgetting)
    .filter((f) => f !== undefined);
  if (forgot.length > 0) {
    md.push(
      "Forgetting: mean test accuracy of the training tasks (up to 8, their own z) before and after learning the held-out task:",
      "",
      `| method | before (mean ± sample std over ${over}) | after | points lost (mean) |`,
      "| --- | ---: | ---: | ---: |",
      `| z (generator frozen: bit-identical, tested) | ${pm(forgot.map((f) => f.before))} | ${
        pm(forgot.map((f) => f.before))
      } | 0.00 |`,
      `| finetune (generator and z) | ${pm(forgot.map((f) => f.before))} | ${
        pm(forgot.map((f) => f.after))
      } | ${(100 * mean(forgot.map((f) => f.before - f.after))).toFixed(2)} |`,
      "",
    );
  }
  const first = r.heldOut[0];
  if (first) {
    const curves = lineChart(
      first.methods.filter((m) => m.curve.length > 1).map((m) => ({
        label: m.method,
        points: m.curve.map((p) => [p.step, p.accuracy] as [number, number]),
      })),
      {
        title: `Test accuracy, held-out '${first.name}'`,
        xLabel: "step",
        yLabel: "test accuracy",
        yRange: [0, 1],
      },
    );
    const losses = lineChart(
      first.methods.filter((m) => m.curve.length > 1).map((m) => ({
        label: m.method,
        points: m.curve.map((p) => [p.step, p.loss] as [number, number]),
      })),
      { title: `Test loss, held-out '${first.name}'`, xLabel: "step", yLabel: "test loss" },
    );
    await writeAtomic(join(dir, "accuracy.svg"), curves);
    await writeAtomic(join(dir, "loss.svg"), losses);
    md.push("![test accuracy vs step](accuracy.svg)", "", "![test loss vs step](loss.svg)", "");
  }
  const sweep = r.heldOut.flatMap((h) => h.shots);
  if (sweep.length > 0) {
    const all = Math.max(...sweep.map((s) => s.shots)) * 4 || 1000;
    const xOf = (s: number) => (s === 0 ? all : s);
    const sweepMethods = [...new Set(sweep.map((s) => s.method))];
    const shotValues = [...new Set(sweep.map((s) => s.shots))].sort((a, b) => xOf(a) - xOf(b));
    const series = sweepMethods.map((method) => ({
      label: method,
      points: shotValues.map((s) =>
        [
          xOf(s),
          mean(sweep.filter((x) => x.shots === s && x.method === method).map((x) => x.accuracy)),
        ] as [number, number]
      ),
    }));
    await writeAtomic(
      join(dir, "shots.svg"),
      lineChart(series, {
        title: "Test accuracy vs images per class",
        xLabel: "training images per class",
        yLabel: "test accuracy",
        yRange: [0, 1],
        logX: true,
        xLabels: new Map(shotValues.map((s) => [xOf(s), s === 0 ? "all" : String(s)])),
      }),
    );
    const paired = sweepMethods.includes("z") && sweepMethods.includes("full");
    md.push(
      "## Accuracy vs images per class",
      "",
      "![accuracy vs shots](shots.svg)",
      "",
      `Test accuracy as mean ± sample std over the ${over} of each task's mean over its subsets ("all": one run per task).` +
        (paired
          ? " z - full is paired by subset within a task, averaged per task, and its 95% t interval is over the tasks (over the subsets when there is one task; the unit is in each cell)."
          : ""),
      "",
      `| images per class | ${sweepMethods.join(" | ")}${
        paired ? " | z - full, points [95% t interval] |" : " |"
      }`,
      `| --- | ${sweepMethods.map(() => "---:").join(" | ")}${paired ? " | ---: |" : " |"}`,
      ...shotValues.map((s) => {
        const found = paired ? fewShotInterval(r, s) : undefined;
        return `| ${s === 0 ? "all" : s} | ${
          sweepMethods.map((m) =>
            pm(sweep.filter((x) => x.shots === s && x.method === m).map((x) => x.accuracy))
          ).join(" | ")
        }${
          found === undefined
            ? ""
            : " | " + ("interval" in found
              ? `${bracketed(found.interval)} (${found.short})`
              : "not recomputable (no per-subset values)")
        } |`;
      }),
      "",
    );
  }
  if (r.ablations.length > 0) {
    md.push(
      "## What made the difference",
      "",
      "Each row changes one thing, same seed and held-out tasks; held-out accuracy after z-only adaptation (rows with a training time trained a generator of their own).",
      "",
      `| change | training tasks accuracy | held-out z-only (mean over ${over}) | per task | training seconds |`,
      "| --- | ---: | ---: | --- | ---: |",
      ...r.ablations.map((a) =>
        `| ${a.name} | ${pct(a.trainedAccuracy)} | ${pct(a.zOnly)} | ${
          (a.zOnlyPerTask ?? []).map(pct).join(", ")
        } | ${a.trainSeconds ? a.trainSeconds.toFixed(0) : "-"} |`
      ),
      "",
    );
  }
  const out = join(dir, "report.md");
  await writeAtomic(out, md.join("\n"));
  return out;
}

/** The sentence on the whole network's budget, from results.json's `fullBudget`. */
function fullBudgetText(b: NonNullable<ExperimentResults["fullBudget"]>): string {
  const decays = b.weightDecays.length > 1
    ? `weight decay (AdamW) chosen from ${b.weightDecays.join(", ")} with its learning rate`
    : `weight decay ${b.weightDecays[0] ?? 0}`;
  const augment = !b.augment
    ? "no augmentation"
    : b.flip
    ? "random crops and horizontal flips"
    : "random crops (no flips: a mirrored digit or character is another shape)";
  return (b.epochs > 0
    ? `the whole network (full) trains up to the larger of the step cap and ${b.epochs} epochs of the task's images, evaluated at least once an epoch and stopped early on the validation slice, `
    : "the whole network (full) trains for the step cap, ") +
    `with ${decays} and ${augment}; the other methods share the step cap. Images seen: what the chosen run drew before it stopped, and what every run of the method's grid (learning rates, weight decays, starting points) drew together.`;
}

/** Mean images seen per task, chosen run / all runs (rounded), or "-" without the counts. */
function meanImages(rows: MethodResult[]): string {
  if (rows.some((x) => x.imagesSeen === undefined)) return "-";
  const chosen = Math.round(mean(rows.map((x) => x.imagesSeen!)));
  const all = Math.round(mean(rows.map((x) => x.searchImages ?? x.imagesSeen!)));
  return `${chosen.toLocaleString("en")} / ${all.toLocaleString("en")}`;
}

/** The run's whole network had more than the step cap: epochs, weight decay or augmentation. */
export function convergedFull(r: Pick<ExperimentResults, "fullBudget">): boolean {
  const b = r.fullBudget;
  return b !== undefined && (b.epochs > 0 || b.augment || b.weightDecays.some((d) => d > 0));
}

/**
 * Whether a run's adaptation recipe was chosen by the lowest validation loss alone, as before the
 * rule of src/adapt/recipe.ts: today a candidate replaces the built-in defaults only with a mean
 * validation score-loss gain of at least MIN_GAIN (and an interval above 0), so a chosen
 * candidate with a smaller gain can only come from the old rule.
 */
export function recipeByLowestLoss(r: Pick<ExperimentResults, "recipe">): boolean {
  if (!r.recipe || r.recipe.chosen.name === BUILT_IN_RECIPE) return false;
  const { chosen, defaults } = r.recipe.validation;
  return defaults.loss - chosen.loss < MIN_GAIN;
}

/**
 * One row of the recipe table: z against z-seed, full, the fair control and the built-in
 * defaults, and the zero-shot loss against z's, each paired by task over the runs' seeds.
 */
function recipeRow(title: string, shape: string, runs: readonly ExperimentResults[]): string {
  const over = (
    a: (h: HeldOutResult, r: ExperimentResults) => number,
    b: (h: HeldOutResult, r: ExperimentResults) => number,
  ) =>
    hierarchicalPaired(
      runs.flatMap((r) => r.heldOut.map((h) => ({ unit: h.name, a: a(h, r), b: b(h, r) })))
        .filter((x) => Number.isFinite(x.a) && Number.isFinite(x.b)),
    );
  const z = accuracyOf("z");
  const builtIn = (h: HeldOutResult, r: ExperimentResults) =>
    r.recipe!.builtInDefaults.find((b) => b.task === h.task)?.accuracy ?? NaN;
  const cell = (i: Interval, format: (x: number) => string, verdict?: string) =>
    Number.isFinite(i.lo)
      ? `${format(i.estimate)} [${format(i.lo)}, ${format(i.hi)}]${verdict ? `: ${verdict}` : ""}`
      : "-";
  const signed = (x: number) => (x >= 0 ? "+" : "") + x.toFixed(4);
  const overSeed = over(z, accuracyOf("z-seed"));
  const overFull = over(z, accuracyOf("full"));
  const overFair = over(z, (h) => h.controls.bestTrainingZFair ?? NaN);
  const zeroLoss = over(lossOf("zero-shot"), lossOf("z"));
  const overBuiltIn = over(z, builtIn);
  return `| ${title} | ${shape} | ${
    cell(overSeed, points, judge(overSeed, { atLeast: 0 }) === "missed" ? "missed" : "met")
  } | ${cell(overFull, points, judge(overFull, { atLeast: -0.01 }))} | ${
    cell(overFair, points)
  } | ${cell(zeroLoss, signed, judge(zeroLoss, { atLeast: 0 }))} | ${cell(overBuiltIn, points)} |`;
}

/**
 * The baseline.json beside an experiment's results.json (`experiment --baseline`), or undefined
 * when there is none; a RangeError naming the file when it is not one or was made with other
 * options or held-out tasks than the experiment's.
 */
export async function readBaseline(
  dir: string,
  r: ExperimentResults,
): Promise<BaselineResults | undefined> {
  const path = join(dir, BASELINE_FILE);
  let data: unknown;
  try {
    data = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new RangeError(`${path}: not valid JSON; expected the file of 'experiment --baseline'`);
  }
  if (!isBaselineResults(data)) {
    throw new RangeError(`${path}: not the file of 'experiment --baseline'; move it away`);
  }
  const given = r.options as unknown as Record<string, unknown>;
  const made = data.options as unknown as Record<string, unknown>;
  const names = (xs: { name: string }[]) => xs.map((x) => x.name).join(", ");
  const checks: [string, unknown, unknown][] = [
    ...PAIRING_OPTIONS.map((k): [string, unknown, unknown] => [k, made[k], given[k]]),
    ["reserve", data.reserve ?? 0, r.reserve ?? 0],
    ["held-out tasks", names(data.heldOut), names(r.heldOut)],
  ];
  const differ = checks.find(([, a, b]) => JSON.stringify(a) !== JSON.stringify(b));
  if (differ) {
    throw new RangeError(
      `${path}: made with ${differ[0]} ${JSON.stringify(differ[1])}, not the experiment's ` +
        `${JSON.stringify(differ[2])}; run the experiment's command with --baseline into a ` +
        `folder of its own`,
    );
  }
  return data;
}

/** A task's converged whole-network accuracy from a baseline (NaN where it has none). */
function convergedOf(b: BaselineResults, name: string): number {
  return b.heldOut.find((h) => h.name === name)?.full.accuracy ?? NaN;
}

/**
 * One row of the converged table: z and full at the step cap from the experiments, full trained
 * to convergence from their baselines, and z - converged full paired by task over the seeds.
 */
function convergedRow(
  title: string,
  shape: string,
  runs: readonly ExperimentResults[],
  baselines: readonly BaselineResults[],
): string {
  const gap = hierarchicalPaired(
    runs.flatMap((r, i) =>
      r.heldOut.map((h) => ({
        unit: h.name,
        a: accuracyOf("z")(h),
        b: convergedOf(baselines[i]!, h.name),
      }))
    ).filter((x) => Number.isFinite(x.a) && Number.isFinite(x.b)),
  );
  const fullConverged = taskMeans(runs, (h, i) => convergedOf(baselines[i]!, h.name));
  // Files from before `imagesSeen` drew steps run x the adaptation batch (one image a sample).
  const capped = runs.flatMap((r) =>
    r.heldOut.map((h) => {
      const m = h.methods.find((x) => x.method === "full");
      return m ? m.imagesSeen ?? m.stepsRun * adaptBatchOf(r.options) : NaN;
    })
  );
  const conv = baselines.flatMap((b) => b.heldOut.map((h) => h.full.imagesSeen ?? NaN));
  const images = (xs: number[]) =>
    xs.every(Number.isFinite) ? Math.round(mean(xs)).toLocaleString("en") : "-";
  return `| ${title} | ${shape} | ${pct(mean(taskMeans(runs, accuracyOf("z"))))} | ${
    pct(mean(taskMeans(runs, accuracyOf("full"))))
  } | ${pct(mean(fullConverged))} | ${images(capped)} / ${images(conv)} | ${
    points(gap.estimate)
  } | ${
    Number.isFinite(gap.lo) ? `[${points(gap.lo)}, ${points(gap.hi)}] (${tasks(gap.n)})` : "-"
  } | ${judge(gap, { atLeast: -0.01 })} |`;
}

/** The report's section on the whole network trained to convergence (from baseline.json). */
function convergedSection(r: ExperimentResults, b: BaselineResults): string[] {
  const over = tasks(r.heldOut.length);
  const gap = byTask(r, accuracyOf("z"), (h) => convergedOf(b, h.name));
  return [
    `### The whole network ${
      b.fullBudget.epochs > 0 ? "trained to convergence" : "measured again"
    }`,
    "",
    `Re-measured on the same held-out tasks, validation slices and random seed by \`${
      b.command || "experiment --baseline"
    }\` (baseline.json; ${b.commit ? `code ${b.commit}, ` : ""}${
      b.seconds.toFixed(0)
    } s; full never reads the generator): ${fullBudgetText(b.fullBudget)}`,
    "",
    "| held-out task | z | full, step cap | full, converged | test loss, converged | learning rate (weight decay) | steps (chosen / run) | images seen (chosen run / all runs) | seconds |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...r.heldOut.map((h) => {
      const f = b.heldOut.find((x) => x.name === h.name)!.full;
      return `| ${h.name} | ${pct(accuracyOf("z")(h))} | ${pct(accuracyOf("full")(h))} | ${
        pct(f.accuracy)
      } | ${f.loss.toFixed(4)} | ${(f.lr ?? 0).toPrecision(2)} (${
        f.weightDecay ?? 0
      }) | ${f.steps}/${f.stepsRun ?? f.steps} | ${meanImages([f])} | ${f.seconds.toFixed(1)} |`;
    }),
    "",
    `z - full converged: ${
      describeInterval(gap, tasks)
    }, paired by task (target z >= full - 1 point: **${
      judge(gap, { atLeast: -0.01 })
    }**; mean over ${over}).`,
  ];
}
