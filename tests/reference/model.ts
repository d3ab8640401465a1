/**
 * CPU reference of the SuperNet in float64: the generator (z -> hidden layers -> one head per
 * target weight tensor) and the batched target network (conv / flatten / linear), forward and
 * backward, composed from the reference ops of the kernel families (matmul, conv2d, elementwise,
 * gather, reduce, loss). Layouts are those of src/model: generator weights [in, out], generated
 * conv weights [T, O, C, k, k], linear weights [T, out, in], biases [T, out].
 *
 * @module
 */
import type { GeneratorConfig } from "../../src/model/generator.ts";
import type { TargetSpec, WeightShape } from "../../src/model/target.ts";
import { conv2d, conv2dBackward, type ConvShape } from "./conv2d.ts";
import { activation, activationBackward } from "./elementwise.ts";
import { batchNorm, batchNormBackward } from "./norm.ts";
import { maxPool2d, maxPool2dBackward } from "./pool.ts";
import { gatherRows, scatterRowsAdd } from "./gather.ts";
import { sigmoidCrossEntropy } from "./loss.ts";
import { matmul, type MatmulReferenceOptions } from "./matmul.ts";
import { reduceSum } from "./reduce.ts";

/** Named arrays, e.g. parameters or gradients by name. */
export type Values = ReadonlyMap<string, ArrayLike<number>>;

function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function need(values: Values, name: string): ArrayLike<number> {
  const v = values.get(name);
  if (!v) throw new Error(`Reference is missing '${name}'`);
  return v;
}

/** Adds `b` into `a` elementwise (a += b) and returns `a`. */
function addInto(a: Float64Array, b: ArrayLike<number>): Float64Array {
  for (let i = 0; i < a.length; i++) a[i]! += b[i]!;
  return a;
}

/**
 * Gradients of a fused matmul out = scale * act(op(a) @ op(b) + bias) (options as for the
 * reference `matmul`) given its output `out` and d loss / d out: da in a's stored layout, db in
 * b's stored layout and dbias [T, N].
 */
export function matmulBackward(
  inputs: { a: ArrayLike<number>; b: ArrayLike<number>; out: ArrayLike<number> },
  options: MatmulReferenceOptions & { dOut: ArrayLike<number> },
): { da: Float64Array; db: Float64Array; dbias: Float64Array } {
  const { T, M, K, N, transA = false, transB = false } = options;
  const { a, b } = inputs;
  const dPre = activationBackward(inputs.out, options.dOut, {
    activation: options.activation ?? "identity",
    slope: options.slope,
    scale: options.scale,
  });
  // dA = dPre @ op(B)^T and dB = op(A)^T @ dPre, each written in its operand's stored layout.
  const da = transA
    ? matmul(b, dPre, { T, M: K, K: N, N: M, transA: transB, transB: true })
    : matmul(dPre, b, { T, M, K: N, N: K, transB: !transB });
  const db = transB
    ? matmul(dPre, a, { T, M: N, K: M, N: K, transA: true, transB: transA })
    : matmul(a, dPre, { T, M: K, K: M, N, transA: !transA });
  const dbias = reduceSum(dPre, [T, M, N], { axes: [1] });
  return { da, db, dbias };
}

/** What `generatorReference` computed: every layer's output, kept for the backward. */
export interface GeneratorTrace {
  /** Tasks T (rows of z). */
  readonly tasks: number;
  /** [z, hidden1, hidden2, ...]: the input of each layer, each [T, width]. */
  readonly layers: Float64Array[];
  /** Generated weights [T, ...shape] by target weight name. */
  readonly weights: Map<string, Float64Array>;
}

/**
 * The generator's forward: z [T, zDim] through the hidden layers (h @ W + b, activation) and one
 * head per target weight tensor (outputScale * tanh(h @ W + b), or linear).
 */
