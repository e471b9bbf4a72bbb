// FieldArchive: the buffer-carrying parts of a task's field declaration.
#include "chimaera/task_fields.h"

#include "chimaera/ipc_manager.h"

namespace chi {

DataFrame &DataFrame::operator=(DataFrame &&o) noexcept {
  if (this != &o) {
    if (!shm_owned.IsNull()) (void)CHI_IPC->FreeBuffer(shm_owned);
    data = o.data;
    size = o.size;
    shm_owned = o.TakeShm();
  }
  return *this;
}

DataFrame::~DataFrame() {
  if (!shm_owned.IsNull()) (void)CHI_IPC->FreeBuffer(shm_owned);
}

const FrameView *FieldArchive::NextFrame() {
  if (next_frame_ >= num_in_frames_) {
    Fail(
        Status::InvalidArgument("task record names more data frames than "
                                "the message carries"));
    return nullptr;
  }
  return &in_frames_[next_frame_++];
}

void FieldArchive::InBuf(hipc::Pointer &p, u64 size) {
  in_bytes_ += size;
  switch (mode_) {
    case Mode::kCheckShm:
      if (!CHI_IPC->DataBuffer(p, size)) {
        Fail(Status::InvalidArgument("a data buffer the task names is not " +
                                     std::to_string(size) +
                                     " bytes inside a data segment"));
      }
      return;
    case Mode::kSaveIn: {
      const char *src = CHI_IPC->DataBuffer(p, size);
      if (!src) {
        Fail(Status::InvalidArgument("a data buffer the task names is not " +
                                     std::to_string(size) +
                                     " bytes inside a data segment"));
        size = 0;
      }
      Append(&size, sizeof(size));
      if (size) out_frames_->push_back(DataFrame(src, size));
      return;
    }
    case Mode::kLoadIn: {
      u64 n = 0;
      Read(&n, sizeof(n));
      if (!status_.ok()) return;
      if (n != size) {
        Fail(Status::InvalidArgument(
            "a data buffer of " + std::to_string(n) +
            " bytes arrived where the task's fields declare " +
            std::to_string(size)));
        return;
      }
      p = hipc::Pointer::GetNull();
      if (n == 0) return;
      const FrameView *f = NextFrame();
      if (!f) return;
      if (f->size != n) {
        Fail(
            Status::InvalidArgument("a data frame's length does not match "
                                    "its declared size"));
        return;
      }
      FullPtr<char> buf = CHI_IPC->AllocateBuffer(n);
      if (buf.IsNull()) {
        Fail(Status::OutOfMemory("runtime_data has no room for a " +
                                 std::to_string(n) + "-byte input"));
        return;
      }
      std::memcpy(buf.ptr_, f->data, n);
      p = buf.shm_;
      allocated_.push_back(p);
      return;
    }
    case Mode::kFreeIn:
      if (free_owner_ >= 0) {
        (void)CHI_IPC->FreeBufferOwnedBy(p, free_owner_);
      } else {
        (void)CHI_IPC->FreeBuffer(p);
      }
      p = hipc::Pointer::GetNull();
      return;
    default:
      return;
  }
}

void FieldArchive::OutBuf(hipc::Pointer &p, u64 &size) {
  switch (mode_) {
    case Mode::kCopyOut:
      if (!p.IsNull() && !owner_task_.IsNull()) {
        CHI_IPC->SetBufferOwner(p, CHI_IPC->BufferOwner(owner_task_));
      }
      CopyToDst(&p, sizeof(p));
      CopyToDst(&size, sizeof(size));
      return;
    case Mode::kSaveOut: {
      // The reply carries the bytes without a copy: the frame owns the
      // buffer now and frees it once sent (or dropped).
      u64 n = p.IsNull() ? 0 : size;
      const char *src = n ? CHI_IPC->DataBuffer(p, n) : nullptr;
      if (n && !src) {
        Fail(
            Status::Internal("a method returned a buffer outside the data "
                             "segments"));
        n = 0;
      }
      Append(&n, sizeof(n));
      if (n) {
        DataFrame f(src, n);
        f.shm_owned = p;
        out_frames_->push_back(std::move(f));
      } else {
        (void)CHI_IPC->FreeBuffer(p);
      }
      p = hipc::Pointer::GetNull();
      return;
    }
    case Mode::kLoadOut: {
      u64 n = 0;
      Read(&n, sizeof(n));
      p = hipc::Pointer::GetNull();
      size = 0;
      if (!status_.ok() || n == 0) return;
      const FrameView *f = NextFrame();
      if (!f) return;
      if (f->size != n) {
        Fail(
            Status::InvalidArgument("a reply frame's length does not match "
                                    "its declared size"));
        return;
      }
      FullPtr<char> buf = CHI_IPC->AllocateClientBuffer(n);
      if (buf.IsNull()) {
        Fail(Status::OutOfMemory("client_data has no room for a " +
                                 std::to_string(n) + "-byte reply"));
        return;
      }
      std::memcpy(buf.ptr_, f->data, n);
      p = buf.shm_;
      size = n;
      return;
    }
    case Mode::kFreeOut:
      (void)CHI_IPC->FreeBuffer(p);
      p = hipc::Pointer::GetNull();
      size = 0;
      return;
    case Mode::kCheckShm:
      // Output buffers are the runtime's to fill: what a submitter left
      // there must never be freed or handed back as ours.
      p = hipc::Pointer::GetNull();
      size = 0;
      return;
    default:
      return;
  }
}

}  // namespace chi
