#include "cpu/parallel.h"

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
static inline void cpu_relax() { _mm_pause(); }
#else
static inline void cpu_relax() {}
#endif

namespace gk {
namespace {

thread_local bool t_in_pool = false;

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> g(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  // Returns false when the pool is busy; the caller then runs the work inline.
  bool run(std::int64_t n, int threads, const std::function<void(std::int64_t)>& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    int helpers = threads - 1;
    grow(helpers);
    std::exception_ptr err;
    {
      std::lock_guard<std::mutex> g(m_);
      fn_ = &fn;
      n_ = n;
      next_.store(0);
      active_helpers_ = helpers;
      joined_ = 0;
      finished_.store(0);
      closed_ = false;
      err_ = nullptr;
      ++generation_;
    }
    cv_.notify_all();
    work(fn);
    // Helpers that have not woken up by now are not waited for: close the call, then wait only for
    // those that joined it to finish their last task.
    int joined;
    {
      std::lock_guard<std::mutex> g(m_);
      closed_ = true;
      joined = joined_;
    }
    for (int spin = 0; finished_.load(std::memory_order_acquire) < joined && spin < 20000; ++spin) cpu_relax();
    {
      std::unique_lock<std::mutex> g(m_);
      done_cv_.wait(g, [&] { return finished_.load() >= joined; });
      err = err_;
      fn_ = nullptr;
    }
    if (err) std::rethrow_exception(err);
    return true;
  }

 private:
  void work(const std::function<void(std::int64_t)>& fn) {
    for (;;) {
      std::int64_t t = next_.fetch_add(1, std::memory_order_relaxed);
      if (t >= n_) break;
      try {
        fn(t);
      } catch (...) {
        std::lock_guard<std::mutex> g(m_);
        if (!err_) err_ = std::current_exception();
        next_.store(n_);
      }
    }
  }

  void grow(int helpers) {
    while (static_cast<int>(workers_.size()) < helpers) {
      int id = static_cast<int>(workers_.size());
      workers_.emplace_back([this, id] { loop(id); });
    }
  }

  void loop(int id) {
    t_in_pool = true;
    std::uint64_t seen = 0;
    for (;;) {
      const std::function<void(std::int64_t)>* fn = nullptr;
      {
        std::unique_lock<std::mutex> g(m_);
        cv_.wait(g, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        if (id >= active_helpers_ || closed_) continue;  // not needed for this call
        ++joined_;
        fn = fn_;
      }
      work(*fn);
      {
        std::lock_guard<std::mutex> g(m_);
        finished_.fetch_add(1, std::memory_order_acq_rel);
      }
      done_cv_.notify_one();
    }
  }

  std::mutex busy_;
  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(std::int64_t)>* fn_ = nullptr;
  std::int64_t n_ = 0;
  std::atomic<std::int64_t> next_{0};
  std::atomic<int> finished_{0};
  int active_helpers_ = 0, joined_ = 0;
  bool closed_ = false;
  std::uint64_t generation_ = 0;
  std::exception_ptr err_;
  bool stop_ = false;
};

Pool* g_pool = nullptr;
std::once_flag g_atfork_once;

// After fork() only the forking thread exists in the child: drop (leak) the parent's pool there.
void on_fork_child() { g_pool = nullptr; }

Pool& pool() {
  std::call_once(g_atfork_once, [] { pthread_atfork(nullptr, nullptr, on_fork_child); });
  static std::mutex create;
  std::lock_guard<std::mutex> g(create);
  if (!g_pool) g_pool = new Pool();  // intentionally never destroyed: workers may outlive static dtors
  return *g_pool;
}

}  // namespace

void parallel_for(std::int64_t n, int threads, const std::function<void(std::int64_t)>& fn) {
  if (n <= 0) return;
  if (threads > n) threads = static_cast<int>(n);
  if (threads <= 1 || t_in_pool || !pool().run(n, threads, fn)) {
    for (std::int64_t t = 0; t < n; ++t) fn(t);
  }
}

}  // namespace gk
