// SHA-256 (FIPS 180-4), for the weights-file check of a checkpoint.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace tacq::host {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  std::string hex_digest();  // finishes; lowercase hex of the 32-byte digest

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t length_ = 0;  // bytes hashed so far
};

}  // namespace tacq::host
