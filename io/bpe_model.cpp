#include "io/bpe_model.h"

#include <cstdio>
#include <limits>
#include <queue>

#include "io/utf8.h"

namespace qshard {

void BpeModel::PairTable::reserve(size_t n) {
  size_t cap = 16;
  while (cap < 2 * n) cap *= 2;  // load factor at most 1/2
  keys_.assign(cap, kEmpty);
  vals_.assign(cap, Merge{0, 0});
  mask_ = cap - 1;
}

void BpeModel::PairTable::set(uint64_t key, Merge m) {
  size_t i = slot(key);
  while (keys_[i] != kEmpty && keys_[i] != key) i = (i + 1) & mask_;
  keys_[i] = key;
  vals_[i] = m;
}

BpeModel::BpeModel(const JsonAt& model) : file_(model.file()) {
  if (model.has("dropout"))
    model["dropout"].fail(
        "is set: BPE dropout is random and qshard needs reproducible token ids; "
        "set it to null");
  unk_token_ = model.str_or("unk_token", "");
  fuse_unk_ = model.bool_or("fuse_unk", false);
  byte_fallback_ = model.bool_or("byte_fallback", false);
  ignore_merges_ = model.bool_or("ignore_merges", false);
  prefix_ = model.str_or("continuing_subword_prefix", "");
  suffix_ = model.str_or("end_of_word_suffix", "");
  read_vocab(model["vocab"]);
  read_merges(model["merges"]);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    byte_ids_[b] = id_of(name);
  }
}

void BpeModel::read_vocab(const JsonAt& vocab) {
  vocab.object();
  vocab_.reserve(vocab.json().size());
  for (const auto& [token, id] : vocab.json().items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() > std::numeric_limits<int32_t>::max())
      vocab.fail("entry \"", token, "\" must have an id in 0..2^31-1, found ", id.dump());
    const auto v = id.get<int32_t>();
    vocab_.emplace(token, v);
    max_id_ = std::max(max_id_, v);
  }
}

void BpeModel::read_merges(const JsonAt& merges) {
  merges.array();
  merges_.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const JsonAt m = merges.at(i);
    if (m.json().is_string()) {  // "a b" (tokenizers < 0.20)
      const std::string s = m.str();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        m.fail("\"", s, "\" must be two tokens separated by one space");
      add_merge(s.substr(0, sp), s.substr(sp + 1), int32_t(i), m);
    } else if (m.json().is_array() && m.size() == 2) {  // ["a", "b"]
      add_merge(m.at(0).str(), m.at(1).str(), int32_t(i), m);
    } else {
      m.fail("must be a string \"a b\" or a pair [\"a\", \"b\"]");
    }
  }
}

void BpeModel::add_merge(const std::string& a, const std::string& b, int32_t rank,
                         const JsonAt& at) {
  const std::string merged = a + b.substr(std::min(prefix_.size(), b.size()));
  const int32_t ia = id_of(a), ib = id_of(b), im = id_of(merged);
  for (const auto& [tok, id] : {std::pair{&a, ia}, {&b, ib}, {&merged, im}})
    if (id < 0) at.fail("merges \"", a, "\" + \"", b, "\": \"", *tok, "\" is not in /model/vocab");
  // A repeated pair takes its last rank, as the crate's HashMap collect does.
  merges_.set(pair_key(ia, ib), Merge{rank, im});
}

int32_t BpeModel::id_of(std::string_view token) const {
  const auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

int32_t BpeModel::unk_id() const {
  const int32_t id = id_of(unk_token_);
  if (id < 0)
    fail_input(file_, ": /model/unk_token \"", unk_token_,
               "\" is not in /model/vocab, and the "
               "input has a character the vocab lacks: fix the tokenizer file");
  return id;
}

// One symbol per character (with the subword prefix/suffix), as BPE::merge_word does:
// characters missing from the vocab become <0xNN> byte tokens (byte_fallback) or unk.
void BpeModel::initial_symbols(std::string_view word, std::vector<int32_t>& ids) const {
  int32_t pending_unk = -1;  // fuse_unk joins a run of unknown characters into one unk
  std::string s;
  for (size_t i = 0; i < word.size();) {
    const size_t begin = i;
    i += utf8_char_len(static_cast<unsigned char>(word[i]));
    std::string_view ch = word.substr(begin, i - begin);
    if ((begin > 0 && !prefix_.empty()) || (i == word.size() && !suffix_.empty())) {
      s.assign(begin > 0 ? prefix_ : "").append(ch);
      if (i == word.size()) s += suffix_;
      ch = s;
    }
    if (const int32_t id = id_of(ch); id >= 0) {
      if (pending_unk >= 0) ids.push_back(pending_unk);
      pending_unk = -1;
      ids.push_back(id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (const char c : ch) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {  // (like `tokenizers`, this does not flush a pending unk first)
        for (const char c : ch) ids.push_back(byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_token_.empty()) continue;
    if (pending_unk >= 0 && !fuse_unk_) ids.push_back(pending_unk);
    pending_unk = unk_id();
  }
  if (pending_unk >= 0) ids.push_back(pending_unk);
}

// Word::merge_all without dropout: a heap of candidate merges by (rank, position) over a
// linked list of symbols.
void BpeModel::merge_all(std::vector<int32_t>& ids) const {
  const int n = static_cast<int>(ids.size());
  if (n < 2) return;
  struct Cand {
    int32_t rank, pos, id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  thread_local std::vector<int> prev, next;
  prev.resize(n);
  next.resize(n);
  std::vector<Cand> initial;
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
    if (i + 1 < n)
      if (const Merge* m = merges_.find(pair_key(ids[i], ids[i + 1])))
        initial.push_back({m->rank, i, m->id});
  }
  // Built in O(n) from the initial pairs, not pushed one by one.
  std::priority_queue<Cand, std::vector<Cand>, std::greater<>> heap(std::greater<>{},
                                                                    std::move(initial));
  const auto push = [&](int pos, int right) {
    if (const Merge* m = merges_.find(pair_key(ids[pos], ids[right])))
      heap.push({m->rank, pos, m->id});
  };
  while (!heap.empty()) {
    const Cand top = heap.top();
    heap.pop();
    const int right = next[top.pos];
    if (ids[top.pos] < 0 || right < 0) continue;  // merged away, or now last
    const Merge* m = merges_.find(pair_key(ids[top.pos], ids[right]));
    if (!m || m->id != top.id) continue;  // stale entry
    ids[top.pos] = top.id;
    ids[right] = -1;
    next[top.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = top.pos;
    if (prev[top.pos] >= 0) push(prev[top.pos], top.pos);
    if (next[top.pos] >= 0) push(top.pos, next[top.pos]);
  }
  size_t k = 0;
  for (int i = 0; i < n; ++i)
    if (ids[i] >= 0) ids[k++] = ids[i];
  ids.resize(k);
}

void BpeModel::encode(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_)
    if (const int32_t id = id_of(word); id >= 0) return out.push_back(id);
  const bool cacheable = word.size() < kCacheMaxWord;
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    if (const auto it = cache_.find(word); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  initial_symbols(word, ids);
  merge_all(ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard lock(cache_mutex_);
    if (cache_.size() < kCacheEntries) cache_.emplace(word, std::move(ids));
  }
}

}  // namespace qshard
