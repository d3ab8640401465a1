/**
 * Users' pictures: PNG and JPEG files decoded, converted to a run's channels, resized to its input
 * and packed as the bytes of an in-memory {@link Dataset}, whose recorded per-channel mean and std
 * the GPU sampler applies (normalisation happens there, as for every dataset). One place, used by
 * `adapt --images` and `predict`, and described by {@link Preprocessing} for exports.
 *
 * What happens to a file, in order:
 * 1. The header is read and the format recognised by its signature (not its name); a file larger
 *    than {@link MAX_FILE_BYTES} or claiming more than {@link MAX_PIXELS} pixels is refused before
 *    anything is decoded.
 * 2. Decoding: PNG (any bit depth, palette, interlaced; CRCs checked) with fast-png, JPEG (baseline
 *    and progressive) with jpeg-js. A truncated file (no IEND chunk, no end-of-image marker after
 *    the scan) is refused.
 * 3. Channels: alpha is composited over black; grey becomes RGB by copying; RGB becomes grey as
 *    0.299 R + 0.587 G + 0.114 B (ITU-R BT.601, as Pillow's convert("L")).
 * 4. Size: `crop` (default) cuts the centred largest region of the input's aspect ratio; `stretch`
 *    keeps the whole picture. Then an antialiased bilinear (triangle) filter resizes it, whose
 *    support widens by the scale factor when shrinking (as Pillow's resize with BILINEAR), and
 *    values are rounded to bytes.
 * 5. Scale and normalise (on the GPU): x = (byte / 255 - mean[c]) / std[c].
 *
 * @module
 */
import { join } from "node:path";
import { convertIndexedToRgb, decode as decodePng } from "fast-png";
import jpeg from "jpeg-js";
import { DataError, type Split } from "./data/split.ts";

/** Largest image accepted, in pixels (width x height), checked from the header before decoding. */
export const MAX_PIXELS = 50_000_000;
/** Largest image file read, in bytes. */
export const MAX_FILE_BYTES = 100 * 1024 * 1024;

/** How a picture is brought to the input's size. */
export const FITS = ["crop", "stretch"] as const;
/** One of {@link FITS}. */
export type Fit = typeof FITS[number];

/** A picture that cannot be used: names the file and why. */
export class ImageError extends Error {
  /** One line naming the file and the problem. */
  constructor(message: string) {
    super(message);
    this.name = "ImageError";
  }
}

/** A decoded picture: 8-bit grey (1 channel) or RGB (3), row-major [H, W, C]. */
export interface Picture {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** 1 (grey) or 3 (RGB). */
  channels: 1 | 3;
  /** Pixel bytes, [H, W, C] row-major. */
  data: Uint8Array;
}

/** What an exported network expects of its input, and where the numbers came from. */
export interface Preprocessing {
  /** [C, H, W] of one image. */
  inputShape: [number, number, number];
  /** "grey" (C = 1) or "RGB" (C = 3, in that order). */
  channels: "grey" | "RGB";
  /** Tensor layout of a batch. */
  layout: "NCHW";
  /** 8-bit values are multiplied by this (1/255) to reach [0, 1] before normalising. */
  scale: number;
  /** Per-channel mean subtracted on [0, 1] (the training set's). */
  mean: number[];
  /** Per-channel std divided by on [0, 1] (the training set's). */
  std: number[];
  /** How pictures of other sizes were resized here (`predict`, `adapt --images`). */
  resize: string;
}

/** The preprocessing of a run's input: its shape and recorded channel statistics. */
export function describePreprocessing(
  shape: readonly [number, number, number],
  stats: { mean: readonly number[]; std: readonly number[] },
): Preprocessing {
  return {
    inputShape: [...shape],
    channels: shape[0] === 1 ? "grey" : "RGB",
    layout: "NCHW",
    scale: 1 / 255,
    mean: [...stats.mean],
    std: [...stats.std],
    resize: `alpha over black; grey <-> RGB (0.299 R + 0.587 G + 0.114 B); centre crop to the ` +
      `input's aspect ratio (or stretch); antialiased bilinear to ${shape[2]}x${shape[1]}`,
  };
}

