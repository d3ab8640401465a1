/**
 * Exports reproduce our numbers elsewhere: a trained run's task network, exported as ONNX, run by
 * an independent runtime (onnxruntime-web, wasm) gives our logits within 1e-4 on real test
 * pictures; exported as safetensors + JSON and rebuilt in PyTorch from the JSON alone
 * (tests/interop/torch_check.py) it gives our logits and our accuracy. Pictures go through PNG
 * files and our reader, as a user's would. MNIST always; CIFAR-10 when ../shared/data has it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { encode as encodePng } from "fast-png";
import * as ort from "onnxruntime-web";
import { loadDataset } from "../src/data/dataset.ts";
import type { Dataset } from "../src/data/split.ts";
import { exportFromRun } from "../src/evaluate.ts";
import type { ExportedArchitecture } from "../src/export/mod.ts";
import { readImages } from "../src/images.ts";
import { predict, taskLogits } from "../src/predict.ts";
import { chooseTask, loadRun, runStatistics } from "../src/run.ts";
import { train, TRAIN_DEFAULTS } from "../src/train.ts";
import { assertClose, getGpu } from "./util.ts";

const gpu = await getGpu();
ort.env.wasm.numThreads = 1;

const torchCheck = new URL("./interop/torch_check.py", import.meta.url).pathname;
/** A python3 that has torch: $SUPERNET_PYTHON, else the first of PATH's and Debian's. */
async function findPython(): Promise<string | undefined> {
  const env = Deno.env.get("SUPERNET_PYTHON");
  for (const candidate of env ? [env] : ["python3", "/usr/bin/python3"]) {
    const ok = await new Deno.Command(candidate, {
      args: ["-c", "import torch, numpy"],
      stdout: "null",
      stderr: "null",
    }).output().then((o) => o.success, () => false);
    if (ok) return candidate;
  }
  return undefined;
}
const python = await findPython();
const haveTorch = python !== undefined;
const cifarDir = decodeURIComponent(new URL("../../shared/data/", import.meta.url).pathname);
const haveCifar10 = await Deno.stat(join(cifarDir, "cifar-10-batches-bin")).then(
  (s) => s.isDirectory,
  () => false,
);

/** The first `perClass` test images of classes a and b, in test order, with labels 0 / 1. */
function testImages(dataset: Dataset, a: number, b: number, perClass: number) {
  const [c, h, w] = dataset.shape;
  const size = c * h * w;
  const picked: number[] = [];
  const counts = new Map([[a, 0], [b, 0]]);
  for (let i = 0; i < dataset.test.count; i++) {
    const label = dataset.test.labels[i]!;
    const seen = counts.get(label);
    if (seen === undefined || seen >= perClass) continue;
    counts.set(label, seen + 1);
    picked.push(i);
  }
  const images = new Uint8Array(picked.length * size);
  picked.forEach((i, k) =>
    images.set(dataset.test.images.subarray(i * size, (i + 1) * size), k * size)
  );
  const labels = Uint8Array.from(picked, (i) => (dataset.test.labels[i] === b ? 1 : 0));
  return { images, labels, shape: dataset.shape };
}

/** Writes images [N, C, H, W] as PNG files (grey or RGB) and returns their paths. */
async function writePngs(dir: string, images: Uint8Array, shape: readonly number[]) {
  const [c, h, w] = shape as [number, number, number];
  const plane = h * w;
  const files: string[] = [];
  for (let k = 0; k < images.length / (c * plane); k++) {
    const pixels = new Uint8Array(c * plane);
    for (let p = 0; p < plane; p++) {
      for (let ch = 0; ch < c; ch++) pixels[p * c + ch] = images[k * c * plane + ch * plane + p]!;
    }
    const file = join(dir, `${String(k).padStart(3, "0")}.png`);
    await Deno.writeFile(
      file,
      encodePng({ width: w, height: h, data: pixels, channels: c, depth: 8 }),
    );
    files.push(file);
  }
  return files;
}

function accuracy(logits: ArrayLike<number>, labels: Uint8Array): number {
  let correct = 0;
  for (let i = 0; i < labels.length; i++) correct += (logits[i]! > 0 ? 1 : 0) === labels[i] ? 1 : 0;
  return correct / labels.length;
}

/**
 * Trains a tiny run, exports task 0 in both formats, and checks ONNX (and PyTorch when
 * `torch`) against our logits on 80 test pictures of task 0's classes.
 */
