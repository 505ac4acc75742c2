/* Compiled as C (not C++): ioattn.h must be plain C. Runs a tiny forward on the CPU and one rejected call.
 * Exit status 0 on success. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ioattn/ioattn.h"

static ioattn_tensor dense(float* data, int64_t b, int64_t s, int64_t h, int64_t d) {
  ioattn_tensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.dtype = IOATTN_DTYPE_F32;
  t.device = IOATTN_DEVICE_CPU;
  t.rank = 4;
  t.shape[0] = b, t.shape[1] = s, t.shape[2] = h, t.shape[3] = d;
  t.stride[3] = 1, t.stride[2] = d, t.stride[1] = h * d, t.stride[0] = s * h * d;
  return t;
}

int main(void) {
  /* One query over two keys, head dim 2: out is the softmax-weighted mean of the two value rows. */
  float q[2] = {1.0f, 0.0f}, k[4] = {1.0f, 0.0f, 0.0f, 1.0f}, v[4] = {1.0f, 2.0f, 3.0f, 4.0f};
  float out[2] = {NAN, NAN};
  ioattn_forward_args args;
  ioattn_params params;
  double w0, w1;
  memset(&args, 0, sizeof args);
  args.q = dense(q, 1, 1, 1, 2);
  args.k = dense(k, 1, 2, 1, 2);
  args.v = dense(v, 1, 2, 1, 2);
  args.out = dense(out, 1, 1, 1, 2);
  ioattn_params_init(&params);
  params.softmax_scale = 1.0f;
  if (ioattn_forward(&args, &params) != IOATTN_OK) {
    fprintf(stderr, "forward failed: %s\n", ioattn_last_error());
    return 1;
  }
  w0 = exp(1.0) / (exp(1.0) + 1.0);
  w1 = 1.0 - w0;
  if (fabs(out[0] - (w0 * 1.0 + w1 * 3.0)) > 1e-5 || fabs(out[1] - (w0 * 2.0 + w1 * 4.0)) > 1e-5) {
    fprintf(stderr, "wrong output %f %f\n", out[0], out[1]);
    return 1;
  }
  args.k.shape[3] = 3; /* head dims disagree */
  if (ioattn_forward(&args, &params) != IOATTN_ERROR_INVALID_ARGUMENT || strncmp(ioattn_last_error(), "k:", 2) != 0) {
    fprintf(stderr, "expected an invalid-argument error naming k, got: %s\n", ioattn_last_error());
    return 1;
  }
  printf("ioattn %s (%s): C ABI ok\n", ioattn_version(), ioattn_backends());
  return 0;
}
