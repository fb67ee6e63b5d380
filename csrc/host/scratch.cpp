// Scratch (scratch.h): the calling thread's reused block, or one of the call's own.
#include "scratch.h"

#include <algorithm>
#include <cstdint>

namespace tacq::host {
namespace {

struct ThreadBlock {
  AlignedBuffer buffer;
  bool busy = false;
};
thread_local ThreadBlock t_block;

}  // namespace

size_t Scratch::add(size_t bytes) {
  const size_t offset = total_;
  // Saturates at SIZE_MAX, a block that fails to allocate.
  const size_t rounded = bytes > SIZE_MAX - 63 ? SIZE_MAX : (bytes + 63) / 64 * 64;
  total_ = rounded > SIZE_MAX - total_ ? SIZE_MAX : total_ + rounded;
  return offset;
}

bool Scratch::acquire() {
  if (total_ <= kReusedBytes && !t_block.busy) {
    // Grown at least twofold: a few allocations while a model's layer sizes are first met.
    const size_t grown = std::min(kReusedBytes, std::max(total_, 2 * t_block.buffer.size()));
    if (t_block.buffer.size() < total_ && !t_block.buffer.allocate(grown)) return false;
    t_block.busy = borrowed_ = true;
    base_ = t_block.buffer.as<char>();
    return true;
  }
  if (!own_.allocate(total_)) return false;
  base_ = own_.as<char>();
  return true;
}

Scratch::~Scratch() {
  if (borrowed_) t_block.busy = false;
}

}  // namespace tacq::host
