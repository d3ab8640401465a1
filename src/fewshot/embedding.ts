/**
 * The conv4 embedding that the ProtoNet and pretrained baselines share: the target's layers up to
 * flatten (no head), one weight set that every slot of a batch reads (gathered by task indices
 * that are all 0, so gradients from every slot add up in the one set), and episodes' images
 * embedded with it.
 *
 * Batch norm normalises each batch with its own statistics, as everywhere in the harness: an
 * episode's support images with theirs and its query images with theirs (transductive over the
 * query batch, as MAML's reference code and the other methods here).
 *
 * @module
 */
import type { Dataset } from "../data/split.ts";
import type { ImageStore } from "../data/sampler.ts";
import type { Gpu } from "../gpu/device.ts";
import { tunePending } from "../gpu/tune.ts";
import { run } from "../gpu/kernel.ts";
import { type Arena, read, type Tensor, tensorFrom } from "../gpu/tensor.ts";
import { PlainNet, type SuperNetConfig } from "../model/supernet.ts";
import { makeTarget, targetForward, type TargetSpec, weightShapes } from "../model/target.ts";
import { Tape, type Var } from "../tape.ts";
import { type Episode, EpisodeBatch } from "./episodes.ts";

/** What embedding images needs: the device, the images and the network's description. */
export interface Backbone {
  /** The device. */
  gpu: Gpu;
  /** Per-channel normalisation of the images. */
  dataset: Pick<Dataset, "mean" | "std">;
  /** Every image, uploaded (indices are those of the episodes). */
  store: ImageStore;
  /** The network: target `conv4`, its width, input shape, seed. */
  config: SuperNetConfig;
}

/** The target's layers up to flatten, and F, the length of the embedding. */
export function embeddingSpec(config: SuperNetConfig): { spec: TargetSpec; features: number } {
  const full = makeTarget(config.target, config);
  const cut = full.layers.findIndex((l) => l.kind === "flatten");
  const head = full.layers[cut + 1];
  if (cut < 0 || head?.kind !== "linear") {
    throw new RangeError(
      `An embedding needs a target whose layers end in flatten and a linear head, got ` +
        `'${config.target}'; use --target conv4`,
    );
  }
  return { spec: { ...full, layers: full.layers.slice(0, cut + 1) }, features: head.inFeatures };
}

/**
 * A one-set network whose trainable arena `params` holds exactly the embedding's weights [1, ...]
 * (fresh, PyTorch's default init, or `weights` by name); the head sits in the frozen arena,
 * unused.
 */
export function embeddingNet(
  gpu: Gpu,
  config: SuperNetConfig,
  weights?: ReadonlyMap<string, Float32Array>,
): PlainNet {
  const { spec } = embeddingSpec(config);
  const own = new Set(weightShapes(spec).map((w) => w.name));
  const head = weightShapes(makeTarget(config.target, config)).map((w) => w.name)
    .filter((name) => !own.has(name));
  const net = new PlainNet(gpu, { ...config, tasks: 1, frozen: new Set(head) });
  if (weights) net.assign(weights);
  return net;
}

/** The embedding's weights of a network's arena (tensors [1, ...] by name), read back. */
export async function readEmbedding(
  gpu: Gpu,
  config: SuperNetConfig,
  arena: Arena,
): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const { name } of weightShapes(embeddingSpec(config).spec)) {
    out.set(name, await read(gpu, arena.get(name)));
  }
  return out;
}

/**
 * The weights of `arena` (tensors [1, ...]) on a tape, each gathered into the slots of
 * `taskIndices` (u32 [T], all 0): one set shared by T slots. With `grads`, gradients flow into
 * that arena; the gathers' backward adds the slots' gradients in a fixed order. Build this once
 * per tape and pass it to every {@link embed} that should share the weights: variables made twice
 * would each claim the gradient as the first writer.
 */
export function sharedWeights(
  tape: Tape,
  arena: Arena,
  options: { taskIndices: Tensor; grads?: Arena },
): Map<string, Var> {
  const T = options.taskIndices.size;
  const weights = new Map<string, Var>();
  for (const { name, tensor } of arena.entries) {
    const v = options.grads ? tape.param(tensor, options.grads.get(name)) : tape.input(tensor);
    const [, ...shape] = tensor.shape;
    const rows = v.reshape([tensor.shape[0]!, tensor.size / tensor.shape[0]!]);
    weights.set(name, tape.gatherRows(rows, options.taskIndices).reshape([T, ...shape]));
  }
  return weights;
}

/** Records the embedding of images x [T, B, C, H, W]: [T, B, F]. */
export function embed(
  tape: Tape,
  spec: TargetSpec,
  inputs: { weights: ReadonlyMap<string, Var>; x: Tensor },
): Var {
  return targetForward(tape, spec, { weights: inputs.weights, x: tape.input(inputs.x) });
}

/** A trained embedding and its training loss. */
export interface TrainedEmbedding {
  /** The embedding's weights [1, ...] by name. */
  weights: Map<string, Float32Array>;
  /** Training loss at the first and the last step. */
  loss: { first: number; last: number };
}

/** An episode's images embedded: rows in the episode's (class-major) order. */
export interface EmbeddedEpisode {
  /** F: the length of an embedding. */
  features: number;
  /** Support embeddings [N * K, F]. */
  support: Float32Array;
  /** Query embeddings [N * Q, F]. */
  query: Float32Array;
}

/**
 * Embeds the support and query images of `episodes` with `weights` (the embedding's tensors by
 * name), `chunk` episodes side by side; each episode's numbers do not depend on its neighbours.
 */
export async function embedEpisodes(
  backbone: Backbone,
  weights: ReadonlyMap<string, Float32Array>,
  episodes: readonly Episode[],
  options: { ways: number; chunk: number },
): Promise<EmbeddedEpisode[]> {
  if (episodes.length === 0) return [];
  const { gpu } = backbone;
  const { ways } = options;
  const slots = Math.min(options.chunk, episodes.length);
  const { spec, features } = embeddingSpec(backbone.config);
  const net = embeddingNet(gpu, backbone.config, weights);
  const batch = (part: "support" | "query") =>
    new EpisodeBatch(gpu, backbone.dataset, {
      store: backbone.store,
      tasks: slots,
      ways,
      per: episodes[0]![part].length / ways,
    });
  const support = batch("support");
  const query = batch("query");
  const zeros = tensorFrom(gpu, [slots], new Uint32Array(slots));
  const tape = new Tape(gpu);
  try {
    const shared = sharedWeights(tape, net.params, { taskIndices: zeros });
    const s = embed(tape, spec, { weights: shared, x: support.x });
    const q = embed(tape, spec, { weights: shared, x: query.x });
    const dispatches = [...support.next(), ...query.next(), ...tape.forward];
    await tunePending(gpu);
    const out: EmbeddedEpisode[] = [];
    for (let from = 0; from < episodes.length; from += slots) {
      const chunk = episodes.slice(from, from + slots);
      support.set(chunk, "support");
      query.set(chunk, "query");
      run(gpu, dispatches);
      const [sAll, qAll] = [await read(gpu, s.tensor), await read(gpu, q.tensor)];
      chunk.forEach((e, t) => {
        const ns = e.support.length * features;
        const nq = e.query.length * features;
        out.push({
          features,
          support: sAll.slice(t * ns, (t + 1) * ns),
          query: qAll.slice(t * nq, (t + 1) * nq),
        });
      });
    }
    return out;
  } finally {
    tape.destroy();
    zeros.destroy();
    support.destroy();
    query.destroy();
    net.destroy();
  }
}
