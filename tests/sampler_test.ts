import assert from "node:assert/strict";
import { read, readU32 } from "../src/gpu/tensor.ts";
import { run } from "../src/gpu/kernel.ts";
import { loadDataset } from "../src/data/dataset.ts";
import { channelStats, classCounts, type Dataset } from "../src/data/split.ts";
import { isReserved, makeFamily, taskExamples } from "../src/data/tasks.ts";
import {
  type Augment,
  fewShot,
  FixedBatches,
  ImageStore,
  planBatches,
  Sampler,
  type SamplerOptions,
  SlotSampler,
} from "../src/data/sampler.ts";
import { assemble, augmentation } from "./reference/sampler.ts";
import { assertClose, getGpu, type Gpu, rng } from "./util.ts";

const sharedData = new URL("../../shared/data/cifar-10-batches-bin/", import.meta.url);
const haveCifar10 = (() => {
  try {
    return Deno.statSync(sharedData).isDirectory;
  } catch {
    return false;
  }
})();

/** A dataset of random pixels: `perClass` images of each class in train, `perClass - 2` in test. */
function synthetic(
  options: { classes: number; perClass: number; shape: [number, number, number]; seed: number },
): Dataset {
  const { classes, perClass, shape, seed } = options;
  const random = rng(seed);
  const split = (count: number) => {
    const bytes = shape[0] * shape[1] * shape[2];
    const images = new Uint8Array(count * bytes);
    for (let i = 0; i < images.length; i++) images[i] = Math.floor(random() * 256);
    // Every class equally often, in a shuffled order.
    const labels = Uint8Array.from({ length: count }, (_, i) => i % classes);
    for (let i = count - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [labels[i], labels[j]] = [labels[j]!, labels[i]!];
    }
    return { images, labels, count };
  };
  const train = split(classes * perClass);
  const test = split(classes * (perClass - 2));
  return {
    name: "synthetic",
    shape,
    classNames: Array.from({ length: classes }, (_, c) => `c${c}`),
    train,
    test,
    ...channelStats(train.images, shape),
    source: "synthetic",
  };
}

async function checkStep(
  gpu: Gpu,
  sampler: Sampler,
  dataset: Dataset,
  options: { step: number; options: SamplerOptions; label: string },
): Promise<void> {
  const { step, label } = options;
  run(gpu, sampler.next(step));
  const x = await read(gpu, sampler.x);
  const y = await read(gpu, sampler.y);
  const tasks = await readU32(gpu, sampler.taskIndices);
  const { tasksPerStep, batch, seed, augment } = options.options;
  const expected = assemble(dataset.train.images, {
    shape: dataset.shape,
    indices: sampler.chosen.images,
    tasks: tasksPerStep,
    batch,
    mean: dataset.mean,
    std: dataset.std,
    seed,
    step,
    augment,
  });
  assertClose(x, expected, { rtol: 1e-5, atol: 1e-5, label: `${label} x` });
  assert.deepEqual([...y], [...sampler.chosen.labels], `${label} y`);
  assert.deepEqual([...tasks], [...sampler.chosen.tasks], `${label} task indices`);
  const family = options.options.family;
  for (let t = 0; t < tasksPerStep; t++) {
    const task = family.tasks[sampler.chosen.tasks[t]!]!;
    for (let b = 0; b < batch; b++) {
      const image = sampler.chosen.images[t * batch + b]!;
      const cls = dataset.train.labels[image]!;
      const want = task.positive.includes(cls) ? 1 : task.negative.includes(cls) ? 0 : -1;
      assert.equal(y[t * batch + b], want, `${label}: label of image ${image} (class ${cls})`);
    }
  }
}

