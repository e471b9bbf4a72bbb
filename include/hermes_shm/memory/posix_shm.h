// POSIX shared-memory backend: create, attach, detach and destroy a named
// segment mapped into this process.
//
// Names are built by MakeName() from the user name, an instance key (one per
// runtime; two runtimes on one machine use different keys) and the segment
// name, so that runtimes and users never collide. Segments are created with
// mode 0600 and their full size is reserved at creation (posix_fallocate), so
// an exhausted /dev/shm is an error from Create(), never a SIGBUS later.
//
// A PosixShmMmap object is owned by one thread at a time (not thread-safe);
// the mapped memory is shared by every process that attaches it.
#ifndef HERMES_SHM_MEMORY_POSIX_SHM_H_
#define HERMES_SHM_MEMORY_POSIX_SHM_H_

#include <string>

#include "hermes_shm/status.h"
#include "hermes_shm/types.h"

namespace hipc {

using hshm::Status;
using hshm::u32;
using hshm::u64;

/** A mapped POSIX shared-memory segment. The first kHeaderSize bytes hold a
 * small header (magic, size, creator pid); data() starts after it. */
class PosixShmMmap {
 public:
  /** Bytes reserved at the start of every segment for its header. */
  static constexpr size_t kHeaderSize = 4096;

  PosixShmMmap() = default;
  ~PosixShmMmap();
  PosixShmMmap(const PosixShmMmap &) = delete;
  PosixShmMmap &operator=(const PosixShmMmap &) = delete;

  /** "/chimaera_<user>_<instance_key>_<segment>" (only [A-Za-z0-9_.-] kept). */
  static std::string MakeName(const std::string &instance_key,
                              const std::string &segment);

  /** Creates and maps a new segment of `size` data bytes.
   * Errors: AlreadyExists if `name` exists, OutOfMemory if /dev/shm cannot
   * hold it, IoError for other system failures. */
  Status Create(const std::string &name, size_t size);
  /** Maps an existing segment created by Create() (any process).
   * Errors: NotFound if absent, InvalidArgument if it is not a valid segment.
   */
  Status Attach(const std::string &name);
  /** Unmaps the segment from this process (the segment stays). */
  void Detach();
  /** Unmaps and unlinks the segment. */
  Status Destroy();
  /** Unlinks segment `name` without mapping it; ok if it did not exist. */
  static Status Unlink(const std::string &name);
  /** True if a segment called `name` exists. */
  static bool Exists(const std::string &name);

  /** Start of the data area (after the header); null when not mapped. */
  char *data() const { return base_ ? base_ + kHeaderSize : nullptr; }
  /** Size of the data area in bytes. */
  size_t data_size() const { return data_size_; }
  /** Pid of the process that created the segment. */
  int creator_pid() const;
  /** The segment's name. */
  const std::string &name() const { return name_; }
  /** True while mapped. */
  bool mapped() const { return base_ != nullptr; }

 private:
  std::string name_;
  char *base_ = nullptr;
  size_t map_size_ = 0;
  size_t data_size_ = 0;
};

}  // namespace hipc

#endif  // HERMES_SHM_MEMORY_POSIX_SHM_H_
