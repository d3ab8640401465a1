/**
 * The GPU sampler: a split's images are uploaded once; each step the CPU chooses tasks and
 * images with a seeded generator and writes their indices and labels into preallocated
 * tensors, and one kernel (shaders/sampler.wgsl) assembles the normalised, optionally
 * augmented input batch x [T, B, C, H, W]. Also the few-shot subsets and the fixed full-pass
 * batches used for evaluation and adaptation.
 *
 * @module
 */
import type { Gpu } from "../gpu/device.ts";
import { type Dispatch, grid, pipeline, prepare, Uniform } from "../gpu/kernel.ts";
import { createTensor, type Tensor, tensorFrom } from "../gpu/tensor.ts";
import { mixSeed, Random } from "../random.ts";
import type { Dataset, Split } from "./split.ts";
import { type Examples, splitReserve, type Task, taskExamples, type TaskFamily } from "./tasks.ts";

/** Bindings the kernel has for image chunks. */
export const MAX_CHUNKS = 4;

/** Random crop and flip, decided per sample from a hash of (seed, step, t, b). */
export interface Augment {
  /** Crop padding in pixels: the image is padded with black by `pad` and cropped back. */
  pad: number;
  /** Flip horizontally with probability 1/2. */
  flip: boolean;
  /**
   * Key each sample's draw by its image index instead of its slot position, so that a slot's
   * crops and flips are the same whatever slots run beside it (adaptation); default false.
   */
  byImage?: boolean;
}

/**
 * A split's images on the GPU: bytes packed 4 per u32, each image padded to whole words, in up
 * to {@link MAX_CHUNKS} buffers of whole images that each fit one storage binding.
 */
export class ImageStore {
  /** The chunk buffers as u32 tensors; image i is in chunk floor(i / perChunk). */
  readonly chunks: Tensor[];
  /** Images per chunk. */
  readonly perChunk: number;
  /** u32 words per image. */
  readonly words: number;
  /** Number of images. */
  readonly count: number;
  /** Image shape [C, H, W]. */
  readonly shape: readonly [number, number, number];

  /**
   * Uploads `split`. `chunkBytes` (default: the device's largest storage binding) caps each
   * chunk; a dataset that needs more than {@link MAX_CHUNKS} chunks is a RangeError.
   */
  constructor(
    gpu: Gpu,
    split: Split,
    options: { shape: readonly [number, number, number]; chunkBytes?: number },
  ) {
    const [channels, height, width] = options.shape;
    const bytes = channels * height * width;
    if (split.images.length !== split.count * bytes) {
      throw new RangeError(
        `Expected ${split.count} images of [${options.shape}] (${split.count * bytes} bytes), ` +
          `got ${split.images.length} bytes`,
      );
    }
    this.shape = [channels, height, width];
    this.count = split.count;
    this.words = Math.ceil(bytes / 4);
    const limit = options.chunkBytes ??
      Math.min(gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize);
    this.perChunk = Math.min(Math.max(1, this.count), Math.floor(limit / (this.words * 4)));
    if (this.perChunk < 1) {
      throw new RangeError(`One image of ${this.words * 4} bytes exceeds a binding of ${limit}`);
    }
    const chunkCount = Math.max(1, Math.ceil(this.count / this.perChunk));
    if (chunkCount > MAX_CHUNKS) {
      throw new RangeError(
        `${this.count} images of ${this.words * 4} bytes need ${chunkCount} bindings of at most ` +
          `${limit} bytes; the sampler supports ${MAX_CHUNKS}`,
      );
    }
    this.chunks = [];
    for (let k = 0; k < chunkCount; k++) {
      const first = k * this.perChunk;
      const n = Math.min(this.perChunk, this.count - first);
      const tensor = createTensor(gpu, [Math.max(1, n) * this.words], "u32");
      this.chunks.push(tensor);
      if (n === 0) continue;
      let packed: Uint8Array;
      if (bytes % 4 === 0) {
        packed = split.images.subarray(first * bytes, (first + n) * bytes);
      } else {
        packed = new Uint8Array(n * this.words * 4);
        for (let i = 0; i < n; i++) {
          const from = (first + i) * bytes;
          packed.set(split.images.subarray(from, from + bytes), i * this.words * 4);
        }
      }
      gpu.device.queue.writeBuffer(
        tensor.buffer,
        tensor.byteOffset,
        packed.buffer as ArrayBuffer,
        packed.byteOffset,
        packed.length,
      );
    }
  }

