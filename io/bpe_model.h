// tokenizer.json "model" of type BPE: byte-level (GPT-2, Llama 3, Qwen) and
// sentencepiece-style (byte_fallback, unk_token, fuse_unk; Llama 2, Mistral) alike, with
// the merge order of the `tokenizers` crate (models/bpe/word.rs: lowest rank first, then
// leftmost). Pre-token results are cached, as `tokenizers` does.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/json_at.h"

namespace qshard {

// Hash for unordered_map<std::string, ...> lookups by string_view without a copy.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  explicit BpeModel(const JsonAt& model);  // the "model" object; InputError names the path

  // Appends the ids of one pre-token (non-empty).
  void encode(std::string_view word, std::vector<int32_t>& out) const;

  int32_t id_of(std::string_view token) const;  // -1 if not in the vocab
  int32_t max_id() const { return max_id_; }
  size_t size() const { return vocab_.size(); }

 private:
  struct Merge {
    int32_t rank, id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
  }
  // Open addressing, linear probing: the merge loop's lookups stay in one or two cache
  // lines, where std::unordered_map chases a node pointer per lookup.
  class PairTable {
   public:
    void reserve(size_t n);
    void set(uint64_t key, Merge m);
    const Merge* find(uint64_t key) const {
      for (size_t i = slot(key);; i = (i + 1) & mask_) {
        if (keys_[i] == key) return &vals_[i];
        if (keys_[i] == kEmpty) return nullptr;
      }
    }

   private:
    static constexpr uint64_t kEmpty = ~uint64_t(0);  // ids are < 2^31: no pair packs to this
    size_t slot(uint64_t key) const { return size_t((key * 0x9E3779B97F4A7C15ull) >> 20) & mask_; }
    std::vector<uint64_t> keys_;
    std::vector<Merge> vals_;
    size_t mask_ = 0;
  };

  void read_vocab(const JsonAt& vocab);
  void read_merges(const JsonAt& merges);
  void add_merge(const std::string& a, const std::string& b, int32_t rank, const JsonAt& at);
  void initial_symbols(std::string_view word, std::vector<int32_t>& ids) const;
  void merge_all(std::vector<int32_t>& ids) const;
  int32_t unk_id() const;

  std::string file_;
  StringMap vocab_;
  PairTable merges_;
  int32_t max_id_ = -1;
  std::string unk_token_;  // empty: unknown characters are dropped, as `tokenizers` does
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  std::string prefix_, suffix_;  // continuing_subword_prefix, end_of_word_suffix
  int32_t byte_ids_[256];        // <0xNN> tokens for byte_fallback, -1 if absent

  // Bounded: once full, new pre-tokens are not cached (as in `tokenizers`).
  static constexpr size_t kCacheEntries = 1 << 16, kCacheMaxWord = 256;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace qshard
