// Elementwise kernels: activations and their backward, out = alpha * a + beta * b, and the bias add
// over the rows of each task. Reference: tests/reference/elementwise.ts.
//
// Layout: every tensor is a flat row-major f32 array; biasAdd reads x, y: [T, R, N] and
// bias: [T, N].
// Tiling: the `*_vec4` entry points handle one vec4 per invocation, 64 invocations (256 floats)
// per workgroup, and see their tensors as array<vec4f> bound over the first 4 * n4 elements; the
// `*_scalar` entry points handle one float per invocation, 256 per workgroup, from element `start`
// to `n` (the tail of fewer than 4 elements a vec4 dispatch leaves, or a whole tensor whose rows
// are not a multiple of 4 long). Workgroups form a 2D grid (linear id = wid.x + wid.y *
// num_workgroups.x) so sizes beyond 65535 workgroups work.
//
// The vec4 and scalar views share binding numbers: WGSL allows that as long as no entry point uses
// both, and `layout: "auto"` gives each entry point only the bindings it uses. Every entry point
// binds its inputs first, then its output, then the uniform.

// Which activation `act` applies: 0 identity, 1 relu, 2 leaky relu, 3 tanh, 4 sigmoid.
override ACTIVATION: u32 = 0u;
// Backward-style accumulation: true => out += value, false => out = value.
override ACCUMULATE: bool = false;

struct Params {
  // Number of elements; entries read indices start .. n - 1 (scalar) or 0 .. n4 - 1 (vec4).
  n: u32,
  start: u32,
  n4: u32,
  // biasAdd: elements (scalar) or vec4s (vec4) per task, R * N, and per row, N.
  per_task: u32,
  per_row: u32,
  // Coefficients: axpby's alpha and beta; the activations' leaky slope and output scale.
  alpha: f32,
  beta: f32,
  slope: f32,
  scale: f32,
}

// Two-binding entries (one input, one output, uniform): activation, scale.
@group(0) @binding(0) var<storage, read> in0: array<f32>;
@group(0) @binding(1) var<storage, read_write> out1: array<f32>;
@group(0) @binding(2) var<uniform> p2: Params;
@group(0) @binding(0) var<storage, read> in0_v: array<vec4f>;
@group(0) @binding(1) var<storage, read_write> out1_v: array<vec4f>;

// Three-binding entries (two inputs, one output, uniform): activation backward, axpby, bias add.
@group(0) @binding(1) var<storage, read> in1: array<f32>;
@group(0) @binding(2) var<storage, read_write> out2: array<f32>;
@group(0) @binding(3) var<uniform> p3: Params;
@group(0) @binding(1) var<storage, read> in1_v: array<vec4f>;
@group(0) @binding(2) var<storage, read_write> out2_v: array<vec4f>;

// act(x) before the output scale. tanh clamps its argument where the result has already saturated
// in f32 and sigmoid only takes exp of -|x|, so that +-1e4 gives exactly -1, 1 (tanh) or 0, 1
// (sigmoid) rather than inf / inf.
fn act(x: vec4f, slope: f32) -> vec4f {
  switch ACTIVATION {
    case 1u: {
      return max(x, vec4f(0.0));
    }
    case 2u: {
      return select(slope * x, x, x > vec4f(0.0));
    }
    case 3u: {
      return tanh(clamp(x, vec4f(-15.0), vec4f(15.0)));
    }
    case 4u: {
      // exp of -|x| never overflows; for x < 0, e / (1 + e) underflows to 0 as it should.
      let e = exp(-abs(x));
      let s = 1.0 / (1.0 + e);
      return select(e * s, s, x >= vec4f(0.0));
    }
    default: {
      return x;
    }
  }
}

// act'(x) written in terms of u = act(x), which is what the forward pass keeps. relu and leaky
// relu read the sign of u (the same as the sign of x for slope >= 0).
fn act_grad(u: vec4f, slope: f32) -> vec4f {
  switch ACTIVATION {
    case 1u: {
      return select(vec4f(0.0), vec4f(1.0), u > vec4f(0.0));
    }
    case 2u: {
      return select(vec4f(slope), vec4f(1.0), u > vec4f(0.0));
    }
    case 3u: {
      return 1.0 - u * u;
    }
    case 4u: {
      return u * (1.0 - u);
    }
    default: {
      return vec4f(1.0);
    }
  }
}

