#include "hermes_shm/config/config_parse.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <utility>

namespace hshm {

namespace {

constexpr u64 kU64Max = std::numeric_limits<u64>::max();

/** True for ASCII whitespace (locale-independent). */
bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
         c == '\f';
}

/** True for '0'..'9'. */
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

/** True for a character that may start an environment variable name. */
bool IsNameStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

/** True for a character that may continue an environment variable name. */
bool IsNameChar(char c) { return IsNameStart(c) || IsDigit(c); }

/** True when `s` is a valid, non-empty environment variable name. */
bool IsValidName(const std::string &s) {
  if (s.empty() || !IsNameStart(s[0])) return false;
  for (char c : s) {
    if (!IsNameChar(c)) return false;
  }
  return true;
}

/** Returns `s` without leading and trailing whitespace. */
std::string Trim(const std::string &s) {
  size_t begin = 0;
  size_t end = s.size();
  while (begin < end && IsSpace(s[begin])) ++begin;
  while (end > begin && IsSpace(s[end - 1])) --end;
  return s.substr(begin, end - begin);
}

/** Returns `s` with ASCII letters lowered. */
std::string ToLower(std::string s) {
  for (char &c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

/** True when `s` is non-empty and made only of decimal digits. */
bool AllDigits(const std::string &s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsDigit(c)) return false;
  }
  return true;
}

/** Parses the all-digit string `s` into *out. Returns false on overflow.
 * REQUIRES: AllDigits(s). */
bool DigitsToU64(const std::string &s, u64 *out) {
  u64 v = 0;
  for (char c : s) {
    u64 d = static_cast<u64>(c - '0');
    if (v > (kU64Max - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

/** Maps a lower-case size unit ("", "b", "k", "kb", "kib", ... "tib") to the
 * power of two it multiplies by. Returns false for an unknown unit. */
bool UnitShift(const std::string &unit, int *shift) {
  if (unit.empty() || unit == "b") {
    *shift = 0;
    return true;
  }
  switch (unit[0]) {
    case 'k':
      *shift = 10;
      break;
    case 'm':
      *shift = 20;
      break;
    case 'g':
      *shift = 30;
      break;
    case 't':
      *shift = 40;
      break;
    default:
      return false;
  }
  std::string rest = unit.substr(1);
  return rest.empty() || rest == "b" || rest == "ib";
}

/** Returns floor(0.<digits> * 2^shift) exactly, by doubling the decimal
 * fraction `shift` times and collecting the carries as binary digits.
 * REQUIRES: `digits` holds only decimal digits; 0 <= shift <= 63. */
u64 FractionTimesPow2(const std::string &digits, int shift) {
  std::string d = digits;
  u64 result = 0;
  for (int i = 0; i < shift; ++i) {
    int carry = 0;
    for (size_t j = d.size(); j-- > 0;) {
      int v = (d[j] - '0') * 2 + carry;
      d[j] = static_cast<char>('0' + v % 10);
      carry = v / 10;
    }
    result = (result << 1) | static_cast<u64>(carry);
  }
  return result;
}

/** Formats `v` in decimal, left-padded with zeros to at least `width`. */
std::string ZeroPad(u64 v, size_t width) {
  std::string s = std::to_string(v);
  if (s.size() < width) s.insert(0, width - s.size(), '0');
  return s;
}

/** Expands the contents of one bracket group (without the brackets), e.g.
 * "01-04,7", appending the values to *values. At most `limit` values may be
 * produced. Returns InvalidArgument with a reason (the caller names the
 * pattern). */
Status ExpandGroup(const std::string &content, u64 limit,
                   std::vector<std::string> *values) {
  size_t start = 0;
  while (true) {
    size_t comma = content.find(',', start);
    size_t stop = comma == std::string::npos ? content.size() : comma;
    std::string item = Trim(content.substr(start, stop - start));
    if (item.empty()) {
      return Status::InvalidArgument("empty range in '[" + content + "]'");
    }
    size_t dash = item.find('-');
    std::string a =
        dash == std::string::npos ? item : Trim(item.substr(0, dash));
    std::string b =
        dash == std::string::npos ? item : Trim(item.substr(dash + 1));
    if (!AllDigits(a) || !AllDigits(b)) {
      return Status::InvalidArgument("non-numeric range '" + item + "'");
    }
    u64 lo = 0;
    u64 hi = 0;
    if (!DigitsToU64(a, &lo) || !DigitsToU64(b, &hi)) {
      return Status::InvalidArgument("number too large in range '" + item +
                                     "'");
    }
    if (lo > hi) {
      return Status::InvalidArgument("reversed range '" + item + "'");
    }
    if (std::max(a.size(), b.size()) > ConfigParse::kMaxHostNameBytes) {
      return Status::InvalidArgument(
          "a number longer than " +
          std::to_string(ConfigParse::kMaxHostNameBytes) + " digits");
    }
    if (hi - lo >= limit - values->size()) {
      return Status::InvalidArgument("expands to more than " +
                                     std::to_string(limit) + " hosts");
    }
    size_t width = (a.size() > 1 && a[0] == '0') ? a.size() : 0;
    for (u64 v = lo;; ++v) {
      values->push_back(ZeroPad(v, width));
      if (v == hi) break;
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return Status::Ok();
}

/** Closes a FILE* (deleter for std::unique_ptr). */
struct FileCloser {
  void operator()(std::FILE *f) const { std::fclose(f); }
};

}  // namespace

StatusOr<u64> ConfigParse::ParseSize(const std::string &text) {
  auto fail = [&text](const std::string &why) {
    return Status::InvalidArgument("invalid size '" + text + "': " + why);
  };
  std::string s = Trim(text);
  if (s.empty()) return fail("empty");
  if (s[0] == '-') return fail("negative sizes are not allowed");
  size_t pos = 0;
  u64 whole = 0;
  bool overflow = false;
  size_t int_digits = 0;
  for (; pos < s.size() && IsDigit(s[pos]); ++pos, ++int_digits) {
    u64 d = static_cast<u64>(s[pos] - '0');
    if (whole > (kU64Max - d) / 10) {
      overflow = true;
    } else {
      whole = whole * 10 + d;
    }
  }
  std::string frac;
  if (pos < s.size() && s[pos] == '.') {
    for (++pos; pos < s.size() && IsDigit(s[pos]); ++pos)
      frac.push_back(s[pos]);
  }
  if (int_digits == 0 && frac.empty()) return fail("expected a number");
  while (pos < s.size() && IsSpace(s[pos])) ++pos;
  std::string unit = s.substr(pos);
  int shift = 0;
  if (!UnitShift(ToLower(unit), &shift)) {
    return fail("unknown unit '" + unit +
                "' (expected b, k, m, g or t, optionally followed by B or "
                "iB)");
  }
  if (overflow || whole > (kU64Max >> shift)) return fail("value too large");
  u64 bytes = whole << shift;
  if (!frac.empty()) {
    u64 extra = FractionTimesPow2(frac, shift);
    if (bytes > kU64Max - extra) return fail("value too large");
    bytes += extra;
  }
  return bytes;
}

StatusOr<u64> ConfigParse::ParseNumber(const std::string &text) {
  std::string s = Trim(text);
  if (s.empty()) {
    return Status::InvalidArgument("invalid number '" + text + "': empty");
  }
  if (!AllDigits(s)) {
    return Status::InvalidArgument("invalid number '" + text +
                                   "': expected a non-negative integer");
  }
  u64 v = 0;
  if (!DigitsToU64(s, &v)) {
    return Status::InvalidArgument("invalid number '" + text +
                                   "': value too large");
  }
  return v;
}

std::string ConfigParse::ExpandPath(const std::string &text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] != '$') {
      out.push_back(text[i++]);
      continue;
    }
    std::string name;
    size_t next = i + 1;
    if (next < text.size() && text[next] == '{') {
      size_t close = text.find('}', next + 1);
      if (close != std::string::npos) {
        std::string inner = text.substr(next + 1, close - next - 1);
        if (IsValidName(inner)) {
          name = inner;
          next = close + 1;
        }
      }
    } else {
      size_t end = next;
      if (end < text.size() && IsNameStart(text[end])) {
        while (end < text.size() && IsNameChar(text[end])) ++end;
        name = text.substr(next, end - next);
        next = end;
      }
    }
    if (name.empty()) {
      out.push_back(text[i++]);  // a literal '$'
      continue;
    }
    const char *value = std::getenv(name.c_str());
    if (value != nullptr) out += value;
    i = next;
  }
  return out;
}

StatusOr<std::string> ConfigParse::ReadFile(const std::string &path) {
  // Only regular files: opening a FIFO would block, and /dev/zero would
  // never end.
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode) &&
      !S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument("'" + path + "' is not a regular file");
  }
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (!file) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return Status::NotFound("file '" + path + "' not found");
    }
    return Status::FromErrno("cannot open '" + path + "'", err);
  }
  std::string data;
  char buf[16384];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof(buf), file.get())) > 0) {
    data.append(buf, n);
    if (data.size() > kMaxFileSize) {
      return Status::InvalidArgument("'" + path + "' is larger than " +
                                     std::to_string(kMaxFileSize >> 20) +
                                     " MiB");
    }
  }
  if (std::ferror(file.get())) {
    int err = errno;
    return Status::FromErrno("cannot read '" + path + "'", err);
  }
  return data;
}

