/**
 * Classifying ("target") networks: architectures described by named weight shapes, with a batched
 * forward that takes T sets of weights (one per task) and T batches of inputs.
 * They own no weights: the generator (or, for the baseline, a plain parameter arena) supplies them.
 *
 * @module
 */
import type { Activation } from "../ops/activation.ts";
import { conv2dOutputSize } from "../ops/conv2d.ts";
import { poolOutputSize } from "../ops/pool.ts";
import type { Tape, Var } from "../tape.ts";

/** One layer of a target network. */
export type Layer =
  | {
    kind: "conv";
    name: string;
    inChannels: number;
    outChannels: number;
    kernel: number;
    stride: number;
    padding: number;
    activation: Activation;
  }
  | { kind: "flatten" }
  | {
    /**
     * Batch normalisation with the statistics of each task's own batch (no running statistics,
     * as MAML's conv4), then the activation. Its scale is stored as an offset from 1
     * (`.weight` 0 means scale 1), so a generated or fresh network starts near the identity.
     */
    kind: "norm";
    name: string;
    channels: number;
    activation: Activation;
  }
  | { kind: "pool" }
  | {
    kind: "linear";
    name: string;
    inFeatures: number;
    outFeatures: number;
    activation: Activation;
  };

/** A target architecture for a given input shape and number of outputs. */
export interface TargetSpec {
  /** Registered name (`--target`). */
  readonly name: string;
  /** Input [C, H, W]. */
  readonly inputShape: readonly [number, number, number];
  /** Logits per sample (1 for binary tasks). */
  readonly outputs: number;
  /** Layers in order. */
  readonly layers: readonly Layer[];
  /** Negative slope of leaky ReLU. */
  readonly slope: number;
}

/** A named weight tensor with its fan-in (for initialisation). */
export interface WeightShape {
  /** PyTorch-style name, e.g. "conv1.weight". */
  readonly name: string;
  /** Shape without the task dimension (conv [O, C, k, k], linear [out, in], bias [out]). */
  readonly shape: readonly number[];
  /** Inputs feeding each output unit of the layer. */
  readonly fanIn: number;
}

/** Options every target builder takes. */
export interface TargetOptions {
  /** Input [C, H, W]. */
  inputShape: readonly [number, number, number];
  /** Logits per sample (default 1). */
  outputs?: number;
  /** Hidden sizes, for `mlp` (default [100, 100]). */
  hidden?: number[];
  /** Channels of every block, for `conv4` (default 64). */
  width?: number;
  /** Negative slope of leaky ReLU (default 0.01). */
  slope?: number;
}

function convStack(
  options: TargetOptions,
  convs: { out: number; kernel: number; stride: number; padding: number }[],
  fc: number[],
): Layer[] {
  const layers: Layer[] = [];
  let [c, h, w] = options.inputShape;
  convs.forEach((cv, i) => {
    layers.push({
      kind: "conv",
      name: `conv${i + 1}`,
      inChannels: c,
      outChannels: cv.out,
      kernel: cv.kernel,
      stride: cv.stride,
      padding: cv.padding,
      activation: "leaky_relu",
    });
    c = cv.out;
    h = conv2dOutputSize(h, { k: cv.kernel, stride: cv.stride, padding: cv.padding });
    w = conv2dOutputSize(w, { k: cv.kernel, stride: cv.stride, padding: cv.padding });
    if (h < 1 || w < 1) {
      throw new RangeError(
        `Input [${options.inputShape}] is too small for ${convs.length} convolutions; use a larger input or another --target`,
      );
    }
  });
  layers.push({ kind: "flatten" });
  return [...layers, ...linearStack(c * h * w, fc, options.outputs ?? 1)];
}

function linearStack(inFeatures: number, hidden: number[], outputs: number): Layer[] {
  const sizes = [inFeatures, ...hidden, outputs];
  return sizes.slice(1).map((out, i) => ({
    kind: "linear",
    name: `fc${i + 1}`,
    inFeatures: sizes[i]!,
    outFeatures: out,
    activation: i === sizes.length - 2 ? "identity" : "leaky_relu",
  }));
}

