/**
 * `adapt --validation` as documented: a fraction for runs trained without a reserve; for runs
 * trained with one, any value > 0 turns the reserved-image slice on and 0 turns it off.
 */
import assert from "node:assert/strict";
import { splitValidation } from "../src/adapt/mod.ts";
import { isReserved } from "../src/data/tasks.ts";
import { runMain } from "./util.ts";

/** 2000 images of a task, every third one positive. */
const labels = Float32Array.from({ length: 2000 }, (_, k) => (k % 3 === 0 ? 1 : 0));
const examples = { indices: Uint32Array.from(labels.keys(), (k) => 5000 + k), labels };

Deno.test("without a reserve, --validation is the fraction of each class held out", () => {
  for (const fraction of [0.05, 0.2, 0.4]) {
    const { learn, validation } = splitValidation(examples, { fraction, seed: 3 });
    assert.ok(validation);
    const positives = validation.labels.filter((l) => l === 1).length;
    assert.equal(positives, Math.round(667 * fraction));
    assert.equal(validation.labels.length - positives, Math.round(1333 * fraction));
    assert.equal(learn.indices.length + validation.indices.length, 2000);
  }
  assert.equal(splitValidation(examples, { fraction: 0, seed: 3 }).validation, undefined);
});

Deno.test("with a reserve, any --validation > 0 gives the reserved images and 0 none", () => {
  const reserve = 0.1;
  const reserved = [...examples.indices].filter((i) => isReserved(i, reserve));
  const slices = [0.01, 0.1, 0.45].map((fraction) =>
    splitValidation(examples, { fraction, seed: 3, reserve })
  );
  for (const { learn, validation } of slices) {
    assert.deepEqual([...validation!.indices], reserved);
    assert.deepEqual(
      [...learn.indices],
      [...examples.indices].filter((i) => !isReserved(i, reserve)),
    );
  }
  const off = splitValidation(examples, { fraction: 0, seed: 3, reserve });
  assert.equal(off.validation, undefined);
  assert.equal(off.learn.indices.length, 2000);
});

Deno.test("adapt --help says what --validation does with and without a reserve", async () => {
  for (const [command, prefix] of [["adapt", ""], ["experiment", "adaptation: "]] as const) {
    const r = await runMain([command, "--help"]);
    assert.equal(r.code, 0, r.stderr);
    const line = r.stdout.split("\n").find((l) => l.startsWith("  --validation "));
    assert.ok(line, command);
    assert.equal(
      line.replace(/^ {2}--validation <value> +/, ""),
      `${prefix}validation slice (0: none): this fraction of the training images, or, for a ` +
        "run trained with a reserve, its reserved images whatever the value" +
        (command === "adapt" ? " (default 0.1)" : ""),
    );
  }
});