Deno.test("sampler x and y equal the CPU reference, odd shape, images over 4 chunks", async () => {
  const gpu = await getGpu();
  const dataset = synthetic({ classes: 6, perClass: 7, shape: [3, 7, 5], seed: 1 });
  const family = makeFamily("all_pairs", dataset.classNames);
  const augments = [undefined, { pad: 2, flip: true }, { pad: 2, flip: true, byImage: true }];
  for (const augment of augments as (Augment | undefined)[]) {
    const options: SamplerOptions = { family, tasksPerStep: 3, batch: 5, seed: 11, augment };
    // 105-byte images pad to 27 words; 12 images per chunk spreads 42 images over 4 chunks.
    const sampler = new Sampler(gpu, dataset, { ...options, chunkBytes: 12 * 27 * 4 });
    for (const step of [0, 1, 7]) {
      await checkStep(gpu, sampler, dataset, {
        step,
        options,
        label: `augment ${JSON.stringify(augment)} step ${step}`,
      });
    }
    sampler.destroy();
  }
});

Deno.test("augmentation hash gives every crop offset and both flips", () => {
  const seen = new Set<string>();
  let flips = 0;
  for (let b = 0; b < 400; b++) {
    const a = augmentation({ seed: 3, step: 9, t: 1, b }, { pad: 2, flip: true });
    seen.add(`${a.ox},${a.oy}`);
    if (a.flip) flips++;
  }
  assert.equal(seen.size, 25);
  assert.ok(flips > 150 && flips < 250, `${flips} flips of 400`);
  const none = augmentation({ seed: 3, step: 9, t: 1, b: 0 }, { pad: 0, flip: false });
  assert.deepEqual(none, { ox: 0, oy: 0, flip: false });
});

Deno.test("sampler with T = 1, B = 1, and MNIST at T = 4, B = 32 with augmentation", async () => {
  const gpu = await getGpu();
  const tiny = synthetic({ classes: 3, perClass: 4, shape: [1, 3, 4], seed: 2 });
  const tinyOptions: SamplerOptions = {
    family: makeFamily("one_vs_anchor", tiny.classNames),
    tasksPerStep: 1,
    batch: 1,
    seed: 5,
  };
  const one = new Sampler(gpu, tiny, tinyOptions);
  await checkStep(gpu, one, tiny, { step: 4, options: tinyOptions, label: "T=1 B=1" });
  one.destroy();

  const mnist = await loadDataset("mnist");
  const options: SamplerOptions = {
    family: makeFamily("all_pairs", mnist.classNames),
    tasksPerStep: 4,
    batch: 32,
    seed: 123,
    balanced: true,
    augment: { pad: 4, flip: true },
  };
  const sampler = new Sampler(gpu, mnist, options);
  await checkStep(gpu, sampler, mnist, { step: 2, options, label: "mnist" });
  sampler.destroy();
});

Deno.test("slot sampler's crops and flips follow the reference and a slot's own images", async () => {
  const gpu = await getGpu();
  const dataset = synthetic({ classes: 4, perClass: 6, shape: [1, 6, 5], seed: 7 });
  const family = makeFamily("one_vs_anchor", dataset.classNames);
  const store = new ImageStore(gpu, dataset.train, { shape: dataset.shape });
  const slots = family.tasks.slice(0, 3).map((task, t) => ({
    task,
    examples: taskExamples(task, dataset.train),
    seed: 100 + t,
  }));
  const augment = { pad: 2, flip: true };
  const assembled = async (chosen: typeof slots, step: number) => {
    const sampler = new SlotSampler(gpu, dataset, {
      slots: chosen,
      batch: 4,
      store,
      balanced: true,
      augment,
      seed: 9,
    });
    run(gpu, sampler.next(step));
    const x = await read(gpu, sampler.x);
    const images = await readU32(gpu, sampler.imageIndices);
    sampler.destroy();
    return { x, images };
  };
  try {
    const all = await assembled(slots, 3);
    const expected = assemble(dataset.train.images, {
      shape: dataset.shape,
      indices: all.images,
      tasks: 3,
      batch: 4,
      mean: dataset.mean,
      std: dataset.std,
      seed: 9,
      step: 3,
      augment: { ...augment, byImage: true },
    });
    assertClose(all.x, expected, { rtol: 1e-5, atol: 1e-5, label: "slot sampler x" });
    // Slot 2 alone draws the same images with the same crops and flips as beside slots 0 and 1.
    const alone = await assembled([slots[2]!], 3);
    const per = alone.x.length;
    assert.deepEqual([...alone.x], [...all.x.subarray(2 * per, 3 * per)]);
  } finally {
    store.destroy();
  }
});

