/**
 * `experiment fewshot`: N-way K-shot episodes of classes never seen in training, in one harness
 * for every method, scored on the same test episodes (mean accuracy over episodes with the 95%
 * interval 1.96 x std / sqrt(episodes), as the few-shot papers report).
 *
 * Generators (target `conv4`, N outputs, softmax cross-entropy), trained on the training classes:
 * - `table`, the original SuperNet's way: M training tasks, each an N-way episode whose classes
 *   are drawn once, one z per task, trained jointly with the generator;
 * - `meta`, episodic meta-training in CAVIA's manner: each step draws fresh episodes, adapts their
 *   z from a learned start on the support images (Adam, first-order), and updates the generator
 *   and the start on the query images.
 *
 * Methods on a test episode:
 * - `z`: only z is learned on the support images, from the start (the mean trained z for `table`,
 *   the learned start for `meta`), generator frozen;
 * - `full`: the whole conv4 network trained from scratch on the support images;
 * - `finetune`: the whole network the start generates, trained on the support images (MAML-like
 *   adaptation of every weight from a meta-trained start);
 * - `protonet` (protonet.ts): a conv4 embedding trained episodically on the training classes;
 *   each query goes to the nearest class mean of the support embeddings, with no gradient step;
 * - `pretrained` (pretrained.ts): conv4 trained with a head over all training classes at once;
 *   a logistic regression on the episode's L2-normalised support embeddings classifies its
 *   queries.
 *
 * The two embedding baselines train for the profile's steps with Adam at 0.001, as the
 * generators do: ProtoNet on T episodes a step shaped like meta-training's, the pretrained
 * network on batches of as many images (T x N x (K + Q)).
 *
 * Each method's learning rate and number of steps are chosen on episodes of the validation
 * classes; test classes only score. For `pretrained` they are the logistic regression's (Adam's
 * learning rate and steps, with its L2 strength); `protonet` learns nothing per episode (lr and
 * steps 0). Batch norm uses the statistics of the batch it normalises, the query batch included
 * (transductive, as MAML's reference code); the embedding baselines embed an episode's support
 * and query images as two such batches.
 *
 * @module
 */
import { join } from "node:path";
import { loadDataset } from "../data/dataset.ts";
import { ImageStore } from "../data/sampler.ts";
import { type ForwardBuilder, Metrics, StepProgram } from "../engine.ts";
import type { Gpu } from "../gpu/device.ts";
import { tunePending } from "../gpu/tune.ts";
import { mib, run } from "../gpu/kernel.ts";
import { Arena, read, tensorFrom, write } from "../gpu/tensor.ts";
import { DEFAULT_GENERATOR, generatorParams } from "../model/generator.ts";
import { generateWeights } from "../export/network.ts";
import {
  initTaskVectors,
  PlainNet,
  SuperNet,
  type SuperNetConfig,
  superNetConfig,
} from "../model/supernet.ts";
import {
  largestActivation,
  makeTarget,
  type TargetSpec,
  weightCount,
  weightShapes,
} from "../model/target.ts";
import { fill } from "../ops/fill.ts";
import { gatherRows, scatterRowsAdd } from "../ops/gather.ts";
import { optimizerConfig, ParamGroup } from "../optim.ts";
import { mixSeed, Random } from "../random.ts";
import { writeAtomic } from "../safetensors.ts";
import { mean, sampleStd } from "../stats.ts";
import { keptRows, type KeptTraining, keptTraining, saveRows, saveTraining } from "./kept.ts";
import { Tape } from "../tape.ts";
import {
  type ClassPool,
  classPool,
  drawEpisode,
  type Episode,
  EpisodeBatch,
  type EpisodeShape,
  sampleEpisode,
} from "./episodes.ts";
import { type Backbone, embeddingSpec, embedEpisodes, type TrainedEmbedding } from "./embedding.ts";
import { chooseLinear, linearAccuracies, pretrain } from "./pretrained.ts";
import { protoNetAccuracy, trainProtoNet } from "./protonet.ts";
import { type ClassSplit, classSplit, SPLITS } from "./split.ts";
import { describeCommit } from "../commit.ts";

/** Ways to train the generator for new classes. */
export const TRAININGS = ["table", "meta"] as const;
/** One of {@link TRAININGS}. */
export type Training = typeof TRAININGS[number];
/** Ways to learn a test episode. */
export const FEWSHOT_METHODS = ["z", "full", "finetune", "protonet", "pretrained"] as const;
/** One of {@link FEWSHOT_METHODS}. */
export type FewShotMethod = typeof FEWSHOT_METHODS[number];
/** Sizes of a run. */
export const FEWSHOT_PROFILES = ["smoke", "quick", "long"] as const;

/** What a profile sets. */
interface ProfileSettings {
  /** conv4 channels. */
  width: number;
  /** Generator training steps. */
  steps: number;
  /** Episodes per training step. */
  tasksPerStep: number;
  /** M: the table's training tasks. */
  tableTasks: number;
  /** Images per class of a table task in a step. */
  perClass: number;
  /** Inner Adam steps of meta-training. */
  innerSteps: number;
  /** Step counts a test-time adaptation may stop at (the validation classes choose). */
  adaptSteps: number[];
  /** Learning rates of z adaptation to choose from. */
  zLrs: number[];
  /** Learning rates of the whole network to choose from. */
  fullLrs: number[];
  /** Learning rates of `pretrained`'s logistic regression to choose from. */
  linearLrs: number[];
  /** L2 strengths of `pretrained`'s logistic regression to choose from. */
  linearL2s: number[];
  /** Step counts `pretrained`'s logistic regression may stop at. */
  linearSteps: number[];
  /** Validation episodes per choice. */
  validationEpisodes: number;
  /** Episodes adapted side by side. */
  chunk: number;
}

