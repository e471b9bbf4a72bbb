// Thread-safe, never-destroyed singletons.
#ifndef HERMES_SHM_SINGLETON_H_
#define HERMES_SHM_SINGLETON_H_

#include <atomic>

namespace hshm {

/** Process-wide instance of T, created on first use.
 *
 * Construction is thread-safe (C++11 magic statics: concurrent first callers
 * block until one constructor finishes). The instance is intentionally never
 * destroyed, so threads still running during process exit never touch a
 * destroyed object. Any thread may call GetInstance() at any time. */
template <typename T>
class Singleton {
 public:
  /** Returns the instance, constructing it on the first call. The hot path
   * is one acquire load (no guard check, small enough to inline). */
  static T *GetInstance() {
    T *p = instance_.load(std::memory_order_acquire);
    if (__builtin_expect(p != nullptr, 1)) return p;
    return Create();
  }

 private:
  /** First calls: constructs the instance once and publishes it. */
  static __attribute__((noinline)) T *Create() {
    static T *made = new T();
    instance_.store(made, std::memory_order_release);
    return made;
  }
  static inline std::atomic<T *> instance_{nullptr};
};

}  // namespace hshm

#endif  // HERMES_SHM_SINGLETON_H_
