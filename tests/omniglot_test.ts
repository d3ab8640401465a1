import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { encode } from "fast-png";
import { loadDataset } from "../src/data/dataset.ts";
import { channelStats, classCounts, DataError } from "../src/data/split.ts";
import {
  areaResize,
  drawingImage,
  IMAGE_SIDE,
  loadOmniglot,
  omniglotTestCount,
  rotateImage,
} from "../src/data/omniglot.ts";
import { crc32, ZipArchive } from "../src/data/zip.ts";
import type { Picture } from "../src/images.ts";
import { rng } from "./util.ts";

const sharedOmniglot = fileURLToPath(new URL("../../shared/data/omniglot", import.meta.url));
const haveOmniglot = (() => {
  try {
    return Deno.statSync(join(sharedOmniglot, "omniglot_dev.zip")).isFile;
  } catch {
    return false;
  }
})();

const PIXELS = IMAGE_SIDE * IMAGE_SIDE;

// ---- Fixtures: 1-bit PNG drawings and zip files, written here ----

/** A 1-bit grey PNG, ink black (0) on white (1), as the official drawings are stored. */
function drawing(
  ink: (x: number, y: number) => boolean,
  size = { width: 105, height: 105 },
): Uint8Array {
  const { width, height } = size;
  const rowBytes = Math.ceil(width / 8);
  const packed = new Uint8Array(rowBytes * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (!ink(x, y)) packed[y * rowBytes + (x >> 3)]! |= 0x80 >> (x & 7);
    }
  }
  return encode({ width, height, data: packed, depth: 1, channels: 1 });
}

// An identity is drawn as bits on a 7x7 grid of 15x15-pixel cells; 15 input pixels are exactly 4
// output pixels (105 / 28 = 3.75), so each cell becomes a 4x4 block of 255 or 0.
function identityDrawing(id: number): Uint8Array {
  return drawing((x, y) => ((id >> (Math.floor(y / 15) * 7 + Math.floor(x / 15))) & 1) === 1);
}

/** Reads back the identity of a 28x28 image made from {@link identityDrawing}. */
function identity(image: Uint8Array): number {
  let id = 0;
  for (let bit = 0; bit < 30; bit++) {
    const [cx, cy] = [bit % 7, Math.floor(bit / 7)];
    const block = [0, 1, 2, 3].flatMap((dy) =>
      [0, 1, 2, 3].map((dx) => image[(cy * 4 + dy) * IMAGE_SIDE + cx * 4 + dx]!)
    );
    assert.ok(block.every((v) => v === block[0] && (v === 0 || v === 255)), "clean cells");
    if (block[0] === 255) id |= 1 << bit;
  }
  return id;
}

/** A character's drawings: member/file names `<serial>_<NN>.png`, identity serial * 32 + NN. */
function characterFiles(
  options: { top: string; alphabet: string; character: string; serial: number; drawings: number },
): { name: string; data: Uint8Array }[] {
  const { top, alphabet, character, serial } = options;
  // Written in reverse order, so that the loader's sorting by file name is what orders them.
  return Array.from({ length: options.drawings }, (_, i) => options.drawings - i).map((nn) => ({
    name: `${top}/${alphabet}/${character}/${String(serial).padStart(4, "0")}_` +
      `${String(nn).padStart(2, "0")}.png`,
    data: identityDrawing(serial * 32 + nn),
  }));
}