/** Format and size of an image from its first bytes; null when it is neither PNG nor JPEG. */
export function imageHeader(
  bytes: Uint8Array,
): { format: "png" | "jpeg"; width: number; height: number } | null {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (bytes.length >= 8 && png.every((b, i) => bytes[i] === b)) {
    if (bytes.length < 24 || String.fromCharCode(...bytes.subarray(12, 16)) !== "IHDR") {
      throw new ImageError("truncated PNG header (no IHDR chunk)");
    }
    return { format: "png", width: view.getUint32(16), height: view.getUint32(20) };
  }
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) {
    const frame = jpegFrame(bytes, view);
    return { format: "jpeg", width: frame.width, height: frame.height };
  }
  return null;
}

/** Walks a JPEG's markers to its frame header (SOFn) and checks an end marker follows the scan. */
function jpegFrame(bytes: Uint8Array, view: DataView): { width: number; height: number } {
  let at = 2;
  let frame: { width: number; height: number } | undefined;
  while (at + 4 <= bytes.length) {
    if (bytes[at] !== 0xff) throw new ImageError("corrupt JPEG (bad marker)");
    const marker = bytes[at + 1]!;
    if (marker === 0xff) {
      at++;
      continue;
    }
    const length = view.getUint16(at + 2);
    const isFrame = marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker);
    if (isFrame) {
      if (at + 9 > bytes.length) break;
      frame = { height: view.getUint16(at + 5), width: view.getUint16(at + 7) };
    }
    if (marker === 0xda) {
      if (!frame) throw new ImageError("corrupt JPEG (scan before frame header)");
      // Entropy-coded data escapes 0xFF as 0xFF00, so 0xFFD9 after the scan is the end marker.
      for (let i = at + 2 + length; i + 1 < bytes.length; i++) {
        if (bytes[i] === 0xff && bytes[i + 1] === 0xd9) return frame;
      }
      throw new ImageError("truncated JPEG (no end-of-image marker)");
    }
    at += 2 + length;
  }
  throw new ImageError("truncated JPEG (no image data)");
}

/**
 * Decodes PNG or JPEG bytes to an 8-bit grey or RGB picture (alpha composited over black);
 * refuses, before decoding, files whose header claims more than {@link MAX_PIXELS} pixels.
 */
export function decodeImage(bytes: Uint8Array): Picture {
  if (bytes.length === 0) throw new ImageError("empty file");
  const header = imageHeader(bytes);
  if (!header) throw new ImageError("not a PNG or JPEG file (unsupported format)");
  const { width, height } = header;
  if (width < 1 || height < 1) throw new ImageError(`image of ${width}x${height} pixels`);
  if (width * height > MAX_PIXELS) {
    throw new ImageError(
      `${width}x${height} pixels exceeds the limit of ${MAX_PIXELS.toLocaleString("en")} pixels; ` +
        `shrink the picture first`,
    );
  }
  try {
    return header.format === "png" ? fromPng(bytes) : fromJpeg(bytes);
  } catch (e) {
    if (e instanceof ImageError) throw e;
    throw new ImageError(`corrupt ${header.format.toUpperCase()} (${(e as Error).message})`);
  }
}

function fromPng(bytes: Uint8Array): Picture {
  checkPngChunks(bytes);
  const png = decodePng(bytes, { checkCrc: true });
  const { width, height } = png;
  let channels = png.channels;
  let data: ArrayLike<number>;
  let max = png.depth === 16 ? 65535 : 255;
  if (png.palette) {
    data = convertIndexedToRgb(png);
    channels = png.palette[0]!.length;
    max = 255;
  } else if (png.depth < 8) {
    data = unpackBits(png.data as Uint8Array, { width, height, depth: png.depth });
    max = (1 << png.depth) - 1;
  } else {
    data = png.data;
  }
  if (data.length !== width * height * channels) {
    throw new ImageError("truncated PNG (too little pixel data)");
  }
  const hasAlpha = channels === 2 || channels === 4;
  const colour = channels >= 3 ? 3 : 1;
  const out = new Uint8Array(width * height * colour);
  for (let p = 0; p < width * height; p++) {
    const alpha = hasAlpha ? data[p * channels + channels - 1]! / max : 1;
    for (let c = 0; c < colour; c++) {
      out[p * colour + c] = Math.round((data[p * channels + c]! / max) * alpha * 255);
    }
  }
  return { width, height, channels: colour as 1 | 3, data: out };
}

/** Checks the chunk chain runs to an IEND chunk, so that a cut-off file is not half decoded. */
function checkPngChunks(bytes: Uint8Array): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 8;
  while (at + 8 <= bytes.length) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    if (type === "IEND") return;
    at += 12 + length;
  }
  throw new ImageError("truncated PNG (no IEND chunk)");
}

