// 2D convolution (cross-correlation, as PyTorch's conv2d) batched over tasks that each have
// their own weights, and its three backward kernels. Reference: tests/reference/conv2d.ts.
//
// Layout, row-major: x [T, B, C, H, W], weight [T, O, C, k, k], bias [T, O],
// y [T, B, O, Ho, Wo] with Ho = (H + 2 pad - k) / stride + 1 (same for Wo). Workgroups are
// numbered linearly on a 2D grid (id = wid.x + wid.y * nwg.x) and never mix tasks.
//
// Tiling, written for llvmpipe, which runs 8 invocations as one 8-wide SIMD vector and turns
// every storage or workgroup load into a loop over the 8 lanes (tens of FMAs' worth, whatever its
// width), and does not unroll loops bounded by override constants (nor, reliably, loops with
// large bodies: indexing a matrix in a loop that is not unrolled is slow). So the tiled kernels
// read the input along rows as "windows" of 4 aligned vec4s, shifted into place in a mat4x4
// (value i = window[i / 4][i % 4]), from which every tap of 4 neighbouring output columns is
// picked at constant positions; outputs are kept as mat4x4 accumulators of 16 channels (column v =
// channels 4v .. 4v + 3), with the register blocks written out:
//   forward          invocation = 2 (or 4, TALL) output rows x 4 columns x 16 output channels;
//                    per (c, ky) one window per row covers all taps of its 4 columns; y is
//                    written as one vec4 per channel and row where Wo % 4 == 0 (Y_ALIGNED).
//   backward_input   invocation = 2 rows x 4 (or 8, WIDE_COLUMNS) columns of dx x 16 input
//                    channels, within one of the stride^2 phases of input pixels: in phase
//                    ((iy + pad) mod s, (ix + pad) mod s) only every s-th tap contributes, and
//                    the dy columns of consecutive taps are consecutive, so one window of dy
//                    covers them.
//   backward_weight  invocation = one (c, ky), 4 (or 8, WIDE_TAPS) taps kx and 16 output
//                    channels, summing over its slice of the (b, oy, 4 output columns) quads; the
//                    4 slices of a workgroup are added in a fixed order at the end, so the sum is
//                    deterministic.
// Weights of the forward and backward_input kernels are staged in workgroup memory as vec4s of 4
// channels (in chunks of input or output channels when they do not fit). src/ops/conv2d.ts uses
// the naive kernels where a window or the staged weights would not fit (stride > 4, or > 3 for
// backward_weight; k > 22), and for the benchmark's baseline.
//
// The *_naive entry points compute one output per invocation. The "direct" variant, for GPUs, is
// the naive forward and backward_input (one output per invocation is what a GPU's thousands of
// invocations want) with backward_weight_direct (below), whose reduction a workgroup shares.

struct Params {
  tasks: u32,
  batch: u32,
  cin: u32,
  h: u32,
  w: u32,
  cout: u32,
  k: u32,
  ho: u32,
  wo: u32,
  stride: u32,
  pad: u32,
  // Per-entry block counts (see each entry point).
  blocks_a: u32,
  blocks_b: u32,
  // Slope of leaky_relu (forward only).
  slope: f32,
  // backward_weight: the first task of this dispatch (a run over chunks of tasks; else 0); the
  // workgroups cover tasks task0 .. task0 + tasks - 1.
  task0: u32,
}

// Forward: 0 identity, 1 relu, 2 leaky_relu, 3 tanh, 4 sigmoid. A constant rather than a uniform:
// llvmpipe runs every case of a switch under a mask, exp included.
override ACT: u32 = 0u;
// Stride of the forward and backward_weight kernels, a constant so that the window values of
// the 4 output columns sit at constant positions.
override STRIDE: u32 = 1u;
// Backward kernels: false => out = grad, true => out += grad.
override ACCUMULATE: bool = false;
// backward_weight: Wo is a multiple of 4, so every 4-column quad of dy is one aligned vec4.
override DY_ALIGNED: bool = false;
// forward: Wo is a multiple of 4, so the 4 output columns of an invocation are one aligned vec4.
override Y_ALIGNED: bool = false;
// forward: an invocation takes 4 output rows instead of 2, halving the weight loads per FMA; for
// Ho >= 8 (fewer rows would leave invocations idle).
override TALL: bool = false;
// backward_weight: an invocation takes 8 taps kx (two windows) instead of 4, halving the loads of
// dy per FMA; for k > 4.
override WIDE_TAPS: bool = false;
// backward_input: an invocation takes 8 columns instead of 4 (one window still covers them when
// a phase has at most 6 taps along x), halving the loads per FMA; for phase grids >= 8 wide.
override WIDE_COLUMNS: bool = false;

const WG: u32 = 64u;
// vec4s of staged weights (32 KB).
const WSM: u32 = 2048u;
// backward_weight: elements (c, ky, 4 taps) per workgroup x reduction slices = WG.
const EL: u32 = 16u;
const RS: u32 = 4u;

// Binding 0 is the tensor read through windows (x in forward and backward_weight, dy in
// backward_input); the naive kernels read it as floats. No entry point uses both views.
@group(0) @binding(0) var<storage, read> src4: array<vec4f>;
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
// The tiled forward kernel writes y through a vec4 view.
@group(0) @binding(3) var<storage, read_write> y4: array<vec4f>;
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> wsm: array<vec4f, WSM>;

// With TEX backward_weight reads x and dy through the layers of the staging texture, which hold
// the vec4s of this dispatch's tasks (from task0 on), vec4 i at texel (i % 1024, i / 1024),
// copied in before the dispatch (src/gpu/texture.ts): on llvmpipe a texel fetch is one
// vectorised gather, a storage load a loop over the lanes. The other tiled kernels, and
// backward_weight without TEX, bind 1 x 1 textures and never read them. An index past the end
// (a negative one wrapped) fetches 0 or some texel; such values are masked.
@group(0) @binding(5) var src_tex: texture_2d<f32>;
@group(0) @binding(6) var dy_tex: texture_2d<f32>;
override TEX: bool = false;

// vec4 i of a layer of the staging texture.
fn texel(tex: texture_2d<f32>, i: u32) -> vec4f {
  return textureLoad(tex, vec2u(i % 1024u, i / 1024u), 0);
}

fn src_vec4(i: u32) -> vec4f {
  if (TEX) {
    return texel(src_tex, i);
  }
  return src4[i];
}

fn activate4(v: vec4f) -> vec4f {
  switch ACT {
    case 1u: { return max(v, vec4f()); }
    case 2u: { return select(v * p.slope, v, v > vec4f()); }
    case 3u: {
      // tanh from exp(-2|v|), which cannot overflow.
      let e = exp(-2.0 * abs(v));
      return sign(v) * (1.0 - e) / (1.0 + e);
    }
    case 4u: { return 1.0 / (1.0 + exp(-v)); }
    default: { return v; }
  }
}

fn activate(v: f32) -> f32 {
  return activate4(vec4f(v)).x;
}

// q with the lanes whose column (col + 0..3) is outside [0, width), or all if the row is not
// ok, set to 0.
fn masked(q: vec4f, col: i32, ok: bool, width: i32) -> vec4f {
  let c = vec4i(col) + vec4i(0, 1, 2, 3);
  return select(vec4f(), q, vec4<bool>(ok) & (c >= vec4i(0)) & (c < vec4i(width)));
}

