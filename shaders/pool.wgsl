// 2x2 max pooling with stride 2 and its backward. Reference: tests/reference/pool.ts, which
// follows PyTorch's MaxPool2d(2) on the CPU.
//
// Layout: x and dx [T, B, C, H, W], y, dy and indices [T, B, C, H / 2, W / 2] (floor), all
// row-major; every (t, b, c) is one plane of H * W inputs and Ho * Wo outputs. With an odd H or W
// the last row or column of x reaches no output.
// indices (u32) holds the winner's position in its window, row-major: 0 top left, 1 top right,
// 2 bottom left, 3 bottom right. It does not depend on the layout, so a reshaped view of the same
// windows reads the same.
// Tiling: one element per invocation, 256 per workgroup, on a 2D grid of workgroups (linear id =
// wid.x + wid.y * num_workgroups.x).
//
// max_pool: y = the window's largest value, the first of equal ones in window order (a later one
// wins only if strictly greater). A NaN wins over numbers, and a later NaN over an earlier one,
// as PyTorch's `val > maxval || isnan(val)`; NaN is tested on the bits, since a compiler may
// assume floats are never NaN.
// max_pool_backward: dx[i] (+)= dy[o] if input i is the winner of its window o, else 0. Windows
// do not overlap, so each input has at most one window: the invocation that owns dx[i] reads that
// window's argmax, and no sum or atomic is needed. Inputs in the dropped last row or column are
// set to 0. When accumulating, inputs that win nothing are not written at all, so they keep their
// bits (even a -0).

override ACCUMULATE: bool = false;

struct Params {
  // Invocations with work: outputs for max_pool, inputs for max_pool_backward.
  n: u32,
  h: u32,
  w: u32,
  ho: u32,
  wo: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read_write> argmax_out: array<u32>;
@group(0) @binding(2) var<storage, read> argmax: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;

fn is_nan(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

@compute @workgroup_size(256)
fn max_pool(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let o = (wid.x + wid.y * nwg.x) * 256u + lid;
  if (o >= p.n) {
    return;
  }
  let plane = o / (p.ho * p.wo);
  let r = o % (p.ho * p.wo);
  let top = plane * p.h * p.w + (r / p.wo) * 2u * p.w + (r % p.wo) * 2u;
  let window = array<u32, 4>(top, top + 1u, top + p.w, top + p.w + 1u);
  var best = src[top];
  var at = 0u;
  for (var k = 1u; k < 4u; k++) {
    let v = src[window[k]];
    if (v > best || is_nan(v)) {
      best = v;
      at = k;
    }
  }
  dst[o] = best;
  argmax_out[o] = at;
}

@compute @workgroup_size(256)
fn max_pool_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                     @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * 256u + lid;
  if (i >= p.n) {
    return;
  }
  let plane = i / (p.h * p.w);
  let r = i % (p.h * p.w);
  let row = r / p.w;
  let col = r % p.w;
  var grad = 0.0;
  var wins = false;
  if (row < 2u * p.ho && col < 2u * p.wo) {
    let o = plane * p.ho * p.wo + (row / 2u) * p.wo + col / 2u;
    wins = argmax[o] == (row % 2u) * 2u + col % 2u;
    if (wins) {
      grad = src[o];
    }
  }
  if (!ACCUMULATE) {
    dst[i] = grad;
  } else if (wins) {
    dst[i] += grad;
  }
}