  /** Frees the chunk buffers. */
  destroy(): void {
    for (const chunk of this.chunks) chunk.destroy();
  }
}

/** What the assembler writes for one step, on the CPU side. */
export interface Choice {
  /** Task index (into the family's tasks) of each slot t, [T]. */
  tasks: Uint32Array<ArrayBuffer>;
  /** Image index into the store of each sample, [T, B]. */
  images: Uint32Array<ArrayBuffer>;
  /** Binary label of each sample, [T, B] (-1 marks padding in fixed batches). */
  labels: Float32Array<ArrayBuffer>;
}

/**
 * The preallocated GPU side of a batch of T tasks x B images: index, label and task tensors,
 * the assembled x, and the prepared dispatch of shaders/sampler.wgsl.
 */
export class BatchAssembler {
  /** Assembled images [T, B, C, H, W], normalised. */
  readonly x: Tensor;
  /** Labels [T, B]: 1 positive, 0 negative, -1 padding. */
  readonly y: Tensor;
  /** Task indices [T] (u32). */
  readonly taskIndices: Tensor;
  /** Image indices [T, B] (u32) the kernel reads. */
  readonly imageIndices: Tensor;
  /** The one dispatch that assembles x; the same array every step. */
  readonly dispatches: Dispatch[];
  readonly #gpu: Gpu;
  readonly #norm: Tensor;
  readonly #uniform: Uniform;
  readonly #params: number[];

  /**
   * Prepares the batch for `store`'s images; `mean`/`std` are per channel on [0, 1]; `seed`
   * and `augment` drive the per-sample crop and flip (none by default).
   */
  constructor(
    gpu: Gpu,
    store: ImageStore,
    options: {
      tasks: number;
      batch: number;
      mean: readonly number[];
      std: readonly number[];
      seed?: number;
      augment?: Augment;
    },
  ) {
    const { tasks, batch, mean, std } = options;
    const [channels, height, width] = store.shape;
    if (!(tasks >= 1 && batch >= 1 && Number.isInteger(tasks) && Number.isInteger(batch))) {
      throw new RangeError(
        `Expected tasks and batch to be positive integers, got ${tasks}, ${batch}`,
      );
    }
    if (mean.length !== channels || std.length !== channels || std.some((s) => !(s > 0))) {
      throw new RangeError(
        `Expected ${channels} means and ${channels} positive stds, got [${mean}] and [${std}]`,
      );
    }
    const pad = options.augment?.pad ?? 0;
    if (!Number.isInteger(pad) || pad < 0) {
      throw new RangeError(`Expected augment.pad to be a non-negative integer, got ${pad}`);
    }
    this.#gpu = gpu;
    this.x = createTensor(gpu, [tasks, batch, channels, height, width]);
    this.y = createTensor(gpu, [tasks, batch]);
    this.taskIndices = createTensor(gpu, [tasks], "u32");
    this.imageIndices = createTensor(gpu, [tasks, batch], "u32");
    this.#norm = tensorFrom(gpu, [2 * channels], new Float32Array([...mean, ...std]));
    const n = this.x.size;
    this.#params = [
      n,
      batch,
      channels,
      height,
      width,
      store.perChunk,
      store.words,
      (options.seed ?? 0) >>> 0,
      0,
      pad,
      options.augment?.flip ? 1 : 0,
      options.augment?.byImage ? 1 : 0,
    ];
    this.#uniform = new Uniform(gpu, this.#params.map((v) => ["u32", v]));
    const chunks = Array.from(
      { length: MAX_CHUNKS },
      (_, k) => store.chunks[k] ?? store.chunks[0]!,
    );
    this.dispatches = [
      prepare(
        gpu,
        pipeline(gpu, "sampler"),
        [...chunks, this.imageIndices, this.#norm, this.x],
        grid(Math.ceil(n / 256)),
        this.#uniform,
      ),
    ];
  }