// (lo, hi) shifted left by m < 4 lanes: the 4 values starting at lane m of lo.
fn shift(lo: vec4f, hi: vec4f, m: u32) -> vec4f {
  let m01 = select(vec4f(lo.yzw, hi.x), lo, m == 0u);
  let m23 = select(vec4f(lo.w, hi.xyz), vec4f(lo.zw, hi.xy), m == 2u);
  return select(m23, m01, m < 2u);
}

// A row window: value i (column i of the window) is src[at + i] for i < 13, read as 4 aligned
// vec4s and shifted into place; value i is win[i / 4][i % 4]. Values of columns col + i outside
// [0, width), or of a row that is not ok, read as 0. A negative index wraps to a huge one, which
// robust buffer access reads as 0 or clamps; such values are masked either way.
fn window(at: i32, col: i32, ok: bool, width: i32) -> mat4x4f {
  let first = at >> 2u;
  let m = u32(at & 3);
  let c = col - i32(m);
  let a = masked(src_vec4(u32(first)), c, ok, width);
  let b = masked(src_vec4(u32(first + 1)), c + 4, ok, width);
  let d = masked(src_vec4(u32(first + 2)), c + 8, ok, width);
  let e = masked(src_vec4(u32(first + 3)), c + 12, ok, width);
  return mat4x4f(shift(a, b, m), shift(b, d, m), shift(d, e, m), shift(e, vec4f(), m));
}

// The window one column further: value i becomes value i + 1.
fn advance(win: mat4x4f) -> mat4x4f {
  return mat4x4f(vec4f(win[0].yzw, win[1].x), vec4f(win[1].yzw, win[2].x),
                 vec4f(win[2].yzw, win[3].x), vec4f(win[3].yzw, 0.0));
}

// Value i of a window; i must be a constant expression (after override constants are set), so
// that this is a register move and not an indexed load.
fn value(win: mat4x4f, i: u32) -> f32 {
  return win[i / 4u][i % 4u];
}

// Values i, i + STRIDE, i + 2 STRIDE, i + 3 STRIDE: tap i of 4 output columns.
fn pick(win: mat4x4f, i: u32) -> vec4f {
  return vec4f(value(win, i), value(win, i + STRIDE), value(win, i + 2u * STRIDE),
               value(win, i + 3u * STRIDE));
}

// Stages weight[t, o0 + 0..15, c, tap] for c in [cs, ce) as wsm[((c - cs) k^2 + tap) 4 + v] =
// channels o0 + 4v .. o0 + 4v + 3 (the last channel repeated past O).
fn stage_forward_weights(t: u32, o0: u32, cs: u32, ce: u32, lid: u32) {
  let kk = p.k * p.k;
  let ckk = p.cin * kk;
  for (var i = lid; i < (ce - cs) * kk * 4u; i += WG) {
    let o = min(vec4u(o0 + 4u * (i % 4u)) + vec4u(0u, 1u, 2u, 3u), vec4u(p.cout - 1u));
    let wi = (t * p.cout + o) * ckk + cs * kk + i / 4u;
    wsm[i] = vec4f(weight[wi.x], weight[wi.y], weight[wi.z], weight[wi.w]);
  }
}

// The 16 staged channels at wsm[i .. i + 3] (column v = channels 4v .. 4v + 3).
fn staged(i: u32) -> mat4x4f {
  return mat4x4f(wsm[i], wsm[i + 1u], wsm[i + 2u], wsm[i + 3u]);
}

// y[t, b, o, oy, ox + 0..3] = act(r + bias[t, o]) (i = its index) where in range.
fn store_channel(t: u32, o: u32, i: u32, ox: u32, r: vec4f) {
  if (o >= p.cout) {
    return;
  }
  let v = activate4(r + bias[t * p.cout + o]);
  if (Y_ALIGNED) {
    y4[i / 4u] = v;
    return;
  }
  // Columns past Wo belong to the next row; written one float at a time.
  y4[i / 4u][i % 4u] = v.x;
  if (ox + 1u < p.wo) {
    y4[(i + 1u) / 4u][(i + 1u) % 4u] = v.y;
  }
  if (ox + 2u < p.wo) {
    y4[(i + 2u) / 4u][(i + 2u) % 4u] = v.z;
  }
  if (ox + 3u < p.wo) {
    y4[(i + 3u) / 4u][(i + 3u) % 4u] = v.w;
  }
}

// Channels o0 + 4v + j of the 4 columns: transpose(m) with m = (a0[v], a1[v], a2[v], a3[v]).
fn store_block(t: u32, o: u32, i: u32, ox: u32, m: mat4x4f) {
  let plane = p.ho * p.wo;
  let r = transpose(m);
  store_channel(t, o, i, ox, r[0]);
  store_channel(t, o + 1u, i + plane, ox, r[1]);
  store_channel(t, o + 2u, i + 2u * plane, ox, r[2]);
  store_channel(t, o + 3u, i + 3u * plane, ox, r[3]);
}

// y[t, b, o0 + 0..15, oy, ox + j] = act(a_j + bias) for the 4 columns j, where in range.
fn store_row(t: u32, b: u32, oy: u32, ox: u32, o0: u32, a0: mat4x4f, a1: mat4x4f, a2: mat4x4f,
             a3: mat4x4f) {
  if (oy >= p.ho) {
    return;
  }
  let plane = p.ho * p.wo;
  let i = ((t * p.batch + b) * p.cout + o0) * plane + oy * p.wo + ox;
  store_block(t, o0, i, ox, mat4x4f(a0[0], a1[0], a2[0], a3[0]));
  store_block(t, o0 + 4u, i + 4u * plane, ox, mat4x4f(a0[1], a1[1], a2[1], a3[1]));
  store_block(t, o0 + 8u, i + 8u * plane, ox, mat4x4f(a0[2], a1[2], a2[2], a3[2]));
  store_block(t, o0 + 12u, i + 12u * plane, ox, mat4x4f(a0[3], a1[3], a2[3], a3[3]));
}

