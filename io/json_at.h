// A JSON value together with the file it came from and its JSON pointer, so every error
// about a tokenizer.json component names exactly where it is:
//   MODEL/tokenizer.json: /pre_tokenizer/pretokenizers/1/type "Punctuation" is not supported
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "core/error.h"

namespace qshard {

class JsonAt {
 public:
  JsonAt(const nlohmann::json& j, const std::string& file, std::string path = "")
      : j_(&j), file_(&file), path_(std::move(path)) {}

  const nlohmann::json& json() const { return *j_; }
  const std::string& path() const { return path_; }
  const std::string& file() const { return *file_; }
  std::string where() const { return path_.empty() ? "/" : path_; }

  template <class... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    fail_input(*file_, ": ", where(), " ", std::forward<Parts>(parts)...);
  }

  bool has(const char* key) const {
    return j_->is_object() && j_->contains(key) && !(*j_)[key].is_null();
  }
  // The member `key`: must exist (null counts as missing) when `required`.
  JsonAt operator[](const char* key) const {
    if (!j_->is_object()) fail("must be a JSON object, found ", j_->type_name());
    const auto it = j_->find(key);
    if (it == j_->end()) fail("has no member \"", key, "\"");
    return JsonAt(*it, *file_, path_ + "/" + key);
  }
  JsonAt at(size_t i) const { return JsonAt((*j_)[i], *file_, path_ + "/" + std::to_string(i)); }
  size_t size() const { return j_->size(); }

  const nlohmann::json& object() const { return expect(j_->is_object(), "an object"); }
  const nlohmann::json& array() const { return expect(j_->is_array(), "an array"); }
  std::string str() const { return expect(j_->is_string(), "a string").get<std::string>(); }
  bool boolean() const { return expect(j_->is_boolean(), "true or false").get<bool>(); }
  int64_t integer() const { return expect(j_->is_number_integer(), "an integer").get<int64_t>(); }
  // Optional members with a default when missing or null.
  std::string str_or(const char* key, const std::string& dflt) const {
    return has(key) ? (*this)[key].str() : dflt;
  }
  bool bool_or(const char* key, bool dflt) const {
    return has(key) ? (*this)[key].boolean() : dflt;
  }

 private:
  const nlohmann::json& expect(bool ok, const char* what) const {
    if (!ok) fail("must be ", what, ", found ", j_->type_name());
    return *j_;
  }
  const nlohmann::json* j_;
  const std::string* file_;
  std::string path_;
};

}  // namespace qshard
