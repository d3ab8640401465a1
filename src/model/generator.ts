/**
 * The generating network: a multi-task fully connected net that maps a task vector z to every
 * weight of a target network. z -> optional hidden layers -> one head per target weight tensor ->
 * tanh (bounded weights, the seed's choice) times a scale, or linear.
 *
 * @module
 */
import type { Activation } from "../ops/activation.ts";
import { Random } from "../random.ts";
import type { Tape, Var } from "../tape.ts";
import { standardInitStd, type WeightShape } from "./target.ts";

/** Generator hyperparameters. */
export interface GeneratorConfig {
  /** Length of a task vector z (default 100). */
  zDim: number;
  /** Hidden layer widths between z and the heads (default none, as in the seed). */
  hidden: number[];
  /** Activation of the hidden layers (default leaky_relu). */
  hiddenActivation: Activation;
  /** Output nonlinearity of every head: tanh bounds the generated weights; linear does not. */
  output: "tanh" | "linear";
  /** Generated weight = scale * tanh(...) (or scale * linear); default 1. */
  outputScale: number;
  /**
   * Per-head scaling: `none` (the seed's: every head times `outputScale`) or `fan_in` (head h
   * times outputScale x 3 x the PyTorch init std of its tensor, so tanh bounds each tensor at
   * three of its own init stds and every head's pre-activation starts at the same scale).
   */
  headScale?: "none" | "fan_in";
}

/** The output scale of the head of one target weight tensor. */
export function headScaleOf(config: GeneratorConfig, weight: WeightShape): number {
  return config.headScale === "fan_in"
    ? config.outputScale * 3 * standardInitStd(weight.fanIn)
    : config.outputScale;
}

/** Defaults of `GeneratorConfig`: the seed's generator. */
export const DEFAULT_GENERATOR: GeneratorConfig = {
  zDim: 100,
  hidden: [],
  hiddenActivation: "leaky_relu",
  output: "tanh",
  outputScale: 1,
};

/** A named generator parameter with its shape. */
export interface ParamShape {
  /** e.g. "hidden1.weight", "head.conv1.weight.weight". */
  readonly name: string;
  /** Shape; weights are stored [in, out] so the forward is z @ W. */
  readonly shape: readonly number[];
}

function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The generator's parameters, in a fixed order, for the target's weights. */
export function generatorParams(
  config: GeneratorConfig,
  targetWeights: WeightShape[],
): ParamShape[] {
  const out: ParamShape[] = [];
  let width = config.zDim;
  config.hidden.forEach((h, i) => {
    out.push({ name: `hidden${i + 1}.weight`, shape: [width, h] });
    out.push({ name: `hidden${i + 1}.bias`, shape: [h] });
    width = h;
  });
  for (const w of targetWeights) {
    out.push({ name: `head.${w.name}.weight`, shape: [width, size(w.shape)] });
    out.push({ name: `head.${w.name}.bias`, shape: [size(w.shape)] });
  }
  return out;
}

function act(x: number, a: Activation, slope: number): number {
  switch (a) {
    case "relu":
      return Math.max(0, x);
    case "leaky_relu":
      return x > 0 ? x : slope * x;
    case "tanh":
      return Math.tanh(x);
    case "sigmoid":
      return 1 / (1 + Math.exp(-x));
    default:
      return x;
  }
}

/**
 * Half-width a of U(-a, a) such that std(f(u)) = target for f = tanh (solved by bisection on a
 * quadrature of E[tanh(u)^2]) or f = identity.
 */