const PROFILES: Record<typeof FEWSHOT_PROFILES[number], ProfileSettings> = {
  smoke: {
    width: 8,
    steps: 30,
    tasksPerStep: 4,
    tableTasks: 16,
    perClass: 4,
    innerSteps: 2,
    adaptSteps: [0, 5, 10],
    zLrs: [0.01, 0.03],
    fullLrs: [0.003, 0.01],
    linearLrs: [0.01, 0.1],
    linearL2s: [0.01, 0.1],
    linearSteps: [25, 100],
    validationEpisodes: 6,
    chunk: 10,
  },
  // Sized for 2 CPU cores with a software driver (an hour or two for every method at 1 shot);
  // the published protocol's scale is `long`, for a GPU.
  quick: {
    width: 16,
    steps: 300,
    tasksPerStep: 8,
    tableTasks: 128,
    perClass: 8,
    innerSteps: 3,
    adaptSteps: [0, 10, 25],
    zLrs: [0.01, 0.03],
    fullLrs: [0.003, 0.01],
    linearLrs: [0.01, 0.1],
    linearL2s: [0.001, 0.01, 0.1],
    linearSteps: [25, 100, 300],
    validationEpisodes: 20,
    chunk: 20,
  },
  long: {
    width: 64,
    steps: 5000,
    tasksPerStep: 16,
    tableTasks: 1024,
    perClass: 10,
    innerSteps: 5,
    adaptSteps: [0, 10, 25, 50, 100],
    zLrs: [0.003, 0.01, 0.03, 0.1],
    fullLrs: [0.0003, 0.001, 0.003, 0.01],
    linearLrs: [0.01, 0.1],
    linearL2s: [0.001, 0.01, 0.1, 1],
    linearSteps: [25, 100, 300],
    validationEpisodes: 100,
    chunk: 20,
  },
};

/** Options of `experiment fewshot` (the CLI maps its flags 1:1 onto these). */
export interface FewShotOptions {
  /** Dataset name (`--dataset`). */
  dataset: string;
  /** Folder of the dataset's files. */
  dataDir?: string;
  /** Check files against published sums. */
  verify?: boolean;
  /** Class split (`auto`, or `cifar-fs` for CIFAR-100). */
  split: typeof SPLITS[number];
  /** Omniglot: rotations by 90, 180, 270 degrees as extra classes. */
  rotations: boolean;
  /** N: classes per episode. */
  ways: number;
  /** K values: support images per class. */
  shots: number[];
  /** Q: query images per class. */
  queries: number;
  /** Test episodes per (method, shots). */
  episodes: number;
  /** Run size. */
  profile: typeof FEWSHOT_PROFILES[number];
  /** conv4 channels (default: the profile's). */
  width?: number;
  /** Generator training steps (default: the profile's). */
  steps?: number;
  /** Episodes adapted side by side (default: the profile's); results do not depend on it. */
  chunk?: number;
  /** How the generators are trained. */
  trainings: Training[];
  /** Methods scored. */
  methods: FewShotMethod[];
  /** Seed of everything random. */
  seed: number;
  /** Output folder. */
  out: string;
  /**
   * Keep what an earlier run in `out` finished under the same options (src/fewshot/kept.ts): each
   * training's weights and each scored row; only the rest runs. Code changes in between are not
   * detected: after one, start afresh.
   */
  resume?: boolean;
}

/** Defaults: Omniglot 5-way 1-shot, 15 queries, 600 test episodes, the quick profile. */
export const FEWSHOT_DEFAULTS: FewShotOptions = {
  dataset: "omniglot",
  split: "auto",
  rotations: false,
  ways: 5,
  shots: [1],
  queries: 15,
  episodes: 600,
  profile: "quick",
  trainings: ["table", "meta"],
  methods: ["z", "full", "finetune", "protonet", "pretrained"],
  seed: 1,
  out: "runs/fewshot",
};

/** One method's score at one shot count, in the papers' form. */
export interface FewShotRow {
  /**
   * `z (table)`, `z (meta)`, `full`, `finetune (table)`, `finetune (meta)`, `protonet` or
   * `pretrained`.
   */
  method: string;
  /** N. */
  ways: number;
  /** K. */
  shots: number;
  /** Mean query accuracy over episodes (fraction). */
  accuracy: number;
  /** 1.96 x sample std / sqrt(episodes) (fraction). */
  ci95: number;
  /** Test episodes. */
  episodes: number;
  /**
   * What the validation classes chose: the learning rate and steps of the per-episode learning
   * (0 and 0 for `protonet`, which learns nothing per episode), for `pretrained` those of its
   * logistic regression with its L2 strength `l2`; and the validation accuracy they gave.
   */
  chosen: Chosen;
  /** Numbers learned per episode. */
  trainable: number;
  /** Query accuracy of each test episode, in episode order (the same episodes for every row). */
  values: number[];
  /** Wall time of the test episodes, seconds. */
  seconds: number;
  /** The code that scored the row (a row kept by `--resume` keeps its own; absent before). */
  commit?: string;
}

