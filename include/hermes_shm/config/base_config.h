// hshm::BaseConfig: the base of every YAML configuration object. It turns
// yaml-cpp's exceptions into hshm::Status values and offers typed, checked
// readers (ReadScalar, ReadSize, ReadVector, CheckKeys) to subclasses.
#ifndef HERMES_SHM_CONFIG_BASE_CONFIG_H_
#define HERMES_SHM_CONFIG_BASE_CONFIG_H_

#include <yaml-cpp/yaml.h>

#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "hermes_shm/status.h"
#include "hermes_shm/types.h"

namespace hshm {

/** A configuration loaded from YAML text or a YAML file.
 *
 * Subclasses hold the settings as plain members, set their defaults in
 * LoadDefault() (typically by passing an embedded default document to
 * ParseYamlText()) and read a parsed document in ParseYAML(). Loading never
 * throws: syntax errors and exceptions escaping ParseYAML() become
 * InvalidArgument. Not thread-safe; load before sharing. */
class BaseConfig {
 public:
  /** Destroys the configuration. */
  virtual ~BaseConfig();

  /** Loads `yaml`: when `with_default`, first LoadDefault(), then the
   * document is parsed and handed to ParseYAML() (an empty or null document
   * changes nothing). Returns InvalidArgument carrying yaml-cpp's message
   * (line and column) on a syntax error or on a conversion error thrown by
   * ParseYAML(), or whatever error ParseYAML()/LoadDefault() returned. On
   * error the object may be partially updated. */
  Status LoadText(const std::string &yaml, bool with_default = true);

  /** Loads the file at ConfigParse::ExpandPath(path) as LoadText() does.
   * Returns NotFound when it does not exist, IoError when it cannot be read
   * (both name the path); other errors are prefixed with "configuration
   * <path>: ". */
  Status LoadFile(const std::string &path, bool with_default = true);

 protected:
  /** Resets every setting to its default. Called by LoadText()/LoadFile()
   * when `with_default` is true. */
  virtual Status LoadDefault() = 0;

  /** Applies the settings in `node` (the document root; never null) on top
   * of the current values. May throw YAML::Exception; the caller converts
   * it to InvalidArgument. */
  virtual Status ParseYAML(const YAML::Node &node) = 0;

  /** Parses `yaml` and passes a non-null root to ParseYAML(). Syntax errors
   * and exceptions from ParseYAML() become InvalidArgument. Meant for
   * LoadDefault() implementations. */
  Status ParseYamlText(const std::string &yaml);

  // In the Read* calls below, `key` may be dotted ("workers.low_latency"):
  // the part after the last '.' is looked up in `node`, and the whole key
  // names the value in errors, so that they say which section it is in.

  /** Reads the scalar node[key] into *out when present. An absent key, or a
   * null/undefined `node`, leaves *out untouched and returns ok. Returns
   * InvalidArgument "key '<key>': expected <type>, got '<text>'" when the
   * value is not a scalar convertible to T (e.g. "abc" for an int, "-1" for
   * an unsigned), or when `node` is neither null nor a map. */
  template <typename T>
  static Status ReadScalar(const YAML::Node &node, const std::string &key,
                           T *out) {
    HSHM_RETURN_IF_ERROR(CheckParent(node, key));
    if (!node.IsDefined() || !node.IsMap()) return Status::Ok();
    const YAML::Node child = node[Leaf(key)];
    if (!child.IsDefined()) return Status::Ok();
    return ConvertScalar(child, "key '" + key + "'", out);
  }

  /** Reads node[key], an integer or a size string such as "4g", into *out
   * via ConfigParse::ParseSize. Absent keys leave *out untouched. Errors are
   * InvalidArgument naming the key. */
  static Status ReadSize(const YAML::Node &node, const std::string &key,
                         u64 *out);

  /** Reads the sequence node[key] of scalars convertible to T into *out,
   * replacing its contents (only on success). Absent keys leave *out
   * untouched. Returns InvalidArgument naming the key (and the item index)
   * when the value is not a sequence or an item does not convert. */
  template <typename T>
  static Status ReadVector(const YAML::Node &node, const std::string &key,
                           std::vector<T> *out) {
    HSHM_RETURN_IF_ERROR(CheckParent(node, key));
    if (!node.IsDefined() || !node.IsMap()) return Status::Ok();
    const YAML::Node child = node[Leaf(key)];
    if (!child.IsDefined()) return Status::Ok();
    if (!child.IsSequence()) {
      return Status::InvalidArgument(
          "key '" + key + "': expected a sequence of " + TypeName<T>() +
          ", got " + Describe(child));
    }
    std::vector<T> values;
    values.reserve(child.size());
    size_t index = 0;
    for (const YAML::Node &item : child) {
      T value{};
      HSHM_RETURN_IF_ERROR(ConvertScalar(
          item, "key '" + key + "' item " + std::to_string(index), &value));
      values.push_back(std::move(value));
      ++index;
    }
    *out = std::move(values);
    return Status::Ok();
  }

  /** Checks that every key of the map `node` is in `allowed`. Returns
   * InvalidArgument "unknown key '<k>' in <where>" otherwise, or when `node`
   * is neither a map nor null/undefined. */
  static Status CheckKeys(const YAML::Node &node,
                          const std::vector<std::string> &allowed,
                          const std::string &where);

 private:
  /** The part of the (possibly dotted) `key` after its last '.'. */
  static std::string Leaf(const std::string &key) {
    const size_t dot = key.rfind('.');
    return dot == std::string::npos ? key : key.substr(dot + 1);
  }

  /** Returns InvalidArgument when `node` is defined, non-null and not a map
   * (so node[key] cannot be looked up); ok otherwise. */
  static Status CheckParent(const YAML::Node &node, const std::string &key);

  /** Describes a node for error messages: "'<text>'" for a scalar, else
   * "null", "a sequence", "a map" or "nothing". */
  static std::string Describe(const YAML::Node &node);

  /** Human-readable name of the type T for error messages. */
  template <typename T>
  static std::string TypeName() {
    if constexpr (std::is_same_v<T, bool>) {
      return "boolean";
    } else if constexpr (std::is_integral_v<T> && std::is_unsigned_v<T>) {
      return "non-negative integer";
    } else if constexpr (std::is_integral_v<T>) {
      return "integer";
    } else if constexpr (std::is_floating_point_v<T>) {
      return "number";
    } else if constexpr (std::is_same_v<T, std::string>) {
      return "string";
    } else {
      return "value";
    }
  }

  /** Converts the scalar `value` to T into *out. Returns InvalidArgument
   * "<what>: expected <type>, got <Describe(value)>" when `value` is not a
   * scalar or does not convert; *out is then untouched. */
  template <typename T>
  static Status ConvertScalar(const YAML::Node &value, const std::string &what,
                              T *out) {
    Status bad = Status::InvalidArgument(what + ": expected " + TypeName<T>() +
                                         ", got " + Describe(value));
    if (!value.IsScalar()) return bad;
    if constexpr (std::is_integral_v<T> && std::is_unsigned_v<T> &&
                  !std::is_same_v<T, bool>) {
      // Some yaml-cpp versions wrap "-1" around instead of failing.
      const std::string &text = value.Scalar();
      if (text.find('-') != std::string::npos) return bad;
    }
    try {
      *out = value.as<T>();
    } catch (const YAML::Exception &) {
      return bad;
    }
    return Status::Ok();
  }
};

}  // namespace hshm

#endif  // HERMES_SHM_CONFIG_BASE_CONFIG_H_