export function generatorReference(
  config: GeneratorConfig,
  options: {
    params: Values;
    z: ArrayLike<number>;
    targetWeights: readonly WeightShape[];
    slope?: number;
  },
): GeneratorTrace {
  const { params, slope = 0.01 } = options;
  const tasks = options.z.length / config.zDim;
  const layers: Float64Array[] = [Float64Array.from(options.z)];
  let width = config.zDim;
  config.hidden.forEach((out, i) => {
    const h = matmul(layers[i]!, need(params, `hidden${i + 1}.weight`), {
      T: 1,
      M: tasks,
      K: width,
      N: out,
      bias: need(params, `hidden${i + 1}.bias`),
      activation: config.hiddenActivation,
      slope,
    });
    layers.push(h);
    width = out;
  });
  const h = layers[layers.length - 1]!;
  const weights = new Map<string, Float64Array>();
  for (const tw of options.targetWeights) {
    weights.set(
      tw.name,
      matmul(h, need(params, `head.${tw.name}.weight`), {
        T: 1,
        M: tasks,
        K: width,
        N: size(tw.shape),
        bias: need(params, `head.${tw.name}.bias`),
        activation: config.output === "tanh" ? "tanh" : "identity",
        scale: headScale(config, tw),
      }),
    );
  }
  return { tasks, layers, weights };
}

/**
 * A head's output scale: outputScale, or with per-head fan_in scaling outputScale x 3 x the std
 * of PyTorch's default init, U(-1/sqrt(fanIn), 1/sqrt(fanIn)), whose std is 1/sqrt(3 fanIn).
 */
function headScale(config: GeneratorConfig, tw: WeightShape): number {
  return config.headScale === "fan_in"
    ? config.outputScale * 3 / Math.sqrt(3 * tw.fanIn)
    : config.outputScale;
}

/**
 * The generator's backward: from d loss / d generated weights (by name, [T, ...shape]) to the
 * gradients of every generator parameter and of z [T, zDim].
 */
export function generatorBackwardReference(
  config: GeneratorConfig,
  options: {
    params: Values;
    trace: GeneratorTrace;
    dWeights: Values;
    targetWeights: readonly WeightShape[];
    slope?: number;
  },
): { params: Map<string, Float64Array>; z: Float64Array } {
  const { params, trace, slope = 0.01 } = options;
  const tasks = trace.tasks;
  const grads = new Map<string, Float64Array>();
  const depth = config.hidden.length;
  const width = depth > 0 ? config.hidden[depth - 1]! : config.zDim;
  const h = trace.layers[depth]!;
  let dh: Float64Array = new Float64Array(tasks * width);
  for (const tw of options.targetWeights) {
    const n = size(tw.shape);
    const g = matmulBackward(
      { a: h, b: need(params, `head.${tw.name}.weight`), out: trace.weights.get(tw.name)! },
      {
        T: 1,
        M: tasks,
        K: width,
        N: n,
        activation: config.output === "tanh" ? "tanh" : "identity",
        scale: headScale(config, tw),
        dOut: need(options.dWeights, tw.name),
      },
    );
    grads.set(`head.${tw.name}.weight`, g.db);
    grads.set(`head.${tw.name}.bias`, g.dbias);
    addInto(dh, g.da);
  }
  for (let i = depth - 1; i >= 0; i--) {
    const inWidth = i > 0 ? config.hidden[i - 1]! : config.zDim;
    const g = matmulBackward(
      { a: trace.layers[i]!, b: need(params, `hidden${i + 1}.weight`), out: trace.layers[i + 1]! },
      {
        T: 1,
        M: tasks,
        K: inWidth,
        N: config.hidden[i]!,
        activation: config.hiddenActivation,
        slope,
        dOut: dh,
      },
    );
    grads.set(`hidden${i + 1}.weight`, g.db);
    grads.set(`hidden${i + 1}.bias`, g.dbias);
    dh = g.da;
  }
  return { params: grads, z: dh };
}

/** What `targetReference` computed: the input and output of every layer, then the logits. */
export interface TargetTrace {
  /** Tasks T. */
  readonly tasks: number;
  /** Samples per task B. */
  readonly batch: number;
  /** inputs[i] is the input of layer i (x for layer 0); outputs[i] its output. */
  readonly inputs: Float64Array[];
  /** Outputs of each layer (flatten passes its input through). */
  readonly outputs: Float64Array[];
  /** Logits [T, B, outputs]. */
  readonly logits: Float64Array;
}

/** The convolution shape of a conv layer on [T, B, C, H, W] input of side h x w. */
function convShape(
  layer: Extract<TargetSpec["layers"][number], { kind: "conv" }>,
  dims: { tasks: number; batch: number; h: number; w: number },
): ConvShape {
  return {
    ...dims,
    cin: layer.inChannels,
    cout: layer.outChannels,
    k: layer.kernel,
    stride: layer.stride,
    padding: layer.padding,
  };
}