/** Unpacks rows of 1-, 2- or 4-bit grey samples (each row starts on a byte). */
function unpackBits(
  packed: Uint8Array,
  size: { width: number; height: number; depth: number },
): Uint8Array {
  const { width, height, depth } = size;
  const rowBytes = Math.ceil((width * depth) / 8);
  const out = new Uint8Array(width * height);
  const mask = (1 << depth) - 1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const bit = x * depth;
      const byte = packed[y * rowBytes + (bit >> 3)] ?? 0;
      out[y * width + x] = (byte >> (8 - depth - (bit & 7))) & mask;
    }
  }
  return out;
}

function fromJpeg(bytes: Uint8Array): Picture {
  const decoded = jpeg.decode(bytes, {
    useTArray: true,
    formatAsRGBA: true,
    tolerantDecoding: false,
    maxResolutionInMP: MAX_PIXELS / 1e6,
    maxMemoryUsageInMB: 1024,
  });
  const { width, height } = decoded;
  const data = new Uint8Array(width * height * 3);
  for (let p = 0; p < width * height; p++) {
    data[p * 3] = decoded.data[p * 4]!;
    data[p * 3 + 1] = decoded.data[p * 4 + 1]!;
    data[p * 3 + 2] = decoded.data[p * 4 + 2]!;
  }
  return { width, height, channels: 3, data };
}

/** The picture with 1 (grey, BT.601 luma) or 3 (RGB) channels. */
export function toChannels(picture: Picture, channels: number): Picture {
  if (channels !== 1 && channels !== 3) {
    throw new RangeError(`Expected 1 or 3 channels, got ${channels}`);
  }
  if (picture.channels === channels) return picture;
  const n = picture.width * picture.height;
  const src = picture.data;
  const data = new Uint8Array(n * channels);
  for (let p = 0; p < n; p++) {
    if (channels === 3) data.fill(src[p]!, p * 3, p * 3 + 3);
    else {data[p] = Math.round(
        0.299 * src[p * 3]! + 0.587 * src[p * 3 + 1]! + 0.114 * src[p * 3 + 2]!,
      );}
  }
  return { ...picture, channels, data };
}

/**
 * Resizes to width x height with an antialiased triangle filter (support scaled by the shrink
 * factor), after cutting the centred region of the target's aspect ratio when `fit` is "crop".
 */
export function resizePicture(
  picture: Picture,
  size: { width: number; height: number; fit: Fit },
): Picture {
  const { width, height } = size;
  let box = { x: 0, y: 0, w: picture.width, h: picture.height };
  if (size.fit === "crop") {
    const target = width / height;
    if (picture.width / picture.height > target) {
      const w = Math.max(1, Math.round(picture.height * target));
      box = { x: Math.floor((picture.width - w) / 2), y: 0, w, h: picture.height };
    } else {
      const h = Math.max(1, Math.round(picture.width / target));
      box = { x: 0, y: Math.floor((picture.height - h) / 2), w: picture.width, h };
    }
  }
  const c = picture.channels;
  const across = filterWeights(width, box.x, box.w);
  const down = filterWeights(height, box.y, box.h);
  // Horizontal pass into floats [H_in, W_out, C], then vertical into bytes [H_out, W_out, C].
  const mid = new Float32Array(picture.height * width * c);
  for (let y = 0; y < picture.height; y++) {
    for (let x = 0; x < width; x++) {
      const { first, weights } = across[x]!;
      for (let ch = 0; ch < c; ch++) {
        let sum = 0;
        for (let k = 0; k < weights.length; k++) {
          sum += weights[k]! * picture.data[(y * picture.width + first + k) * c + ch]!;
        }
        mid[(y * width + x) * c + ch] = sum;
      }
    }
  }
  const data = new Uint8Array(height * width * c);
  for (let y = 0; y < height; y++) {
    const { first, weights } = down[y]!;
    for (let x = 0; x < width; x++) {
      for (let ch = 0; ch < c; ch++) {
        let sum = 0;
        for (let k = 0; k < weights.length; k++) {
          sum += weights[k]! * mid[((first + k) * width + x) * c + ch]!;
        }
        data[(y * width + x) * c + ch] = Math.min(255, Math.max(0, Math.round(sum)));
      }
    }
  }
  return { width, height, channels: c, data };
}

/**
 * Triangle-filter taps of each output sample over the input samples [offset, offset + span) of a
 * line (the crop; nothing outside it is read): centres at pixel centres, support
 * max(1, span / outSize).
 */
