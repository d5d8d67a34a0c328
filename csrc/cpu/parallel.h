// Threading for the CPU kernels: OpenMP, sharing torch's own OpenMP runtime.
// Why OpenMP: torch's pip wheels load their libgomp under the SONAME libgomp.so.1 before this module
// is imported, so the dynamic loader resolves our libgomp.so.1 to that same copy: our parallel
// regions run on torch's thread pool (already awake after a torch op) instead of a second set of
// threads competing with torch's spinning workers for the cores. The caller passes torch's thread
// count (torch.get_num_threads()); a call made inside a parallel region runs inline.
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>

namespace gk {

// Calls fn(task) for every task in [0, n_tasks) on at most `threads` threads (the caller included).
// Tasks are handed out dynamically, so a core stolen by another process does not stall the call.
void parallel_for(std::int64_t n_tasks, int threads, const std::function<void(std::int64_t)>& fn);

// Elements of a memory-bound loop per thread below which waking another thread costs more than it
// saves (torch's at::internal::GRAIN_SIZE).
constexpr std::int64_t kMinElemsPerThread = 32768;

// The threads worth using for `elems` elements: at most `threads`, at least 1.
inline int threads_for(std::int64_t elems, int threads) {
  const std::int64_t useful = elems / kMinElemsPerThread;
  return useful < threads ? static_cast<int>(std::max<std::int64_t>(1, useful)) : threads;
}

}  // namespace gk