const builders: Record<string, (options: TargetOptions) => Layer[]> = {
  // The seed's network: four 5x5 stride-2 convolutions with 16 channels, then 64 -> 100 -> 100 -> 1
  // on 32x32 input (37,165 weights); 28x28 gives spatial 14, 7, 4, 2 as well.
  seed_cnn: (o) =>
    convStack(o, Array(4).fill({ out: 16, kernel: 5, stride: 2, padding: 2 }), [100, 100]),
  // Fully connected layers on the flattened input.
  mlp: (o) => [
    { kind: "flatten" },
    ...linearStack(numelOf(o.inputShape), o.hidden ?? [100, 100], o.outputs ?? 1),
  ],
  // A wider CNN for CIFAR-sized input, still without normalisation statistics: 3x3 convolutions
  // 32, 32/2, 64, 64/2, 64/2 (32x32 -> 4x4), then 1024 -> 128 -> out.
  wide_cnn: (o) =>
    convStack(o, [
      { out: 32, kernel: 3, stride: 1, padding: 1 },
      { out: 32, kernel: 3, stride: 2, padding: 1 },
      { out: 64, kernel: 3, stride: 1, padding: 1 },
      { out: 64, kernel: 3, stride: 2, padding: 1 },
      { out: 64, kernel: 3, stride: 2, padding: 1 },
    ], [128]),
  // The few-shot literature's backbone (Vinyals et al. 2016; MAML, ProtoNet): 4 blocks of 3x3
  // convolution (padding 1), batch norm, ReLU and 2x2 max-pool, then a linear N-way head.
  // 28x28 -> 14, 7, 3, 1; 32x32 -> 16, 8, 4, 2; 84x84 -> 42, 21, 10, 5.
  conv4: (o) => {
    const width = o.width ?? 64;
    const layers: Layer[] = [];
    let [c, h, w] = o.inputShape;
    for (let i = 1; i <= 4; i++) {
      layers.push(
        {
          kind: "conv",
          name: `conv${i}`,
          inChannels: c,
          outChannels: width,
          kernel: 3,
          stride: 1,
          padding: 1,
          activation: "identity",
        },
        { kind: "norm", name: `norm${i}`, channels: width, activation: "relu" },
        { kind: "pool" },
      );
      [c, h, w] = [width, Math.floor(h / 2), Math.floor(w / 2)];
      if (h < 1 || w < 1) {
        throw new RangeError(
          `Input [${o.inputShape}] is too small for conv4's 4 poolings; use at least 16x16`,
        );
      }
    }
    return [...layers, { kind: "flatten" }, ...linearStack(c * h * w, [], o.outputs ?? 1)];
  },
};

function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Names accepted by `makeTarget` (`--target`). */
export const TARGETS: readonly string[] = Object.keys(builders);

/** The architecture registered as `name` for the given input and outputs. */
export function makeTarget(name: string, options: TargetOptions): TargetSpec {
  const build = builders[name];
  if (!build) {
    throw new RangeError(`Unknown target '${name}'; valid targets: ${TARGETS.join(", ")}`);
  }
  return {
    name,
    inputShape: options.inputShape,
    outputs: options.outputs ?? 1,
    layers: build(options),
    slope: options.slope ?? 0.01,
  };
}

