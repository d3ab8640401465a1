/**
 * What every dataset loader shares: the in-memory image types it returns ({@link Split},
 * {@link Dataset}), how it finds its files ({@link LoadOptions}, {@link resolveDataDir}), the
 * checks and statistics of its images, and the error type for bad data. The loaders import this
 * file; the registry in dataset.ts imports the loaders.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

/** One split of a dataset: `count` images of shape [C, H, W] bytes each, with class labels. */
export interface Split {
  /** Pixel bytes, [count, C, H, W] row-major (CIFAR's R, G, B planes; MNIST's one plane). */
  images: Uint8Array;
  /** Class of each image, in [0, number of classes). */
  labels: Uint8Array | Uint16Array;
  /** Number of images. */
  count: number;
}

/** The coarse (super-class) labels of CIFAR-100, kept next to the fine labels used for tasks. */
export interface CoarseLabels {
  /** The 20 super-class names. */
  classNames: string[];
  /** Super-class of each training image. */
  train: Uint8Array;
  /** Super-class of each test image. */
  test: Uint8Array;
}

/** A named set of classes, e.g. one Omniglot alphabet, so that classes can be split by group. */
export interface ClassGroup {
  /** The group's name, e.g. the alphabet "Tagalog". */
  name: string;
  /** Indices of its classes, ascending. */
  classes: number[];
  /** The file or folder the group was read from, e.g. the path of images_background.zip. */
  source: string;
}

/** A labelled image dataset held in memory. */
export interface Dataset {
  /** Registry name, e.g. "cifar10". */
  name: string;
  /** Image shape [C, H, W]. */
  shape: [number, number, number];
  /** Name of each class; label i is `classNames[i]`. */
  classNames: string[];
  /** Training images. */
  train: Split;
  /** Test images. */
  test: Split;
  /** Per-channel mean of the training pixels on [0, 1]. */
  mean: number[];
  /** Per-channel (population) standard deviation of the training pixels on [0, 1]. */
  std: number[];
  /** What was read and how it was checked, for run records. */
  source: string;
  /** CIFAR-100's super-classes. */
  coarse?: CoarseLabels;
  /** Groups of classes (Omniglot's alphabets, with the zip or folder each came from). */
  groups?: ClassGroup[];
}

/** Bad or missing data: one line naming the file, what was expected, and what to do. */
export class DataError extends Error {
  /** Wraps the one-line message. */
  constructor(message: string) {
    super(message);
    this.name = "DataError";
  }
}

/** How a loader finds and checks its files. */
export interface LoadOptions {
  /** Folder holding the dataset files; see {@link resolveDataDir} for the default. */
  dataDir?: string;
  /** Check file sizes and the published md5 sums (default true; the CLI's --no-verify). */
  verify?: boolean;
  /** Download the official archive into the data folder when nothing is found (default false). */
  download?: boolean;
  /** The fetch used by `download`; tests inject one so that they never touch the network. */
  fetch?: typeof fetch;
  /**
   * Omniglot: add every character rotated by 90, 180 and 270 degrees as three extra classes
   * (default false).
   */
  rotations?: boolean;
}

/**
 * The data folder: `options.dataDir`, else the environment variable SUPERNET_DATA, else
 * `<project>/data`.
 */
export function resolveDataDir(options: LoadOptions = {}): string {
  if (options.dataDir !== undefined) return options.dataDir;
  const fromEnv = Deno.env.get("SUPERNET_DATA");
  if (fromEnv) return fromEnv;
  return fileURLToPath(new URL("../../data", import.meta.url));
}

/**
 * Checks that every label is below `classes` and every class has an image; `what` names the
 * file(s) the split came from in the error.
 */
export function checkLabels(split: Split, options: { classes: number; what: string }): void {
  const { classes, what } = options;
  for (let i = 0; i < split.count; i++) {
    const label = split.labels[i]!;
    if (label >= classes) {
      throw new DataError(
        `${what}: record ${i} has label ${label}, expected 0..${classes - 1}; the file is corrupt`,
      );
    }
  }
  const empty = classCounts(split.labels, classes).findIndex((c) => c === 0);
  if (empty >= 0) {
    throw new DataError(
      `${what}: class ${empty} has no images, expected every one of the ${classes} classes`,
    );
  }
}

/** Number of images of each class; labels at or above `classes` are ignored. */
export function classCounts(labels: ArrayLike<number>, classes: number): number[] {
  const counts = new Array<number>(classes).fill(0);
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i]!;
    if (label < classes) counts[label]!++;
  }
  return counts;
}

/**
 * Per-channel mean and population standard deviation on [0, 1] of images [N, C, H, W], computed
 * exactly from a 256-bin histogram per channel.
 */
export function channelStats(
  images: Uint8Array,
  shape: readonly [number, number, number],
): { mean: number[]; std: number[] } {
  const [channels, height, width] = shape;
  const plane = height * width;
  const histograms = new Float64Array(channels * 256);
  const perImage = channels * plane;
  for (let base = 0; base < images.length; base += perImage) {
    for (let c = 0; c < channels; c++) {
      const start = base + c * plane;
      const offset = c * 256;
      for (let i = start; i < start + plane; i++) histograms[offset + images[i]!]!++;
    }
  }
  const mean: number[] = [];
  const std: number[] = [];
  for (let c = 0; c < channels; c++) {
    let n = 0;
    let sum = 0;
    let squares = 0;
    for (let v = 0; v < 256; v++) {
      const k = histograms[c * 256 + v]!;
      n += k;
      sum += k * (v / 255);
      squares += k * (v / 255) ** 2;
    }
    const m = n > 0 ? sum / n : 0;
    mean.push(m);
    std.push(n > 0 ? Math.sqrt(Math.max(0, squares / n - m * m)) : 0);
  }
  return { mean, std };
}

/**
 * Parses a class-name file (one name a line; trailing blank lines, as in the official
 * batches.meta.txt, are ignored); a wrong number of names is a DataError naming `file`.
 */
export function parseNames(text: string, options: { expected: number; file: string }): string[] {
  const lines = text.replace(/\r\n/g, "\n").split("\n").map((l) => l.trim());
  while (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  if (lines.length !== options.expected || lines.some((l) => l === "")) {
    throw new DataError(
      `${options.file}: expected ${options.expected} class names, one a line, found ${lines.length} ` +
        `lines${lines.some((l) => l === "") ? " (some blank)" : ""}; get the official file again`,
    );
  }
  return lines;
}

/**
 * Whether a horizontally mirrored image keeps its class: photographs (CIFAR) do; digits and
 * characters (MNIST, Omniglot) do not, and other or unknown data is not mirrored.
 */
export function mirrorKeepsClass(dataset: string): boolean {
  return dataset === "cifar10" || dataset === "cifar100";
}