  /** Writes one step's choice into the GPU tensors (writeBuffer only, no allocation). */
  write(choice: Choice, step: number): void {
    if (
      choice.images.length !== this.imageIndices.size || choice.labels.length !== this.y.size ||
      choice.tasks.length !== this.taskIndices.size
    ) {
      throw new RangeError(
        `Expected ${this.taskIndices.size} tasks and ${this.y.size} images and labels, got ` +
          `${choice.tasks.length}, ${choice.images.length} and ${choice.labels.length}`,
      );
    }
    const queue = this.#gpu.device.queue;
    queue.writeBuffer(this.imageIndices.buffer, this.imageIndices.byteOffset, choice.images);
    queue.writeBuffer(this.y.buffer, this.y.byteOffset, choice.labels);
    queue.writeBuffer(this.taskIndices.buffer, this.taskIndices.byteOffset, choice.tasks);
    this.#params[8] = step >>> 0;
    this.#uniform.set(this.#params);
  }

  /** Frees every buffer this assembler created. */
  destroy(): void {
    for (const t of [this.x, this.y, this.taskIndices, this.imageIndices, this.#norm]) t.destroy();
    this.#uniform.destroy();
  }
}

/** How the sampler draws a training step. */
export interface SamplerOptions {
  /** The task family; tasks are referred to by their index in `family.tasks`. */
  family: TaskFamily;
  /** Tasks to draw from (default `family.train`). */
  trainTasks?: readonly number[];
  /** T: tasks per step, drawn without replacement. */
  tasksPerStep: number;
  /** B: images per task and step. */
  batch: number;
  /** Seed of the task, image and augmentation choices. */
  seed: number;
  /** Half the batch negative, half positive (even slots b negative, odd positive). */
  balanced?: boolean;
  /** Random crop and flip (none by default). */
  augment?: Augment;
  /** Images already uploaded (the training split); not destroyed by the sampler. */
  store?: ImageStore;
  /** Largest chunk of uploaded images in bytes (tests use small ones). */
  chunkBytes?: number;
  /** Fraction of the training images never drawn: the run's reserve (see `isReserved`). */
  reserve?: number;
}

/** A set of images drawn from without replacement, in rounds when a batch needs more. */
interface Pool {
  items: Uint32Array;
  labels: Float32Array;
  stamps: Uint32Array;
  stamp: number;
  taken: number;
}

function makePool(indices: Uint32Array, labels: Float32Array): Pool {
  return { items: indices, labels, stamps: new Uint32Array(indices.length), stamp: 0, taken: 0 };
}

/** The pools of one task's examples: one, or with `balanced` a negative and a positive one. */
function taskPools(examples: Examples, task: Task, balanced: boolean | undefined): Pool[] {
  if (!balanced) return [nonEmpty(makePool(examples.indices, examples.labels), task, "")];
  return [0, 1].map((side) => {
    const keep = examples.labels.map((l) => l === side ? 1 : 0);
    const indices = examples.indices.filter((_, k) => keep[k] === 1);
    const labels = new Float32Array(indices.length).fill(side);
    return nonEmpty(makePool(indices, labels), task, side ? "positive " : "negative ");
  });
}

/**
 * Draws one item of `pool` not yet taken in its current round; a round ends when every item was
 * taken, and a new one begins (a fresh stamp marks the items taken in it).
 */
function drawFrom(pool: Pool, random: Random): number {
  const size = pool.items.length;
  if (pool.taken % size === 0) pool.stamp = (pool.stamp + 1) >>> 0 || 1;
  for (;;) {
    const k = random.below(size);
    if (pool.stamps[k] !== pool.stamp) {
      pool.stamps[k] = pool.stamp;
      pool.taken++;
      return k;
    }
  }
}

/** Fills B slots of a batch from a task's pools (alternating sides when balanced). */
function drawBatch(
  pools: Pool[],
  random: Random,
  out: { images: Uint32Array; labels: Float32Array; from: number; batch: number },
): void {
  for (const pool of pools) pool.taken = 0;
  for (let b = 0; b < out.batch; b++) {
    const pool = pools[pools.length === 2 ? b & 1 : 0]!;
    const k = drawFrom(pool, random);
    out.images[out.from + b] = pool.items[k]!;
    out.labels[out.from + b] = pool.labels[k]!;
  }
}

/**
 * Draws training steps. Step `s` is a pure function of (seed, s): T distinct tasks from the
 * training tasks, then for each B images of that task's classes, distinct within the batch
 * while the task has enough (after that, a new round without replacement begins). With
 * `balanced`, even slots draw from the negative and odd slots from the positive images.
 */
export class Sampler {
  /** Assembled images [T, B, C, H, W]. */
  readonly x: Tensor;
  /** Labels [T, B] (0 or 1). */
  readonly y: Tensor;
  /** Task indices [T] (u32), into the family's tasks. */
  readonly taskIndices: Tensor;
  /** The last step's choice on the CPU (overwritten by each `next`). */
  readonly chosen: Choice;
  readonly #assembler: BatchAssembler;
  readonly #store: ImageStore;
  readonly #ownsStore: boolean;
  readonly #train: Uint32Array;
  readonly #scratch: Uint32Array;
  readonly #pools: Pool[][];
  readonly #random = new Random();
  readonly #seed: number;
  readonly #batch: number;

  /** Uploads the training images (unless `options.store` is given) and prepares the kernel. */
  constructor(gpu: Gpu, dataset: Dataset, options: SamplerOptions) {
    const { family, tasksPerStep, batch } = options;
    const train = options.trainTasks ?? family.train;
    if (!(Number.isInteger(tasksPerStep) && tasksPerStep >= 1 && tasksPerStep <= train.length)) {
      throw new RangeError(
        `Expected tasksPerStep in 1..${train.length} (the training tasks), got ${tasksPerStep}`,
      );
    }
    for (const t of train) {
      if (!(Number.isInteger(t) && t >= 0 && t < family.tasks.length)) {
        throw new RangeError(`Training task ${t} is not in 0..${family.tasks.length - 1}`);
      }
    }
    this.#train = Uint32Array.from(train);
    this.#scratch = new Uint32Array(train.length);
    this.#seed = options.seed >>> 0;
    this.#batch = batch;
    this.#pools = train.map((t) => {
      const task = family.tasks[t]!;
      const all = taskExamples(task, dataset.train);
      const kept = options.reserve ? splitReserve(all, options.reserve).kept : all;
      return taskPools(kept, task, options.balanced);
    });
    this.#ownsStore = options.store === undefined;
    this.#store = options.store ??
      new ImageStore(gpu, dataset.train, { shape: dataset.shape, chunkBytes: options.chunkBytes });
    this.#assembler = new BatchAssembler(gpu, this.#store, {
      tasks: tasksPerStep,
      batch,
      mean: dataset.mean,
      std: dataset.std,
      seed: this.#seed,
      augment: options.augment,
    });
    this.x = this.#assembler.x;
    this.y = this.#assembler.y;
    this.taskIndices = this.#assembler.taskIndices;
    this.chosen = {
      tasks: new Uint32Array(tasksPerStep),
      images: new Uint32Array(tasksPerStep * batch),
      labels: new Float32Array(tasksPerStep * batch),
    };
  }

  /** Chooses step `step` on the CPU into `chosen`, without touching the GPU. */
  choose(step: number): void {
    const random = this.#random;
    random.reset(mixSeed(this.#seed, step));
    const { tasks, images, labels } = this.chosen;
    const scratch = this.#scratch;
    for (let i = 0; i < scratch.length; i++) scratch[i] = i;
    for (let t = 0; t < tasks.length; t++) {
      // Partial Fisher-Yates over positions in the training list: slot t takes a task not yet
      // taken this step.
      const j = t + random.below(scratch.length - t);
      const pick = scratch[j]!;
      scratch[j] = scratch[t]!;
      scratch[t] = pick;
      tasks[t] = this.#train[pick]!;
      drawBatch(this.#pools[pick]!, random, {
        images,
        labels,
        from: t * this.#batch,
        batch: this.#batch,
      });
    }
  }

  /**
   * Chooses step `step`, writes its indices and labels to the GPU, and returns the prepared
   * dispatches that assemble x (the same array every call). Call it right before encoding the
   * step: the next call overwrites the tensors.
   */
  next(step: number): Dispatch[] {
    this.choose(step);
    this.#assembler.write(this.chosen, step);
    return this.#assembler.dispatches;
  }

  /** Frees the GPU buffers (the image store only if the sampler created it). */
  destroy(): void {
    this.#assembler.destroy();
    if (this.#ownsStore) this.#store.destroy();
  }
}

/** One slot of a {@link SlotSampler}: a task, the examples it learns from, and its seed. */
export interface Slot {
  /** The task (its classes name the sides of the balanced draw). */
  task: Task;
  /** Training examples of the slot. */
  examples: Examples;
  /** Seed of the slot's draws. */
  seed: number;
}

/**
 * Adaptation batches for fixed slots: every step, slot t takes B images of its own examples
 * (balanced: even positions negative, odd positive) from a random stream reset to (slot seed,
 * step) alone, so a slot draws the same batches whatever other slots run beside it: adapting N
 * tasks in one program matches adapting each alone. Task indices are the slot numbers 0..T-1.
 */
export class SlotSampler {
  /** Assembled images [T, B, C, H, W]. */
  readonly x: Tensor;
  /** Labels [T, B] (0 or 1). */
  readonly y: Tensor;
  /** Slot indices [T] (u32): 0..T-1. */
  readonly taskIndices: Tensor;
  /** Image indices [T, B] (u32) of the step written last. */
  readonly imageIndices: Tensor;
  readonly #assembler: BatchAssembler;
  readonly #pools: Pool[][];
  readonly #seeds: number[];
  readonly #chosen: Choice;
  readonly #random = new Random();
  readonly #batch: number;

  /** Prepares the batches of `slots` over images already uploaded in `store`. */
  constructor(
    gpu: Gpu,
    dataset: Pick<Dataset, "mean" | "std">,
    options: {
      slots: readonly Slot[];
      batch: number;
      store: ImageStore;
      balanced?: boolean;
      /** Crop and flip, keyed by image (`byImage` is implied) so that slots stay independent. */
      augment?: Augment;
      /** Seed of the augmentation. */
      seed?: number;
    },
  ) {
    const { slots, batch } = options;
    if (slots.length === 0) throw new RangeError("SlotSampler needs at least one slot");
    this.#pools = slots.map((s) => taskPools(s.examples, s.task, options.balanced));
    this.#seeds = slots.map((s) => s.seed >>> 0);
    this.#batch = batch;
    this.#assembler = new BatchAssembler(gpu, options.store, {
      tasks: slots.length,
      batch,
      mean: dataset.mean,
      std: dataset.std,
      seed: options.seed,
      augment: options.augment ? { ...options.augment, byImage: true } : undefined,
    });
    this.x = this.#assembler.x;
    this.y = this.#assembler.y;
    this.taskIndices = this.#assembler.taskIndices;
    this.imageIndices = this.#assembler.imageIndices;
    this.#chosen = {
      tasks: Uint32Array.from(slots.keys()),
      images: new Uint32Array(slots.length * batch),
      labels: new Float32Array(slots.length * batch),
    };
  }

  /** Chooses step `step`, writes it, and returns the dispatches that assemble x. */
  next(step: number): Dispatch[] {
    const { images, labels } = this.#chosen;
    this.#pools.forEach((pools, t) => {
      this.#random.reset(mixSeed(this.#seeds[t]!, step));
      drawBatch(pools, this.#random, { images, labels, from: t * this.#batch, batch: this.#batch });
    });
    this.#assembler.write(this.#chosen, step);
    return this.#assembler.dispatches;
  }

  /** Frees the batch buffers (not the store). */
  destroy(): void {
    this.#assembler.destroy();
  }
}