Deno.test("sampling is a pure function of (seed, step)", async () => {
  const gpu = await getGpu();
  const dataset = synthetic({ classes: 5, perClass: 9, shape: [1, 2, 2], seed: 3 });
  const options: SamplerOptions = {
    family: makeFamily("all_pairs", dataset.classNames),
    tasksPerStep: 4,
    batch: 6,
    seed: 42,
  };
  const a = new Sampler(gpu, dataset, options);
  const b = new Sampler(gpu, dataset, options);
  const c = new Sampler(gpu, dataset, { ...options, seed: 43 });
  const snapshot = (s: Sampler) => [...s.chosen.tasks, -1, ...s.chosen.images];
  a.choose(5);
  const five = snapshot(a);
  a.choose(3);
  const three = snapshot(a);
  a.choose(5);
  assert.deepEqual(snapshot(a), five, "step 5 again after step 3");
  assert.notDeepEqual(three, five, "steps 3 and 5 differ");
  b.choose(5);
  assert.deepEqual(snapshot(b), five, "a second sampler with the same seed");
  c.choose(5);
  assert.notDeepEqual(snapshot(c), five, "another seed");
  for (const s of [a, b, c]) s.destroy();
});

Deno.test("tasks are drawn without replacement from the training tasks only", async () => {
  const gpu = await getGpu();
  const dataset = synthetic({ classes: 5, perClass: 6, shape: [1, 2, 2], seed: 4 });
  const family = makeFamily("all_pairs", dataset.classNames, { holdout: [0, 7] });
  const sampler = new Sampler(gpu, dataset, { family, tasksPerStep: 6, batch: 2, seed: 1 });
  const seen = new Set<number>();
  for (let step = 0; step < 200; step++) {
    sampler.choose(step);
    const tasks = [...sampler.chosen.tasks];
    assert.equal(new Set(tasks).size, tasks.length, `step ${step}: tasks ${tasks} repeat`);
    for (const t of tasks) {
      assert.ok(family.train.includes(t), `step ${step}: task ${t} is not a training task`);
      seen.add(t);
    }
  }
  assert.equal(seen.size, family.train.length, "every training task is drawn at some step");
  sampler.destroy();
  assert.throws(
    () => new Sampler(gpu, dataset, { family, tasksPerStep: 19, batch: 2, seed: 1 }),
    RangeError,
  );
});

Deno.test("training never draws a reserved image, and draws every other one", async () => {
  const gpu = await getGpu();
  const dataset = synthetic({ classes: 3, perClass: 40, shape: [1, 2, 2], seed: 6 });
  const family = makeFamily("one_vs_anchor", dataset.classNames, { holdoutLast: 0 });
  const sampler = new Sampler(gpu, dataset, {
    family,
    tasksPerStep: 2,
    batch: 8,
    seed: 3,
    balanced: true,
    reserve: 0.3,
  });
  const drawn = new Set<number>();
  for (let step = 0; step < 300; step++) {
    sampler.choose(step);
    for (const image of sampler.chosen.images) {
      assert.ok(!isReserved(image, 0.3), `step ${step}: reserved image ${image} drawn`);
      drawn.add(image);
    }
  }
  sampler.destroy();
  const allowed = [...dataset.train.labels.keys()].filter((i) => !isReserved(i, 0.3));
  assert.ok(allowed.length < dataset.train.count, "the reserve holds some images");
  assert.deepEqual([...drawn].sort((a, b) => a - b), allowed, "every other image is drawn");
});

