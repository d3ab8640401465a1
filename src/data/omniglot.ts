/**
 * Omniglot (Lake, Salakhutdinov and Tenenbaum, 2015): handwritten characters of many alphabets,
 * each drawn by 20 people, read from the official zips or their extracted folders.
 *
 * Files: every zip file and every extracted folder under the data folder (the folder itself, its
 * subfolders and theirs) that holds the official layout
 * `<top>/<Alphabet>/characterNN/<id>_<drawing>.png`, whatever the top folder's name: the official
 * `images_background.zip` and `images_evaluation.zip`, their folders, or a subset of the same
 * layout. Hidden files and macOS `__MACOSX` folders are ignored. A character found twice (say in
 * a zip and in the folder extracted from it) is a DataError: keep one of them. So is a zip under
 * the data folder that cannot be read.
 *
 * Images: each 105x105 drawing (1-bit, ink black on white) is inverted, so that ink is 255 and
 * background 0 (the few-shot literature feeds ink as high values), then shrunk to 28x28 by area
 * averaging: each output pixel is the mean over its exact fractional footprint of 3.75x3.75 input
 * pixels (as OpenCV's INTER_AREA shrinks), computed in integers and rounded half up. Shape
 * [1, 28, 28]; labels are 16-bit.
 *
 * Classes are characters, named `<Alphabet>/characterNN`, ordered by source (zip or folder name,
 * then path), alphabet name, then character number. With `rotations`, each character is followed
 * by itself rotated counter-clockwise by 90, 180 and 270 degrees (as numpy's rot90 and Pillow's
 * rotate turn), named `<Alphabet>/characterNN/rot90` etc., in the same group as the character.
 * `groups` lists each alphabet of each source with its classes.
 *
 * Split of each character's drawings, for the binary task families: drawings sorted by file name
 * (`<id>_<drawing>.png`, so by drawing number); the last quarter, rounded, at least one, is test
 * and the rest train ({@link omniglotTestCount}): of the official 20, the first 15 train and the
 * last 5 test. A rotated class has the same split as its character. Images of a split are in
 * class order, then drawing order; mean and std are those of the training pixels.
 *
 * @module
 */
import { basename, join } from "node:path";
import { decodeImage, ImageError, imageHeader, type Picture, toChannels } from "../images.ts";
import {
  channelStats,
  type ClassGroup,
  DataError,
  type Dataset,
  type LoadOptions,
  resolveDataDir,
} from "./split.ts";
import { ZipArchive } from "./zip.ts";

/** Side of an official Omniglot drawing, in pixels. */
export const OMNIGLOT_SIDE = 105;

/** Side of the dataset's images, in pixels (the size published few-shot results use). */
export const IMAGE_SIDE = 28;

/** Rotations (degrees, counter-clockwise) added as extra classes with `rotations`. */
export const ROTATIONS = [90, 180, 270] as const;

/** Folders below the data folder that are searched (the folder itself is depth 0). */
const SEARCH_DEPTH = 2;

/** Drawings decoded at once (zip members inflate asynchronously). */
const CONCURRENCY = 16;

const CHARACTER = /^character(\d+)$/;

/**
 * Test drawings of a character with `drawings` drawings: the last quarter, rounded, at least
 * one (5 of the official 20). A character needs at least two drawings, one for each split.
 */
export function omniglotTestCount(drawings: number): number {
  return Math.max(1, Math.round(drawings / 4));
}

/**
 * Shrinks (or enlarges) a picture by area averaging: output pixel (x, y) is the mean of the input
 * over its exact footprint [x * W / w, (x + 1) * W / w) x [y * H / h, (y + 1) * H / h), partly
 * covered pixels weighted by the covered fraction, computed exactly in integers and rounded half
 * up.
 */