/** The named weight tensors of a target, in layer order (weight, then bias). */
export function weightShapes(spec: TargetSpec): WeightShape[] {
  const out: WeightShape[] = [];
  for (const layer of spec.layers) {
    if (layer.kind === "conv") {
      const fanIn = layer.inChannels * layer.kernel * layer.kernel;
      out.push({
        name: `${layer.name}.weight`,
        shape: [layer.outChannels, layer.inChannels, layer.kernel, layer.kernel],
        fanIn,
      });
      out.push({ name: `${layer.name}.bias`, shape: [layer.outChannels], fanIn });
    } else if (layer.kind === "linear") {
      out.push({
        name: `${layer.name}.weight`,
        shape: [layer.outFeatures, layer.inFeatures],
        fanIn: layer.inFeatures,
      });
      out.push({ name: `${layer.name}.bias`, shape: [layer.outFeatures], fanIn: layer.inFeatures });
    } else if (layer.kind === "norm") {
      // Scale offset and shift start within 1/sqrt(channels) of the identity (PyTorch: exactly).
      for (const part of ["weight", "bias"]) {
        out.push({ name: `${layer.name}.${part}`, shape: [layer.channels], fanIn: layer.channels });
      }
    }
  }
  return out;
}

/** Total number of weights of one task's network. */
export function weightCount(spec: TargetSpec): number {
  return weightShapes(spec).reduce((n, w) => n + numelOf(w.shape), 0);
}

/**
 * Numbers per image of the largest tensor the forward records (the input or a layer's output):
 * what bounds how many images one buffer binding can hold.
 */
export function largestActivation(spec: TargetSpec): number {
  let [c, h, w] = spec.inputShape;
  let most = c * h * w;
  for (const layer of spec.layers) {
    if (layer.kind === "conv") {
      const size = { k: layer.kernel, stride: layer.stride, padding: layer.padding };
      [c, h, w] = [layer.outChannels, conv2dOutputSize(h, size), conv2dOutputSize(w, size)];
    } else if (layer.kind === "pool") {
      [, , c, h, w] = poolOutputSize([1, 1, c, h, w]) as [number, number, number, number, number];
    } else if (layer.kind === "flatten") {
      [c, h, w] = [c * h * w, 1, 1];
    } else if (layer.kind === "linear") {
      [c, h, w] = [layer.outFeatures, 1, 1];
    }
    most = Math.max(most, c * h * w);
  }
  return most;
}

/**
 * Standard deviation of PyTorch's default (Kaiming-uniform, a = sqrt(5)) initialisation of a
 * weight or bias with this fan-in: U(-1/sqrt(fanIn), 1/sqrt(fanIn)).
 */
export function standardInitStd(fanIn: number): number {
  return 1 / Math.sqrt(3 * fanIn);
}

/**
 * Records the batched forward on the tape: `weights` maps each name of `weightShapes(spec)` to a
 * variable of shape [T, ...shape]; x is [T, B, C, H, W]; returns logits [T, B, outputs].
 */
export function targetForward(
  tape: Tape,
  spec: TargetSpec,
  inputs: { weights: ReadonlyMap<string, Var>; x: Var },
): Var {
  const { weights } = inputs;
  const get = (name: string): Var => {
    const v = weights.get(name);
    if (!v) throw new Error(`Missing generated weight '${name}' for target ${spec.name}`);
    return v;
  };
  let h = inputs.x;
  const [T, B] = h.shape as [number, number];
  for (const layer of spec.layers) {
    if (layer.kind === "conv") {
      h = tape.conv2d(h, get(`${layer.name}.weight`), get(`${layer.name}.bias`), {
        stride: layer.stride,
        padding: layer.padding,
        activation: layer.activation,
        slope: spec.slope,
      });
    } else if (layer.kind === "norm") {
      h = tape.batchNorm(h, get(`${layer.name}.weight`), get(`${layer.name}.bias`), {
        scaleOffset: 1,
      });
      h = tape.activation(h, layer.activation, spec.slope);
    } else if (layer.kind === "pool") {
      h = tape.maxPool2d(h);
    } else if (layer.kind === "flatten") {
      h = h.reshape([T, B, numelOf(h.shape.slice(2))]);
    } else {
      h = tape.linear(h, get(`${layer.name}.weight`), {
        transB: true,
        bias: get(`${layer.name}.bias`),
        activation: layer.activation,
        slope: spec.slope,
      });
    }
  }
  return h;
}
