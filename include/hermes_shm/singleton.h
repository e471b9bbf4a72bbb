// Thread-safe, never-destroyed singletons.
#ifndef HERMES_SHM_SINGLETON_H_
#define HERMES_SHM_SINGLETON_H_

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
  /** Returns the instance, constructing it on the first call. */
  static T *GetInstance() {
    static T *instance = new T();
    return instance;
  }
};

}  // namespace hshm

#endif  // HERMES_SHM_SINGLETON_H_
