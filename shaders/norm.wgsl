// Batch normalisation with per-batch statistics (training mode, no running statistics, as MAML
// uses), with one set of statistics and one generated scale and shift per task.
//   forward:  over the N = B * H * W values of task t and channel c, mean[t, c] and the biased
//             variance (divided by N, as PyTorch's training-mode batch norm normalises);
//             invstd = 1 / sqrt(var + eps); y = gamma[t, c] * (x - mean) * invstd + beta[t, c].
//   backward: the full one (gradients flow through the statistics): with xhat = (x - mean) *
//             invstd and sums over the same N values, dgamma = sum(dy * xhat), dbeta = sum(dy),
//             dx = gamma * invstd * (dy - sum(dy) / N - xhat * sum(dy * xhat) / N).
// Layout: x, y, dy, dx [T, B, C, H, W] row-major; gamma, beta, mean, invstd, dgamma, dbeta
// [T, C]. Reference: tests/reference/norm.ts.
//
// Tiling: one workgroup of 64 invocations per (t, c) does all the work of that pair, so there are
// no scratch buffers between passes and every output has one writer. Invocation lid visits the
// values j = lid, lid + 64, ... of the pair (j in row-major order of (b, h, w)); a sum is a serial
// loop per invocation, then a fixed tree in workgroup memory, so a run gives the same bits every
// time (no atomics). The forward makes three passes: the sum of x - x[first value] (shifting by a
// value of the data keeps the terms small when the mean is large against the spread), the sum of
// (x - mean)^2 (two passes: E[x^2] - E[x]^2 cancels catastrophically), then y. The backward makes
// two: both sums at once, then dx. 64 invocations rather than 256 for the reason reduce.wgsl gives:
// on a software adapter (llvmpipe) every invocation pays for every barrier.
//
// The backward writes dx, dgamma and dbeta where WRITE_* is set; an output it does not write is
// bound to a stand-in range that it never touches (a bind group must fill every binding).

override WRITE_DX: bool = true;
override WRITE_DGAMMA: bool = true;
override WRITE_DBETA: bool = true;
override ACCUMULATE_DX: bool = false;
override ACCUMULATE_DGAMMA: bool = false;
override ACCUMULATE_DBETA: bool = false;

struct Params {
  // Pairs (t, c), one workgroup each: T * C.
  groups: u32,
  channels: u32,
  // Values per pair: N = B * H * W.
  count: u32,
  // Values per image plane: H * W.
  plane: u32,
  // From one value of an invocation to its next (TREE further in row-major (b, h, w)) the offset
  // in x grows by step and the index in the plane by step_in_plane; where that index passes plane,
  // it drops by plane and the offset grows by wrap more (on to the next image, same channel).
  step: u32,
  step_in_plane: u32,
  wrap: u32,
  eps: f32,
}

// Both passes read x and gamma at the same bindings.
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;

// forward
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> mean_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> invstd_out: array<f32>;
@group(0) @binding(6) var<uniform> forward_params: Params;

// backward
@group(0) @binding(2) var<storage, read> mean_in: array<f32>;
@group(0) @binding(3) var<storage, read> invstd_in: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(7) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(8) var<uniform> backward_params: Params;

// Invocations per workgroup.
const TREE = 64u;

var<workgroup> partial: array<vec2f, TREE>;

// Offset in x of the first value of pair g: x[t, 0, c, 0, 0].
fn base(n: Params, g: u32) -> u32 {
  return (g / n.channels) * n.channels * n.count + (g % n.channels) * n.plane;
}

// Where invocation lid starts in pair g: (offset in x of value j = lid, its index in the plane).
fn start(n: Params, g: u32, lid: u32) -> vec2u {
  let in_plane = lid % n.plane;
  return vec2u(base(n, g) + (lid / n.plane) * n.channels * n.plane + in_plane, in_plane);
}

// The position TREE values further on, without a division.
fn next(n: Params, at: vec2u) -> vec2u {
  var r = at + vec2u(n.step, n.step_in_plane);
  if (r.y >= n.plane) {
    r += vec2u(n.wrap, 0u);
    r.y -= n.plane;
  }
  return r;
}

// The sum of every invocation's v, added in a fixed tree; the whole workgroup calls it, and every
// invocation gets the sum.
fn total(lid: u32, v: vec2f) -> vec2f {
  partial[lid] = v;
  for (var width = TREE / 2u; width > 0u; width >>= 1u) {
    workgroupBarrier();
    if (lid < width) {
      partial[lid] += partial[lid + width];
    }
  }
  workgroupBarrier();
  let sum = partial[0];
  // No invocation may write partial again before all have read the sum.
  workgroupBarrier();
  return sum;
}

@compute @workgroup_size(TREE)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
           @builtin(local_invocation_index) lid: u32) {
  let n = forward_params;
  // Uniform control flow: the whole workgroup shares g, so it returns (or not) together.
  let g = wid.x + wid.y * nwg.x;
  if (g >= n.groups) {
    return;
  }
  let count = f32(n.count);
  let shift = x[base(n, g)];
  var at = start(n, g, lid);
  var sum = 0.0;
  for (var j = lid; j < n.count; j += TREE) {
    sum += x[at.x] - shift;
    at = next(n, at);
  }
  let mean = shift + total(lid, vec2f(sum, 0.0)).x / count;

  at = start(n, g, lid);
  sum = 0.0;
  for (var j = lid; j < n.count; j += TREE) {
    let d = x[at.x] - mean;
    sum += d * d;
    at = next(n, at);
  }
  let invstd = 1.0 / sqrt(total(lid, vec2f(sum, 0.0)).x / count + n.eps);

  let scale = gamma[g];
  let offset = beta[g];
  at = start(n, g, lid);
  for (var j = lid; j < n.count; j += TREE) {
    y[at.x] = scale * ((x[at.x] - mean) * invstd) + offset;
    at = next(n, at);
  }
  if (lid == 0u) {
    mean_out[g] = mean;
    invstd_out[g] = invstd;
  }
}

@compute @workgroup_size(TREE)
fn backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let n = backward_params;
  let g = wid.x + wid.y * nwg.x;
  if (g >= n.groups) {
    return;
  }
  let mean = mean_in[g];
  let invstd = invstd_in[g];
  // (sum of dy, sum of dy * xhat)
  var at = start(n, g, lid);
  var sums = vec2f(0.0);
  for (var j = lid; j < n.count; j += TREE) {
    let d = dy[at.x];
    sums += vec2f(d, d * ((x[at.x] - mean) * invstd));
    at = next(n, at);
  }
  let s = total(lid, sums);

  if (lid == 0u) {
    if (WRITE_DGAMMA) {
      var v = s.y;
      if (ACCUMULATE_DGAMMA) {
        v += dgamma[g];
      }
      dgamma[g] = v;
    }
    if (WRITE_DBETA) {
      var v = s.x;
      if (ACCUMULATE_DBETA) {
        v += dbeta[g];
      }
      dbeta[g] = v;
    }
  }

  if (WRITE_DX) {
    let scale = gamma[g] * invstd;
    let mean_dy = s.x / f32(n.count);
    let mean_dy_xhat = s.y / f32(n.count);
    at = start(n, g, lid);
    for (var j = lid; j < n.count; j += TREE) {
      let xhat = (x[at.x] - mean) * invstd;
      var v = scale * (dy[at.x] - mean_dy - xhat * mean_dy_xhat);
      if (ACCUMULATE_DX) {
        v += dx[at.x];
      }
      dx[at.x] = v;
      at = next(n, at);
    }
  }
}
