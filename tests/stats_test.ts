/**
 * The statistics of experiment and sweep reports against published values: Student t quantiles
 * (the 95% column of any t table), the t distribution function, the incomplete beta function,
 * paired and hierarchical paired intervals, the three-valued verdict, the paired t-test and the
 * exact Wilcoxon signed-rank test. Reference numbers were computed with SciPy 1.17
 * (`stats.t.ppf`, `stats.t.cdf`, `special.betainc`, `stats.ttest_rel`, `stats.wilcoxon(...,
 * method="exact")`, `stats.ttest_rel(...).confidence_interval`,
 * `stats.ttest_1samp(...).confidence_interval`) or by hand where the tests say so.
 */
import assert from "node:assert/strict";
import {
  hierarchicalPaired,
  incompleteBeta,
  mean,
  pairedInterval,
  pairedTTest,
  sampleStd,
  studentTCdf,
  studentTQuantile,
  summarize,
  verdict,
  wilcoxonSignedRank,
} from "../src/stats.ts";

function near(actual: number, expected: number, tol: number, label: string): void {
  assert.ok(
    Math.abs(actual - expected) <= tol * Math.max(1, Math.abs(expected)),
    `${label}: ${actual}, expected ${expected}`,
  );
}

Deno.test("t quantiles match the 97.5% column of a t table", () => {
  const table: [number, number][] = [
    [1, 12.706204736174694],
    [2, 4.302652729749462],
    [4, 2.7764451051977934],
    [10, 2.228138851986274],
    [30, 2.0422724563012378],
  ];
  for (const [df, q] of table) near(studentTQuantile(0.975, df), q, 1e-10, `df ${df}`);
  near(studentTQuantile(0.025, 4), -2.7764451051977934, 1e-10, "lower tail");
  assert.equal(studentTQuantile(0.5, 3), 0);
  assert.throws(() => studentTQuantile(1, 3), /outside/);
});

Deno.test("the t distribution function and the incomplete beta function", () => {
  near(studentTCdf(2.5, 7), 0.9795038907071235, 1e-12, "cdf(2.5; 7)");
  near(studentTCdf(-1.3, 3), 0.14223375436394853, 1e-12, "cdf(-1.3; 3)");
  near(studentTCdf(0.7, 50), 0.7564141795056268, 1e-12, "cdf(0.7; 50)");
  near(incompleteBeta(0.3, 2.5, 0.5), 0.018927124071945658, 1e-12, "I(0.3; 2.5, 0.5)");
  near(incompleteBeta(0.4, 10, 20), 0.7853183897628262, 1e-12, "I(0.4; 10, 20)");
  assert.equal(studentTCdf(Infinity, 2), 1);
});

Deno.test("mean, sample std and the t interval of three seeds", () => {
  const s = summarize([0.5, 0.6, 0.7]);
  assert.equal(s.n, 3);
  near(s.mean, 0.6, 1e-15, "mean");
  near(s.std, 0.1, 1e-12, "std");
  near(s.lo, 0.35158622882496704, 1e-10, "lo");
  near(s.hi, 0.8484137711750329, 1e-10, "hi");
  const one = summarize([0.9]);
  assert.ok(one.mean === 0.9 && Number.isNaN(one.std) && Number.isNaN(one.lo));
  assert.ok(Number.isNaN(mean([])) && Number.isNaN(sampleStd([1])));
});

Deno.test("paired t-test and its interval", () => {
  const a = [0.91, 0.88, 0.95, 0.90, 0.87];
  const b = [0.85, 0.86, 0.90, 0.91, 0.80];
  const t = pairedTTest(a, b);
  assert.equal(t.n, 5);
  near(t.t, 2.5976265226937203, 1e-10, "t");
  near(t.p, 0.06019833831249571, 1e-9, "p");
  near(t.lo, -0.0026158903428920577, 1e-9, "lo");
  near(t.hi, 0.07861589034289204, 1e-9, "hi");
  const same = pairedTTest([0.5, 0.6], [0.5, 0.6]);
  assert.ok(same.p === 1 && same.t === 0);
  const shifted = pairedTTest([0.6, 0.7, 0.8], [0.5, 0.6, 0.7]);
  assert.ok(Math.abs(shifted.meanDiff - 0.1) < 1e-12 && shifted.p < 1e-6);
  assert.throws(() => pairedTTest([1], [1, 2]), /equal lengths/);
});

Deno.test("exact Wilcoxon signed-rank p-values, with and without ties", () => {
  const plain = wilcoxonSignedRank([0.91, 0.88, 0.95, 0.90, 0.87], [0.85, 0.86, 0.90, 0.91, 0.80]);
  assert.equal(plain.n, 5);
  near(plain.p, 0.125, 1e-12, "p");
  const ties = wilcoxonSignedRank([1, 2, 3, 4, 5, 6, 7, 8], [0.5, 2.5, 1, 1, 6, 2, 3, 8.5]);
  near(ties.p, 0.1953125, 1e-12, "p with ties");
  // Three seeds all in one direction: the smallest p three pairs allow.
  near(wilcoxonSignedRank([2, 3, 4], [1, 1, 1]).p, 0.25, 1e-12, "n = 3");
  assert.deepEqual(wilcoxonSignedRank([1, 2], [1, 2]), { n: 0, wPlus: 0, p: 1 });
});