StatusOr<std::vector<std::string>> ConfigParse::ExpandHostPattern(
    const std::string &pattern) {
  std::string p = Trim(pattern);
  auto fail = [&p](const std::string &why) {
    return Status::InvalidArgument("invalid host pattern '" + p + "': " + why);
  };
  if (p.empty()) return fail("empty pattern");
  // No host name does; ssh and pdsh would take it for an option.
  if (p[0] == '-') return fail("a host name cannot begin with '-'");
  // Each segment is a list of alternatives; a literal is a one-item segment.
  std::vector<std::vector<std::string>> segments;
  std::string literal;
  u64 total = 1;
  size_t i = 0;
  while (i < p.size()) {
    char c = p[i];
    if (c == ']') {
      return fail("unbalanced ']' at column " + std::to_string(i + 1));
    }
    if (IsSpace(c)) return fail("whitespace outside brackets");
    if (c != '[') {
      literal.push_back(c);
      ++i;
      continue;
    }
    size_t close = p.find_first_of("[]", i + 1);
    if (close == std::string::npos || p[close] == '[') {
      return fail("unbalanced '[' at column " + std::to_string(i + 1));
    }
    if (!literal.empty()) {
      segments.push_back({literal});
      literal.clear();
    }
    std::vector<std::string> values;
    Status st = ExpandGroup(p.substr(i + 1, close - i - 1), kMaxHosts, &values);
    if (!st.ok()) return fail(st.message());
    total *= values.size();  // Both factors <= kMaxHosts: no overflow.
    if (total > kMaxHosts) {
      return fail("expands to more than " + std::to_string(kMaxHosts) +
                  " hosts");
    }
    segments.push_back(std::move(values));
    i = close + 1;
  }
  if (!literal.empty()) segments.push_back({literal});
  // Refused before expanding: 10^6 names of 100 KB each is 100 GB.
  size_t longest = 0;
  for (const auto &segment : segments) {
    size_t widest = 0;
    for (const std::string &v : segment) widest = std::max(widest, v.size());
    longest += widest;
  }
  if (longest > kMaxHostNameBytes) {
    return fail("a host name would be longer than " +
                std::to_string(kMaxHostNameBytes) + " bytes");
  }
  std::vector<std::string> hosts{std::string()};
  for (const auto &segment : segments) {
    std::vector<std::string> next;
    next.reserve(hosts.size() * segment.size());
    for (const auto &prefix : hosts) {
      for (const auto &value : segment) next.push_back(prefix + value);
    }
    hosts.swap(next);
  }
  return hosts;
}

