// CUDA group/instance normalisation (+ optional FiLM and SiLU), forward and backward.
// Semantics and argument order: csrc/common/norm_args.h; CPU twin: csrc/cpu/kernels/group_norm.cpp.
//
// Three launches per direction, all deterministic (fixed reduction order, no atomics):
//   1. stats:    per (n, chunk, channel) partial statistics into the scratch `workspace`
//                  forward:  Stat (count, mean = base + mu, M2): each thread takes the values of one
//                            loop iteration from registers in two passes (block mean, then squared
//                            deviations around it) and merges blocks with Chan's formula, then the
//                            threads' Stats are merged the same way (warp shuffles / shared memory).
//                            No fixed shift: an outlier anywhere (the first pixel included) costs
//                            nothing, and base (a block mean) keeps mu small for large means.
//                  backward: sum(dz), sum(dz * xhat), dz recomputed from x
//   2. finalize: one block per (n, group): merges the chunks' Stats with Chan's formula -> mean/rstd
//                and the group's (base, mu) (forward); sum_dz/sum_dz_xhat and the group means
//                of gamma*dz and gamma*dz*xhat (backward)
//   3. apply:    y = act(z) (forward, x - mean as (x - base) - mu: exact where the rounded mean is not)
//                / dx (backward), elementwise with per-channel coefficients
// x is read twice per direction (the second read usually hits L2), dy twice, y/dx written once.
//
// Channels-first [N, C, HW]: a warp owns a "piece", a contiguous span of one channel row; rows longer
//   than needed to fill the GPU are split into chunks. 16-byte loads when HW allows.
// Channels-last [N, HW, C]: a block of tx * ty threads owns (n, channel tile, chunk of rows); thread
//   (tx, ty) keeps the same 16-byte column of channels for every row it visits (rows ty, ty + ty_dim,
//   ...), so a warp reads consecutive memory; partials are reduced over ty in shared memory.
#include <algorithm>
#include <climits>

#include "common/norm_args.h"
#include "cuda/common.cuh"

