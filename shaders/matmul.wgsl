// Batched matrix product with a fused epilogue, for t < T:
//   out[t] = scale * act(op(a[t]) @ op(b[t]) + bias[t])   (out[t] += ... when ACCUMULATE)
// Layout, row-major: a [T, M, K] ([T, K, M] when TRANS_A), b [T, K, N] ([T, N, K] when TRANS_B),
// bias [T, N] (added to every row of out[t]), out [T, M, N]. Workgroups are numbered linearly
// over (t, row tile, column tile), column tile fastest, on a 2D grid (id = wid.x + wid.y * nwg.x).
// Reference: tests/reference/matmul.ts.
//
// Tiling, written for llvmpipe, which runs 8 invocations as one 8-wide SIMD vector: there a
// storage load is a loop over the 8 lanes costing about 50 vector FMAs, and a vec4 load costs
// little more than a one-float load, so the kernels are bound by the number of loads (a texel
// fetch, one vectorised gather, costs less than half: hence TEX below). An invocation of the
// tiled kernels owns RB x CB blocks of 4 x 4 outputs (up to 16 rows x 8 columns) in registers
// and steps K by 4: per step it loads 4 (RB + CB) vec4s, each along whichever dimension is
// contiguous in memory (regrouping them is free in SIMD-of-arrays code), and feeds them to
// 64 RB CB FMAs. A workgroup is 8 invocations side by side along N, so it covers 4 RB rows x
// 32 CB columns.
// Workgroup memory is not used: on llvmpipe it is ordinary memory read with the same per-lane
// loops, so staging tiles through it only adds copies and barriers (the same blocking staged
// through workgroup memory measured 2.3x slower). Rows and columns past the end are computed
// from clamped indices and not stored.
//
// Entry points:
//   tiled         vec4 loads; needs N % 4 == 0, with TRANS_A M % 4 == 0, and K % 4 == 0 unless
//                 TRANS_A and not TRANS_B (then K is never the contiguous dimension). With TEX
//                 (variant "tiled_texture") a and b are read through textures.
//   tiled_scalar  the same blocking with one-float loads, for any sizes.
//   naive         one output per invocation, 8 x 8 per workgroup (kept for the benchmark).
//   workgroup_tiled  32 x 32 tiles staged through workgroup memory (below), for GPUs.
//   workgroup_large  the same with 64 x 64 tiles and 16 x 16 invocations.

struct Params {
  m: u32,
  n: u32,
  k: u32,
  // Row tiles and column tiles per batch entry, and the number of workgroups T * tiles_m * tiles_n.
  tiles_m: u32,
  tiles_n: u32,
  groups: u32,
  scale: f32,
  slope: f32,
  // First batch entry of this dispatch (a kernel run over chunks of T; else 0): the workgroups
  // cover entries task0 .. task0 + groups / (tiles_m tiles_n) - 1.
  task0: u32,
}

override TRANS_A: bool = false;
override TRANS_B: bool = false;
// 0 identity, 1 relu, 2 leaky_relu, 3 tanh, 4 sigmoid; applied after the bias.
override ACT: u32 = 0u;
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;
// Register blocking of the tiled kernels: an invocation owns RB x CB blocks of 4 x 4 outputs
// (RB in 1..4, CB in 1..2); a workgroup is WG invocations side by side along N.
override RB: u32 = 4u;
override CB: u32 = 2u;

const WG: u32 = 8u;

// The tiled kernel reads and writes vec4s; the others read floats. No entry point uses both views
// of a binding.
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(0) var<storage, read> a4: array<vec4f>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(1) var<storage, read> b4: array<vec4f>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read> bias4: array<vec4f>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> out4: array<vec4f>;
@group(0) @binding(4) var<uniform> p: Params;
// The tiled kernel with TEX reads a and b through the layers of the staging texture, which hold
// the vec4s of this dispatch's batch entries (from task0 on), vec4 i at texel (i % 1024,
// i / 1024), copied in before the dispatch (src/gpu/texture.ts): on llvmpipe a texel fetch is
// one vectorised gather, a storage load a loop over the lanes. Without TEX, 1 x 1 textures are
// bound and never read.
@group(0) @binding(5) var a_tex: texture_2d<f32>;
@group(0) @binding(6) var b_tex: texture_2d<f32>;
override TEX: bool = false;