StatusOr<std::vector<std::string>> ConfigParse::ParseHostfileText(
    const std::string &text) {
  std::vector<std::string> hosts;
  size_t start = 0;
  size_t line_no = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    ++line_no;
    std::string line = text.substr(start, end - start);
    start = end + 1;
    size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    line = Trim(line);
    if (line.empty()) continue;
    std::string where =
        "hostfile line " + std::to_string(line_no) + " ('" + line + "'): ";
    StatusOr<std::vector<std::string>> expanded = ExpandHostPattern(line);
    if (!expanded.ok()) {
      return Status::InvalidArgument(where + expanded.status().message());
    }
    if (expanded->size() > kMaxHosts - hosts.size()) {
      return Status::InvalidArgument(where + "hostfile expands to more than " +
                                     std::to_string(kMaxHosts) + " hosts");
    }
    for (auto &host : *expanded) hosts.push_back(std::move(host));
  }
  return hosts;
}

StatusOr<std::vector<std::string>> ConfigParse::ParseHostfile(
    const std::string &path) {
  std::string expanded = ExpandPath(path);
  StatusOr<std::string> data = ReadFile(expanded);
  if (!data.ok()) {
    return Status(data.status().code(),
                  "cannot load hostfile: " + data.status().message());
  }
  StatusOr<std::vector<std::string>> hosts = ParseHostfileText(*data);
  if (!hosts.ok()) {
    return Status(hosts.status().code(),
                  "'" + expanded + "': " + hosts.status().message());
  }
  return hosts;
}

}  // namespace hshm