/** What the validation classes chose for a method (see {@link FewShotRow}). */
export interface Chosen {
  /** Learning rate of the per-episode learning. */
  lr: number;
  /** Steps of the per-episode learning. */
  steps: number;
  /** `pretrained`: L2 strength of the logistic regression. */
  l2?: number;
  /** Mean query accuracy on the validation episodes with this choice. */
  validationAccuracy: number;
}

/** results.json of `experiment fewshot`. */
export interface FewShotResults {
  /** The options, resolved. */
  options: FewShotOptions;
  /** The profile's settings used. */
  settings: ProfileSettings;
  /** The command that reproduces this. */
  command: string;
  /** `git describe --always --dirty` of the code, or "unknown". */
  commit: string;
  /** Adapter description. */
  adapter: string;
  /** Dataset identity. */
  dataset: string;
  /** The class split. */
  split: ClassSplit;
  /** Generator parameters and conv4 weights per network. */
  sizes: { generator: number; network: number };
  /** Wall time of each phase, seconds. */
  phases: Record<string, number>;
  /**
   * Training loss (query loss for `meta` and `protonet`) at the first and the last step of each
   * training.
   */
  trainingLoss: Partial<
    Record<Training | "protonet" | "pretrained", { first: number; last: number }>
  >;
  /** One row per method and shot count. */
  rows: FewShotRow[];
  /**
   * With `resume`, what came from an earlier run in the folder: trainings (with the code and wall
   * time that made them) and rows ("method, K shot(s)"); absent when everything ran here.
   */
  kept?: { trainings: KeptTraining[]; rows: string[] };
  /** Total wall time, seconds (this run's; kept trainings took `kept.trainings[i].seconds`). */
  seconds: number;
}

/** Progress, as plain sentences. */
export type FewShotEvent = { kind: "phase"; text: string };

/** What training, validation and testing share. */
interface Harness {
  gpu: Gpu;
  options: FewShotOptions;
  settings: ProfileSettings;
  dataset: Awaited<ReturnType<typeof loadDataset>>;
  pool: ClassPool;
  store: ImageStore;
  split: ClassSplit;
  config: SuperNetConfig;
  say: (text: string) => void;
}