// Forward, tiled. Workgroup g = (t, channel block of 16, pixel block), pixel block fastest;
// invocation q = (b, row tile, 4-column tile) of task t, row tiles of R = 2 rows (4 if TALL).
// blocks_a = ceil(B * ceil(Ho / R) * ceil(Wo / 4) / 64), blocks_b = ceil(O / 16).
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
           @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  let t = g / (p.blocks_a * p.blocks_b);
  if (t >= p.tasks) {
    return;
  }
  let o0 = ((g / p.blocks_a) % p.blocks_b) * 16u;
  let tiles_x = (p.wo + 3u) / 4u;
  let rows = select(2u, 4u, TALL);
  let tiles_y = (p.ho + rows - 1u) / rows;
  let n = p.batch * tiles_y * tiles_x;
  let q = (g % p.blocks_a) * WG + lid;
  let qc = min(q, n - 1u);
  let b = qc / (tiles_x * tiles_y);
  let oy = ((qc / tiles_x) % tiles_y) * rows;
  let ox = (qc % tiles_x) * 4u;
  let s = STRIDE;
  let height = i32(p.h);
  let width = i32(p.w);
  let col = i32(ox * s) - i32(p.pad);
  let kk = p.k * p.k;
  let chunk = max(1u, WSM / (4u * kk));
  // Taps per window: the 4 columns' taps kx0 .. kx0 + taps - 1 span 3 stride + taps values.
  let taps = 13u - 3u * s;
  var a00 = mat4x4f();
  var a01 = mat4x4f();
  var a02 = mat4x4f();
  var a03 = mat4x4f();
  var a10 = mat4x4f();
  var a11 = mat4x4f();
  var a12 = mat4x4f();
  var a13 = mat4x4f();
  var a20 = mat4x4f();
  var a21 = mat4x4f();
  var a22 = mat4x4f();
  var a23 = mat4x4f();
  var a30 = mat4x4f();
  var a31 = mat4x4f();
  var a32 = mat4x4f();
  var a33 = mat4x4f();
  for (var cs = 0u; cs < p.cin; cs += chunk) {
    let ce = min(cs + chunk, p.cin);
    workgroupBarrier();
    stage_forward_weights(t, o0, cs, ce, lid);
    workgroupBarrier();
    for (var c = cs; c < ce; c++) {
      let plane = i32(((t * p.batch + b) * p.cin + c) * p.h * p.w);
      for (var ky = 0u; ky < p.k; ky++) {
        let iy0 = i32(oy * s + ky) - i32(p.pad);
        let iy1 = iy0 + i32(s);
        let iy2 = iy1 + i32(s);
        let iy3 = iy2 + i32(s);
        let at0 = plane + clamp(iy0, 0, height - 1) * width + col;
        let at1 = plane + clamp(iy1, 0, height - 1) * width + col;
        let at2 = plane + clamp(iy2, 0, height - 1) * width + col;
        let at3 = plane + clamp(iy3, 0, height - 1) * width + col;
        let ok0 = iy0 >= 0 && iy0 < height;
        let ok1 = iy1 >= 0 && iy1 < height;
        let ok2 = iy2 >= 0 && iy2 < height;
        let ok3 = iy3 >= 0 && iy3 < height;
        let row = ((c - cs) * kk + ky * p.k) * 4u;
        for (var kx0 = 0u; kx0 < p.k; kx0 += taps) {
          var win0 = window(at0 + i32(kx0), col + i32(kx0), ok0, width);
          var win1 = window(at1 + i32(kx0), col + i32(kx0), ok1, width);
          var win2 = mat4x4f();
          var win3 = mat4x4f();
          if (TALL) {
            win2 = window(at2 + i32(kx0), col + i32(kx0), ok2, width);
            win3 = window(at3 + i32(kx0), col + i32(kx0), ok3, width);
          }
          for (var kx = kx0; kx < min(kx0 + taps, p.k); kx++) {
            let wm = staged(row + 4u * kx);
            let x0 = pick(win0, 0u);
            let x1 = pick(win1, 0u);
            win0 = advance(win0);
            win1 = advance(win1);
            a00 += wm * x0.x;
            a01 += wm * x0.y;
            a02 += wm * x0.z;
            a03 += wm * x0.w;
            a10 += wm * x1.x;
            a11 += wm * x1.y;
            a12 += wm * x1.z;
            a13 += wm * x1.w;
            if (TALL) {
              let x2 = pick(win2, 0u);
              let x3 = pick(win3, 0u);
              win2 = advance(win2);
              win3 = advance(win3);
              a20 += wm * x2.x;
              a21 += wm * x2.y;
              a22 += wm * x2.z;
              a23 += wm * x2.w;
              a30 += wm * x3.x;
              a31 += wm * x3.y;
              a32 += wm * x3.z;
              a33 += wm * x3.w;
            }
          }
        }
      }
    }
  }
  if (q >= n) {
    return;
  }
  store_row(t, b, oy, ox, o0, a00, a01, a02, a03);
  store_row(t, b, oy + 1u, ox, o0, a10, a11, a12, a13);
  if (TALL) {
    store_row(t, b, oy + 2u, ox, o0, a20, a21, a22, a23);
    store_row(t, b, oy + 3u, ox, o0, a30, a31, a32, a33);
  }
}

// Forward, naive: one output element per invocation, linear index over [T, B, O, Ho, Wo].
@compute @workgroup_size(WG)
fn forward_naive(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  let plane = p.ho * p.wo;
  if (i >= p.tasks * p.batch * p.cout * plane) {
    return;
  }
  let pix = i % plane;
  let o = (i / plane) % p.cout;
  let tb = i / (plane * p.cout);
  let t = tb / p.batch;
  let oy = pix / p.wo;
  let ox = pix % p.wo;
  var s = bias[t * p.cout + o];
  for (var c = 0u; c < p.cin; c++) {
    for (var ky = 0u; ky < p.k; ky++) {
      for (var kx = 0u; kx < p.k; kx++) {
        let iy = i32(oy * p.stride + ky) - i32(p.pad);
        let ix = i32(ox * p.stride + kx) - i32(p.pad);
        if (iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w)) {
          let xi = ((tb * p.cin + c) * p.h + u32(iy)) * p.w + u32(ix);
          let wi = (((t * p.cout + o) * p.cin + c) * p.k + ky) * p.k + kx;
          s += src[xi] * weight[wi];
        }
      }
    }
  }
  y[i] = activate(s);
}

// Backward to the input: dx[t, b, c, iy, ix] = sum over o, ky, kx of
// dy[t, b, o, oy, ox] * weight[t, o, c, ky, kx] where iy = oy * stride - pad + ky (same for x).
// src4 / src = dy here.
@group(0) @binding(1) var<storage, read> bi_weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> bi_dx: array<f32>;
@group(0) @binding(3) var<uniform> bi_p: Params;

// Stages weight[t, o, c0 + 0..15, tap] for o in [os, oe) as wsm[((o - os) k^2 + tap) 4 + v] =
// channels c0 + 4v .. c0 + 4v + 3 (the last channel repeated past C).
fn stage_input_weights(t: u32, c0: u32, os: u32, oe: u32, lid: u32) {
  let kk = bi_p.k * bi_p.k;
  for (var i = lid; i < (oe - os) * kk * 4u; i += WG) {
    let c = min(vec4u(c0 + 4u * (i % 4u)) + vec4u(0u, 1u, 2u, 3u), vec4u(bi_p.cin - 1u));
    let e = i / 4u;
    let o = os + e / kk;
    let wi = ((t * bi_p.cout + o) * bi_p.cin + c) * kk + e % kk;
    wsm[i] = vec4f(bi_weight[wi.x], bi_weight[wi.y], bi_weight[wi.z], bi_weight[wi.w]);
  }
}

// dx[i + j plane] (+)= r[j] for the channels c + j < C (plane = H W).
fn store_dx4(i: u32, c: u32, r: vec4f) {
  let plane = bi_p.h * bi_p.w;
  for (var j = 0u; j < 4u; j++) {
    if (c + j < bi_p.cin) {
      if (ACCUMULATE) {
        bi_dx[i + j * plane] += r[j];
      } else {
        bi_dx[i + j * plane] = r[j];
      }
    }
  }
}

// dx[t, b, c0 + 0..15, iy, ix] (+)= a where in range (column v of a = channels 4v .. 4v + 3).
fn store_dx(t: u32, b: u32, iy: u32, ix: u32, c0: u32, a: mat4x4f) {
  if (iy >= bi_p.h || ix >= bi_p.w) {
    return;
  }
  let plane = bi_p.h * bi_p.w;
  let i = ((t * bi_p.batch + b) * bi_p.cin + c0) * plane + iy * bi_p.w + ix;
  store_dx4(i, c0, a[0]);
  store_dx4(i + 4u * plane, c0 + 4u, a[1]);
  store_dx4(i + 8u * plane, c0 + 8u, a[2]);
  store_dx4(i + 12u * plane, c0 + 12u, a[3]);
}

