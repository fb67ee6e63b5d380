/* Loads one quantized layer of a checkpoint written by the Python package and
 * runs y = x (D + R)^T with tacq_mixed_gemv_f32, printing y one value per line.
 *
 *   tacq_example <checkpoint dir> [layer name] [x file]
 *
 * Without a layer name, the first quantized layer; without an x file,
 * x[k] = sin(k); an x file holds K numbers (text, whitespace-separated). The
 * bias, if the layer has one, is not added: y is mixed_gemv's output. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <tacq/tacq.h>

static int fail(const char* what, tacq_status s) {
  fprintf(stderr, "tacq_example: %s: %s (%s)\n", what, tacq_status_string(s), tacq_last_error());
  return 1;
}

int main(int argc, char** argv) {
  tacq_checkpoint* checkpoint = NULL;
  tacq_layer layer;
  const char* name = NULL;
  float* x = NULL;
  float* y = NULL;
  int64_t k, n;
  tacq_status s;
  int rc = 1;

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
  if ((s = tacq_checkpoint_layer(checkpoint, name, &layer)) != TACQ_OK) {
    rc = fail(name, s);
    goto done;
  }

  x = malloc((size_t)layer.weights.K * sizeof *x);
  y = malloc(((size_t)layer.weights.N + 1) * sizeof *y);
  if (x == NULL || y == NULL) {
    fprintf(stderr, "tacq_example: out of memory\n");
    goto done;
  }
  if (argc == 4) {
    FILE* f = fopen(argv[3], "r");
    if (f == NULL) {
      fprintf(stderr, "tacq_example: cannot open %s\n", argv[3]);
      goto done;
    }
    for (k = 0; k < layer.weights.K; ++k) {
      if (fscanf(f, "%f", &x[k]) != 1) {
        fprintf(stderr, "tacq_example: %s holds fewer than K = %lld numbers\n", argv[3],
                (long long)layer.weights.K);
        fclose(f);
        goto done;
      }
    }
    fclose(f);
  } else {
    for (k = 0; k < layer.weights.K; ++k) x[k] = (float)sin((double)k);
  }

  /* 0 threads: every OpenMP thread (OMP_NUM_THREADS). */
  if ((s = tacq_mixed_gemv_f32(&layer.weights, x, 1, y, 0)) != TACQ_OK) {
    rc = fail("mixed_gemv", s);
    goto done;
  }
  for (n = 0; n < layer.weights.N; ++n) printf("%.9g\n", y[n]);
  rc = 0;

done:
  free(x);
  free(y);
  tacq_checkpoint_close(checkpoint);
  return rc;
}
