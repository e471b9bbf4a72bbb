#include "hermes_shm/lightbeam/curve.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace hshm::lbm {

namespace {

/** Largest key file read: a real one is about 200 bytes. */
constexpr off_t kMaxKeyFileBytes = 64 << 10;

/** `s` without leading and trailing blanks. */
std::string Trim(const std::string &s) {
  size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

/** Ok if `key` is 40 valid Z85 characters; `what` names it in the error. */
Status CheckZ85Key(const std::string &key, const char *what) {
  if (key.size() != kCurveKeyZ85Len) {
    return Status::InvalidArgument(
        std::string(what) + " has " + std::to_string(key.size()) +
        " characters, expected " + std::to_string(kCurveKeyZ85Len) + " (Z85)");
  }
  uint8_t raw[32];
  if (zmq_z85_decode(raw, key.c_str()) == nullptr) {
    return Status::InvalidArgument(std::string(what) + " is not valid Z85");
  }
  return Status::Ok();
}

/** Writes all of `text` to `fd`; false (errno set) on failure. */
bool WriteAll(int fd, const std::string &text) {
  size_t off = 0;
  while (off < text.size()) {
    ssize_t n = write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

bool CurveAvailable() { return zmq_has("curve") == 1; }

StatusOr<CurveKeyPair> NewCurveKeyPair() {
  if (!CurveAvailable()) {
    return Status::Unimplemented("libzmq was built without CURVE support");
  }
  char pub[kCurveKeyZ85Len + 1], sec[kCurveKeyZ85Len + 1];
  if (zmq_curve_keypair(pub, sec) != 0) {
    return Status::FromErrno("zmq_curve_keypair", errno);
  }
  CurveKeyPair kp{pub, sec};
  memset(sec, 0, sizeof(sec));
  return kp;
}

Status CheckCurveKeyPair(const CurveKeyPair &keys) {
  HSHM_RETURN_IF_ERROR(CheckZ85Key(keys.public_key, "public_key"));
  HSHM_RETURN_IF_ERROR(CheckZ85Key(keys.secret_key, "secret_key"));
  if (!CurveAvailable()) {
    return Status::Unimplemented("libzmq was built without CURVE support");
  }
  char derived[kCurveKeyZ85Len + 1];
  if (zmq_curve_public(derived, keys.secret_key.c_str()) != 0) {
    return Status::InvalidArgument("secret_key is not a CURVE secret key");
  }
  if (keys.public_key != derived) {
    return Status::InvalidArgument(
        "public_key is not the public key of secret_key");
  }
  return Status::Ok();
}

std::string FormatCurveKeyFile(const CurveKeyPair &keys) {
  return "# Chimaera cluster CURVE key pair (ZeroMQ Z85), written by "
         "chimaera_keygen.\n"
         "# Every node of the cluster reads this file; whoever holds it is a "
         "cluster\n"
         "# member. Keep it private (mode 0600).\n"
         "public_key: " +
         keys.public_key + "\nsecret_key: " + keys.secret_key + "\n";
}

StatusOr<CurveKeyPair> ParseCurveKeyFile(const std::string &text) {
  CurveKeyPair kp;
  bool have_pub = false, have_sec = false;
  size_t line_no = 0, pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = Trim(text.substr(pos, nl - pos));
    pos = nl + 1;
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    const std::string where = "line " + std::to_string(line_no);
    size_t colon = line.find(':');
    if (colon == std::string::npos) {
      return Status::InvalidArgument(where + ": expected 'name: value'");
    }
    std::string name = Trim(line.substr(0, colon));
    std::string value = Trim(line.substr(colon + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    bool *seen = nullptr;
    std::string *dst = nullptr;
    if (name == "public_key") {
      seen = &have_pub;
      dst = &kp.public_key;
    } else if (name == "secret_key") {
      seen = &have_sec;
      dst = &kp.secret_key;
    } else {
      // The name only: a stray value could be a secret.
      return Status::InvalidArgument(where + ": unknown key '" +
                                     name.substr(0, 32) + "'");
    }
    if (*seen) {
      return Status::InvalidArgument(where + ": " + name + " given twice");
    }
    *seen = true;
    *dst = std::move(value);
  }
  if (!have_pub) return Status::InvalidArgument("no public_key line");
  if (!have_sec) return Status::InvalidArgument("no secret_key line");
  HSHM_RETURN_IF_ERROR(CheckCurveKeyPair(kp));
  return kp;
}

StatusOr<CurveKeyPair> ReadCurveKeyFile(const std::string &path) {
  const std::string where = "CURVE key file " + path;
  if (path.empty()) return Status::InvalidArgument("CURVE key file: no path");
  // O_NONBLOCK: opening a FIFO would otherwise wait for a writer, before
  // fstat can refuse it (on a regular file the flag changes nothing).
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) {
      return Status::NotFound(where +
                              ": no such file (create one with "
                              "chimaera_keygen)");
    }
    return Status::FromErrno(where, err);
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return Status::FromErrno(where, err);
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return Status::InvalidArgument(where + ": not a regular file");
  }
  if (st.st_mode & (S_IRWXO | S_IWGRP)) {
    close(fd);
    char mode[8];
    snprintf(mode, sizeof(mode), "%04o", st.st_mode & 07777);
    return Status::InvalidArgument(
        where + ": mode " + mode +
        " lets other users read or change the cluster secret key (run chmod "
        "600 " +
        path + ")");
  }
  if (st.st_size > kMaxKeyFileBytes) {
    close(fd);
    return Status::InvalidArgument(where + ": too large for a key file (" +
                                   std::to_string(st.st_size) + " bytes)");
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t off = 0;
  while (off < text.size()) {
    ssize_t n = read(fd, &text[off], text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      close(fd);
      return Status::FromErrno(where, err);
    }
    if (n == 0) break;
    off += static_cast<size_t>(n);
  }
  close(fd);
  text.resize(off);
  StatusOr<CurveKeyPair> kp = ParseCurveKeyFile(text);
  std::fill(text.begin(), text.end(), '\0');
  if (!kp.ok()) {
    return Status(kp.status().code(), where + ": " + kp.status().message());
  }
  return kp;
}

Status WriteCurveKeyFile(const std::string &path, const CurveKeyPair &keys,
                         bool overwrite) {
  const std::string where = "CURVE key file " + path;
  Status valid = CheckCurveKeyPair(keys);
  if (!valid.ok()) {
    return Status(valid.code(), where + ": " + valid.message());
  }
  const std::string tmp =
      overwrite ? path + ".tmp." + std::to_string(getpid()) : path;
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    int err = errno;
    if (err == EEXIST && !overwrite) {
      return Status::AlreadyExists(where + ": exists (not replaced)");
    }
    return Status::FromErrno(where, err);
  }
  bool ok = fchmod(fd, 0600) == 0 && WriteAll(fd, FormatCurveKeyFile(keys)) &&
            fsync(fd) == 0;
  int err = errno;
  if (close(fd) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (ok && overwrite && rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    unlink(tmp.c_str());
    return Status::FromErrno(where, err);
  }
  return Status::Ok();
}

}  // namespace hshm::lbm