// Backward input, tiled. Input pixels split into stride^2 phases (fy, fx) = ((iy + pad) mod s,
// (ix + pad) mod s); in phase (fy, fx) only taps ky = fy + s uy, kx = fx + s ux contribute, with
// oy = (iy + pad - ky) / s. A phase's pixels iy = iy_first + s jy form a grid in which the
// output rows / columns of consecutive taps are consecutive, so a window of dy covers them.
// Workgroup g = (t, phase, channel block of 16, pixel block), pixel block fastest; invocation
// = (b, 2-row tile, X-column tile) of the phase grid ceil(H / s) x ceil(W / s),
// blocks_a = ceil(B * ceil(ceil(H / s) / 2) * ceil(ceil(W / s) / X) / 64), X = 4 columns (8 if
// WIDE_COLUMNS), blocks_b = ceil(C / 16).
@compute @workgroup_size(WG)
fn backward_input(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                  @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  let s = bi_p.stride;
  let t = g / (s * s * bi_p.blocks_b * bi_p.blocks_a);
  if (t >= bi_p.tasks) {
    return;
  }
  let phase = (g / (bi_p.blocks_b * bi_p.blocks_a)) % (s * s);
  let fy = phase / s;
  let fx = phase % s;
  let c0 = ((g / bi_p.blocks_a) % bi_p.blocks_b) * 16u;
  let ny = (bi_p.h + s - 1u) / s;
  let nx = (bi_p.w + s - 1u) / s;
  let cols = select(4u, 8u, WIDE_COLUMNS);
  let tiles_x = (nx + cols - 1u) / cols;
  let tiles_y = (ny + 1u) / 2u;
  let n = bi_p.batch * tiles_y * tiles_x;
  let q = (g % bi_p.blocks_a) * WG + lid;
  let qc = min(q, n - 1u);
  let b = qc / (tiles_x * tiles_y);
  let jy = ((qc / tiles_x) % tiles_y) * 2u;
  let jx = (qc % tiles_x) * cols;
  // First input row / column of the phase, and the output row / column of its first tap.
  let first_y = (fy + s - bi_p.pad % s) % s;
  let first_x = (fx + s - bi_p.pad % s) % s;
  let oy_first = i32((first_y + bi_p.pad - fy) / s);
  let ox_first = i32((first_x + bi_p.pad - fx) / s);
  // Taps of the phase along each axis.
  let nky = select(0u, (bi_p.k - fy + s - 1u) / s, fy < bi_p.k);
  let nkx = select(0u, (bi_p.k - fx + s - 1u) / s, fx < bi_p.k);
  let height = i32(bi_p.ho);
  let width = i32(bi_p.wo);
  let kk = bi_p.k * bi_p.k;
  let chunk = max(1u, WSM / (4u * kk));
  // Taps ux per window: the pixels' taps u0 .. u1 - 1 read dy columns ox_first + jx + j - ux,
  // which span u1 - u0 + cols - 1 values.
  let taps = 14u - cols;
  var a00 = mat4x4f();
  var a01 = mat4x4f();
  var a02 = mat4x4f();
  var a03 = mat4x4f();
  var a04 = mat4x4f();
  var a05 = mat4x4f();
  var a06 = mat4x4f();
  var a07 = mat4x4f();
  var a10 = mat4x4f();
  var a11 = mat4x4f();
  var a12 = mat4x4f();
  var a13 = mat4x4f();
  var a14 = mat4x4f();
  var a15 = mat4x4f();
  var a16 = mat4x4f();
  var a17 = mat4x4f();
  for (var os = 0u; os < bi_p.cout; os += chunk) {
    let oe = min(os + chunk, bi_p.cout);
    workgroupBarrier();
    stage_input_weights(t, c0, os, oe, lid);
    workgroupBarrier();
    for (var o = os; o < oe; o++) {
      let plane = i32(((t * bi_p.batch + b) * bi_p.cout + o) * bi_p.ho * bi_p.wo);
      for (var uy = 0u; uy < nky; uy++) {
        let oy0 = oy_first + i32(jy) - i32(uy);
        let oy1 = oy0 + 1;
        let r0 = plane + clamp(oy0, 0, height - 1) * width;
        let r1 = plane + clamp(oy1, 0, height - 1) * width;
        let ok0 = oy0 >= 0 && oy0 < height;
        let ok1 = oy1 >= 0 && oy1 < height;
        let row = ((o - os) * kk + (fy + s * uy) * bi_p.k + fx) * 4u;
        for (var u0 = 0u; u0 < nkx; u0 += taps) {
          // Tap ux reads window values u1 - 1 - ux + j: the window advances as ux decreases.
          let u1 = min(u0 + taps, nkx);
          let col = ox_first + i32(jx) - i32(u1) + 1;
          var win0 = window(r0 + col, col, ok0, width);
          var win1 = window(r1 + col, col, ok1, width);
          for (var ux = u1; ux > u0; ux--) {
            let wm = staged(row + 4u * s * (ux - 1u));
            let d0 = win0[0];
            let d1 = win1[0];
            a00 += wm * d0.x;
            a01 += wm * d0.y;
            a02 += wm * d0.z;
            a03 += wm * d0.w;
            a10 += wm * d1.x;
            a11 += wm * d1.y;
            a12 += wm * d1.z;
            a13 += wm * d1.w;
            if (WIDE_COLUMNS) {
              let e0 = win0[1];
              let e1 = win1[1];
              a04 += wm * e0.x;
              a05 += wm * e0.y;
              a06 += wm * e0.z;
              a07 += wm * e0.w;
              a14 += wm * e1.x;
              a15 += wm * e1.y;
              a16 += wm * e1.z;
              a17 += wm * e1.w;
            }
            win0 = advance(win0);
            win1 = advance(win1);
          }
        }
      }
    }
  }
  if (q >= n) {
    return;
  }
  let iy = first_y + s * jy;
  let ix = first_x + s * jx;
  store_dx(t, b, iy, ix, c0, a00);
  store_dx(t, b, iy, ix + s, c0, a01);
  store_dx(t, b, iy, ix + 2u * s, c0, a02);
  store_dx(t, b, iy, ix + 3u * s, c0, a03);
  store_dx(t, b, iy + s, ix, c0, a10);
  store_dx(t, b, iy + s, ix + s, c0, a11);
  store_dx(t, b, iy + s, ix + 2u * s, c0, a12);
  store_dx(t, b, iy + s, ix + 3u * s, c0, a13);
  if (WIDE_COLUMNS) {
    store_dx(t, b, iy, ix + 4u * s, c0, a04);
    store_dx(t, b, iy, ix + 5u * s, c0, a05);
    store_dx(t, b, iy, ix + 6u * s, c0, a06);
    store_dx(t, b, iy, ix + 7u * s, c0, a07);
    store_dx(t, b, iy + s, ix + 4u * s, c0, a14);
    store_dx(t, b, iy + s, ix + 5u * s, c0, a15);
    store_dx(t, b, iy + s, ix + 6u * s, c0, a16);
    store_dx(t, b, iy + s, ix + 7u * s, c0, a17);
  }
}

