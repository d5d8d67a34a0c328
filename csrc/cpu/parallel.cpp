#include "cpu/parallel.h"

#include <omp.h>

namespace gk {

void parallel_for(std::int64_t n, int threads, const std::function<void(std::int64_t)>& fn) {
  if (n <= 0) return;
  if (threads > n) threads = static_cast<int>(n);
  if (threads <= 1 || omp_in_parallel()) {
    for (std::int64_t t = 0; t < n; ++t) fn(t);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (std::int64_t t = 0; t < n; ++t) fn(t);
}

}  // namespace gk
