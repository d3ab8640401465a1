/**
 * Images assembled per second by the sampler: one training step of T = 8 tasks x B = 64
 * CIFAR-shaped images (512 images, 6.3 MB of f32), choice on the CPU plus the kernel, with and
 * without augmentation. images/s = 512 / (time per iteration).
 *
 * @module
 */
import { run, sync } from "../src/gpu/kernel.ts";
import { channelStats, type Dataset } from "../src/data/split.ts";
import { makeFamily } from "../src/data/tasks.ts";
import { Sampler } from "../src/data/sampler.ts";
import { getGpu, rng } from "./util.ts";

const gpu = await getGpu();
const shape: [number, number, number] = [3, 32, 32];
const count = 5000;
const random = rng(1);
const images = Uint8Array.from({ length: count * 3072 }, () => Math.floor(random() * 256));
const labels = Uint8Array.from({ length: count }, (_, i) => i % 10);
const dataset: Dataset = {
  name: "bench",
  shape,
  classNames: Array.from({ length: 10 }, (_, c) => `c${c}`),
  train: { images, labels, count },
  test: { images, labels, count },
  ...channelStats(images, shape),
  source: "random pixels",
};
const family = makeFamily("all_pairs", dataset.classNames);

for (const augment of [undefined, { pad: 4, flip: true }]) {
  const sampler = new Sampler(gpu, dataset, {
    family,
    tasksPerStep: 8,
    batch: 64,
    seed: 1,
    balanced: true,
    augment,
  });
  let step = 0;
  Deno.bench(`sampler step, 512 images [8, 64, 3, 32, 32]${augment ? ", crop + flip" : ""}`, {
    group: "sampler",
  }, async () => {
    run(gpu, sampler.next(step++));
    await sync(gpu);
  });
  if (augment) {
    Deno.bench("sampler choice only (CPU), 8 x 64, balanced", () => {
      sampler.choose(step++);
    });
  }
}
