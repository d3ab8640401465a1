/**
 * Prototypical networks (Snell, Swersky and Zemel, NeurIPS 2017) in the few-shot harness, on the
 * conv4 embedding (the layers up to flatten, no head; see embedding.ts).
 *
 * Each class's prototype is the mean of its support embeddings, c_k = (1/K) sum_j f(x_kj),
 * computed as a product with a constant averaging matrix [T, N, N * K] (support rows are
 * class-major); the logits of a query are minus its squared Euclidean distance to each
 * prototype. Training draws N-way K-shot episodes of the training classes (T a step) and takes
 * Adam steps on the softmax cross-entropy of their queries; a test episode takes no gradient
 * step: each query goes to its nearest prototype.
 *
 * The support and the query images of an episode are two forwards on one tape that share the
 * weight variables (their gradients add up in the one set); batch norm normalises each with its
 * own statistics, as every method of the harness does, rather than over support and query
 * together as Snell et al.'s code (one concatenated batch) does.
 *
 * Differences from the paper: episodes are N-way (the test ways) rather than Snell et al.'s
 * 60-way training episodes, so training costs what meta-training does; the learning rate is
 * constant (they halve it every 2,000 episodes); no early stopping.
 *
 * @module
 */
import { Metrics, StepProgram } from "../engine.ts";
import { run } from "../gpu/kernel.ts";
import { tunePending } from "../gpu/tune.ts";
import { type Tensor, tensorFrom } from "../gpu/tensor.ts";
import type { TargetSpec } from "../model/target.ts";
import { optimizerConfig, ParamGroup } from "../optim.ts";
import { Random } from "../random.ts";
import { Tape, type Var } from "../tape.ts";
import {
  type Backbone,
  embed,
  embeddingNet,
  embeddingSpec,
  readEmbedding,
  sharedWeights,
  type TrainedEmbedding,
} from "./embedding.ts";
import { type ClassPool, type Episode, EpisodeBatch, sampleEpisode } from "./episodes.ts";

/** How ProtoNet trains. */
export interface ProtoNetOptions {
  /** The images by class. */
  pool: ClassPool;
  /** Classes episodes are drawn from (the training classes). */
  classes: readonly number[];
  /** N: classes per episode. */
  ways: number;
  /** K: support images per class. */
  shots: number;
  /** Q: query images per class. */
  queries: number;
  /** Adam steps. */
  steps: number;
  /** T: episodes per step. */
  tasksPerStep: number;
  /** Adam's learning rate (constant). */
  lr: number;
  /** Seed of the episodes (the initial weights come from the backbone's config). */
  seed: number;
  /** Steps between loss readbacks (besides the first and the last). */
  report: number;
  /** Called with each loss read back. */
  onProgress?: (step: number, loss: number) => void;
}

/**
 * averaging[t, n, n * K + j] = 1 / K for T slots: its product with support embeddings
 * [T, N * K, F] (class-major) is the prototypes [T, N, F].
 */
function averagingMatrix(tasks: number, ways: number, shots: number): Float32Array {
  const out = new Float32Array(tasks * ways * ways * shots);
  for (let t = 0; t < tasks; t++) {
    for (let n = 0; n < ways; n++) {
      for (let j = 0; j < shots; j++) {
        out[(t * ways + n) * ways * shots + n * shots + j] = 1 / shots;
      }
    }
  }
  return out;
}

/**
 * Records ProtoNet's logits [T, N * Q, N] for support images [T, N * K, ...] and query images
 * [T, N * Q, ...]: minus the squared distance of each query embedding to each class's mean
 * support embedding.
 */
function protoLogits(
  tape: Tape,
  spec: TargetSpec,
  inputs: { weights: ReadonlyMap<string, Var>; support: Tensor; query: Tensor; averaging: Tensor },
): Var {
  const support = embed(tape, spec, { weights: inputs.weights, x: inputs.support });
  const query = embed(tape, spec, { weights: inputs.weights, x: inputs.query });
  const prototypes = tape.linear(tape.input(inputs.averaging), support);
  return tape.squaredDistance(query, prototypes, { scale: -1 });
}