async function deflateRaw(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new CompressionStream("deflate-raw"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

interface ZipEntry {
  name: string;
  data: Uint8Array;
  deflate?: boolean;
  /** Overrides, to write broken archives. */
  method?: number;
  flags?: number;
}

/** A zip file: local headers and data, the central directory, the end record. */
async function zipOf(entries: ZipEntry[]): Promise<Uint8Array> {
  const text = new TextEncoder();
  const locals: Uint8Array[] = [];
  const centrals: Uint8Array[] = [];
  let offset = 0;
  for (const entry of entries) {
    const name = text.encode(entry.name);
    const stored = entry.deflate ? await deflateRaw(entry.data) : entry.data;
    const method = entry.method ?? (entry.deflate ? 8 : 0);
    const flags = entry.flags ?? 0;
    const crc = crc32(entry.data);
    const local = new Uint8Array(30 + name.length + stored.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 20, true);
    lv.setUint16(6, flags, true);
    lv.setUint16(8, method, true);
    lv.setUint32(14, crc, true);
    lv.setUint32(18, stored.length, true);
    lv.setUint32(22, entry.data.length, true);
    lv.setUint16(26, name.length, true);
    local.set(name, 30);
    local.set(stored, 30 + name.length);
    const central = new Uint8Array(46 + name.length);
    const cv = new DataView(central.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint16(8, flags, true);
    cv.setUint16(10, method, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, stored.length, true);
    cv.setUint32(24, entry.data.length, true);
    cv.setUint16(28, name.length, true);
    cv.setUint32(42, offset, true);
    central.set(name, 46);
    locals.push(local);
    centrals.push(central);
    offset += local.length;
  }
  const directorySize = centrals.reduce((s, c) => s + c.length, 0);
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, entries.length, true);
  ev.setUint16(10, entries.length, true);
  ev.setUint32(12, directorySize, true);
  ev.setUint32(16, offset, true);
  const out = new Uint8Array(offset + directorySize + end.length);
  let at = 0;
  for (const part of [...locals, ...centrals, end]) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

async function writeFiles(dir: string, files: { name: string; data: Uint8Array }[]) {
  for (const { name, data } of files) {
    const path = join(dir, name);
    await Deno.mkdir(join(path, ".."), { recursive: true });
    await Deno.writeFile(path, data);
  }
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "supernet_omniglot_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function isDataError(...patterns: RegExp[]): (error: Error) => boolean {
  return (error: Error) => {
    assert.ok(error instanceof DataError, `expected a DataError, got ${error}`);
    for (const p of patterns) assert.match(error.message, p);
    assert.ok(!error.message.includes("\n"), "one line");
    return true;
  };
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * The small release used below: images_background.zip (Alpha with 6 drawings of character01,
 * Bravo with character2 and character10, 20 each; members alternately stored and deflated) and
 * an extracted folder extracted/images_evaluation/ (sorted after the zip by name, before
 * it by path) (Charlie, character01, 20 drawings).
 */
async function writeRelease(dir: string): Promise<{ zip: string; folder: string }> {
  const background = [
    characterFiles({
      top: "images_background",
      alphabet: "Bravo",
      character: "character10",
      serial: 3,
      drawings: 20,
    }),
    characterFiles({
      top: "images_background",
      alphabet: "Alpha",
      character: "character01",
      serial: 1,
      drawings: 6,
    }),
    characterFiles({
      top: "images_background",
      alphabet: "Bravo",
      character: "character2",
      serial: 2,
      drawings: 20,
    }),
  ].flat().map((e, i) => ({ ...e, deflate: i % 2 === 1 }));
  const zip = join(dir, "images_background.zip");
  await Deno.writeFile(zip, await zipOf(background));
  await Deno.writeFile(
    join(dir, "unrelated.zip"),
    await zipOf([{ name: "readme.txt", data: new Uint8Array([1]) }]),
  );
  await Deno.writeFile(join(dir, "notes.txt"), new Uint8Array([1]));
  await writeFiles(
    join(dir, "extracted"),
    characterFiles({
      top: "images_evaluation",
      alphabet: "Charlie",
      character: "character01",
      serial: 4,
      drawings: 20,
    }),
  );
  return { zip, folder: join(dir, "extracted", "images_evaluation") };
}

// ---- Zip reader ----

Deno.test("crc32 of the standard check string", () => {
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  assert.equal(crc32(new Uint8Array(0)), 0);
});

Deno.test("zip: stored and deflated members read back with their names and sizes", async () => {
  const random = rng(7);
  const big = Uint8Array.from({ length: 70_000 }, (_, i) => (i % 100 < 50 ? 0 : random() * 256));
  const bytes = await zipOf([
    { name: "top/", data: new Uint8Array(0) },
    { name: "top/stored.bin", data: big },
    { name: "top/deflated.bin", data: big, deflate: true },
    { name: "top/empty.bin", data: new Uint8Array(0), deflate: true },
  ]);
  const zip = new ZipArchive(bytes, "test.zip");
  assert.deepEqual(zip.members.map((m) => [m.name, m.method, m.size]), [
    ["top/", 0, 0],
    ["top/stored.bin", 0, 70_000],
    ["top/deflated.bin", 8, 70_000],
    ["top/empty.bin", 8, 0],
  ]);
  assert.ok(zip.members[2]!.compressedSize < 70_000);
  assert.deepEqual(await zip.read(zip.members[1]!), big);
  assert.deepEqual(await zip.read(zip.members[2]!), big);
  assert.deepEqual(await zip.read(zip.members[3]!), new Uint8Array(0));
});

Deno.test("zip: truncated, corrupt, encrypted and unsupported archives are DataErrors", async () => {
  const data = new TextEncoder().encode("hello, zip ".repeat(100));
  const good = await zipOf([{ name: "a.txt", data }, { name: "b.txt", data, deflate: true }]);
  assert.throws(
    () => new ZipArchive(good.subarray(0, good.length - 30), "cut.zip"),
    isDataError(/^cut\.zip: not a zip file or truncated/, /get the file again/),
  );
  assert.throws(
    () => new ZipArchive(new Uint8Array(10), "tiny.zip"),
    isDataError(/tiny\.zip: not a zip file/),
  );
  const shifted = good.slice();
  // The central directory's first entry signature, damaged.
  const cdOffset = new DataView(good.buffer).getUint32(good.length - 6, true);
  shifted[cdOffset] = 0;
  assert.throws(
    () => new ZipArchive(shifted, "cd.zip"),
    isDataError(/cd\.zip: corrupt zip \(central directory entry 0 of 2 is damaged\)/),
  );
  const flipped = good.slice();
  flipped[30 + 5 + 3]! ^= 0xff; // A byte of a.txt's stored data.
  const zip = new ZipArchive(flipped, "crc.zip");
  await assert.rejects(
    zip.read(zip.members[0]!),
    isDataError(/crc\.zip: corrupt zip \(member 'a\.txt' fails CRC-32\)/),
  );
  const garbage = await zipOf([{ name: "g.bin", data: new Uint8Array(50).fill(0xff) }]);
  new DataView(garbage.buffer).setUint16(8, 8, true); // Local header says deflate...
  new DataView(garbage.buffer).setUint16(30 + 5 + 50 + 10, 8, true); // ...and so does the directory.
  const bad = new ZipArchive(garbage, "inflate.zip");
  await assert.rejects(
    bad.read(bad.members[0]!),
    isDataError(/inflate\.zip: corrupt zip \(member 'g\.bin' does not inflate/),
  );
  const odd = new ZipArchive(await zipOf([{ name: "x", data, method: 12 }]), "bzip2.zip");
  await assert.rejects(
    odd.read(odd.members[0]!),
    isDataError(/bzip2\.zip: member 'x' uses compression method 12; expected stored \(0\)/),
  );
  const locked = new ZipArchive(await zipOf([{ name: "x", data, flags: 1 }]), "locked.zip");
  await assert.rejects(locked.read(locked.members[0]!), isDataError(/member 'x' is encrypted/));
});

// ---- Images ----

/** Area average by brute force: every input pixel's overlap with the output footprint. */
function referenceArea(picture: Picture, size: { width: number; height: number }): Uint8Array {
  const sx = picture.width / size.width;
  const sy = picture.height / size.height;
  const c = picture.channels;
  const out = new Uint8Array(size.width * size.height * c);
  const overlap = (a0: number, a1: number, b0: number, b1: number) =>
    Math.max(0, Math.min(a1, b1) - Math.max(a0, b0));
  for (let y = 0; y < size.height; y++) {
    for (let x = 0; x < size.width; x++) {
      for (let ch = 0; ch < c; ch++) {
        let sum = 0;
        for (let v = 0; v < picture.height; v++) {
          for (let u = 0; u < picture.width; u++) {
            const w = overlap(x * sx, (x + 1) * sx, u, u + 1) *
              overlap(y * sy, (y + 1) * sy, v, v + 1);
            sum += w * picture.data[(v * picture.width + u) * c + ch]!;
          }
        }
        out[(y * size.width + x) * c + ch] = Math.floor(sum / (sx * sy) + 0.5);
      }
    }
  }
  return out;
}

Deno.test("areaResize matches the brute-force area average (105 -> 28, odd sizes, RGB)", () => {
  const random = rng(3);
  const cases: [number, number, 1 | 3, number, number][] = [
    [105, 105, 1, 28, 28],
    [7, 5, 3, 3, 2],
    [10, 6, 1, 4, 4],
    [3, 3, 1, 5, 5],
  ];
  for (const [width, height, channels, w, h] of cases) {
    const data = Uint8Array.from({ length: width * height * channels }, () => random() * 256);
    const picture = { width, height, channels, data };
    const got = areaResize(picture, { width: w, height: h });
    assert.deepEqual([got.width, got.height, got.channels], [w, h, channels]);
    assert.deepEqual(
      got.data,
      referenceArea(picture, { width: w, height: h }),
      `${width}x${height}`,
    );
  }
});

Deno.test("drawingImage: inverted (ink 255), area-averaged, 105x105 only", () => {
  assert.ok(drawingImage(drawing(() => false), "white").every((v) => v === 0));
  assert.ok(drawingImage(drawing(() => true), "black").every((v) => v === 255));
  // One ink pixel at (3, 3): output (0, 0) covers [0, 3.75)^2, so 0.75^2 of it; (1, 0) and
  // (0, 1) 0.75 * 0.25; (1, 1) 0.25^2; each over a footprint of 3.75^2 = 14.0625 pixels.
  const dot = drawingImage(drawing((x, y) => x === 3 && y === 3), "dot");
  const at = (x: number, y: number) => dot[y * IMAGE_SIDE + x];
  assert.deepEqual([at(0, 0), at(1, 0), at(0, 1), at(1, 1)], [10, 3, 3, 1]);
  assert.equal(dot.reduce((s, v) => s + v, 0), 17);
  // A 15x15 block of ink at (15, 30) is exactly the 4x4 block at (4, 8).
  const block = drawingImage(drawing((x, y) => x >= 15 && x < 30 && y >= 30 && y < 45), "b");
  for (let y = 0; y < IMAGE_SIDE; y++) {
    for (let x = 0; x < IMAGE_SIDE; x++) {
      assert.equal(block[y * IMAGE_SIDE + x], x >= 4 && x < 8 && y >= 8 && y < 12 ? 255 : 0);
    }
  }
  assert.equal(identity(drawingImage(identityDrawing(0b1011001), "id")), 0b1011001);
  assert.throws(
    () => drawingImage(drawing(() => false, { width: 104, height: 105 }), "a.zip:x/1.png"),
    isDataError(/^a\.zip:x\/1\.png: 104x105 pixels, expected a 105x105 PNG drawing/),
  );
  assert.throws(() => drawingImage(new Uint8Array([1, 2, 3]), "f.png"), isDataError(/not a PNG/));
  const broken = drawing(() => true).slice();
  const idat = broken.findIndex((_, i) =>
    String.fromCharCode(...broken.subarray(i, i + 4)) === "IDAT"
  );
  broken[idat + 6]! ^= 0xff; // Inside IDAT's data: the chunk's CRC no longer matches.
  assert.throws(() => drawingImage(broken, "crc.png"), isDataError(/^crc\.png: corrupt PNG/));
});

Deno.test("rotateImage turns counter-clockwise, as numpy's rot90", () => {
  const image = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(
    rotateImage(image, { side: 3, quarterTurns: 1 }),
    Uint8Array.from([3, 6, 9, 2, 5, 8, 1, 4, 7]),
  );
  assert.deepEqual(rotateImage(image, { side: 3, quarterTurns: 2 }), image.slice().reverse());
  assert.deepEqual(
    rotateImage(image, { side: 3, quarterTurns: 3 }),
    Uint8Array.from([7, 4, 1, 8, 5, 2, 9, 6, 3]),
  );
  assert.deepEqual(rotateImage(image, { side: 3, quarterTurns: 4 }), image);
});

Deno.test("split rule: the last quarter of the drawings, rounded, at least one, is test", () => {
  const counts = [2, 3, 4, 5, 6, 10, 20, 21];
  assert.deepEqual(counts.map(omniglotTestCount), [1, 1, 1, 1, 2, 3, 5, 5]);
});

// ---- Loader ----

Deno.test("omniglot from a zip and a folder: class order, split, pixels, groups, stats", async () => {
  await withTempDir(async (dir) => {
    const { zip, folder } = await writeRelease(dir);
    const d = await loadOmniglot({ dataDir: dir });
    assert.equal(d.name, "omniglot");
    assert.deepEqual(d.shape, [1, 28, 28]);
    assert.deepEqual(d.classNames, [
      "Alpha/character01",
      "Bravo/character2",
      "Bravo/character10",
      "Charlie/character01",
    ]);
    assert.deepEqual(d.groups, [
      { name: "Alpha", classes: [0], source: zip },
      { name: "Bravo", classes: [1, 2], source: zip },
      { name: "Charlie", classes: [3], source: folder },
    ]);
    // 6 drawings: 4 train, 2 test; 20 drawings: 15 train, 5 test.
    assert.equal(d.train.count, 4 + 15 * 3);
    assert.equal(d.test.count, 2 + 5 * 3);
    assert.deepEqual(classCounts(d.train.labels, 4), [4, 15, 15, 15]);
    assert.deepEqual(classCounts(d.test.labels, 4), [2, 5, 5, 5]);
    const serials = [1, 2, 3, 4];
    const expectSplit = (split: typeof d.train, first: (n: number) => number) => {
      let at = 0;
      for (const [label, count] of classCounts(split.labels, 4).entries()) {
        const n = label === 0 ? 6 : 20;
        for (let k = 0; k < count; k++, at++) {
          assert.equal(split.labels[at], label);
          const image = split.images.subarray(at * PIXELS, (at + 1) * PIXELS);
          assert.equal(identity(image), serials[label]! * 32 + first(n) + k, `image ${at}`);
        }
      }
    };
    expectSplit(d.train, () => 1);
    expectSplit(d.test, (n) => n - omniglotTestCount(n) + 1);
    assert.deepEqual({ mean: d.mean, std: d.std }, channelStats(d.train.images, d.shape));
    assert.ok(d.mean[0]! > 0 && d.std[0]! > 0);
    assert.match(d.source, new RegExp(escape(`${zip} (2 alphabets, 3 characters, 46 drawings)`)));
    assert.match(d.source, new RegExp(escape(`${folder} (1 alphabet, 1 character, 20 drawings)`)));
    assert.match(d.source, /4 classes, 49 train \/ 17 test images/);
    const viaRegistry = await loadDataset("omniglot", { dataDir: dir });
    assert.deepEqual(viaRegistry, d);
  });
});

Deno.test("omniglot with rotations: three extra classes per character, in its group", async () => {
  await withTempDir(async (dir) => {
    const { zip, folder } = await writeRelease(dir);
    const plain = await loadOmniglot({ dataDir: dir });
    const d = await loadOmniglot({ dataDir: dir, rotations: true });
    assert.equal(d.classNames.length, 16);
    assert.deepEqual(d.classNames.slice(4, 8), [
      "Bravo/character2",
      "Bravo/character2/rot90",
      "Bravo/character2/rot180",
      "Bravo/character2/rot270",
    ]);
    assert.deepEqual(d.groups, [
      { name: "Alpha", classes: [0, 1, 2, 3], source: zip },
      { name: "Bravo", classes: [4, 5, 6, 7, 8, 9, 10, 11], source: zip },
      { name: "Charlie", classes: [12, 13, 14, 15], source: folder },
    ]);
    assert.equal(d.train.count, plain.train.count * 4);
    assert.equal(d.test.count, plain.test.count * 4);
    assert.deepEqual(classCounts(d.test.labels, 16), [2, 2, 2, 2, ...new Array(12).fill(5)]);
    // Every image of class 4k + r is the same drawing of class k turned r times.
    for (const [split, base] of [[d.train, plain.train], [d.test, plain.test]] as const) {
      const byClass = (s: typeof split, label: number) => {
        const out: Uint8Array[] = [];
        for (let i = 0; i < s.count; i++) {
          if (s.labels[i] === label) out.push(s.images.subarray(i * PIXELS, (i + 1) * PIXELS));
        }
        return out;
      };
      for (let k = 0; k < 4; k++) {
        const originals = byClass(base, k);
        for (let r = 0; r < 4; r++) {
          const turned = originals.map((o) => rotateImage(o, { side: 28, quarterTurns: r }));
          assert.deepEqual(byClass(split, k * 4 + r), turned, `class ${k} rot ${r * 90}`);
        }
      }
    }
    assert.match(d.source, /rotations by 90, 180, 270 degrees as extra classes: 16 classes/);
  });
});

Deno.test("omniglot errors: nothing found, wrong size, corrupt zip, repeats, too few", async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(
      loadOmniglot({ dataDir: join(dir, "absent") }),
      isDataError(
        new RegExp(`^No Omniglot found: ${escape(join(dir, "absent"))} does not exist`),
        /--data-dir or SUPERNET_DATA/,
      ),
    );
    await Deno.writeFile(
      join(dir, "other.zip"),
      await zipOf([{ name: "x/y.png", data: drawing(() => false) }]),
    );
    await assert.rejects(
      loadOmniglot({ dataDir: dir }),
      isDataError(
        new RegExp(
          `looked in ${escape(dir)} and its subfolders \\(1 zip file\\(s\\) without it\\)`,
        ),
        /expected images_background\.zip, images_evaluation\.zip or a folder <top>\/<Alphabet>\/characterNN\/\*\.png/,
      ),
    );
  });
  await withTempDir(async (dir) => {
    const files = characterFiles({
      top: "t",
      alphabet: "A",
      character: "character01",
      serial: 1,
      drawings: 4,
    });
    files[1] = { ...files[1]!, data: drawing(() => false, { width: 105, height: 104 }) };
    const zip = join(dir, "a.zip");
    await Deno.writeFile(zip, await zipOf(files));
    await assert.rejects(
      loadOmniglot({ dataDir: dir }),
      isDataError(
        new RegExp(
          `^${escape(zip)}:t/A/character01/0001_03\\.png: 105x104 pixels, expected a ` +
            `105x105 PNG drawing`,
        ),
        /replace it with the official file/,
      ),
    );
    const whole = await zipOf(files);
    await Deno.writeFile(zip, whole.subarray(0, whole.length - 100));
    await assert.rejects(
      loadOmniglot({ dataDir: dir }),
      isDataError(new RegExp(`^${escape(zip)}: not a zip file or truncated`)),
    );
  });
  await withTempDir(async (dir) => {
    const { zip } = await writeRelease(dir);
    await writeFiles(
      dir,
      characterFiles({
        top: "images_background",
        alphabet: "Bravo",
        character: "character2",
        serial: 2,
        drawings: 20,
      }),
    );
    await assert.rejects(
      loadOmniglot({ dataDir: dir }),
      isDataError(
        new RegExp(
          `character Bravo/character2 is in both ` +
            `${escape(join(dir, "images_background"))} and ${escape(zip)}; expected each ` +
            `character once: keep only one of them under ${escape(dir)}`,
        ),
      ),
    );
  });
  await withTempDir(async (dir) => {
    await writeFiles(
      dir,
      characterFiles({ top: "t", alphabet: "A", character: "character01", serial: 1, drawings: 1 }),
    );
    await assert.rejects(
      loadOmniglot({ dataDir: dir }),
      isDataError(/character A\/character01 has 1 drawing\(s\), expected at least 2/),
    );
  });
});

Deno.test({
  name: "omniglot integration: the shared omniglot_dev.zip, 106 characters of 3 alphabets" +
    (haveOmniglot ? "" : " (skipped: ../shared/data/omniglot/omniglot_dev.zip is absent)"),
  ignore: !haveOmniglot,
  async fn() {
    const d = await loadDataset("omniglot", { dataDir: sharedOmniglot });
    assert.equal(d.classNames.length, 106);
    assert.deepEqual(
      d.groups?.map((g) => [g.name, g.classes.length]),
      [["Japanese_(katakana)", 47], ["Sanskrit", 42], ["Tagalog", 17]],
    );
    assert.ok(d.groups?.every((g) => g.source === join(sharedOmniglot, "omniglot_dev.zip")));
    assert.equal(d.train.count, 1590);
    assert.equal(d.test.count, 530);
    assert.deepEqual(classCounts(d.train.labels, 106), new Array(106).fill(15));
    assert.deepEqual(classCounts(d.test.labels, 106), new Array(106).fill(5));
    assert.equal(d.classNames[0], "Japanese_(katakana)/character01");
    // Ink is sparse: a dark mean, and both extremes present.
    assert.ok(d.mean[0]! > 0.03 && d.mean[0]! < 0.2, `mean ${d.mean[0]}`);
    assert.ok(d.train.images.includes(255) && d.train.images.includes(0));
    assert.match(d.source, /omniglot_dev\.zip \(3 alphabets, 106 characters, 2,120 drawings\)/);
  },
});
