// Optimiser steps over one flat parameter tensor p and its gradient g (n elements), matching
// PyTorch's update formulas (dampening 0, no amsgrad, not centred, not maximising):
//
//   clip (torch.nn.utils.clip_grad_norm_, optional, first):
//       g = g * min(1, max_norm / (||g||_2 + 1e-6))
//   SGD (torch.optim.SGD):
//       g = g + weight_decay * p
//       MOMENTUM: buf = momentum * buf + g            (buf starts at 0, so step 1 gives buf = g)
//                 g = NESTEROV ? g + momentum * buf : buf
//       p = p - lr * g
//   RMSprop (torch.optim.RMSprop):
//       g = g + weight_decay * p
//       square_avg = alpha * square_avg + (1 - alpha) * g * g
//       avg = sqrt(square_avg) + eps
//       MOMENTUM: buf = momentum * buf + g / avg;  p = p - lr * buf
//       else:     p = p - lr * g / avg
//   Adam (torch.optim.Adam) and AdamW (DECOUPLED, torch.optim.AdamW), at 1-based step t:
//       DECOUPLED: p = p * (1 - lr * weight_decay)  else: g = g + weight_decay * p
//       exp_avg = lerp(exp_avg, g, 1 - beta1)
//       exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
//       p = p - step_size * exp_avg / (sqrt(exp_avg_sq) / bc2_sqrt + eps)
//       with step_size = lr / (1 - beta1^t) and bc2_sqrt = sqrt(1 - beta2^t) computed on the CPU.
//
// Layout: p, g: n floats, bound as ceil(n / 4) vec4s (the buffer holds whole vec4s; lanes at or
// past n are read but written back unchanged and left out of the norm). state: one buffer,
// [header (base4 vec4s: the gradient norm in element 0) | slot 0 | slot 1], slots of stride4
// vec4s (square_avg or exp_avg in slot 0, momentum_buffer or exp_avg_sq in slot 1).
//
// Dispatches: norm_partial (one workgroup per 4096 vec4s of g: each invocation sums 16 vec4s,
// strided by 256, then a fixed tree) and norm_final (one workgroup: strided sum over the partials,
// fixed tree, sqrt) only when clipping, then update (one vec4 per invocation, 2D grid of
// 256-wide workgroups, linear id = wid.x + wid.y * num_workgroups.x). Deterministic: no atomics.
// Code paths are override constants. Reference: tests/reference/optim.ts.

struct Params {
  n: u32,
  n4: u32,
  base4: u32,
  stride4: u32,
  partials: u32,
  lr: f32,
  weight_decay: f32,
  momentum: f32,
  // beta1 for Adam, alpha for RMSprop; the complements come from the CPU in float64, as
  // PyTorch's Python floats do (1 - 0.999 rounded after the subtraction, not before).
  beta1: f32,
  beta2: f32,
  one_minus_beta1: f32,
  one_minus_beta2: f32,
  // 1 - lr * weight_decay, for AdamW.
  decay: f32,
  eps: f32,
  step_size: f32,
  bc2_sqrt: f32,
  max_norm: f32,
}

override KIND: u32 = 0u; // 0 SGD, 1 RMSprop, 2 Adam
override MOMENTUM: bool = false;
override NESTEROV: bool = false;
override DECOUPLED: bool = false;
override CLIP: bool = false;

const WG: u32 = 256u;
const ITEMS: u32 = 16u;

var<workgroup> sums: array<f32, WG>;

fn reduce_sums(lid: u32) {
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (lid < s) {
      sums[lid] += sums[lid + s];
    }
  }
  workgroupBarrier();
}

// Lanes of vec4 number i that lie inside the tensor.
fn inside(i: u32, n: u32) -> vec4<bool> {
  return vec4u(i * 4u) + vec4u(0u, 1u, 2u, 3u) < vec4u(n);
}

// ---- norm_partial: g -> partials[w] = sum of g^2 over the 4096 vec4s of workgroup w ----

@group(0) @binding(0) var<storage, read> norm_grad: array<vec4f>;
@group(0) @binding(1) var<storage, read_write> partials_out: array<f32>;
@group(0) @binding(2) var<uniform> pn: Params;

@compute @workgroup_size(WG)
fn norm_partial(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let w = wid.x + wid.y * nwg.x;
  if (w >= pn.partials) {
    return;
  }
  var acc = 0.0;
  for (var j = 0u; j < ITEMS; j++) {
    let i = w * WG * ITEMS + j * WG + lid;
    if (i < pn.n4) {
      let g = select(vec4f(0.0), norm_grad[i], inside(i, pn.n));
      acc += dot(g, g);
    }
  }
  sums[lid] = acc;
  reduce_sums(lid);
  if (lid == 0u) {
    partials_out[w] = sums[0];
  }
}

// ---- norm_final: partials -> norm[0] = sqrt(sum of partials) ----

@group(0) @binding(0) var<storage, read> partials_in: array<f32>;
@group(0) @binding(1) var<storage, read_write> norm_out: array<f32>;
@group(0) @binding(2) var<uniform> pf: Params;

@compute @workgroup_size(WG)
fn norm_final(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var w = lid; w < pf.partials; w += WG) {
    acc += partials_in[w];
  }
  sums[lid] = acc;
  reduce_sums(lid);
  if (lid == 0u) {
    norm_out[0] = sqrt(sums[0]);
  }
}

// ---- update: p, g, state -> p, state ----

@group(0) @binding(0) var<storage, read_write> param: array<vec4f>;
@group(0) @binding(1) var<storage, read> grad: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> state: array<vec4f>;
@group(0) @binding(3) var<uniform> u: Params;

@compute @workgroup_size(WG)
fn update(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
          @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  if (i >= u.n4) {
    return;
  }
  let live = inside(i, u.n);
  let a = u.base4 + i; // slot 0
  let b = a + u.stride4; // slot 1
  var p = param[i];
  var g = grad[i];
  if (CLIP) {
    g *= min(1.0, u.max_norm / (state[0].x + 1e-6));
  }
  if (KIND == 0u) {
    g += u.weight_decay * p;
    if (MOMENTUM) {
      let buf = u.momentum * state[a] + g;
      state[a] = select(state[a], buf, live);
      g = select(buf, g + u.momentum * buf, NESTEROV);
    }
    p -= u.lr * g;
  } else if (KIND == 1u) {
    g += u.weight_decay * p;
    let square_avg = u.beta1 * state[a] + u.one_minus_beta1 * g * g;
    state[a] = select(state[a], square_avg, live);
    let avg = sqrt(square_avg) + u.eps;
    if (MOMENTUM) {
      let buf = u.momentum * state[b] + g / avg;
      state[b] = select(state[b], buf, live);
      p -= u.lr * buf;
    } else {
      p -= u.lr * (g / avg);
    }
  } else {
    if (DECOUPLED) {
      p *= u.decay;
    } else {
      g += u.weight_decay * p;
    }
    let exp_avg = state[a] + u.one_minus_beta1 * (g - state[a]);
    let exp_avg_sq = u.beta2 * state[b] + u.one_minus_beta2 * g * g;
    state[a] = select(state[a], exp_avg, live);
    state[b] = select(state[b], exp_avg_sq, live);
    p -= u.step_size * (exp_avg / (sqrt(exp_avg_sq) / u.bc2_sqrt + u.eps));
  }
  param[i] = select(param[i], p, live);
}