/** Trains the embedding from PyTorch's default init on episodes of `classes` (module doc). */
export async function trainProtoNet(
  backbone: Backbone,
  options: ProtoNetOptions,
): Promise<TrainedEmbedding> {
  const { gpu } = backbone;
  const { ways, shots, queries, steps } = options;
  const T = options.tasksPerStep;
  const random = new Random(options.seed);
  const { spec } = embeddingSpec(backbone.config);
  const net = embeddingNet(gpu, backbone.config);
  const group = new ParamGroup(gpu, net.params, {
    optimizer: optimizerConfig("adam", options.lr),
    schedule: { lr: options.lr, kind: "constant", warmup: 0, steps },
  });
  const batch = (per: number) =>
    new EpisodeBatch(gpu, backbone.dataset, { store: backbone.store, tasks: T, ways, per });
  const support = batch(shots);
  const query = batch(queries);
  const zeros = tensorFrom(gpu, [T], new Uint32Array(T));
  const averaging = tensorFrom(gpu, [T, ways, ways * shots], averagingMatrix(T, ways, shots));
  const assemble = [...support.next(), ...query.next()];
  const program = new StepProgram(gpu, {
    // The loss is on the queries; the support images are assembled in the same step.
    source: { x: query.x, y: query.y, taskIndices: zeros, next: () => assemble },
    forward: (tape, inputs) =>
      protoLogits(tape, spec, {
        weights: sharedWeights(tape, net.params, {
          taskIndices: inputs.taskIndices,
          grads: group.grads,
        }),
        support: support.x,
        query: inputs.x,
        averaging,
      }),
    groups: [group],
  });
  try {
    // Kernels of shape classes new to this adapter are timed once, before the first step.
    await tunePending(gpu);
    const loss = { first: NaN, last: NaN };
    for (let step = 1; step <= steps; step++) {
      const chosen = Array.from(
        { length: T },
        () =>
          sampleEpisode(options.pool, { classes: options.classes, ways, shots, queries, random }),
      );
      support.set(chosen, "support");
      query.set(chosen, "query");
      program.run(step);
      if (step === 1 || step % options.report === 0 || step === steps) {
        loss.last = (await program.readMetrics()).loss;
        if (step === 1) loss.first = loss.last;
        options.onProgress?.(step, loss.last);
      }
    }
    return { weights: await readEmbedding(gpu, backbone.config, net.params), loss };
  } finally {
    program.destroy();
    support.destroy();
    query.destroy();
    zeros.destroy();
    averaging.destroy();
    group.destroy();
    net.destroy();
  }
}

/**
 * Query accuracy of each episode when every query goes to its nearest prototype (no gradient
 * steps), `chunk` episodes side by side; each episode's numbers do not depend on its neighbours.
 */
export async function protoNetAccuracy(
  backbone: Backbone,
  weights: ReadonlyMap<string, Float32Array>,
  episodes: readonly Episode[],
  options: { ways: number; chunk: number },
): Promise<number[]> {
  if (episodes.length === 0) return [];
  const { gpu } = backbone;
  const { ways } = options;
  const C = Math.min(options.chunk, episodes.length);
  const shots = episodes[0]!.support.length / ways;
  const { spec } = embeddingSpec(backbone.config);
  const net = embeddingNet(gpu, backbone.config, weights);
  const batch = (part: "support" | "query") =>
    new EpisodeBatch(gpu, backbone.dataset, {
      store: backbone.store,
      tasks: C,
      ways,
      per: episodes[0]![part].length / ways,
    });
  const support = batch("support");
  const query = batch("query");
  const zeros = tensorFrom(gpu, [C], new Uint32Array(C));
  const averaging = tensorFrom(gpu, [C, ways, ways * shots], averagingMatrix(C, ways, shots));
  const tape = new Tape(gpu);
  const metrics = new Metrics(gpu, C);
  try {
    const logits = protoLogits(tape, spec, {
      weights: sharedWeights(tape, net.params, { taskIndices: zeros }),
      support: support.x,
      query: query.x,
      averaging,
    });
    const dispatches = [
      ...support.next(),
      ...query.next(),
      ...tape.forward,
      ...metrics.prepare(gpu, logits, query.y),
    ];
    await tunePending(gpu);
    const out: number[] = [];
    for (let from = 0; from < episodes.length; from += C) {
      const chunk = episodes.slice(from, from + C);
      support.set(chunk, "support");
      query.set(chunk, "query");
      run(gpu, dispatches);
      const m = await metrics.read(gpu);
      for (let t = 0; t < chunk.length; t++) out.push(m.correct[t]! / m.valid[t]!);
    }
    return out;
  } finally {
    tape.destroy();
    metrics.destroy();
    support.destroy();
    query.destroy();
    zeros.destroy();
    averaging.destroy();
    net.destroy();
  }
}
