/* What an 8-row int8 decode step must cost on a CPU without int8 dot-product instructions (AVX2 only, no
 * VNNI): the floor set by the integer instructions alone, beside what the kernel's products take.
 *
 *   gcc -O3 -march=native -Ibigcode_cli/kernels benchmarks/int8_rows_floor.c -o /tmp/int8_rows_floor -lm -pthread
 *   /tmp/int8_rows_floor
 *
 * Without VNNI, the dot product of a 32-value int8 block with one token row's int8 block takes at least three
 * vector instructions: the weights' signs moved onto the input (vpsignb), unsigned-by-signed byte products
 * summed in pairs (vpmaddubsw) and those pairs widened and summed (vpmaddwd); the kernel adds a conversion
 * and a scaled add per block and row (quant_matvec.h). Part 1 times the three with every value in a register
 * (no loads or stores, four independent rows), so nothing but the core's issue of them limits it: the floor,
 * whatever the kernel does around them (noise only adds: take the fastest of a few runs). Part 2 times the
 * kernel's own `quant_dots_tile` over 8 token rows, the weights resident in L2. Both are scaled to the 116M
 * shape (benchmarks/quant_speed.py: 12 layers of width 768 with multi-query attention, so a layer's matrices
 * take 896 + 768 + 3,072 rows of 768 inputs and 768 rows of 3,072, and the 49,152 x 768 LM head: 3.43M blocks
 * of 32 weights) times 8 rows, on one thread: compare with `benchmarks/batch_step.py --shape 116m --dtype int8
 * --rows 1 --rows 8 --threads 1 --clock cpu`, whose one-row step is the whole step (weights read, attention,
 * everything) on one thread.
 * An AVX2 build only: with AVX-512 VNNI the kernel takes other paths (quant_groups.h, amx_int8.h).
 */
#include "decode_step.c"

#include <stdio.h>
#include <time.h>

#if !defined(QUANT_AVX2) || defined(QUANT_VNNI512) || defined(__AVX512VNNI__)
#error "this measures the AVX2 path without VNNI: on a CPU with AVX-512 VNNI build it with -mavx2 -mfma -mf16c"
#endif

enum { ROWS = 8 };
/* the 116M shape's weight blocks: 12 layers of (896 + 768 + 3,072) x 768 and 768 x 3,072, then the LM head */
static const double SHAPE_BLOCKS = 12.0 * ((896 + 768 + 3072) * (768 / 32) + 768 * (3072 / 32)) + 49152.0 * (768 / 32);

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

#define KEEP(v) __asm__ volatile("" : "+x"(v))

/* One token row's block: the three instructions, the sums added up (vpaddd, which does not compete with
 * them for the multiplying units); KEEP makes the input look new every time, so nothing is hoisted */
#define BLOCK_ROW(a, total)                                                                                  \
    do {                                                                                                     \
        KEEP(a);                                                                                             \
        total = _mm256_add_epi32(total, _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_sign_epi8(a, w)), one)); \
    } while (0)

/* ns per block and row of the three integer instructions: four independent rows (no row waits on another, and
 * out-of-order execution overlaps the iterations), every value in a ymm register (GCC spills the totals with
 * six rows) */
static double instruction_floor(void) {
    const long iterations = 60000000;
    __m256i w = _mm256_set1_epi8(-3), u = _mm256_abs_epi8(w), one = _mm256_set1_epi16(1);
    KEEP(w);
    KEEP(u);
    KEEP(one);
    __m256i a0 = _mm256_set1_epi8(1), a1 = _mm256_set1_epi8(2), a2 = _mm256_set1_epi8(3), a3 = _mm256_set1_epi8(4);
    __m256i t0 = _mm256_setzero_si256(), t1 = t0, t2 = t0, t3 = t0;
    const double began = seconds();
    for (long i = 0; i < iterations; i++) {
        BLOCK_ROW(a0, t0);
        BLOCK_ROW(a1, t1);
        BLOCK_ROW(a2, t2);
        BLOCK_ROW(a3, t3);
    }
    const double ns = (seconds() - began) * 1e9 / ((double)iterations * 4);
    const __m256i all = _mm256_add_epi32(_mm256_add_epi32(t0, t1), _mm256_add_epi32(t2, t3));
    if (_mm256_extract_epi32(all, 0) == 12345) printf(" ");
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
                    for (int r = 0; r < nr; r++) sink += v[r];
                }
        const double took = (seconds() - began) / 10;
        if (took < best) best = took;
    }
    if (sink == 12345.0f) printf(" ");
    free(w), free(xq), free(ws), free(xd), free(xc);
    return best * 1e9 / ((double)out * blocks * ROWS);
}

int main(void) {
    const double floor = instruction_floor();
    const double k768 = kernel_products(768, 256), k3072 = kernel_products(3072, 64);
    const double scale = SHAPE_BLOCKS * ROWS / 1e6; /* ns per block-row -> ms for the shape's 8 rows */
    printf("ns per 32-value block and token row, one thread (-> the 116M shape's %.2fM blocks x %d rows):\n",
           SHAPE_BLOCKS / 1e6, ROWS);
    printf("  sign, pair products, widening; registers only: %.3f -> %.1f ms\n", floor, floor * scale);
    printf("  the kernel's quant_dots_tile, 768 inputs:      %.3f -> %.1f ms\n", k768, k768 * scale);
    printf("  the kernel's quant_dots_tile, 3,072 inputs:    %.3f -> %.1f ms\n", k3072, k3072 * scale);
    return 0;
}