namespace gk {
namespace {
using namespace cu;

enum Mode : int { kFwdStats = 0, kFwdApply = 1, kBwdStats = 2, kBwdApply = 3 };
constexpr bool is_stats(int m) { return m == kFwdStats || m == kBwdStats; }
constexpr bool is_bwd(int m) { return m >= kBwdStats; }
// Values per (n, chunk, channel) partial: forward (base, mu, M2), backward (sum dz, sum dz xhat).
constexpr int part_width(bool bwd) { return bwd ? 2 : 3; }

constexpr int kThreads = 256;           // threads per block of the streaming kernels
constexpr int kWarps = kThreads / 32;
constexpr int kUnroll = 4;              // independent vector loads in flight per thread (forward)
// The backward loads two tensors per element and keeps more per-channel constants: half the unroll
// keeps it at or under 128 registers (two blocks per SM) with the same bytes in flight.
constexpr int unroll_of(int mode) { return is_bwd(mode) ? kUnroll / 2 : kUnroll; }

template <class T>
struct Args {
  using A = acc_t<T>;
  const T* x;
  const T* dy;   // backward only
  T* out;        // y (forward) or dx (backward)
  const A *w, *b, *scale, *shift;  // null = absent
  A *mean, *rstd;                  // [N, G]: written by the forward's finalize, read otherwise
  A* part;                         // [N, chunks, C, part_width] partial statistics
  A* piv;                          // [N, G, 2] forward: the group mean as base + mu
  A* gm;                           // [N, G, 2] backward: mean_g(gamma dz), mean_g(gamma dz xhat)
  A *sum_dz, *sum_dzx;             // [N, C] backward outputs
  std::int64_t N, C, HW, G, Cg;
  std::int64_t chunks;  // chunks per channel row (channels-first) or per sample's rows (channels-last)
  std::int64_t len;     // elements per chunk (channels-first) or rows per chunk (channels-last)
  int tiles, tx, ty;    // channels-last: channel tiles, block shape (tx vector columns x ty rows)
  A eps;
  bool silu, one_plus_scale;
};

// Per-channel constants of one pass (meaning depends on the mode; kFwdStats needs none):
//   kFwdApply: z = ((x - m) - mu) * a + bb with m + mu the mean.
//   kBwdStats: z = (x - m) * a + bb, c1 = rstd.   kBwdApply: z as kBwdStats, dx = c1 * dz - c2 - (x - m) * c3.
template <class A>
struct Coef {
  A m, mu, a, bb, c1, c2, c3;
};

// Count, mean = base + mu, and M2 (sum of squared deviations from the mean). base is a block mean of
// the data, so mu is small (and exact) even where the mean is large.
template <class A>
struct Stat {
  A n, base, mu, m2;
};

// Chan et al.'s merge; keeps a's base (a fixed order of merges keeps the result deterministic).
template <class A>
__device__ __forceinline__ Stat<A> merge_stat(const Stat<A>& a, const Stat<A>& b) {
  if (b.n == A(0)) return a;
  if (a.n == A(0)) return b;
  const A n = a.n + b.n, fb = b.n / n, d = (b.base - a.base) + (b.mu - a.mu);
  return {n, a.base, a.mu + d * fb, a.m2 + b.m2 + d * d * a.n * fb};
}

// Two-pass statistics of the first cnt values of v (one thread's registers): the block mean mb, then
// the deviations around it. Their sum corrects mb's rounding (mu; it matters for large means) and
// M2 = sum (v - mb)^2 - cnt mu^2.
template <class A, int M>
__device__ __forceinline__ Stat<A> block_stat(const A (&v)[M], int cnt) {
  if (cnt <= 0) return {A(0), A(0), A(0), A(0)};
  A s = A(0);
#pragma unroll
  for (int i = 0; i < M; ++i)
    if (i < cnt) s += v[i];
  const A mb = s / A(cnt);
  A s1 = A(0), q = A(0);
#pragma unroll
  for (int i = 0; i < M; ++i) {
    if (i < cnt) {
      const A d = v[i] - mb;
      s1 += d;
      q += d * d;
    }
  }
  const A mu = s1 / A(cnt), m2 = q - s1 * mu;
  return {A(cnt), mb, mu, m2 > A(0) ? m2 : A(0)};
}

// Merge over the 32 lanes of a warp; every lane ends with the same Stat (the lower lane of each pair
// goes first on both sides).
template <class A>
__device__ __forceinline__ Stat<A> warp_merge(Stat<A> s) {
  const int lane = threadIdx.x & 31;
  for (int o = 16; o > 0; o >>= 1) {
    const Stat<A> t{__shfl_xor_sync(0xffffffffu, s.n, o), __shfl_xor_sync(0xffffffffu, s.base, o),
                    __shfl_xor_sync(0xffffffffu, s.mu, o), __shfl_xor_sync(0xffffffffu, s.m2, o)};
    s = (lane & o) ? merge_stat(t, s) : merge_stat(s, t);
  }
  return s;
}

// Elements (channels-first) or rows (channels-last) of chunk k.
__device__ __forceinline__ std::int64_t chunk_count(std::int64_t HW, std::int64_t len, std::int64_t k) {
  return (HW - k * len < len) ? HW - k * len : len;
}

// One (n, chunk, channel) partial: forward (base, mu, M2), backward (sum dz, sum dz xhat).
template <class A>
__device__ __forceinline__ void put_stat(A* q, const Stat<A>& s) {
  q[0] = s.base;
  q[1] = s.mu;
  q[2] = s.m2;
}
template <class A>
__device__ __forceinline__ void put_sums(A* q, A s1, A s2) {
  q[0] = s1;
  q[1] = s2;
}

// Channels-last: merges the W values per thread in buf (thread t's at buf + t * W) over ty with a tree
// (any ty_dim: step s merges row ty + s into row ty for ty a multiple of 2s); returns this thread's
// values, the totals of its column where ty == 0. Every thread of the block calls it.
template <int W, class S, class T, class F>
__device__ __forceinline__ const S* merge_over_ty(S* buf, const Args<T>& p, int ty, F merge) {
  S* mine = buf + threadIdx.x * W;
  __syncthreads();
  for (int s = 1; s < p.ty; s <<= 1) {
    if ((ty & (2 * s - 1)) == 0 && ty + s < p.ty) {
      const S* other = buf + (threadIdx.x + s * p.tx) * W;
#pragma unroll
      for (int e = 0; e < W; ++e) mine[e] = merge(mine[e], other[e]);
    }
    __syncthreads();
  }
  return mine;
}

template <class T>
__device__ __forceinline__ acc_t<T> film_scale(const Args<T>& p, std::int64_t nc) {
  using A = acc_t<T>;
  if (!p.scale) return A(1);
  return p.one_plus_scale ? A(1) + p.scale[nc] : p.scale[nc];
}

template <class T, int MODE>
__device__ __forceinline__ Coef<acc_t<T>> make_coef(const Args<T>& p, std::int64_t n, std::int64_t c) {
  using A = acc_t<T>;
  Coef<A> k{A(0), A(0), A(0), A(0), A(0), A(0), A(0)};
  if constexpr (MODE != kFwdStats) {
    const std::int64_t ng = n * p.G + c / p.Cg, nc = n * p.C + c;
    const A r = p.rstd[ng], s = film_scale(p, nc);
    const A w = p.w ? p.w[c] : A(1), b = p.b ? p.b[c] : A(0);
    const A gamma = w * s;
    if constexpr (MODE == kFwdApply) {
      k.m = p.piv[2 * ng];
      k.mu = p.piv[2 * ng + 1];
    } else {
      k.m = p.mean[ng];
    }
    k.a = r * gamma;
    k.bb = b * s + (p.shift ? p.shift[nc] : A(0));
    if constexpr (MODE == kBwdStats) k.c1 = r;
    if constexpr (MODE == kBwdApply) {
      k.c1 = r * gamma;
      k.c2 = r * p.gm[2 * ng];
      k.c3 = r * r * p.gm[2 * ng + 1];
    }
  }
  return k;
}

template <class T, class A>
__device__ __forceinline__ A act(A z, bool silu) {
  return silu ? z / (A(1) + exp_t<T>(-z)) : z;
}

// d act / d z: s * (1 + z * (1 - s)) with s = sigmoid(z).
template <class T, class A>
__device__ __forceinline__ A act_grad(A z, bool silu) {
  if (!silu) return A(1);
  const A s = A(1) / (A(1) + exp_t<T>(-z));
  return s * (A(1) + z * (A(1) - s));
}

// One element (not kFwdStats): accumulates (s1, s2) in kBwdStats, returns the output value in the
// apply modes.
template <class T, int MODE, class A>
__device__ __forceinline__ A elem(const Coef<A>& k, A xv, A dyv, A& s1, A& s2, bool silu) {
  if constexpr (MODE == kFwdApply) {
    return act<T>(((xv - k.m) - k.mu) * k.a + k.bb, silu);
  } else {
    const A u = xv - k.m;
    const A dz = dyv * act_grad<T>(u * k.a + k.bb, silu);
    if constexpr (MODE == kBwdStats) {
      s1 += dz;
      s2 += dz * u;  // times rstd once per channel, at the end
      return A(0);
    } else {
      return k.c1 * dz - k.c2 - u * k.c3;
    }
  }
}

// Partial statistics of channel c in chunk k of sample n (part_width(BWD) values).
template <bool BWD, class T>
__device__ __forceinline__ acc_t<T>* part_at(const Args<T>& p, std::int64_t n, std::int64_t k, std::int64_t c) {
  return p.part + ((n * p.chunks + k) * p.C + c) * part_width(BWD);
}

// ---------------------------------------------------------------- channels-first
// Warp w of block b owns piece b * kWarps + w = (row = n * C + c, chunk k): elements
// [k * len, min(HW, (k + 1) * len)) of that row. len is a multiple of 32 * V; V > 1 needs HW % V == 0.
template <class T, int V, int MODE>
__global__ void __launch_bounds__(kThreads, 2) cf_kernel(const Args<T> p) {
  using A = acc_t<T>;
  const int lane = threadIdx.x & 31;
  const std::int64_t piece = std::int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (piece >= p.N * p.C * p.chunks) return;  // warp-uniform
  const std::int64_t row = piece / p.chunks, k = piece - row * p.chunks;
  const std::int64_t n = row / p.C, c = row - n * p.C;
  const std::int64_t beg = k * p.len;
  const std::int64_t cnt = chunk_count(p.HW, p.len, k);
  const std::int64_t base = row * p.HW + beg;
  const std::int64_t nvec = cnt / V;
  const Coef<A> kc = make_coef<T, MODE>(p, n, c);
  constexpr int kU = unroll_of(MODE);
  A s1 = A(0), s2 = A(0);
  Stat<A> st{A(0), A(0), A(0), A(0)};
  for (std::int64_t j0 = lane; j0 < nvec; j0 += 32 * kU) {
    Vec<T, V> xv[kU], dv[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const std::int64_t j = j0 + 32 * u;
      if (j < nvec) {
        xv[u] = load_vec<T, V>(p.x + base + j * V);
        if constexpr (is_bwd(MODE)) dv[u] = load_vec<T, V>(p.dy + base + j * V);
      }
    }
    if constexpr (MODE == kFwdStats) {  // this iteration's vectors are a block of the chunk
      A v[kU * V];
      int nv = 0;  // valid vectors: a prefix of u
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const bool ok = j0 + 32 * u < nvec;
        nv += ok;
#pragma unroll
        for (int e = 0; e < V; ++e) v[u * V + e] = ok ? to_acc(xv[u].v[e]) : A(0);
      }
      st = merge_stat(st, block_stat(v, nv * V));
    } else {
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const std::int64_t j = j0 + 32 * u;
        if (j < nvec) {
          Vec<T, V> o;
#pragma unroll
          for (int e = 0; e < V; ++e) {
            A dyv = A(0);
            if constexpr (is_bwd(MODE)) dyv = to_acc(dv[u].v[e]);
            const A r = elem<T, MODE>(kc, to_acc(xv[u].v[e]), dyv, s1, s2, p.silu);
            if constexpr (!is_stats(MODE)) o.v[e] = from_acc<T>(r);
          }
          if constexpr (!is_stats(MODE)) store_vec<T, V>(p.out + base + j * V, o);
        }
      }
    }
  }
  if constexpr (MODE == kFwdStats) {
    const Stat<A> t = warp_merge(st);
    if (lane == 0) put_stat(part_at<false>(p, n, k, c), t);
  } else if constexpr (MODE == kBwdStats) {
    const A t1 = group_sum(s1), t2 = group_sum(s2) * kc.c1;
    if (lane == 0) put_sums(part_at<true>(p, n, k, c), t1, t2);
  }
}

