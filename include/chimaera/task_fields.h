// How a task declares its parameters once, and what the runtime does with
// that declaration.
//
// Every task type lists its IN and OUT fields in one member template:
//
//   struct PutTask : public chi::Task {
//     IN hipc::Pointer data_;
//     IN u64 key_size_ = 0, value_size_ = 0;
//     OUT u32 replaced_ = 0;
//     template <typename Ar>
//     void Fields(Ar &ar) {
//       ar.In(key_size_);
//       ar.In(value_size_);
//       ar.InBuf(data_, key_size_ + value_size_);  // sizes declared first
//       ar.Out(replaced_);
//     }
//   };
//
// The runtime runs that one function with a FieldArchive in different modes:
// to check the data buffers a task arriving through shared memory names, to
// copy the OUT fields of the runtime's private copy back into the client's
// task, to (de)serialize the task and its reply for another node, and to free
// the buffers of a task nobody will read (its outputs) or that owns its
// inputs (Task::SetOwnsInputs). Module authors
// write nothing else for validation or the network.
//
// Rules: In/Out/InOut take trivially copyable fields of the task itself (a
// hipc::Pointer there would be meaningless on another node: name data buffers
// with InBuf/OutBuf). The sizes given to InBuf must be computable from fields
// declared before it. OutBuf buffers are owned by whoever waits on the task.
//
// Threading: an archive is used by one thread (a worker) at a time.
#ifndef CHIMAERA_TASK_FIELDS_H_
#define CHIMAERA_TASK_FIELDS_H_

#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "chimaera/chimaera_types.h"

namespace chi {

class Task;

/** A data buffer travelling beside a serialized task, as its own frame:
 * bytes in a data segment that someone else keeps alive, or a data-segment
 * buffer the frame owns (`shm_owned`: freed with the frame unless TakeShm()
 * hands it on). Move-only. */
struct DataFrame {
  const char *data = nullptr;  ///< Bytes to send (in a data segment).
  u64 size = 0;                ///< Byte count.
  hipc::Pointer shm_owned;     ///< A buffer to free with the frame, or null.

  DataFrame() = default;
  DataFrame(const char *d, u64 n) : data(d), size(n) {}
  DataFrame(DataFrame &&o) noexcept
      : data(o.data), size(o.size), shm_owned(o.TakeShm()) {}
  DataFrame &operator=(DataFrame &&o) noexcept;
  DataFrame(const DataFrame &) = delete;
  DataFrame &operator=(const DataFrame &) = delete;
  /** Frees `shm_owned` (CHI_IPC->FreeBuffer) if set. */
  ~DataFrame();
  /** Hands `shm_owned` to the caller, who frees it; null if none. */
  hipc::Pointer TakeShm() {
    hipc::Pointer p = shm_owned;
    shm_owned = hipc::Pointer::GetNull();
    return p;
  }
};

/** A received data frame (valid while the message is). */
struct FrameView {
  const char *data = nullptr;
  u64 size = 0;
};

namespace internal {
/** How a field takes part in a task's traffic (see FieldList below). */
enum class FieldKind { kIn, kOut, kInOut };
/** A reference to one declared field, made by Task::In/Out/InOut. */
template <FieldKind K, typename T>
struct FieldRef {
  T &field;
};
/** An input buffer and the field holding its size (read when applied). */
struct InBufRef {
  hipc::Pointer &p;
  u64 &size;
};
/** An output buffer and its size field. */
struct OutBufRef {
  hipc::Pointer &p;
  u64 &size;
};
}  // namespace internal

/** Runs a task's Fields() declaration in one of several modes. */
class FieldArchive {
 public:
  /** What the archive does with each declared field. */
  enum class Mode {
    kCheckShm,  ///< InBuf: the buffer must lie inside a data segment;
                ///< OutBuf: forget what the submitter left there.
    kCopyOut,   ///< Out/InOut/OutBuf: copy into `dst` at the same offset.
    kSaveIn,    ///< In/InOut/InBuf: append to `out` (+ frames).
    kLoadIn,    ///< In/InOut/InBuf: read from `in` (+ frames).
    kSaveOut,   ///< Out/InOut/OutBuf: append to `out` (+ frames).
    kLoadOut,   ///< Out/InOut/OutBuf: read from `in` (+ frames).
    kFreeOut,   ///< OutBuf: free the buffer (nobody will read it).
    kFreeIn,    ///< InBuf: free the buffer (a task that owns its inputs).
  };

  /** An archive for `task` (the object whose Fields() runs). */
  FieldArchive(Mode mode, Task *task) : mode_(mode), base_(task) {}