// vec4 i of a layer of the staging texture.
fn texel(tex: texture_2d<f32>, i: u32) -> vec4f {
  return textureLoad(tex, vec2u(i % 1024u, i / 1024u), 0);
}

fn a_vec4(i: u32) -> vec4f {
  if (TEX) {
    return texel(a_tex, i);
  }
  return a4[i];
}

fn b_vec4(i: u32) -> vec4f {
  if (TEX) {
    return texel(b_tex, i);
  }
  return b4[i];
}

fn activate(v: f32) -> f32 {
  switch ACT {
    case 1u: { return max(v, 0.0); }
    case 2u: { return select(v * p.slope, v, v > 0.0); }
    case 3u: {
      // From exp(-2|v|), which cannot overflow, so large |v| gives +-1 rather than NaN.
      let e = exp(-2.0 * abs(v));
      return sign(v) * (1.0 - e) / (1.0 + e);
    }
    case 4u: {
      let e = exp(-abs(v));
      return select(e, 1.0, v >= 0.0) / (1.0 + e);
    }
    default: { return v; }
  }
}

// The value stored for a product `v`, given the bias and the old output (used when enabled).
fn epilogue(v: f32, bias_v: f32, old: f32) -> f32 {
  var r = v;
  if (HAS_BIAS) {
    r += bias_v;
  }
  r = activate(r) * p.scale;
  if (ACCUMULATE) {
    r += old;
  }
  return r;
}

// Where a workgroup works: batch entry, first row and first column of its tile.
struct Tile {
  t: u32,
  row: u32,
  col: u32,
}

fn tile_of(id: u32, rows: u32, cols: u32) -> Tile {
  let tn = id % p.tiles_n;
  let rest = id / p.tiles_n;
  return Tile(rest / p.tiles_m, (rest % p.tiles_m) * rows, tn * cols);
}

// Blocks of 4 x 4: an invocation keeps RB x CB accumulator blocks acc[rb * 2 + cb] with
// acc[.][j][i] = out[r0 + 4 rb + i, c0 + 4 cb + j], and per step of 4 along K multiplies
// A blocks (A[q][i] = op(a)[r + i, k + q]) by B blocks (B[j][q] = op(b)[k + q, c + j]).
// Every index into the arrays below is a constant once the calls are inlined, so they live in
// registers; a loop-indexed access would send them to memory (measured 50x slower).
alias Acc = array<mat4x4f, 8>;

fn block_a4(t: u32, r: u32, k: u32) -> mat4x4f {
  let base = t * p.m * p.k;
  if (TRANS_A) {
    // Here K need not be a multiple of 4: rows of a[t] past K read as zero.
    let s = p.m / 4u;
    let i = base / 4u + min(r / 4u, s - 1u);
    return mat4x4f(row_a4(i, s, k), row_a4(i, s, k + 1u), row_a4(i, s, k + 2u),
                   row_a4(i, s, k + 3u));
  }
  let s = p.k / 4u;
  let i = (base + k) / 4u;
  let last = p.m - 1u;
  return transpose(mat4x4f(a_vec4(i + min(r, last) * s), a_vec4(i + min(r + 1u, last) * s),
                           a_vec4(i + min(r + 2u, last) * s), a_vec4(i + min(r + 3u, last) * s)));
}

// Four floats of row k of a[t] stored transposed ([K, M]; s = M / 4 vec4s per row), zero past K.
fn row_a4(i: u32, s: u32, k: u32) -> vec4f {
  return select(vec4f(0.0), a_vec4(i + min(k, p.k - 1u) * s), k < p.k);
}

fn block_b4(t: u32, k: u32, c: u32) -> mat4x4f {
  let base = t * p.k * p.n;
  if (TRANS_B) {
    let s = p.k / 4u;
    let i = (base + k) / 4u;
    return mat4x4f(b_vec4(i + min(c, p.n - 1u) * s), b_vec4(i + min(c + 1u, p.n - 1u) * s),
                   b_vec4(i + min(c + 2u, p.n - 1u) * s), b_vec4(i + min(c + 3u, p.n - 1u) * s));
  }
  // Rows past K are clamped; the matching A values are zero.
  let s = p.n / 4u;
  let i = base / 4u + min(c / 4u, s - 1u);
  let last = p.k - 1u;
  return transpose(mat4x4f(b_vec4(i + min(k, last) * s), b_vec4(i + min(k + 1u, last) * s),
                           b_vec4(i + min(k + 2u, last) * s), b_vec4(i + min(k + 3u, last) * s)));
}

