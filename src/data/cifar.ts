/**
 * CIFAR-10 and CIFAR-100 from their official "binary version" releases, read either from the
 * extracted folder or straight from the .tar.gz archive in the data folder.
 *
 * @module
 */
import { join } from "node:path";
import { type Checksum, download, readTarGz, verifyBytes, verifyFile } from "./archive.ts";
import {
  channelStats,
  checkLabels,
  type CoarseLabels,
  DataError,
  type Dataset,
  type LoadOptions,
  parseNames,
  resolveDataDir,
  type Split,
} from "./split.ts";

/** Where the official releases live (the page that documents them is CIFAR_PAGE). */
export const CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html";

const PIXELS = 3 * 32 * 32;

/** What distinguishes the two releases. */
interface Release {
  name: "cifar10" | "cifar100";
  title: string;
  folder: string;
  archive: string;
  url: string;
  archiveChecksum: Checksum;
  /** Per-file checksums where they are published. */
  checksums: Record<string, Checksum>;
  trainFiles: string[];
  testFiles: string[];
  /** Class-name files: fine (the labels used) first, then coarse if any. */
  nameFiles: { file: string; classes: number }[];
  /** Label bytes before the pixels: 1 (label) or 2 (coarse, fine). */
  labelBytes: 1 | 2;
}

