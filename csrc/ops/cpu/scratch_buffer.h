// Scratch memory of one calling thread, reused from call to call (SLIC, connectivity enforcement).
// Fresh pages cost a page fault and zeroing each (about a millisecond per 512x512 image here),
// more than a SLIC iteration; so each thread keeps its buffers, unless they grew beyond
// kMaxKeptBytes. Buffers are not initialised, so only the part that is written becomes resident.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace spl {
namespace cpu {

constexpr size_t kMaxKeptBytes = size_t{256} << 20;

template <typename T>
struct Buffer {
  std::unique_ptr<T[]> data;
  size_t capacity = 0;
  T* get(int64_t n) {
    if (static_cast<size_t>(n) > capacity) {
      data.reset(), capacity = 0;  // the old buffer goes first: no moment holds both
      data.reset(new T[n]), capacity = static_cast<size_t>(n);
    }
    return data.get();
  }
  size_t bytes() const { return capacity * sizeof(T); }
  void release() { data.reset(), capacity = 0; }
};

}  // namespace cpu
}  // namespace spl
