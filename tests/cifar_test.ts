import assert from "node:assert/strict";
import { join } from "node:path";
import { download, md5, md5File, readTarGz, verifyBytes, verifyFile } from "../src/data/archive.ts";
import { loadCifar10, loadCifar100 } from "../src/data/cifar.ts";
import { loadDataset } from "../src/data/dataset.ts";
import {
  channelStats,
  classCounts,
  DataError,
  type Dataset,
  resolveDataDir,
} from "../src/data/split.ts";
import { rng } from "./util.ts";

const PIXELS = 3072;
const sharedDir = decodeURIComponent(new URL("../../shared/data/", import.meta.url).pathname);
const haveCifar10 = (() => {
  try {
    return Deno.statSync(join(sharedDir, "cifar-10-batches-bin")).isDirectory;
  } catch {
    return false;
  }
})();

// ---- Fixtures in the official formats ----

/** Records of the official binary layout: label byte(s), then 3,072 pixel bytes (R, G, B planes). */
function records(
  count: number,
  options: { seed: number; labels: (i: number) => number[] },
): Uint8Array {
  const random = rng(options.seed);
  const labelBytes = options.labels(0).length;
  const record = labelBytes + PIXELS;
  const out = new Uint8Array(count * record);
  for (let i = 0; i < count; i++) {
    out.set(options.labels(i), i * record);
    for (let k = 0; k < PIXELS; k++) out[i * record + labelBytes + k] = Math.floor(random() * 256);
  }
  return out;
}

const fineNames = Array.from({ length: 100 }, (_, i) => `fine${i}`);
const coarseNames = Array.from({ length: 20 }, (_, i) => `coarse${i}`);
const tenNames = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship"]
  .concat("truck");

/** The files of a small CIFAR-100 release: every fine class twice in train, once in test. */
function cifar100Files(): Map<string, Uint8Array> {
  const text = new TextEncoder();
  // Fine label i % 100, coarse label (i % 100) % 20 (not the real mapping; any in range will do).
  const labels = (i: number) => [(i % 100) % 20, (i * 37) % 100];
  return new Map([
    ["train.bin", records(200, { seed: 1, labels })],
    ["test.bin", records(100, { seed: 2, labels })],
    ["fine_label_names.txt", text.encode(fineNames.join("\n") + "\n")],
    ["coarse_label_names.txt", text.encode(coarseNames.join("\n") + "\n")],
  ]);
}

/** A small CIFAR-10 release: 5 batches of 20 records, a test batch of 10, the names file. */
function cifar10Files(): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>();
  for (let b = 1; b <= 5; b++) {
    files.set(`data_batch_${b}.bin`, records(20, { seed: 10 + b, labels: (i) => [(i + b) % 10] }));
  }
  files.set("test_batch.bin", records(10, { seed: 20, labels: (i) => [i % 10] }));
  files.set("batches.meta.txt", new TextEncoder().encode(tenNames.join("\n") + "\n\n"));
  return files;
}

async function writeFolder(dir: string, files: Map<string, Uint8Array>): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  for (const [name, bytes] of files) await Deno.writeFile(join(dir, name), bytes);
}

/** A ustar archive of `entries` (directories end with "/"). */
function ustar(entries: { name: string; data?: Uint8Array; type?: string }[]): Uint8Array {
  const blocks: Uint8Array[] = [];
  const text = new TextEncoder();
  const field = (header: Uint8Array, offset: number, length: number, value: string) =>
    header.set(text.encode(value).subarray(0, length), offset);
  const octal = (value: number, length: number) => value.toString(8).padStart(length - 1, "0");
  for (const { name, data, type } of entries) {
    const header = new Uint8Array(512);
    const size = data?.length ?? 0;
    field(header, 0, 100, name);
    field(header, 100, 8, octal(data ? 0o644 : 0o755, 8));
    field(header, 108, 8, octal(1000, 8));
    field(header, 116, 8, octal(1000, 8));
    field(header, 124, 12, octal(size, 12));
    field(header, 136, 12, octal(1_244_000_000, 12));
    field(header, 148, 8, "        ");
    field(header, 156, 1, type ?? (data ? "0" : "5"));
    field(header, 257, 6, "ustar");
    header[262] = 0;
    field(header, 263, 2, "00");
    field(header, 265, 32, "user");
    field(header, 297, 32, "user");
    const sum = header.reduce((s, b) => s + b, 0);
    field(header, 148, 8, octal(sum, 7) + "\0");
    blocks.push(header);
    if (data) {
      const padded = new Uint8Array(Math.ceil(size / 512) * 512);
      padded.set(data);
      blocks.push(padded);
    }
  }
  blocks.push(new Uint8Array(1024));
  const out = new Uint8Array(blocks.reduce((s, b) => s + b.length, 0));
  let at = 0;
  for (const b of blocks) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}

