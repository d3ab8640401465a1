/**
 * The SuperNet training step of `deno task bench` written with TensorFlow.js on its WebGPU
 * backend, for the ratio ours / theirs on the same adapter: generator heads tanh(z @ W + b) for T
 * tasks, then seed_cnn on each task's B images of 3x32x32, sigmoid cross-entropy, gradients,
 * Adam. TensorFlow.js has no batched per-task weights, so the target networks run as a loop over
 * tasks inside one gradient tape.
 *
 * Run by the benchmark as its own process (`deno run --no-lock -A src/peers/tfjs_step.ts T B`);
 * prints "images_per_second version". The npm packages are fetched on first use and are not
 * dependencies of SuperNet itself.
 *
 * @module
 */
// The peer's packages are deliberately not in deno.json: SuperNet does not depend on them.
// deno-lint-ignore-file no-import-prefix
import * as tf from "npm:@tensorflow/tfjs@4.22.0";
import "npm:@tensorflow/tfjs-backend-webgpu@4.22.0";

const T = Number(Deno.args[0] ?? 16);
const B = Number(Deno.args[1] ?? 32);
const D = 100;
await tf.setBackend("webgpu");
await tf.ready();

const shapes: [string, number[]][] = [["conv1.weight", [5, 5, 3, 16]], ["conv1.bias", [16]]];
for (let i = 2; i <= 4; i++) {
  shapes.push([`conv${i}.weight`, [5, 5, 16, 16]], [`conv${i}.bias`, [16]]);
}
for (const [i, [fin, fout]] of ([[64, 100], [100, 100], [100, 1]] as const).entries()) {
  shapes.push([`fc${i + 1}.weight`, [fin, fout]], [`fc${i + 1}.bias`, [fout]]);
}
const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
const heads = shapes.map(([, s]) => ({
  w: tf.variable(tf.randomNormal([D, size(s)], 0, 0.01)),
  b: tf.variable(tf.zeros([size(s)])),
}));
const z = tf.variable(tf.eye(T, D));
const x = tf.randomNormal([T, B, 32, 32, 3]);
const y = tf.tensor2d(Array.from({ length: T * B }, (_, i) => i % 2), [T, B]);
const optimizer = tf.train.adam(1e-3);

function loss(): tf.Scalar {
  const generated = heads.map((h, k) =>
    tf.reshape(tf.tanh(tf.add(tf.matMul(z, h.w), h.b)), [T, ...shapes[k]![1]])
  );
  const losses: tf.Tensor[] = [];
  for (let t = 0; t < T; t++) {
    const w = (k: number) => tf.squeeze(tf.slice(generated[k]!, [t], [1]), [0]);
    let h: tf.Tensor = tf.squeeze(tf.slice(x, [t], [1]), [0]) as tf.Tensor4D;
    for (let i = 0; i < 4; i++) {
      h = tf.leakyRelu(
        tf.add(
          tf.conv2d(h as tf.Tensor4D, w(2 * i) as tf.Tensor4D, 2, [[0, 0], [2, 2], [2, 2], [0, 0]]),
          w(2 * i + 1),
        ),
        0.01,
      );
    }
    h = tf.reshape(h, [B, 64]);
    for (let i = 0; i < 3; i++) {
      h = tf.add(tf.matMul(h as tf.Tensor2D, w(8 + 2 * i) as tf.Tensor2D), w(9 + 2 * i));
      if (i < 2) h = tf.leakyRelu(h, 0.01);
    }
    const labels = tf.squeeze(tf.slice(y, [t], [1]), [0]);
    losses.push(tf.losses.sigmoidCrossEntropy(labels, tf.reshape(h, [B])));
  }
  return tf.mean(tf.stack(losses)) as tf.Scalar;
}

async function step(): Promise<void> {
  const value = optimizer.minimize(loss, true);
  await value!.data();
  value!.dispose();
}

await step();
const times: number[] = [];
for (let i = 0; i < 5; i++) {
  const t0 = performance.now();
  await step();
  times.push((performance.now() - t0) / 1000);
}
times.sort((a, b) => a - b);
console.log(T * B / times[2]!, tf.version.tfjs);