// Backward input, naive: one dx element per invocation, linear index over [T, B, C, H, W].
@compute @workgroup_size(WG)
fn backward_input_naive(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                        @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  let hw = bi_p.h * bi_p.w;
  if (i >= bi_p.tasks * bi_p.batch * bi_p.cin * hw) {
    return;
  }
  let iy = (i % hw) / bi_p.w;
  let ix = i % bi_p.w;
  let c = (i / hw) % bi_p.cin;
  let tb = i / (hw * bi_p.cin);
  let t = tb / bi_p.batch;
  var sum = 0.0;
  for (var o = 0u; o < bi_p.cout; o++) {
    for (var ky = 0u; ky < bi_p.k; ky++) {
      for (var kx = 0u; kx < bi_p.k; kx++) {
        let ny = i32(iy + bi_p.pad) - i32(ky);
        let nx = i32(ix + bi_p.pad) - i32(kx);
        let s = i32(bi_p.stride);
        if (ny >= 0 && nx >= 0 && ny % s == 0 && nx % s == 0 && ny / s < i32(bi_p.ho) &&
            nx / s < i32(bi_p.wo)) {
          let di = ((tb * bi_p.cout + o) * bi_p.ho + u32(ny / s)) * bi_p.wo + u32(nx / s);
          let wi = (((t * bi_p.cout + o) * bi_p.cin + c) * bi_p.k + ky) * bi_p.k + kx;
          sum += src[di] * bi_weight[wi];
        }
      }
    }
  }
  if (ACCUMULATE) {
    bi_dx[i] += sum;
  } else {
    bi_dx[i] = sum;
  }
}

// Backward to the weights: dw[t, o, c, ky, kx] = sum over b, oy, ox of
// dy[t, b, o, oy, ox] * x[t, b, c, oy * stride - pad + ky, ox * stride - pad + kx].
// src4 / src = x here.
@group(0) @binding(1) var<storage, read> bw_dy4: array<vec4f>;
@group(0) @binding(1) var<storage, read> bw_dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> bw_dw: array<f32>;
@group(0) @binding(3) var<uniform> bw_p: Params;

var<workgroup> partial: array<mat4x4f, WG * 8u>;

fn dy_vec4(i: u32) -> vec4f {
  if (TEX) {
    return texel(dy_tex, i);
  }
  return bw_dy4[i];
}

// sum over j of c_j * x[j]: the outer products of a quad's dy (c_j, 16 channels of column j) and
// x (one tap, 4 columns).
fn outer(c0: mat4x4f, c1: mat4x4f, c2: mat4x4f, c3: mat4x4f, x: vec4f) -> mat4x4f {
  return c0 * x.x + c1 * x.y + c2 * x.z + c3 * x.w;
}

// dy[at + j] for j < 4 (4 output columns starting at column col of a row of dy), 0 past Wo.
fn dy_quad(at: u32, col: u32) -> vec4f {
  if (DY_ALIGNED) {
    return dy_vec4(at >> 2u);
  }
  let m = at & 3u;
  let lo = dy_vec4(at >> 2u);
  let hi = dy_vec4((at >> 2u) + 1u);
  let v = array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
  let ok = vec4u(col) + vec4u(0u, 1u, 2u, 3u) < vec4u(bw_p.wo);
  return select(vec4f(), vec4f(v[m], v[m + 1u], v[m + 2u], v[m + 3u]), ok);
}

// Backward weight, tiled. Workgroup g = (t, channel block of 16, element block), element block
// fastest; lane = slice * EL + e, element = (c, ky, block of X = 4 taps kx, 8 if WIDE_TAPS).
// Slice r sums quads (b, oy, 4 output columns) r, r + RS, ... of the task; slices are then added
// in order 0..RS-1. blocks_a = ceil(C * k * ceil(k / X) / EL), blocks_b = ceil(O / 16).
@compute @workgroup_size(WG)
fn backward_weight(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  let local = g / (bw_p.blocks_a * bw_p.blocks_b);
  if (local >= bw_p.tasks) {
    return;
  }
  let t = bw_p.task0 + local;
  // The task of the loads: counted from task0 in the textures.
  let ts = select(t, local, TEX);
  let o0 = ((g / bw_p.blocks_a) % bw_p.blocks_b) * 16u;
  let taps = select(4u, 8u, WIDE_TAPS);
  let kb = (bw_p.k + taps - 1u) / taps;
  let elements = bw_p.cin * bw_p.k * kb;
  let e = (g % bw_p.blocks_a) * EL + lid % EL;
  let ec = min(e, elements - 1u);
  let c = ec / (bw_p.k * kb);
  let ky = (ec / kb) % bw_p.k;
  let kx = (ec % kb) * taps;
  let s = STRIDE;
  let height = i32(bw_p.h);
  let width = i32(bw_p.w);
  let tiles_x = (bw_p.wo + 3u) / 4u;
  let quads = bw_p.batch * bw_p.ho * tiles_x;
  let plane = bw_p.ho * bw_p.wo;
  // Rows of dy for the 16 channels (the last repeated past O), relative to image b's start.
  let rows0 = min(vec4u(o0) + vec4u(0u, 1u, 2u, 3u), vec4u(bw_p.cout - 1u)) * plane;
  let rows1 = min(vec4u(o0 + 4u) + vec4u(0u, 1u, 2u, 3u), vec4u(bw_p.cout - 1u)) * plane;
  let rows2 = min(vec4u(o0 + 8u) + vec4u(0u, 1u, 2u, 3u), vec4u(bw_p.cout - 1u)) * plane;
  let rows3 = min(vec4u(o0 + 12u) + vec4u(0u, 1u, 2u, 3u), vec4u(bw_p.cout - 1u)) * plane;
  var a0 = mat4x4f();
  var a1 = mat4x4f();
  var a2 = mat4x4f();
  var a3 = mat4x4f();
  var a4 = mat4x4f();
  var a5 = mat4x4f();
  var a6 = mat4x4f();
  var a7 = mat4x4f();
  for (var qi = lid / EL; qi < quads; qi += RS) {
    let b = qi / (bw_p.ho * tiles_x);
    let oy = (qi / tiles_x) % bw_p.ho;
    let ox = (qi % tiles_x) * 4u;
    let iy = i32(oy * s + ky) - i32(bw_p.pad);
    let col = i32(ox * s + kx) - i32(bw_p.pad);
    let at = i32(((ts * bw_p.batch + b) * bw_p.cin + c) * bw_p.h * bw_p.w) +
      clamp(iy, 0, height - 1) * width + col;
    let d = (ts * bw_p.batch + b) * bw_p.cout * plane + oy * bw_p.wo + ox;
    // dy of the quad: column j of channel block v is mat4x4f(dv0, .., dv3)[v] over j.
    let dj = array<mat4x4f, 4>(
      mat4x4f(dy_quad(d + rows0.x, ox), dy_quad(d + rows0.y, ox), dy_quad(d + rows0.z, ox),
              dy_quad(d + rows0.w, ox)),
      mat4x4f(dy_quad(d + rows1.x, ox), dy_quad(d + rows1.y, ox), dy_quad(d + rows1.z, ox),
              dy_quad(d + rows1.w, ox)),
      mat4x4f(dy_quad(d + rows2.x, ox), dy_quad(d + rows2.y, ox), dy_quad(d + rows2.z, ox),
              dy_quad(d + rows2.w, ox)),
      mat4x4f(dy_quad(d + rows3.x, ox), dy_quad(d + rows3.y, ox), dy_quad(d + rows3.z, ox),
              dy_quad(d + rows3.w, ox)),
    );
    // Transposed so that column v holds channels o0 + 4v .. + 3 for one output column j.
    let c0 = mat4x4f(vec4f(dj[0][0].x, dj[0][1].x, dj[0][2].x, dj[0][3].x),
                     vec4f(dj[1][0].x, dj[1][1].x, dj[1][2].x, dj[1][3].x),
                     vec4f(dj[2][0].x, dj[2][1].x, dj[2][2].x, dj[2][3].x),
                     vec4f(dj[3][0].x, dj[3][1].x, dj[3][2].x, dj[3][3].x));
    let c1 = mat4x4f(vec4f(dj[0][0].y, dj[0][1].y, dj[0][2].y, dj[0][3].y),
                     vec4f(dj[1][0].y, dj[1][1].y, dj[1][2].y, dj[1][3].y),
                     vec4f(dj[2][0].y, dj[2][1].y, dj[2][2].y, dj[2][3].y),
                     vec4f(dj[3][0].y, dj[3][1].y, dj[3][2].y, dj[3][3].y));
    let c2 = mat4x4f(vec4f(dj[0][0].z, dj[0][1].z, dj[0][2].z, dj[0][3].z),
                     vec4f(dj[1][0].z, dj[1][1].z, dj[1][2].z, dj[1][3].z),
                     vec4f(dj[2][0].z, dj[2][1].z, dj[2][2].z, dj[2][3].z),
                     vec4f(dj[3][0].z, dj[3][1].z, dj[3][2].z, dj[3][3].z));
    let c3 = mat4x4f(vec4f(dj[0][0].w, dj[0][1].w, dj[0][2].w, dj[0][3].w),
                     vec4f(dj[1][0].w, dj[1][1].w, dj[1][2].w, dj[1][3].w),
                     vec4f(dj[2][0].w, dj[2][1].w, dj[2][2].w, dj[2][3].w),
                     vec4f(dj[3][0].w, dj[3][1].w, dj[3][2].w, dj[3][3].w));
    // x for taps kx + u (u < 4) and the quad's columns j: window value u + stride j.
    let ok = iy >= 0 && iy < height;
    let win = window(at, col, ok, width);
    a0 += outer(c0, c1, c2, c3, pick(win, 0u));
    a1 += outer(c0, c1, c2, c3, pick(win, 1u));
    a2 += outer(c0, c1, c2, c3, pick(win, 2u));
    a3 += outer(c0, c1, c2, c3, pick(win, 3u));
    if (WIDE_TAPS) {
      let win4 = window(at + 4, col + 4, ok, width);
      a4 += outer(c0, c1, c2, c3, pick(win4, 0u));
      a5 += outer(c0, c1, c2, c3, pick(win4, 1u));
      a6 += outer(c0, c1, c2, c3, pick(win4, 2u));
      a7 += outer(c0, c1, c2, c3, pick(win4, 3u));
    }
  }
  partial[lid * 8u] = a0;
  partial[lid * 8u + 1u] = a1;
  partial[lid * 8u + 2u] = a2;
  partial[lid * 8u + 3u] = a3;
  partial[lid * 8u + 4u] = a4;
  partial[lid * 8u + 5u] = a5;
  partial[lid * 8u + 6u] = a6;
  partial[lid * 8u + 7u] = a7;
  workgroupBarrier();
  if (lid >= EL || e >= elements) {
    return;
  }
  let kk = bw_p.k * bw_p.k;
  for (var u = 0u; u < taps; u++) {
    var sum = partial[lid * 8u + u];
    for (var r = 1u; r < RS; r++) {
      sum += partial[(r * EL + lid) * 8u + u];
    }
    if (kx + u < bw_p.k) {
      for (var v = 0u; v < 4u; v++) {
        for (var j = 0u; j < 4u; j++) {
          let o = o0 + 4u * v + j;
          if (o < bw_p.cout) {
            let i = ((t * bw_p.cout + o) * bw_p.cin + c) * kk + ky * bw_p.k + kx + u;
            if (ACCUMULATE) {
              bw_dw[i] += sum[v][j];
            } else {
              bw_dw[i] = sum[v][j];
            }
          }
        }
      }
    }
  }
}