/** Runs the experiment and writes results.json (and returns it). */
export async function runFewShot(
  gpu: Gpu,
  options: FewShotOptions,
  hooks: { onEvent?: (e: FewShotEvent) => void; command?: string } = {},
): Promise<FewShotResults> {
  const started = performance.now();
  const base = PROFILES[options.profile];
  const settings: ProfileSettings = {
    ...base,
    width: options.width ?? base.width,
    steps: options.steps ?? base.steps,
    chunk: options.chunk ?? base.chunk,
  };
  const say = (text: string) => hooks.onEvent?.({ kind: "phase", text });
  // The code as the run starts: the tree may change while a long run goes on.
  const commit = await describeCommit();
  if (!(options.ways >= 2)) throw new RangeError(`--ways must be at least 2, got ${options.ways}`);
  if (options.shots.length === 0 || options.shots.some((k) => !(k >= 1))) {
    throw new RangeError(`--shots must list counts of at least 1, got ${options.shots.join(",")}`);
  }
  if (!(options.queries >= 1)) {
    throw new RangeError(`--queries must be at least 1, got ${options.queries}`);
  }
  if (!(options.episodes >= 2)) {
    throw new RangeError(
      `--episodes must be at least 2 (an interval needs two), got ${options.episodes}`,
    );
  }
  if (!(settings.width >= 1)) {
    throw new RangeError(`--width must be at least 1, got ${settings.width}`);
  }
  checkChunk(settings.chunk);
  const dataset = await loadDataset(options.dataset, {
    dataDir: options.dataDir,
    verify: options.verify,
    rotations: options.rotations,
  });
  const split = classSplit(dataset, options.split);
  for (const [part, classes] of Object.entries(split)) {
    if (Array.isArray(classes) && classes.length < options.ways) {
      throw new RangeError(
        `${options.ways}-way episodes need ${options.ways} ${part} classes; the split (${split.rule}) ` +
          `gives ${classes.length}; use --ways ${classes.length} or a dataset with more classes`,
      );
    }
  }
  const pool = classPool(dataset);
  checkClassSizes(pool, dataset.classNames, split, options);
  const store = new ImageStore(gpu, pool.split, { shape: dataset.shape });
  const config = superNetConfig({
    target: "conv4",
    width: settings.width,
    inputShape: dataset.shape,
    outputs: options.ways,
    tasks: 1,
    zInit: "gaussian",
    seed: options.seed,
    generator: { ...DEFAULT_GENERATOR },
  });
  const spec = makeTarget(config.target, { ...config, outputs: options.ways });
  settings.chunk = fittedChunk(gpu, spec, { ...options, chunk: settings.chunk, say });
  const h: Harness = { gpu, options, settings, dataset, pool, store, split, config, say };
  const phases: Record<string, number> = {};
  const timed = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    say(name);
    try {
      return await f();
    } finally {
      phases[name] = (performance.now() - t0) / 1000;
    }
  };
  await Deno.mkdir(options.out, { recursive: true });
  // What decides a training's weights (the shots of its episodes are the fewest listed), and
  // what decides a row besides: a resumed run keeps only what matches.
  const {
    adaptSteps: _a,
    zLrs: _z,
    fullLrs: _f,
    linearLrs: _l,
    linearL2s: _l2,
    linearSteps: _ls,
    validationEpisodes: _v,
    chunk: _c,
    ...trainingSettings
  } = settings;
  const trainingPrint = JSON.stringify({
    dataset: dataset.source,
    split: split.rule,
    ways: options.ways,
    shots: Math.min(...options.shots),
    queries: options.queries,
    seed: options.seed,
    settings: trainingSettings,
  });
  const { chunk: _chunk, ...scoring } = settings;
  const rowsPrint = JSON.stringify({ trainingPrint, scoring, episodes: options.episodes });
  const resume = options.resume ?? false;
  const keptTrainings: KeptTraining[] = [];
  const earlierRows = resume ? await keptRows<FewShotRow>(options.out, rowsPrint) : [];
  const keptRowNames: string[] = [];
  const trained = async (
    name: string,
    label: string,
    train: () => Promise<TrainedEmbedding>,
  ): Promise<TrainedEmbedding> => {
    const earlier = resume ? await keptTraining(options.out, name, trainingPrint) : undefined;
    if (earlier) {
      keptTrainings.push(earlier.kept);
      say(`${label}: kept from an earlier run (${earlier.kept.commit})`);
      return earlier;
    }
    const result = await timed(label, train);
    await saveTraining(options.out, name, result, {
      fingerprint: trainingPrint,
      commit,
      seconds: phases[label]!,
    });
    return result;
  };
  const rows: FewShotRow[] = [];
  const trainingLoss: FewShotResults["trainingLoss"] = {};
  try {
    // The same test episodes for every method (per shot count), from a stream of their own.
    const testEpisodes = (shots: number) =>
      episodes(h, split.test, { ...shape(options, shots), count: options.episodes, salt: 7 });
    const validationEpisodes = (shots: number) =>
      episodes(h, split.validation, {
        ...shape(options, shots),
        count: settings.validationEpisodes,
        salt: 5,
      });
    const starts: { training: Training; start: Start }[] = [];
    const generated = options.methods.some((m) => m === "z" || m === "finetune");
    for (const training of generated ? options.trainings : []) {
      const done = await trained(
        training,
        `training the generator (${training}, ${settings.steps} steps)`,
        async () => {
          const start = await (training === "table" ? trainTable(h) : trainMeta(h));
          return { weights: new Map([["params", start.params], ["z", start.z]]), loss: start.loss };
        },
      );
      trainingLoss[training] = done.loss;
      starts.push({
        training,
        start: { params: done.weights.get("params")!, z: done.weights.get("z")!, loss: done.loss },
      });
    }
    const scorers: Scorer[] = [];
    for (const method of options.methods) {
      if (method === "full") {
        scorers.push(adaptingScorer(h, method, { kind: "full" }, weightCount(spec)));
      } else if (method === "protonet" || method === "pretrained") {
        const done = await trained(
          method,
          `training ${method} (${settings.steps} steps)`,
          () => method === "protonet" ? trainProtoNetFor(h) : pretrainFor(h),
        );
        trainingLoss[method] = done.loss;
        scorers.push(
          method === "protonet"
            ? protoNetScorer(h, done.weights)
            : pretrainedScorer(h, done.weights),
        );
      } else {
        for (const { training, start } of starts) {
          const name = `${method} (${training})`;
          scorers.push(
            method === "z"
              ? adaptingScorer(h, name, { kind: "z", ...start }, config.generator.zDim)
              : adaptingScorer(
                h,
                name,
                { kind: "finetune", weights: await startWeights(h, start) },
                weightCount(spec),
              ),
          );
        }
      }
    }
    for (const shots of options.shots) {
      const test = testEpisodes(shots);
      const validation = validationEpisodes(shots);
      for (const { method, trainable, choose, score } of scorers) {
        const earlier = earlierRows.find((r) => r.method === method && r.shots === shots);
        if (earlier) {
          rows.push(earlier);
          keptRowNames.push(
            `${method}, ${shots} shot(s) (code ${earlier.commit ?? "not recorded"})`,
          );
          say(`${method}, ${shots} shot(s): kept from an earlier run`);
          continue;
        }
        const chosen = await timed(
          `${method}, ${shots} shot(s): choosing on validation classes`,
          () => choose(validation),
        );
        const t0 = performance.now();
        const values = await timed(
          `${method}, ${shots} shot(s): ${test.length} test episodes`,
          () => score(test, chosen),
        );
        rows.push({
          method,
          ways: options.ways,
          shots,
          accuracy: mean(values),
          ci95: values.length > 1 ? 1.96 * sampleStd(values) / Math.sqrt(values.length) : NaN,
          episodes: values.length,
          chosen,
          trainable,
          values,
          seconds: (performance.now() - t0) / 1000,
          commit,
        });
        // Rows an earlier run finished for other methods or shot counts stay in the file.
        const others = earlierRows.filter((e) =>
          !rows.some((r) => r.method === e.method && r.shots === e.shots)
        );
        await saveRows(options.out, rowsPrint, [...rows, ...others]);
        say(
          `${method}, ${shots} shot(s): ${(100 * rows.at(-1)!.accuracy).toFixed(2)}% ± ` +
            `${(100 * rows.at(-1)!.ci95).toFixed(2)} over ${values.length} episodes`,
        );
      }
    }
  } finally {
    store.destroy();
  }
  const results: FewShotResults = {
    options,
    settings,
    command: hooks.command ?? "",
    commit,
    adapter: `${gpu.description}${gpu.isFallback ? " (software)" : ""}`,
    dataset: dataset.source,
    split,
    sizes: {
      generator: generatorParams(config.generator, weightShapes(spec))
        .reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0),
      network: weightCount(spec),
    },
    phases,
    trainingLoss,
    rows,
    ...(keptTrainings.length + keptRowNames.length > 0
      ? { kept: { trainings: keptTrainings, rows: keptRowNames } }
      : {}),
    seconds: (performance.now() - started) / 1000,
  };
  await writeAtomic(join(options.out, "results.json"), JSON.stringify(results, null, 2) + "\n");
  return results;
}

