/** Learning-rate schedules of src/optim.ts. */
import assert from "node:assert/strict";
import { learningRate } from "../src/optim.ts";

Deno.test("constant and cosine schedules with linear warm-up", () => {
  const constant = { lr: 0.1, kind: "constant" as const, warmup: 4, steps: 100 };
  assert.deepEqual([1, 2, 4, 5, 100].map((s) => learningRate(s, constant)), [
    0.025,
    0.05,
    0.1,
    0.1,
    0.1,
  ]);
  const cosine = { lr: 0.1, kind: "cosine" as const, warmup: 0, steps: 100 };
  assert.equal(learningRate(0, cosine), 0.1);
  assert.ok(Math.abs(learningRate(50, cosine) - 0.05) < 1e-12);
  assert.ok(Math.abs(learningRate(100, cosine)) < 1e-12);
  const both = { lr: 1, kind: "cosine" as const, warmup: 10, steps: 110 };
  assert.equal(learningRate(5, both), 0.5);
  assert.equal(learningRate(10, both), 1);
  assert.ok(Math.abs(learningRate(60, both) - 0.5) < 1e-12);
});