async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function archiveOf(folder: string, files: Map<string, Uint8Array>): Uint8Array {
  return ustar([
    { name: `${folder}/` },
    ...[...files].map(([name, data]) => ({ name: `${folder}/${name}`, data })),
  ]);
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "supernet_data_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function rejectsWith(promise: Promise<unknown>, ...patterns: RegExp[]): Promise<void> {
  await assert.rejects(promise, (error: Error) => {
    assert.ok(error instanceof DataError, `expected a DataError, got ${error}`);
    for (const p of patterns) assert.match(error.message, p);
    assert.ok(!error.message.includes("\n"), "one line");
    return true;
  });
}

function withoutSource(d: Dataset): Omit<Dataset, "source"> {
  const { source: _, ...rest } = d;
  return rest;
}

async function snapshot(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) { for (const [k, v] of await snapshot(path)) out.set(k, v); }
    else out.set(path, `${(await Deno.stat(path)).mtime?.getTime()}:${await md5File(path)}`);
  }
  return out;
}

// ---- CIFAR-100 ----

Deno.test("cifar100 from the extracted folder: records, labels, names, stats", async () => {
  await withTempDir(async (dir) => {
    const files = cifar100Files();
    await writeFolder(join(dir, "cifar-100-binary"), files);
    const before = await snapshot(dir);
    const d = await loadDataset("cifar100", { dataDir: dir, verify: false });
    assert.deepEqual(await snapshot(dir), before, "user files are never modified");
    assert.equal(d.name, "cifar100");
    assert.deepEqual(d.shape, [3, 32, 32]);
    assert.deepEqual(d.classNames, fineNames);
    assert.deepEqual(d.coarse?.classNames, coarseNames);
    assert.equal(d.train.count, 200);
    assert.equal(d.test.count, 100);
    const train = files.get("train.bin")!;
    for (const i of [0, 1, 57, 199]) {
      assert.equal(d.train.labels[i], train[i * 3074 + 1], `fine label ${i}`);
      assert.equal(d.coarse?.train[i], train[i * 3074], `coarse label ${i}`);
      assert.deepEqual(
        d.train.images.subarray(i * PIXELS, (i + 1) * PIXELS),
        train.subarray(i * 3074 + 2, (i + 1) * 3074),
      );
    }
    assert.ok(classCounts(d.test.labels, 100).every((c) => c === 1));
    assert.deepEqual({ mean: d.mean, std: d.std }, channelStats(d.train.images, d.shape));
    assert.match(d.source, /cifar-100-binary \(not verified\)/);
  });
});

Deno.test("cifar100 from cifar-100-binary.tar.gz equals the folder", async () => {
  await withTempDir(async (dir) => {
    const files = cifar100Files();
    await writeFolder(join(dir, "folder", "cifar-100-binary"), files);
    await Deno.mkdir(join(dir, "archive"));
    const archive = join(dir, "archive", "cifar-100-binary.tar.gz");
    await Deno.writeFile(archive, await gzip(archiveOf("cifar-100-binary", files)));
    const fromFolder = await loadCifar100({ dataDir: join(dir, "folder"), verify: false });
    const fromArchive = await loadCifar100({ dataDir: join(dir, "archive"), verify: false });
    assert.deepEqual(withoutSource(fromArchive), withoutSource(fromFolder));
    assert.match(fromArchive.source, /cifar-100-binary\.tar\.gz \(not verified\)/);
  });
});

