import assert from "node:assert/strict";
import { type Dispatch, run } from "../src/gpu/kernel.ts";
import {
  Arena,
  createTensor,
  read,
  readMany,
  type Tensor,
  tensorFrom,
  write,
} from "../src/gpu/tensor.ts";
import { PlainNet } from "../src/model/supernet.ts";
import { fill } from "../src/ops/fill.ts";
import { sigmoidCrossEntropy } from "../src/ops/loss.ts";
import type { OptimizerConfig } from "../src/ops/optim.ts";
import { ParamGroup } from "../src/optim.ts";
import { Random } from "../src/random.ts";
import { Tape, type Var } from "../src/tape.ts";
import { conv2d as conv2dRef, conv2dBackward as conv2dBackwardRef } from "./reference/conv2d.ts";
import {
  activation as activationRef,
  activationBackward as activationBackwardRef,
} from "./reference/elementwise.ts";
import { matmul as matmulRef } from "./reference/matmul.ts";
import { matmulBackward } from "./reference/model.ts";
import { assertClose, finiteDifference, getGpu, uniform } from "./util.ts";

const gpu = await getGpu();

/** n values of N(0, 1) from a seeded generator. */
function gaussian(n: number, seed: number): Float32Array {
  const r = new Random(seed);
  return Float32Array.from({ length: n }, () => r.normal());
}

/**
 * A toy binary problem per task: x ~ N(0, 1) [T, B, ...shape], label 1 where x . p_t > 0 for a
 * fixed random direction p_t of each task.
 */
function toyProblem(
  shape: readonly [number, number, number],
  options: { tasks: number; batch: number; seed: number },
): { x: Float32Array; y: Float32Array } {
  const { tasks, batch, seed } = options;
  const d = shape[0] * shape[1] * shape[2];
  const x = gaussian(tasks * batch * d, seed);
  const p = gaussian(tasks * d, seed + 1);
  const y = new Float32Array(tasks * batch);
  for (let t = 0; t < tasks; t++) {
    for (let b = 0; b < batch; b++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += x[(t * batch + b) * d + i]! * p[t * d + i]!;
      y[t * batch + b] = s > 0 ? 1 : 0;
    }
  }
  return { x, y };
}

/** A model to train: its parameter arena and the forward it records for x [T, B, ...]. */
interface Model {
  params: Arena;
  forward(tape: Tape, inputs: { x: Tensor; taskIndices: Tensor; grads: Arena }): Var;
  destroy(): void;
}

/** PlainNet's mlp (hidden 100, 100) on [1, 6, 6] input. */
function mlp(tasks: number): Model {
  return new PlainNet(gpu, {
    target: "mlp",
    inputShape: [1, 6, 6],
    outputs: 1,
    slope: 0.01,
    seed: 6,
    tasks,
  });
}

/**
 * A tiny CNN on [1, 8, 8] input with per-task weights: conv 3x3 1 -> 8 (padding 1), conv 3x3
 * 8 -> 8 (stride 2, padding 1), both leaky ReLU, then a linear layer 128 -> 1; PyTorch's default
 * init U(-1/sqrt(fanIn), 1/sqrt(fanIn)).
 */
function tinyCnn(tasks: number): Model {
  const shapes: [string, number[], number][] = [
    ["conv1.weight", [tasks, 8, 1, 3, 3], 9],
    ["conv1.bias", [tasks, 8], 9],
    ["conv2.weight", [tasks, 8, 8, 3, 3], 72],
    ["conv2.bias", [tasks, 8], 72],
    ["fc.weight", [tasks, 1, 128], 128],
    ["fc.bias", [tasks, 1], 128],
  ];
  const params = new Arena(gpu);
  for (const [name, shape] of shapes) params.add(name, shape);
  params.allocate();
  const r = new Random(6);
  for (const [name, , fanIn] of shapes) {
    const t = params.get(name);
    write(gpu, t, r.fillUniform(new Float32Array(t.size), 1 / Math.sqrt(fanIn)));
  }
  return {
    params,
    forward(tape, inputs) {
      const w = (name: string) => tape.param(params.get(name), inputs.grads.get(name));
      const x = tape.input(inputs.x);
      const [T, B] = x.shape as [number, number];
      const h1 = tape.conv2d(x, w("conv1.weight"), w("conv1.bias"), {
        padding: 1,
        activation: "leaky_relu",
      });
      const h2 = tape.conv2d(h1, w("conv2.weight"), w("conv2.bias"), {
        stride: 2,
        padding: 1,
        activation: "leaky_relu",
      });
      return tape.linear(h2.reshape([T, B, 128]), w("fc.weight"), {
        transB: true,
        bias: w("fc.bias"),
      });
    },
    destroy: () => params.destroy(),
  };
}

