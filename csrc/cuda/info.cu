// Build facts reported by `genkernels info`.
#include <cuda_runtime.h>

#include "cuda/launch.h"

namespace gk {
const char* cuda_archs() { return GK_CUDA_ARCHS; }  // comma-separated, e.g. "80,86,89,90"
int cuda_runtime_version() { return CUDART_VERSION; }
}  // namespace gk