function nonEmpty(pool: Pool, task: Task, side: string): Pool {
  if (pool.items.length === 0) {
    throw new RangeError(`Task '${task.name}' has no ${side}training images`);
  }
  return pool;
}

/**
 * A few-shot subset of a task: `shots` images of each of its classes from `split`, chosen with
 * a seeded shuffle of each class's images (so the subset for fewer shots is a prefix of the one
 * for more, at the same seed). Returned in ascending image order.
 */
export function fewShot(
  task: Task,
  split: Split,
  options: { shots: number; seed: number },
): Examples {
  const { shots, seed } = options;
  if (!(Number.isInteger(shots) && shots >= 1)) {
    throw new RangeError(`Expected shots to be a positive integer, got ${shots}`);
  }
  const all = taskExamples(task, split);
  const chosen: [number, number][] = [];
  const random = new Random();
  for (const c of [...task.negative, ...task.positive]) {
    const own: number[] = [];
    all.indices.forEach((i, k) => {
      if (split.labels[i] === c) own.push(k);
    });
    if (own.length < shots) {
      throw new RangeError(
        `Task '${task.name}': class ${c} has ${own.length} images, fewer than ${shots} shots`,
      );
    }
    random.reset(mixSeed(seed, c));
    random.shuffle(own);
    for (const k of own.slice(0, shots)) chosen.push([all.indices[k]!, all.labels[k]!]);
  }
  chosen.sort((a, b) => a[0] - b[0]);
  return {
    indices: Uint32Array.from(chosen, (c) => c[0]),
    labels: Float32Array.from(chosen, (c) => c[1]),
  };
}