/** What a training run gave: the loss before the first update and after the last. */
interface TrainResult {
  initial: number;
  final: number;
  params: Float32Array;
}

/**
 * Trains a model on the toy problem, full batch, for `steps` steps: one prepared step (forward,
 * loss, backward, update) replayed `steps` times, then one more forward for the final loss.
 */
async function train(
  build: (tasks: number) => Model,
  options: {
    inputShape: [number, number, number];
    optimizer: OptimizerConfig;
    steps: number;
  },
): Promise<TrainResult> {
  const { inputShape, steps } = options;
  const tasks = 2;
  const batch = 64;
  const data = toyProblem(inputShape, { tasks, batch, seed: 5 });
  const x = tensorFrom(gpu, [tasks, batch, ...inputShape], data.x);
  const y = tensorFrom(gpu, [tasks, batch], data.y);
  const net = build(tasks);
  const group = new ParamGroup(gpu, net.params, {
    optimizer: options.optimizer,
    schedule: { lr: options.optimizer.lr, kind: "constant", warmup: 0, steps },
  });
  const tape = new Tape(gpu);
  const taskIndices = tensorFrom(gpu, [tasks], Uint32Array.from({ length: tasks }, (_, t) => t));
  const logits = net.forward(tape, { x, taskIndices, grads: group.grads });
  const dLogits = tape.scratch(logits.shape);
  const loss = createTensor(gpu, [1]);
  const perTask = createTensor(gpu, [tasks]);
  const lossDispatches = sigmoidCrossEntropy(gpu, logits.tensor.reshape([tasks, batch]), y, {
    perTask,
    loss,
    dLogits: dLogits.reshape([tasks, batch]),
  });
  tape.buildBackward(logits, dLogits);
  const step: Dispatch[] = [
    ...tape.forward,
    ...lossDispatches,
    ...tape.backward,
    ...group.optimizer.dispatches,
  ];
  let initial = NaN;
  for (let s = 1; s <= steps; s++) {
    group.setStep(s);
    run(gpu, step);
    if (s === 1) initial = (await read(gpu, loss))[0]!;
  }
  run(gpu, [...tape.forward, ...lossDispatches]);
  const [final, params] = await readMany(gpu, [loss, net.params.flat]);
  tape.destroy();
  group.destroy();
  net.destroy();
  taskIndices.destroy();
  for (const t of [x, y, loss, perTask]) t.destroy();
  return { initial, final: final![0]!, params: params! };
}

// Each optimiser at a learning rate that suits it, PyTorch defaults otherwise. Measured final /
// initial loss after 50 steps: mlp 1/632 (sgd), 1/502 (rmsprop), 1/22049 (adam); tiny CNN 1/24,
// 1/64, 1/12. The asserted factors leave at least 3x of margin.
const OPTIMIZERS: OptimizerConfig[] = [
  { kind: "sgd", lr: 0.1, momentum: 0.9 },
  { kind: "rmsprop", lr: 1e-3 },
  { kind: "adam", lr: 3e-3 },
];
const MODELS = [
  { name: "mlp", build: mlp, inputShape: [1, 6, 6] as [number, number, number], factor: 20 },
  {
    name: "tiny CNN",
    build: tinyCnn,
    inputShape: [1, 8, 8] as [number, number, number],
    factor: 4,
  },
];

for (const model of MODELS) {
  for (const optimizer of OPTIMIZERS) {
    Deno.test(`${model.name} trained with ${optimizer.kind} cuts the toy loss ${model.factor}x`, async () => {
      const result = await train(model.build, {
        inputShape: model.inputShape,
        optimizer,
        steps: 50,
      });
      assert.ok(
        result.initial > 0.6 && result.initial < 0.8,
        `initial loss ${result.initial} is not that of an untrained binary classifier`,
      );
      assert.ok(
        result.final * model.factor < result.initial,
        `loss went from ${result.initial} to ${result.final}, less than ${model.factor}x down`,
      );
    });
  }
}