export function areaResize(picture: Picture, size: { width: number; height: number }): Picture {
  const { width, height } = size;
  const c = picture.channels;
  const src = picture.data;
  const across = areaWeights(picture.width, width);
  const down = areaWeights(picture.height, height);
  // Horizontal pass into integer sums [H_in, W_out, C] (exact in float64), then vertical.
  const mid = new Float64Array(picture.height * width * c);
  for (let y = 0; y < picture.height; y++) {
    const row = y * picture.width;
    for (let x = 0; x < width; x++) {
      const { first, weights } = across[x]!;
      for (let ch = 0; ch < c; ch++) {
        let sum = 0;
        for (let k = 0; k < weights.length; k++) {
          sum += weights[k]! * src[(row + first + k) * c + ch]!;
        }
        mid[(y * width + x) * c + ch] = sum;
      }
    }
  }
  const total = 2 * picture.width * picture.height;
  const data = new Uint8Array(height * width * c);
  for (let y = 0; y < height; y++) {
    const { first, weights } = down[y]!;
    for (let i = 0; i < width * c; i++) {
      let sum = 0;
      for (let k = 0; k < weights.length; k++) {
        sum += weights[k]! * mid[(first + k) * width * c + i]!;
      }
      data[y * width * c + i] = Math.floor((2 * sum + total / 2) / total);
    }
  }
  return { width, height, channels: c, data };
}

const areaWeightCache = new Map<string, { first: number; weights: Int32Array }[]>();

/**
 * Integer coverage of each output sample over the input samples of a line: with input pixel j
 * spanning [j * outSize, (j + 1) * outSize) and output i spanning [i * inSize, (i + 1) * inSize),
 * the weight is their overlap; each output's weights sum to inSize. Cached per pair of sizes.
 */
function areaWeights(inSize: number, outSize: number): { first: number; weights: Int32Array }[] {
  const key = `${inSize}:${outSize}`;
  const cached = areaWeightCache.get(key);
  if (cached) return cached;
  const taps = Array.from({ length: outSize }, (_, i) => {
    const lo = i * inSize;
    const hi = lo + inSize;
    const first = Math.floor(lo / outSize);
    const last = Math.ceil(hi / outSize) - 1;
    const weights = new Int32Array(last - first + 1);
    for (let j = first; j <= last; j++) {
      weights[j - first] = Math.min(hi, (j + 1) * outSize) - Math.max(lo, j * outSize);
    }
    return { first, weights };
  });
  areaWeightCache.set(key, taps);
  return taps;
}

/**
 * A square single-channel image [side, side] turned counter-clockwise by `quarterTurns` times 90
 * degrees (as numpy's rot90).
 */
export function rotateImage(
  image: Uint8Array,
  options: { side: number; quarterTurns: number },
): Uint8Array {
  const { side } = options;
  const turns = ((options.quarterTurns % 4) + 4) % 4;
  let out = image;
  for (let t = 0; t < turns; t++) {
    const src = out;
    out = new Uint8Array(side * side);
    // One counter-clockwise turn: out[y][x] = src[x][side - 1 - y].
    for (let y = 0; y < side; y++) {
      for (let x = 0; x < side; x++) out[y * side + x] = src[x * side + side - 1 - y]!;
    }
  }
  return turns === 0 ? image.slice() : out;
}

/**
 * One official drawing as dataset pixels [28 * 28]: decoded, inverted (ink 255, background 0)
 * and area-averaged to 28x28. Anything but a decodable 105x105 picture is a DataError naming
 * `where` (the file, or `zip:member`).
 */
