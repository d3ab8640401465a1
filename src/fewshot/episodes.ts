/**
 * N-way K-shot episodes: N classes, K support images per class to learn from and Q query images
 * per class to score, drawn from a pool of every image of each class (a dataset's training and
 * test images together: the class split, not the image split, keeps test classes unseen). An
 * episode's label of an image is its class's position 0..N-1 in the episode.
 *
 * @module
 */
import type { Dataset, Split } from "../data/split.ts";
import { BatchAssembler, type ImageStore } from "../data/sampler.ts";
import type { BatchSource } from "../engine.ts";
import type { Gpu } from "../gpu/device.ts";
import type { Dispatch } from "../gpu/kernel.ts";
import { type Tensor, tensorFrom, write } from "../gpu/tensor.ts";
import type { Random } from "../random.ts";

/** Every image of a dataset, with the images of each class. */
export interface ClassPool {
  /** Training images, then test images. */
  split: Split;
  /** Image indices into `split` of each class. */
  byClass: number[][];
}

/** The training and test images of `dataset` in one split, indexed by class. */
export function classPool(dataset: Pick<Dataset, "train" | "test" | "classNames">): ClassPool {
  const { train, test } = dataset;
  const images = new Uint8Array(train.images.length + test.images.length);
  images.set(train.images);
  images.set(test.images, train.images.length);
  const labels = new Uint16Array(train.count + test.count);
  labels.set(train.labels);
  labels.set(test.labels, train.count);
  const byClass: number[][] = dataset.classNames.map(() => []);
  labels.forEach((c, i) => byClass[c]!.push(i));
  return { split: { images, labels, count: labels.length }, byClass };
}

/** One episode: its classes and the pool indices of its support and query images. */
export interface Episode {
  /** Class of each label 0..N-1. */
  classes: number[];
  /** Support images, class-major: label i's K images at i*K ..; [N * K]. */
  support: Uint32Array<ArrayBuffer>;
  /** Query images, class-major; [N * Q]. */
  query: Uint32Array<ArrayBuffer>;
}

/** Sizes of an episode. */
export interface EpisodeShape {
  /** N: classes per episode. */
  ways: number;
  /** K: support images per class. */
  shots: number;
  /** Q: query images per class. */
  queries: number;
}

/**
 * Draws an episode: N distinct classes of `classes` in random order, then K + Q distinct images
 * of each (see {@link drawEpisode}).
 */
export function sampleEpisode(
  pool: ClassPool,
  options: EpisodeShape & { classes: readonly number[]; random: Random },
): Episode {
  const { ways, random } = options;
  if (options.classes.length < ways) {
    throw new RangeError(
      `${ways}-way episodes need ${ways} classes, the split has ${options.classes.length}; ` +
        `use --ways ${options.classes.length} or fewer`,
    );
  }
  const chosen = [...options.classes];
  random.shuffle(chosen);
  return drawEpisode(pool, { ...options, classes: chosen.slice(0, ways) });
}

/**
 * Draws K + Q distinct images of each of `classes`, which keep their order (label i is
 * `classes[i]`). A class with fewer than K + Q images is an error naming the sizes to use.
 */
export function drawEpisode(
  pool: ClassPool,
  options: Omit<EpisodeShape, "ways"> & { classes: readonly number[]; random: Random },
): Episode {
  const { shots, queries, random } = options;
  const classes = [...options.classes];
  const support = new Uint32Array(classes.length * shots);
  const query = new Uint32Array(classes.length * queries);
  classes.forEach((c, i) => {
    const images = [...pool.byClass[c]!];
    if (images.length < shots + queries) {
      throw new RangeError(
        `Class ${c} has ${images.length} images, fewer than ${shots} shots + ${queries} queries; ` +
          `use fewer --queries`,
      );
    }
    random.shuffle(images);
    support.set(images.slice(0, shots), i * shots);
    query.set(images.slice(shots, shots + queries), i * queries);
  });
  return { classes, support, query };
}

/** Labels 0..N-1, each repeated `per` times, class-major: [N * per]. */
export function episodeLabels(ways: number, per: number): Float32Array<ArrayBuffer> {
  return Float32Array.from({ length: ways * per }, (_, k) => Math.floor(k / per));
}

/**
 * The support or query images of T episodes as one batch [T, B, C, H, W] with labels [T, B]
 * (B = N * K or N * Q). Slot t's task index is `rows[t]` (default t), the row of the z table the
 * slot reads. Fewer episodes than T fill the remaining slots with the last one (callers ignore
 * them).
 */
export class EpisodeBatch implements BatchSource {
  readonly #gpu: Gpu;
  readonly #assembler: BatchAssembler;
  readonly #labels: Float32Array<ArrayBuffer>;
  readonly #tasks: Uint32Array<ArrayBuffer>;
  readonly #images: Uint32Array<ArrayBuffer>;
  /** Images [T, B, C, H, W]. */
  readonly x: Tensor;
  /** Labels [T, B]. */
  readonly y: Tensor;
  /** Z-table rows [T] (u32). */
  readonly taskIndices: Tensor;

  /** Prepares a batch of T slots x (N x `per`) images of `store`. */
  constructor(
    gpu: Gpu,
    dataset: Pick<Dataset, "mean" | "std">,
    options: { store: ImageStore; tasks: number; ways: number; per: number },
  ) {
    const { tasks, ways, per } = options;
    const batch = ways * per;
    this.#gpu = gpu;
    this.#assembler = new BatchAssembler(gpu, options.store, {
      tasks,
      batch,
      mean: dataset.mean,
      std: dataset.std,
    });
    const one = episodeLabels(ways, per);
    this.#labels = new Float32Array(tasks * batch);
    for (let t = 0; t < tasks; t++) this.#labels.set(one, t * batch);
    this.#tasks = Uint32Array.from({ length: tasks }, (_, t) => t);
    this.#images = new Uint32Array(tasks * batch);
    this.x = this.#assembler.x;
    this.y = this.#assembler.y;
    this.taskIndices = tensorFrom(gpu, [tasks], this.#tasks);
  }

  /**
   * Writes the `part` images of `episodes` (at most T) into the batch; `rows` (one per episode)
   * sets the z-table rows the slots read (default: slot t reads row t).
   */
  set(episodes: readonly Episode[], part: "support" | "query", rows?: readonly number[]): void {
    const T = this.#tasks.length;
    if (episodes.length === 0 || episodes.length > T) {
      throw new RangeError(`Expected 1 to ${T} episodes, got ${episodes.length}`);
    }
    const batch = this.#images.length / T;
    for (let t = 0; t < T; t++) {
      const images = episodes[Math.min(t, episodes.length - 1)]![part];
      if (images.length !== batch) {
        throw new RangeError(`Expected ${batch} ${part} images per episode, got ${images.length}`);
      }
      this.#images.set(images, t * batch);
    }
    if (rows) {
      if (rows.length !== episodes.length) {
        throw new RangeError(
          `Expected one z row per episode (${episodes.length}), got ${rows.length}`,
        );
      }
      for (let t = 0; t < T; t++) this.#tasks[t] = rows[Math.min(t, rows.length - 1)]!;
      write(this.#gpu, this.taskIndices, this.#tasks);
    }
    this.#assembler.write({ tasks: this.#tasks, images: this.#images, labels: this.#labels }, 0);
  }

  /** The dispatches that assemble the batch written last. */
  next(): Dispatch[] {
    return this.#assembler.dispatches;
  }

  /** Frees the batch tensors (not the store). */
  destroy(): void {
    this.#assembler.destroy();
    this.taskIndices.destroy();
  }
}