// Backward weight, naive: one dw element per invocation, linear index over [T, O, C, k, k], the
// sum over (b, oy, ox) in order.
@compute @workgroup_size(WG)
fn backward_weight_naive(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                         @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * WG + lid;
  let kk = bw_p.k * bw_p.k;
  if (i >= bw_p.tasks * bw_p.cout * bw_p.cin * kk) {
    return;
  }
  let kx = i % bw_p.k;
  let ky = (i / bw_p.k) % bw_p.k;
  let c = (i / kk) % bw_p.cin;
  let o = (i / (kk * bw_p.cin)) % bw_p.cout;
  let t = i / (kk * bw_p.cin * bw_p.cout);
  var sum = 0.0;
  for (var b = 0u; b < bw_p.batch; b++) {
    for (var oy = 0u; oy < bw_p.ho; oy++) {
      for (var ox = 0u; ox < bw_p.wo; ox++) {
        let iy = i32(oy * bw_p.stride + ky) - i32(bw_p.pad);
        let ix = i32(ox * bw_p.stride + kx) - i32(bw_p.pad);
        if (iy >= 0 && iy < i32(bw_p.h) && ix >= 0 && ix < i32(bw_p.w)) {
          let tb = t * bw_p.batch + b;
          let xi = ((tb * bw_p.cin + c) * bw_p.h + u32(iy)) * bw_p.w + u32(ix);
          let di = ((tb * bw_p.cout + o) * bw_p.ho + oy) * bw_p.wo + ox;
          sum += bw_dy[di] * src[xi];
        }
      }
    }
  }
  if (ACCUMULATE) {
    bw_dw[i] += sum;
  } else {
    bw_dw[i] = sum;
  }
}

// Backward weight, direct (for GPUs, where the tiled kernel's 256 accumulators and 32 KB of
// workgroup memory per 64 invocations leave most of the chip idle): workgroup g = (t, o, c)
// computes the k x k taps of dw[t, o, c]. Each of its 64 invocations sums every tap over a
// strided slice of the (b, oy, ox) pixels of dy[t, ., o] (64 neighbouring pixels per step, so
// loads of dy and x are coalesced), then the 64 partial sums of each tap are added in a fixed
// order: the same bits on every run. KS = k (at most 7), a constant so that the taps'
// accumulators can live in registers.
override KS: u32 = 5u;
const MAX_TAPS: u32 = 49u;
var<workgroup> tap_sums: array<f32, 3136>;

@compute @workgroup_size(WG)
fn backward_weight_direct(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                          @builtin(local_invocation_index) lid: u32) {
  // No early return: every invocation reaches the barrier below.
  let planes = bw_p.tasks * bw_p.cout * bw_p.cin;
  let g = wid.x + wid.y * nwg.x;
  let live = g < planes;
  let gg = min(g, planes - 1u);
  let c = gg % bw_p.cin;
  let o = (gg / bw_p.cin) % bw_p.cout;
  let t = gg / (bw_p.cin * bw_p.cout);
  let plane = bw_p.ho * bw_p.wo;
  var acc: array<f32, MAX_TAPS>;
  for (var q = lid; q < bw_p.batch * plane; q += WG) {
    let b = q / plane;
    let r = q % plane;
    let tb = t * bw_p.batch + b;
    let d = bw_dy[(tb * bw_p.cout + o) * plane + r];
    let iy0 = i32((r / bw_p.wo) * bw_p.stride) - i32(bw_p.pad);
    let ix0 = i32((r % bw_p.wo) * bw_p.stride) - i32(bw_p.pad);
    let base = (tb * bw_p.cin + c) * bw_p.h;
    for (var ky = 0u; ky < KS; ky++) {
      let iy = iy0 + i32(ky);
      if (iy >= 0 && iy < i32(bw_p.h)) {
        let row = (base + u32(iy)) * bw_p.w;
        for (var kx = 0u; kx < KS; kx++) {
          let ix = ix0 + i32(kx);
          if (ix >= 0 && ix < i32(bw_p.w)) {
            acc[ky * KS + kx] += d * src[row + u32(ix)];
          }
        }
      }
    }
  }
  for (var tap = 0u; tap < KS * KS; tap++) {
    tap_sums[tap * WG + lid] = acc[tap];
  }
  workgroupBarrier();
  if (live && lid < KS * KS) {
    var sum = 0.0;
    for (var j = 0u; j < WG; j++) {
      sum += tap_sums[lid * WG + j];
    }
    let i = gg * KS * KS + lid;
    if (ACCUMULATE) {
      bw_dw[i] += sum;
    } else {
      bw_dw[i] = sum;
    }
  }
}