export function drawingImage(png: Uint8Array, where: string): Uint8Array {
  const bad = (why: string) =>
    new DataError(
      `${where}: ${why}, expected a 105x105 PNG drawing of the official Omniglot release; ` +
        `replace it with the official file`,
    );
  let picture: Picture;
  try {
    const header = imageHeader(png);
    if (!header) throw bad("not a PNG");
    if (header.width !== OMNIGLOT_SIDE || header.height !== OMNIGLOT_SIDE) {
      throw bad(`${header.width}x${header.height} pixels`);
    }
    picture = toChannels(decodeImage(png), 1);
  } catch (error) {
    if (error instanceof ImageError) throw bad(error.message);
    throw error;
  }
  const inverted = new Uint8Array(picture.data.length);
  for (let i = 0; i < inverted.length; i++) inverted[i] = 255 - picture.data[i]!;
  return areaResize({ ...picture, data: inverted }, { width: IMAGE_SIDE, height: IMAGE_SIDE })
    .data;
}

/** One drawing: where it is (for messages), its file name, and how to read its bytes. */
interface Drawing {
  where: string;
  file: string;
  read: () => Promise<Uint8Array>;
}

/** A character of one source, with its drawings. */
interface Character {
  alphabet: string;
  character: string;
  /** The NN of characterNN, for numeric order. */
  number: number;
  drawings: Drawing[];
}

/** A zip file or extracted folder holding the layout, with its characters in class order. */
interface Source {
  path: string;
  characters: Character[];
}

/**
 * Loads every Omniglot zip and extracted folder under the data folder (see the module doc for
 * the layout, the image processing, the class order and the split).
 */
export async function loadOmniglot(options: LoadOptions = {}): Promise<Dataset> {
  const dir = resolveDataDir(options);
  const rotations = options.rotations ?? false;
  const sources = await findSources(dir);
  checkUnique(sources, dir);
  const characters = sources.flatMap((s) => s.characters.map((c) => ({ ...c, source: s.path })));
  const variants = rotations ? 1 + ROTATIONS.length : 1;
  const classNames: string[] = [];
  const groups: ClassGroup[] = [];
  let trainCount = 0;
  let testCount = 0;
  for (const c of characters) {
    const name = `${c.alphabet}/${c.character}`;
    const n = c.drawings.length;
    if (n < 2) {
      throw new DataError(
        `${c.source}: character ${name} has ${n} drawing(s), expected at least 2 (one to train, ` +
          `one to test; the official release has 20); restore its drawings or remove the folder`,
      );
    }
    const last = groups[groups.length - 1];
    const group = last?.name === c.alphabet && last.source === c.source
      ? last
      : groups[groups.push({ name: c.alphabet, classes: [], source: c.source }) - 1]!;
    for (let r = 0; r < variants; r++) {
      group.classes.push(classNames.length);
      classNames.push(r === 0 ? name : `${name}/rot${ROTATIONS[r - 1]}`);
    }
    testCount += omniglotTestCount(n) * variants;
    trainCount += (n - omniglotTestCount(n)) * variants;
  }
  if (classNames.length > 0x10000) {
    throw new DataError(
      `${dir}: ${classNames.length} Omniglot classes, expected at most 65,536 (labels are 16-bit); ` +
        `point --data-dir at a folder holding fewer characters`,
    );
  }
  const pixels = IMAGE_SIDE * IMAGE_SIDE;
  const train = {
    images: new Uint8Array(trainCount * pixels),
    labels: new Uint16Array(trainCount),
  };
  const test = { images: new Uint8Array(testCount * pixels), labels: new Uint16Array(testCount) };
  // Within a split, a character's drawings come in drawing order, then again for each rotation.
  const jobs: { drawing: Drawing; split: typeof train; slots: number[] }[] = [];
  let trainAt = 0;
  let testAt = 0;
  characters.forEach((c, k) => {
    const tests = omniglotTestCount(c.drawings.length);
    const trains = c.drawings.length - tests;
    c.drawings.forEach((drawing, d) => {
      const [split, base, count, index] = d < trains
        ? [train, trainAt, trains, d]
        : [test, testAt, tests, d - trains];
      const slots = Array.from({ length: variants }, (_, r) => base + r * count + index);
      slots.forEach((slot, r) => split.labels[slot] = k * variants + r);
      jobs.push({ drawing, split, slots });
    });
    trainAt += trains * variants;
    testAt += tests * variants;
  });
  await forEachLimit(jobs, async ({ drawing, split, slots }) => {
    const image = drawingImage(await drawing.read(), drawing.where);
    slots.forEach((slot, r) => {
      const turned = r === 0 ? image : rotateImage(image, { side: IMAGE_SIDE, quarterTurns: r });
      split.images.set(turned, slot * pixels);
    });
  });
  const shape: [number, number, number] = [1, IMAGE_SIDE, IMAGE_SIDE];
  const trainSplit = { ...train, count: trainCount };
  const testSplit = { ...test, count: testCount };
  const described = sources.map((s) => {
    const alphabets = new Set(s.characters.map((c) => c.alphabet)).size;
    const drawings = s.characters.reduce((sum, c) => sum + c.drawings.length, 0);
    return `${s.path} (${counted(alphabets, "alphabet")}, ` +
      `${counted(s.characters.length, "character")}, ${counted(drawings, "drawing")})`;
  });
  return {
    name: "omniglot",
    shape,
    classNames,
    train: trainSplit,
    test: testSplit,
    ...channelStats(train.images, shape),
    source: `${described.join("; ")}; ${OMNIGLOT_SIDE}x${OMNIGLOT_SIDE} inverted (ink 255) and ` +
      `area-averaged to ${IMAGE_SIDE}x${IMAGE_SIDE}; per character the last quarter of the ` +
      `drawings by file name is test` +
      (rotations ? `; rotations by ${ROTATIONS.join(", ")} degrees as extra classes` : "") +
      `: ${classNames.length} classes, ${trainCount.toLocaleString("en")} train / ` +
      `${testCount.toLocaleString("en")} test images`,
    groups,
  };
}