Deno.test("images within a batch are distinct, then repeat in even rounds", async () => {
  const gpu = await getGpu();
  const dataset = synthetic({ classes: 3, perClass: 5, shape: [1, 2, 2], seed: 5 });
  const family = makeFamily("one_vs_anchor", dataset.classNames, { holdoutLast: 0 });
  for (const batch of [7, 10, 23]) {
    const sampler = new Sampler(gpu, dataset, { family, tasksPerStep: 2, batch, seed: 9 });
    for (let step = 0; step < 20; step++) {
      sampler.choose(step);
      for (let t = 0; t < 2; t++) {
        const pool = taskExamples(family.tasks[sampler.chosen.tasks[t]!]!, dataset.train).indices;
        const counts = new Map<number, number>();
        for (const i of sampler.chosen.images.subarray(t * batch, (t + 1) * batch)) {
          assert.ok(pool.includes(i), `image ${i} is not of the task's classes`);
          counts.set(i, (counts.get(i) ?? 0) + 1);
        }
        const values = [...counts.values()];
        const most = Math.max(...values);
        const least = counts.size < pool.length ? 0 : Math.min(...values);
        assert.ok(most - least <= 1, `B=${batch} over ${pool.length} images: counts ${values}`);
      }
    }
    sampler.destroy();
  }
});

Deno.test("balanced batches are half negative, half positive", async () => {
  const gpu = await getGpu();
  const dataset = synthetic({ classes: 4, perClass: 20, shape: [1, 2, 2], seed: 6 });
  const family = makeFamily("one_vs_anchor", dataset.classNames);
  const plain = new Sampler(gpu, dataset, { family, tasksPerStep: 2, batch: 16, seed: 2 });
  const sampler = new Sampler(gpu, dataset, {
    family,
    tasksPerStep: 2,
    batch: 16,
    seed: 2,
    balanced: true,
  });
  let unbalanced = 0;
  for (let step = 0; step < 30; step++) {
    sampler.choose(step);
    assert.deepEqual([...sampler.chosen.labels], Array.from({ length: 32 }, (_, i) => i & 1));
    plain.choose(step);
    const positives = plain.chosen.labels.reduce((s, l) => s + l, 0);
    if (positives !== 16) unbalanced++;
  }
  assert.ok(unbalanced > 0, "without balancing the halves vary");
  sampler.destroy();
  plain.destroy();
});

Deno.test("few-shot subsets: size, classes, determinism, nesting", () => {
  const dataset = synthetic({ classes: 4, perClass: 12, shape: [1, 2, 2], seed: 7 });
  const family = makeFamily("all_pairs", dataset.classNames);
  const task = family.tasks[5]!;
  const five = fewShot(task, dataset.train, { shots: 5, seed: 1 });
  assert.equal(five.indices.length, 10);
  const all = taskExamples(task, dataset.train);
  const counts = classCounts(Array.from(five.indices, (i) => dataset.train.labels[i]!), 4);
  for (const c of [...task.negative, ...task.positive]) assert.equal(counts[c], 5);
  five.indices.forEach((i, k) => {
    const at = all.indices.indexOf(i);
    assert.ok(at >= 0, `image ${i} is not of the task`);
    assert.equal(five.labels[k], all.labels[at]);
  });
  assert.ok(five.indices.every((v, k) => k === 0 || v > five.indices[k - 1]!), "ascending");
  assert.deepEqual(fewShot(task, dataset.train, { shots: 5, seed: 1 }), five, "same seed");
  assert.notDeepEqual(fewShot(task, dataset.train, { shots: 5, seed: 2 }), five, "other seed");
  const eight = fewShot(task, dataset.train, { shots: 8, seed: 1 });
  for (const i of five.indices) assert.ok(eight.indices.includes(i), "5 shots within 8 shots");
  assert.throws(() => fewShot(task, dataset.train, { shots: 13, seed: 1 }), RangeError);
});