/** Side of a convolution's output. */
function convSide(side: number, s: ConvShape): number {
  return Math.floor((side + 2 * (s.padding ?? 0) - s.k) / (s.stride ?? 1)) + 1;
}

/**
 * The batched target forward: x [T, B, C, H, W] and generated (or plain) weights [T, ...shape]
 * by name give logits [T, B, outputs].
 */
export function targetReference(
  spec: TargetSpec,
  options: { weights: Values; x: ArrayLike<number>; tasks: number },
): TargetTrace {
  const { weights, tasks } = options;
  const [, h0, w0] = spec.inputShape;
  const batch = options.x.length / (tasks * size(spec.inputShape));
  let h = h0;
  let w = w0;
  let c = spec.inputShape[0];
  const inputs: Float64Array[] = [];
  const outputs: Float64Array[] = [];
  let current: Float64Array = Float64Array.from(options.x);
  for (const layer of spec.layers) {
    inputs.push(current);
    if (layer.kind === "norm") {
      // The stored scale is an offset from 1 (see the target's norm layer).
      const gamma = Float64Array.from(need(weights, `${layer.name}.weight`), (v) => v + 1);
      const normed = batchNorm(current, [tasks, batch, c, h, w], {
        gamma,
        beta: need(weights, `${layer.name}.bias`),
      }).y;
      current = activation(normed, { activation: layer.activation, slope: spec.slope });
    } else if (layer.kind === "pool") {
      current = maxPool2d(current, [tasks, batch, c, h, w]).y;
      h = Math.floor(h / 2);
      w = Math.floor(w / 2);
    } else if (layer.kind === "conv") {
      c = layer.outChannels;
      const s = convShape(layer, { tasks, batch, h, w });
      current = conv2d(s, {
        x: current,
        w: need(weights, `${layer.name}.weight`),
        bias: need(weights, `${layer.name}.bias`),
        activation: layer.activation,
        slope: spec.slope,
      });
      h = convSide(h, s);
      w = convSide(w, s);
    } else if (layer.kind === "linear") {
      current = matmul(current, need(weights, `${layer.name}.weight`), {
        T: tasks,
        M: batch,
        K: layer.inFeatures,
        N: layer.outFeatures,
        transB: true,
        bias: need(weights, `${layer.name}.bias`),
        activation: layer.activation,
        slope: spec.slope,
      });
    }
    outputs.push(current);
  }
  return { tasks, batch, inputs, outputs, logits: current };
}

/**
 * The batched target backward: d loss / d logits [T, B, outputs] to the gradients of every
 * weight [T, ...shape] by name and of x.
 */
export function targetBackwardReference(
  spec: TargetSpec,
  options: { weights: Values; trace: TargetTrace; dLogits: ArrayLike<number> },
): { weights: Map<string, Float64Array>; x: Float64Array } {
  const { weights, trace } = options;
  const { tasks, batch } = trace;
  const grads = new Map<string, Float64Array>();
  // Spatial sides of each layer's input, walking forward once.
  const sides: [number, number, number][] = [];
  let [c, h, w] = spec.inputShape;
  for (const layer of spec.layers) {
    sides.push([c, h, w]);
    if (layer.kind === "conv") {
      const s = convShape(layer, { tasks, batch, h, w });
      h = convSide(h, s);
      w = convSide(w, s);
      c = layer.outChannels;
    } else if (layer.kind === "pool") {
      h = Math.floor(h / 2);
      w = Math.floor(w / 2);
    }
  }
  let d: Float64Array = Float64Array.from(options.dLogits);
  for (let i = spec.layers.length - 1; i >= 0; i--) {
    const layer = spec.layers[i]!;
    const [ci, hi, wi] = sides[i]!;
    const shape = [tasks, batch, ci, hi, wi] as const;
    if (layer.kind === "norm") {
      const dNormed = activationBackward(trace.outputs[i]!, d, {
        activation: layer.activation,
        slope: spec.slope,
      });
      const gamma = Float64Array.from(need(weights, `${layer.name}.weight`), (v) => v + 1);
      const g = batchNormBackward(dNormed, shape, { x: trace.inputs[i]!, gamma });
      grads.set(`${layer.name}.weight`, g.dGamma);
      grads.set(`${layer.name}.bias`, g.dBeta);
      d = g.dx;
    } else if (layer.kind === "pool") {
      d = maxPool2dBackward(d, maxPool2d(trace.inputs[i]!, shape).indices, shape);
    } else if (layer.kind === "conv") {
      const s = convShape(layer, { tasks, batch, h: hi, w: wi });
      const dPre = activationBackward(trace.outputs[i]!, d, {
        activation: layer.activation,
        slope: spec.slope,
      });
      const g = conv2dBackward(s, {
        x: trace.inputs[i]!,
        w: need(weights, `${layer.name}.weight`),
        dy: dPre,
      });
      grads.set(`${layer.name}.weight`, g.dw);
      grads.set(`${layer.name}.bias`, g.dbias);
      d = g.dx;
    } else if (layer.kind === "linear") {
      const g = matmulBackward(
        { a: trace.inputs[i]!, b: need(weights, `${layer.name}.weight`), out: trace.outputs[i]! },
        {
          T: tasks,
          M: batch,
          K: layer.inFeatures,
          N: layer.outFeatures,
          transB: true,
          activation: layer.activation,
          slope: spec.slope,
          dOut: d,
        },
      );
      grads.set(`${layer.name}.weight`, g.db);
      grads.set(`${layer.name}.bias`, g.dbias);
      d = g.da;
    }
  }
  return { weights: grads, x: d };
}