// op(a)[row, kk] of batch entry t, zero past K, with the row clamped into range (rows past M are
// computed but never stored).
fn load_a(t: u32, row: u32, kk: u32) -> f32 {
  let r = min(row, p.m - 1u);
  let k = min(kk, p.k - 1u);
  let base = t * p.m * p.k;
  var v: f32;
  if (TRANS_A) {
    v = a[base + k * p.m + r];
  } else {
    v = a[base + r * p.k + k];
  }
  return select(0.0, v, kk < p.k);
}

// op(b)[kk, col] of batch entry t, with both indices clamped into range.
fn load_b(t: u32, kk: u32, col: u32) -> f32 {
  let c = min(col, p.n - 1u);
  let k = min(kk, p.k - 1u);
  let base = t * p.k * p.n;
  if (TRANS_B) {
    return b[base + c * p.k + k];
  }
  return b[base + k * p.n + c];
}

fn column_a(t: u32, r: u32, k: u32) -> vec4f {
  return vec4f(load_a(t, r, k), load_a(t, r + 1u, k), load_a(t, r + 2u, k), load_a(t, r + 3u, k));
}

fn column_b(t: u32, k: u32, c: u32) -> vec4f {
  return vec4f(load_b(t, k, c), load_b(t, k + 1u, c), load_b(t, k + 2u, c), load_b(t, k + 3u, c));
}

fn block_a1(t: u32, r: u32, k: u32) -> mat4x4f {
  return mat4x4f(column_a(t, r, k), column_a(t, r, k + 1u), column_a(t, r, k + 2u),
                 column_a(t, r, k + 3u));
}

fn block_b1(t: u32, k: u32, c: u32) -> mat4x4f {
  return mat4x4f(column_b(t, k, c), column_b(t, k, c + 1u), column_b(t, k, c + 2u),
                 column_b(t, k, c + 3u));
}

// c + a @ b as fused multiply-adds, in order of increasing k.
fn mad_column(c: vec4f, a_block: mat4x4f, b: vec4f) -> vec4f {
  return fma(a_block[3], vec4f(b.w), fma(a_block[2], vec4f(b.z),
             fma(a_block[1], vec4f(b.y), fma(a_block[0], vec4f(b.x), c))));
}

fn mad(c: mat4x4f, a_block: mat4x4f, b_block: mat4x4f) -> mat4x4f {
  return mat4x4f(mad_column(c[0], a_block, b_block[0]), mad_column(c[1], a_block, b_block[1]),
                 mad_column(c[2], a_block, b_block[2]), mad_column(c[3], a_block, b_block[3]));
}

// acc[rb, .] += a @ [b0 b1].
fn mma(acc: ptr<function, Acc>, rb: u32, a_block: mat4x4f, b0: mat4x4f, b1: mat4x4f) {
  if (rb < RB) {
    (*acc)[2u * rb] = mad((*acc)[2u * rb], a_block, b0);
    if (CB > 1u) {
      (*acc)[2u * rb + 1u] = mad((*acc)[2u * rb + 1u], a_block, b1);
    }
  }
}

// Where an invocation of a tiled kernel works: batch entry, first row, first column.
fn origin(wid: vec3u, nwg: vec3u, lid: u32) -> Tile {
  let tile = tile_of(wid.x + wid.y * nwg.x, RB * 4u, WG * CB * 4u);
  return Tile(tile.t, tile.row, tile.col + lid * CB * 4u);
}

fn store4(t: u32, row: u32, col: u32, v: vec4f) {
  let n4 = p.n / 4u;
  let o = (t * p.m + row) * n4 + col / 4u;
  var bias_v = vec4f(0.0);
  if (HAS_BIAS) {
    bias_v = bias4[t * n4 + col / 4u];
  }
  var old = vec4f(0.0);
  if (ACCUMULATE) {
    old = out4[o];
  }
  out4[o] = vec4f(epilogue(v.x, bias_v.x, old.x), epilogue(v.y, bias_v.y, old.y),
                  epilogue(v.z, bias_v.z, old.z), epilogue(v.w, bias_v.w, old.w));
}

// Stores block (rb, cb) of the vec4 kernel.
fn store_block4(o: Tile, rb: u32, cb: u32, block: mat4x4f) {
  let rows = transpose(block);
  let row = o.row + 4u * rb;
  let col = o.col + 4u * cb;
  if (rb < RB && cb < CB && col < p.n) {
    for (var i = 0u; i < 4u; i++) {
      if (row + i < p.m) {
        store4(o.t, row + i, col, rows[i]);
      }
    }
  }
}

