// A small persistent thread pool for the CPU kernels.
// Why not OpenMP: torch ships its own libgomp; a second OpenMP runtime in the process would keep its
// own spinning threads and fight torch's for the cores. These workers block (no spinning beyond a few
// microseconds) when idle, the caller passes torch's thread count, and a call made while the pool is
// busy (another Python thread, a nested call) runs inline instead of adding threads.
#pragma once
#include <cstdint>
#include <functional>

namespace gk {

// Calls fn(task) for every task in [0, n_tasks), spread over at most `threads` threads (the caller
// included). Tasks are claimed dynamically, so a core stolen by another process does not stall the call.
void parallel_for(std::int64_t n_tasks, int threads, const std::function<void(std::int64_t)>& fn);

}  // namespace gk
