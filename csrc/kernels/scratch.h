// Scratch memory of the kernels: BlockCache (a per-thread cache of freed blocks) and Buf (an
// uninitialised, 64-byte aligned buffer drawn from it). Separate from the operands and the
// tiles because it is about memory, not arithmetic: every per-thread buffer of forward and
// backward (key chunks, row blocks, score tiles, partials) comes from here.
#pragma once

#include <cstdlib>
#include <memory>
#include <utility>

#include "common.h"

namespace attnkern {
namespace ATTNKERN_ISA {

// Per-thread cache of freed scratch blocks. Large blocks from malloc are fresh mmaps, so
// each call would pay page faults on every scratch page (about 7% of a TRAIN-shape
// backward); reusing them avoids that. Bounded: at most kCacheBytes kept per thread.
class BlockCache {
 public:
  static constexpr size_t kCacheBytes = size_t(32) << 20;
  ~BlockCache() {
    for (auto& b : blocks_) std::free(b.second);
  }
  void* take(size_t bytes) {
    int best = -1;
    for (int i = 0; i < (int)blocks_.size(); ++i)
      if (blocks_[i].first >= bytes && blocks_[i].first <= 2 * bytes + 4096 &&
          (best < 0 || blocks_[i].first < blocks_[best].first))
        best = i;
    if (best < 0) return nullptr;
    void* p = blocks_[best].second;
    total_ -= blocks_[best].first;
    blocks_.erase(blocks_.begin() + best);
    return p;
  }
  void give(void* p, size_t bytes) {
    if (bytes > kCacheBytes / 2) {
      std::free(p);
      return;
    }
    blocks_.emplace_back(bytes, p);
    total_ += bytes;
    while (total_ > kCacheBytes) {  // drop the oldest
      total_ -= blocks_.front().first;
      std::free(blocks_.front().second);
      blocks_.erase(blocks_.begin());
    }
  }
  static BlockCache& local() {
    static thread_local BlockCache cache;
    return cache;
  }

 private:
  std::vector<std::pair<size_t, void*>> blocks_;
  size_t total_ = 0;
};

// Uninitialised, 64-byte aligned buffer (every element is written before it is read).
template <typename T>
struct Buf {
  T* ptr = nullptr;
  size_t bytes = 0;
  Buf() = default;
  explicit Buf(int64_t n) { alloc(n); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() { release(); }
  void alloc(int64_t n) {
    release();
    bytes = (size_t)round_up(std::max<int64_t>(n, 1) * (int64_t)sizeof(T), 64);
    ptr = static_cast<T*>(BlockCache::local().take(bytes));
    if (ptr == nullptr) ptr = static_cast<T*>(std::aligned_alloc(64, bytes));
    TORCH_CHECK(ptr != nullptr, "attnkern: out of memory allocating ", bytes, " bytes");
  }
  void release() {
    if (ptr != nullptr) BlockCache::local().give(ptr, bytes);
    ptr = nullptr;
  }
  T* get() const { return ptr; }
  T& operator[](int64_t i) const { return ptr[i]; }
};

}  // namespace ATTNKERN_ISA
}  // namespace attnkern