function counted(n: number, noun: string): string {
  return `${n.toLocaleString("en")} ${noun}${n === 1 ? "" : "s"}`;
}

/** Runs `fn` over `items`, {@link CONCURRENCY} at a time; the first failure stops the rest. */
async function forEachLimit<T>(items: T[], fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      try {
        await fn(items[next++]!);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, items.length) }, worker));
}

/** A character must come from one place only; a repeat names both places. */
function checkUnique(sources: Source[], dir: string): void {
  const seen = new Map<string, string>();
  for (const s of sources) {
    for (const c of s.characters) {
      const name = `${c.alphabet}/${c.character}`;
      const first = seen.get(name);
      if (first !== undefined) {
        throw new DataError(
          `Omniglot character ${name} is in both ${first} and ${s.path}; expected each ` +
            `character once: keep only one of them under ${dir}`,
        );
      }
      seen.set(name, s.path);
    }
  }
}

function byCharacter(a: Character, b: Character): number {
  return compare(a.alphabet, b.alphabet) || a.number - b.number ||
    compare(a.character, b.character);
}

/** Code-unit order, the same on every machine and locale. */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function ignored(name: string): boolean {
  return name.startsWith(".") || name === "__MACOSX";
}

/** Names of the visible entries of a folder, sorted, with their (followed) file info. */
async function entries(dir: string): Promise<{ name: string; info: Deno.FileInfo }[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) if (!ignored(entry.name)) names.push(entry.name);
  const out: { name: string; info: Deno.FileInfo }[] = [];
  for (const name of names.sort(compare)) {
    const info = await Deno.stat(join(dir, name)).catch(() => undefined);
    if (info) out.push({ name, info });
  }
  return out;
}

/**
 * The zips and top folders holding the layout under `dir`, in source order (name, then path);
 * none is a DataError saying what was looked at and what to put there.
 */
