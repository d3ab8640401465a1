/**
 * The report of a sweep folder: cells that differ only by seed form a group; per group and method
 * the held-out test accuracy as mean ± sample std, the 95% confidence interval of the mean and n;
 * methods compared with z-only by paired tests over the seeds; bar charts with error bars. Only
 * cells that are done count; the others are listed. A few-shot sweep's groups get the few-shot
 * statistics over seeds instead (src/fewshot/report.ts): mean accuracy over seeds, each z method
 * against every other paired over the same episodes, and the issue's targets.
 *
 * @module
 */
import { basename, dirname, join, relative } from "node:path";
import type { ExperimentResults } from "../experiment.ts";
import type { FewShotResults } from "../fewshot/experiment.ts";
import { type SeedSummary, seedSummary, seedSummaryMarkdown } from "../fewshot/report.ts";
import { COLOURS, escape, svgOpen } from "../report.ts";
import { writeAtomic } from "../safetensors.ts";
import {
  mean,
  type PairedTest,
  pairedTTest,
  summarize,
  type Summary,
  wilcoxonSignedRank,
} from "../stats.ts";
import { cellStatus } from "./cell.ts";
import { FEWSHOT_EXPERIMENT } from "./fewshot.ts";
import { type Cell, cellDir, readSweep, SEED_OPTION } from "./plan.ts";

/** One done cell and its results. */
export interface Done {
  cell: Cell;
  results: ExperimentResults;
}

/** Cells that differ only by seed. */
export interface SeedGroup {
  /** The options that tell this group from the others (experiment first), e.g. "exp1 lr=0.003". */
  label: string;
  /** Cells by seed, in seed order. */
  cells: { seed: number; cell: Cell; results: ExperimentResults }[];
  /** Held-out test accuracy (mean over the held-out tasks of a cell) per method, per seed. */
  accuracy: Map<string, number[]>;
  /** Statistics of each method over the seeds. */
  summary: Map<string, Summary>;
  /** Each method against z-only, paired by seed: method - z, its t-test and Wilcoxon p. */
  versusZ: Map<string, PairedTest & { wilcoxonP: number }>;
}

/** What a sweep report holds, for printing. */
export interface SweepReport {
  /** The Markdown file written. */
  path: string;
  /** The groups. */
  groups: SeedGroup[];
  /** Cells not done, with their states. */
  notDone: { cell: Cell; state: string }[];
  /** The summary table as aligned text (mean ± std, 95% CI, n). */
  table: string[];
  /** A few-shot sweep's groups and their statistics over seeds (then `groups` is empty). */
  fewShot?: { label: string; summary: SeedSummary }[];
}