Deno.test("verification: sizes and published md5 sums, with --no-verify in the message", async () => {
  await withTempDir(async (dir) => {
    const files = cifar100Files();
    await writeFolder(join(dir, "cifar-100-binary"), files);
    await rejectsWith(
      loadCifar100({ dataDir: dir }),
      /train\.bin: size is 614800 bytes, expected 153700000 bytes/,
      /pass --no-verify to use it anyway/,
    );
    await Deno.remove(join(dir, "cifar-100-binary"), { recursive: true });
    const archive = join(dir, "cifar-100-binary.tar.gz");
    await Deno.writeFile(archive, await gzip(archiveOf("cifar-100-binary", files)));
    await rejectsWith(
      loadCifar100({ dataDir: dir }),
      /cifar-100-binary\.tar\.gz: size is \d+ bytes, expected 168513733 bytes/,
      /--no-verify/,
    );
    const bytes = files.get("test.bin")!;
    const path = join(dir, "test.bin");
    await Deno.writeFile(path, bytes);
    const right = { size: bytes.length, md5: md5(bytes) };
    await verifyFile(path, right);
    verifyBytes(bytes, { path, expected: right });
    const wrong = { size: bytes.length, md5: "4499cfba6c016c1be1438163640a0898" };
    await rejectsWith(
      verifyFile(path, wrong),
      new RegExp(`test\\.bin: md5 is ${right.md5}, expected 4499cfba6c016c1be1438163640a0898`),
      /--no-verify/,
    );
    assert.throws(() => verifyBytes(bytes, { path, expected: wrong }), DataError);
  });
});

Deno.test("missing data: names every place looked and the official file to get", async () => {
  await withTempDir(async (dir) => {
    await rejectsWith(
      loadDataset("cifar100", { dataDir: dir }),
      new RegExp(`looked for ${dir}/cifar-100-binary/ and ${dir}/cifar-100-binary\\.tar\\.gz`),
      /official cifar-100-binary\.tar\.gz/,
      /--download/,
    );
    await rejectsWith(loadCifar10({ dataDir: dir }), /cifar-10-binary\.tar\.gz/);
    const files = cifar100Files();
    files.delete("test.bin");
    await writeFolder(join(dir, "cifar-100-binary"), files);
    await rejectsWith(
      loadCifar100({ dataDir: dir, verify: false }),
      /cifar-100-binary\/test\.bin: missing/,
    );
    await rejectsWith(loadDataset("svhn"), /Unknown dataset 'svhn': expected one of mnist/);
  });
});

Deno.test("bad files: partial records, labels out of range, name files, empty classes", async () => {
  const cases: [string, (files: Map<string, Uint8Array>) => void, RegExp[]][] = [
    ["partial record", (f) => f.set("test.bin", f.get("test.bin")!.subarray(0, 3074 * 99 + 5)), [
      /test\.bin: 304331 bytes is not a whole number of 3074-byte records/,
    ]],
    ["empty file", (f) => f.set("test.bin", new Uint8Array(0)), [/test\.bin: 0 bytes/]],
    ["fine label", (f) => f.get("train.bin")!.set([3, 100], 3074 * 7), [
      /train\.bin: record 7 has label 100, expected 0\.\.99/,
    ]],
    ["coarse label", (f) => f.get("test.bin")!.set([20], 3074 * 2), [
      /test\.bin: record 2 has label 20, expected 0\.\.19/,
    ]],
    ["name lines", (f) => f.set("fine_label_names.txt", new TextEncoder().encode("a\nb\n")), [
      /fine_label_names\.txt: expected 100 class names, one a line, found 2 lines/,
    ]],
    ["blank name", (f) => f.set("coarse_label_names.txt", new TextEncoder().encode("a\n\nb\n")), [
      /coarse_label_names\.txt: expected 20 class names/,
    ]],
    ["empty class", (f) => {
      const test = f.get("test.bin")!;
      for (let i = 0; i < 100; i++) if (test[i * 3074 + 1] === 42) test[i * 3074 + 1] = 43;
    }, [/test\.bin: class 42 has no images/]],
  ];
  for (const [what, spoil, patterns] of cases) {
    await withTempDir(async (dir) => {
      const files = cifar100Files();
      spoil(files);
      await writeFolder(join(dir, "cifar-100-binary"), files);
      await rejectsWith(loadCifar100({ dataDir: dir, verify: false }), ...patterns).catch((e) => {
        throw new Error(`${what}: ${e.message}`);
      });
    });
  }
});