  /** An input field. */
  template <typename T>
  void In(T &field) {
    static_assert(std::is_trivially_copyable<T>::value,
                  "task fields must be trivially copyable");
    if (mode_ == Mode::kSaveIn) Append(&field, sizeof(T));
    if (mode_ == Mode::kLoadIn) Read(&field, sizeof(T));
  }
  /** An output field. */
  template <typename T>
  void Out(T &field) {
    static_assert(std::is_trivially_copyable<T>::value,
                  "task fields must be trivially copyable");
    if (mode_ == Mode::kCopyOut) CopyToDst(&field, sizeof(T));
    if (mode_ == Mode::kSaveOut) Append(&field, sizeof(T));
    if (mode_ == Mode::kLoadOut) Read(&field, sizeof(T));
  }
  /** A field that is both input and output. */
  template <typename T>
  void InOut(T &field) {
    In(field);
    Out(field);
  }
  /** Applies a CHI_FIELDS list (Task::In(x), Task::Out(y), ...) in order,
   * as if each were the call of the same name on this archive. */
  template <typename... Refs>
  void operator()(const Refs &...refs) {
    (Apply(refs), ...);
  }

  /** An input data buffer of `size` bytes at `p` (a data-segment buffer the
   * caller owns). On another node the method sees a runtime_data copy. */
  void InBuf(hipc::Pointer &p, u64 size);
  /** An output data buffer the method allocated (p, size); the waiter frees
   * it with CHI_IPC->FreeBuffer. */
  void OutBuf(hipc::Pointer &p, u64 &size);

  // --- Set-up and results (runtime) ---
  /** kCopyOut: the task the OUT fields are copied into. */
  void set_dst(Task *dst) { dst_ = reinterpret_cast<char *>(dst); }
  /** kCopyOut: output buffers are re-tagged as owned by the process that
   * owns the task block `task` (the submitter, which frees them; the reaper
   * frees them if it dies). The owner is looked up only if a buffer is
   * returned. */
  void set_owner_of(const hipc::Pointer &task) { owner_task_ = task; }
  /** kFreeIn: free only the buffers process `pid` owns (for buffers that
   * another process named); by default the caller's own are freed as is. */
  void set_free_owner(int pid) { free_owner_ = pid; }
  /** kSave*: where the bytes and frames go. */
  void set_output(std::string *out, std::vector<DataFrame> *frames) {
    out_ = out;
    out_frames_ = frames;
  }
  /** kLoad*: the bytes and frames to read. */
  void set_input(const char *data, u64 size, const FrameView *frames,
                 u32 num_frames) {
    in_ = data;
    in_size_ = size;
    in_frames_ = frames;
    num_in_frames_ = num_frames;
  }
  /** kLoadIn: buffers the archive allocated (free them when the task ends).
   */
  std::vector<hipc::Pointer> &allocated() { return allocated_; }
  /** Ok, or the first problem found (a bad buffer, short input...). */
  const Status &status() const { return status_; }
  /** Total size of the InBuf buffers declared so far (any mode). */
  u64 in_bytes() const { return in_bytes_; }
  /** Bytes of input consumed so far. */
  u64 consumed() const { return in_pos_; }
  /** Frames consumed so far. */
  u32 frames_consumed() const { return next_frame_; }

 private:
  /** One entry of a CHI_FIELDS list. */
  template <typename T>
  void Apply(const internal::FieldRef<internal::FieldKind::kIn, T> &r) {
    In(r.field);
  }
  template <typename T>
  void Apply(const internal::FieldRef<internal::FieldKind::kOut, T> &r) {
    Out(r.field);
  }
  template <typename T>
  void Apply(const internal::FieldRef<internal::FieldKind::kInOut, T> &r) {
    InOut(r.field);
  }
  void Apply(const internal::InBufRef &r) { InBuf(r.p, r.size); }
  void Apply(const internal::OutBufRef &r) { OutBuf(r.p, r.size); }

  /** Records the first error. */
  void Fail(Status s) {
    if (status_.ok()) status_ = std::move(s);
  }
  /** Appends `n` bytes to out_. */
  void Append(const void *src, u64 n) {
    out_->append(static_cast<const char *>(src), n);
  }
  /** Reads `n` bytes from in_, or fails (leaving `dst` untouched). */
  void Read(void *dst, u64 n) {
    if (!status_.ok()) return;
    if (in_size_ - in_pos_ < n) {
      Fail(Status::InvalidArgument("task record is truncated"));
      return;
    }
    std::memcpy(dst, in_ + in_pos_, n);
    in_pos_ += n;
  }
  /** Copies a field of base_ to the same offset in dst_. */
  void CopyToDst(const void *field, u64 n) {
    u64 off = static_cast<const char *>(field) -
              reinterpret_cast<const char *>(base_);
    std::memcpy(dst_ + off, field, n);
  }
  /** The next received frame, or null (and a failure). */
  const FrameView *NextFrame();

  Mode mode_;
  Task *base_;
  char *dst_ = nullptr;
  hipc::Pointer owner_task_;
  int free_owner_ = -1;
  std::string *out_ = nullptr;
  std::vector<DataFrame> *out_frames_ = nullptr;
  const char *in_ = nullptr;
  u64 in_size_ = 0;
  u64 in_pos_ = 0;
  u64 in_bytes_ = 0;  ///< Sum of the InBuf sizes seen.
  const FrameView *in_frames_ = nullptr;
  u32 num_in_frames_ = 0;
  u32 next_frame_ = 0;
  std::vector<hipc::Pointer> allocated_;
  Status status_;
};

}  // namespace chi

#endif  // CHIMAERA_TASK_FIELDS_H_