fn linear_id(wid: vec3u, nwg: vec3u, lid: u32, size: u32) -> u32 {
  return (wid.x + wid.y * nwg.x) * size + lid;
}

// y = scale * act(x).
@compute @workgroup_size(64)
fn activation_vec4(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_index) lid: u32) {
  let i = linear_id(wid, nwg, lid, 64u);
  if (i < p2.n4) {
    out1_v[i] = p2.scale * act(in0_v[i], p2.slope);
  }
}

@compute @workgroup_size(256)
fn activation_scalar(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                     @builtin(local_invocation_index) lid: u32) {
  let i = p2.start + linear_id(wid, nwg, lid, 256u);
  if (i < p2.n) {
    out1[i] = p2.scale * act(vec4f(in0[i]), p2.slope).x;
  }
}

// dx (+)= dy * scale * act'(y / scale); bindings y, dy, dx.
@compute @workgroup_size(64)
fn activation_backward_vec4(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                            @builtin(local_invocation_index) lid: u32) {
  let i = linear_id(wid, nwg, lid, 64u);
  if (i < p3.n4) {
    var g = in1_v[i] * (p3.scale * act_grad(in0_v[i] / p3.scale, p3.slope));
    if (ACCUMULATE) {
      g += out2_v[i];
    }
    out2_v[i] = g;
  }
}

@compute @workgroup_size(256)
fn activation_backward_scalar(@builtin(workgroup_id) wid: vec3u,
                              @builtin(num_workgroups) nwg: vec3u,
                              @builtin(local_invocation_index) lid: u32) {
  let i = p3.start + linear_id(wid, nwg, lid, 256u);
  if (i < p3.n) {
    var g = in1[i] * (p3.scale * act_grad(vec4f(in0[i] / p3.scale), p3.slope).x);
    if (ACCUMULATE) {
      g += out2[i];
    }
    out2[i] = g;
  }
}

// out (+)= alpha * a + beta * b; bindings a, b, out.
@compute @workgroup_size(64)
fn axpby_vec4(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_index) lid: u32) {
  let i = linear_id(wid, nwg, lid, 64u);
  if (i < p3.n4) {
    var v = p3.alpha * in0_v[i] + p3.beta * in1_v[i];
    if (ACCUMULATE) {
      v += out2_v[i];
    }
    out2_v[i] = v;
  }
}

@compute @workgroup_size(256)
fn axpby_scalar(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let i = p3.start + linear_id(wid, nwg, lid, 256u);
  if (i < p3.n) {
    var v = p3.alpha * in0[i] + p3.beta * in1[i];
    if (ACCUMULATE) {
      v += out2[i];
    }
    out2[i] = v;
  }
}

// out (+)= alpha * a; bindings a, out.
@compute @workgroup_size(64)
fn scale_vec4(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_index) lid: u32) {
  let i = linear_id(wid, nwg, lid, 64u);
  if (i < p2.n4) {
    var v = p2.alpha * in0_v[i];
    if (ACCUMULATE) {
      v += out1_v[i];
    }
    out1_v[i] = v;
  }
}

@compute @workgroup_size(256)
fn scale_scalar(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let i = p2.start + linear_id(wid, nwg, lid, 256u);
  if (i < p2.n) {
    var v = p2.alpha * in0[i];
    if (ACCUMULATE) {
      v += out1[i];
    }
    out1[i] = v;
  }
}

// y[t, r, n] = x[t, r, n] + bias[t, n]; bindings x, bias, y. The vec4 entry needs N % 4 == 0
// (per_task and per_row then count vec4s); the scalar entry takes any N.
@compute @workgroup_size(64)
fn bias_add_vec4(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_index) lid: u32) {
  let i = linear_id(wid, nwg, lid, 64u);
  if (i < p3.n4) {
    let b = (i / p3.per_task) * p3.per_row + i % p3.per_row;
    out2_v[i] = in0_v[i] + in1_v[b];
  }
}

@compute @workgroup_size(256)
fn bias_add_scalar(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_index) lid: u32) {
  let i = p3.start + linear_id(wid, nwg, lid, 256u);
  if (i < p3.n) {
    let b = (i / p3.per_task) * p3.per_row + i % p3.per_row;
    out2[i] = in0[i] + in1[b];
  }
}
