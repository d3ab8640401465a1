// Classification losses and accuracy, per task and averaged over tasks.
//
// Layout (row-major): logits [T, B] (binary, one logit per sample) or [T, B, K] (K-way);
// labels [T, B] f32: binary targets in [0, 1], K-way class indices 0..K-1; a negative label marks
// padding, which is ignored (a K-way label >= K is ignored too, so no read goes out of range).
//
// Per sample, with z the logit(s) and y the label:
//   binary: l = max(z, 0) - z * y + log1p(exp(-|z|))   (BCE with logits, stable for |z| = 1e4)
//           dl/dz = sigmoid(z) - y
//   K-way:  l = logsumexp(z) - z[y], logsumexp taken after subtracting max(z)
//           dl/dz = softmax(z) - onehot(y)
// perTask[t] = mean of l over the valid samples of task t (0 when it has none);
// loss[0] = mean of perTask over the tasks that have valid samples (0 when none has);
// dLogits = d loss[0] / d logits * grad_scale = dl/dz * grad_scale / (count[t] * tasks), 0 on padding.
//
// Dispatches, all deterministic (fixed-order loops and fixed trees, no atomics):
//   *_task:    one workgroup of 256 per task (2D grid, linear id = task); thread i sums samples
//              i, i + 256, ... in order, then a fixed tree in workgroup memory; writes perTask[t]
//              and count[t] = number of valid samples (into `stats`, T + 1 floats).
//   task_mean: one workgroup; the same strided sum + tree over T; writes loss[0] and
//              stats[T] = number of tasks with samples.
//   *_grad:    one invocation per logit (binary) or per sample row of K logits (K-way).
//   accuracy_*: one workgroup per task like *_task, counting correct and valid samples.
// Reference: tests/reference/loss.ts.

struct Params {
  tasks: u32,
  batch: u32,
  classes: u32,
  grad_scale: f32,
}

const WG: u32 = 256u;

var<workgroup> partial: array<vec2f, WG>;

// Sums `partial` over the workgroup with a fixed tree; the total ends in partial[0].
fn reduce_partial(lid: u32) {
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (lid < s) {
      partial[lid] += partial[lid + s];
    }
  }
  workgroupBarrier();
}

// log(1 + x) accurate also for small x (WGSL has no log1p): log(u) * x / (u - 1) with u = 1 + x.
fn log1p(x: f32) -> f32 {
  let u = 1.0 + x;
  if (u == 1.0) {
    return x;
  }
  return log(u) * x / (u - 1.0);
}

fn bce(z: f32, y: f32) -> f32 {
  return max(z, 0.0) - z * y + log1p(exp(-abs(z)));
}

fn sigmoid(z: f32) -> f32 {
  if (z >= 0.0) {
    return 1.0 / (1.0 + exp(-z));
  }
  let e = exp(z);
  return e / (1.0 + e);
}

// The class index of a K-way label, or -1 for padding (negative or out of range).
fn class_of(y: f32, k: u32) -> i32 {
  if (y < 0.0 || y >= f32(k)) {
    return -1;
  }
  return i32(y);
}

fn logsumexp(row: u32, k: u32) -> f32 {
  var m = logits_in[row * k];
  for (var j = 1u; j < k; j++) {
    m = max(m, logits_in[row * k + j]);
  }
  var s = 0.0;
  for (var j = 0u; j < k; j++) {
    s += exp(logits_in[row * k + j] - m);
  }
  return m + log(s);
}

// ---- losses per task: logits, labels -> per_task, stats[0..T) ----

@group(0) @binding(0) var<storage, read> logits_in: array<f32>;
@group(0) @binding(1) var<storage, read> labels_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> per_task_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats_out: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

fn finish_task(t: u32, lid: u32) {
  reduce_partial(lid);
  if (lid == 0u) {
    let total = partial[0];
    per_task_out[t] = select(0.0, total.x / total.y, total.y > 0.0);
    stats_out[t] = total.y;
  }
}

@compute @workgroup_size(WG)
fn sigmoid_task(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let t = wid.x + wid.y * nwg.x;
  if (t >= p.tasks) {
    return;
  }
  var acc = vec2f(0.0);
  for (var b = lid; b < p.batch; b += WG) {
    let i = t * p.batch + b;
    let y = labels_in[i];
    if (y >= 0.0) {
      acc += vec2f(bce(logits_in[i], y), 1.0);
    }
  }
  partial[lid] = acc;
  finish_task(t, lid);
}

@compute @workgroup_size(WG)
fn softmax_task(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let t = wid.x + wid.y * nwg.x;
  if (t >= p.tasks) {
    return;
  }
  var acc = vec2f(0.0);
  for (var b = lid; b < p.batch; b += WG) {
    let row = t * p.batch + b;
    let c = class_of(labels_in[row], p.classes);
    if (c >= 0) {
      acc += vec2f(logsumexp(row, p.classes) - logits_in[row * p.classes + u32(c)], 1.0);
    }
  }
  partial[lid] = acc;
  finish_task(t, lid);
}

// ---- mean over tasks: per_task, stats[0..T) -> loss[0], stats[T] ----

