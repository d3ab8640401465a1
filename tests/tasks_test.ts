import assert from "node:assert/strict";
import {
  FAMILIES,
  isReserved,
  makeFamily,
  splitReserve,
  type Task,
  taskExamples,
} from "../src/data/tasks.ts";

const CIFAR10 = [
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
];

const pairOf = (task: Task) => [task.negative[0], task.positive[0]];

Deno.test("one_vs_anchor: every class against the last, last task held out", () => {
  const family = makeFamily("one_vs_anchor", CIFAR10);
  assert.equal(family.tasks.length, 9);
  family.tasks.forEach((task, i) => {
    assert.deepEqual(task, { name: `${CIFAR10[i]} vs truck`, negative: [i], positive: [9] });
  });
  assert.deepEqual(family.heldOut, [8]);
  assert.deepEqual(family.excluded, []);
  assert.deepEqual(family.train, [0, 1, 2, 3, 4, 5, 6, 7]);
});

Deno.test("pairs_reversed: pairs (i, i + n/2), then reversed; the last reversal held out", () => {
  const family = makeFamily("pairs_reversed", CIFAR10);
  assert.deepEqual(family.tasks.map(pairOf), [
    [0, 5],
    [1, 6],
    [2, 7],
    [3, 8],
    [4, 9],
    [5, 0],
    [6, 1],
    [7, 2],
    [8, 3],
    [9, 4],
  ]);
  assert.equal(family.tasks[0]!.name, "airplane vs dog");
  assert.deepEqual(family.heldOut, [9]);
  assert.equal(family.tasks[9]!.name, "truck vs deer");
  assert.ok(family.train.includes(4), "the forward twin of the held-out task stays in training");
  const odd = makeFamily("pairs_reversed", ["a", "b", "c", "d", "e"]);
  assert.deepEqual(odd.tasks.map(pairOf), [[0, 2], [1, 3], [2, 0], [3, 1]]);
});

Deno.test("all_pairs: every ordered pair; held-out pairs never trained in either order", () => {
  const family = makeFamily("all_pairs", CIFAR10);
  assert.equal(family.tasks.length, 90);
  const pairs = new Set(family.tasks.map((t) => pairOf(t).join(",")));
  assert.equal(pairs.size, 90);
  assert.deepEqual(pairOf(family.tasks[family.heldOut[0]!]!), [9, 8]);
  const check = (holdout: number[]) => {
    const f = makeFamily("all_pairs", CIFAR10, { holdout });
    const heldPairs = f.heldOut.map((h) => pairOf(f.tasks[h]!).sort().join(","));
    for (const t of f.train) {
      assert.ok(!heldPairs.includes(pairOf(f.tasks[t]!).sort().join(",")), `task ${t} leaks`);
    }
    assert.equal(f.train.length + f.heldOut.length + f.excluded.length, 90);
    return f;
  };
  check([89]);
  // Holding out both directions of one pair excludes nothing more.
  const both = check([0, 9]);
  assert.deepEqual(pairOf(both.tasks[9]!), [1, 0]);
  assert.deepEqual(both.excluded, []);
  const some = check([3, 40, 77]);
  assert.equal(some.excluded.length, 3);
});

Deno.test("holdout options and invalid arguments", () => {
  assert.deepEqual(makeFamily("one_vs_anchor", CIFAR10, { holdoutLast: 3 }).heldOut, [6, 7, 8]);
  assert.deepEqual(makeFamily("one_vs_anchor", CIFAR10, { holdoutLast: 0 }).train.length, 9);
  assert.deepEqual(makeFamily("one_vs_anchor", CIFAR10, { holdout: [4, 1] }).heldOut, [1, 4]);
  assert.throws(() => makeFamily("one_vs_anchor", CIFAR10, { holdout: [9] }), RangeError);
  assert.throws(() => makeFamily("one_vs_anchor", CIFAR10, { holdout: [1, 1] }), RangeError);
  assert.throws(() => makeFamily("one_vs_anchor", CIFAR10, { holdoutLast: 9 }), RangeError);
  const all = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  assert.throws(() => makeFamily("one_vs_anchor", CIFAR10, { holdout: all }), /none left/);
  assert.throws(() => makeFamily("all_pairs", ["x", "y"]), /none left/);
  assert.throws(() => makeFamily("one_vs_anchor", ["only"]), RangeError);
  assert.throws(
    () => makeFamily("pairs", CIFAR10),
    /expected one of one_vs_anchor, pairs_reversed, all_pairs/,
  );
  for (const name of FAMILIES) assert.equal(makeFamily(name, ["x", "y", "z"]).name, name);
});

Deno.test("taskExamples: the task's images in order with binary labels", () => {
  const labels = new Uint8Array([0, 3, 1, 2, 3, 0, 1, 1, 2]);
  const split = { images: new Uint8Array(labels.length), labels, count: labels.length };
  const examples = taskExamples({ name: "0+2 vs 1", negative: [0, 2], positive: [1] }, split);
  assert.deepEqual([...examples.indices], [0, 2, 3, 5, 6, 7, 8]);
  assert.deepEqual([...examples.labels], [0, 1, 0, 0, 1, 1, 0]);
  assert.throws(
    () => taskExamples({ name: "bad", negative: [1], positive: [1] }, split),
    /both sides/,
  );
  assert.throws(() => taskExamples({ name: "bad", negative: [], positive: [1] }, split));
});

Deno.test("the reserve: a fixed share of every class, the same for every run, split exactly", () => {
  // 10 classes x 1000 images, labels cycling: each class gets close to the asked fraction.
  const labels = Uint8Array.from({ length: 10_000 }, (_, i) => i % 10);
  for (const fraction of [0.1, 0.25]) {
    for (let c = 0; c < 10; c++) {
      let n = 0;
      for (let i = c; i < labels.length; i += 10) if (isReserved(i, fraction)) n++;
      assert.ok(Math.abs(n / 1000 - fraction) < 0.04, `class ${c}: ${n} of 1000 at ${fraction}`);
    }
  }
  // A function of the index alone, nested in the fraction, and nothing at 0.
  for (let i = 0; i < 2000; i++) {
    assert.equal(isReserved(i, 0.1), isReserved(i, 0.1));
    if (isReserved(i, 0.1)) assert.ok(isReserved(i, 0.25), `image ${i}`);
    assert.equal(isReserved(i, 0), false);
  }
  const task: Task = { name: "c1 vs c9", negative: [1], positive: [9] };
  const examples = taskExamples(task, { images: new Uint8Array(0), labels, count: labels.length });
  const { kept, reserved } = splitReserve(examples, 0.1);
  assert.equal(kept.indices.length + reserved.indices.length, examples.indices.length);
  assert.ok([...reserved.indices].every((i) => isReserved(i, 0.1)));
  assert.ok([...kept.indices].every((i) => !isReserved(i, 0.1)));
  assert.deepEqual(
    [...reserved.labels],
    [...reserved.indices].map((i) => (labels[i] === 9 ? 1 : 0)),
  );
});
