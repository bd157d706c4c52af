/* Which quantized matvec to build: integer dot products against activations quantized to int8 per
 * block, or weights dequantized in registers to fp32 for FMAs; and how much block size costs.
 *
 *   gcc -O3 -march=native -pthread benchmarks/quant_formats.c -o /tmp/quant_formats -lm && /tmp/quant_formats
 *
 * One matvec of `rows` x `cols` weights over a matrix set bigger than the last-level cache (so each
 * weight comes from memory, as in a decode step), on 1 and 2 threads, median of 7 runs. Prints the
 * time per pass and the read bandwidth each method reached (bytes of weights and scales / time).
 * AVX2 only (this week's machine); it measures choices, it is not shipped code.
 */
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QK 32
enum { ROWS = 8192, COLS = 2048, MATS = 16 }; /* 16 x 16M weights: 256 MB int8, over any cache */

typedef struct {
    int method, r0, r1, mat;
} Task;

static int8_t *q8[MATS];
static uint8_t *q4[MATS];
static uint16_t *sc[MATS];
static float *wf[MATS];
static float x[COLS];
float y[ROWS]; /* not static: its stores must happen */
static int8_t xq[COLS];
static float xd[COLS / QK];

static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 dot_i8_block(__m256i w, __m256i a) { /* 8 lanes of int32 sums as float */
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
}

static inline __m256i unpack_q4(const uint8_t *p) {
    __m128i b = _mm_loadu_si128((const __m128i *)p);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
    return _mm256_sub_epi8(_mm256_and_si256(v, _mm256_set1_epi8(0x0f)), _mm256_set1_epi8(8));
}

static void run_rows(const Task *t) {
    const int nb = COLS / QK;
    for (int r = t->r0; r < t->r1; r++) {
        __m256 acc = _mm256_setzero_ps();
        const uint16_t *s = sc[t->mat] + (long)r * nb;
        switch (t->method) {
        case 0: /* q8 weights . int8 activations */
            for (int b = 0; b < nb; b++) {
                __m256i w = _mm256_loadu_si256((const __m256i *)(q8[t->mat] + (long)r * COLS + b * QK));
                __m256i a = _mm256_loadu_si256((const __m256i *)(xq + b * QK));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(s[b]) * xd[b]), dot_i8_block(w, a), acc);
            }
            break;
        case 1: /* q8 weights dequantized to fp32 in registers . fp32 activations */
            for (int b = 0; b < nb; b++) {
                const int8_t *w = q8[t->mat] + (long)r * COLS + b * QK;
                __m256 blk = _mm256_setzero_ps();
                for (int k = 0; k < QK; k += 8) {
                    __m256 wv = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(w + k))));
                    blk = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + b * QK + k), blk);
                }
                acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(s[b])), blk, acc);
            }
            break;
        case 2: /* q4 weights . int8 activations */
            for (int b = 0; b < nb; b++) {
                __m256i w = unpack_q4(q4[t->mat] + (long)r * COLS / 2 + b * QK / 2);
                __m256i a = _mm256_loadu_si256((const __m256i *)(xq + b * QK));
                acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(s[b]) * xd[b]), dot_i8_block(w, a), acc);
            }
            break;
        case 3: /* q4 weights dequantized to fp32 in registers */
            for (int b = 0; b < nb; b++) {
                __m256i w = unpack_q4(q4[t->mat] + (long)r * COLS / 2 + b * QK / 2);
                __m256 blk = _mm256_setzero_ps();
                __m128i lo = _mm256_castsi256_si128(w), hi = _mm256_extracti128_si256(w, 1);
                __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
                for (int k = 0; k < 4; k++)
                    blk = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(parts[k])),
                                          _mm256_loadu_ps(x + b * QK + 8 * k), blk);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(h2f(s[b])), blk, acc);
            }
            break;
        default: /* fp32 weights, the floor to compare against */
            for (int k = 0; k < COLS; k += 8)
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(wf[t->mat] + (long)r * COLS + k), _mm256_loadu_ps(x + k), acc);
        }
        y[r] = hsum8(acc);
    }
}

static void *thread_main(void *arg) {
    run_rows((const Task *)arg);
    return NULL;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double d = *(const double *)a - *(const double *)b;
    return (d > 0) - (d < 0);
}

static double pass_seconds(int method, int threads, int mats) {
    double times[7];
    for (int rep = 0; rep < 7; rep++) {
        double t0 = now();
        for (int m = 0; m < mats; m++) {
            pthread_t th[2];
            Task tasks[2];
            for (int i = 0; i < threads; i++) {
                tasks[i] = (Task){method, ROWS * i / threads, ROWS * (i + 1) / threads, m};
                if (i) pthread_create(&th[i], NULL, thread_main, &tasks[i]);
            }
            run_rows(&tasks[0]);
            for (int i = 1; i < threads; i++) pthread_join(th[i], NULL);
        }
        times[rep] = (now() - t0) / mats;
    }
    qsort(times, 7, sizeof times[0], cmp);
    return times[3];
}

int main(void) {
    const int nb = COLS / QK;
    srand(1);
    for (int i = 0; i < COLS; i++) x[i] = (float)rand() / RAND_MAX - 0.5f;
    for (int b = 0; b < nb; b++) {
        float amax = 0;
        for (int k = 0; k < QK; k++) amax = fmaxf(amax, fabsf(x[b * QK + k]));
        xd[b] = amax / 127;
        for (int k = 0; k < QK; k++) xq[b * QK + k] = (int8_t)nearbyintf(x[b * QK + k] / xd[b]);
    }
    int fp32_mats = 4; /* 4 x 64 MB fp32 */
    for (int m = 0; m < MATS; m++) {
        q8[m] = malloc((size_t)ROWS * COLS);
        q4[m] = malloc((size_t)ROWS * COLS / 2);
        sc[m] = malloc((size_t)ROWS * nb * 2);
        for (long i = 0; i < (long)ROWS * COLS; i++) q8[m][i] = (int8_t)(rand() % 255 - 127);
        for (long i = 0; i < (long)ROWS * COLS / 2; i++) q4[m][i] = (uint8_t)rand();
        for (long i = 0; i < (long)ROWS * nb; i++) sc[m][i] = _cvtss_sh(0.01f, 0);
        if (m < fp32_mats) {
            wf[m] = malloc((size_t)ROWS * COLS * 4);
            for (long i = 0; i < (long)ROWS * COLS; i++) wf[m][i] = (float)(rand() % 255 - 127);
        }
    }
    const char *names[] = {"q8 . int8 act (maddubs)", "q8 -> fp32 FMA", "q4 . int8 act (maddubs)", "q4 -> fp32 FMA",
                           "fp32 FMA"};
    const double bytes[] = {ROWS * (COLS + nb * 2.0), ROWS * (COLS + nb * 2.0), ROWS * (COLS / 2 + nb * 2.0),
                            ROWS * (COLS / 2 + nb * 2.0), ROWS * COLS * 4.0};
    for (int threads = 1; threads <= 2; threads++)
        for (int method = 0; method < 5; method++) {
            double s = pass_seconds(method, threads, method == 4 ? fp32_mats : MATS);
            printf("%d thread(s)  %-26s %7.2f ms/pass  %6.1f GB/s  %5.2f ns/kweight\n", threads, names[method],
                   s * 1e3, bytes[method] / s / 1e9, s / (ROWS * (double)COLS) * 1e12);
        }
    double check = 0;
    for (int r = 0; r < ROWS; r++) check += y[r];
    fprintf(stderr, "checksum %g\n", check);
    return 0;
}