/**
 * Refuses, before anything trains, a class too small for its episodes: training classes draw the
 * fewest shots (meta-training and ProtoNet train at those), validation and test classes every
 * shot count listed, each with the queries.
 */
function checkClassSizes(
  pool: ClassPool,
  names: readonly string[],
  split: ClassSplit,
  options: Pick<FewShotOptions, "shots" | "queries">,
): void {
  const parts = [
    ["training", split.train, Math.min(...options.shots)],
    ["validation", split.validation, Math.max(...options.shots)],
    ["test", split.test, Math.max(...options.shots)],
  ] as const;
  for (const [part, classes, shots] of parts) {
    for (const c of classes) {
      const n = pool.byClass[c]!.length;
      if (n >= shots + options.queries) continue;
      throw new RangeError(
        `${part} class '${names[c]}' has ${n} images, fewer than ${shots} shots + ` +
          `${options.queries} queries; ` +
          (n > shots ? `use --queries ${n - shots} or fewer` : "use fewer --shots"),
      );
    }
  }
}

function checkChunk(chunk: number): void {
  if (!Number.isInteger(chunk) || chunk < 1) {
    throw new RangeError(`--chunk must be a whole number of episodes, at least 1, got ${chunk}`);
  }
}

/**
 * Episodes side by side: `chunk`, or fewer where their images' largest activation (support and
 * queries go through the network as separate batches) would not fit one storage binding of this
 * adapter (128 MiB on many, so a 64-channel conv4 fits 8 episodes of 5 ways x 15 queries).
 */
export function fittedChunk(
  gpu: Gpu,
  spec: TargetSpec,
  options: Pick<FewShotOptions, "ways" | "shots" | "queries"> & {
    /** Episodes asked for. */
    chunk: number;
    /** Told when fewer fit. */
    say?: (text: string) => void;
  },
): number {
  const { chunk, say = () => {} } = options;
  checkChunk(chunk);
  const images = options.ways * Math.max(...options.shots, options.queries);
  const bytes = images * largestActivation(spec) * 4;
  const most = gpu.limits.maxStorageBufferBindingSize;
  const fit = Math.floor(most / bytes);
  const limit = `this adapter's largest storage binding of ${mib(most)}`;
  if (fit < 1) {
    throw new RangeError(
      `one episode's ${images} images need ${mib(bytes)} in one buffer at this width, above ` +
        `${limit}: lower --queries, --shots or --width`,
    );
  }
  if (chunk <= fit) return chunk;
  say(
    `${fit} episodes side by side instead of ${chunk}: ${fit + 1} would need more than ${limit} ` +
      "in one buffer",
  );
  return fit;
}

function shape(options: FewShotOptions, shots: number): EpisodeShape {
  return { ways: options.ways, shots, queries: options.queries };
}

/** `count` episodes of `classes`, the same for the same (seed, salt, sizes). */
function episodes(
  h: Harness,
  classes: readonly number[],
  options: EpisodeShape & { count: number; salt: number },
): Episode[] {
  const random = new Random(mixSeed(h.options.seed, options.salt * 1000 + options.shots));
  return Array.from(
    { length: options.count },
    () => sampleEpisode(h.pool, { ...options, classes, random }),
  );
}

/** A trained generator and the z a new episode starts from. */
interface Start {
  params: Float32Array;
  z: Float32Array;
  loss: { first: number; last: number };
}

/** How a test episode is learned. */
type Learner =
  | ({ kind: "z" } & Start)
  | { kind: "full" }
  | { kind: "finetune"; weights: Map<string, Float32Array> };

/** The network a start's z generates: where `finetune` begins. */
async function startWeights(h: Harness, start: Start): Promise<Map<string, Float32Array>> {
  const net = new SuperNet(h.gpu, { ...h.config, tasks: 1 });
  try {
    write(h.gpu, net.params.flat, start.params);
    return await generateWeights(h.gpu, net, start.z);
  } finally {
    net.destroy();
  }
}

/** Steps between progress lines (and loss readbacks): about a tenth of the run. */
function every(settings: ProfileSettings): number {
  return Math.max(1, Math.floor(settings.steps / 10));
}

