// Deterministic sums: out (+)= scale * (sum of x over some axes), and the sum of squares of a whole
// tensor. No atomics: every sum runs in a fixed order (a serial loop per invocation, then a fixed
// tree in workgroup memory), so a run gives the same bits every time.
// Reference: tests/reference/reduce.ts.
//
// Layout of reduce_*: x is row-major; the host merges adjacent axes of the same kind so that x is
// seen as up to three kept runs K0, K1, K2 and three reduced runs R0, R1, R2 (missing runs have
// size 1), each with the stride of its innermost axis. Output o (row-major over K0, K1, K2) sums
// the R0 * R1 * R2 elements at base(o) + r0 * rs0 + r1 * rs1 + r2 * rs2, in row-major order of
// (r0, r1, r2).
// Tiling: reduce_rows gives one output to each invocation (256 per workgroup), for many outputs of
// short sums; reduce_tree gives one output to each workgroup: its 64 invocations take every 64th
// reduced element, then a tree adds their 64 partial sums. Workgroups form a 2D grid. The tree
// kernels use 64 invocations rather than 256 because on a software adapter (llvmpipe) every
// invocation pays for every barrier, which made 256-wide trees several times slower.
//
// Sum of squares: sum_squares_partial gives workgroup g the elements [g * chunk, (g + 1) * chunk)
// and writes one partial sum per workgroup into a scratch tensor; sum_squares_final (one
// workgroup) adds the partials the same way into out[0].

override ACCUMULATE: bool = false;

struct ReduceParams {
  outputs: u32,
  count: u32,
  scale: f32,
  // The outermost kept run's size K0 is implied by outputs / (K1 * K2).
  k1: u32,
  k2: u32,
  ks0: u32,
  ks1: u32,
  ks2: u32,
  r0: u32,
  r1: u32,
  r2: u32,
  rs0: u32,
  rs1: u32,
  rs2: u32,
}

struct SquaresParams {
  // Elements of the input (x for the partial pass, the partials for the final one).
  n: u32,
  // Elements per workgroup of the partial pass.
  chunk: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> p: ReduceParams;
@group(0) @binding(2) var<uniform> q: SquaresParams;

// Invocations per workgroup of the tree kernels.
const TREE = 64u;

var<workgroup> partial: array<f32, TREE>;

// Offset in x of the first reduced element of output o.
fn base(o: u32) -> u32 {
  let c2 = o % p.k2;
  let rest = o / p.k2;
  return (rest / p.k1) * p.ks0 + (rest % p.k1) * p.ks1 + c2 * p.ks2;
}

// Coordinates in (R0, R1, R2) of reduced element j (row-major).
fn coords(j: u32) -> vec3u {
  let rest = j / p.r2;
  return vec3u(rest / p.r1, rest % p.r1, j % p.r2);
}

fn store(o: u32, sum: f32) {
  var v = p.scale * sum;
  if (ACCUMULATE) {
    v += dst[o];
  }
  dst[o] = v;
}

// Adds partial[0..TREE) into partial[0] in a fixed tree; the whole workgroup must call it.
fn tree(lid: u32) {
  for (var width = TREE / 2u; width > 0u; width >>= 1u) {
    workgroupBarrier();
    if (lid < width) {
      partial[lid] += partial[lid + width];
    }
  }
  workgroupBarrier();
}

@compute @workgroup_size(256)
fn reduce_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let o = (wid.x + wid.y * nwg.x) * 256u + lid;
  if (o >= p.outputs) {
    return;
  }
  let b = base(o);
  var sum = 0.0;
  for (var i0 = 0u; i0 < p.r0; i0++) {
    for (var i1 = 0u; i1 < p.r1; i1++) {
      let row = b + i0 * p.rs0 + i1 * p.rs1;
      for (var i2 = 0u; i2 < p.r2; i2++) {
        sum += src[row + i2 * p.rs2];
      }
    }
  }
  store(o, sum);
}

@compute @workgroup_size(TREE)
fn reduce_tree(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  // Uniform control flow: the whole workgroup shares o, so it returns (or not) together.
  let o = wid.x + wid.y * nwg.x;
  if (o >= p.outputs) {
    return;
  }
  let b = base(o);
  // This invocation reads reduced elements lid, lid + TREE, ...: it keeps their coordinates c and
  // adds the coordinates of the step TREE with one carry per run, so the loop has no division.
  var c = coords(lid);
  let step = coords(TREE);
  var sum = 0.0;
  for (var j = lid; j < p.count; j += TREE) {
    sum += src[b + c.x * p.rs0 + c.y * p.rs1 + c.z * p.rs2];
    c += step;
    if (c.z >= p.r2) {
      c.z -= p.r2;
      c.y += 1u;
    }
    if (c.y >= p.r1) {
      c.y -= p.r1;
      c.x += 1u;
    }
  }
  partial[lid] = sum;
  tree(lid);
  if (lid == 0u) {
    store(o, partial[0]);
  }
}

@compute @workgroup_size(TREE)
fn sum_squares_partial(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                       @builtin(local_invocation_index) lid: u32) {
  let g = wid.x + wid.y * nwg.x;
  let begin = g * q.chunk;
  let end = min(begin + q.chunk, q.n);
  var sum = 0.0;
  for (var i = begin + lid; i < end; i += TREE) {
    let v = src[i];
    sum += v * v;
  }
  partial[lid] = sum;
  tree(lid);
  if (lid == 0u) {
    dst[g] = partial[0];
  }
}

@compute @workgroup_size(TREE)
fn sum_squares_final(@builtin(local_invocation_index) lid: u32) {
  var sum = 0.0;
  for (var i = lid; i < q.n; i += TREE) {
    sum += src[i];
  }
  partial[lid] = sum;
  tree(lid);
  if (lid == 0u) {
    dst[0] = partial[0];
  }
}