Deno.test("archives: truncated gzip, truncated tar, missing member, not a tar", async () => {
  await withTempDir(async (dir) => {
    const files = cifar100Files();
    const tar = archiveOf("cifar-100-binary", files);
    const path = join(dir, "cifar-100-binary.tar.gz");
    const gz = await gzip(tar);
    await Deno.writeFile(path, gz.subarray(0, Math.floor(gz.length / 2)));
    await rejectsWith(loadCifar100({ dataDir: dir, verify: false }), /tar\.gz: truncated/);
    await Deno.writeFile(path, await gzip(tar.subarray(0, 512 + 512 + 100_000)));
    await rejectsWith(
      loadCifar100({ dataDir: dir, verify: false }),
      /tar\.gz: archive ends inside member 'cifar-100-binary\/train\.bin' \(truncated\)/,
    );
    files.delete("coarse_label_names.txt");
    await Deno.writeFile(path, await gzip(archiveOf("cifar-100-binary", files)));
    await rejectsWith(
      loadCifar100({ dataDir: dir, verify: false }),
      /has no member 'cifar-100-binary\/coarse_label_names\.txt'; expected the official/,
    );
    // GNU long names and "./" prefixes, as other tar programs write them.
    const long = `cifar-100-binary/${"x".repeat(120)}.bin`;
    const payload = new Uint8Array([1, 2, 3]);
    await Deno.writeFile(
      path,
      await gzip(ustar([
        { name: "././@LongLink", data: new TextEncoder().encode(long + "\0"), type: "L" },
        { name: long.slice(0, 100), data: payload },
        { name: "./cifar-100-binary/short.bin", data: payload },
      ])),
    );
    const members = await readTarGz(path, [long, "cifar-100-binary/short.bin"]);
    assert.deepEqual(members.get(long), payload);
    assert.deepEqual(members.get("cifar-100-binary/short.bin"), payload);
    await Deno.writeFile(path, await gzip(new Uint8Array(2048).fill(7)));
    await rejectsWith(readTarGz(path, ["x"]), /not a tar archive/);
    await Deno.writeFile(path, new Uint8Array(100));
    await rejectsWith(readTarGz(path, ["x"]), /not a gzip file/);
  });
});

// ---- CIFAR-10 ----

Deno.test("cifar10 from the folder and from cifar-10-binary.tar.gz", async () => {
  await withTempDir(async (dir) => {
    const files = cifar10Files();
    await writeFolder(join(dir, "a", "cifar-10-batches-bin"), files);
    await Deno.mkdir(join(dir, "b"));
    await Deno.writeFile(
      join(dir, "b", "cifar-10-binary.tar.gz"),
      await gzip(archiveOf("cifar-10-batches-bin", files)),
    );
    const a = await loadCifar10({ dataDir: join(dir, "a"), verify: false });
    const b = await loadCifar10({ dataDir: join(dir, "b"), verify: false });
    assert.deepEqual(withoutSource(a), withoutSource(b));
    assert.equal(a.coarse, undefined);
    assert.deepEqual(a.classNames, tenNames);
    assert.equal(a.train.count, 100);
    assert.equal(a.test.count, 10);
    // Batches are concatenated in order: record 3 of batch 2 is training image 23.
    const batch2 = files.get("data_batch_2.bin")!;
    assert.equal(a.train.labels[23], batch2[3 * 3073]);
    assert.deepEqual(
      a.train.images.subarray(23 * PIXELS, 24 * PIXELS),
      batch2.subarray(3 * 3073 + 1, 4 * 3073),
    );
    await rejectsWith(
      loadCifar10({ dataDir: join(dir, "a") }),
      /data_batch_1\.bin: size is 61460 bytes, expected 30730000 bytes/,
    );
  });
});

// ---- Download ----