/** The original SuperNet's training: M fixed N-way tasks, one z each, trained with the generator. */
async function trainTable(h: Harness): Promise<Start> {
  const { gpu, settings, options } = h;
  const M = settings.tableTasks;
  const T = Math.min(settings.tasksPerStep, M);
  const random = new Random(mixSeed(options.seed, 0x7ab1e));
  const tasks = Array.from({ length: M }, () => {
    const classes = [...h.split.train];
    random.shuffle(classes);
    return classes.slice(0, options.ways);
  });
  const net = SuperNet.create(gpu, { ...h.config, tasks: M });
  const lr = 0.001;
  const schedule = { lr, kind: "constant" as const, warmup: 0, steps: settings.steps };
  const params = new ParamGroup(gpu, net.params, {
    optimizer: optimizerConfig("adam", lr),
    schedule,
  });
  const z = new ParamGroup(gpu, net.z, { optimizer: optimizerConfig("adam", lr), schedule });
  const source = new EpisodeBatch(gpu, h.dataset, {
    store: h.store,
    tasks: T,
    ways: options.ways,
    per: settings.perClass,
  });
  const program = new StepProgram(gpu, {
    source,
    forward: (tape, inputs) =>
      net.forward(tape, { ...inputs, grads: { params: params.grads, z: z.grads } }),
    groups: [params, z],
  });
  try {
    // Kernels of shape classes new to this adapter are timed once, before the first step.
    await tunePending(gpu);
    const loss = { first: NaN, last: NaN };
    const order = [...tasks.keys()];
    for (let step = 1; step <= settings.steps; step++) {
      random.shuffle(order);
      const rows = order.slice(0, T);
      const chosen = rows.map((m) =>
        drawEpisode(h.pool, { classes: tasks[m]!, shots: settings.perClass, queries: 0, random })
      );
      source.set(chosen, "support", rows);
      program.run(step);
      if (step === 1 || step % every(settings) === 0 || step === settings.steps) {
        loss.last = (await program.readMetrics()).loss;
        if (step === 1) loss.first = loss.last;
        h.say(`training (table): step ${step}/${settings.steps}, loss ${loss.last.toFixed(4)}`);
      }
    }
    // A new episode starts from the mean of the trained z.
    const table = await read(gpu, net.z.get("z"));
    const d = h.config.generator.zDim;
    const start = new Float32Array(d);
    for (let m = 0; m < M; m++) for (let k = 0; k < d; k++) start[k]! += table[m * d + k]! / M;
    return { params: await read(gpu, net.params.flat), z: start, loss };
  } finally {
    program.destroy();
    source.destroy();
    params.destroy();
    z.destroy();
    net.destroy();
  }
}

/**
 * CAVIA-style meta-training, first-order: each step T fresh episodes of the training classes
 * start their z at the learned start, take `innerSteps` Adam steps on the support images, and the
 * generator and the start take one step on the query images through the adapted z.
 */
async function trainMeta(h: Harness): Promise<Start> {
  const { gpu, settings, options } = h;
  const T = settings.tasksPerStep;
  const K = Math.min(...options.shots);
  const Q = options.queries;
  const d = h.config.generator.zDim;
  const random = new Random(mixSeed(options.seed, 0x3e7a));
  const net = SuperNet.create(gpu, { ...h.config, tasks: T });
  const startArena = new Arena(gpu);
  startArena.add("z", [1, d]);
  startArena.allocate();
  // CAVIA starts its context at 0, but here z is the generator's only input: at z = 0 every
  // generated weight is a bias of the generator's heads and no gradient reaches their weights (a
  // 2-way MNIST run stayed at ln 2). The start is drawn like the table's z instead.
  write(gpu, startArena.get("z"), initTaskVectors(1, d, { init: "gaussian", seed: options.seed }));
  const lr = 0.001;
  const schedule = { lr, kind: "constant" as const, warmup: 0, steps: settings.steps };
  const params = new ParamGroup(gpu, net.params, {
    optimizer: optimizerConfig("adam", lr),
    schedule,
  });
  const startGroup = new ParamGroup(gpu, startArena, {
    optimizer: optimizerConfig("adam", lr),
    schedule,
  });
  const innerLr = 0.03;
  const inner = new ParamGroup(gpu, net.z, {
    optimizer: optimizerConfig("adam", innerLr),
    schedule: { lr: innerLr, kind: "constant", warmup: 0, steps: settings.innerSteps },
  });
  const outerZ = net.z.twin();
  const zeros = tensorFrom(gpu, [T], new Uint32Array(T));
  const reset = [
    ...gatherRows(gpu, startArena.get("z"), zeros, net.z.get("z")),
    ...inner.optimizer.state.flatMap((s) => fill(gpu, s.tensor, 0)),
  ];
  const support = new EpisodeBatch(gpu, h.dataset, {
    store: h.store,
    tasks: T,
    ways: options.ways,
    per: K,
  });
  const query = new EpisodeBatch(gpu, h.dataset, {
    store: h.store,
    tasks: T,
    ways: options.ways,
    per: Q,
  });
  const innerProgram = new StepProgram(gpu, {
    source: support,
    forward: (tape, inputs) => net.forward(tape, { ...inputs, grads: { z: inner.grads } }),
    groups: [inner],
    gradScale: T,
  });
  const outer = new StepProgram(gpu, {
    source: query,
    forward: (tape, inputs) =>
      net.forward(tape, { ...inputs, grads: { params: params.grads, z: outerZ } }),
    groups: [params, startGroup],
    // The start's gradient: the sum over slots of the query loss's gradient at the adapted z.
    regularize: scatterRowsAdd(gpu, outerZ.get("z"), zeros, startGroup.grads.get("z")),
  });
  try {
    // Kernels of shape classes new to this adapter are timed once, before the first step.
    await tunePending(gpu);
    const loss = { first: NaN, last: NaN };
    for (let step = 1; step <= settings.steps; step++) {
      const chosen = Array.from(
        { length: T },
        () =>
          sampleEpisode(h.pool, {
            classes: h.split.train,
            ways: options.ways,
            shots: K,
            queries: Q,
            random,
          }),
      );
      support.set(chosen, "support");
      query.set(chosen, "query");
      run(gpu, reset);
      for (let k = 1; k <= settings.innerSteps; k++) innerProgram.run(k);
      outer.run(step);
      if (step === 1 || step % every(settings) === 0 || step === settings.steps) {
        loss.last = (await outer.readMetrics()).loss;
        if (step === 1) loss.first = loss.last;
        h.say(
          `training (meta): step ${step}/${settings.steps}, query loss ${loss.last.toFixed(4)}`,
        );
      }
    }
    return {
      params: await read(gpu, net.params.flat),
      z: await read(gpu, startArena.get("z")),
      loss,
    };
  } finally {
    innerProgram.destroy();
    outer.destroy();
    support.destroy();
    query.destroy();
    inner.destroy();
    params.destroy();
    startGroup.destroy();
    outerZ.destroy();
    startArena.destroy();
    zeros.destroy();
    net.destroy();
  }
}