Deno.test("two identical training runs give bit-identical parameters", async () => {
  for (const model of MODELS) {
    const options = { inputShape: model.inputShape, optimizer: OPTIMIZERS[2]!, steps: 20 };
    const a = await train(model.build, options);
    const b = await train(model.build, options);
    const bitsA = new Uint32Array(a.params.buffer);
    const bitsB = new Uint32Array(b.params.buffer);
    const differing = bitsA.findIndex((v, i) => v !== bitsB[i]);
    assert.equal(differing, -1, `${model.name}: parameter ${differing} differs between runs`);
    assert.equal(a.final, b.final);
  }
});

// The gradient check's net, T = 2 tasks of B = 3 samples of [2, 5, 5]:
//   h1 = leaky_relu(conv(x, cw, cb), 0.1), 3x3 stride 2 padding 1 -> [2, 3, 3, 3, 3]
//   h2 = tanh(flatten(h1) @ w1^T + b1)      [2, 3, 4]
//   h3 = h2 @ wsq^T                          [2, 3, 4]  (wsq is used twice: its gradient adds up)
//   h4 = sigmoid(h3), a separate activation op
//   h5 = leaky_relu(h4 @ wsq^T + bsq, 0.1)   [2, 3, 4]
//   out = h5 as [6, 4] @ w2 + b2             [6, 2]     (2-D, untransposed: one weight for all)
// and the scalar sum(r * out) for fixed random r, so d out = r.
const GRADCHECK_SHAPES: Record<string, number[]> = {
  x: [2, 3, 2, 5, 5],
  cw: [2, 3, 2, 3, 3],
  cb: [2, 3],
  w1: [2, 4, 27],
  b1: [2, 4],
  wsq: [2, 4, 4],
  bsq: [2, 4],
  w2: [4, 2],
  b2: [1, 2],
  unused: [5],
};
const SLOPE = 0.1;

