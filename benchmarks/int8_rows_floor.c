/* What an 8-row int8 decode step must cost on a CPU without int8 dot-product instructions (AVX2 only, no
 * VNNI): the floor set by the integer instructions alone, beside what the kernel's products take.
 *
 *   gcc -O3 -march=native -Ibigcode_cli/kernels benchmarks/int8_rows_floor.c -o /tmp/int8_rows_floor -lm -pthread
 *   /tmp/int8_rows_floor
 *
 * Without VNNI, the dot product of a 32-value int8 block with one token row's int8 block takes at least three
 * vector instructions: the weights' signs moved onto the input (vpsignb), unsigned-by-signed byte products
 * summed in pairs (vpmaddubsw) and those pairs widened and summed (vpmaddwd); the kernel adds a conversion
 * and a scaled add per block and row (quant_matvec.h). Part 1 times these sequences in registers only (no
 * memory, 12 independent rows), so nothing but the core's issue of them limits it. Part 2 times the kernel's
 * own `quant_dots_tile` over 8 token rows, the weights resident in L2. Both are scaled to the 116M shape's
 * 3.84M weight blocks (12 layers of 768-wide matrices and the 49,152 x 768 LM head) times 8 rows, on one
 * thread: compare with `benchmarks/batch_step.py --shape 116m --dtype int8 --rows 1 --rows 8 --threads 1
 * --clock cpu`, whose one-row step is the whole step (weights read, attention, everything).
 * An AVX2 build only: with AVX-512 VNNI the kernel takes other paths (quant_groups.h, amx_int8.h).
 */
#include "decode_step.c"

#include <stdio.h>
#include <time.h>

#if !defined(QUANT_AVX2) || defined(QUANT_VNNI512)
#error "this measures the AVX2 path without VNNI: on a CPU with AVX-512 VNNI build it with -mavx2 -mfma -mf16c"
#endif

enum { SHAPE_BLOCKS = 3840000, ROWS = 8, CHAINS = 12 };

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

#define KEEP(v) __asm__ volatile("" : "+x"(v))

/* ns per block and row of the three integer instructions (full: also the conversion and the scaled add) */
static double instruction_floor(int full) {
    const long iterations = 20000000;
    const __m256i w = _mm256_set1_epi8(-3), u = _mm256_abs_epi8(w), one = _mm256_set1_epi16(1);
    const __m256 scale = _mm256_set1_ps(0.5f);
    __m256i a[CHAINS];
    __m256 acc[CHAINS];
    for (int c = 0; c < CHAINS; c++) a[c] = _mm256_set1_epi8((char)(c + 1)), acc[c] = _mm256_setzero_ps();
    const double began = seconds();
    for (long i = 0; i < iterations; i++)
        for (int c = 0; c < CHAINS; c++) {
            __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_sign_epi8(a[c], w)), one);
            if (full) {
                acc[c] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sums), acc[c]);
                KEEP(acc[c]);
            } else {
                a[c] = _mm256_xor_si256(a[c], sums); /* the next row's input depends on this one's sums */
            }
            KEEP(a[c]);
        }
    const double ns = (seconds() - began) * 1e9 / ((double)iterations * CHAINS);
    float sink = 0.0f;
    for (int c = 0; c < CHAINS; c++) sink += acc[c][0] + (float)_mm256_extract_epi32(a[c], 0);
    if (sink == 12345.0f) printf(" ");
    return ns;
}

/* ns per block and row of quant_dots_tile: 8 token rows against `out` rows of `in` int8 weights (L2-resident) */
static double kernel_products(int in, int out) {
    const int blocks = in / QK;
    int8_t *w = aligned_alloc(64, (size_t)out * in), *xq = aligned_alloc(64, (size_t)ROWS * in);
    uint16_t *ws = malloc(sizeof(uint16_t) * out * blocks);
    float *xd = malloc(sizeof(float) * ROWS * blocks);
    int32_t *xc = aligned_alloc(64, sizeof(int32_t) * ROWS * blocks * 8);
    for (long i = 0; i < (long)out * in; i++) w[i] = (int8_t)(i * 37 % 255 - 127);
    for (long i = 0; i < (long)out * blocks; i++) ws[i] = 0x2000; /* fp16 2^-7 */
    for (long i = 0; i < (long)ROWS * in; i++) xq[i] = (int8_t)(i * 11 % 255 - 127);
    for (long i = 0; i < (long)ROWS * blocks; i++) xd[i] = 0.01f;
    memset(xc, 0, sizeof(int32_t) * ROWS * blocks * 8);
    double best = 1e30;
    float sink = 0.0f, v[QUANT_TILE];
    for (int repeat = 0; repeat < 20; repeat++) {
        const double began = seconds();
        for (int pass = 0; pass < 10; pass++)
            for (int o = 0; o < out; o++)
                for (int b0 = 0; b0 < ROWS; b0 += QUANT_TILE) {
                    const int nr = ROWS - b0 < QUANT_TILE ? ROWS - b0 : QUANT_TILE;
                    quant_dots_tile(w + (long)o * in, ws + (long)o * blocks, QUANT_Q8, xq + (long)b0 * in,
                                    xd + (long)b0 * blocks, xc + (long)b0 * blocks * 8, blocks, v, 0, nr);
                    sink += v[0];
                }
        const double took = (seconds() - began) / 10;
        if (took < best) best = took;
    }
    if (sink == 12345.0f) printf(" ");
    free(w), free(xq), free(ws), free(xd), free(xc);
    return best * 1e9 / ((double)out * blocks * ROWS);
}

int main(void) {
    const double bare = instruction_floor(0), full = instruction_floor(1);
    const double k768 = kernel_products(768, 256), k3072 = kernel_products(3072, 64);
    const double scale = (double)SHAPE_BLOCKS * ROWS / 1e6; /* ns per block-row -> ms for the shape's 8 rows */
    printf("ns per 32-value block and token row (one thread):\n");
    printf("  sign + pair products + widening, registers only: %.3f  -> 116M shape, 8 rows: %.1f ms\n", bare,
           bare * scale);
    printf("  the same + conversion + scaled add:              %.3f  -> %.1f ms\n", full, full * scale);
    printf("  the kernel's quant_dots_tile, 768 inputs:        %.3f  -> %.1f ms\n", k768, k768 * scale);
    printf("  the kernel's quant_dots_tile, 3,072 inputs:      %.3f  -> %.1f ms\n", k3072, k3072 * scale);
    return 0;
}