/** A method ready for episodes: it chooses its settings on validation episodes, then scores. */
interface Scorer {
  /** Its row's name. */
  method: string;
  /** Numbers learned per episode. */
  trainable: number;
  /** Chooses the settings on validation episodes. */
  choose: (validation: Episode[]) => Promise<Chosen>;
  /** Query accuracy of each test episode with the chosen settings. */
  score: (test: Episode[], chosen: Chosen) => Promise<number[]>;
}

/** A method that learns each episode by Adam steps: `z`, `full` or `finetune`. */
function adaptingScorer(h: Harness, method: string, learner: Learner, trainable: number): Scorer {
  return {
    method,
    trainable,
    choose: (validation) => choose(h, learner, validation),
    score: async (test, chosen) =>
      (await adaptEpisodes(h, learner, test, { lr: chosen.lr, checkpoints: [chosen.steps] }))[0]!,
  };
}

/** What the embedding baselines need of the harness. */
function backbone(h: Harness): Backbone {
  return { gpu: h.gpu, dataset: h.dataset, store: h.store, config: h.config };
}

/** The training options the embedding baselines share: the generators' budget and Adam's lr. */
function embeddingTraining(h: Harness, name: string, salt: number) {
  return {
    pool: h.pool,
    classes: h.split.train,
    steps: h.settings.steps,
    lr: 0.001,
    seed: mixSeed(h.options.seed, salt),
    report: every(h.settings),
    onProgress: (step: number, loss: number) =>
      h.say(`training (${name}): step ${step}/${h.settings.steps}, loss ${loss.toFixed(4)}`),
  };
}

/** ProtoNet trained on episodes shaped like meta-training's (the fewest shots, T a step). */
function trainProtoNetFor(h: Harness): Promise<TrainedEmbedding> {
  return trainProtoNet(backbone(h), {
    ...embeddingTraining(h, "protonet", 0x9a07),
    ways: h.options.ways,
    shots: Math.min(...h.options.shots),
    queries: h.options.queries,
    tasksPerStep: h.settings.tasksPerStep,
  });
}

/** The pretrained backbone, with as many images a step as a ProtoNet step sees. */
function pretrainFor(h: Harness): Promise<TrainedEmbedding> {
  const { ways, queries, shots } = h.options;
  return pretrain(backbone(h), {
    ...embeddingTraining(h, "pretrained", 0x93e7),
    batch: h.settings.tasksPerStep * ways * (Math.min(...shots) + queries),
  });
}

/** `protonet`: nothing is chosen (lr and steps 0); validation episodes report their accuracy. */
function protoNetScorer(h: Harness, weights: Map<string, Float32Array>): Scorer {
  const accuracy = (list: Episode[]) =>
    protoNetAccuracy(backbone(h), weights, list, { ways: h.options.ways, chunk: h.settings.chunk });
  return {
    method: "protonet",
    trainable: 0,
    choose: async (validation) => ({
      lr: 0,
      steps: 0,
      validationAccuracy: mean(await accuracy(validation)),
    }),
    score: accuracy,
  };
}

/** `pretrained`: the logistic regression's lr, L2 strength and steps chosen on validation. */
function pretrainedScorer(h: Harness, weights: Map<string, Float32Array>): Scorer {
  const { ways } = h.options;
  const embedded = (list: Episode[]) =>
    embedEpisodes(backbone(h), weights, list, { ways, chunk: h.settings.chunk });
  return {
    method: "pretrained",
    trainable: ways * (embeddingSpec(h.config).features + 1),
    choose: async (validation) =>
      chooseLinear(await embedded(validation), {
        ways,
        lrs: h.settings.linearLrs,
        l2s: h.settings.linearL2s,
        steps: h.settings.linearSteps,
      }),
    score: async (test, chosen) =>
      linearAccuracies(await embedded(test), {
        ways,
        lr: chosen.lr,
        l2: chosen.l2 ?? 0,
        checkpoints: [chosen.steps],
      })[0]!,
  };
}