function numelOf(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The forward of the gradient check's net in float64, every intermediate kept. */
function gradcheckForward(v: ReadonlyMap<string, ArrayLike<number>>) {
  const p = (name: string) => v.get(name)!;
  const conv = { tasks: 2, batch: 3, cin: 2, h: 5, w: 5, cout: 3, k: 3, stride: 2, padding: 1 };
  const h1 = conv2dRef(conv, {
    x: p("x"),
    w: p("cw"),
    bias: p("cb"),
    activation: "leaky_relu",
    slope: SLOPE,
  });
  const h2 = matmulRef(h1, p("w1"), {
    T: 2,
    M: 3,
    K: 27,
    N: 4,
    transB: true,
    bias: p("b1"),
    activation: "tanh",
  });
  const h3 = matmulRef(h2, p("wsq"), { T: 2, M: 3, K: 4, N: 4, transB: true });
  const h4 = activationRef(h3, { activation: "sigmoid" });
  const h5 = matmulRef(h4, p("wsq"), {
    T: 2,
    M: 3,
    K: 4,
    N: 4,
    transB: true,
    bias: p("bsq"),
    activation: "leaky_relu",
    slope: SLOPE,
  });
  const out = matmulRef(h5, p("w2"), { T: 1, M: 6, K: 4, N: 2, bias: p("b2") });
  return { conv, h1, h2, h3, h4, h5, out };
}

/** The backward of the gradient check's net in float64, for d out = r. */
function gradcheckBackward(
  v: ReadonlyMap<string, ArrayLike<number>>,
  r: ArrayLike<number>,
): Map<string, Float64Array> {
  const p = (name: string) => v.get(name)!;
  const f = gradcheckForward(v);
  const g = new Map<string, Float64Array>();
  const out = matmulBackward({ a: f.h5, b: p("w2"), out: f.out }, {
    T: 1,
    M: 6,
    K: 4,
    N: 2,
    dOut: r,
  });
  g.set("w2", out.db).set("b2", out.dbias);
  const l5 = matmulBackward({ a: f.h4, b: p("wsq"), out: f.h5 }, {
    T: 2,
    M: 3,
    K: 4,
    N: 4,
    transB: true,
    activation: "leaky_relu",
    slope: SLOPE,
    dOut: out.da,
  });
  g.set("bsq", l5.dbias);
  const dh3 = activationBackwardRef(f.h4, l5.da, { activation: "sigmoid" });
  const l3 = matmulBackward({ a: f.h2, b: p("wsq"), out: f.h3 }, {
    T: 2,
    M: 3,
    K: 4,
    N: 4,
    transB: true,
    dOut: dh3,
  });
  g.set("wsq", l5.db.map((d, i) => d + l3.db[i]!));
  const l2 = matmulBackward({ a: f.h1, b: p("w1"), out: f.h2 }, {
    T: 2,
    M: 3,
    K: 27,
    N: 4,
    transB: true,
    activation: "tanh",
    dOut: l3.da,
  });
  g.set("w1", l2.db).set("b1", l2.dbias);
  const dPre = activationBackwardRef(f.h1, l2.da, { activation: "leaky_relu", slope: SLOPE });
  const c = conv2dBackwardRef(f.conv, { x: p("x"), w: p("cw"), dy: dPre });
  g.set("x", c.dx).set("cw", c.dw).set("cb", c.dbias);
  g.set("unused", new Float64Array(5));
  return g;
}

Deno.test("tape gradients of a conv + linear net equal the reference backward and finite differences", async () => {
  const names = Object.keys(GRADCHECK_SHAPES);
  const values = new Map(
    names.map((n, i) => [n, uniform(numelOf(GRADCHECK_SHAPES[n]!), 70 + i, -0.8, 0.8)]),
  );
  const r = uniform(12, 80);
  const arena = new Arena(gpu);
  for (const n of names) arena.add(n, GRADCHECK_SHAPES[n]!);
  arena.allocate();
  for (const n of names) write(gpu, arena.get(n), values.get(n)!);
  const grads = arena.twin();
  const tape = new Tape(gpu);
  const v = (n: string) => tape.param(arena.get(n), grads.get(n));
  const wsq = v("wsq");
  const h1 = tape.conv2d(v("x"), v("cw"), v("cb"), {
    stride: 2,
    padding: 1,
    activation: "leaky_relu",
    slope: SLOPE,
  });
  const h2 = tape.linear(h1.reshape([2, 3, 27]), v("w1"), {
    transB: true,
    bias: v("b1"),
    activation: "tanh",
  });
  const h3 = tape.linear(h2, wsq, { transB: true });
  const h4 = tape.activation(h3, "sigmoid");
  const h5 = tape.linear(h4, wsq, {
    transB: true,
    bias: v("bsq"),
    activation: "leaky_relu",
    slope: SLOPE,
  });
  const out = tape.linear(h5.reshape([6, 4]), v("w2"), { bias: v("b2") });
  v("unused");
  assert.deepEqual(out.shape, [6, 2]);
  const dOut = tensorFrom(gpu, [6, 2], r);
  tape.buildBackward(out, dOut);
  // NaN everywhere first: every gradient must be overwritten (or zero-filled) by the backward.
  run(gpu, [...fill(gpu, grads.flat, NaN), ...tape.forward, ...tape.backward]);
  const [gotOut] = await readMany(gpu, [out.tensor]);
  const gotGrads = await readMany(gpu, names.map((n) => grads.get(n)));

  const want = gradcheckForward(values);
  assertClose(gotOut!, want.out, { rtol: 1e-5, atol: 1e-6, label: "forward" });
  const wantGrads = gradcheckBackward(values, r);
  const scalar = (vals: ReadonlyMap<string, ArrayLike<number>>) => {
    const o = gradcheckForward(vals).out;
    return o.reduce((s, x, i) => s + x * r[i]!, 0);
  };
  names.forEach((n, i) => {
    const fd = finiteDifference(
      (x) => scalar(new Map<string, ArrayLike<number>>([...values, [n, x]])),
      values.get(n)!,
      { eps: 1e-6 },
    );
    assertClose(wantGrads.get(n)!, fd, { rtol: 1e-5, atol: 1e-8, label: `reference d ${n} vs FD` });
    assertClose(gotGrads[i]!, wantGrads.get(n)!, { rtol: 1e-4, atol: 1e-6, label: `tape d ${n}` });
  });
  tape.destroy();
  dOut.destroy();
  arena.destroy();
  grads.destroy();
});