function filterWeights(
  outSize: number,
  offset: number,
  span: number,
): { first: number; weights: Float64Array }[] {
  const scale = span / outSize;
  const support = Math.max(1, scale);
  return Array.from({ length: outSize }, (_, i) => {
    const centre = offset + (i + 0.5) * scale;
    const first = Math.max(offset, Math.floor(centre - support));
    const last = Math.min(offset + span - 1, Math.ceil(centre + support));
    const weights = new Float64Array(last - first + 1);
    let total = 0;
    for (let j = first; j <= last; j++) {
      const w = Math.max(0, 1 - Math.abs((j + 0.5 - centre) / support));
      weights[j - first] = w;
      total += w;
    }
    if (total === 0) {
      // A span narrower than one pixel: take the nearest input sample.
      weights.fill(0);
      weights[Math.min(last, Math.max(first, Math.floor(centre))) - first] = 1;
      total = 1;
    }
    for (let k = 0; k < weights.length; k++) weights[k]! /= total;
    return { first, weights };
  });
}

/** Decodes, converts and resizes a file's bytes into planes [C, H, W] of the given shape. */
export function prepareImage(
  bytes: Uint8Array,
  options: { shape: readonly [number, number, number]; fit: Fit },
): Uint8Array {
  const [channels, height, width] = options.shape;
  const picture = resizePicture(toChannels(decodeImage(bytes), channels), {
    width,
    height,
    fit: options.fit,
  });
  const planes = new Uint8Array(channels * height * width);
  const plane = height * width;
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < channels; c++) planes[c * plane + p] = picture.data[p * channels + c]!;
  }
  return planes;
}

/** A file that was not used, and why. */
export interface SkippedImage {
  /** Path as given or found. */
  file: string;
  /** One line: what is wrong. */
  reason: string;
}

/** How files are read into a split. */
export interface ReadImagesOptions {
  /** [C, H, W] every image is brought to. */
  shape: readonly [number, number, number];
  /** crop (default) or stretch. */
  fit?: Fit;
  /** Fail on the first bad file instead of skipping it. */
  strict?: boolean;
  /** Told about each skipped file as it happens. */
  onSkip?: (skipped: SkippedImage) => void;
}

/**
 * Reads image files into planes [count, C, H, W]; bad files are skipped (reported through
 * `onSkip` and returned), or with `strict` the first one is an ImageError naming it.
 */
export async function readImages(
  files: readonly string[],
  options: ReadImagesOptions,
): Promise<{ images: Uint8Array; used: string[]; skipped: SkippedImage[] }> {
  const [c, h, w] = options.shape;
  const size = c * h * w;
  const chunks: Uint8Array[] = [];
  const used: string[] = [];
  const skipped: SkippedImage[] = [];
  for (const file of files) {
    try {
      const info = await Deno.stat(file);
      if (info.size > MAX_FILE_BYTES) {
        throw new ImageError(
          `file of ${info.size.toLocaleString("en")} bytes exceeds the limit of ` +
            `${MAX_FILE_BYTES.toLocaleString("en")}`,
        );
      }
      chunks.push(
        prepareImage(await Deno.readFile(file), {
          shape: options.shape,
          fit: options.fit ?? "crop",
        }),
      );
      used.push(file);
    } catch (e) {
      const reason = e instanceof ImageError
        ? e.message
        : e instanceof Deno.errors.PermissionDenied
        ? "not readable (permission denied)"
        : e instanceof Deno.errors.IsADirectory
        ? "is a folder"
        : null;
      if (reason === null) throw e;
      if (options.strict) {
        throw new ImageError(`${file}: ${reason} (--strict stops at the first bad image)`);
      }
      const entry = { file, reason };
      skipped.push(entry);
      options.onSkip?.(entry);
    }
  }
  const images = new Uint8Array(used.length * size);
  chunks.forEach((chunk, i) => images.set(chunk, i * size));
  return { images, used, skipped };
}

/** Files of a folder that are candidates for images: regular, not hidden, in name order. */
async function folderFiles(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.name.startsWith(".")) continue;
    if (entry.isFile || entry.isSymlink) names.push(entry.name);
  }
  return names.sort().map((n) => join(dir, n));
}

/**
 * Expands paths for `predict`: a file stays itself; a folder gives its image files (PNG and JPEG
 * names, not hidden), in name order, without descending further.
 */