/** The (lr, steps) with the best mean query accuracy on validation episodes. */
async function choose(
  h: Harness,
  learner: Learner,
  validation: Episode[],
): Promise<Chosen> {
  const lrs = learner.kind === "z" ? h.settings.zLrs : h.settings.fullLrs;
  let best: Chosen | undefined;
  for (const lr of lrs) {
    const accs = await adaptEpisodes(h, learner, validation, {
      lr,
      checkpoints: h.settings.adaptSteps,
    });
    h.settings.adaptSteps.forEach((steps, i) => {
      const a = mean(accs[i]!);
      if (!best || a > best.validationAccuracy) best = { lr, steps, validationAccuracy: a };
    });
  }
  return best!;
}

/**
 * Learns each episode from its support images (`lr`, Adam) and scores its query images after
 * each number of steps in `checkpoints`; returns accuracies [checkpoint][episode]. Episodes run
 * side by side in chunks; each slot's numbers do not depend on its neighbours.
 */
async function adaptEpisodes(
  h: Harness,
  learner: Learner,
  list: Episode[],
  options: { lr: number; checkpoints: number[] },
): Promise<number[][]> {
  const { gpu, settings } = h;
  const { ways } = h.options;
  const out = options.checkpoints.map(() => [] as number[]);
  const last = Math.max(...options.checkpoints);
  for (let from = 0; from < list.length; from += settings.chunk) {
    const chunk = list.slice(from, from + settings.chunk);
    const C = chunk.length;
    const shots = chunk[0]!.support.length / ways;
    const queries = chunk[0]!.query.length / ways;
    const model = learnerModel(h, learner, {
      slots: C,
      firstEpisode: from,
      lr: options.lr,
      steps: last,
    });
    const support = new EpisodeBatch(gpu, h.dataset, {
      store: h.store,
      tasks: C,
      ways,
      per: shots,
    });
    const query = new EpisodeBatch(gpu, h.dataset, {
      store: h.store,
      tasks: C,
      ways,
      per: queries,
    });
    support.set(chunk, "support");
    query.set(chunk, "query");
    const program = new StepProgram(gpu, {
      source: support,
      forward: model.trainForward,
      groups: [model.group],
      gradScale: C,
    });
    const tape = new Tape(gpu);
    const metrics = new Metrics(gpu, C);
    const logits = model.forward(tape, { x: query.x, taskIndices: query.taskIndices });
    const score = [...query.next(), ...tape.forward, ...metrics.prepare(gpu, logits, query.y)];
    try {
      // Kernels of shape classes new to this adapter are timed once, before the first step.
      await tunePending(gpu);
      for (let step = 0; step <= last; step++) {
        if (step > 0) program.run(step);
        const at = options.checkpoints.indexOf(step);
        if (at < 0) continue;
        run(gpu, score);
        const m = await metrics.read(gpu);
        for (let t = 0; t < C; t++) out[at]!.push(m.correct[t]! / m.valid[t]!);
      }
    } finally {
      program.destroy();
      tape.destroy();
      metrics.destroy();
      support.destroy();
      query.destroy();
      model.destroy();
    }
  }
  return out;
}

/** The network a chunk of episodes learns with: z through the frozen generator, or a whole one. */
function learnerModel(
  h: Harness,
  learner: Learner,
  options: { slots: number; firstEpisode: number; lr: number; steps: number },
) {
  const { gpu } = h;
  const schedule = { lr: options.lr, kind: "constant" as const, warmup: 0, steps: options.steps };
  const optimizer = optimizerConfig("adam", options.lr);
  if (learner.kind === "z") {
    const net = new SuperNet(gpu, { ...h.config, tasks: options.slots });
    write(gpu, net.params.flat, learner.params);
    write(gpu, net.z.get("z"), repeated(learner.z, options.slots));
    const group = new ParamGroup(gpu, net.z, { optimizer, schedule });
    return {
      group,
      forward: ((tape, inputs) => net.forward(tape, inputs)) as ForwardBuilder,
      trainForward: ((tape, inputs) =>
        net.forward(tape, { ...inputs, grads: { z: group.grads } })) as ForwardBuilder,
      destroy: () => {
        group.destroy();
        net.destroy();
      },
    };
  }
  // full: episode e's network starts from a stream of its own, whatever chunk it runs in;
  // finetune: every slot starts from the start's generated network.
  const net = new PlainNet(gpu, {
    ...h.config,
    tasks: options.slots,
    seeds: Array.from(
      { length: options.slots },
      (_, t) => mixSeed(h.options.seed, 0xf011 + options.firstEpisode + t),
    ),
  });
  if (learner.kind === "finetune") {
    net.assign(
      new Map([...learner.weights].map(([name, w]) => [name, repeated(w, options.slots)])),
    );
  }
  const group = new ParamGroup(gpu, net.params, { optimizer, schedule });
  return {
    group,
    forward: ((tape, inputs) => net.forward(tape, inputs)) as ForwardBuilder,
    trainForward:
      ((tape, inputs) => net.forward(tape, { ...inputs, grads: group.grads })) as ForwardBuilder,
    destroy: () => {
      group.destroy();
      net.destroy();
    },
  };
}

/** `values` repeated `times` times, one copy per slot. */
function repeated(values: Float32Array, times: number): Float32Array {
  const all = new Float32Array(values.length * times);
  for (let t = 0; t < times; t++) all.set(values, t * values.length);
  return all;
}