// The CIFAR page publishes only the archives' md5 sums; the per-file sums below are those of
// the files inside the official cifar-10-binary.tar.gz, as public loaders list them (e.g. the
// CMake download checks of several C++ projects), so an extracted folder can be verified too.
const CIFAR10: Release = {
  name: "cifar10",
  title: "CIFAR-10",
  folder: "cifar-10-batches-bin",
  archive: "cifar-10-binary.tar.gz",
  url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
  archiveChecksum: { size: 170_052_171, md5: "c32a1d4ab5d03f1284b67883e8d87530" },
  checksums: {
    "data_batch_1.bin": { size: 30_730_000, md5: "5dd7e06a14cb22eb9f671a540d1b7c25" },
    "data_batch_2.bin": { size: 30_730_000, md5: "5ea93a67294ea407fff1d09f752e9692" },
    "data_batch_3.bin": { size: 30_730_000, md5: "942cd6a4bcdd0dd3c604fbe906cb4421" },
    "data_batch_4.bin": { size: 30_730_000, md5: "ae636b3ba5c66a11e91e8cb52e771fcb" },
    "data_batch_5.bin": { size: 30_730_000, md5: "53f37980c15c3d472c316c40844f3f0d" },
    "test_batch.bin": { size: 30_730_000, md5: "803d5f7f4d78ea53de84dbe85f74fb6d" },
  },
  trainFiles: [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`),
  testFiles: ["test_batch.bin"],
  nameFiles: [{ file: "batches.meta.txt", classes: 10 }],
  labelBytes: 1,
};

const CIFAR100: Release = {
  name: "cifar100",
  title: "CIFAR-100",
  folder: "cifar-100-binary",
  archive: "cifar-100-binary.tar.gz",
  url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
  archiveChecksum: { size: 168_513_733, md5: "03b5dce01913d631647c71ecec9e9cb8" },
  checksums: {
    "train.bin": { size: 153_700_000, md5: "6172c7755cfe09b2fe270c85cebc1b15" },
    "test.bin": { size: 30_740_000, md5: "4499cfba6c016c1be1438163640a0898" },
  },
  trainFiles: ["train.bin"],
  testFiles: ["test.bin"],
  nameFiles: [
    { file: "fine_label_names.txt", classes: 100 },
    { file: "coarse_label_names.txt", classes: 20 },
  ],
  labelBytes: 2,
};

/**
 * CIFAR-10 from `<dataDir>/cifar-10-batches-bin/` or `<dataDir>/cifar-10-binary.tar.gz`.
 * With `verify` (default) every file's size and published md5 are checked.
 */
export function loadCifar10(options: LoadOptions = {}): Promise<Dataset> {
  return loadRelease(CIFAR10, options);
}

/**
 * CIFAR-100 from `<dataDir>/cifar-100-binary/` or `<dataDir>/cifar-100-binary.tar.gz`; the fine
 * labels (100 classes) are the labels, the 20 coarse ones are kept in `coarse`.
 */
export function loadCifar100(options: LoadOptions = {}): Promise<Dataset> {
  return loadRelease(CIFAR100, options);
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** The release's files by name (without folder) and a description of where they came from. */
async function readRelease(
  release: Release,
  options: LoadOptions,
): Promise<{ files: Map<string, Uint8Array>; where: (file: string) => string; source: string }> {
  const dir = resolveDataDir(options);
  const verify = options.verify ?? true;
  const folder = join(dir, release.folder);
  const archive = join(dir, release.archive);
  const names = [
    ...release.trainFiles,
    ...release.testFiles,
    ...release.nameFiles.map((n) => n.file),
  ];
  if (await isDirectory(folder)) {
    const files = new Map<string, Uint8Array>();
    for (const name of names) {
      const path = join(folder, name);
      let bytes: Uint8Array;
      try {
        bytes = await Deno.readFile(path);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
        throw new DataError(
          `${path}: missing; ${folder}/ must hold ${names.join(", ")} from the official ` +
            `${release.archive} (${CIFAR_PAGE})`,
        );
      }
      const expected = release.checksums[name];
      if (verify && expected) verifyBytes(bytes, { path, expected });
      files.set(name, bytes);
    }
    const checked = verify ? "sizes and md5 verified" : "not verified";
    return { files, where: (f) => join(folder, f), source: `${folder} (${checked})` };
  }
  let checked = verify ? `md5 ${release.archiveChecksum.md5} verified` : "not verified";
  if (!(await isFile(archive))) {
    if (!options.download) {
      throw new DataError(
        `${release.title} not found: looked for ${folder}/ and ${archive}; put the official ` +
          `${release.archive} (${CIFAR_PAGE}) into ${dir}, pass --download, or point ` +
          `--data-dir or SUPERNET_DATA at the folder holding it`,
      );
    }
    await download(release.url, archive, {
      checksum: release.archiveChecksum,
      fetch: options.fetch,
    });
    checked = `downloaded from ${release.url}, md5 ${release.archiveChecksum.md5} verified`;
  } else if (verify) {
    await verifyFile(archive, release.archiveChecksum);
  }
  const members = await readTarGz(archive, names.map((n) => `${release.folder}/${n}`));
  const files = new Map(names.map((n) => [n, members.get(`${release.folder}/${n}`)!]));
  return {
    files,
    where: (f) => `${archive}:${release.folder}/${f}`,
    source: `${archive} (${checked})`,
  };
}

async function loadRelease(release: Release, options: LoadOptions): Promise<Dataset> {
  const { files, where, source } = await readRelease(release, options);
  const decoder = new TextDecoder();
  const [fine, coarse] = release.nameFiles.map(({ file, classes }) =>
    parseNames(decoder.decode(files.get(file)!), { expected: classes, file: where(file) })
  );
  const classes = release.nameFiles.map((n) => n.classes);
  const train = parseSplit(release, { files, where, names: release.trainFiles, classes });
  const test = parseSplit(release, { files, where, names: release.testFiles, classes });
  const shape: [number, number, number] = [3, 32, 32];
  const dataset: Dataset = {
    name: release.name,
    shape,
    classNames: fine!,
    train: train.split,
    test: test.split,
    ...channelStats(train.split.images, shape),
    source,
  };
  if (coarse) {
    const labels: CoarseLabels = { classNames: coarse, train: train.coarse, test: test.coarse };
    dataset.coarse = labels;
  }
  return dataset;
}

/** Parses and concatenates the record files of one split. */
function parseSplit(
  release: Release,
  options: {
    files: Map<string, Uint8Array>;
    where: (file: string) => string;
    names: string[];
    classes: number[];
  },
): { split: Split; coarse: Uint8Array } {
  const record = release.labelBytes + PIXELS;
  let count = 0;
  for (const name of options.names) {
    const length = options.files.get(name)!.length;
    if (length === 0 || length % record !== 0) {
      throw new DataError(
        `${options.where(name)}: ${length} bytes is not a whole number of ${record}-byte ` +
          `records; the file is truncated or not from the official ${release.archive}`,
      );
    }
    count += length / record;
  }
  const images = new Uint8Array(count * PIXELS);
  const labels = new Uint8Array(count);
  const coarse = new Uint8Array(release.labelBytes === 2 ? count : 0);
  const [fineClasses, coarseClasses] = options.classes;
  let at = 0;
  for (const name of options.names) {
    const bytes = options.files.get(name)!;
    for (let offset = 0, i = 0; offset < bytes.length; offset += record, i++) {
      const fine = bytes[offset + release.labelBytes - 1]!;
      const upper = release.labelBytes === 2 ? bytes[offset]! : 0;
      if (fine >= fineClasses! || (coarseClasses !== undefined && upper >= coarseClasses)) {
        const [label, limit] = fine >= fineClasses!
          ? [fine, fineClasses!]
          : [upper, coarseClasses!];
        throw new DataError(
          `${options.where(name)}: record ${i} has label ${label}, expected 0..${limit - 1}; ` +
            `the file is corrupt or from another release`,
        );
      }
      labels[at] = fine;
      if (release.labelBytes === 2) coarse[at] = upper;
      images.set(bytes.subarray(offset + release.labelBytes, offset + record), at * PIXELS);
      at++;
    }
  }
  const split: Split = { images, labels, count };
  checkLabels(split, { classes: fineClasses!, what: options.names.map(options.where).join(", ") });
  return { split, coarse };
}
