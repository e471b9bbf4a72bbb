// A small JSON reader for the tools and their tests: parses the objects that
// chimaera_stat --json prints (objects, arrays, strings, numbers, true,
// false, null). Header-only; not a general-purpose library (no \u escapes
// beyond ASCII, numbers kept as double).
#ifndef CHIMAERA_TOOLS_JSON_LITE_H_
#define CHIMAERA_TOOLS_JSON_LITE_H_

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

namespace chi_tools {

/** One JSON value. */
struct JsonValue {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  double number = 0;
  std::string str;
  std::vector<JsonValue> array;
  std::map<std::string, JsonValue> object;

  /** True if this is an object with member `key`. */
  bool Has(const std::string &key) const {
    return kind == Kind::kObject && object.count(key) != 0;
  }
  /** Member `key` of an object, or a null value if there is none. */
  const JsonValue &operator[](const std::string &key) const {
    static const JsonValue kNull;
    if (kind != Kind::kObject) return kNull;
    auto it = object.find(key);
    return it == object.end() ? kNull : it->second;
  }
  /** The number, or `dflt` if this is not a number. */
  double Num(double dflt = 0) const {
    return kind == Kind::kNumber ? number : dflt;
  }
};

/** Recursive-descent parser over one string. */
class JsonParser {
 public:
  /** Parses `text` (one value, surrounding whitespace allowed) into `out`;
   * false with `error` set if it is not valid JSON. */
  static bool Parse(const std::string &text, JsonValue *out,
                    std::string *error) {
    JsonParser p(text);
    if (!p.Value(out, 0)) {
      if (error) *error = p.error_;
      return false;
    }
    p.Space();
    if (p.pos_ != text.size()) {
      if (error) *error = "trailing characters at " + std::to_string(p.pos_);
      return false;
    }
    return true;
  }

 private:
  explicit JsonParser(const std::string &text) : s_(text) {}

  /** Skips whitespace. */
  void Space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' ||
                                s_[pos_] == '\t' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }
  /** Records an error at the current position; returns false. */
  bool Fail(const std::string &what) {
    error_ = what + " at offset " + std::to_string(pos_);
    return false;
  }
  /** Consumes `word` if it comes next. */
  bool Word(const char *word) {
    std::string w(word);
    if (s_.compare(pos_, w.size(), w) != 0) return false;
    pos_ += w.size();
    return true;
  }
  /** Parses a string literal (the opening quote is next) into `out`. */
  bool String(std::string *out) {
    ++pos_;
    while (pos_ < s_.size() && s_[pos_] != '"') {
      char c = s_[pos_++];
      if (c != '\\') {
        *out += c;
        continue;
      }
      if (pos_ >= s_.size()) break;
      char e = s_[pos_++];
      switch (e) {
        case 'n':
          *out += '\n';
          break;
        case 't':
          *out += '\t';
          break;
        case 'r':
          *out += '\r';
          break;
        case 'b':
          *out += '\b';
          break;
        case 'f':
          *out += '\f';
          break;
        case 'u': {
          if (pos_ + 4 > s_.size()) return Fail("short \\u escape");
          long v = std::strtol(s_.substr(pos_, 4).c_str(), nullptr, 16);
          pos_ += 4;
          *out += v < 0x80 ? static_cast<char>(v) : '?';
          break;
        }
        default:
          *out += e;
      }
    }
    if (pos_ >= s_.size()) return Fail("unterminated string");
    ++pos_;
    return true;
  }
  /** Parses any value into `out`; `depth` bounds nesting. */
  bool Value(JsonValue *out, int depth) {
    if (depth > 64) return Fail("nesting too deep");
    Space();
    if (pos_ >= s_.size()) return Fail("unexpected end");
    char c = s_[pos_];
    if (c == '{') {
      out->kind = JsonValue::Kind::kObject;
      ++pos_;
      Space();
      if (pos_ < s_.size() && s_[pos_] == '}') return ++pos_, true;
      for (;;) {
        Space();
        if (pos_ >= s_.size() || s_[pos_] != '"') return Fail("expected key");
        std::string key;
        if (!String(&key)) return false;
        Space();
        if (pos_ >= s_.size() || s_[pos_] != ':') return Fail("expected ':'");
        ++pos_;
        if (!Value(&out->object[key], depth + 1)) return false;
        Space();
        if (pos_ < s_.size() && s_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < s_.size() && s_[pos_] == '}') return ++pos_, true;
        return Fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      out->kind = JsonValue::Kind::kArray;
      ++pos_;
      Space();
      if (pos_ < s_.size() && s_[pos_] == ']') return ++pos_, true;
      for (;;) {
        out->array.emplace_back();
        if (!Value(&out->array.back(), depth + 1)) return false;
        Space();
        if (pos_ < s_.size() && s_[pos_] == ',') {
          ++pos_;
          continue;
        }
        if (pos_ < s_.size() && s_[pos_] == ']') return ++pos_, true;
        return Fail("expected ',' or ']'");
      }
    }
    if (c == '"') {
      out->kind = JsonValue::Kind::kString;
      return String(&out->str);
    }
    if (Word("true") || Word("false")) {
      out->kind = JsonValue::Kind::kBool;
      out->boolean = s_[pos_ - 1] == 'e' && s_[pos_ - 2] == 'u';
      return true;
    }
    if (Word("null")) return true;
    const char *begin = s_.c_str() + pos_;
    char *end = nullptr;
    out->number = std::strtod(begin, &end);
    if (end == begin) return Fail("unexpected character");
    out->kind = JsonValue::Kind::kNumber;
    pos_ += static_cast<size_t>(end - begin);
    return true;
  }

  const std::string &s_;
  size_t pos_ = 0;
  std::string error_;
};

}  // namespace chi_tools

#endif  // CHIMAERA_TOOLS_JSON_LITE_H_
