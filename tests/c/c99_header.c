/* tacq.h compiles as C99 (-std=c99 -pedantic -Werror) and its calls link from C. */
#include "tacq/tacq.h"

#include <string.h>

int tacq_c99_header_check(void) {
  int failures = 0;
  tacq_weights w;
  uint8_t codes[32] = {0};
  int32_t packed[2];
  memset(&w, 0, sizeof w);
  if (tacq_pack(codes, 1, 32, 2, packed, 1) != TACQ_OK) ++failures;
  if (tacq_pack(codes, 1, 32, 7, packed, 1) != TACQ_ERROR_BAD_BITS) ++failures;
  if (tacq_dequantize_f32(&w, NULL, 0) != TACQ_ERROR_BAD_BITS) ++failures;
  if (strcmp(tacq_status_string((tacq_status)999), "unknown status") != 0) ++failures;
  if (strcmp(tacq_status_string((tacq_status)-1), "unknown status") != 0) ++failures;
  if (tacq_last_error()[0] == '\0') ++failures; /* the BAD_BITS detail is still there */
  if (sizeof(tacq_weights) != 88 || sizeof(tacq_layer) != 112 || sizeof(tacq_row_split) != 64) ++failures;
  return failures;
}
