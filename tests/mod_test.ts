/**
 * The library entry point: a tiny train -> adapt (from PNG folders) -> predict -> export, all
 * through mod.ts, as a researcher scripting SuperNet would.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { encode as encodePng } from "fast-png";
import * as supernet from "../mod.ts";
import { loadDataset } from "../src/data/dataset.ts";

Deno.test("mod.ts drives train, adapt from pictures, predict, evaluate and export", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mod_test_" });
  try {
    const run = join(dir, "run");
    const trained = await supernet.train({
      steps: 20,
      tasksPerStep: 4,
      batch: 16,
      evalEvery: 0,
      evalTasks: 1,
      lr: 0.003,
      out: run,
    });
    assert.equal(trained.step, 20);

    // Two folders of MNIST test digits (3 and 5: neither is the held-out pair's) as PNG files.
    const mnist = await loadDataset("mnist");
    const folders = { train: join(dir, "digits"), test: join(dir, "digits_test") };
    const counts = new Map<number, number>();
    for (let i = 0; i < mnist.test.count; i++) {
      const label = mnist.test.labels[i]!;
      if (label !== 3 && label !== 5) continue;
      const k = counts.get(label) ?? 0;
      if (k >= 16) continue;
      counts.set(label, k + 1);
      const folder = join(k < 8 ? folders.train : folders.test, label === 3 ? "three" : "five");
      await Deno.mkdir(folder, { recursive: true });
      const pixels = mnist.test.images.subarray(i * 784, (i + 1) * 784);
      await Deno.writeFile(
        join(folder, `${i}.png`),
        encodePng({ width: 28, height: 28, data: pixels, channels: 1, depth: 8 }),
      );
    }
    await Deno.writeTextFile(join(folders.train, "three", "broken.png"), "not a png");
    const skipped: string[] = [];
    const adapted = await supernet.adapt(
      {
        run,
        images: folders.train,
        testDir: folders.test,
        positive: "three",
        methods: ["zero-shot", "z"],
        steps: 10,
        batch: 8,
        evalEvery: 5,
      },
      { onSkip: (s) => skipped.push(s.file) },
    );
    assert.deepEqual(skipped, [join(folders.train, "three", "broken.png")]);
    assert.deepEqual(adapted.report?.classNames, ["five", "three"]);
    assert.deepEqual(adapted.report?.train, [8, 8]);
    assert.deepEqual(adapted.report?.test, [8, 8]);
    assert.equal(adapted.tasks[0]!.taskName, "five vs three");
    assert.equal(adapted.tasks[0]!.trainImages, 16);
    assert.equal(adapted.tasks[0]!.testImages, 16);
    assert.equal(adapted.out, join(run, "adapt_digits"));
    const zFile = join(adapted.out, "z_digits.safetensors");
    assert.ok((await Deno.stat(zFile)).size > 400);

    const result = await supernet.predict({ run, z: zFile, paths: [join(folders.test, "three")] });
    assert.equal(result.predictions.length, 8);
    assert.deepEqual(result.classNames, ["five", "three"]);
    for (const p of result.predictions) {
      assert.ok(p.probability >= 0 && p.probability <= 1);
      assert.equal(p.className, result.classNames[p.label]);
    }
    // The z run's test accuracy is the predictions' accuracy on the same test pictures.
    const fives = await supernet.predict({ run, z: zFile, paths: [join(folders.test, "five")] });
    const correct = result.predictions.filter((p) => p.label === 1).length +
      fives.predictions.filter((p) => p.label === 0).length;
    assert.equal(correct / 16, adapted.tasks[0]!.results[1]!.accuracy);

    const evaluated = await supernet.evaluate({ run });
    assert.equal(evaluated.tasks.length, 9);
    const written = await supernet.export({ run, z: zFile, format: "onnx" });
    assert.equal(written.onnx, join(run, "export", "five_vs_three.onnx"));
    const description = JSON.parse(await Deno.readTextFile(written.architecture));
    assert.deepEqual(description.classNames, ["five", "three"]);
    assert.equal(description.source.z, zFile);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
