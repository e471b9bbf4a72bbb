#include "hermes_shm/memory/posix_shm.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

namespace hipc {

namespace {

constexpr u64 kSegmentMagic = 0x4348494d53484d31ull;  // "CHIMSHM1"

/** Header at offset 0 of every segment. `ready` is set last, with release
 * order, so an attacher that sees it also sees the other fields. */
struct SegmentHeader {
  u64 magic;
  u64 data_size;
  int32_t creator_pid;
  std::atomic<u32> ready;
};
static_assert(sizeof(SegmentHeader) <= PosixShmMmap::kHeaderSize, "header");

/** Keeps only characters that are safe in a shm name. */
std::string Sanitize(const std::string &s) {
  std::string out;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
    out.push_back(ok ? c : '_');
  }
  return out;
}

/** The current user's name, or the numeric uid if it has none. */
std::string UserName() {
  struct passwd pw, *res = nullptr;
  char buf[1024];
  if (getpwuid_r(getuid(), &pw, buf, sizeof(buf), &res) == 0 && res) {
    return res->pw_name;
  }
  return std::to_string(getuid());
}

}  // namespace

PosixShmMmap::~PosixShmMmap() { Detach(); }

std::string PosixShmMmap::MakeName(const std::string &instance_key,
                                   const std::string &segment) {
  return "/chimaera_" + Sanitize(UserName()) + "_" + Sanitize(instance_key) +
         "_" + Sanitize(segment);
}

Status PosixShmMmap::Create(const std::string &name, size_t size) {
  if (mapped()) return Status::InvalidArgument("segment already mapped");
  if (size == 0) return Status::InvalidArgument("segment size is 0");
  int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) {
    int err = errno;
    if (err == EEXIST) {
      return Status::AlreadyExists("shared-memory segment " + name +
                                   " already exists");
    }
    return Status::FromErrno("shm_open(" + name + ")", err);
  }
  size_t total = kHeaderSize + size;
  // Reserve every page now so a full /dev/shm fails here, not with SIGBUS.
  int rc = posix_fallocate(fd, 0, static_cast<off_t>(total));
  if (rc != 0) {
    close(fd);
    shm_unlink(name.c_str());
    if (rc == ENOSPC) {
      return Status::OutOfMemory("not enough space in /dev/shm for segment " +
                                 name + " (" + std::to_string(total) +
                                 " bytes)");
    }
    return Status::FromErrno("posix_fallocate(" + name + ")", rc);
  }
  void *p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int err = errno;
  close(fd);
  if (p == MAP_FAILED) {
    shm_unlink(name.c_str());
    return Status::FromErrno("mmap(" + name + ")", err);
  }
  base_ = static_cast<char *>(p);
  map_size_ = total;
  data_size_ = size;
  name_ = name;
  auto *hdr = reinterpret_cast<SegmentHeader *>(base_);
  hdr->magic = kSegmentMagic;
  hdr->data_size = size;
  hdr->creator_pid = getpid();
  hdr->ready.store(1, std::memory_order_release);
  return Status::Ok();
}

Status PosixShmMmap::Attach(const std::string &name) {
  if (mapped()) return Status::InvalidArgument("segment already mapped");
  int fd = shm_open(name.c_str(), O_RDWR, 0600);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) {
      return Status::NotFound("shared-memory segment " + name +
                              " does not exist");
    }
    return Status::FromErrno("shm_open(" + name + ")", err);
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return Status::FromErrno("fstat(" + name + ")", err);
  }
  size_t total = static_cast<size_t>(st.st_size);
  if (total < kHeaderSize) {
    close(fd);
    return Status::InvalidArgument("segment " + name + " is too small");
  }
  void *p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int err = errno;
  close(fd);
  if (p == MAP_FAILED) return Status::FromErrno("mmap(" + name + ")", err);
  auto *hdr = static_cast<SegmentHeader *>(p);
  if (hdr->ready.load(std::memory_order_acquire) != 1 ||
      hdr->magic != kSegmentMagic || hdr->data_size + kHeaderSize != total) {
    munmap(p, total);
    return Status::InvalidArgument("segment " + name +
                                   " is not a valid Chimaera segment");
  }
  base_ = static_cast<char *>(p);
  map_size_ = total;
  data_size_ = hdr->data_size;
  name_ = name;
  return Status::Ok();
}

void PosixShmMmap::Detach() {
  if (base_) munmap(base_, map_size_);
  base_ = nullptr;
  map_size_ = 0;
  data_size_ = 0;
}

Status PosixShmMmap::Destroy() {
  std::string name = name_;
  Detach();
  if (name.empty()) return Status::Ok();
  return Unlink(name);
}

Status PosixShmMmap::Unlink(const std::string &name) {
  if (shm_unlink(name.c_str()) != 0 && errno != ENOENT) {
    return Status::FromErrno("shm_unlink(" + name + ")", errno);
  }
  return Status::Ok();
}

bool PosixShmMmap::Exists(const std::string &name) {
  int fd = shm_open(name.c_str(), O_RDONLY, 0600);
  if (fd < 0) return false;
  close(fd);
  return true;
}

int PosixShmMmap::creator_pid() const {
  if (!base_) return -1;
  return reinterpret_cast<const SegmentHeader *>(base_)->creator_pid;
}

}  // namespace hipc