// ---------------------------------------------------------------- channels-last
// Block b = (n, tile, chunk k), b = (n * tiles + tile) * chunks + k; blockDim.x = tx * ty.
// Thread (tx, ty) owns channels [c0, c0 + V), c0 = (tile * tx_dim + tx) * V, and rows
// r0 + ty, r0 + ty + ty_dim, ... < r1 of the chunk [r0, r1) = [k * len, min(HW, (k + 1) * len)).
// The threads' partials are then merged over ty in shared memory.
template <class T, int V, int MODE>
__global__ void __launch_bounds__(kThreads, 2) cl_kernel(const Args<T> p) {
  using A = acc_t<T>;
  std::int64_t b = blockIdx.x;
  const std::int64_t k = b % p.chunks;
  b /= p.chunks;
  const std::int64_t tile = b % p.tiles, n = b / p.tiles;
  const int tx = int(threadIdx.x) % p.tx, ty = int(threadIdx.x) / p.tx;
  const std::int64_t cv = tile * p.tx + tx;
  const bool valid = cv < p.C / V;
  const std::int64_t c0 = cv * V;
  const std::int64_t r0 = k * p.len, r1 = (p.HW - r0 < p.len) ? p.HW : r0 + p.len;

  Coef<A> kc[V];
  A s1[V], s2[V];
  Stat<A> st[V];
#pragma unroll
  for (int e = 0; e < V; ++e) {
    s1[e] = s2[e] = A(0);
    st[e] = Stat<A>{A(0), A(0), A(0), A(0)};
    kc[e] = valid ? make_coef<T, MODE>(p, n, c0 + e) : Coef<A>{A(0), A(0), A(0), A(0), A(0), A(0), A(0)};
  }
  if (valid) {
    const std::int64_t off0 = n * p.HW * p.C + c0;
    constexpr int kU = unroll_of(MODE);
    for (std::int64_t r = r0 + ty; r < r1; r += std::int64_t(p.ty) * kU) {
      Vec<T, V> xv[kU], dv[kU];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const std::int64_t rr = r + std::int64_t(p.ty) * u;
        if (rr < r1) {
          xv[u] = load_vec<T, V>(p.x + off0 + rr * p.C);
          if constexpr (is_bwd(MODE)) dv[u] = load_vec<T, V>(p.dy + off0 + rr * p.C);
        }
      }
      if constexpr (MODE == kFwdStats) {  // this iteration's rows are a block of each channel
        int nr = 0;  // valid rows: a prefix of u
#pragma unroll
        for (int u = 0; u < kU; ++u) nr += (r + std::int64_t(p.ty) * u < r1);
#pragma unroll
        for (int e = 0; e < V; ++e) {
          A v[kU];
#pragma unroll
          for (int u = 0; u < kU; ++u) v[u] = u < nr ? to_acc(xv[u].v[e]) : A(0);
          st[e] = merge_stat(st[e], block_stat(v, nr));
        }
      } else {
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          const std::int64_t rr = r + std::int64_t(p.ty) * u;
          if (rr < r1) {
            Vec<T, V> o;
#pragma unroll
            for (int e = 0; e < V; ++e) {
              A dyv = A(0);
              if constexpr (is_bwd(MODE)) dyv = to_acc(dv[u].v[e]);
              const A res = elem<T, MODE>(kc[e], to_acc(xv[u].v[e]), dyv, s1[e], s2[e], p.silu);
              if constexpr (!is_stats(MODE)) o.v[e] = from_acc<T>(res);
            }
            if constexpr (!is_stats(MODE)) store_vec<T, V>(p.out + off0 + rr * p.C, o);
          }
        }
      }
    }
  }
  if constexpr (MODE == kFwdStats) {
    __shared__ Stat<A> ss[kThreads * V];
#pragma unroll
    for (int e = 0; e < V; ++e) ss[threadIdx.x * V + e] = st[e];
    const Stat<A>* t = merge_over_ty<V>(ss, p, ty, [](const Stat<A>& x, const Stat<A>& y) { return merge_stat(x, y); });
    if (ty == 0 && valid) {
      A* q = part_at<false>(p, n, k, c0);
#pragma unroll
      for (int e = 0; e < V; ++e) put_stat(q + e * part_width(false), t[e]);
    }
  } else if constexpr (MODE == kBwdStats) {
    __shared__ A sm[kThreads * V * 2];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      sm[threadIdx.x * 2 * V + 2 * e] = s1[e];
      sm[threadIdx.x * 2 * V + 2 * e + 1] = s2[e];
    }
    const A* t = merge_over_ty<2 * V>(sm, p, ty, [](A x, A y) { return x + y; });
    if (ty == 0 && valid) {
      A* q = part_at<true>(p, n, k, c0);
#pragma unroll
      for (int e = 0; e < V; ++e) put_sums(q + e * part_width(true), t[2 * e], t[2 * e + 1] * kc[e].c1);
    }
  }
}

