/* Loads one quantized layer of a checkpoint written by the Python package and
 * runs y = x (D + R)^T with tacq_mixed_gemv_f32, printing y one value per line.
 *
 *   tacq_example <checkpoint dir> [layer name] [x file]
 *
 * Without a layer name, the first quantized layer; without an x file,
 * x[k] = sin(k); an x file holds K numbers (text, whitespace-separated). The
 * bias, if the layer has one, is not added: y is mixed_gemv's output. A layer
 * stored in rows of different widths (a row split, since library 1.2) is
 * computed part by part, each part's rows put back in place by row_bits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tacq/tacq.h>

static int fail(const char* what, tacq_status s) {
  fprintf(stderr, "tacq_example: %s: %s (%s)\n", what, tacq_status_string(s), tacq_last_error());
  return 1;
}

static int is_row_split(tacq_checkpoint* checkpoint, const char* name) {
  int64_t count = 0, i;
  const char* split = NULL;
  if (tacq_checkpoint_num_row_splits(checkpoint, &count) != TACQ_OK) return 0;
  for (i = 0; i < count; ++i)
    if (tacq_checkpoint_row_split_name(checkpoint, i, &split) == TACQ_OK && strcmp(split, name) == 0) return 1;
  return 0;
}

static int read_x(const char* path, float* x, int64_t K) {
  int64_t k;
  FILE* f;
  if (path == NULL) {
    for (k = 0; k < K; ++k) x[k] = (float)sin((double)k);
    return 0;
  }
  f = fopen(path, "r");
  if (f == NULL) {
    fprintf(stderr, "tacq_example: cannot open %s\n", path);
    return 1;
  }
  for (k = 0; k < K; ++k) {
    if (fscanf(f, "%f", &x[k]) != 1) {
      fprintf(stderr, "tacq_example: %s holds fewer than K = %lld numbers\n", path, (long long)K);
      fclose(f);
      return 1;
    }
  }
  fclose(f);
  return 0;
}

/* y [N] of a row split: each part's y, then y[n] = the next unused row of the
 * part whose width is row_bits[n]. */
static int split_y(tacq_checkpoint* checkpoint, const tacq_row_split* split, const float* x, float* y) {
  int32_t p;
  int64_t n, taken;
  tacq_status s;
  float* part_y = malloc(((size_t)split->N + 1) * sizeof *part_y);
  if (part_y == NULL) {
    fprintf(stderr, "tacq_example: out of memory\n");
    return 1;
  }
  for (p = 0; p < split->num_parts; ++p) {
    tacq_layer part;
    if ((s = tacq_checkpoint_layer(checkpoint, split->parts[p], &part)) != TACQ_OK ||
        (s = tacq_mixed_gemv_f32(&part.weights, x, 1, part_y, 0)) != TACQ_OK) {
      free(part_y);
      return fail(split->parts[p], s);
    }
    taken = 0;
    for (n = 0; n < split->N; ++n)
      if (split->row_bits[n] == part.weights.bits) y[n] = part_y[taken++];
  }
  free(part_y);
  return 0;
}

int main(int argc, char** argv) {
  tacq_checkpoint* checkpoint = NULL;
  const char* name = NULL;
  float* x = NULL;
  float* y = NULL;
  int64_t n, N, K;
  tacq_status s;
  tacq_layer layer;
  tacq_row_split split;
  int split_layer, rc = 1;

  if (argc < 2 || argc > 4) {
    fprintf(stderr, "usage: %s <checkpoint dir> [layer name] [x file]\n", argv[0]);
    return 2;
  }
  s = tacq_checkpoint_open(argv[1], &checkpoint);
  if (s != TACQ_OK) return fail("opening the checkpoint", s);
  if (argc >= 3) {
    name = argv[2];
  } else if ((s = tacq_checkpoint_layer_name(checkpoint, 0, &name)) != TACQ_OK) {
    rc = fail("finding a quantized layer", s);
    goto done;
  }
  split_layer = is_row_split(checkpoint, name);
  s = split_layer ? tacq_checkpoint_row_split(checkpoint, name, &split) : tacq_checkpoint_layer(checkpoint, name, &layer);
  if (s != TACQ_OK) {
    rc = fail(name, s);
    goto done;
  }
  N = split_layer ? split.N : layer.weights.N;
  K = split_layer ? split.K : layer.weights.K;
  x = malloc((size_t)K * sizeof *x);
  y = malloc(((size_t)N + 1) * sizeof *y);
  if (x == NULL || y == NULL) {
    fprintf(stderr, "tacq_example: out of memory\n");
    goto done;
  }
  if (read_x(argc == 4 ? argv[3] : NULL, x, K) != 0) goto done;

  if (split_layer) {
    if (split_y(checkpoint, &split, x, y) != 0) goto done;
  } else if ((s = tacq_mixed_gemv_f32(&layer.weights, x, 1, y, 0)) != TACQ_OK) {
    /* 0 threads: every OpenMP thread (OMP_NUM_THREADS). */
    rc = fail("mixed_gemv", s);
    goto done;
  }
  for (n = 0; n < N; ++n) printf("%.9g\n", y[n]);
  rc = 0;

done:
  free(x);
  free(y);
  tacq_checkpoint_close(checkpoint);
  return rc;
}