/** Fixed batches over lists of examples, one list per task slot. */
export interface BatchPlan {
  /** Number of batches: ceil(longest list / B). */
  count: number;
  /** Image indices [count, T, B]; padding uses image 0. */
  images: Uint32Array<ArrayBuffer>;
  /** Labels [count, T, B]; -1 marks padding. */
  labels: Float32Array<ArrayBuffer>;
}

/**
 * Splits each task slot's examples into consecutive batches of B, in order: batch k holds
 * examples k*B .. k*B+B-1 of every slot; slots that run out are padded with label -1.
 */
export function planBatches(examples: readonly Examples[], batch: number): BatchPlan {
  if (!(Number.isInteger(batch) && batch >= 1)) {
    throw new RangeError(`Expected batch to be a positive integer, got ${batch}`);
  }
  const tasks = examples.length;
  const longest = Math.max(0, ...examples.map((e) => e.indices.length));
  const count = Math.ceil(longest / batch);
  const images = new Uint32Array(count * tasks * batch);
  const labels = new Float32Array(count * tasks * batch).fill(-1);
  examples.forEach((e, t) => {
    for (let i = 0; i < e.indices.length; i++) {
      const at = (Math.floor(i / batch) * tasks + t) * batch + (i % batch);
      images[at] = e.indices[i]!;
      labels[at] = e.labels[i]!;
    }
  });
  return { count, images, labels };
}

