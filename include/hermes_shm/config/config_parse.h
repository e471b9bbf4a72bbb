// hshm::ConfigParse: small, exception-free parsers for the textual values that
// appear in configuration files: byte sizes ("4g"), plain numbers,
// environment-expanded paths ("${HOME}/x") and hostfiles with bracket ranges
// ("node[01-04]").
#ifndef HERMES_SHM_CONFIG_CONFIG_PARSE_H_
#define HERMES_SHM_CONFIG_CONFIG_PARSE_H_

#include <string>
#include <vector>

#include "hermes_shm/status.h"
#include "hermes_shm/types.h"

namespace hshm {

/** Stateless parsing helpers; every function is static and thread-safe (they
 * only read the environment). None of them throws or exits: malformed input
 * yields an error Status whose message quotes the offending text. */
class ConfigParse {
 public:
  /** Most host names one hostfile (or one pattern) may expand to. */
  static constexpr u64 kMaxHosts = 1000000;
  /** Longest host name a pattern may expand to (a DNS name has at most 253
   * bytes), checked before anything is expanded. */
  static constexpr u64 kMaxHostNameBytes = 255;

  /** Parses a byte size such as "4g", "512m", "64k", "100", "1.5g", "8KB" or
   * "2GiB". Suffixes b, k, m, g, t (case-insensitive, optionally followed by
   * "B" or "iB") are binary multiples of 1024; a number without a suffix is a
   * count of bytes. Fractions are allowed and rounded down to whole bytes.
   * Surrounding whitespace (and whitespace between number and suffix) is
   * ignored. Returns InvalidArgument for empty, negative, malformed or
   * overflowing (> 2^64 - 1) input. */
  static StatusOr<u64> ParseSize(const std::string &text);

  /** Parses a non-negative decimal integer (surrounding whitespace ignored).
   * Returns InvalidArgument for empty, signed, malformed or overflowing
   * input. */
  static StatusOr<u64> ParseNumber(const std::string &text);

  /** Returns `text` with every `${VAR}` and `$VAR` (VAR =
   * [A-Za-z_][A-Za-z0-9_]*) replaced by the value of the environment variable,
   * or by the empty string when it is unset. A `$` not followed by a valid
   * name, and a `${` that is unterminated or does not enclose a valid name, are
   * kept literally. */
  static std::string ExpandPath(const std::string &text);

  /** Largest file ReadFile accepts (configurations and hostfiles). */
  static constexpr size_t kMaxFileSize = 16u << 20;

  /** Reads the whole file at `path` (no expansion is applied). Returns
   * NotFound when it does not exist, InvalidArgument when it is not a
   * regular file (a FIFO, a device such as /dev/zero) or is larger than
   * kMaxFileSize, IoError when it cannot be read (or is a directory); the
   * message names the path. */
  static StatusOr<std::string> ReadFile(const std::string &path);

  /** Expands one host pattern. Bracket groups hold comma-separated numbers or
   * ranges, e.g. "node[01-04,7]" -> node01..node04, node7. A range keeps the
   * zero padding of its first number when that has a leading zero. Several
   * groups expand as a cartesian product, left group outermost; text around
   * groups is kept. Returns InvalidArgument (naming the pattern) for an empty
   * pattern, whitespace outside brackets, unbalanced or nested brackets, an
   * empty, reversed or non-numeric range, or more than kMaxHosts results. */
  static StatusOr<std::vector<std::string>> ExpandHostPattern(
      const std::string &pattern);

  /** Parses hostfile contents: one host pattern per line, `#` starts a
   * comment, blank lines are skipped, surrounding whitespace is stripped.
   * Returns the expanded hosts in file order, or InvalidArgument naming the
   * (1-based) line number and text of the first bad line, or when the total
   * exceeds kMaxHosts. */
  static StatusOr<std::vector<std::string>> ParseHostfileText(
      const std::string &text);

  /** Reads the hostfile at ExpandPath(path) and parses it with
   * ParseHostfileText. A missing file yields NotFound naming the path; parse
   * errors are prefixed with the path. */
  static StatusOr<std::vector<std::string>> ParseHostfile(
      const std::string &path);
};

}  // namespace hshm

#endif  // HERMES_SHM_CONFIG_CONFIG_PARSE_H_