async function findSources(dir: string): Promise<Source[]> {
  const info = await Deno.stat(dir).catch(() => undefined);
  const zips: string[] = [];
  const folders: string[] = [];
  const walk = async (folder: string, depth: number) => {
    const children = await entries(folder);
    const isTop = await someAsync(
      children.filter((c) => c.info.isDirectory),
      async (a) =>
        (await entries(join(folder, a.name))).some((c) =>
          c.info.isDirectory && CHARACTER.test(c.name)
        ),
    );
    if (isTop) {
      folders.push(folder);
      return;
    }
    for (const { name, info } of children) {
      const path = join(folder, name);
      if (info.isFile && /\.zip$/i.test(name)) zips.push(path);
      else if (info.isDirectory && depth < SEARCH_DEPTH) await walk(path, depth + 1);
    }
  };
  if (info?.isDirectory) await walk(dir, 0);
  const sources: Source[] = [];
  for (const path of zips) {
    const source = await zipSource(path);
    if (source.characters.length > 0) sources.push(source);
  }
  for (const path of folders) sources.push(await folderSource(path));
  if (sources.length === 0) {
    const looked = info?.isDirectory
      ? `looked in ${dir} and its subfolders (${zips.length} zip file(s) without it)`
      : `${dir} does not exist`;
    throw new DataError(
      `No Omniglot found: ${looked}; expected images_background.zip, images_evaluation.zip or ` +
        `a folder <top>/<Alphabet>/characterNN/*.png: put them into ${dir} or point --data-dir ` +
        `or SUPERNET_DATA at the folder holding them`,
    );
  }
  return sources.sort((a, b) =>
    compare(basename(a.path), basename(b.path)) || compare(a.path, b.path)
  );
}

async function someAsync<T>(items: T[], test: (item: T) => Promise<boolean>): Promise<boolean> {
  for (const item of items) if (await test(item)) return true;
  return false;
}

/** The characters of a zip: members `[<top>/]<Alphabet>/characterNN/<file>.png`. */
async function zipSource(path: string): Promise<Source> {
  const zip = await ZipArchive.open(path);
  const byName = new Map<string, Character>();
  for (const member of zip.members) {
    const parts = member.name.split("/");
    if (parts.length < 3 || parts.some(ignored)) continue;
    const [alphabet, character, file] = parts.slice(-3) as [string, string, string];
    const match = CHARACTER.exec(character);
    if (!match || !/\.png$/i.test(file)) continue;
    // Two top folders holding the same character are a repeat, caught by checkUnique.
    const key = parts.slice(0, -1).join("/");
    let entry = byName.get(key);
    if (!entry) {
      entry = { alphabet, character, number: Number(match[1]), drawings: [] };
      byName.set(key, entry);
    }
    entry.drawings.push({ where: `${path}:${member.name}`, file, read: () => zip.read(member) });
  }
  return { path, characters: sortCharacters([...byName.values()]) };
}

/** The characters of an extracted top folder: `<Alphabet>/characterNN/<file>.png`. */
async function folderSource(top: string): Promise<Source> {
  const characters: Character[] = [];
  for (const alphabet of await entries(top)) {
    if (!alphabet.info.isDirectory) continue;
    for (const character of await entries(join(top, alphabet.name))) {
      const match = CHARACTER.exec(character.name);
      if (!match || !character.info.isDirectory) continue;
      const folder = join(top, alphabet.name, character.name);
      const drawings = (await entries(folder))
        .filter((f) => f.info.isFile && /\.png$/i.test(f.name))
        .map(({ name }) => {
          const path = join(folder, name);
          return { where: path, file: name, read: () => readDrawing(path) };
        });
      characters.push({
        alphabet: alphabet.name,
        character: character.name,
        number: Number(match[1]),
        drawings,
      });
    }
  }
  return { path: top, characters: sortCharacters(characters) };
}

async function readDrawing(path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (error) {
    throw new DataError(`${path}: cannot be read (${(error as Error).message})`);
  }
}

function sortCharacters(characters: Character[]): Character[] {
  for (const c of characters) c.drawings.sort((a, b) => compare(a.file, b.file));
  return characters.sort(byCharacter);
}