/** Options of {@link FixedBatches}. */
export interface FixedBatchesOptions {
  /** Task indices (into `family.tasks`), one per slot t; T = tasks.length. */
  tasks: readonly number[];
  /** The family the indices refer to. */
  family: TaskFamily;
  /** B. */
  batch: number;
  /** Which split the images come from (default "test"). */
  split?: "train" | "test";
  /** Examples per slot (default: every image of the slot's task in the split). */
  examples?: readonly Examples[];
  /** Images of that split already uploaded; not destroyed here. */
  store?: ImageStore;
  /** Crop and flip (none by default; adaptation on few-shot subsets may want them). */
  augment?: Augment;
  /** Seed of the augmentation. */
  seed?: number;
  /** Largest chunk of uploaded images in bytes. */
  chunkBytes?: number;
}

/**
 * Full passes over fixed example lists: evaluation over every test image of some tasks, or
 * adaptation over a few-shot subset. Batch k holds the k-th B examples of each task slot.
 */
export class FixedBatches {
  /** Assembled images [T, B, C, H, W]. */
  readonly x: Tensor;
  /** Labels [T, B] (0 or 1; -1 for padding). */
  readonly y: Tensor;
  /** Task indices [T] (u32). */
  readonly taskIndices: Tensor;
  /** The batches on the CPU. */
  readonly plan: BatchPlan;
  readonly #assembler: BatchAssembler;
  readonly #store: ImageStore;
  readonly #ownsStore: boolean;
  readonly #tasks: Uint32Array<ArrayBuffer>;
  readonly #size: number;