Deno.test("download: verified, atomic, never leaves partial files", async () => {
  await withTempDir(async (dir) => {
    const payload = new Uint8Array(70_000).map((_, i) => (i * 31) % 251);
    const checksum = { size: payload.length, md5: md5(payload) };
    const served: string[] = [];
    const fake: typeof fetch = (input) => {
      served.push(String(input));
      return Promise.resolve(new Response(payload as Uint8Array<ArrayBuffer>));
    };
    const dest = join(dir, "data", "file.tar.gz");
    await download("https://example.invalid/file.tar.gz", dest, { checksum, fetch: fake });
    assert.deepEqual(await Deno.readFile(dest), payload);
    assert.deepEqual(served, ["https://example.invalid/file.tar.gz"]);
    assert.deepEqual([...Deno.readDirSync(join(dir, "data"))].map((e) => e.name), ["file.tar.gz"]);

    const other = join(dir, "data", "other.tar.gz");
    await rejectsWith(
      download("https://example.invalid/x", other, {
        checksum: { md5: "00000000000000000000000000000000" },
        fetch: fake,
      }),
      /Could not download https:\/\/example\.invalid\/x \(md5 is [0-9a-f]{32}, expected 0{32}; nothing was saved\)/,
    );
    const missing: typeof fetch = () => Promise.resolve(new Response("no", { status: 404 }));
    await rejectsWith(download("https://example.invalid/y", other, { fetch: missing }), /HTTP 404/);
    const offline: typeof fetch = () => Promise.reject(new TypeError("dns error"));
    await rejectsWith(
      download("https://example.invalid/z", other, { fetch: offline }),
      /dns error/,
    );
    assert.deepEqual([...Deno.readDirSync(join(dir, "data"))].map((e) => e.name), ["file.tar.gz"]);

    // The built-in fetch reads file:// URLs, so the real code path runs without a network.
    const viaFile = join(dir, "copy.tar.gz");
    await download(new URL(`file://${dest}`).href, viaFile, { checksum });
    assert.deepEqual(await Deno.readFile(viaFile), payload);
  });
});

Deno.test("--download fetches the official URL and rejects an archive with the wrong md5", async () => {
  await withTempDir(async (dir) => {
    const archive = await gzip(archiveOf("cifar-100-binary", cifar100Files()));
    const urls: string[] = [];
    const fake: typeof fetch = (input) => {
      urls.push(String(input));
      return Promise.resolve(new Response(archive as Uint8Array<ArrayBuffer>));
    };
    await rejectsWith(
      loadDataset("cifar100", { dataDir: dir, download: true, fetch: fake }),
      /got \d+ bytes, expected 168513733; nothing was saved/,
    );
    assert.deepEqual(urls, ["https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"]);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});

Deno.test("data folder: option, then SUPERNET_DATA, then <project>/data", () => {
  const keep = Deno.env.get("SUPERNET_DATA");
  try {
    Deno.env.delete("SUPERNET_DATA");
    const project = decodeURIComponent(new URL("../data", import.meta.url).pathname);
    assert.equal(resolveDataDir(), project);
    Deno.env.set("SUPERNET_DATA", "/somewhere");
    assert.equal(resolveDataDir(), "/somewhere");
    assert.equal(resolveDataDir({ dataDir: "/given" }), "/given");
  } finally {
    if (keep === undefined) Deno.env.delete("SUPERNET_DATA");
    else Deno.env.set("SUPERNET_DATA", keep);
  }
});

Deno.test({
  name: "cifar10 integration: the shared copy, 50,000 / 10,000 images, 5,000 / 1,000 per class" +
    (haveCifar10 ? "" : " (skipped: ../shared/data/cifar-10-batches-bin is absent)"),
  ignore: !haveCifar10,
  async fn() {
    // These pixels are not the official ones, so the published md5 sums reject them.
    await rejectsWith(
      loadDataset("cifar10", { dataDir: sharedDir }),
      /data_batch_1\.bin: md5 is [0-9a-f]{32}, expected 5dd7e06a14cb22eb9f671a540d1b7c25/,
      /pass --no-verify to use it anyway/,
    );
    const d = await loadDataset("cifar10", { dataDir: sharedDir, verify: false });
    assert.equal(d.train.count, 50_000);
    assert.equal(d.test.count, 10_000);
    assert.deepEqual(classCounts(d.train.labels, 10), new Array(10).fill(5000));
    assert.deepEqual(classCounts(d.test.labels, 10), new Array(10).fill(1000));
    assert.deepEqual(d.classNames, tenNames);
    // Per the shared README: mean 0.4913, 0.4821, 0.4465 and std 0.2452, 0.2428, 0.2606.
    [0.4913, 0.4821, 0.4465].forEach((m, c) => assert.ok(Math.abs(d.mean[c]! - m) < 2e-4));
    [0.2452, 0.2428, 0.2606].forEach((s, c) => assert.ok(Math.abs(d.std[c]! - s) < 2e-4));
    assert.match(d.source, /cifar-10-batches-bin \(not verified\)/);
  },
});