// ---------------------------------------------------------------- finalize: one block per (n, g)
// Forward: each thread merges its (channel, chunk) Stats, then a shared-memory tree merges the threads.
// Backward: `sw` lanes (a power of two <= 32) add up the chunks of one channel; blockDim.x / sw channels
// at a time. blockDim.x is a power of two in [32, 256].
template <class T>
__global__ void __launch_bounds__(kThreads) fwd_finalize_kernel(const Args<T> p) {
  using A = acc_t<T>;
  __shared__ Stat<A> ss[kThreads];
  const std::int64_t ng = blockIdx.x, n = ng / p.G, g = ng - n * p.G;
  const std::int64_t pieces = p.Cg * p.chunks;  // (channel ci, chunk kk) = (i / chunks, i % chunks)
  Stat<A> st{A(0), A(0), A(0), A(0)};
  for (std::int64_t i = threadIdx.x; i < pieces; i += blockDim.x) {
    const std::int64_t ci = i / p.chunks, kk = i - ci * p.chunks;
    const A* q = part_at<false>(p, n, kk, g * p.Cg + ci);
    st = merge_stat(st, Stat<A>{A(chunk_count(p.HW, p.len, kk)), q[0], q[1], q[2]});
  }
  const int t = threadIdx.x;
  ss[t] = st;
  __syncthreads();
  for (int s = int(blockDim.x) >> 1; s > 0; s >>= 1) {
    if (t < s) ss[t] = merge_stat(ss[t], ss[t + s]);
    __syncthreads();
  }
  if (t == 0) {
    const Stat<A> r = ss[0];
    const A var = r.m2 / r.n + p.eps;
    p.mean[ng] = r.base + r.mu;
    p.piv[2 * ng] = r.base;
    p.piv[2 * ng + 1] = r.mu;
    if constexpr (std::is_same<A, double>::value) p.rstd[ng] = 1.0 / sqrt(var);
    else p.rstd[ng] = 1.0f / sqrtf(var);
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) bwd_finalize_kernel(const Args<T> p, int sw) {
  using A = acc_t<T>;
  __shared__ A sm[2 * kThreads];
  const std::int64_t ng = blockIdx.x, n = ng / p.G, g = ng - n * p.G;
  const int nslots = int(blockDim.x) / sw, slot = int(threadIdx.x) / sw, sub = int(threadIdx.x) % sw;
  A g1 = A(0), g2 = A(0);
  for (std::int64_t first = 0; first < p.Cg; first += nslots) {  // same trip count for every thread
    const std::int64_t ci = first + slot, c = g * p.Cg + ci;
    const bool active = ci < p.Cg;
    A s1 = A(0), s2 = A(0);
    if (active) {
      for (std::int64_t kk = sub; kk < p.chunks; kk += sw) {
        const A* q = part_at<true>(p, n, kk, c);
        s1 += q[0];
        s2 += q[1];
      }
    }
    s1 = group_sum(s1, sw);
    s2 = group_sum(s2, sw);
    if (active && sub == 0) {
      const std::int64_t nc = n * p.C + c;
      p.sum_dz[nc] = s1;
      p.sum_dzx[nc] = s2;
      const A gamma = (p.w ? p.w[c] : A(1)) * film_scale(p, nc);
      g1 += gamma * s1;
      g2 += gamma * s2;
    }
  }
  const int t = threadIdx.x;
  sm[2 * t] = g1;
  sm[2 * t + 1] = g2;
  __syncthreads();
  for (int s = int(blockDim.x) >> 1; s > 0; s >>= 1) {
    if (t < s) {
      sm[2 * t] += sm[2 * (t + s)];
      sm[2 * t + 1] += sm[2 * (t + s) + 1];
    }
    __syncthreads();
  }
  if (t == 0) {
    const A inv = A(1) / A(p.Cg * p.HW);
    p.gm[2 * ng] = sm[0] * inv;
    p.gm[2 * ng + 1] = sm[1] * inv;
  }
}

// ---------------------------------------------------------------- host side
struct Plan {
  int V = 1;
  std::int64_t chunks = 1, len = 1, blocks = 1;
  int tiles = 1, tx = 1, ty = 1;
  int fin_threads = 32, fin_sw = 1;
};

inline std::int64_t pow2_at_least(std::int64_t v) {
  std::int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

// Grid shapes: enough warps (channels-first) or blocks (channels-last) to fill every SM a few times
// over, but at least kUnroll vectors per thread, so few partial sums per channel.
template <class T>
Plan make_plan(const NormShape& s, bool aligned, int sms) {
  constexpr int VV = vec16<T>();
  Plan pl;
  if (!s.channels_last) {
    pl.V = (aligned && s.HW % VV == 0) ? VV : 1;
    const std::int64_t rows = s.N * s.C, unit = 32 * std::int64_t(pl.V);
    const std::int64_t want = ceil_div<std::int64_t>(std::int64_t(sms) * 64, rows);
    const std::int64_t most = ceil_div<std::int64_t>(s.HW, unit * kUnroll);
    const std::int64_t chunks = std::max<std::int64_t>(1, std::min(want, most));
    pl.len = ceil_div<std::int64_t>(ceil_div<std::int64_t>(s.HW, chunks), unit) * unit;
    pl.chunks = ceil_div<std::int64_t>(s.HW, pl.len);
    pl.blocks = ceil_div<std::int64_t>(rows * pl.chunks, kWarps);
  } else {
    pl.V = (aligned && s.C % VV == 0) ? VV : 1;
    const std::int64_t cols = s.C / pl.V;
    pl.tiles = int(ceil_div<std::int64_t>(cols, kThreads));
    pl.tx = int(ceil_div<std::int64_t>(cols, pl.tiles));
    pl.ty = kThreads / pl.tx;
    const std::int64_t want = ceil_div<std::int64_t>(std::int64_t(sms) * 8, s.N * pl.tiles);
    const std::int64_t most = ceil_div<std::int64_t>(s.HW, std::int64_t(pl.ty) * kUnroll);
    const std::int64_t chunks = std::max<std::int64_t>(1, std::min(want, most));
    pl.len = ceil_div<std::int64_t>(ceil_div<std::int64_t>(s.HW, chunks), pl.ty) * pl.ty;
    pl.chunks = ceil_div<std::int64_t>(s.HW, pl.len);
    pl.blocks = s.N * pl.tiles * pl.chunks;
  }
  pl.fin_sw = int(pow2_at_least(std::min<std::int64_t>(pl.chunks, 32)));
  const std::int64_t cg = s.C / s.G;
  pl.fin_threads = int(std::max<std::int64_t>(32, std::min<std::int64_t>(kThreads, pow2_at_least(cg * pl.fin_sw))));
  if (pl.blocks > INT_MAX || s.N * s.G > INT_MAX)
    throw std::invalid_argument("group_norm (cuda): tensor too large for one launch");
  return pl;
}

template <class T, int MODE>
void launch_pass(const Plan& pl, const Args<T>& p, bool cl, cudaStream_t st) {
  constexpr int VV = vec16<T>();
  const unsigned grid = unsigned(pl.blocks);
  if (cl) {
    const unsigned threads = unsigned(pl.tx * pl.ty);
    if (pl.V == VV) GK_LAUNCH(grid, threads, 0, st, cl_kernel<T, VV, MODE>)(p);
    else GK_LAUNCH(grid, threads, 0, st, cl_kernel<T, 1, MODE>)(p);
  } else {
    if (pl.V == VV) GK_LAUNCH(grid, kThreads, 0, st, cf_kernel<T, VV, MODE>)(p);
    else GK_LAUNCH(grid, kThreads, 0, st, cf_kernel<T, 1, MODE>)(p);
  }
}

template <class T, bool BWD>
void launch_finalize(const Plan& pl, const Args<T>& p, cudaStream_t st) {
  const unsigned grid = unsigned(p.N * p.G);
  if constexpr (BWD) GK_LAUNCH(grid, pl.fin_threads, 0, st, bwd_finalize_kernel<T>)(p, pl.fin_sw);
  else GK_LAUNCH(grid, pl.fin_threads, 0, st, fwd_finalize_kernel<T>)(p);
}

// The tensors of one direction, and whether its vector loads/stores may use 16-byte accesses.
// Both directions: x, the affine and FiLM vectors, and the group statistics (the forward writes them).
template <class T, class NA>
Args<T> shared_tensors(const NA& a) {
  using A = acc_t<T>;
  Args<T> p{};
  p.x = static_cast<const T*>(a.x);
  p.w = static_cast<const A*>(a.w); p.b = static_cast<const A*>(a.b);
  p.scale = static_cast<const A*>(a.scale); p.shift = static_cast<const A*>(a.shift);
  p.mean = const_cast<A*>(static_cast<const A*>(a.mean));
  p.rstd = const_cast<A*>(static_cast<const A*>(a.rstd));
  return p;
}

template <class T>
Args<T> tensors(const NormFwdArgs& a) {
  Args<T> p = shared_tensors<T>(a);
  p.out = static_cast<T*>(a.y);
  p.eps = acc_t<T>(a.eps);
  return p;
}
inline bool aligned16(const NormFwdArgs& a) { return is_aligned(a.x, 16) && is_aligned(a.y, 16); }

template <class T>
Args<T> tensors(const NormBwdArgs& a) {
  using A = acc_t<T>;
  Args<T> p = shared_tensors<T>(a);
  p.dy = static_cast<const T*>(a.dy);
  p.out = static_cast<T*>(a.dx);
  p.sum_dz = static_cast<A*>(a.sum_dz); p.sum_dzx = static_cast<A*>(a.sum_dz_xhat);
  return p;
}
inline bool aligned16(const NormBwdArgs& a) {
  return is_aligned(a.x, 16) && is_aligned(a.dy, 16) && is_aligned(a.dx, 16);
}

// One direction's three launches. Scratch: the partial statistics [N, chunks, C, part_width], then
// [N, G, 2] per group (forward: piv; backward: gm).
template <class T, bool BWD, class NA>
void run(const NA& a, const Flat& f, int device, cudaStream_t st, const char* op) {
  using A = acc_t<T>;
  const NormShape& s = a.s;
  const Plan pl = make_plan<T>(s, aligned16(a), sm_count(device));
  Args<T> p = tensors<T>(a);
  p.N = s.N; p.C = s.C; p.HW = s.HW; p.G = s.G; p.Cg = s.C / s.G;
  p.chunks = pl.chunks; p.len = pl.len;
  p.tiles = pl.tiles; p.tx = pl.tx; p.ty = pl.ty;
  p.silu = s.silu; p.one_plus_scale = s.one_plus_scale;
  const std::size_t npart = std::size_t(s.N * pl.chunks * s.C * part_width(BWD));
  p.part = scratch<A>(f, (npart + std::size_t(s.N * s.G * 2)) * sizeof(A), op);
  if (f.size_query) return;
  (BWD ? p.gm : p.piv) = p.part + npart;
  launch_pass<T, BWD ? kBwdStats : kFwdStats>(pl, p, s.channels_last, st);
  launch_finalize<T, BWD>(pl, p, st);
  launch_pass<T, BWD ? kBwdApply : kFwdApply>(pl, p, s.channels_last, st);
  check(cudaGetLastError(), op);
}

// NA's constructor checks the arguments (csrc/common/norm_args.h).
template <bool BWD, class NA>
void launch(const Flat& f, int device, std::uintptr_t stream, const char* op) {
  const NA a(f);
  if (a.s.N * a.s.C * a.s.HW == 0) return;
  DeviceGuard guard(device);
  by_dtype(f.dtype, op, [&](auto t) { run<decltype(t), BWD>(a, f, device, as_stream(stream), op); });
}

}  // namespace

void cuda_group_norm_fwd(const Flat& a, int device, std::uintptr_t stream) {
  launch<false, NormFwdArgs>(a, device, stream, "group_norm_fwd");
}

void cuda_group_norm_bwd(const Flat& a, int device, std::uintptr_t stream) {
  launch<true, NormBwdArgs>(a, device, stream, "group_norm_bwd");
}

}  // namespace gk