  /** Plans the batches, uploads the split (unless `options.store` is given), prepares. */
  constructor(gpu: Gpu, dataset: Dataset, options: FixedBatchesOptions) {
    const splitName = options.split ?? "test";
    const split = dataset[splitName];
    for (const t of options.tasks) {
      if (!(Number.isInteger(t) && t >= 0 && t < options.family.tasks.length)) {
        throw new RangeError(`Task ${t} is not in 0..${options.family.tasks.length - 1}`);
      }
    }
    const examples = options.examples ??
      options.tasks.map((t) => taskExamples(options.family.tasks[t]!, split));
    if (examples.length !== options.tasks.length) {
      throw new RangeError(
        `Expected one example list per task (${options.tasks.length}), got ${examples.length}`,
      );
    }
    this.plan = planBatches(examples, options.batch);
    this.#tasks = Uint32Array.from(options.tasks);
    this.#size = options.tasks.length * options.batch;
    this.#ownsStore = options.store === undefined;
    this.#store = options.store ??
      new ImageStore(gpu, split, { shape: dataset.shape, chunkBytes: options.chunkBytes });
    this.#assembler = new BatchAssembler(gpu, this.#store, {
      tasks: options.tasks.length,
      batch: options.batch,
      mean: dataset.mean,
      std: dataset.std,
      seed: options.seed,
      augment: options.augment,
    });
    this.x = this.#assembler.x;
    this.y = this.#assembler.y;
    this.taskIndices = this.#assembler.taskIndices;
  }

  /** Number of batches. */
  get count(): number {
    return this.plan.count;
  }

  /** Batch k on the CPU (views into `plan`). */
  batch(k: number): Choice {
    if (!(Number.isInteger(k) && k >= 0 && k < this.count)) {
      throw new RangeError(`Batch ${k} is not in 0..${this.count - 1}`);
    }
    const from = k * this.#size;
    return {
      tasks: this.#tasks,
      images: this.plan.images.subarray(from, from + this.#size),
      labels: this.plan.labels.subarray(from, from + this.#size),
    };
  }

  /** Writes batch k to the GPU and returns the dispatches that assemble it. */
  load(k: number, step = 0): Dispatch[] {
    this.#assembler.write(this.batch(k), step);
    return this.#assembler.dispatches;
  }

  /** Frees the GPU buffers (the image store only if created here). */
  destroy(): void {
    this.#assembler.destroy();
    if (this.#ownsStore) this.#store.destroy();
  }
}
