/*
 * Calling kiln from C through kernels/include/kiln.h and a shared library.
 *
 * Against the emulated library (host pointers: the kernels run on kiln's CUDA emulator):
 *   cc -std=c11 -Ikernels/include examples/c/kiln_example.c -Ltarget/release -lkiln_emu \
 *      -Wl,-rpath,$PWD/target/release -lm -o kiln_example && ./kiln_example
 * Against the CUDA library the code is the same with device pointers (cudaMalloc) and a
 * cudaStream_t instead of NULL: link -lkiln (it carries the CUDA runtime; only the driver is needed).
 * The file also compiles as C++ (tests/python/test_c_abi.py builds it both ways).
 *
 * It runs a few ops, checks them against formulas written here, and prints one line per check;
 * the exit status is the number of failed checks.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kiln.h"

static int failures = 0;

static void expect(int ok, const char* what) {
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    if (!ok) failures++;
}

static int close_to(double got, double want, double rtol, double atol) {
    return fabs(got - want) <= atol + rtol * fabs(want);
}

int main(void) {
    enum { N = 37, ROWS = 3, DIM = 20 };
    float x[N], y[N], dy[N], dx[N];
    for (int i = 0; i < N; ++i) {
        x[i] = -3.0f + 6.0f * (float)i / (float)(N - 1) + 0.01f;
        dy[i] = 0.5f + 0.01f * (float)i;
    }
    expect(kiln_version() == KILN_ABI_VERSION, "kiln_version() == KILN_ABI_VERSION");

    /* SiLU forward and backward. */
    kiln_status s = kiln_activation_silu_fwd(KILN_DTYPE_F32, x, y, N, NULL);
    int ok = s == KILN_SUCCESS;
    for (int i = 0; i < N && ok; ++i) ok = close_to(y[i], x[i] / (1.0 + exp(-x[i])), 1.3e-6, 1e-5);
    expect(ok, "silu fwd: y = x * sigmoid(x)");
    s = kiln_activation_silu_bwd(KILN_DTYPE_F32, x, dy, dx, N, NULL);
    ok = s == KILN_SUCCESS;
    for (int i = 0; i < N && ok; ++i) {
        const double sg = 1.0 / (1.0 + exp(-x[i]));
        ok = close_to(dx[i], dy[i] * sg * (1.0 + x[i] * (1.0 - sg)), 1.3e-6, 1e-5);
    }
    expect(ok, "silu bwd: dx = dy * sigmoid(x) * (1 + x * (1 - sigmoid(x)))");

    /* xSiLU backward with the deterministic dalpha reduction (workspace from the query). */
    const float alpha = 0.25f;
    const int64_t ws_bytes = kiln_activation_workspace_bytes(N, 1);
    void* ws = malloc((size_t)(ws_bytes > 0 ? ws_bytes : 1));
    float dalpha = NAN;
    s = kiln_activation_xsilu_bwd(KILN_DTYPE_F32, x, dy, dx, N, alpha, &dalpha, ws, ws_bytes, NULL);
    double want = 0.0;
    for (int i = 0; i < N; ++i) want += dy[i] * x[i] * (2.0 / (1.0 + exp(-x[i])) - 1.0);
    expect(s == KILN_SUCCESS && close_to(dalpha, want, 1e-5, 1e-5), "xsilu bwd: dalpha = sum dy * x * (2 sigmoid(x) - 1)");
    free(ws);

    /* RMSNorm forward over [ROWS, DIM] with gamma. */
    float xs[ROWS * DIM], ys[ROWS * DIM], gamma[DIM], rstd[ROWS];
    for (int i = 0; i < ROWS * DIM; ++i) xs[i] = (float)((i * 37) % 23) / 7.0f - 1.5f;
    for (int j = 0; j < DIM; ++j) gamma[j] = 0.5f + 0.05f * (float)j;
    s = kiln_norm_rmsnorm_fwd(KILN_DTYPE_F32, xs, NULL, gamma, NULL, ROWS, DIM, 1e-6f, ys, NULL, rstd, NULL);
    ok = s == KILN_SUCCESS;
    for (int r = 0; r < ROWS && ok; ++r) {
        double ms = 0.0;
        for (int j = 0; j < DIM; ++j) ms += (double)xs[r * DIM + j] * xs[r * DIM + j];
        const double inv = 1.0 / sqrt(ms / DIM + 1e-6);
        ok = close_to(rstd[r], inv, 1e-5, 1e-6);
        for (int j = 0; j < DIM && ok; ++j) ok = close_to(ys[r * DIM + j], xs[r * DIM + j] * inv * gamma[j], 1e-5, 1e-5);
    }
    expect(ok, "rmsnorm fwd: y = x / sqrt(mean(x^2) + eps) * gamma");

    /* SwiGLU on a packed [ROWS, 2F] input, gate first. */
    enum { F = 9 };
    float ab[ROWS * 2 * F], yg[ROWS * F];
    for (int i = 0; i < ROWS * 2 * F; ++i) ab[i] = (float)((i * 13) % 17) / 5.0f - 1.6f;
    s = kiln_glu_swiglu_fwd(KILN_DTYPE_F32, ab, ab + F, 2 * F, yg, ROWS, F, NULL);
    ok = s == KILN_SUCCESS;
    for (int r = 0; r < ROWS && ok; ++r) {
        for (int j = 0; j < F && ok; ++j) {
            const double a = ab[r * 2 * F + j], b = ab[r * 2 * F + F + j];
            ok = close_to(yg[r * F + j], a / (1.0 + exp(-a)) * b, 1.3e-6, 1e-5);
        }
    }
    expect(ok, "swiglu fwd (packed, gate first): y = silu(a) * b");

    /* Argument errors come back as status codes, and nothing is written. */
    y[0] = 42.0f;
    s = kiln_activation_relu_fwd((kiln_dtype)9, x, y, N, NULL);
    expect(s == KILN_ERROR_INVALID_DTYPE && y[0] == 42.0f, "a bad dtype: KILN_ERROR_INVALID_DTYPE, output untouched");
    s = kiln_activation_relu_fwd(KILN_DTYPE_F32, NULL, y, N, NULL);
    expect(s == KILN_ERROR_NULL_POINTER, "a NULL input: KILN_ERROR_NULL_POINTER");
    printf("status string: %s\n", kiln_status_string(s));

    printf("kiln_example: %d of 8 checks passed\n", 8 - failures);
    return failures;
}
