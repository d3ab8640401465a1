// Squared Euclidean distances between rows and their gradients (ProtoNet's logits are -d from
// each query embedding to each class prototype). Reference: tests/reference/distance.ts.
//
// Layout (row-major): x [T, Q, F] (queries), c [T, K, F] (centres), out and d_out [T, Q, K].
// Tiling: one distance or gradient element per invocation, 256 per workgroup, on a 2D grid
// of workgroups (linear id = wid.x + wid.y * num_workgroups.x). Every sum runs in a fixed order in
// one invocation, so results are the same bits run to run and no atomics are needed.
//
// squared_distance: out[t, q, k] = scale * sum_f (x[t, q, f] - c[t, k, f])^2, the difference taken
// before squaring (more accurate than |x|^2 - 2 x.c + |c|^2 when x and c are close).
// squared_distance_backward_x:
//   dx[t, q, f] (+)= 2 scale * sum_k d_out[t, q, k] (x[t, q, f] - c[t, k, f]), k in order;
// squared_distance_backward_c:
//   dc[t, k, f] (+)= 2 scale * sum_q d_out[t, q, k] (c[t, k, f] - x[t, q, f]), q in order.

override ACCUMULATE: bool = false;

struct Params {
  tasks: u32,
  queries: u32,
  centres: u32,
  features: u32,
  scale: f32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> c: array<f32>;
// The forward writes the distances at binding 2 and reads its parameters at 3.
@group(0) @binding(2) var<storage, read_write> dist: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
// The backward reads d_out at binding 2, writes the gradient at 3 and reads its parameters at 4.
@group(0) @binding(2) var<storage, read> d_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<uniform> pb: Params;

@compute @workgroup_size(256)
fn squared_distance(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                    @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + lid;
  if (i >= p.tasks * p.queries * p.centres) {
    return;
  }
  let k = i % p.centres;
  let tq = i / p.centres;
  let t = tq / p.queries;
  let xs = tq * p.features;
  let cs = (t * p.centres + k) * p.features;
  var sum = 0.0;
  for (var f = 0u; f < p.features; f++) {
    let diff = x[xs + f] - c[cs + f];
    sum += diff * diff;
  }
  dist[i] = p.scale * sum;
}

@compute @workgroup_size(256)
fn squared_distance_backward_x(@builtin(workgroup_id) wid: vec3u,
                               @builtin(num_workgroups) nwg: vec3u,
                               @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + lid;
  if (i >= pb.tasks * pb.queries * pb.features) {
    return;
  }
  let f = i % pb.features;
  let tq = i / pb.features;
  let t = tq / pb.queries;
  let xi = x[i];
  var sum = 0.0;
  for (var k = 0u; k < pb.centres; k++) {
    sum += d_out[tq * pb.centres + k] * (xi - c[(t * pb.centres + k) * pb.features + f]);
  }
  let g = 2.0 * pb.scale * sum;
  if (ACCUMULATE) {
    grad[i] += g;
  } else {
    grad[i] = g;
  }
}

@compute @workgroup_size(256)
fn squared_distance_backward_c(@builtin(workgroup_id) wid: vec3u,
                               @builtin(num_workgroups) nwg: vec3u,
                               @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + lid;
  if (i >= pb.tasks * pb.centres * pb.features) {
    return;
  }
  let f = i % pb.features;
  let tk = i / pb.features;
  let t = tk / pb.centres;
  let k = tk % pb.centres;
  let ci = c[i];
  var sum = 0.0;
  for (var q = 0u; q < pb.queries; q++) {
    let tq = t * pb.queries + q;
    sum += d_out[tq * pb.centres + k] * (ci - x[tq * pb.features + f]);
  }
  let g = 2.0 * pb.scale * sum;
  if (ACCUMULATE) {
    grad[i] += g;
  } else {
    grad[i] = g;
  }
}
