#include "io/pre_tokenizers.h"

#include <algorithm>
#include <array>
#include <functional>

#include "io/regex.h"
#include "io/utf8.h"

namespace qshard {

namespace {

constexpr const char* kSupported =
    "Split, ByteLevel, Digits, Metaspace, Whitespace, WhitespaceSplit, Sequence";
// The regex ByteLevel uses when use_regex is true (tokenizers' byte_level.rs).
constexpr const char* kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct Span {
  size_t begin, end;
  bool match;
};

// Spans covering `text`, alternating non-matches and matches, as tokenizers' Pattern does.
using Matcher = std::function<void(const std::string&, std::vector<Span>&)>;

Matcher regex_matcher(std::shared_ptr<Regex> re) {
  return [re](const std::string& text, std::vector<Span>& spans) {
    size_t prev = 0;
    re->find_all(text, [&](size_t s, size_t e) {
      if (prev != s) spans.push_back({prev, s, false});
      spans.push_back({s, e, true});
      prev = e;
    });
    if (prev != text.size()) spans.push_back({prev, text.size(), false});
  };
}

Matcher literal_matcher(std::string lit) {
  return [lit](const std::string& text, std::vector<Span>& spans) {
    size_t prev = 0;
    if (!lit.empty())
      for (size_t at = text.find(lit); at != std::string::npos; at = text.find(lit, prev)) {
        if (prev != at) spans.push_back({prev, at, false});
        spans.push_back({at, at + lit.size(), true});
        prev = at + lit.size();
      }
    if (prev != text.size()) spans.push_back({prev, text.size(), false});
  };
}

// Each character for which `pred` holds is one match.
Matcher char_matcher(bool (*pred)(char32_t)) {
  return [pred](const std::string& text, std::vector<Span>& spans) {
    size_t prev = 0;
    for (size_t i = 0; i < text.size();) {
      const size_t at = i;
      if (!pred(utf8_next(text, i))) continue;
      if (prev != at) spans.push_back({prev, at, false});
      spans.push_back({at, i, true});
      prev = i;
    }
    if (prev != text.size()) spans.push_back({prev, text.size(), false});
  };
}

// normalizer.rs's NormalizedString::split: `spans` become the pieces to keep.
void apply_behavior(std::vector<Span>& spans, Behavior b) {
  std::vector<Span> out;
  bool prev_match = false;
  switch (b) {
    case Behavior::Removed:
      for (const Span& s : spans)
        if (!s.match) out.push_back(s);
      break;
    case Behavior::Isolated:
      out = spans;
      break;
    case Behavior::Contiguous:
      for (const Span& s : spans) {
        if (s.match == prev_match && !out.empty())
          out.back().end = s.end;
        else
          out.push_back(s);
        prev_match = s.match;
      }
      break;
    case Behavior::MergedWithPrevious:
      for (const Span& s : spans) {
        if (s.match && !prev_match && !out.empty())
          out.back().end = s.end;
        else
          out.push_back(s);
        prev_match = s.match;
      }
      break;
    case Behavior::MergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->match && !prev_match && !out.empty())
          out.back().begin = it->begin;
        else
          out.push_back(*it);
        prev_match = it->match;
      }
      std::reverse(out.begin(), out.end());
      break;
  }
  spans = std::move(out);
}

// Splits every piece by `m`, keeping what `b` keeps; drops empty pieces.
void split_pieces(std::vector<Piece>& pieces, const Matcher& m, Behavior b, bool invert) {
  std::vector<Piece> out;
  std::vector<Span> spans;
  for (Piece& p : pieces) {
    spans.clear();
    m(p.text, spans);
    if (invert)
      for (Span& s : spans) s.match = !s.match;
    apply_behavior(spans, b);
    for (const Span& s : spans)
      if (s.end > s.begin)
        out.push_back({p.text.substr(s.begin, s.end - s.begin), p.at_start && s.begin == 0});
  }
  pieces = std::move(out);
}

Behavior parse_behavior(const JsonAt& j) {
  const std::string s = j.str();
  if (s == "Removed") return Behavior::Removed;
  if (s == "Isolated") return Behavior::Isolated;
  if (s == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (s == "MergedWithNext") return Behavior::MergedWithNext;
  if (s == "Contiguous") return Behavior::Contiguous;
  j.fail("\"", s,
         "\" is not a split behavior (Removed, Isolated, MergedWithPrevious, MergedWithNext, "
         "Contiguous)");
}

std::shared_ptr<Regex> compile(const std::string& pattern, const JsonAt& at) {
  return std::make_shared<Regex>(pattern, at.file() + ": " + at.where());
}

class Split final : public PreTokenizer {
 public:
  Split(Matcher m, Behavior b, bool invert) : m_(std::move(m)), b_(b), invert_(invert) {}
  void apply(std::vector<Piece>& pieces) const override { split_pieces(pieces, m_, b_, invert_); }

 private:
  Matcher m_;
  Behavior b_;
  bool invert_;
};

class ByteLevel final : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, std::shared_ptr<Regex> re)
      : prefix_(add_prefix_space), re_(std::move(re)) {}
  void apply(std::vector<Piece>& pieces) const override {
    if (prefix_)
      for (Piece& p : pieces)
        if (p.text[0] != ' ') p.text = " " + p.text;
    if (re_) split_pieces(pieces, regex_matcher(re_), Behavior::Isolated, false);
    std::string mapped;
    for (Piece& p : pieces) {
      mapped.clear();
      for (const char c : p.text) mapped += byte_level_char(static_cast<unsigned char>(c));
      p.text.swap(mapped);
    }
  }

 private:
  bool prefix_;
  std::shared_ptr<Regex> re_;
};

