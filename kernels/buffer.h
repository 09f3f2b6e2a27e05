// A malloc-backed array that can be shrunk in place (realloc) and handed to Python.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <utility>

namespace fastleading {

// Uninitialised storage for `size` trivially copyable T. Unlike std::vector it neither zeroes
// memory it is about to overwrite nor copies when shrunk: a 1 GB CSR column buffer is
// shrunk with realloc (mremap for large blocks), keeping the builder's peak memory low.
template <class T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(int64_t size) : data_(allocate(size)), size_(size) {}
  Buffer(Buffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  Buffer& operator=(Buffer&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { std::free(data_); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  int64_t size() const { return size_; }
  T& operator[](int64_t i) { return data_[i]; }
  const T& operator[](int64_t i) const { return data_[i]; }

  // Keeps the first `size` elements and returns the rest of the block to the allocator.
  void shrink(int64_t size) {
    if (size >= size_) return;
    void* p = std::realloc(data_, bytes(size));
    if (p != nullptr) data_ = static_cast<T*>(p);  // on failure the larger block stays valid
    size_ = size;
  }

  // Gives up ownership; the caller frees the pointer with std::free.
  T* release() {
    size_ = 0;
    return std::exchange(data_, nullptr);
  }

 private:
  // Never zero bytes: malloc(0) may return nullptr, which reads as allocation failure.
  static size_t bytes(int64_t size) { return sizeof(T) * static_cast<size_t>(std::max<int64_t>(size, 1)); }
  static T* allocate(int64_t size) {
    void* p = std::malloc(bytes(size));
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }


  T* data_ = nullptr;
  int64_t size_ = 0;
};

}  // namespace fastleading