async function checkRun(
  dataset: "mnist" | "cifar10",
  options: { dataDir?: string; torch: boolean },
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: `interop_${dataset}_` });
  try {
    const run = join(dir, "run");
    await train(gpu, {
      ...TRAIN_DEFAULTS,
      dataset,
      dataDir: options.dataDir,
      verify: false,
      steps: 30,
      tasksPerStep: 4,
      batch: 16,
      evalEvery: 0,
      evalTasks: 1,
      lr: 0.003,
      out: run,
    });
    const data = await loadDataset(dataset, { dataDir: options.dataDir, verify: false });
    // Task 0 of one_vs_anchor: class 0 (label 0) vs the last class (label 1).
    const { images, labels, shape } = testImages(data, 0, data.classNames.length - 1, 40);
    const files = await writePngs(await Deno.makeTempDir({ dir }), images, shape);
    const read = await readImages(files, { shape });
    assert.deepEqual(read.images, images, "PNG round trip at the input size is exact");

    // Our logits, on the GPU, as `predict` computes them.
    const { net, state, table, options: trained } = await loadRun(gpu, run);
    let ours: Float32Array;
    try {
      const chosen = await chooseTask(state, table, { task: "0" });
      const stats = await runStatistics(state, trained, {});
      assert.deepEqual(stats, { mean: data.mean, std: data.std }, "the run records its statistics");
      ours = await taskLogits(gpu, net, chosen.z, { images, ...stats, batch: 32 });
    } finally {
      net.destroy();
    }
    const predicted = await predict(gpu, {
      run,
      task: "0",
      paths: files,
      fit: "crop",
      strict: true,
      batch: 64,
    });
    assertClose(predicted.predictions.map((p) => p.logit), ours, {
      rtol: 0,
      atol: 0,
      label: "predict",
    });
    const ourAccuracy = accuracy(ours, labels);
    if (dataset === "mnist") assert.ok(ourAccuracy > 0.7, `the tiny run learned: ${ourAccuracy}`);

    // ONNX through onnxruntime: raw [0, 1] pictures in, normalisation inside the model.
    const onnx = await exportFromRun(gpu, {
      run,
      task: "0",
      out: join(dir, "export"),
      format: "onnx",
    });
    const description: ExportedArchitecture = JSON.parse(
      await Deno.readTextFile(onnx.architecture),
    );
    assert.deepEqual(description.classNames, [data.classNames[0], data.classNames.at(-1)]);
    assert.deepEqual(description.preprocessing!.mean, data.mean);
    assert.deepEqual(description.preprocessing!.std, data.std);
    assert.equal(description.source!.run, run);
    assert.equal(description.source!.step, 30);
    const session = await ort.InferenceSession.create(await Deno.readFile(onnx.onnx!));
    const x = Float32Array.from(images, (v) => v / 255);
    const out = await session.run({
      image: new ort.Tensor("float32", x, [labels.length, ...shape]),
    });
    const theirs = out.logit!.data as Float32Array;
    assertClose(theirs, ours, { rtol: 0, atol: 1e-4, label: "onnxruntime logits" });
    assert.equal(accuracy(theirs, labels), ourAccuracy);
    assertClose(out.probability!.data as Float32Array, theirs.map((l) => 1 / (1 + Math.exp(-l))), {
      rtol: 0,
      atol: 1e-6,
      label: "probability",
    });
    await session.release();

    // PyTorch, from the JSON description and the safetensors weights only.
    if (!options.torch) return;
    const st = await exportFromRun(gpu, { run, task: "0", out: join(dir, "export") });
    const both: ExportedArchitecture = JSON.parse(await Deno.readTextFile(st.architecture));
    assert.equal(both.onnxFile, description.onnxFile, "the JSON keeps naming the ONNX file");
    await Deno.writeFile(join(dir, "images.f32"), new Uint8Array(x.buffer));
    await Deno.writeFile(join(dir, "labels.u8"), labels);
    const result = await new Deno.Command(python!, {
      args: [torchCheck, st.architecture, join(dir, "images.f32"), join(dir, "labels.u8")],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(result.success, new TextDecoder().decode(result.stderr));
    const torch = JSON.parse(new TextDecoder().decode(result.stdout));
    assertClose(torch.logits, ours, { rtol: 0, atol: 1e-4, label: "PyTorch logits" });
    assert.equal(torch.accuracy, ourAccuracy, "PyTorch reproduces our accuracy");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("MNIST: ONNX in onnxruntime reproduces our logits on 80 test pictures", async () => {
  await checkRun("mnist", { torch: false });
});

Deno.test({
  name: "MNIST: PyTorch built from the exported JSON reproduces our logits and accuracy" +
    (haveTorch ? "" : " (skipped: python3 with torch is absent; CI installs python3-torch)"),
  ignore: !haveTorch,
  fn: () => checkRun("mnist", { torch: true }),
});

Deno.test({
  name: "CIFAR-10: ONNX and PyTorch reproduce our logits and accuracy on RGB pictures" +
    (haveCifar10 ? "" : " (skipped: ../shared/data/cifar-10-batches-bin is absent)"),
  ignore: !haveCifar10,
  fn: () => checkRun("cifar10", { dataDir: cifarDir, torch: haveTorch }),
});
