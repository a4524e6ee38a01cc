#include "io/normalizers.h"

#include <utf8proc.h>

#include <cstdlib>
#include <vector>

#include "io/regex.h"
#include "io/utf8.h"

namespace qshard {

namespace {

constexpr const char* kSupported =
    "NFC, NFD, NFKC, NFKD, Lowercase, Strip, Prepend, Replace, Sequence";

bool is_ascii(const std::string& s) {
  for (const char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

class Unicode final : public Normalizer {
 public:
  explicit Unicode(int options) : options_(options) {}
  void apply(std::string& text) const override {
    if (is_ascii(text)) return;  // every normalization form leaves ASCII alone
    utf8proc_uint8_t* out = nullptr;
    const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                static_cast<utf8proc_ssize_t>(text.size()), &out,
                                static_cast<utf8proc_option_t>(options_));
    if (n < 0) fail("utf8proc_map: ", utf8proc_errmsg(n));  // input is sanitized: a bug
    text.assign(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
    std::free(out);
  }

 private:
  int options_;
};

class Lowercase final : public Normalizer {
 public:
  void apply(std::string& text) const override {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
      const char32_t c = utf8_next(text, i);
      // Rust's char::to_lowercase, per character: U+0130 is the one character whose
      // lowercase is two (i + combining dot above); utf8proc gives the simple mapping.
      if (c == 0x130) {
        out += "i\xCC\x87";
        continue;
      }
      utf8_append(out, static_cast<char32_t>(utf8proc_tolower(static_cast<int32_t>(c))));
    }
    text = std::move(out);
  }
};

class Strip final : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void apply(std::string& text) const override {
    size_t b = 0, e = text.size();
    if (left_)
      for (size_t i = 0; i < e;) {
        const size_t at = i;
        if (!unicode_is_whitespace(utf8_next(text, i))) {
          b = at;
          break;
        }
        b = i;
      }
    if (right_)
      while (e > b) {
        size_t s = e - 1;
        while (s > b && (static_cast<unsigned char>(text[s]) & 0xC0) == 0x80) --s;
        size_t i = s;
        if (!unicode_is_whitespace(utf8_next(text, i))) break;
        e = s;
      }
    text = text.substr(b, e - b);
  }

 private:
  bool left_, right_;
};

class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string p) : p_(std::move(p)) {}
  void apply(std::string& text) const override {
    if (!text.empty()) text.insert(0, p_);  // `tokenizers` leaves the empty string empty
  }

 private:
  std::string p_;
};

class Replace final : public Normalizer {
 public:
  Replace(std::string literal, std::unique_ptr<Regex> re, std::string content)
      : literal_(std::move(literal)), re_(std::move(re)), content_(std::move(content)) {}
  void apply(std::string& text) const override {
    std::string out;
    size_t prev = 0;
    const auto take = [&](size_t s, size_t e) {
      out.append(text, prev, s - prev);
      out += content_;
      prev = e;
    };
    if (re_) {
      re_->find_all(text, take);
    } else if (!literal_.empty()) {
      for (size_t at = text.find(literal_); at != std::string::npos; at = text.find(literal_, prev))
        take(at, at + literal_.size());
    }
    if (prev == 0 && out.empty()) return;
    out.append(text, prev);
    text = std::move(out);
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> re_;
  std::string content_;
};

class Sequence final : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
  void apply(std::string& text) const override {
    for (const auto& p : parts_) p->apply(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const JsonAt& j) {
  if (j.json().is_null()) return nullptr;
  const std::string type = j["type"].str();
  if (type == "NFC") return std::make_unique<Unicode>(UTF8PROC_STABLE | UTF8PROC_COMPOSE);
  if (type == "NFD") return std::make_unique<Unicode>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
  if (type == "NFKC")
    return std::make_unique<Unicode>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  if (type == "NFKD")
    return std::make_unique<Unicode>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "Strip")
    return std::make_unique<Strip>(j.bool_or("strip_left", true), j.bool_or("strip_right", true));
  if (type == "Prepend") return std::make_unique<Prepend>(j["prepend"].str());
  if (type == "Replace") {
    const JsonAt pattern = j["pattern"];
    const std::string content = j["content"].str();
    if (pattern.has("String"))
      return std::make_unique<Replace>(pattern["String"].str(), nullptr, content);
    if (pattern.has("Regex"))
      return std::make_unique<Replace>(
          "",
          std::make_unique<Regex>(pattern["Regex"].str(),
                                  j.file() + ": " + pattern.where() + "/Regex"),
          content);
    pattern.fail("must have a \"String\" or \"Regex\" member");
  }
  if (type == "Sequence") {
    const JsonAt list = j["normalizers"];
    list.array();
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (size_t i = 0; i < list.size(); ++i)
      if (auto n = make_normalizer(list.at(i))) parts.push_back(std::move(n));
    return std::make_unique<Sequence>(std::move(parts));
  }
  j["type"].fail("\"", type, "\" is not supported by qshard (supported normalizers: ", kSupported,
                 ")");
}

}  // namespace qshard