Deno.test("paired interval of a - b: hand-computed, SciPy's, and the one-value cases", () => {
  // Differences 1, 2, 3: mean 2, sample std 1, half-width t(0.975; 2) / sqrt(3).
  const hand = pairedInterval([3, 5, 7], [2, 3, 4]);
  const half = 4.302652729749462 / Math.sqrt(3);
  assert.equal(hand.n, 3);
  assert.equal(hand.df, 2);
  assert.equal(hand.level, 0.95);
  near(hand.estimate, 2, 1e-15, "estimate");
  near(hand.lo, 2 - half, 1e-10, "lo");
  near(hand.hi, 2 + half, 1e-10, "hi");
  const a = [0.91, 0.88, 0.95, 0.90, 0.87];
  const b = [0.85, 0.86, 0.90, 0.91, 0.80];
  const i95 = pairedInterval(a, b);
  near(i95.estimate, 0.03799999999999999, 1e-12, "estimate");
  near(i95.lo, -0.0026158903428920577, 1e-9, "lo 95%");
  near(i95.hi, 0.07861589034289204, 1e-9, "hi 95%");
  const i90 = pairedInterval(a, b, { level: 0.9 });
  near(i90.lo, 0.0068137701194990255, 1e-9, "lo 90%");
  near(i90.hi, 0.06918622988050094, 1e-9, "hi 90%");
  // a - b, not b - a: the order of the arguments is the sign of the result.
  assert.ok(pairedInterval(b, a).estimate < 0);
  const one = pairedInterval([0.9], [0.8]);
  assert.ok(one.n === 1 && one.df === 0 && Number.isNaN(one.lo) && Number.isNaN(one.hi));
  const constant = pairedInterval([3, 4, 5], [1, 2, 3]);
  assert.ok(constant.lo === 2 && constant.hi === 2);
  assert.throws(() => pairedInterval([1], [1, 2]), /equal lengths/);
});

Deno.test("hierarchical paired interval: units first, then t over the units", () => {
  // Differences per task: A 1, 3 (mean 2); B 4; C 5, 7, 9 (mean 7). The t interval is over the
  // three task means, not over the six pairs.
  const rows = [
    { unit: "A", a: 2, b: 1 },
    { unit: "C", a: 5, b: 0 },
    { unit: "A", a: 4, b: 1 },
    { unit: "B", a: 4, b: 0 },
    { unit: "C", a: 8, b: 1 },
    { unit: "C", a: 10, b: 1 },
  ];
  const h = hierarchicalPaired(rows);
  assert.equal(h.n, 3);
  assert.equal(h.df, 2);
  assert.equal(h.pairs, 6);
  near(h.estimate, 13 / 3, 1e-12, "estimate");
  near(h.lo, -1.9182761460424418, 1e-9, "lo");
  near(h.hi, 10.584942812709109, 1e-9, "hi");
  // Pooling the six pairs as independent gives a narrower, wrong interval (SciPy: [1.83, 7.83]).
  const pooled = pairedInterval(rows.map((r) => r.a), rows.map((r) => r.b));
  near(pooled.lo, 1.8343211917576325, 1e-9, "pooled lo");
  assert.equal(pooled.n, 6);
  // One row per unit is the plain paired interval.
  const flat = hierarchicalPaired([{ unit: "x", a: 3, b: 2 }, { unit: "y", a: 5, b: 3 }, {
    unit: "z",
    a: 7,
    b: 4,
  }]);
  const plain = pairedInterval([3, 5, 7], [2, 3, 4]);
  assert.deepEqual({ ...flat, pairs: undefined }, { ...plain, pairs: undefined });
  assert.equal(
    hierarchicalPaired([{ unit: "only", a: 1, b: 0 }, { unit: "only", a: 3, b: 0 }]).n,
    1,
  );
});

Deno.test("verdicts: met when the interval clears the target, missed when below, else not established", () => {
  const target = { atLeast: 0.05 };
  assert.equal(verdict({ lo: 0.06, hi: 0.2 }, target), "met");
  assert.equal(verdict({ lo: 0.05, hi: 0.2 }, target), "met", "the target itself counts");
  assert.equal(verdict({ lo: -0.1, hi: 0.049 }, target), "missed");
  // The case: +13.66 with a 95% half-width of 10.38 against z >= full + 5 points.
  assert.equal(verdict({ lo: 0.1366 - 0.1038, hi: 0.1366 + 0.1038 }, target), "not established");
  // A point estimate below the target whose interval reaches above it is not established either.
  assert.equal(verdict({ lo: -0.02, hi: 0.07 }, target), "not established");
  // No interval (one unit): nothing is established either way.
  assert.equal(verdict(pairedInterval([0.9], [0.1]), target), "not established");
});