@compute @workgroup_size(WG)
fn tiled(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
         @builtin(local_invocation_index) lid: u32) {
  if (wid.x + wid.y * nwg.x >= p.groups) {
    return;
  }
  let local = origin(wid, nwg, lid);
  let o = Tile(p.task0 + local.t, local.row, local.col);
  // The batch entry of the loads: counted from task0 in the textures.
  let t = select(o.t, local.t, TEX);
  var acc: Acc;
  for (var k = 0u; k < p.k; k += 4u) {
    let b0 = block_b4(t, k, o.col);
    var b1 = b0;
    if (CB > 1u) {
      b1 = block_b4(t, k, o.col + 4u);
    }
    mma(&acc, 0u, block_a4(t, o.row, k), b0, b1);
    if (RB > 1u) {
      mma(&acc, 1u, block_a4(t, o.row + 4u, k), b0, b1);
    }
    if (RB > 2u) {
      mma(&acc, 2u, block_a4(t, o.row + 8u, k), b0, b1);
    }
    if (RB > 3u) {
      mma(&acc, 3u, block_a4(t, o.row + 12u, k), b0, b1);
    }
  }
  store_block4(o, 0u, 0u, acc[0]);
  store_block4(o, 0u, 1u, acc[1]);
  store_block4(o, 1u, 0u, acc[2]);
  store_block4(o, 1u, 1u, acc[3]);
  store_block4(o, 2u, 0u, acc[4]);
  store_block4(o, 2u, 1u, acc[5]);
  store_block4(o, 3u, 0u, acc[6]);
  store_block4(o, 3u, 1u, acc[7]);
}

// Stores one output element of the scalar kernels.
fn store(t: u32, row: u32, col: u32, v: f32) {
  let o = (t * p.m + row) * p.n + col;
  var bias_v = 0.0;
  if (HAS_BIAS) {
    bias_v = bias[t * p.n + col];
  }
  var old = 0.0;
  if (ACCUMULATE) {
    old = out[o];
  }
  out[o] = epilogue(v, bias_v, old);
}

// Stores block (rb, cb) of the scalar kernel.
fn store_block1(o: Tile, rb: u32, cb: u32, block: mat4x4f) {
  let row = o.row + 4u * rb;
  let col = o.col + 4u * cb;
  if (rb < RB && cb < CB) {
    for (var j = 0u; j < 4u; j++) {
      for (var i = 0u; i < 4u; i++) {
        if (row + i < p.m && col + j < p.n) {
          store(o.t, row + i, col + j, block[j][i]);
        }
      }
    }
  }
}

@compute @workgroup_size(WG)
fn tiled_scalar(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  if (wid.x + wid.y * nwg.x >= p.groups) {
    return;
  }
  let o = origin(wid, nwg, lid);
  var acc: Acc;
  for (var k = 0u; k < p.k; k += 4u) {
    let b0 = block_b1(o.t, k, o.col);
    var b1 = b0;
    if (CB > 1u) {
      b1 = block_b1(o.t, k, o.col + 4u);
    }
    mma(&acc, 0u, block_a1(o.t, o.row, k), b0, b1);
    if (RB > 1u) {
      mma(&acc, 1u, block_a1(o.t, o.row + 4u, k), b0, b1);
    }
    if (RB > 2u) {
      mma(&acc, 2u, block_a1(o.t, o.row + 8u, k), b0, b1);
    }
    if (RB > 3u) {
      mma(&acc, 3u, block_a1(o.t, o.row + 12u, k), b0, b1);
    }
  }
  store_block1(o, 0u, 0u, acc[0]);
  store_block1(o, 0u, 1u, acc[1]);
  store_block1(o, 1u, 0u, acc[2]);
  store_block1(o, 1u, 1u, acc[3]);
  store_block1(o, 2u, 0u, acc[4]);
  store_block1(o, 2u, 1u, acc[5]);
  store_block1(o, 3u, 0u, acc[6]);
  store_block1(o, 3u, 1u, acc[7]);
}

