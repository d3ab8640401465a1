/**
 * Class splits for N-way few-shot episodes: training classes (the generator learns from them),
 * validation classes (they choose the adaptation recipe) and test classes (they only score).
 * Test classes are never seen in training.
 *
 * - Omniglot with the official background and evaluation files: background alphabets train; the
 *   evaluation alphabets, in name order, are split into validation (the first half) and test.
 * - Omniglot from one file or folder: its alphabets in name order, about 60/20/20 by alphabet,
 *   at least one alphabet each.
 * - CIFAR-100 with `cifar-fs`: the 64/16/20 class split of Bertinetto et al. (2019).
 * - Any other dataset: its classes in index order, about 60/20/20, at least one class each.
 *
 * @module
 */
import { DataError, type Dataset } from "../data/split.ts";

/** Class indices of each part, and how the split was made. */
export interface ClassSplit {
  /** Classes the generator trains on. */
  train: number[];
  /** Classes that choose hyperparameters and stopping. */
  validation: number[];
  /** Classes that only score. */
  test: number[];
  /** One line on how the split was made (recorded in results). */
  rule: string;
}

/** Names of the `--split` values. */
export const SPLITS = ["auto", "cifar-fs"] as const;

/**
 * Validation and test classes of CIFAR-FS (Bertinetto, Henriques, Torr and Vedaldi, "Meta-learning
 * with differentiable closed-form solvers", ICLR 2019; the lists of their code's
 * `splits/bertinetto/{val,test}.txt`); the other 64 CIFAR-100 classes train.
 */
export const CIFAR_FS = {
  validation: [
    "otter",
    "motorcycle",
    "television",
    "lamp",
    "crocodile",
    "shark",
    "butterfly",
    "beaver",
    "beetle",
    "tractor",
    "flatfish",
    "maple_tree",
    "camel",
    "crab",
    "sea",
    "cattle",
  ],
  test: [
    "baby",
    "bed",
    "bicycle",
    "chimpanzee",
    "fox",
    "leopard",
    "man",
    "pickup_truck",
    "plain",
    "poppy",
    "rocket",
    "rose",
    "snail",
    "sweet_pepper",
    "table",
    "telephone",
    "wardrobe",
    "whale",
    "woman",
    "worm",
  ],
} as const;

/** Sizes of a 60/20/20 split of n units (at least one each; needs n >= 3). */
function proportions(n: number, what: string): [number, number, number] {
  if (n < 3) {
    throw new DataError(
      `A class split needs at least 3 ${what} (training, validation, test), got ${n}; ` +
        `use a dataset with more`,
    );
  }
  const validation = Math.max(1, Math.round(n * 0.2));
  const test = Math.max(1, Math.round(n * 0.2));
  return [n - validation - test, validation, test];
}

/** The class split of `dataset` under `split` (see the module doc). */
export function classSplit(
  dataset: Pick<Dataset, "name" | "classNames" | "groups">,
  split: typeof SPLITS[number] = "auto",
): ClassSplit {
  if (split === "cifar-fs") {
    if (dataset.name !== "cifar100") {
      throw new DataError(
        `--split cifar-fs needs --dataset cifar100 (CIFAR-FS is built from CIFAR-100), got ` +
          `'${dataset.name}'`,
      );
    }
    const index = (name: string) => {
      const i = dataset.classNames.indexOf(name);
      if (i < 0) {
        throw new DataError(
          `CIFAR-100 class '${name}' of the CIFAR-FS split is not in the dataset's class names; ` +
            `expected the official fine_label_names.txt`,
        );
      }
      return i;
    };
    const validation = CIFAR_FS.validation.map(index);
    const test = CIFAR_FS.test.map(index);
    const held = new Set([...validation, ...test]);
    return {
      train: dataset.classNames.map((_, i) => i).filter((i) => !held.has(i)),
      validation,
      test,
      rule: "CIFAR-FS (Bertinetto et al. 2019): 64 training, 16 validation, 20 test classes",
    };
  }
  const groups = dataset.groups;
  if (groups && groups.length > 0) {
    const sources = [...new Set(groups.map((g) => g.source))];
    const evaluation = sources.find((s) => /evaluation/i.test(s));
    const background = sources.find((s) => /background/i.test(s));
    const byName = (gs: typeof groups) => [...gs].sort((a, b) => a.name.localeCompare(b.name));
    const classesOf = (gs: typeof groups) => gs.flatMap((g) => g.classes);
    const names = (gs: typeof groups) => gs.map((g) => g.name).join(", ");
    if (evaluation && background) {
      const evalGroups = byName(groups.filter((g) => g.source === evaluation));
      if (evalGroups.length < 2) {
        throw new DataError(
          `${evaluation} holds ${evalGroups.length} alphabet(s); expected at least 2 ` +
            `(validation and test)`,
        );
      }
      const half = Math.floor(evalGroups.length / 2);
      const train = groups.filter((g) => g.source !== evaluation);
      return {
        train: classesOf(train),
        validation: classesOf(evalGroups.slice(0, half)),
        test: classesOf(evalGroups.slice(half)),
        rule: `by alphabet: ${train.length} background alphabets train; evaluation ` +
          `alphabets ${names(evalGroups.slice(0, half))} validate; ` +
          `${names(evalGroups.slice(half))} test`,
      };
    }
    const sorted = byName(groups);
    const [nTrain, nValidation] = proportions(sorted.length, "alphabets");
    const train = sorted.slice(0, nTrain);
    const validation = sorted.slice(nTrain, nTrain + nValidation);
    const test = sorted.slice(nTrain + nValidation);
    return {
      train: classesOf(train),
      validation: classesOf(validation),
      test: classesOf(test),
      rule: `by alphabet, in name order: ${names(train)} train; ${names(validation)} ` +
        `validate; ${names(test)} test`,
    };
  }
  const n = dataset.classNames.length;
  const [nTrain, nValidation] = proportions(n, "classes");
  const all = dataset.classNames.map((_, i) => i);
  return {
    train: all.slice(0, nTrain),
    validation: all.slice(nTrain, nTrain + nValidation),
    test: all.slice(nTrain + nValidation),
    rule: `by class index: ${nTrain} training, ${nValidation} validation, ` +
      `${n - nTrain - nValidation} test classes`,
  };
}
