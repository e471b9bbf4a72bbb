// ThreadSanitizer annotations for hand-offs TSan cannot see.
//
// TSan tracks happens-before inside one process. Shared-memory objects also
// travel through other processes: a runtime worker completes a task, the
// client (another process) frees it and reuses the block for a new task, and
// another worker pops that one. The synchronisation is real but happens in the
// client, so TSan would report the two workers' accesses as a race. Releasing
// on the object when it leaves this process and acquiring on it when it comes
// back tells TSan about the edge. Without TSan these are no-ops.
#ifndef HERMES_SHM_UTIL_TSAN_H_
#define HERMES_SHM_UTIL_TSAN_H_

#if defined(__SANITIZE_THREAD__)
#define HSHM_TSAN_ENABLED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HSHM_TSAN_ENABLED 1
#endif
#endif

#ifdef HSHM_TSAN_ENABLED
extern "C" void __tsan_acquire(void *addr);
extern "C" void __tsan_release(void *addr);
extern "C" void *__tsan_get_current_fiber(void);
extern "C" void *__tsan_create_fiber(unsigned flags);
extern "C" void __tsan_destroy_fiber(void *fiber);
extern "C" void __tsan_switch_to_fiber(void *fiber, unsigned flags);
/** User-level fibers (stack switches TSan cannot see): create one per
 * fiber, switch to it immediately before jumping into it, destroy it when
 * it ended. Without these TSan keeps one shadow call stack per thread,
 * which fiber switches grow without bound (and confuse its reports). */
#define HSHM_TSAN_FIBER_CURRENT() __tsan_get_current_fiber()
#define HSHM_TSAN_FIBER_CREATE() __tsan_create_fiber(0)
#define HSHM_TSAN_FIBER_DESTROY(f) __tsan_destroy_fiber(f)
#define HSHM_TSAN_FIBER_SWITCH(f) __tsan_switch_to_fiber((f), 0)
/** This thread now sees what was released on `addr` (any process-local
 * thread). */
#define HSHM_TSAN_ACQUIRE(addr) __tsan_acquire((void *)(addr))
/** Publishes this thread's writes to whoever later acquires `addr`. */
#define HSHM_TSAN_RELEASE(addr) __tsan_release((void *)(addr))
extern "C" void AnnotateIgnoreReadsBegin(const char *file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char *file, int line);
/** This thread's reads between these are not checked: for bytes another
 * library's thread wrote and handed over where TSan cannot see it (a
 * ZeroMQ message libzmq's I/O thread received and decrypted). */
#define HSHM_TSAN_IGNORE_READS_BEGIN() \
  AnnotateIgnoreReadsBegin(__FILE__, __LINE__)
#define HSHM_TSAN_IGNORE_READS_END() AnnotateIgnoreReadsEnd(__FILE__, __LINE__)
extern "C" void AnnotateIgnoreWritesBegin(const char *file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char *file, int line);
/** This thread's writes between these are not recorded: for a word another
 * process may have been the last to write (a heap block header a client
 * carved out of what was a task this process wrote). */
#define HSHM_TSAN_IGNORE_WRITES_BEGIN() \
  AnnotateIgnoreWritesBegin(__FILE__, __LINE__)
#define HSHM_TSAN_IGNORE_WRITES_END() \
  AnnotateIgnoreWritesEnd(__FILE__, __LINE__)
#else
#define HSHM_TSAN_ACQUIRE(addr) ((void)0)
#define HSHM_TSAN_RELEASE(addr) ((void)0)
#define HSHM_TSAN_IGNORE_READS_BEGIN() ((void)0)
#define HSHM_TSAN_IGNORE_READS_END() ((void)0)
#define HSHM_TSAN_IGNORE_WRITES_BEGIN() ((void)0)
#define HSHM_TSAN_IGNORE_WRITES_END() ((void)0)
#define HSHM_TSAN_FIBER_CURRENT() (static_cast<void *>(nullptr))
#define HSHM_TSAN_FIBER_CREATE() (static_cast<void *>(nullptr))
#define HSHM_TSAN_FIBER_DESTROY(f) ((void)(f))
#define HSHM_TSAN_FIBER_SWITCH(f) ((void)(f))
#endif

/** The address hand-off annotations use for the shared-memory block whose
 * user bytes start at `p`: one byte past it, an address no (aligned) atomic
 * uses, so TSan's sync object there holds only the annotations' clocks. The
 * allocators release on it when a block is freed and acquire on it when one
 * is handed out, so a block freed in another process (which TSan cannot
 * see) and reused here still carries what this process released on it. */
#define HSHM_TSAN_BLOCK_KEY(p) (reinterpret_cast<const char *>(p) + 1)

#endif  // HERMES_SHM_UTIL_TSAN_H_