const pct = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(2)}%` : "–");
const points = (x: number) => (Number.isFinite(x) ? (100 * x).toFixed(2) : "–");
const pValue = (p: number) => !Number.isFinite(p) ? "–" : p < 0.001 ? "< 0.001" : p.toFixed(3);

/** `mean ± std` in percent (std in points; no std for n = 1). */
export function meanStd(s: Summary): string {
  return s.n > 1 ? `${pct(s.mean)} ± ${points(s.std)}` : pct(s.mean);
}

/** The 95% confidence interval in percent, or a dash for n < 2. */
export function interval(s: { lo: number; hi: number }): string {
  return Number.isFinite(s.lo) ? `[${pct(s.lo)}, ${pct(s.hi)}]` : "–";
}

/**
 * Bars with error bars as an SVG document: one cluster per category, one bar per series, the
 * whisker spanning [lo, hi] (nothing where lo is not finite).
 */
export function barChart(
  categories: readonly string[],
  series: readonly { label: string; values: readonly (Summary | undefined)[] }[],
  options: { title: string; yLabel: string; yRange?: [number, number] },
): string {
  const width = Math.max(640, 120 + categories.length * (series.length * 22 + 24) + 180);
  const height = 400;
  const m = { left: 64, right: 180, top: 40, bottom: 60 };
  const [y0, y1] = options.yRange ?? [0, 1];
  const py = (y: number) =>
    height - m.bottom - ((Math.min(Math.max(y, y0), y1) - y0) / (y1 - y0 || 1)) *
      (height - m.top - m.bottom);
  const plotWidth = width - m.left - m.right;
  const slot = plotWidth / Math.max(1, categories.length);
  const bar = Math.min(28, (slot - 16) / Math.max(1, series.length));
  const parts = svgOpen(width, height, options.title, m.left + plotWidth / 2);
  for (let k = 0; k <= 5; k++) {
    const t = y0 + ((y1 - y0) * k) / 5;
    parts.push(
      `<line x1="${m.left}" x2="${width - m.right}" y1="${py(t).toFixed(1)}" y2="${
        py(t).toFixed(1)
      }" stroke="#ddd"/>`,
      `<text x="${m.left - 6}" y="${(py(t) + 4).toFixed(1)}" text-anchor="end">${+t.toFixed(
        4,
      )}</text>`,
    );
  }
  categories.forEach((c, i) => {
    const cx = m.left + slot * (i + 0.5);
    parts.push(
      `<text x="${cx.toFixed(1)}" y="${height - m.bottom + 16}" text-anchor="middle">${
        escape(c)
      }</text>`,
    );
    series.forEach((s, j) => {
      const v = s.values[i];
      if (!v || !Number.isFinite(v.mean)) return;
      const x = cx - (bar * series.length) / 2 + j * bar;
      const colour = COLOURS[j % COLOURS.length];
      parts.push(
        `<rect class="bar" x="${(x + 1).toFixed(1)}" y="${py(v.mean).toFixed(1)}" width="${
          (bar - 2).toFixed(1)
        }" height="${(py(y0) - py(v.mean)).toFixed(1)}" fill="${colour}" fill-opacity="0.8"/>`,
      );
      if (Number.isFinite(v.lo)) {
        const mid = (x + bar / 2).toFixed(1);
        const [a, b] = [py(v.lo).toFixed(1), py(v.hi).toFixed(1)];
        parts.push(
          `<path class="error" d="M${mid},${a} L${mid},${b} M${
            (x + bar / 2 - 4).toFixed(1)
          },${a} L${(x + bar / 2 + 4).toFixed(1)},${a} M${(x + bar / 2 - 4).toFixed(1)},${b} L${
            (x + bar / 2 + 4).toFixed(1)
          },${b}" stroke="#222" stroke-width="1.5" fill="none"/>`,
        );
      }
    });
  });
  parts.push(
    `<rect x="${m.left}" y="${m.top}" width="${plotWidth}" height="${
      height - m.top - m.bottom
    }" fill="none" stroke="#333"/>`,
    `<text transform="translate(16 ${
      m.top + (height - m.top - m.bottom) / 2
    }) rotate(-90)" text-anchor="middle">${escape(options.yLabel)}</text>`,
  );
  series.forEach((s, j) => {
    const ly = m.top + 14 + j * 18;
    parts.push(
      `<rect x="${width - m.right + 12}" y="${ly - 10}" width="14" height="10" fill="${
        COLOURS[j % COLOURS.length]
      }"/>`,
      `<text x="${width - m.right + 32}" y="${ly}">${escape(s.label)}</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}

/** A method's accuracy in one cell: the mean over its held-out tasks (NaN when absent). */
function methodAccuracy(r: ExperimentResults, method: string): number {
  const xs = r.heldOut.map((h) => h.methods.find((m) => m.method === method)?.accuracy);
  return xs.every((x) => typeof x === "number") ? mean(xs as number[]) : NaN;
}

/**
 * Groups done cells by everything but the seed, and computes each group's statistics. Labels
 * name the options that differ between `planned` cells (default: the done ones), so they stay
 * the same while a sweep fills in.
 */
export function groupBySeed(done: readonly Done[], planned?: readonly Cell[]): SeedGroup[] {
  return seedGroups(done, planned).map(({ label, items: list }) => {
    const cells = list
      .map((d) => ({
        seed: Number(d.results.options.seed ?? d.cell.values[SEED_OPTION]),
        cell: d.cell,
        results: d.results,
      }))
      .sort((a, b) => a.seed - b.seed);
    const methods = [
      ...new Set(
        cells.flatMap((c) => c.results.heldOut.flatMap((h) => h.methods)).map((m) => m.method),
      ),
    ];
    const accuracy = new Map<string, number[]>();
    for (const m of methods) accuracy.set(m, cells.map((c) => methodAccuracy(c.results, m)));
    const summary = new Map<string, Summary>();
    for (const [m, xs] of accuracy) summary.set(m, summarize(xs.filter(Number.isFinite)));
    const versusZ = new Map<string, PairedTest & { wilcoxonP: number }>();
    const z = accuracy.get("z");
    if (z) {
      for (const [m, xs] of accuracy) {
        if (m === "z") continue;
        const pairs = xs.map((x, i) => [x, z[i]!] as const).filter((p) =>
          Number.isFinite(p[0]) && Number.isFinite(p[1])
        );
        // method - z: pairedTTest(a, b) is about a - b, so the method comes first.
        const method = pairs.map((p) => p[0]);
        const zOnly = pairs.map((p) => p[1]);
        versusZ.set(m, {
          ...pairedTTest(method, zOnly),
          wilcoxonP: wilcoxonSignedRank(method, zOnly).p,
        });
      }
    }
    return { label, cells, accuracy, summary, versusZ };
  });
}

/**
 * Cells grouped by everything but the seed. Labels name the options that differ between
 * `planned` cells (default: the given ones), so they stay the same while a sweep fills in.
 */
function seedGroups<T extends { cell: Cell }>(
  items: readonly T[],
  planned?: readonly Cell[],
): { label: string; items: T[] }[] {
  const byKey = new Map<string, T[]>();
  for (const d of items) {
    const { [SEED_OPTION]: _seed, ...rest } = d.cell.values;
    const key = JSON.stringify([d.cell.experiment, rest]);
    byKey.set(key, [...(byKey.get(key) ?? []), d]);
  }
  const varying = new Set<string>();
  const all = planned ?? items.map((d) => d.cell);
  for (const c of all) {
    for (const [k, v] of Object.entries(c.values)) {
      if (k !== SEED_OPTION && all.some((o) => JSON.stringify(o.values[k]) !== JSON.stringify(v))) {
        varying.add(k);
      }
    }
  }
  const experiments = new Set(all.map((c) => c.experiment));
  return [...byKey.values()].map((list) => {
    const first = list[0]!.cell;
    const label = [
      ...(experiments.size > 1 || varying.size === 0 ? [first.experiment] : []),
      ...[...varying].map((k) => `${k}=${JSON.stringify(first.values[k])?.replaceAll('"', "")}`),
    ].join(" ");
    return { label: label || first.experiment, items: list };
  });
}

/**
 * The section comparing each method with z-only, paired by seed, as Markdown lines (none when no
 * group ran z): the difference is method - z in points, so a method below z is negative.
 */
export function versusZTable(groups: readonly SeedGroup[]): string[] {
  if (!groups.some((g) => g.versusZ.size > 0)) return [];
  const md = [
    "## Each method against z-only, paired by seed",
    "",
    "Difference = method − z, in points (negative: the method is below z); n is the number of seeds.",
    "",
    "| group | method | n (seeds) | method − z | 95% CI | t | p (t-test) | p (Wilcoxon) |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const g of groups) {
    for (const [m, t] of g.versusZ) {
      md.push(
        `| ${g.label} | ${m} | ${t.n} | ${points(t.meanDiff)} | ${
          Number.isFinite(t.lo) ? `[${points(t.lo)}, ${points(t.hi)}]` : "–"
        } | ${Number.isNaN(t.t) ? "–" : t.t.toFixed(2)} | ${pValue(t.p)} | ${
          pValue(t.wilcoxonP)
        } |`,
      );
    }
  }
  return [...md, ""];
}

/** Aligned text columns. */
function columns(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
}

/**
 * Writes the report of a sweep folder: `<dir>/report.md` with its SVG plots, or with `out` the
 * Markdown file `out`, its plots and a copy of every done cell's `results.json` under
 * `<out without .md>/`, so every number can be recomputed from files kept beside it.
 */
export async function writeSweepReport(
  dir: string,
  options: { out?: string } = {},
): Promise<SweepReport> {
  const record = await readSweep(dir);
  const done: Done[] = [];
  const notDone: { cell: Cell; state: string }[] = [];
  for (const cell of record.cells) {
    const status = await cellStatus(dir, cell);
    if (status.state !== "done") {
      notDone.push({ cell, state: status.state });
      continue;
    }
    const results = JSON.parse(
      await Deno.readTextFile(join(cellDir(dir, cell), "results.json")),
    ) as ExperimentResults;
    done.push({ cell, results });
  }
  const path = options.out ?? join(dir, "report.md");
  const assets = options.out ? options.out.replace(/\.md$/, "") : dir;
  const link = (file: string) => relative(dirname(path), join(assets, file)).replaceAll("\\", "/");
  await Deno.mkdir(assets, { recursive: true });
  const fixed = Object.entries(record.content.options).filter(([k, v]) =>
    v.length === 1 && k !== SEED_OPTION
  ).map(([k, v]) => `${k}=${typeof v[0] === "string" ? v[0] : JSON.stringify(v[0])}`);
  const header = [
    `# Sweep ${basename(dir)}`,
    "",
    `Plan \`${basename(record.plan)}\`: ${record.cells.length} cell(s), ${done.length} done. ` +
    `Reproduce with \`deno task sweep ${
      basename(record.plan)
    } --out DIR\` and \`deno task report DIR\`.` +
    (fixed.length ? ` Every cell: ${fixed.join(", ")}.` : ""),
    "",
  ];
  const notCounted = notDone.length > 0
    ? [
      `Not counted (not done): ${notDone.map((n) => `${n.cell.name} (${n.state})`).join(", ")}.`,
      "",
    ]
    : [];
  const cellsTable = async (cells: readonly { cell: Cell; seed: number }[]) => {
    const rows = ["## Cells", "", "| cell | seed | results |", "| --- | ---: | --- |"];
    for (const c of cells) {
      const file = join("cells", c.cell.name, "results.json");
      if (options.out) {
        await Deno.mkdir(join(assets, "cells", c.cell.name), { recursive: true });
        await Deno.copyFile(join(cellDir(dir, c.cell), "results.json"), join(assets, file));
      }
      rows.push(`| ${c.cell.name} | ${c.seed} | [results.json](${link(file)}) |`);
    }
    return [...rows, ""];
  };
  if (record.content.experiment.includes(FEWSHOT_EXPERIMENT)) {
    const fewShot = seedGroups(
      done.map((d) => ({ cell: d.cell, results: d.results as unknown as FewShotResults })),
      record.cells,
    ).map((g) => ({
      label: g.label,
      cells: g.items.map((d) => ({ ...d, seed: d.results.options.seed }))
        .sort((a, b) => a.seed - b.seed),
    }));
    const md = [...header, ...notCounted];
    const text: string[][] = [["group", "method", "shots", "accuracy [95% interval]", "unit"]];
    const summaries: { label: string; summary: SeedSummary }[] = [];
    for (const g of fewShot) {
      const summary = seedSummary(g.cells.map((c) => c.results));
      summaries.push({ label: g.label, summary });
      md.push(`## ${g.label}`, "", ...seedSummaryMarkdown(summary, { heading: "###" }));
      for (const a of summary.accuracy) {
        const i = a.interval;
        text.push([
          g.label,
          a.method,
          String(a.shots),
          `${pct(i.estimate)}${Number.isFinite(i.lo) ? ` [${pct(i.lo)}, ${pct(i.hi)}]` : ""}`,
          i.unit === "seeds" ? `${i.n} seeds` : `${i.n} episodes, 1 seed`,
        ]);
      }
    }
    md.push(...await cellsTable(fewShot.flatMap((g) => g.cells)));
    await writeAtomic(path, md.join("\n"));
    return { path, groups: [], notDone, table: columns(text), fewShot: summaries };
  }
  const groups = groupBySeed(done, record.cells);
  const md: string[] = [
    ...header,
    "Cells that differ only by seed form a group. Per group and method: held-out test accuracy " +
    "(mean over a cell's held-out tasks) as mean ± sample standard deviation (points) over the " +
    "seeds, the 95% confidence interval of the mean (Student t, n − 1 degrees of freedom) and n, " +
    "the number of seeds. Differences are paired by seed: the paired t-test and the exact " +
    "Wilcoxon signed-rank test, both two-sided (with n seeds Wilcoxon's p is at least 2 / 2^n).",
    "",
    ...notCounted,
  ];
  const thin = groups.filter((g) => g.cells.length < 3);
  if (thin.length > 0 && groups.length > 0) {
    md.push(
      `Groups with fewer than 3 seeds: ${
        thin.map((g) => `${g.label} (n = ${g.cells.length})`).join(", ")
      }.`,
      "",
    );
  }
  md.push(
    "## Held-out test accuracy by method",
    "",
    "| group | method | n (seeds) | mean ± std | 95% CI | seeds |",
    "| --- | --- | ---: | ---: | ---: | --- |",
  );
  const text: string[][] = [["group", "method", "n", "mean ± std", "95% CI"]];
  for (const g of groups) {
    for (const [method, s] of g.summary) {
      md.push(
        `| ${g.label} | ${method} | ${s.n} | ${meanStd(s)} | ${interval(s)} | ${
          g.cells.map((c) => c.seed).join(", ")
        } |`,
      );
      text.push([g.label, method, String(s.n), meanStd(s), interval(s)]);
    }
    const trained = summarize(g.cells.map((c) => c.results.trainedAccuracy));
    md.push(
      `| ${g.label} | (training tasks) | ${trained.n} | ${meanStd(trained)} | ${
        interval(trained)
      } | ${g.cells.map((c) => c.seed).join(", ")} |`,
    );
  }
  md.push("");
  if (groups.length > 0) {
    const methods = [...new Set(groups.flatMap((g) => [...g.summary.keys()]))];
    await writeAtomic(
      join(assets, "sweep_accuracy.svg"),
      barChart(
        methods,
        groups.map((g) => ({ label: g.label, values: methods.map((m) => g.summary.get(m)) })),
        {
          title: "Held-out test accuracy (mean, 95% CI over seeds)",
          yLabel: "test accuracy",
          yRange: [0, 1],
        },
      ),
    );
    md.push(`![held-out accuracy by method](${link("sweep_accuracy.svg")})`, "");
  }
  md.push(...versusZTable(groups));
  await shotsSection(groups, md, { assets, link });
  md.push(...await cellsTable(groups.flatMap((g) => g.cells)));
  await writeAtomic(path, md.join("\n"));
  return { path, groups, notDone, table: columns(text) };
}

/** Accuracy vs images per class over seeds, when the cells swept shots. */
async function shotsSection(
  groups: SeedGroup[],
  md: string[],
  where: { assets: string; link: (file: string) => string },
): Promise<void> {
  const rows: string[] = [];
  let index = 0;
  for (const g of groups) {
    const shots = g.cells.flatMap((c) => c.results.heldOut.flatMap((h) => h.shots));
    const values = [...new Set(shots.map((s) => s.shots))].sort((a, b) =>
      (a === 0 ? Infinity : a) - (b === 0 ? Infinity : b)
    );
    if (values.length < 2) continue;
    const methods = [...new Set(shots.map((s) => s.method))];
    const stat = (value: number, method: string) =>
      summarize(
        g.cells.map((c) =>
          mean(
            c.results.heldOut.flatMap((h) => h.shots)
              .filter((s) => s.shots === value && s.method === method)
              .map((s) => s.accuracy),
          )
        ).filter(Number.isFinite),
      );
    const file = `sweep_shots_${index++}.svg`;
    await writeAtomic(
      join(where.assets, file),
      barChart(
        values.map((v) => (v === 0 ? "all" : String(v))),
        methods.map((m) => ({ label: m, values: values.map((v) => stat(v, m)) })),
        {
          title: `Accuracy vs images per class, ${g.label}`,
          yLabel: "test accuracy",
          yRange: [0, 1],
        },
      ),
    );
    rows.push(
      `### ${g.label}`,
      "",
      `| images per class | ${methods.join(" | ")} |`,
      `| --- | ${methods.map(() => "---:").join(" | ")} |`,
      ...values.map((v) =>
        `| ${v === 0 ? "all" : v} | ${
          methods.map((m) => {
            const s = stat(v, m);
            return `${meanStd(s)} (n = ${s.n} seeds)`;
          }).join(" | ")
        } |`
      ),
      "",
      `![accuracy vs shots](${where.link(file)})`,
      "",
    );
  }
  if (rows.length > 0) md.push("## Accuracy vs images per class", "", ...rows);
}