@compute @workgroup_size(8, 8)
fn naive(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
         @builtin(local_invocation_id) lid: vec3u) {
  let id = wid.x + wid.y * nwg.x;
  if (id >= p.groups) {
    return;
  }
  let tile = tile_of(id, 8u, 8u);
  let row = tile.row + lid.y;
  let col = tile.col + lid.x;
  if (row >= p.m || col >= p.n) {
    return;
  }
  var sum = 0.0;
  for (var k = 0u; k < p.k; k++) {
    sum = fma(load_a(tile.t, row, k), load_b(tile.t, k, col), sum);
  }
  store(tile.t, row, col, sum);
}

// GPU-oriented versions: a workgroup of S x S invocations computes a 4 S x 4 S tile of out[t]
// (S = 8: workgroup_tiled, 32 x 32; S = 16: workgroup_large, 64 x 64), stepping K by 16; each
// step stages the 4 S x 16 slice of op(a) and the 16 x 4 S slice of op(b) in workgroup memory
// (every value loaded once from storage, then read by S invocations), and an invocation
// accumulates 4 x 4 outputs (rows 4 ty .. 4 ty + 3, columns 4 tx .. 4 tx + 3) in order of
// increasing k. Any sizes and transpositions (loads clamp and zero past the end, as in the
// kernels above); meant for GPUs with fast workgroup memory, where they are the tuner's choice.
const GK: u32 = 16u;

// tile_a[kk * 4 S + m] = op(a)[row + m, k0 + kk]; tile_b[kk * 4 S + n] = op(b)[k0 + kk, col + n].
var<workgroup> tile_a: array<f32, 1024>;
var<workgroup> tile_b: array<f32, 1024>;

// The body of both entry points; `side` (S) is a constant at each call.
fn staged_tiles(wid: vec3u, nwg: vec3u, lid: u32, side: u32) {
  let gt = 4u * side;
  let threads = side * side;
  // The whole workgroup takes the same branch: no barrier below is skipped by only some.
  let id = wid.x + wid.y * nwg.x;
  let live = id < p.groups;
  let tile = tile_of(min(id, p.groups - 1u), gt, gt);
  let tx = lid % side;
  let ty = lid / side;
  var acc = mat4x4f();
  for (var k0 = 0u; k0 < p.k; k0 += GK) {
    for (var e = lid; e < gt * GK; e += threads) {
      tile_a[(e % GK) * gt + e / GK] = load_a(tile.t, tile.row + e / GK, k0 + e % GK);
      tile_b[e] = select(0.0, load_b(tile.t, k0 + e / gt, tile.col + e % gt), k0 + e / gt < p.k);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < GK; kk++) {
      let a0 = kk * gt + 4u * ty;
      let b0 = kk * gt + 4u * tx;
      let av = vec4f(tile_a[a0], tile_a[a0 + 1u], tile_a[a0 + 2u], tile_a[a0 + 3u]);
      let bv = vec4f(tile_b[b0], tile_b[b0 + 1u], tile_b[b0 + 2u], tile_b[b0 + 3u]);
      acc = outer(acc, av, bv);
    }
    workgroupBarrier();
  }
  if (live) {
    store_block(tile.t, tile.row + 4u * ty, tile.col + 4u * tx, acc);
  }
}

@compute @workgroup_size(8, 8)
fn workgroup_tiled(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_index) lid: u32) {
  staged_tiles(wid, nwg, lid, 8u);
}

@compute @workgroup_size(16, 16)
fn workgroup_large(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_index) lid: u32) {
  staged_tiles(wid, nwg, lid, 16u);
}

// workgroup_128: 16 x 16 invocations compute a 128 x 128 tile of out[t], each invocation 8 x 8
// outputs in four 4 x 4 blocks (rows 4 ty + 64 i .. + 3, columns 4 tx + 64 j .. + 3, i, j in
// {0, 1}), so that its workgroup-memory reads are vec4s shared by 16 invocations and each step of
// k feeds 64 FMAs from 4 such reads. K steps by 8; the next step's slices are loaded from storage
// into registers before the current step's products (their latency hidden behind the FMAs), then
// stored to workgroup memory. Storage loads run along whichever dimension of op(a) and op(b) is
// contiguous in memory, so neighbouring invocations read neighbouring floats. Any sizes and
// transpositions; meant for large products on GPUs.
const BT: u32 = 128u;
const BK: u32 = 8u;

// big_a[kk * 32 + m / 4][m % 4] = op(a)[row + m, k0 + kk]; big_b likewise with
// op(b)[k0 + kk, col + n].
var<workgroup> big_a: array<vec4f, 256>;
var<workgroup> big_b: array<vec4f, 256>;

