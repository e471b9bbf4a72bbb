// hshm::Status and hshm::StatusOr<T>: the error type of every fallible call in
// the shared-memory layer and in Chimaera. A Status is either ok or a code plus
// a human-readable message; it lives in process memory only (never in shm).
#ifndef HERMES_SHM_STATUS_H_
#define HERMES_SHM_STATUS_H_

#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>

namespace hshm {

/** Error categories. Values are stable: they travel in task return codes. */
enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,    ///< Malformed input (YAML, hostfile, size, ...).
  kNotFound = 2,           ///< Unknown pool, method, module, file, segment.
  kAlreadyExists = 3,      ///< Name, port or segment already taken.
  kOutOfMemory = 4,        ///< An allocator or /dev/shm is exhausted.
  kResourceExhausted = 5,  ///< A bounded queue is full.
  kUnavailable = 6,        ///< The peer (runtime, node) is not running.
  kTimeout = 7,            ///< A bounded wait ran out.
  kIoError = 8,            ///< A system call failed.
  kInternal = 9,           ///< An invariant broke; a bug.
  kAborted = 10,           ///< Cancelled by shutdown or pool destruction.
  kUnimplemented = 11,     ///< Not supported (yet).
};

/** Returns the name of a status code, e.g. "NotFound". */
const char *StatusCodeName(StatusCode code);

/** An ok value or an error code plus message. Cheap to copy when ok. */
class Status {
 public:
  /** Constructs an ok status. */
  Status() = default;
  /** Constructs a status with `code` and `msg`. */
  Status(StatusCode code, std::string msg)
      : code_(code),
        msg_(msg.empty() ? nullptr : new std::string(std::move(msg))) {}
  /** Copies (the message too: only errors have one). */
  Status(const Status &o)
      : code_(o.code_), msg_(o.msg_ ? new std::string(*o.msg_) : nullptr) {}
  Status &operator=(const Status &o) {
    if (this != &o) {
      code_ = o.code_;
      msg_.reset(o.msg_ ? new std::string(*o.msg_) : nullptr);
    }
    return *this;
  }
  Status(Status &&) noexcept = default;
  Status &operator=(Status &&) noexcept = default;

  /** Returns an ok status. */
  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) {
    return Status(StatusCode::kInvalidArgument, std::move(m));
  }
  static Status NotFound(std::string m) {
    return Status(StatusCode::kNotFound, std::move(m));
  }
  static Status AlreadyExists(std::string m) {
    return Status(StatusCode::kAlreadyExists, std::move(m));
  }
  static Status OutOfMemory(std::string m) {
    return Status(StatusCode::kOutOfMemory, std::move(m));
  }
  static Status ResourceExhausted(std::string m) {
    return Status(StatusCode::kResourceExhausted, std::move(m));
  }
  static Status Unavailable(std::string m) {
    return Status(StatusCode::kUnavailable, std::move(m));
  }
  static Status Timeout(std::string m) {
    return Status(StatusCode::kTimeout, std::move(m));
  }
  static Status IoError(std::string m) {
    return Status(StatusCode::kIoError, std::move(m));
  }
  static Status Internal(std::string m) {
    return Status(StatusCode::kInternal, std::move(m));
  }
  static Status Aborted(std::string m) {
    return Status(StatusCode::kAborted, std::move(m));
  }
  static Status Unimplemented(std::string m) {
    return Status(StatusCode::kUnimplemented, std::move(m));
  }
  /** IoError whose message is `what` followed by strerror(err). */
  static Status FromErrno(const std::string &what, int err);

  /** True when this status carries no error. */
  bool ok() const { return code_ == StatusCode::kOk; }
  /** The error code (kOk when ok). */
  StatusCode code() const { return code_; }
  /** The message (empty when ok). */
  const std::string &message() const { return msg_ ? *msg_ : EmptyMessage(); }
  /** "OK" or "<CodeName>: <message>". */
  std::string ToString() const;

  bool operator==(const Status &o) const {
    return code_ == o.code_ && message() == o.message();
  }

 private:
  /** The message of a status that has none. */
  static const std::string &EmptyMessage();

  StatusCode code_ = StatusCode::kOk;
  /** Null unless there is a message: an ok status is a code and a null
   * pointer, so making, moving and dropping one costs a few stores. */
  std::unique_ptr<std::string> msg_;
};

inline std::ostream &operator<<(std::ostream &os, const Status &s) {
  return os << s.ToString();
}

/** A value of type T or the error that prevented producing one.
 * REQUIRES: value() is only called when ok(). */
template <typename T>
class StatusOr {
 public:
  /** Wraps a value (implicit, so `return value;` works). */
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT
  /** Wraps an error. REQUIRES: !status.ok(). */
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT
    if (status_.ok()) {
      status_ = Status::Internal("StatusOr constructed from an ok Status");
    }
  }

  bool ok() const { return status_.ok(); }
  const Status &status() const { return status_; }
  T &value() & { return *value_; }
  const T &value() const & { return *value_; }
  T &&value() && { return std::move(*value_); }
  T &operator*() & { return *value_; }
  const T &operator*() const & { return *value_; }
  T *operator->() { return &*value_; }
  const T *operator->() const { return &*value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace hshm

#define HSHM_STATUS_CONCAT_INNER_(a, b) a##b
#define HSHM_STATUS_CONCAT_(a, b) HSHM_STATUS_CONCAT_INNER_(a, b)

/** Evaluates `expr` (a Status); returns it from the caller if not ok. */
#define HSHM_RETURN_IF_ERROR(expr)       \
  do {                                   \
    ::hshm::Status _hshm_st = (expr);    \
    if (!_hshm_st.ok()) return _hshm_st; \
  } while (0)

/** Evaluates `rexpr` (a StatusOr); returns its error from the caller, or
 * moves its value into `lhs` (a declaration or an lvalue). */
#define HSHM_ASSIGN_OR_RETURN(lhs, rexpr)                                    \
  HSHM_ASSIGN_OR_RETURN_IMPL_(HSHM_STATUS_CONCAT_(_hshm_so_, __LINE__), lhs, \
                              rexpr)
#define HSHM_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

#endif  // HERMES_SHM_STATUS_H_
