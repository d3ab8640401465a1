/**
 * N-way few-shot: class splits (by alphabet, background/evaluation, CIFAR-FS, by index), episode
 * sampling, the baselines' pieces (ProtoNet's training, the logistic regression on embeddings),
 * and `experiment fewshot` end to end at a tiny size on MNIST (2-way: its 10 classes split
 * 6/2/2), where the training loss must fall and every method scores the same episodes.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadDataset } from "../src/data/dataset.ts";
import { classPool, drawEpisode, episodeLabels, sampleEpisode } from "../src/fewshot/episodes.ts";
import { embeddingSpec } from "../src/fewshot/embedding.ts";
import { FEWSHOT_DEFAULTS, fittedChunk, runFewShot } from "../src/fewshot/experiment.ts";
import {
  chooseLinear,
  fitLogistic,
  l2Normalize,
  linearAccuracies,
  predictLogistic,
} from "../src/fewshot/pretrained.ts";
import { protoNetAccuracy, trainProtoNet } from "../src/fewshot/protonet.ts";
import { keptTraining, saveTraining } from "../src/fewshot/kept.ts";
import { fewShotMarkdown, writeFewShotReport } from "../src/fewshot/report.ts";
import { CIFAR_FS, classSplit } from "../src/fewshot/split.ts";
import { ImageStore } from "../src/data/sampler.ts";
import { superNetConfig } from "../src/model/supernet.ts";
import { makeTarget } from "../src/model/target.ts";
import type { Gpu } from "../src/gpu/device.ts";
import { configureTuning, pendingTuneCount, tuneSettings } from "../src/gpu/tune.ts";
import { Random } from "../src/random.ts";
import { assertClose, getGpu } from "./util.ts";

const group = (name: string, classes: number[], source: string) => ({ name, classes, source });

Deno.test("one Omniglot file splits by alphabet in name order, at least one each", () => {
  const split = classSplit({
    name: "omniglot",
    classNames: Array.from({ length: 9 }, (_, i) => `c${i}`),
    groups: [
      group("Tagalog", [7, 8], "dev.zip"),
      group("Japanese", [0, 1, 2, 3], "dev.zip"),
      group("Sanskrit", [4, 5, 6], "dev.zip"),
    ],
  });
  assert.deepEqual(split.train, [0, 1, 2, 3]);
  assert.deepEqual(split.validation, [4, 5, 6]);
  assert.deepEqual(split.test, [7, 8]);
  assert.match(split.rule, /by alphabet/);
});

Deno.test("with background and evaluation files, background trains and evaluation splits", () => {
  const split = classSplit({
    name: "omniglot",
    classNames: Array.from({ length: 8 }, (_, i) => `c${i}`),
    groups: [
      group("Latin", [0, 1], "images_background.zip"),
      group("Greek", [2, 3], "images_background.zip"),
      group("Tibetan", [6, 7], "images_evaluation.zip"),
      group("Atlantean", [4, 5], "images_evaluation.zip"),
    ],
  });
  assert.deepEqual(split.train, [0, 1, 2, 3]);
  assert.deepEqual(split.validation, [4, 5]);
  assert.deepEqual(split.test, [6, 7]);
});

Deno.test("cifar-fs takes Bertinetto et al.'s 64/16/20 classes and needs CIFAR-100", () => {
  const named = [...CIFAR_FS.validation, ...CIFAR_FS.test];
  const classNames = [
    ...Array.from({ length: 64 }, (_, i) => `train${i}`),
    ...named,
  ].reverse();
  const split = classSplit({ name: "cifar100", classNames }, "cifar-fs");
  assert.equal(split.train.length, 64);
  assert.deepEqual(split.validation.map((c) => classNames[c]), [...CIFAR_FS.validation]);
  assert.deepEqual(split.test.map((c) => classNames[c]), [...CIFAR_FS.test]);
  assert.equal(new Set([...split.train, ...split.validation, ...split.test]).size, 100);
  assert.throws(() => classSplit({ name: "cifar10", classNames }, "cifar-fs"), /cifar100/);
  assert.throws(
    () => classSplit({ name: "cifar100", classNames: classNames.slice(1) }, "cifar-fs"),
    /not in the dataset's class names/,
  );
});

Deno.test("other datasets split by class index 60/20/20", () => {
  const split = classSplit({ name: "mnist", classNames: [..."0123456789"] });
  assert.deepEqual([split.train, split.validation, split.test], [[0, 1, 2, 3, 4, 5], [6, 7], [
    8,
    9,
  ]]);
  assert.throws(() => classSplit({ name: "x", classNames: ["a", "b"] }), /at least 3 classes/);
});

Deno.test("episodes: N distinct classes, K + Q distinct images each, labels by position", () => {
  const byClass = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13]];
  const pool = {
    split: { images: new Uint8Array(14), labels: new Uint16Array(14), count: 14 },
    byClass,
  };
  const e = sampleEpisode(pool, {
    classes: [0, 1, 2],
    ways: 3,
    shots: 1,
    queries: 2,
    random: new Random(3),
  });
  assert.equal(new Set(e.classes).size, 3);
  e.classes.forEach((c, i) => {
    const mine = [e.support[i]!, e.query[2 * i]!, e.query[2 * i + 1]!];
    assert.equal(new Set(mine).size, 3);
    for (const image of mine) assert.ok(byClass[c]!.includes(image));
  });
  const again = sampleEpisode(pool, {
    classes: [0, 1, 2],
    ways: 3,
    shots: 1,
    queries: 2,
    random: new Random(3),
  });
  assert.deepEqual(again, e);
  assert.deepEqual([...episodeLabels(3, 2)], [0, 0, 1, 1, 2, 2]);
  const fixed = drawEpisode(pool, { classes: [2, 0], shots: 2, queries: 0, random: new Random(1) });
  assert.deepEqual(fixed.classes, [2, 0]);
  assert.ok([...fixed.support.slice(0, 2)].every((i) => byClass[2]!.includes(i)));
  assert.throws(
    () => drawEpisode(pool, { classes: [3], shots: 2, queries: 1, random: new Random(1) }),
    /fewer than 2 shots \+ 1 queries/,
  );
  assert.throws(
    () =>
      sampleEpisode(pool, {
        classes: [0, 1],
        ways: 3,
        shots: 1,
        queries: 1,
        random: new Random(1),
      }),
    /use --ways 2/,
  );
});

Deno.test("the class pool holds training and test images of every class", async () => {
  const dataset = await loadDataset("mnist");
  const pool = classPool(dataset);
  assert.equal(pool.split.count, dataset.train.count + dataset.test.count);
  assert.equal(pool.byClass.flat().length, pool.split.count);
  const k = dataset.train.count + 5;
  assert.ok(pool.byClass[dataset.test.labels[5]!]!.includes(k));
});

Deno.test("experiment fewshot trains, chooses on validation classes and scores test episodes", async () => {
  const gpu = await getGpu();
  const out = await Deno.makeTempDir({ prefix: "supernet-fewshot-" });
  // 2-way episodes of MNIST's 2 test classes, a few seconds per method.
  const tiny = {
    ...FEWSHOT_DEFAULTS,
    dataset: "mnist",
    ways: 2,
    shots: [1],
    queries: 3,
    episodes: 6,
    profile: "smoke" as const,
    steps: 20,
  };
  const results = await runFewShot(gpu, { ...tiny, out });
  assert.deepEqual(results.rows.map((r) => r.method), [
    "z (table)",
    "z (meta)",
    "full",
    "finetune (table)",
    "finetune (meta)",
    "protonet",
    "pretrained",
  ]);
  const lrs: Record<string, number[]> = { protonet: [0], pretrained: [0.01, 0.1] };
  for (const r of results.rows) {
    assert.equal(r.values.length, 6);
    assert.ok(r.accuracy >= 0 && r.accuracy <= 1 && Number.isFinite(r.ci95));
    const allowed = lrs[r.method] ?? [0.01, 0.03, 0.003];
    assert.ok(allowed.includes(r.chosen.lr), `${r.method} lr ${r.chosen.lr}`);
  }
  assert.equal(results.rows[0]!.trainable, 100);
  assert.equal(results.rows[2]!.trainable, results.sizes.network);
  assert.equal(results.rows[4]!.trainable, results.sizes.network);
  // ProtoNet learns nothing per episode; pretrained's classifier is N x (F + 1), F = width 8.
  const [protonet, pretrained] = results.rows.slice(5);
  assert.deepEqual([protonet!.trainable, protonet!.chosen.steps], [0, 0]);
  assert.equal(pretrained!.trainable, 2 * (8 + 1));
  assert.ok([25, 100].includes(pretrained!.chosen.steps));
  assert.ok([0.01, 0.1].includes(pretrained!.chosen.l2!));
  for (const method of ["protonet", "pretrained"] as const) {
    const loss = results.trainingLoss[method]!;
    assert.ok(Number.isFinite(loss.first) && Number.isFinite(loss.last), method);
  }
  // Episodes adapted 4 at a time score as they did 10 at a time (each slot is on its own).
  const chunked = await runFewShot(gpu, {
    ...tiny,
    chunk: 4,
    trainings: ["table"],
    methods: ["z", "full", "protonet", "pretrained"],
    out: join(out, "chunked"),
  });
  for (const r of chunked.rows) {
    const same = results.rows.find((s) => s.method === r.method)!;
    assert.deepEqual(r.chosen, same.chosen, r.method);
    r.values.forEach((v, e) => assert.ok(Math.abs(v - same.values[e]!) <= 1 / 6 + 1e-9));
  }
  const table = results.trainingLoss.table!;
  assert.ok(table.last < table.first, `table loss ${table.first} -> ${table.last}`);
  const meta = results.trainingLoss.meta!;
  assert.ok(meta.last < meta.first, `meta query loss ${meta.first} -> ${meta.last}`);
  assert.deepEqual(results.split.test, [8, 9]);
  const saved = JSON.parse(await Deno.readTextFile(join(out, "results.json")));
  assert.deepEqual(saved.rows[0].values, results.rows[0]!.values);
  const report = await Deno.readTextFile(await writeFewShotReport(out));
  assert.match(report, /\| z \(table\) - full \| 1 \|/);
  assert.match(report, /\| protonet \| 2 \| 1 \| .* \| none \|/);
  assert.match(report, /\| pretrained \| 2 \| 1 \| .* \| 0\.\d+, \d+, L2 0\.\d+ \|/);
  assert.match(report, /No published numbers/);
  assert.match(
    fewShotMarkdown({ ...results, options: { ...results.options, dataset: "omniglot", ways: 5 } }),
    /\| MAML \| 5 \| 1 \| 98.7 ± 0.4 \|/,
  );
  // Resumed with a second shot count: the trainings and the 1-shot rows are kept as they were
  // (nothing trains again), only the 2-shot rows run, and the rows of methods not asked for now
  // stay in the folder's record.
  const said: string[] = [];
  const resumed = await runFewShot(gpu, {
    ...tiny,
    shots: [1, 2],
    trainings: ["meta"],
    methods: ["z", "protonet"],
    resume: true,
    out,
  }, { onEvent: (e) => said.push(e.text) });
  assert.deepEqual(resumed.kept?.trainings.map((t) => t.name), ["meta", "protonet"]);
  // Each row names the code that scored it; a kept row keeps its own.
  const code = results.rows[0]!.commit!;
  assert.ok(code.length > 0 && results.rows.every((r) => r.commit === code));
  assert.deepEqual(resumed.kept?.rows, [
    `z (meta), 1 shot(s) (code ${code})`,
    `protonet, 1 shot(s) (code ${code})`,
  ]);
  assert.ok(!said.some((t) => t.startsWith("training") && !t.includes("kept from an earlier run")));
  for (const method of ["z (meta)", "protonet"]) {
    const before = results.rows.find((r) => r.method === method)!;
    assert.deepEqual(resumed.rows.find((r) => r.method === method && r.shots === 1), before);
    const two = resumed.rows.find((r) => r.method === method && r.shots === 2)!;
    assert.equal(two.values.length, 6);
  }
  assert.deepEqual(resumed.trainingLoss.meta, results.trainingLoss.meta);
  assert.match(
    fewShotMarkdown(resumed),
    /Kept from an earlier run in the folder \(`--resume`\): training meta \(code [^,]+, \d+ s\); training protonet \(code [^,]+, \d+ s\); z \(meta\), 1 shot\(s\) \(code [^)]+\); protonet, 1 shot\(s\) \(code [^)]+\)\./,
  );
  const record = JSON.parse(await Deno.readTextFile(join(out, "rows.json")));
  assert.equal(record.rows.length, 7 + 2);
  await Deno.remove(out, { recursive: true });
});

Deno.test("a kept training is read back only under the fingerprint it was trained with", async () => {
  const out = await Deno.makeTempDir();
  const trained = {
    weights: new Map([["w", new Float32Array([1, 2, 3])]]),
    loss: { first: 2, last: 1 },
  };
  assert.equal(await keptTraining(out, "meta", "a"), undefined);
  await saveTraining(out, "meta", trained, { fingerprint: "a", commit: "abc1234", seconds: 12 });
  const kept = await keptTraining(out, "meta", "a");
  assert.deepEqual(kept?.kept, { name: "meta", commit: "abc1234", seconds: 12 });
  assert.deepEqual([...kept!.weights.get("w")!], [1, 2, 3]);
  assert.deepEqual(kept!.loss, { first: 2, last: 1 });
  // Other options, or another training's name: nothing kept.
  assert.equal(await keptTraining(out, "meta", "b"), undefined);
  assert.equal(await keptTraining(out, "table", "a"), undefined);
  await Deno.remove(out, { recursive: true });
});

Deno.test("ProtoNet's loss falls on tiny MNIST episodes, and it scores episodes", async () => {
  const gpu = await getGpu();
  const dataset = await loadDataset("mnist");
  const pool = classPool(dataset);
  const store = new ImageStore(gpu, pool.split, { shape: dataset.shape });
  const config = superNetConfig({
    target: "conv4",
    width: 8,
    inputShape: dataset.shape,
    outputs: 2,
    tasks: 1,
    seed: 3,
  });
  const backbone = { gpu, dataset, store, config };
  try {
    const losses: number[] = [];
    const trained = await trainProtoNet(backbone, {
      pool,
      classes: [0, 1, 2, 3, 4, 5],
      ways: 2,
      shots: 2,
      queries: 4,
      steps: 30,
      tasksPerStep: 4,
      lr: 0.01,
      seed: 5,
      report: 1,
      onProgress: (_, loss) => losses.push(loss),
    });
    assert.equal(losses.length, 30);
    const head = losses.slice(0, 5).reduce((a, b) => a + b) / 5;
    const tail = losses.slice(-5).reduce((a, b) => a + b) / 5;
    assert.ok(tail < 0.8 * head, `loss ${head} (first 5 steps) -> ${tail} (last 5)`);
    assert.equal(trained.loss.first, losses[0]);
    assert.deepEqual(
      [...trained.weights.keys()],
      embeddingSpec(config).spec.layers.flatMap((l) =>
        l.kind === "conv" || l.kind === "norm" ? [`${l.name}.weight`, `${l.name}.bias`] : []
      ),
    );
    // Unseen digits 8 vs 9, nearest prototype; 3 episodes side by side score as 1 at a time.
    const random = new Random(9);
    const episodes = Array.from(
      { length: 5 },
      () => sampleEpisode(pool, { classes: [8, 9], ways: 2, shots: 2, queries: 4, random }),
    );
    const together = await protoNetAccuracy(backbone, trained.weights, episodes, {
      ways: 2,
      chunk: 3,
    });
    const alone = await protoNetAccuracy(backbone, trained.weights, episodes, {
      ways: 2,
      chunk: 1,
    });
    assert.equal(together.length, 5);
    together.forEach((a, e) => assert.ok(Math.abs(a - alone[e]!) <= 1 / 8 + 1e-9, `episode ${e}`));
    assert.ok(together.every((a) => a >= 0 && a <= 1));
  } finally {
    store.destroy();
  }
});

Deno.test("the logistic regression separates a linearly separable toy set", () => {
  // Three classes around the directions 0, 120 and 240 degrees, noisy but separable.
  const random = new Random(4);
  const points = (n: number) => {
    const x: number[] = [];
    const y: number[] = [];
    for (let i = 0; i < n; i++) {
      const k = i % 3;
      const angle = (2 * Math.PI * k) / 3 + 0.6 * (random.next() - 0.5);
      const radius = 0.5 + random.next();
      x.push(radius * Math.cos(angle), radius * Math.sin(angle));
      y.push(k);
    }
    return { x, y };
  };
  const train = points(30);
  const held = points(60);
  const [early, late] = fitLogistic(train.x, train.y, {
    classes: 3,
    l2: 0.001,
    lr: 0.1,
    checkpoints: [1, 200],
  });
  for (const set of [train, held]) {
    assert.deepEqual([...predictLogistic(late!, set.x)], set.y);
  }
  // The fit went on after the first checkpoint; the bias is free of the penalty but stays small.
  assert.notDeepEqual(early!.weight, late!.weight);
  assert.ok(late!.bias.every((b) => Math.abs(b) < 1));
  // Embeddings are L2-normalised first: only directions matter.
  const normal = l2Normalize([3, 4, 0, 0, -2, 0], 2);
  assertClose(normal, [0.6, 0.8, 0, 0, -1, 0], { rtol: 1e-12, atol: 0, label: "normalised" });
  // On embedded episodes (2-way, 2 shots, 2 queries, F = 2), the classes separate by direction.
  const episode = {
    features: 2,
    support: Float32Array.from([1, 0.1, 2, -0.1, 0.1, 1, -0.1, 3]),
    query: Float32Array.from([5, 0.2, 0.3, 0.1, 0.2, 4, 0, 0.5]),
  };
  assert.deepEqual(
    linearAccuracies([episode], { ways: 2, lr: 0.1, l2: 0.01, checkpoints: [50] }),
    [[1]],
  );
  const chosen = chooseLinear([episode], { ways: 2, lrs: [0.1], l2s: [0.01, 1], steps: [5, 50] });
  assert.equal(chosen.validationAccuracy, 1);
});

Deno.test("episodes side by side are cut to what one storage binding holds, and said", () => {
  // Only the limit is read: an adapter with WebGPU's default 128 MiB storage binding.
  const gpu = { limits: { maxStorageBufferBindingSize: 2 ** 27 } } as unknown as Gpu;
  const spec = makeTarget("conv4", { inputShape: [1, 28, 28], width: 64, outputs: 5 });
  const options = { ways: 5, shots: [1, 5], queries: 15 };
  // 75 query images x 64 x 28 x 28 floats = 15,052,800 bytes an episode: 8 fit in 134,217,728.
  const said: string[] = [];
  assert.equal(fittedChunk(gpu, spec, { ...options, chunk: 20, say: (t) => said.push(t) }), 8);
  assert.deepEqual(said, [
    "8 episodes side by side instead of 20: 9 would need more than this adapter's largest " +
    "storage binding of 128.0 MiB in one buffer",
  ]);
  assert.equal(fittedChunk(gpu, spec, { ...options, chunk: 8, say: (t) => said.push(t) }), 8);
  assert.equal(said.length, 1);
  // 20 shots: the support batch (100 images) is the larger one.
  assert.equal(fittedChunk(gpu, spec, { ...options, shots: [20], chunk: 20 }), 6);
  assert.throws(
    () => fittedChunk(gpu, spec, { ...options, queries: 200, chunk: 20 }),
    /^RangeError: one episode's 1000 images need 191\.4 MiB .* lower --queries, --shots or --width$/,
  );
  assert.throws(
    () => fittedChunk(gpu, spec, { ...options, chunk: 0 }),
    /--chunk must be a whole number/,
  );
});

Deno.test("experiment fewshot times new kernel shapes before it runs them, as training does", async () => {
  const gpu = await getGpu();
  const out = await Deno.makeTempDir({ prefix: "supernet-fewshot-tune-" });
  const before = tuneSettings(gpu);
  const cache = join(out, "tune.json");
  configureTuning(gpu, { mode: "auto", path: cache });
  try {
    await runFewShot(gpu, {
      ...FEWSHOT_DEFAULTS,
      dataset: "mnist",
      ways: 2,
      shots: [1],
      queries: 2,
      episodes: 2,
      profile: "smoke",
      steps: 2,
      width: 4,
      trainings: ["meta"],
      methods: ["z"],
      out: join(out, "run"),
    });
    assert.equal(pendingTuneCount(gpu), 0);
    const timed = Object.keys(
      Object.values(JSON.parse(await Deno.readTextFile(cache)).adapters)[0] as object,
    );
    // conv4's 3x3 convolutions of meta-training (2 episodes of 2 ways x (1 + 2) images) and of
    // the z adaptation, each pass.
    for (const pass of ["forward", "backward_input", "backward_weight"]) {
      assert.ok(
        timed.some((k) => k.startsWith(`conv2d.${pass}: `) && k.includes(" k3 s1 p1")),
        `${pass} in ${timed.join("; ")}`,
      );
    }
  } finally {
    configureTuning(gpu, before);
    await Deno.remove(out, { recursive: true });
  }
});
