// <immintrin.h> for the AVX-512 kernel files. GCC 12 warns falsely about its
// own AVX-512 intrinsic headers (GCC bug 105593: "may be used uninitialized"
// inside _mm512_* inlines), so those two warnings are off in the including file.
#pragma once

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