function uniformBoundFor(target: number, output: "tanh" | "linear"): number {
  if (output === "linear") return target * Math.sqrt(3);
  if (target >= 0.99) throw new RangeError(`Cannot reach std ${target} through tanh`);
  const stdOf = (a: number): number => {
    let s = 0;
    const n = 200;
    for (let i = 0; i < n; i++) {
      const u = -a + ((i + 0.5) / n) * 2 * a;
      s += Math.tanh(u) ** 2;
    }
    return Math.sqrt(s / n);
  };
  let lo = 0;
  let hi = 20;
  for (let i = 0; i < 60; i++) {
    const mid = (lo + hi) / 2;
    if (stdOf(mid) < target) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/**
 * Initial generator parameters (hyperfan-in style, Chang et al. 2020, computed exactly for the
 * initial task vectors): hidden layers keep unit pre-activation variance; each head's weights are
 * uniform with a width chosen so that, over the initial z of every task, the generated weights
 * have the std of PyTorch's default init of that target tensor. Head biases start at zero.
 */
export function initGenerator(
  config: GeneratorConfig,
  targetWeights: WeightShape[],
  options: { z: Float32Array; tasks: number; seed: number; slope?: number },
): Map<string, Float32Array> {
  const rand = new Random(options.seed);
  const slope = options.slope ?? 0.01;
  const params = new Map<string, Float32Array>();
  // h: [tasks, width] activations of the current layer, starting from z.
  let h = Float64Array.from(options.z);
  let width = config.zDim;
  const meanSquareNorm = (x: Float64Array): number => {
    let s = 0;
    for (const v of x) s += v * v;
    return Math.max(s / options.tasks, 1e-12);
  };
  config.hidden.forEach((out, i) => {
    const w = rand.fillUniform(
      new Float32Array(width * out),
      Math.sqrt(3 / meanSquareNorm(h)),
    );
    params.set(`hidden${i + 1}.weight`, w);
    params.set(`hidden${i + 1}.bias`, new Float32Array(out));
    const next = new Float64Array(options.tasks * out);
    for (let t = 0; t < options.tasks; t++) {
      for (let j = 0; j < out; j++) {
        let s = 0;
        for (let k = 0; k < width; k++) s += h[t * width + k]! * w[k * out + j]!;
        next[t * out + j] = act(s, config.hiddenActivation, slope);
      }
    }
    h = next;
    width = out;
  });
  const inputNorm = Math.sqrt(meanSquareNorm(h));
  for (const tw of targetWeights) {
    const n = size(tw.shape);
    const wanted = standardInitStd(tw.fanIn) / headScaleOf(config, tw);
    // u = h @ W has std |h| * std(W); choose std(u) so that std(f(u)) = wanted.
    const uBound = uniformBoundFor(wanted, config.output);
    const wBound = uBound / inputNorm;
    params.set(`head.${tw.name}.weight`, rand.fillUniform(new Float32Array(width * n), wBound));
    params.set(`head.${tw.name}.bias`, new Float32Array(n));
  }
  return params;
}

/**
 * Records the generator on the tape: z [T, zDim] -> a map from each target weight name to its
 * generated weights [T, ...shape].
 */
export function generatorForward(
  tape: Tape,
  config: GeneratorConfig,
  inputs: {
    params: ReadonlyMap<string, Var>;
    z: Var;
    targetWeights: WeightShape[];
    slope?: number;
  },
): Map<string, Var> {
  const get = (name: string): Var => {
    const v = inputs.params.get(name);
    if (!v) throw new Error(`Missing generator parameter '${name}'`);
    return v;
  };
  const T = inputs.z.shape[0]!;
  let h = inputs.z;
  config.hidden.forEach((width, i) => {
    h = tape.linear(h, get(`hidden${i + 1}.weight`), {
      bias: get(`hidden${i + 1}.bias`).reshape([1, width]),
      activation: config.hiddenActivation,
      slope: inputs.slope,
    });
  });
  const out = new Map<string, Var>();
  for (const tw of inputs.targetWeights) {
    const n = size(tw.shape);
    const w = tape.linear(h, get(`head.${tw.name}.weight`), {
      bias: get(`head.${tw.name}.bias`).reshape([1, n]),
      activation: config.output === "tanh" ? "tanh" : "identity",
      scale: headScaleOf(config, tw),
    });
    out.set(tw.name, w.reshape([T, ...tw.shape]));
  }
  return out;
}
