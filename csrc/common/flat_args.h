// Arguments of every native kernel, flattened so one binding shape serves all ops and both modules:
// tensors as raw device/host addresses (0 = absent) with the bytes each may be read or written from
// that address (its extent), integers, floats, and a dtype code. Each kernel's argument names are
// declared once, in a signature struct next to its unpacking code (sig::<kernel>: space-separated
// names of its tensors, integers and floats, in order); the unpacking code reads arguments by those
// names, every module exports them as kernel_args(), and genkernels/ops/_kernels.py builds each call
// as a NamedTuple checked against them. csrc never sees a torch type. The unpacking code checks, before any kernel runs, that sizes are non-negative, that
// the products it indexes with fit in int64, and that every tensor is at least as large as what the
// kernel will touch: a wrong argument is a ValueError, never an out-of-bounds access.
#pragma once
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

// The CPU kernels are compiled once per instruction set; the checks below are inline functions, so in
// those translation units they live in the ISA's own namespace (an inline namespace: the names read
// the same), else the linker would keep one copy, possibly compiled for AVX-512, for every ISA.
#ifdef GK_ISA
#define GK_ARGS_BEGIN inline namespace GK_ISA {
#define GK_ARGS_END }
#else
#define GK_ARGS_BEGIN
#define GK_ARGS_END
#endif

namespace gk {

// Must match genkernels/_native.py DTYPE_CODES.
enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

struct Flat {
  int dtype;
  std::vector<std::uintptr_t> p;
  std::vector<std::int64_t> n;  // extent of p[k] in bytes
  std::vector<std::int64_t> i;
  std::vector<double> f;
  // CUDA kernels only: the call's scratch memory, a tensor the Python layer allocates with torch's
  // allocator, its size from a size query (the launcher run with size_query: it records `needed` and
  // launches nothing). See csrc/cuda/common.cuh scratch().
  std::uintptr_t workspace = 0;
  std::int64_t workspace_bytes = 0;
  bool size_query = false;
  mutable std::int64_t needed = 0;
  template <class T>
  T* ptr(size_t k) const { return reinterpret_cast<T*>(p[k]); }
};

GK_ARGS_BEGIN

[[noreturn]] inline void refuse(const char* op, const char* what, long long a = 0, long long b = 0, long long c = 0) {
  char msg[320];
  std::snprintf(msg, sizeof msg, what, op, a, b, c);
  throw std::invalid_argument(msg);
}

inline std::int64_t dtype_bytes(int dtype) {
  switch (dtype) {
    case kFloat32: return 4;
    case kFloat16: case kBFloat16: return 2;
    case kFloat64: return 8;
    default: refuse("native kernel", "%s: unsupported dtype code %lld", dtype);
  }
}
// The accumulation (statistics) type's size: double for float64 data, float otherwise.
inline std::int64_t acc_bytes(int dtype) { return dtype == kFloat64 ? 8 : 4; }


// Refuses a.p[k] (called `name`) unless it holds `elems` elements of `esize` bytes; an absent tensor
// (address 0) is refused when `required`. elems <= 0: nothing is touched, any extent will do.
inline void need(const Flat& a, const char* op, size_t k, const char* name, std::int64_t elems, std::int64_t esize,
                 bool required = true) {
  char what[128];
  if (a.p[k] == 0) {
    if (!required || elems <= 0) return;
    std::snprintf(what, sizeof what, "%%s: `%s` is missing", name);
    refuse(op, what);
  }
  if (elems > 0 && a.n[k] / esize < elems) {
    std::snprintf(what, sizeof what, "%%s: `%s` holds %%lld bytes, the kernel needs %%lld x %%lld", name);
    refuse(op, what, a.n[k], elems, esize);
  }
}

// a * b, refused when it does not fit in int64 (or either is negative).
inline std::int64_t mul(const char* op, std::int64_t a, std::int64_t b) {
  std::int64_t r;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r))
    refuse(op, "%s: sizes are negative or their product overflows int64");
  return r;
}
inline std::int64_t mul(const char* op, std::int64_t a, std::int64_t b, std::int64_t c) {
  return mul(op, mul(op, a, b), c);
}

// Elements spanned by a [d0, d1, d2, inner] view with element strides s (inner stride 1): 0 when empty.
inline std::int64_t span(const char* op, const std::int64_t d[3], const std::int64_t s[3], std::int64_t inner) {
  if (d[0] == 0 || d[1] == 0 || d[2] == 0 || inner == 0) return 0;
  std::int64_t last = inner;
  for (int t = 0; t < 3; ++t) {
    if (s[t] < 0) refuse(op, "%s: negative stride");
    if (__builtin_add_overflow(last, mul(op, d[t] - 1, s[t]), &last)) refuse(op, "%s: strides overflow int64");
  }
  return last;
}

// ------------------------------------------------------------------ named arguments
// Words of a space-separated name list.
constexpr std::int64_t word_count(const char* s) {
  if (!*s) return 0;
  std::int64_t n = 1;
  for (; *s; ++s) n += *s == ' ';
  return n;
}
// Position of word `name` in the space-separated list `names`; -1 when absent.
constexpr int word_index(const char* names, const char* name) {
  for (int k = 0; *names; ++k) {
    const char* b = name;
    while (*names && *names != ' ' && *names == *b) ++names, ++b;
    if ((*names == 0 || *names == ' ') && *b == 0) return k;
    while (*names && *names != ' ') ++names;
    if (*names == ' ') ++names;
  }
  return -1;
}

// Declares signature sig::NAME of kernel NAME: the space-separated names of its tensors, integers and
// floats, in call order.
#define GK_SIGNATURE(NAME, PTRS, INTS, FLOATS)          \
  struct NAME {                                         \
    static constexpr const char* kernel = #NAME;        \
    static constexpr const char* ptrs = PTRS;           \
    static constexpr const char* ints = INTS;           \
    static constexpr const char* floats = FLOATS;       \
  }

// The arguments of a Flat read by name through the signature S (S::kernel, S::ptrs, S::ints,
// S::floats). Construction checks the counts and the dtype code; a name S does not declare is a
// programming error (std::logic_error), shown by the first test that runs the kernel.
template <class S>
struct Named {
  const Flat& a;
  explicit Named(const Flat& f) : a(f) {
    const auto np = std::size_t(word_count(S::ptrs)), ni = std::size_t(word_count(S::ints)),
               nf = std::size_t(word_count(S::floats));
    if (a.p.size() != np || a.n.size() != np || a.i.size() != ni || a.f.size() != nf)
      refuse(S::kernel, "%s: wrong number of native arguments: %lld tensors, %lld ints, %lld floats expected",
             (long long)np, (long long)ni, (long long)nf);
    dtype_bytes(a.dtype);
  }
  static constexpr const char* kernel() { return S::kernel; }
  static int slot(const char* names, const char* name) {
    const int k = word_index(names, name);
    if (k < 0) throw std::logic_error(std::string(S::kernel) + ": no argument named " + name);
    return k;
  }
  template <class T = void>
  T* ptr(const char* name) const { return a.template ptr<T>(slot(S::ptrs, name)); }
  std::int64_t i(const char* name) const { return a.i[slot(S::ints, name)]; }
  double f(const char* name) const { return a.f[slot(S::floats, name)]; }
  // gk::need for the tensor `name`.
  void need(const char* name, std::int64_t elems, std::int64_t esize, bool required = true) const {
    gk::need(a, S::kernel, slot(S::ptrs, name), name, elems, esize, required);
  }
};

GK_ARGS_END
}  // namespace gk