Deno.test("fixed batches cover every test image of each task exactly once", async () => {
  const gpu = await getGpu();
  const dataset = synthetic({ classes: 5, perClass: 9, shape: [2, 3, 3], seed: 8 });
  const family = makeFamily("pairs_reversed", dataset.classNames);
  const tasks = [family.heldOut[0]!, 0, 1];
  const batch = 4;
  const fixed = new FixedBatches(gpu, dataset, { family, tasks, batch });
  const expected = tasks.map((t) => taskExamples(family.tasks[t]!, dataset.test));
  assert.equal(fixed.count, Math.ceil(Math.max(...expected.map((e) => e.indices.length)) / batch));
  const covered = tasks.map(() => new Map<number, number>());
  for (let k = 0; k < fixed.count; k++) {
    const { images, labels } = fixed.batch(k);
    for (let s = 0; s < images.length; s++) {
      const t = Math.floor(s / batch);
      if (labels[s] === -1) continue;
      covered[t]!.set(images[s]!, (covered[t]!.get(images[s]!) ?? 0) + 1);
      const at = expected[t]!.indices.indexOf(images[s]!);
      assert.equal(labels[s], expected[t]!.labels[at], `label of test image ${images[s]}`);
    }
  }
  tasks.forEach((_, t) => {
    assert.deepEqual([...covered[t]!.keys()].sort((a, b) => a - b), [...expected[t]!.indices]);
    assert.ok([...covered[t]!.values()].every((n) => n === 1), "each image once");
  });
  const last = fixed.count - 1;
  run(gpu, fixed.load(last));
  const x = await read(gpu, fixed.x);
  const y = await read(gpu, fixed.y);
  assert.deepEqual([...y], [...fixed.batch(last).labels]);
  assert.ok(y.includes(-1), "the last batch is padded");
  assertClose(
    x,
    assemble(dataset.test.images, {
      shape: dataset.shape,
      indices: fixed.batch(last).images,
      tasks: tasks.length,
      batch,
      mean: dataset.mean,
      std: dataset.std,
    }),
    { rtol: 1e-5, atol: 1e-5, label: "fixed batch x" },
  );
  assert.deepEqual([...await readU32(gpu, fixed.taskIndices)], tasks);
  fixed.destroy();
  const plan = planBatches([{ indices: new Uint32Array([4, 5]), labels: new Float32Array(2) }], 3);
  assert.deepEqual([...plan.labels], [0, 0, -1]);
});

Deno.test("image stores reject datasets that need more than 4 bindings", async () => {
  const gpu = await getGpu();
  const dataset = synthetic({ classes: 2, perClass: 5, shape: [1, 2, 2], seed: 9 });
  assert.throws(
    () => new ImageStore(gpu, dataset.train, { shape: dataset.shape, chunkBytes: 8 }),
    /need 5 bindings/,
  );
});

Deno.test({
  name: "sampler on the full CIFAR-10 (two chunks on 128 MiB bindings) matches the reference" +
    (haveCifar10 ? "" : " (skipped: ../shared/data/cifar-10-batches-bin is absent)"),
  ignore: !haveCifar10,
  async fn() {
    const gpu = await getGpu();
    const dataDir = decodeURIComponent(new URL("..", sharedData).pathname);
    const dataset = await loadDataset("cifar10", { dataDir, verify: false });
    const options: SamplerOptions = {
      family: makeFamily("all_pairs", dataset.classNames),
      tasksPerStep: 2,
      batch: 32,
      seed: 77,
      augment: { pad: 4, flip: true },
    };
    // 128 MiB chunks, as on llvmpipe, whatever this device allows: 43,690 images per chunk.
    const sampler = new Sampler(gpu, dataset, { ...options, chunkBytes: 2 ** 27 });
    await checkStep(gpu, sampler, dataset, { step: 12, options, label: "cifar10" });
    assert.ok(sampler.chosen.images.some((i) => i >= 43_690), "draws reach the second chunk");
    sampler.destroy();
  },
});
