// Staging memory of one host call: pieces laid out one after another in one
// block, each 64-byte aligned. A block of up to Scratch::kReusedBytes is the
// calling thread's, kept from call to call, so a decoding step's small layers
// allocate nothing (the five to seven allocations and frees of a call took
// 0.15-0.3 us on Zen 4, a quarter of a 16x32 layer's host time and 5 % of a
// 192x192 layer's); larger blocks, and any needed while the thread's block
// is in use, are allocated for the call.
#pragma once

#include <cstddef>
#include <cstdint>

#include "host.h"

namespace tacq::host {

class Scratch {
 public:
  static constexpr size_t kReusedBytes = size_t{256} << 10;

  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch();

  // Reserves a piece of `bytes` (0: none) and returns its offset; before acquire().
  size_t add(size_t bytes);
  // Makes the block for every piece added; false when out of memory.
  bool acquire();
  // The piece at `offset` (from add), after acquire().
  template <typename T>
  T* at(size_t offset) const {
    return reinterpret_cast<T*>(base_ + offset);
  }

 private:
  size_t total_ = 0;
  char* base_ = nullptr;
  bool borrowed_ = false;  // base_ is the thread's block
  AlignedBuffer own_;
};

}  // namespace tacq::host