class Metaspace final : public PreTokenizer {
 public:
  enum class Prepend { Always, First, Never };
  Metaspace(std::string replacement, Prepend scheme, bool split)
      : rep_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void apply(std::vector<Piece>& pieces) const override {
    for (Piece& p : pieces) {
      std::string t;
      for (const char c : p.text)
        if (c == ' ')
          t += rep_;
        else
          t += c;
      const bool prepend = scheme_ == Prepend::Always || (scheme_ == Prepend::First && p.at_start);
      if (prepend && t.compare(0, rep_.size(), rep_) != 0) t.insert(0, rep_);
      p.text = std::move(t);
    }
    if (split_) split_pieces(pieces, literal_matcher(rep_), Behavior::MergedWithNext, false);
  }

 private:
  std::string rep_;
  Prepend scheme_;
  bool split_;
};

class Sequence final : public PreTokenizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
  void apply(std::vector<Piece>& pieces) const override {
    for (const auto& p : parts_) p->apply(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

std::unique_ptr<PreTokenizer> make_split(const JsonAt& j) {
  const JsonAt pattern = j["pattern"];
  Matcher m;
  if (pattern.has("String"))
    m = literal_matcher(pattern["String"].str());
  else if (pattern.has("Regex"))
    m = regex_matcher(compile(pattern["Regex"].str(), pattern["Regex"]));
  else
    pattern.fail("must have a \"String\" or \"Regex\" member");
  return std::make_unique<Split>(std::move(m), parse_behavior(j["behavior"]),
                                 j.bool_or("invert", false));
}

std::unique_ptr<PreTokenizer> make_metaspace(const JsonAt& j) {
  const std::string rep = j["replacement"].str();
  size_t i = 0;
  if (rep.empty() || (utf8_next(rep, i), i != rep.size()))
    j["replacement"].fail("must be one character");
  // Older files have add_prefix_space instead of prepend_scheme.
  auto scheme =
      j.bool_or("add_prefix_space", true) ? Metaspace::Prepend::Always : Metaspace::Prepend::Never;
  if (j.has("prepend_scheme")) {
    const std::string s = j["prepend_scheme"].str();
    if (s == "always")
      scheme = Metaspace::Prepend::Always;
    else if (s == "first")
      scheme = Metaspace::Prepend::First;
    else if (s == "never")
      scheme = Metaspace::Prepend::Never;
    else
      j["prepend_scheme"].fail("\"", s, "\" is not one of always, first, never");
  }
  return std::make_unique<Metaspace>(rep, scheme, j.bool_or("split", true));
}

}  // namespace

const std::string& byte_level_char(unsigned char b) {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    char32_t next = 256;  // bytes that are not printable map to 256, 257, ... in order
    for (int c = 0; c < 256; ++c) {
      const bool printable =
          (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255);
      utf8_append(t[c], printable ? char32_t(c) : next++);
    }
    return t;
  }();
  return table[b];
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const JsonAt& j) {
  if (j.json().is_null()) return nullptr;
  const std::string type = j["type"].str();
  if (type == "Split") return make_split(j);
  if (type == "ByteLevel") {
    std::shared_ptr<Regex> re;
    if (j.bool_or("use_regex", true)) re = compile(kGpt2Regex, j);
    return std::make_unique<ByteLevel>(j.bool_or("add_prefix_space", true), std::move(re));
  }
  if (type == "Digits")
    return std::make_unique<Split>(
        char_matcher(unicode_is_numeric),
        j.bool_or("individual_digits", false) ? Behavior::Isolated : Behavior::Contiguous, false);
  if (type == "Metaspace") return make_metaspace(j);
  if (type == "WhitespaceSplit")
    return std::make_unique<Split>(char_matcher(unicode_is_whitespace), Behavior::Removed, false);
  if (type == "Whitespace")
    return std::make_unique<Split>(regex_matcher(compile(R"(\w+|[^\w\s]+)", j)), Behavior::Removed,
                                   true);
  if (type == "Sequence") {
    const JsonAt list = j["pretokenizers"];
    list.array();
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (size_t i = 0; i < list.size(); ++i)
      if (auto p = make_pre_tokenizer(list.at(i))) parts.push_back(std::move(p));
    return std::make_unique<Sequence>(std::move(parts));
  }
  j["type"].fail("\"", type,
                 "\" is not supported by qshard (supported pre-tokenizers: ", kSupported, ")");
}

}  // namespace qshard