/** Everything `superNetReference` returns. */
export interface SuperNetResult {
  /** Generated weights [T, ...shape] by name. */
  weights: Map<string, Float64Array>;
  /** Logits [T, B, outputs]. */
  logits: Float64Array;
  /** Mean over tasks of the per-task mean binary cross-entropy (when labels were given). */
  loss: number;
  /** Per-task mean loss [T]. */
  perTask: Float64Array;
  /** Gradients (when asked): generator parameters by name and the whole task-vector table. */
  grads?: { params: Map<string, Float64Array>; table: Float64Array };
}

/**
 * The SuperNet step: z = table[taskIndices], generated weights, logits of x [T, B, C, H, W], the
 * binary cross-entropy against labels [T, B] and, with `backward`, the gradient of that loss (or
 * of sum(dLogits * logits) when `dLogits` is given instead) w.r.t. every generator parameter and
 * every row of the table.
 */
export function superNetReference(
  model: { spec: TargetSpec; generator: GeneratorConfig; targetWeights: readonly WeightShape[] },
  options: {
    params: Values;
    table: ArrayLike<number>;
    taskIndices: ArrayLike<number>;
    x: ArrayLike<number>;
    labels?: ArrayLike<number>;
    dLogits?: ArrayLike<number>;
    backward?: boolean;
  },
): SuperNetResult {
  const { spec, generator, targetWeights } = model;
  const tasks = options.taskIndices.length;
  const zDim = generator.zDim;
  const z = gatherRows(options.table, options.taskIndices, zDim);
  const gen = generatorReference(generator, {
    params: options.params,
    z,
    targetWeights,
    slope: spec.slope,
  });
  const target = targetReference(spec, { weights: gen.weights, x: options.x, tasks });
  const batch = target.batch;
  const loss = options.labels
    ? sigmoidCrossEntropy(target.logits, options.labels, { tasks, batch })
    : undefined;
  const result: SuperNetResult = {
    weights: gen.weights,
    logits: target.logits,
    loss: loss?.loss ?? NaN,
    perTask: loss?.perTask ?? new Float64Array(tasks),
  };
  if (!options.backward) return result;
  const dLogits = options.dLogits ?? loss?.dLogits;
  if (!dLogits) throw new Error("Reference backward needs labels or dLogits");
  const dTarget = targetBackwardReference(spec, {
    weights: gen.weights,
    trace: target,
    dLogits,
  });
  const dGen = generatorBackwardReference(generator, {
    params: options.params,
    trace: gen,
    dWeights: dTarget.weights,
    targetWeights,
    slope: spec.slope,
  });
  const rows = options.table.length / zDim;
  result.grads = {
    params: dGen.params,
    table: scatterRowsAdd(dGen.z, options.taskIndices, { rows, width: zDim }),
  };
  return result;
}