@group(0) @binding(0) var<storage, read> per_task_in: array<f32>;
@group(0) @binding(1) var<storage, read_write> stats_io: array<f32>;
@group(0) @binding(2) var<storage, read_write> loss_out: array<f32>;
@group(0) @binding(3) var<uniform> pm: Params;

@compute @workgroup_size(WG)
fn task_mean(@builtin(local_invocation_index) lid: u32) {
  var acc = vec2f(0.0);
  for (var t = lid; t < pm.tasks; t += WG) {
    acc += vec2f(per_task_in[t], select(0.0, 1.0, stats_io[t] > 0.0));
  }
  partial[lid] = acc;
  reduce_partial(lid);
  if (lid == 0u) {
    let total = partial[0];
    loss_out[0] = select(0.0, total.x / total.y, total.y > 0.0);
    stats_io[pm.tasks] = total.y;
  }
}

// ---- gradients: logits, labels, stats -> d_logits ----

@group(0) @binding(0) var<storage, read> g_logits: array<f32>;
@group(0) @binding(1) var<storage, read> g_labels: array<f32>;
@group(0) @binding(2) var<storage, read> g_stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> d_logits: array<f32>;
@group(0) @binding(4) var<uniform> pg: Params;

// grad_scale / (count[t] * tasks): the weight of one valid sample of task t in loss[0].
fn sample_weight(t: u32) -> f32 {
  return pg.grad_scale / (g_stats[t] * g_stats[pg.tasks]);
}

@compute @workgroup_size(WG)
fn sigmoid_grad(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= pg.tasks * pg.batch) {
    return;
  }
  let y = g_labels[i];
  var d = 0.0;
  if (y >= 0.0) {
    d = (sigmoid(g_logits[i]) - y) * sample_weight(i / pg.batch);
  }
  d_logits[i] = d;
}

@compute @workgroup_size(WG)
fn softmax_grad(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let row = (wid.x + wid.y * nwg.x) * WG + lid;
  if (row >= pg.tasks * pg.batch) {
    return;
  }
  let k = pg.classes;
  let c = class_of(g_labels[row], k);
  if (c < 0) {
    for (var j = 0u; j < k; j++) {
      d_logits[row * k + j] = 0.0;
    }
    return;
  }
  var m = g_logits[row * k];
  for (var j = 1u; j < k; j++) {
    m = max(m, g_logits[row * k + j]);
  }
  var s = 0.0;
  for (var j = 0u; j < k; j++) {
    s += exp(g_logits[row * k + j] - m);
  }
  let w = sample_weight(row / pg.batch);
  for (var j = 0u; j < k; j++) {
    let soft = exp(g_logits[row * k + j] - m) / s;
    d_logits[row * k + j] = (soft - select(0.0, 1.0, i32(j) == c)) * w;
  }
}

// ---- accuracy: logits, labels -> per_task, correct, valid ----

@group(0) @binding(0) var<storage, read> a_logits: array<f32>;
@group(0) @binding(1) var<storage, read> a_labels: array<f32>;
@group(0) @binding(2) var<storage, read_write> a_per_task: array<f32>;
@group(0) @binding(3) var<storage, read_write> a_correct: array<f32>;
@group(0) @binding(4) var<storage, read_write> a_valid: array<f32>;
@group(0) @binding(5) var<uniform> pa: Params;

fn finish_accuracy(t: u32, lid: u32) {
  reduce_partial(lid);
  if (lid == 0u) {
    let total = partial[0];
    a_per_task[t] = select(0.0, total.x / total.y, total.y > 0.0);
    a_correct[t] = total.x;
    a_valid[t] = total.y;
  }
}

// Binary: the prediction is 1 when z > 0 (so z = 0 predicts 0), correct when it equals y > 0.5.
@compute @workgroup_size(WG)
fn accuracy_binary(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_index) lid: u32) {
  let t = wid.x + wid.y * nwg.x;
  if (t >= pa.tasks) {
    return;
  }
  var acc = vec2f(0.0);
  for (var b = lid; b < pa.batch; b += WG) {
    let i = t * pa.batch + b;
    let y = a_labels[i];
    if (y >= 0.0) {
      acc += vec2f(select(0.0, 1.0, (a_logits[i] > 0.0) == (y > 0.5)), 1.0);
    }
  }
  partial[lid] = acc;
  finish_accuracy(t, lid);
}

// K-way: the prediction is the argmax, the lowest index among equal maxima.
@compute @workgroup_size(WG)
fn accuracy_softmax(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                    @builtin(local_invocation_index) lid: u32) {
  let t = wid.x + wid.y * nwg.x;
  if (t >= pa.tasks) {
    return;
  }
  let k = pa.classes;
  var acc = vec2f(0.0);
  for (var b = lid; b < pa.batch; b += WG) {
    let row = t * pa.batch + b;
    let c = class_of(a_labels[row], k);
    if (c >= 0) {
      var best = 0u;
      for (var j = 1u; j < k; j++) {
        if (a_logits[row * k + j] > a_logits[row * k + best]) {
          best = j;
        }
      }
      acc += vec2f(select(0.0, 1.0, i32(best) == c), 1.0);
    }
  }
  partial[lid] = acc;
  finish_accuracy(t, lid);
}
