/**
 * Statistics over repeated runs (seeds, held-out tasks, few-shot subsets): mean, sample standard
 * deviation, Student-t confidence intervals, paired and hierarchical paired intervals of a
 * difference, the three-valued verdict on a target, the paired t-test and the exact Wilcoxon
 * signed-rank test. Plain TypeScript, float64;
 * the special functions follow Numerical Recipes (regularised incomplete beta by Lentz's continued
 * fraction) and are checked against published tables in the tests.
 *
 * @module
 */

/** Mean of numbers (NaN for none). */
export function mean(xs: readonly number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

/** Sample standard deviation (divides by n - 1; NaN for fewer than two values). */
export function sampleStd(xs: readonly number[]): number {
  if (xs.length < 2) return NaN;
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, x) => a + (x - m) ** 2, 0) / (xs.length - 1));
}

/** log Gamma(x) for x > 0 (Lanczos, g = 7, n = 9; about 15 significant digits). */
function logGamma(x: number): number {
  const c = [
    0.99999999999980993,
    676.5203681218851,
    -1259.1392167224028,
    771.32342877765313,
    -176.61502916214059,
    12.507343278686905,
    -0.13857109526572012,
    9.9843695780195716e-6,
    1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  const z = x - 1;
  let a = c[0]!;
  const t = z + 7.5;
  for (let i = 1; i < 9; i++) a += c[i]! / (z + i);
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Continued fraction of the incomplete beta function (modified Lentz). */
function betaFraction(x: number, a: number, b: number): number {
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= 300; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    aa = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < 1e-15) break;
  }
  return h;
}

/** The regularised incomplete beta function I_x(a, b) for 0 <= x <= 1, a, b > 0. */
export function incompleteBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const front = Math.exp(
    logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log(1 - x),
  );
  return x < (a + 1) / (a + b + 2)
    ? (front * betaFraction(x, a, b)) / a
    : 1 - (front * betaFraction(1 - x, b, a)) / b;
}

/** P(T <= t) for Student's t distribution with `df` degrees of freedom. */
export function studentTCdf(t: number, df: number): number {
  if (!Number.isFinite(t)) return t > 0 ? 1 : 0;
  const tail = 0.5 * incompleteBeta(df / (df + t * t), df / 2, 0.5);
  return t >= 0 ? 1 - tail : tail;
}