export async function expandPaths(paths: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const path of paths) {
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new DataError(`${path} not found: expected an image file or a folder of images`);
      }
      throw e;
    }
    if (!info.isDirectory) {
      out.push(path);
      continue;
    }
    const files = (await folderFiles(path)).filter((f) => /\.(png|jpe?g)$/i.test(f));
    if (files.length === 0) {
      throw new DataError(
        `${path} holds no .png, .jpg or .jpeg files; expected images to classify`,
      );
    }
    out.push(...files);
  }
  return out;
}

/** The two classes of a folder of pictures: names (0 negative, 1 positive) and their files. */
export interface ClassFolders {
  /** [negative, positive] subfolder names. */
  classNames: [string, string];
  /** Files of each class, in name order. */
  files: [string[], string[]];
}

/**
 * The two subfolders of `dir` (their names are the class names). The positive class (label 1,
 * the probability `predict` reports) is `positive` if given, else the second name in sorted order.
 */
export async function classFolders(
  dir: string,
  options: { positive?: string; flag?: string } = {},
): Promise<ClassFolders> {
  const flag = options.flag ?? "--images";
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(dir);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new DataError(
        `${flag} ${dir} not found: expected a folder with two subfolders of images`,
      );
    }
    throw e;
  }
  if (!info.isDirectory) {
    throw new DataError(
      `${flag} ${dir} is a file: expected a folder with two subfolders of images`,
    );
  }
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isDirectory && !entry.name.startsWith(".")) names.push(entry.name);
  }
  names.sort();
  if (names.length !== 2) {
    throw new DataError(
      `${flag} ${dir} has ${names.length} subfolders${
        names.length ? ` (${names.join(", ")})` : ""
      }; ` +
        `expected exactly two, one per class, e.g. ${join(dir, "cats")} and ${join(dir, "dogs")}`,
    );
  }
  let [negative, positive] = names as [string, string];
  if (options.positive !== undefined) {
    if (!names.includes(options.positive)) {
      throw new DataError(
        `--positive '${options.positive}' is not a subfolder of ${dir}; expected ${
          names.join(" or ")
        }`,
      );
    }
    if (options.positive === negative) [negative, positive] = [positive, negative];
  }
  return {
    classNames: [negative, positive],
    files: [await folderFiles(join(dir, negative)), await folderFiles(join(dir, positive))],
  };
}

/** What reading a folder of two classes found. */
export interface LabelledImages {
  /** The images as a split: labels 0 (negative) and 1 (positive). */
  split: Split;
  /** [negative, positive] class names. */
  classNames: [string, string];
  /** Files used, in split order. */
  used: string[];
  /** Files skipped, with reasons. */
  skipped: SkippedImage[];
}

/**
 * Reads a folder of two class subfolders into a split; fewer than one usable image in a class is
 * a DataError naming the folder. With `classNames`, the subfolders must have those names (a
 * test folder must match the training one).
 */
export async function readClassFolders(
  dir: string,
  options: ReadImagesOptions & { positive?: string; classNames?: [string, string]; flag?: string },
): Promise<LabelledImages> {
  const folders = await classFolders(dir, {
    positive: options.classNames?.[1] ?? options.positive,
    flag: options.flag,
  });
  if (options.classNames && folders.classNames.join("/") !== options.classNames.join("/")) {
    throw new DataError(
      `${options.flag ?? "--images"} ${dir} has classes ${folders.classNames.join(" and ")}; ` +
        `expected ${options.classNames.join(" and ")}, as in the training folder`,
    );
  }
  const parts = [];
  for (const [label, files] of folders.files.entries()) {
    const read = await readImages(files, options);
    if (read.used.length === 0) {
      const name = folders.classNames[label]!;
      throw new DataError(
        `${join(dir, name)} has no usable image (${files.length} file(s), ` +
          `${read.skipped.length} skipped); put at least one PNG or JPEG of '${name}' there`,
      );
    }
    parts.push(read);
  }
  const [neg, pos] = parts as [typeof parts[0], typeof parts[0]];
  const count = neg.used.length + pos.used.length;
  const images = new Uint8Array(neg.images.length + pos.images.length);
  images.set(neg.images);
  images.set(pos.images, neg.images.length);
  const labels = new Uint8Array(count);
  labels.fill(1, neg.used.length);
  return {
    split: { images, labels, count },
    classNames: folders.classNames,
    used: [...neg.used, ...pos.used],
    skipped: [...neg.skipped, ...pos.skipped],
  };
}