// The four values of op(a) and of op(b) that invocation `lid` stages for the step at k0, with
// their places in the tiles (element e = lid + 256 r of the 128 x 8 and 8 x 128 slices).
struct Slices {
  a: vec4f,
  b: vec4f,
}

fn slice_a_place(lid: u32, r: u32) -> vec2u {
  let e = lid + 256u * r;
  // (row m, k): k fastest when a is stored [M, K], m fastest when it is stored [K, M].
  if (TRANS_A) {
    return vec2u(e % BT, e / BT);
  }
  return vec2u(e / BK, e % BK);
}

fn slice_b_place(lid: u32, r: u32) -> vec2u {
  let e = lid + 256u * r;
  // (k, column n): n fastest when b is stored [K, N], k fastest when it is stored [N, K].
  if (TRANS_B) {
    return vec2u(e % BK, e / BK);
  }
  return vec2u(e / BT, e % BT);
}

fn load_slices(tile: Tile, lid: u32, k0: u32) -> Slices {
  var s: Slices;
  for (var r = 0u; r < 4u; r++) {
    let pa = slice_a_place(lid, r);
    s.a[r] = load_a(tile.t, tile.row + pa.x, k0 + pa.y);
    let pb = slice_b_place(lid, r);
    s.b[r] = select(0.0, load_b(tile.t, k0 + pb.x, tile.col + pb.y), k0 + pb.x < p.k);
  }
  return s;
}

fn store_slices(lid: u32, s: Slices) {
  for (var r = 0u; r < 4u; r++) {
    let pa = slice_a_place(lid, r);
    big_a[pa.y * 32u + pa.x / 4u][pa.x % 4u] = s.a[r];
    let pb = slice_b_place(lid, r);
    big_b[pb.x * 32u + pb.y / 4u][pb.y % 4u] = s.b[r];
  }
}

// c + a (column) times b (row): c[j] += a * b[j]; used by the workgroup-memory kernels.
fn outer(c: mat4x4f, a: vec4f, b: vec4f) -> mat4x4f {
  return mat4x4f(fma(a, vec4f(b.x), c[0]), fma(a, vec4f(b.y), c[1]), fma(a, vec4f(b.z), c[2]),
                 fma(a, vec4f(b.w), c[3]));
}

// Stores the 4 x 4 block c (c[j][i] = out[row + i, col + j]) of the workgroup-memory kernels,
// the parts past M or N left out.
fn store_block(t: u32, row: u32, col: u32, c: mat4x4f) {
  for (var j = 0u; j < 4u; j++) {
    for (var i = 0u; i < 4u; i++) {
      if (row + i < p.m && col + j < p.n) {
        store(t, row + i, col + j, c[j][i]);
      }
    }
  }
}

@compute @workgroup_size(16, 16)
fn workgroup_128(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_index) lid: u32) {
  // The whole workgroup takes the same branch: no barrier below is skipped by only some.
  let id = wid.x + wid.y * nwg.x;
  let live = id < p.groups;
  let tile = tile_of(min(id, p.groups - 1u), BT, BT);
  let tx = lid % 16u;
  let ty = lid / 16u;
  var c00 = mat4x4f();
  var c01 = mat4x4f();
  var c10 = mat4x4f();
  var c11 = mat4x4f();
  var next = load_slices(tile, lid, 0u);
  for (var k0 = 0u; k0 < p.k; k0 += BK) {
    store_slices(lid, next);
    workgroupBarrier();
    if (k0 + BK < p.k) {
      next = load_slices(tile, lid, k0 + BK);
    }
    for (var kk = 0u; kk < BK; kk++) {
      let a0 = big_a[kk * 32u + ty];
      let a1 = big_a[kk * 32u + 16u + ty];
      let b0 = big_b[kk * 32u + tx];
      let b1 = big_b[kk * 32u + 16u + tx];
      c00 = outer(c00, a0, b0);
      c01 = outer(c01, a0, b1);
      c10 = outer(c10, a1, b0);
      c11 = outer(c11, a1, b1);
    }
    workgroupBarrier();
  }
  if (live) {
    let row = tile.row + 4u * ty;
    let col = tile.col + 4u * tx;
    store_block(tile.t, row, col, c00);
    store_block(tile.t, row, col + 64u, c01);
    store_block(tile.t, row + 64u, col, c10);
    store_block(tile.t, row + 64u, col + 64u, c11);
  }
}