// Backward to the bias: dbias[t, o] = sum over b, oy, ox of dy[t, b, o, oy, ox]. Workgroup
// g = t * O + o; each invocation sums a fixed strided slice, then a fixed tree in workgroup
// memory adds the 64 partial sums, so the result is the same bits on every run.
@group(0) @binding(1) var<storage, read_write> bb_dbias: array<f32>;
@group(0) @binding(2) var<uniform> bb_p: Params;

var<workgroup> tree: array<f32, WG>;

@compute @workgroup_size(WG)
fn backward_bias(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  if (g >= bb_p.tasks * bb_p.cout) {
    return;
  }
  let t = g / bb_p.cout;
  let o = g % bb_p.cout;
  let plane = bb_p.ho * bb_p.wo;
  var sum = 0.0;
  for (var b = 0u; b < bb_p.batch; b++) {
    let base = ((t * bb_p.batch + b) * bb_p.cout + o) * plane;
    for (var i = lid; i < plane; i += WG) {
      sum += src[base + i];
    }
  }
  tree[lid] = sum;
  for (var half = WG / 2u; half > 0u; half /= 2u) {
    workgroupBarrier();
    if (lid < half) {
      tree[lid] += tree[lid + half];
    }
  }
  if (lid == 0u) {
    if (ACCUMULATE) {
      bb_dbias[g] += tree[0];
    } else {
      bb_dbias[g] = tree[0];
    }
  }
}

// Implicit GEMM: the GPU-oriented versions of the three passes, each a product
// out[t] (M x N) = A[t] (M x K) @ B[t] (K x N) whose operands are read straight from the tensors
// (no unfolded copy in memory):
//   forward_gemm          M = O, N = B Ho Wo, K = C k k; A = weight, B = x at the taps (0 in the
//                         padding); y = act(out + bias).
//   backward_input_gemm   per stride phase of input pixels (below): M = C, N = B x the phase's
//                         pixels, K = O x the phase's taps; A = weight over (o, tap) for channel
//                         c, B = dy at the output pixel each tap of the input pixel lands on.
//   backward_weight_gemm  M = O, N = C k k, K = B Ho Wo; A = dy, B = x at the taps.
// A workgroup of 64 invocations computes a 32 x 32 tile of out[t]; per step of 16 along K it
// stages the 32 x 16 slice of A and the 16 x 32 slice of B in workgroup memory (each value loaded
// from storage once, then read by 8 invocations), and invocation (tx, ty) = (lid % 8, lid / 8)
// accumulates rows 4 ty .. 4 ty + 3 x columns 4 tx .. 4 tx + 3 in order of increasing K, so
// every output is the same sum in the same order on every run. Workgroup g = (t, row tile,
// column tile), column tile fastest; blocks_a = ceil(M / 32), blocks_b = ceil(N / 32).
const GT: u32 = 32u;
const GK: u32 = 16u;

// ga[kk * GT + m] = A[m0 + m, k0 + kk]; gb[kk * GT + n] = B[k0 + kk, n0 + n].
var<workgroup> ga: array<f32, 512>;
var<workgroup> gb: array<f32, 512>;

struct GemmTile {
  t: u32,
  m0: u32,
  n0: u32,
  // False for the workgroups past the end of the grid: they join the barriers, store nothing.
  live: bool,
}

fn gemm_tile(id: u32, tasks: u32, tiles_m: u32, tiles_n: u32) -> GemmTile {
  let per = tiles_m * tiles_n;
  let i = min(id, tasks * per - 1u);
  return GemmTile(i / per, (i % per) / tiles_n * GT, (i % tiles_n) * GT, id < tasks * per);
}

// acc[j][i] += sum over the staged kk of A[4 ty + i, kk] B[kk, 4 tx + j].
fn gemm_step(acc: ptr<function, mat4x4f>, lid: u32) {
  let a0 = 4u * (lid / 8u);
  let b0 = 4u * (lid % 8u);
  for (var kk = 0u; kk < GK; kk++) {
    let o = kk * GT;
    let av = vec4f(ga[o + a0], ga[o + a0 + 1u], ga[o + a0 + 2u], ga[o + a0 + 3u]);
    let bv = vec4f(gb[o + b0], gb[o + b0 + 1u], gb[o + b0 + 2u], gb[o + b0 + 3u]);
    (*acc)[0] = fma(av, vec4f(bv.x), (*acc)[0]);
    (*acc)[1] = fma(av, vec4f(bv.y), (*acc)[1]);
    (*acc)[2] = fma(av, vec4f(bv.z), (*acc)[2]);
    (*acc)[3] = fma(av, vec4f(bv.w), (*acc)[3]);
  }
}

// x[t, b, c, oy * s - pad + ky, ox * s - pad + kx] for tap kk = (c, ky, kx) of output pixel
// n = (b, oy, ox); 0 in the padding and past K or N.
fn gemm_x(q: Params, t: u32, kk: u32, n: u32) -> f32 {
  let taps = q.k * q.k;
  let plane = q.ho * q.wo;
  if (kk >= q.cin * taps || n >= q.batch * plane) {
    return 0.0;
  }
  let c = kk / taps;
  let ky = (kk % taps) / q.k;
  let kx = kk % q.k;
  let b = n / plane;
  let iy = i32((n % plane) / q.wo * q.stride + ky) - i32(q.pad);
  let ix = i32((n % q.wo) * q.stride + kx) - i32(q.pad);
  if (iy < 0 || iy >= i32(q.h) || ix < 0 || ix >= i32(q.w)) {
    return 0.0;
  }
  return src[(((t * q.batch + b) * q.cin + c) * q.h + u32(iy)) * q.w + u32(ix)];
}

@compute @workgroup_size(WG)
fn forward_gemm(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let big_k = p.cin * p.k * p.k;
  let plane = p.ho * p.wo;
  let tile = gemm_tile(wid.x + wid.y * nwg.x, p.tasks, p.blocks_a, p.blocks_b);
  var acc = mat4x4f();
  for (var k0 = 0u; k0 < big_k; k0 += GK) {
    for (var e = lid; e < GT * GK; e += WG) {
      let m = tile.m0 + e / GK;
      let kk = k0 + e % GK;
      let wi = (tile.t * p.cout + min(m, p.cout - 1u)) * big_k + min(kk, big_k - 1u);
      ga[(e % GK) * GT + e / GK] = select(0.0, weight[wi], m < p.cout && kk < big_k);
      gb[e] = gemm_x(p, tile.t, k0 + e / GT, tile.n0 + e % GT);
    }
    workgroupBarrier();
    gemm_step(&acc, lid);
    workgroupBarrier();
  }
  if (!tile.live) {
    return;
  }
  for (var j = 0u; j < 4u; j++) {
    let n = tile.n0 + 4u * (lid % 8u) + j;
    for (var i = 0u; i < 4u; i++) {
      let m = tile.m0 + 4u * (lid / 8u) + i;
      if (m < p.cout && n < p.batch * plane) {
        let yi = ((tile.t * p.batch + n / plane) * p.cout + m) * plane + n % plane;
        y[yi] = activate(acc[j][i] + bias[tile.t * p.cout + m]);
      }
    }
  }
}

