// xml_reader.h: a strict reader of the XML subset an SVG file uses, for tests.
//
// It checks well-formedness (one root element, every tag closed in order,
// attribute values quoted, no attribute twice on an element, only the five
// predefined entities and character references, no stray '<' or '&' in text)
// and returns the element tree with entities resolved. An optional <?xml ...?>
// declaration and comments are allowed; DTDs are not (an SVG needs none).
// Written apart from the chart code it checks, from the XML 1.0 rules.
#pragma once

#include <cctype>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace loom::test {

struct XmlElement {
  std::string name;
  std::map<std::string, std::string> attributes;
  std::vector<std::unique_ptr<XmlElement>> children;
  std::string text;  // the character data directly inside, concatenated

  // Every element below this one (depth first) whose name is `wanted`.
  void find_all(const std::string& wanted, std::vector<const XmlElement*>& out) const {
    for (const auto& child : children) {
      if (child->name == wanted) out.push_back(child.get());
      child->find_all(wanted, out);
    }
  }
};

class XmlReader {
 public:
  // The root element; throws std::runtime_error naming the offset of the first fault.
  static std::unique_ptr<XmlElement> parse(const std::string& text) {
    XmlReader r(text);
    r.skip_misc();
    if (r.starts_with("<?xml")) {
      r.pos_ = r.expect_find("?>") + 2;
      r.skip_misc();
    }
    auto root = r.element();
    r.skip_misc();
    if (r.pos_ != r.text_.size()) r.fail("content after the root element");
    return root;
  }

 private:
  explicit XmlReader(const std::string& text) : text_(text) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("XML: " + what + " at offset " + std::to_string(pos_));
  }
  bool starts_with(const char* s) const { return text_.compare(pos_, std::char_traits<char>::length(s), s) == 0; }
  size_t expect_find(const char* s) const {
    const size_t at = text_.find(s, pos_);
    if (at == std::string::npos) fail(std::string("no closing '") + s + "'");
    return at;
  }
  void skip_space() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  // Space and comments between elements.
  void skip_misc() {
    for (;;) {
      skip_space();
      if (!starts_with("<!--")) return;
      pos_ = expect_find("-->") + 3;
    }
  }
  static bool name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':'; }
  static bool name_char(char c) {
    return name_start(c) || std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '.';
  }
  std::string name() {
    if (pos_ >= text_.size() || !name_start(text_[pos_])) fail("a name expected");
    const size_t start = pos_;
    while (pos_ < text_.size() && name_char(text_[pos_])) ++pos_;
    return text_.substr(start, pos_ - start);
  }
  // Character data up to `end` (exclusive), entities resolved; '<' is not allowed in it.
  std::string characters(size_t end) {
    std::string out;
    while (pos_ < end) {
      const char c = text_[pos_];
      if (c == '<') fail("'<' in character data");
      if (c != '&') {
        out += c;
        ++pos_;
        continue;
      }
      const size_t semicolon = text_.find(';', pos_);
      if (semicolon == std::string::npos || semicolon >= end) fail("'&' without an entity");
      const std::string entity = text_.substr(pos_ + 1, semicolon - pos_ - 1);
      static const std::map<std::string, char> predefined = {
          {"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
      if (auto it = predefined.find(entity); it != predefined.end()) {
        out += it->second;
      } else if (entity.size() > 1 && entity[0] == '#') {
        const bool hex = entity[1] == 'x';
        const std::string digits = entity.substr(hex ? 2 : 1);
        if (digits.empty() || digits.find_first_not_of(hex ? "0123456789abcdefABCDEF" : "0123456789") !=
                                  std::string::npos)
          fail("a bad character reference &" + entity + ";");
        const unsigned long code = std::stoul(digits, nullptr, hex ? 16 : 10);
        if (code < 0x80) out += static_cast<char>(code);
        else out += '?';  // the tests compare ASCII only
      } else {
        fail("an unknown entity &" + entity + ";");
      }
      pos_ = semicolon + 1;
    }
    return out;
  }
  std::unique_ptr<XmlElement> element() {
    if (!starts_with("<")) fail("'<' expected");
    ++pos_;
    auto e = std::make_unique<XmlElement>();
    e->name = name();
    for (;;) {
      const size_t before = pos_;
      skip_space();
      if (starts_with("/>")) {
        pos_ += 2;
        return e;
      }
      if (starts_with(">")) {
        ++pos_;
        break;
      }
      if (pos_ == before) fail("space expected before an attribute");
      const std::string key = name();
      skip_space();
      if (!starts_with("=")) fail("'=' expected after attribute " + key);
      ++pos_;
      skip_space();
      if (pos_ >= text_.size() || (text_[pos_] != '"' && text_[pos_] != '\'')) fail("a quoted value expected");
      const char quote = text_[pos_++];
      const size_t close = text_.find(quote, pos_);
      if (close == std::string::npos) fail("an unterminated attribute value");
      const std::string value = characters(close);
      pos_ = close + 1;
      if (!e->attributes.emplace(key, value).second) fail("attribute " + key + " given twice");
    }
    // Content: text, comments and child elements, up to the matching end tag.
    for (;;) {
      const size_t next = text_.find('<', pos_);
      if (next == std::string::npos) fail("no end tag for <" + e->name + ">");
      e->text += characters(next);
      if (starts_with("<!--")) {
        pos_ = expect_find("-->") + 3;
      } else if (starts_with("</")) {
        pos_ += 2;
        if (name() != e->name) fail("the end tag does not match <" + e->name + ">");
        skip_space();
        if (!starts_with(">")) fail("'>' expected");
        ++pos_;
        return e;
      } else {
        e->children.push_back(element());
      }
    }
  }

  const std::string& text_;
  size_t pos_ = 0;
};

}  // namespace loom::test
