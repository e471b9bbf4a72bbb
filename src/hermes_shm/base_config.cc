#include "hermes_shm/config/base_config.h"

#include <yaml-cpp/eventhandler.h>

#include <algorithm>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

#include "hermes_shm/config/config_parse.h"

namespace hshm {

namespace {

/** Runs `fn` (returning Status) and converts any exception it throws into
 * InvalidArgument prefixed with `what`. */
template <typename Fn>
Status RunGuarded(const std::string &what, Fn &&fn) {
  try {
    return fn();
  } catch (const YAML::Exception &e) {
    return Status::InvalidArgument(what + ": " + e.what());
  } catch (const std::exception &e) {
    return Status::InvalidArgument(what + ": " + e.what());
  } catch (...) {
    return Status::InvalidArgument(what + ": unknown exception");
  }
}

/** Counts the documents of a YAML stream that hold a node (an empty one,
 * such as after a final `---`, does not count). */
class DocumentCounter : public YAML::EventHandler {
 public:
  int with_content = 0;
  void OnDocumentStart(const YAML::Mark &) override { seen_node_ = false; }
  void OnDocumentEnd() override { with_content += seen_node_ ? 1 : 0; }
  void OnNull(const YAML::Mark &, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark &, YAML::anchor_t) override {
    seen_node_ = true;
  }
  void OnScalar(const YAML::Mark &, const std::string &, YAML::anchor_t,
                const std::string &) override {
    seen_node_ = true;
  }
  void OnSequenceStart(const YAML::Mark &, const std::string &, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    seen_node_ = true;
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark &, const std::string &, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    seen_node_ = true;
  }
  void OnMapEnd() override {}

 private:
  bool seen_node_ = false;
};

/** Parses the first document of `yaml`, which must hold no second one with
 * content (after `---`; it would otherwise be ignored unread). Returns
 * InvalidArgument with yaml-cpp's message (line and column) on a syntax
 * error. */
StatusOr<YAML::Node> LoadYamlDocument(const std::string &yaml) {
  try {
    YAML::Node root = YAML::Load(yaml);
    // At most three documents are looked at: on some malformed streams the
    // parser reports documents without consuming input (YAML::LoadAll then
    // never returns).
    std::istringstream in(yaml);
    YAML::Parser parser(in);
    DocumentCounter counter;
    for (int i = 0; i < 3 && parser.HandleNextDocument(counter); ++i) {
    }
    if (counter.with_content > 1) {
      return Status::InvalidArgument(
          "the configuration holds " + std::to_string(counter.with_content) +
          " YAML documents (separated by '---'); give one");
    }
    return root;
  } catch (const YAML::Exception &e) {
    return Status::InvalidArgument(std::string("YAML syntax error: ") +
                                   e.what());
  } catch (const std::exception &e) {
    return Status::InvalidArgument(std::string("YAML syntax error: ") +
                                   e.what());
  }
}

}  // namespace

BaseConfig::~BaseConfig() = default;

Status BaseConfig::LoadText(const std::string &yaml, bool with_default) {
  if (with_default) {
    Status st = RunGuarded("invalid default configuration",
                           [&] { return LoadDefault(); });
    if (!st.ok()) return st;
  }
  return ParseYamlText(yaml);
}

Status BaseConfig::LoadFile(const std::string &path, bool with_default) {
  std::string expanded = ConfigParse::ExpandPath(path);
  StatusOr<std::string> text = ConfigParse::ReadFile(expanded);
  if (!text.ok()) {
    return Status(text.status().code(),
                  "cannot load configuration: " + text.status().message());
  }
  Status st = LoadText(*text, with_default);
  if (!st.ok()) {
    return Status(st.code(), "configuration " + expanded + ": " + st.message());
  }
  return st;
}

Status BaseConfig::ParseYamlText(const std::string &yaml) {
  StatusOr<YAML::Node> root = LoadYamlDocument(yaml);
  if (!root.ok()) return root.status();
  if (!root->IsDefined() || root->IsNull()) return Status::Ok();
  return RunGuarded("invalid configuration", [&] { return ParseYAML(*root); });
}

Status BaseConfig::ReadSize(const YAML::Node &node, const std::string &key,
                            u64 *out) {
  HSHM_RETURN_IF_ERROR(CheckParent(node, key));
  if (!node.IsDefined() || !node.IsMap()) return Status::Ok();
  const YAML::Node child = node[Leaf(key)];
  if (!child.IsDefined()) return Status::Ok();
  if (!child.IsScalar()) {
    return Status::InvalidArgument("key '" + key + "': expected a size, got " +
                                   Describe(child));
  }
  StatusOr<u64> size = ConfigParse::ParseSize(child.Scalar());
  if (!size.ok()) {
    return Status::InvalidArgument("key '" + key +
                                   "': " + size.status().message());
  }
  *out = *size;
  return Status::Ok();
}

Status BaseConfig::CheckKeys(const YAML::Node &node,
                             const std::vector<std::string> &allowed,
                             const std::string &where) {
  if (!node.IsDefined() || node.IsNull()) return Status::Ok();
  if (!node.IsMap()) {
    return Status::InvalidArgument("expected a map in " + where + ", got " +
                                   Describe(node));
  }
  std::vector<std::string> seen;  // a few keys: a scan beats a set
  for (const auto &entry : node) {
    const YAML::Node &key = entry.first;
    if (!key.IsScalar()) {
      return Status::InvalidArgument("unknown key " + Describe(key) + " in " +
                                     where);
    }
    const std::string &name = key.Scalar();
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      return Status::InvalidArgument("unknown key '" + name + "' in " + where);
    }
    // yaml-cpp keeps both and a lookup finds the first: say so instead.
    if (std::find(seen.begin(), seen.end(), name) != seen.end()) {
      return Status::InvalidArgument("key '" + name + "' given twice in " +
                                     where);
    }
    seen.push_back(name);
  }
  return Status::Ok();
}

Status BaseConfig::CheckParent(const YAML::Node &node, const std::string &key) {
  if (!node.IsDefined() || node.IsNull() || node.IsMap()) return Status::Ok();
  return Status::InvalidArgument("key '" + key + "': cannot look it up in " +
                                 Describe(node) + " (expected a map)");
}

std::string BaseConfig::Describe(const YAML::Node &node) {
  if (!node.IsDefined()) return "nothing";
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Scalar:
      return "'" + node.Scalar() + "'";
    case YAML::NodeType::Sequence:
      return "a sequence";
    case YAML::NodeType::Map:
      return "a map";
    default:
      return "nothing";
  }
}

}  // namespace hshm
