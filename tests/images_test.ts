/**
 * Pictures: PNG and JPEG decoding of every PNG colour type and depth, channel conversion, the
 * resize filter, refusal of hostile headers before decoding, and reading class folders with bad
 * files skipped or, with strict, stopping the read.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { encode as encodePng } from "fast-png";
import jpeg from "jpeg-js";
import { DataError } from "../src/data/split.ts";
import {
  decodeImage,
  describePreprocessing,
  expandPaths,
  ImageError,
  imageHeader,
  MAX_PIXELS,
  prepareImage,
  readClassFolders,
  readImages,
  resizePicture,
  toChannels,
} from "../src/images.ts";
import { rng } from "./util.ts";

function randomBytes(n: number, seed: number): Uint8Array {
  const r = rng(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
}

function png(
  width: number,
  height: number,
  data: Uint8Array | Uint16Array,
  options: { channels: number; depth?: 8 | 16 },
): Uint8Array {
  return encodePng({ width, height, data, channels: options.channels, depth: options.depth ?? 8 });
}

function jpegOf(width: number, height: number, rgba: Uint8Array, quality = 95): Uint8Array {
  return new Uint8Array(jpeg.encode({ data: rgba, width, height }, quality).data);
}

Deno.test("PNG of every channel count decodes to exact bytes; alpha is composited over black", () => {
  const grey = randomBytes(5 * 3, 1);
  assert.deepEqual(decodeImage(png(5, 3, grey, { channels: 1 })), {
    width: 5,
    height: 3,
    channels: 1,
    data: grey,
  });
  const rgb = randomBytes(4 * 2 * 3, 2);
  assert.deepEqual(decodeImage(png(4, 2, rgb, { channels: 3 })).data, rgb);
  // RGBA: an opaque pixel keeps its colour, a transparent one is black, half alpha halves it.
  const rgba = new Uint8Array([10, 20, 30, 255, 200, 100, 50, 0, 200, 100, 50, 128]);
  const decoded = decodeImage(png(3, 1, rgba, { channels: 4 }));
  assert.equal(decoded.channels, 3);
  assert.deepEqual(
    decoded.data,
    Uint8Array.from([10, 20, 30, 0, 0, 0, ...[200, 100, 50].map((v) => Math.round(v * 128 / 255))]),
  );
  // Grey + alpha.
  const ga = decodeImage(png(2, 1, new Uint8Array([100, 255, 100, 0]), { channels: 2 }));
  assert.deepEqual([ga.channels, ...ga.data], [1, 100, 0]);
  // 16 bits: 65535 -> 255, 257 * v -> v.
  const deep = decodeImage(
    png(3, 1, new Uint16Array([65535, 257 * 7, 0]), { channels: 1, depth: 16 }),
  );
  assert.deepEqual([...deep.data], [255, 7, 0]);
});

Deno.test("palette and 1-bit PNGs decode to the colours they index", () => {
  // A 2x2 1-bit grey image: rows [1, 0] and [0, 1] packed into one byte each.
  const oneBit = encodePng({
    width: 2,
    height: 2,
    data: new Uint8Array([0b10000000, 0b01000000]),
    channels: 1,
    depth: 1,
  });
  assert.deepEqual([...decodeImage(oneBit).data], [255, 0, 0, 255]);
  const indexed = encodePng({
    width: 3,
    height: 1,
    data: new Uint8Array([2, 0, 1]),
    channels: 1,
    depth: 8,
    palette: [[255, 0, 0], [0, 255, 0], [0, 0, 255]],
  });
  assert.deepEqual([...decodeImage(indexed).data], [0, 0, 255, 255, 0, 0, 0, 255, 0]);
});

Deno.test("JPEG decodes close to the encoded colours", () => {
  const w = 16;
  const h = 8;
  const rgba = new Uint8Array(w * h * 4);
  for (let p = 0; p < w * h; p++) rgba.set([200, 40, 90, 255], p * 4);
  const decoded = decodeImage(jpegOf(w, h, rgba));
  assert.deepEqual([decoded.width, decoded.height, decoded.channels], [16, 8, 3]);
  for (let p = 0; p < w * h; p++) {
    for (const [c, want] of [200, 40, 90].entries()) {
      assert.ok(Math.abs(decoded.data[p * 3 + c]! - want) <= 3, `pixel ${p} channel ${c}`);
    }
  }
});

Deno.test("bad files: empty, unsupported, truncated and corrupt are ImageErrors naming why", () => {
  const good = png(8, 8, randomBytes(64, 3), { channels: 1 });
  const goodJpeg = jpegOf(8, 8, new Uint8Array(256).fill(120));
  const cases: [Uint8Array, RegExp][] = [
    [new Uint8Array(), /empty file/],
    [new TextEncoder().encode("GIF89a......"), /not a PNG or JPEG/],
    [good.subarray(0, 20), /truncated PNG header/],
    [good.subarray(0, good.length - 12), /truncated PNG \(no IEND/],
    [goodJpeg.subarray(0, goodJpeg.length - 40), /truncated JPEG/],
    [goodJpeg.subarray(0, 4), /truncated JPEG/],
  ];
  const flipped = good.slice();
  flipped[good.length - 20]! ^= 0xff; // inside the IDAT data: the CRC no longer matches
  cases.push([flipped, /corrupt PNG/]);
  for (const [bytes, message] of cases) {
    assert.throws(
      () => decodeImage(bytes),
      (e: Error) => e instanceof ImageError && message.test(e.message),
      String(message),
    );
  }
});

Deno.test("a header claiming enormous dimensions is refused before decoding", () => {
  // A PNG signature and IHDR of 100,000 x 100,000 pixels with no image data: decoding would need
  // 10 GB, so the size check must come first (and fast).
  const bytes = new Uint8Array(33);
  bytes.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]);
  bytes.set(new TextEncoder().encode("IHDR"), 12);
  const view = new DataView(bytes.buffer);
  view.setUint32(16, 100_000);
  view.setUint32(20, 100_000);
  bytes.set([8, 0, 0, 0, 0], 24);
  assert.deepEqual(imageHeader(bytes), { format: "png", width: 100_000, height: 100_000 });
  const started = performance.now();
  assert.throws(() => decodeImage(bytes), /100000x100000 pixels exceeds the limit of 50,000,000/);
  assert.ok(performance.now() - started < 100);
  // A JPEG whose frame header claims 65,535 x 65,535.
  const jpg = jpegOf(8, 8, new Uint8Array(256).fill(50));
  const at = jpg.findIndex((b, i) => b === 0xff && jpg[i + 1] === 0xc0);
  const big = jpg.slice();
  new DataView(big.buffer).setUint16(at + 5, 65535);
  new DataView(big.buffer).setUint16(at + 7, 65535);
  assert.throws(() => decodeImage(big), /65535x65535 pixels exceeds the limit/);
  assert.ok(MAX_PIXELS === 50_000_000);
});

Deno.test("grey <-> RGB: copies, and BT.601 luma", () => {
  const rgb = {
    width: 2,
    height: 1,
    channels: 3 as const,
    data: new Uint8Array([255, 0, 0, 10, 200, 30]),
  };
  assert.deepEqual([...toChannels(rgb, 1).data], [
    Math.round(0.299 * 255),
    Math.round(0.299 * 10 + 0.587 * 200 + 0.114 * 30),
  ]);
  const grey = { width: 2, height: 1, channels: 1 as const, data: new Uint8Array([7, 250]) };
  assert.deepEqual([...toChannels(grey, 3).data], [7, 7, 7, 250, 250, 250]);
  assert.equal(toChannels(grey, 1), grey);
});

Deno.test("resize: same size is exact, constants stay, ramps stay linear, crop takes the centre", () => {
  const bytes = randomBytes(7 * 5, 4);
  const same = resizePicture({ width: 7, height: 5, channels: 1, data: bytes }, {
    width: 7,
    height: 5,
    fit: "crop",
  });
  assert.deepEqual(same.data, bytes);
  const flat = resizePicture(
    { width: 40, height: 30, channels: 3, data: new Uint8Array(40 * 30 * 3).fill(93) },
    { width: 9, height: 11, fit: "stretch" },
  );
  assert.ok(flat.data.every((v) => v === 93));
  // A horizontal ramp v = 4x + 2 shrunk by 4 gives the mean over each output pixel's footprint
  // away from the edges: the triangle filter is symmetric, so it is 4 * centre + 2.
  const w = 64;
  const ramp = new Uint8Array(w).map((_, x) => 4 * x + 2);
  const small = resizePicture({ width: w, height: 1, channels: 1, data: ramp }, {
    width: 16,
    height: 1,
    fit: "stretch",
  });
  for (let i = 2; i < 13; i++) {
    const centre = (i + 0.5) * 4 - 0.5;
    assert.ok(Math.abs(small.data[i]! - (4 * centre + 2)) <= 0.5, `output ${i}: ${small.data[i]}`);
  }
  // A 30x10 picture with black side bands (10 columns each) and a white centre: crop to a
  // square keeps only the white centre; stretch keeps the bands.
  const banded = new Uint8Array(30 * 10).map((_, p) => (p % 30 >= 10 && p % 30 < 20 ? 255 : 0));
  const picture = { width: 30, height: 10, channels: 1 as const, data: banded };
  assert.ok(
    resizePicture(picture, { width: 5, height: 5, fit: "crop" }).data.every((v) => v === 255),
  );
  const stretched = resizePicture(picture, { width: 6, height: 5, fit: "stretch" }).data;
  assert.equal(stretched[0], 0);
  assert.equal(stretched[5], 0);
});

Deno.test("prepareImage gives planes [C, H, W]; an RGB photo of another size becomes grey 28x28", () => {
  const rgb = randomBytes(3 * 4 * 2, 5);
  const planes = prepareImage(png(4, 2, rgb, { channels: 3 }), { shape: [3, 2, 4], fit: "crop" });
  for (let p = 0; p < 8; p++) {
    for (let c = 0; c < 3; c++) assert.equal(planes[c * 8 + p], rgb[p * 3 + c]);
  }
  const photo = new Uint8Array(60 * 45 * 4).fill(255);
  const grey = prepareImage(jpegOf(60, 45, photo), { shape: [1, 28, 28], fit: "crop" });
  assert.equal(grey.length, 784);
  assert.ok(grey.every((v) => v >= 250));
  const pre = describePreprocessing([3, 32, 32], { mean: [0.5, 0.4, 0.3], std: [0.2, 0.2, 0.2] });
  assert.equal(pre.channels, "RGB");
  assert.equal(pre.scale, 1 / 255);
  assert.deepEqual(pre.inputShape, [3, 32, 32]);
});

Deno.test("class folders: names, positive class, bad files skipped with counts, or strict", async () => {
  const dir = await Deno.makeTempDir({ prefix: "images_test_" });
  try {
    await Deno.mkdir(join(dir, "cats"));
    await Deno.mkdir(join(dir, "dogs"));
    await Deno.writeFile(
      join(dir, "cats", "a.png"),
      png(6, 6, randomBytes(36, 6), { channels: 1 }),
    );
    await Deno.writeFile(join(dir, "cats", "b.jpg"), jpegOf(10, 6, randomBytes(240, 7)));
    await Deno.writeFile(
      join(dir, "dogs", "c.png"),
      png(3, 9, randomBytes(81, 8), { channels: 3 }),
    );
    await Deno.writeFile(join(dir, "dogs", "empty.png"), new Uint8Array());
    await Deno.writeTextFile(join(dir, "dogs", "notes.txt"), "not a picture");
    await Deno.writeTextFile(join(dir, "dogs", ".hidden"), "ignored");
    const skipped: string[] = [];
    const read = await readClassFolders(dir, {
      shape: [1, 4, 4],
      onSkip: (s) => skipped.push(`${s.file}: ${s.reason}`),
    });
    assert.deepEqual(read.classNames, ["cats", "dogs"]);
    assert.equal(read.split.count, 3);
    assert.deepEqual([...read.split.labels], [0, 0, 1]);
    assert.equal(read.split.images.length, 3 * 16);
    assert.deepEqual(read.used.map((f) => f.slice(dir.length + 1)), [
      "cats/a.png",
      "cats/b.jpg",
      "dogs/c.png",
    ]);
    assert.deepEqual(skipped, [
      `${join(dir, "dogs", "empty.png")}: empty file`,
      `${join(dir, "dogs", "notes.txt")}: not a PNG or JPEG file (unsupported format)`,
    ]);
    assert.equal(read.skipped.length, 2);

    const flipped = await readClassFolders(dir, { shape: [1, 4, 4], positive: "cats" });
    assert.deepEqual(flipped.classNames, ["dogs", "cats"]);
    assert.deepEqual([...flipped.split.labels], [0, 1, 1]);

    await assert.rejects(
      () => readClassFolders(dir, { shape: [1, 4, 4], strict: true }),
      (e: Error) =>
        e instanceof ImageError && e.message.includes("empty.png: empty file (--strict"),
    );
    await assert.rejects(
      () => readClassFolders(dir, { shape: [1, 4, 4], positive: "birds" }),
      /--positive 'birds' is not a subfolder/,
    );
    // A test folder must have the same classes.
    await assert.rejects(
      () =>
        readClassFolders(dir, {
          shape: [1, 4, 4],
          classNames: ["cats", "cows"],
          flag: "--test-dir",
        }),
      /not a subfolder|expected cats and cows/,
    );
    // No usable image of a class.
    await Deno.remove(join(dir, "dogs", "c.png"));
    await assert.rejects(
      () => readClassFolders(dir, { shape: [1, 4, 4] }),
      (e: Error) =>
        e instanceof DataError &&
        /dogs has no usable image \(2 file\(s\), 2 skipped\)/.test(e.message),
    );
    // One class folder, or three.
    await Deno.mkdir(join(dir, "birds"));
    await assert.rejects(
      () => readClassFolders(dir, { shape: [1, 4, 4] }),
      /has 3 subfolders \(birds, cats, dogs\); expected exactly two/,
    );
    await assert.rejects(
      () => readClassFolders(join(dir, "cats", "a.png"), { shape: [1, 4, 4] }),
      /is a file: expected a folder/,
    );
    // Predict's file list: folders give their PNG and JPEG files in name order.
    assert.deepEqual(await expandPaths([join(dir, "cats"), join(dir, "cats", "a.png")]), [
      join(dir, "cats", "a.png"),
      join(dir, "cats", "b.jpg"),
      join(dir, "cats", "a.png"),
    ]);
    await assert.rejects(
      () => expandPaths([join(dir, "birds")]),
      /holds no \.png, \.jpg or \.jpeg/,
    );
    const none = await readImages([join(dir, "nothing.png")], { shape: [1, 4, 4] }).catch((e) => e);
    assert.ok(none instanceof Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
