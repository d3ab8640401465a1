/**
 * The registry of datasets: their names and the loader of each. The types loaders return and
 * what they share live in split.ts, below the loaders.
 *
 * @module
 */
import { DataError, type Dataset, type LoadOptions, resolveDataDir } from "./split.ts";

/** Names of the datasets `loadDataset` knows. */
export const DATASETS = ["mnist", "cifar10", "cifar100", "omniglot"] as const;

/** One of {@link DATASETS}. */
export type DatasetName = typeof DATASETS[number];

/** Loads a dataset by name; an unknown name is a DataError that lists the valid ones. */
export async function loadDataset(name: string, options: LoadOptions = {}): Promise<Dataset> {
  if (name !== "mnist") await checkDataDir(resolveDataDir(options));
  switch (name) {
    case "mnist": {
      const { loadMnist } = await import("./mnist.ts");
      return await loadMnist();
    }
    case "cifar10": {
      const { loadCifar10 } = await import("./cifar.ts");
      return await loadCifar10(options);
    }
    case "cifar100": {
      const { loadCifar100 } = await import("./cifar.ts");
      return await loadCifar100(options);
    }
    case "omniglot": {
      const { loadOmniglot } = await import("./omniglot.ts");
      return await loadOmniglot(options);
    }
    default:
      throw new DataError(`Unknown dataset '${name}': expected one of ${DATASETS.join(", ")}`);
  }
}

/** A data folder that exists must be a folder: a file there is named in a DataError. */
async function checkDataDir(dir: string): Promise<void> {
  const info = await Deno.stat(dir).catch(() => undefined);
  if (info && !info.isDirectory) {
    throw new DataError(
      `Data folder ${dir} (from --data-dir or SUPERNET_DATA) is a file; expected the folder ` +
        `that holds the dataset's files (see data/README.md)`,
    );
  }
}