// backward_input_gemm works on one stride phase (ry, rx) of input pixels at a time: pixels with
// (iy + pad) mod s = ry (and the same for x) receive only taps ky = ry + s a, kx = rx + s b, so the
// product runs over those alone (1 / s^2 of the taps), with no zeros between strides.
struct Phase {
  ry: u32,
  rx: u32,
  // First input row and column of the phase, and its rows and columns.
  iy0: u32,
  ix0: u32,
  rows: u32,
  cols: u32,
  // Taps of the phase along y and x.
  ka: u32,
  kb: u32,
}

fn phase_of(ph: u32) -> Phase {
  let s = bi_p.stride;
  let ry = ph / s;
  let rx = ph % s;
  let iy0 = (ry + s - bi_p.pad % s) % s;
  let ix0 = (rx + s - bi_p.pad % s) % s;
  let rows = select(0u, (bi_p.h - iy0 + s - 1u) / s, iy0 < bi_p.h);
  let cols = select(0u, (bi_p.w - ix0 + s - 1u) / s, ix0 < bi_p.w);
  let ka = select(0u, (bi_p.k - ry + s - 1u) / s, ry < bi_p.k);
  let kb = select(0u, (bi_p.k - rx + s - 1u) / s, rx < bi_p.k);
  return Phase(ry, rx, iy0, ix0, rows, cols, ka, kb);
}

// dy[t, b, o, oy, ox] for phase tap kk = (o, a, b') and phase pixel n = (b, j, i): input pixel
// (iy0 + s j, ix0 + s i) takes tap (ry + s a, rx + s b') from output pixel
// ((iy + pad - ky) / s, (ix + pad - kx) / s); 0 where that is outside, and past K or N.
fn gemm_dy(t: u32, q: Phase, kk: u32, n: u32) -> f32 {
  let taps = q.ka * q.kb;
  let plane = q.rows * q.cols;
  if (kk >= bi_p.cout * taps || n >= bi_p.batch * plane) {
    return 0.0;
  }
  let o = kk / taps;
  let ky = q.ry + bi_p.stride * ((kk % taps) / q.kb);
  let kx = q.rx + bi_p.stride * (kk % q.kb);
  let b = n / plane;
  let iy = q.iy0 + bi_p.stride * ((n % plane) / q.cols);
  let ix = q.ix0 + bi_p.stride * (n % q.cols);
  let dy_ = i32(iy + bi_p.pad) - i32(ky);
  let dx_ = i32(ix + bi_p.pad) - i32(kx);
  if (dy_ < 0 || dx_ < 0) {
    return 0.0;
  }
  let oy = u32(dy_) / bi_p.stride;
  let ox = u32(dx_) / bi_p.stride;
  if (oy >= bi_p.ho || ox >= bi_p.wo) {
    return 0.0;
  }
  return src[(((t * bi_p.batch + b) * bi_p.cout + o) * bi_p.ho + oy) * bi_p.wo + ox];
}

// Workgroup g = (t, phase, row tile, column tile); blocks_b counts the column tiles of the
// largest phase (B ceil(H / s) ceil(W / s) pixels); tiles past a smaller phase store nothing.
@compute @workgroup_size(WG)
fn backward_input_gemm(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                       @builtin(local_invocation_index) lid: u32) {
  let phases = bi_p.stride * bi_p.stride;
  let tile = gemm_tile(wid.x + wid.y * nwg.x, bi_p.tasks * phases, bi_p.blocks_a, bi_p.blocks_b);
  let t = tile.t / phases;
  let q = phase_of(tile.t % phases);
  let taps = q.ka * q.kb;
  let big_k = bi_p.cout * taps;
  let plane = q.rows * q.cols;
  var acc = mat4x4f();
  for (var k0 = 0u; k0 < big_k; k0 += GK) {
    for (var e = lid; e < GT * GK; e += WG) {
      let c = tile.m0 + e / GK;
      let kk = k0 + e % GK;
      let kc = min(kk, big_k - 1u);
      let ky = q.ry + bi_p.stride * ((kc % taps) / q.kb);
      let kx = q.rx + bi_p.stride * (kc % q.kb);
      let wi = (((t * bi_p.cout + kc / taps) * bi_p.cin + min(c, bi_p.cin - 1u)) * bi_p.k + ky) *
        bi_p.k + kx;
      ga[(e % GK) * GT + e / GK] = select(0.0, bi_weight[wi], c < bi_p.cin && kk < big_k);
      gb[e] = gemm_dy(t, q, k0 + e / GT, tile.n0 + e % GT);
    }
    workgroupBarrier();
    gemm_step(&acc, lid);
    workgroupBarrier();
  }
  if (!tile.live) {
    return;
  }
  for (var j = 0u; j < 4u; j++) {
    let n = tile.n0 + 4u * (lid % 8u) + j;
    for (var i = 0u; i < 4u; i++) {
      let c = tile.m0 + 4u * (lid / 8u) + i;
      if (c < bi_p.cin && n < bi_p.batch * plane) {
        let iy = q.iy0 + bi_p.stride * ((n % plane) / q.cols);
        let ix = q.ix0 + bi_p.stride * (n % q.cols);
        let xi = (((t * bi_p.batch + n / plane) * bi_p.cin + c) * bi_p.h + iy) * bi_p.w + ix;
        if (ACCUMULATE) {
          bi_dx[xi] += acc[j][i];
        } else {
          bi_dx[xi] = acc[j][i];
        }
      }
    }
  }
}

@compute @workgroup_size(WG)
fn backward_weight_gemm(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                        @builtin(local_invocation_index) lid: u32) {
  let plane = bw_p.ho * bw_p.wo;
  let big_k = bw_p.batch * plane;
  let big_n = bw_p.cin * bw_p.k * bw_p.k;
  let tile = gemm_tile(wid.x + wid.y * nwg.x, bw_p.tasks, bw_p.blocks_a, bw_p.blocks_b);
  var acc = mat4x4f();
  for (var k0 = 0u; k0 < big_k; k0 += GK) {
    for (var e = lid; e < GT * GK; e += WG) {
      let o = tile.m0 + e / GK;
      let kk = k0 + e % GK;
      // A[o, (b, pixel)] = dy[t, b, o, pixel].
      let q = min(kk, big_k - 1u);
      let di = ((tile.t * bw_p.batch + q / plane) * bw_p.cout + min(o, bw_p.cout - 1u)) * plane +
        q % plane;
      ga[(e % GK) * GT + e / GK] = select(0.0, bw_dy[di], o < bw_p.cout && kk < big_k);
      // B[(b, pixel), (c, ky, kx)] = x at the tap: gemm_x with the roles of kk and n swapped.
      gb[e] = gemm_x(bw_p, tile.t, tile.n0 + e % GT, k0 + e / GT);
    }
    workgroupBarrier();
    gemm_step(&acc, lid);
    workgroupBarrier();
  }
  if (!tile.live) {
    return;
  }
  for (var j = 0u; j < 4u; j++) {
    let n = tile.n0 + 4u * (lid % 8u) + j;
    for (var i = 0u; i < 4u; i++) {
      let o = tile.m0 + 4u * (lid / 8u) + i;
      if (o < bw_p.cout && n < big_n) {
        let wi = (tile.t * bw_p.cout + o) * big_n + n;
        if (ACCUMULATE) {
          bw_dw[wi] += acc[j][i];
        } else {
          bw_dw[wi] = acc[j][i];
        }
      }
    }
  }
}