/** The p-quantile of Student's t distribution with `df` degrees of freedom (bisection). */
export function studentTQuantile(p: number, df: number): number {
  if (!(p > 0 && p < 1)) throw new RangeError(`quantile ${p} is outside (0, 1)`);
  if (p === 0.5) return 0;
  if (p < 0.5) return -studentTQuantile(1 - p, df);
  let lo = 0;
  let hi = 1;
  while (studentTCdf(hi, df) < p) hi *= 2;
  for (let i = 0; i < 200 && hi - lo > 1e-13 * hi; i++) {
    const mid = (lo + hi) / 2;
    if (studentTCdf(mid, df) < p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/** Mean with its spread and a Student-t confidence interval. */
export interface Summary {
  /** Number of values. */
  n: number;
  /** Mean. */
  mean: number;
  /** Sample standard deviation (NaN for n < 2). */
  std: number;
  /** Lower end of the confidence interval of the mean (NaN for n < 2). */
  lo: number;
  /** Upper end of the confidence interval of the mean (NaN for n < 2). */
  hi: number;
}

/** Mean, sample std and the `level` (default 95%) t-based confidence interval of the mean. */
export function summarize(xs: readonly number[], level = 0.95): Summary {
  const n = xs.length;
  const m = mean(xs);
  const std = sampleStd(xs);
  const half = n >= 2 ? studentTQuantile(1 - (1 - level) / 2, n - 1) * std / Math.sqrt(n) : NaN;
  return { n, mean: m, std, lo: m - half, hi: m + half };
}

/** A paired comparison of two methods over the same seeds. */
export interface PairedTest {
  /** Pairs. */
  n: number;
  /** Mean of a - b. */
  meanDiff: number;
  /** 95% confidence interval of the mean difference (NaN for n < 2). */
  lo: number;
  /** Upper end of that interval. */
  hi: number;
  /** t statistic (NaN for n < 2; +-Infinity when every difference is the same non-zero value). */
  t: number;
  /** Two-sided p-value of the paired t-test (NaN for n < 2; 1 when all differences are 0). */
  p: number;
}

/** Paired t-test of a against b (same length; element i of each from the same seed). */
export function pairedTTest(a: readonly number[], b: readonly number[]): PairedTest {
  if (a.length !== b.length) {
    throw new RangeError(`paired test needs equal lengths; got ${a.length} and ${b.length}`);
  }
  const d = a.map((x, i) => x - b[i]!);
  const s = summarize(d);
  if (d.length < 2) return { n: d.length, meanDiff: s.mean, lo: NaN, hi: NaN, t: NaN, p: NaN };
  if (s.std === 0) {
    const t = s.mean === 0 ? 0 : s.mean > 0 ? Infinity : -Infinity;
    return { n: d.length, meanDiff: s.mean, lo: s.mean, hi: s.mean, t, p: s.mean === 0 ? 1 : 0 };
  }
  const t = s.mean / (s.std / Math.sqrt(d.length));
  const p = 2 * (1 - studentTCdf(Math.abs(t), d.length - 1));
  return { n: d.length, meanDiff: s.mean, lo: s.lo, hi: s.hi, t, p: Math.min(1, p) };
}

/** A Student-t confidence interval of the mean difference a - b over independent units. */
export interface Interval {
  /** Mean difference a - b (NaN for no units). */
  estimate: number;
  /** Lower end of the interval (NaN for fewer than two units). */
  lo: number;
  /** Upper end of the interval (NaN for fewer than two units). */
  hi: number;
  /** Independent units the interval is over: pairs, or the units of `hierarchicalPaired`. */
  n: number;
  /** Degrees of freedom of the t quantile: n - 1 (0 for fewer than two units). */
  df: number;
  /** Confidence level, e.g. 0.95. */
  level: number;
}

/** The interval of the mean of differences, each from one independent unit. */
function differenceInterval(d: readonly number[], level: number): Interval {
  const s = summarize(d, level);
  return { estimate: s.mean, lo: s.lo, hi: s.hi, n: s.n, df: Math.max(0, s.n - 1), level };
}

/**
 * The `level` (default 95%) Student-t interval of the mean of independent values (seeds' mean
 * accuracies, one seed's episode accuracies), in the form of a paired interval.
 */
export function meanInterval(xs: readonly number[], options: { level?: number } = {}): Interval {
  return differenceInterval(xs, options.level ?? 0.95);
}

/**
 * The `level` (default 95%) Student-t interval of the mean of a - b over pairs: element i of `a`
 * and of `b` come from the same unit (task, seed or subset), and the pairs are independent. When
 * every difference is the same the interval is that one value.
 */
export function pairedInterval(
  a: readonly number[],
  b: readonly number[],
  options: { level?: number } = {},
): Interval {
  if (a.length !== b.length) {
    throw new RangeError(`paired interval needs equal lengths; got ${a.length} and ${b.length}`);
  }
  return differenceInterval(a.map((x, i) => x - b[i]!), options.level ?? 0.95);
}

/**
 * The interval of a - b when pairs (seeds, few-shot subsets) are nested in units (held-out tasks)
 * and the units are the independent replicates: the differences are averaged per unit first, then
 * the `level` (default 95%) Student-t interval is taken over the unit means, so n is the number of
 * units and pairs of one unit are not counted as independent. `pairs` is the number of rows.
 */
export function hierarchicalPaired(
  rows: readonly { unit: string; a: number; b: number }[],
  options: { level?: number } = {},
): Interval & { pairs: number } {
  const byUnit = new Map<string, number[]>();
  for (const r of rows) byUnit.set(r.unit, [...(byUnit.get(r.unit) ?? []), r.a - r.b]);
  const means = [...byUnit.values()].map(mean);
  return { ...differenceInterval(means, options.level ?? 0.95), pairs: rows.length };
}

/** What an interval says about a target: cleared, short of it, or neither. */
export type Verdict = "met" | "not established" | "missed";

/**
 * The verdict of an interval on a target `estimate >= atLeast`: "met" when the whole interval
 * clears it (lo >= atLeast), "missed" when the whole interval lies below it (hi < atLeast), and
 * otherwise "not established", also when there is no interval (fewer than two units).
 */
export function verdict(
  interval: Pick<Interval, "lo" | "hi">,
  target: { atLeast: number },
): Verdict {
  if (interval.lo >= target.atLeast) return "met";
  if (interval.hi < target.atLeast) return "missed";
  return "not established";
}

/** The Wilcoxon signed-rank test of paired values. */
export interface SignedRankTest {
  /** Pairs with a non-zero difference (zeros are dropped). */
  n: number;
  /** Sum of the ranks of positive differences (average ranks for ties). */
  wPlus: number;
  /** Exact two-sided p-value (conditional on ties; 1 when n = 0). */
  p: number;
}

/**
 * Exact two-sided Wilcoxon signed-rank test of a against b: the null distribution of the positive
 * rank sum is counted over all 2^n sign patterns by dynamic programming on doubled ranks, so ties
 * are handled exactly. With n pairs the smallest possible p is 2 / 2^n (0.25 for 3 seeds).
 */
export function wilcoxonSignedRank(a: readonly number[], b: readonly number[]): SignedRankTest {
  if (a.length !== b.length) {
    throw new RangeError(`paired test needs equal lengths; got ${a.length} and ${b.length}`);
  }
  const d = a.map((x, i) => x - b[i]!).filter((x) => x !== 0);
  const n = d.length;
  if (n === 0) return { n: 0, wPlus: 0, p: 1 };
  const order = d.map((x, i) => [Math.abs(x), i] as const).sort((p, q) => p[0] - q[0]);
  const doubled = new Array<number>(n);
  for (let i = 0; i < n;) {
    let j = i;
    while (j + 1 < n && order[j + 1]![0] === order[i]![0]) j++;
    for (let k = i; k <= j; k++) doubled[order[k]![1]] = i + j + 2; // 2 x average rank
    i = j + 1;
  }
  const total = doubled.reduce((s, r) => s + r, 0);
  let counts = new Float64Array(total + 1);
  counts[0] = 1;
  for (const r of doubled) {
    const next = new Float64Array(total + 1);
    for (let s = 0; s <= total; s++) {
      if (counts[s] === 0) continue;
      next[s] = next[s]! + counts[s]!;
      next[s + r] = next[s + r]! + counts[s]!;
    }
    counts = next;
  }
  const wPlus2 = d.reduce((s, x, i) => s + (x > 0 ? doubled[i]! : 0), 0);
  const extreme = Math.min(wPlus2, total - wPlus2);
  let tail = 0;
  for (let s = 0; s <= extreme; s++) tail += counts[s]!;
  return { n, wPlus: wPlus2 / 2, p: Math.min(1, (2 * tail) / 2 ** n) };
}
