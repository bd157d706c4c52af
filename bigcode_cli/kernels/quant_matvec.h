/* Matrix-vector products with block-quantized weights, for decode_step.c (included there, once).
 *
 * Weight formats (bigcode_cli/model/quantize.py holds the definitions and the quantizer): every row is cut in
 * blocks of QK = 32 values with one fp16 scale each, rows zero-padded to whole blocks.
 *   QUANT_Q8: 32 int8 values q, w = d * q.
 *   QUANT_Q4: 16 bytes, byte j = element j (low nibble) | element j + 16 (high nibble), w = d * (nibble - 8).
 *
 * The input vector is quantized the same way on the fly (per block of 32: d = max|x| / 127, q = round(x / d),
 * round half to even; scale kept in fp32), so each block's dot product is an exact integer sum and only
 * the per-block sums are scaled and added in float. Chosen over dequantizing weights to fp32 in registers
 * by benchmarks/quant_formats.c: with integer products a 4-bit row costs no more instructions than an 8-bit
 * one, where the fp32 route spends four conversions and four FMAs per block.
 *
 * Paths: AVX2 (+FMA, F16C) multiplies unsigned by signed bytes (vpmaddubsw) and widens pairs with
 * vpmaddwd. An 8-bit weight's sign is moved onto the input so that |w| is the unsigned side; a 4-bit
 * weight's nibble u is already unsigned, so the block's sum is dot(u, x) - 8 * sum(x) with the second term
 * made once per input block (`xc`), exactly the same integer. The two per-block scales are multiplied
 * eight blocks at a time. Every other CPU gets the plain C loop, which gives the same integer sums.
 * (116m shape, int4 decode step on an AVX2 AMD EPYC, 2 threads: 9.6 ms before these two changes.)
 */

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define QUANT_AVX2 1
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
/* two blocks per 512-bit vpdpbusd; an 8-bit weight's input is held as q + 128 (unsigned), see pair_weights */
#define QUANT_VNNI512 1
#endif
#endif

#define QK 32
enum { QUANT_NONE = 0, QUANT_Q4 = 4, QUANT_Q8 = 8 };

static inline float half_to_float(uint16_t h) {
#ifdef QUANT_AVX2
    return _cvtsh_ss(h);
#else
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else { /* subnormal: man * 2^-24 is exact in float */
        float f = (float)man * 5.9604644775390625e-8f;
        memcpy(&bits, &f, sizeof bits);
        bits |= sign;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
#endif
}

static inline long quant_row_bytes(int quant, int in) {
    const long blocks = (in + QK - 1) / QK;
    return quant == QUANT_Q8 ? blocks * QK : blocks * QK / 2;
}

/* v (|v| <= 127 or NaN) rounded to the nearest integer, ties to even; a NaN (a NaN input, or an infinite one
 * scaled by 0) as 0 */
static inline int8_t quantized_value(float v) { return v == v ? (int8_t)nearbyintf(v) : 0; }

/* x (n values) -> q (blocks * 32 int8, zero-padded) and d (blocks fp32 scales); on AVX2 also c (blocks * 8
 * int32): 8 * the sums of q's groups of four, what a 4-bit block's unsigned products overcount (negated
 * with 512-bit VNNI) */
static void quantize_input(const float *x, int n, int8_t *q, float *d, int32_t *c) {
    const int blocks = (n + QK - 1) / QK;
    for (int blk = 0; blk < blocks; blk++) {
        const int i0 = blk * QK, len = n - i0 < QK ? n - i0 : QK;
#if defined(__AVX512F__) && defined(__AVX512BW__)
        if (len == QK) { /* the same numbers sixteen at a time: NaNs left out of the largest (as fmaxf does), each
                          * product rounded to the nearest, ties to even (as nearbyintf in the default mode), a
                          * NaN product (a NaN input, or an infinite one times 0) as 0 (as quantized_value) */
            const __m512 a = _mm512_loadu_ps(x + i0), b = _mm512_loadu_ps(x + i0 + 16);
            const __m512 m = _mm512_max_ps(_mm512_mask_abs_ps(_mm512_setzero_ps(), _mm512_cmp_ps_mask(a, a, _CMP_ORD_Q), a),
                                           _mm512_mask_abs_ps(_mm512_setzero_ps(), _mm512_cmp_ps_mask(b, b, _CMP_ORD_Q), b));
            const float scale = _mm512_reduce_max_ps(m) / 127.0f, inv = scale != 0.0f ? 1.0f / scale : 0.0f;
            d[blk] = scale;
            for (int half = 0; half < 2; half++) {
                const __m512 p = _mm512_mul_ps(half ? b : a, _mm512_set1_ps(inv));
                const __m512i v = _mm512_maskz_cvtps_epi32(_mm512_cmp_ps_mask(p, p, _CMP_ORD_Q), p);
                _mm_storeu_si128((__m128i *)(q + i0 + 16 * half), _mm512_cvtsepi32_epi8(v));
            }
        } else
#endif
        {
            float amax = 0.0f;
            for (int k = 0; k < len; k++) amax = fmaxf(amax, fabsf(x[i0 + k]));
            const float scale = amax / 127.0f, inv = scale != 0.0f ? 1.0f / scale : 0.0f;
            d[blk] = scale;
            for (int k = 0; k < len; k++) q[i0 + k] = quantized_value(x[i0 + k] * inv);
            for (int k = len; k < QK; k++) q[i0 + k] = 0;
        }
#ifdef QUANT_AVX2
        const __m256i a = _mm256_loadu_si256((const __m256i *)(q + i0));
        const __m256i eight_q = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(8), a), _mm256_set1_epi16(1));
#ifdef QUANT_VNNI512 /* negated: the sums a 4-bit pair's vpdpbusd starts from */
        _mm256_storeu_si256((__m256i *)(c + (long)blk * 8), _mm256_sub_epi32(_mm256_setzero_si256(), eight_q));
#else
        _mm256_storeu_si256((__m256i *)(c + (long)blk * 8), eight_q);
#endif
#else
        (void)c;
#endif
    }
}

#ifdef QUANT_AVX2
static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The weight side of a block, prepared once for every token row of a tile: an 8-bit block's |w| (the
 * unsigned operand) and w (whose signs move onto the input), or a 4-bit block's unsigned nibbles u */
typedef struct {
    __m256i u, w;
} BlockWeights;

static inline BlockWeights block_weights(const void *row, int quant, int blk) {
    BlockWeights p;
    if (quant == QUANT_Q8) {
        p.w = _mm256_loadu_si256((const __m256i *)((const int8_t *)row + (long)blk * QK));
        p.u = _mm256_sign_epi8(p.w, p.w);
    } else {
        const __m128i packed = _mm_loadu_si128((const __m128i *)((const uint8_t *)row + (long)blk * (QK / 2)));
        p.u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), _mm256_set1_epi8(0x0f));
        p.w = p.u;
    }
    return p;
}

/* the eight int32 sums of four consecutive products u * s each (no product pair overflows 16 bits: |s| <=
 * 127, u <= 127); one instruction with AVX-512 VNNI, the same integers as vpmaddubsw + vpmaddwd */
static inline __m256i four_product_sums(__m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

/* the eight partial sums of a block's 32 products with the input a, as floats: 8-bit w * a, or for 4 bits
 * the unsigned nibbles u times a less the input's 8 * a (c), which is (u - 8) * a exactly */
static inline __m256 block_products(BlockWeights p, int quant, const int8_t *a, const int32_t *c) {
    __m256i av = _mm256_loadu_si256((const __m256i *)a);
#ifdef QUANT_VNNI512
    if (quant == QUANT_Q8) av = _mm256_xor_si256(av, _mm256_set1_epi8((char)0x80)); /* back from q + 128 */
#endif
    if (quant == QUANT_Q8) return _mm256_cvtepi32_ps(four_product_sums(p.u, _mm256_sign_epi8(av, p.w)));
#ifdef QUANT_VNNI512 /* c holds -8 * the sums */
    return _mm256_cvtepi32_ps(_mm256_add_epi32(four_product_sums(p.u, av), _mm256_loadu_si256((const __m256i *)c)));
#else
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(four_product_sums(p.u, av), _mm256_loadu_si256((const __m256i *)c)));
#endif
}

#ifdef QUANT_VNNI512
/* Blocks blk and blk + 1 of a weight row as one 512-bit operand of vpdpbusd, and the sums to start from. 8-bit:
 * the signed weights, with the input as q + 128 (unsigned; quant_gemv shifts it), so the sums start at
 * -128 * (the weights' sums), made once here for every row of the tile: exactly sum(q * w). 4-bit: the
 * unsigned nibbles in element order (each block's 16 low nibbles, then its 16 high ones), starting from
 * the input's -8 * q sums (xc, negated in this build); `init` is unused. */
static inline __m512i pair_weights(const void *row, int quant, int blk, __m512i *init) {
    if (quant == QUANT_Q8) {
        const __m512i w = _mm512_loadu_si512((const int8_t *)row + (long)blk * QK);
        *init = _mm512_sub_epi32(_mm512_setzero_si512(),
                                 _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), w));
        return w;
    }
    const __m256i packed = _mm256_loadu_si256((const __m256i *)((const uint8_t *)row + (long)blk * (QK / 2)));
    const __m256i low = _mm256_and_si256(packed, _mm256_set1_epi8(0x0f));
    const __m256i high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), _mm256_set1_epi8(0x0f));
    const __m512i lanes = _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1); /* lo A, lo B, hi A, hi B */
    *init = _mm512_setzero_si512();
    return _mm512_shuffle_i64x2(lanes, lanes, _MM_SHUFFLE(3, 1, 2, 0));
}
#endif

/* token rows per tile: four rows' two sums each, one block's weights and the temporaries fit even AVX2's 16
 * registers (the products of 8 rows with 768 inputs, L2-resident, one thread, AVX2 AMD EPYC: 1.52 -> 1.16 ns
 * a block and row against two rows a tile with two blocks' weights held; one row 1.94 -> 1.45) */
#define QUANT_TILE 4

/* out[r] = sum over blocks of d_w * d_x * (integer dot of the block) for token rows r < NR (xq, xd, xc of row
 * r at r * its stride): per row the scales eight blocks at a time into two sums, the same order whatever NR
 * is (batch invariance, as float_dots.h); each block's weights prepared once for the tile */
static inline __attribute__((always_inline)) void quant_dots(const void *row, const uint16_t *ws, int quant,
                                                             const int8_t *xq, const float *xd, const int32_t *xc,
                                                             int blocks, float *out, long ahead, const int NR) {
    const long qs = (long)blocks * QK, cs = (long)blocks * 8;
    const int block_bytes = quant == QUANT_Q8 ? QK : QK / 2;
    __m256 acc0[QUANT_TILE], acc1[QUANT_TILE];
    for (int r = 0; r < NR; r++) acc0[r] = acc1[r] = _mm256_setzero_ps();
    float scale[QUANT_TILE][8] __attribute__((aligned(32)));
    int blk = 0;
#ifdef QUANT_VNNI512
    __m512 wide0[QUANT_TILE], wide1[QUANT_TILE];
    for (int r = 0; r < NR; r++) wide0[r] = wide1[r] = _mm512_setzero_ps();
    for (; blk + 8 <= blocks; blk += 8) { /* four pairs of blocks: a pair's scales spread over its 8 + 8 lanes */
        prefetch_lines((const char *)row + (long)blk * block_bytes, 8 * block_bytes, (long)blk * block_bytes, ahead);
        const __m256 wd = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(ws + blk)));
        __m512i w[4], init[4];
        for (int k = 0; k < 4; k++) w[k] = pair_weights(row, quant, blk + 2 * k, &init[k]);
        for (int r = 0; r < NR; r++) {
            const __m512 sc = _mm512_castps256_ps512(_mm256_mul_ps(wd, _mm256_loadu_ps(xd + r * blocks + blk)));
            for (int k = 0; k < 4; k++) {
                const __m512i a = _mm512_loadu_si512(xq + r * qs + (long)(blk + 2 * k) * QK);
                __m512i sums;
                if (quant == QUANT_Q8) {
                    sums = _mm512_dpbusd_epi32(init[k], a, w[k]);
                } else {
                    sums = _mm512_dpbusd_epi32(_mm512_loadu_si512(xc + r * cs + (long)(blk + 2 * k) * 8), w[k], a);
                }
                const __m512 pair_scale = _mm512_permutexvar_ps(
                    _mm512_set_epi32(2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k + 1,
                                     2 * k, 2 * k, 2 * k, 2 * k, 2 * k, 2 * k, 2 * k, 2 * k), sc);
                if (k % 2 == 0)
                    wide0[r] = _mm512_fmadd_ps(pair_scale, _mm512_cvtepi32_ps(sums), wide0[r]);
                else
                    wide1[r] = _mm512_fmadd_ps(pair_scale, _mm512_cvtepi32_ps(sums), wide1[r]);
            }
        }
    }
#endif
    for (; blk + 8 <= blocks; blk += 8) {
        prefetch_lines((const char *)row + (long)blk * block_bytes, 8 * block_bytes, (long)blk * block_bytes, ahead);
        const __m256 wd = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(ws + blk)));
        for (int r = 0; r < NR; r++) _mm256_store_ps(scale[r], _mm256_mul_ps(wd, _mm256_loadu_ps(xd + r * blocks + blk)));
        for (int k = 0; k < 8; k += 2) { /* even blocks into acc0, odd ones into acc1, one block's weights at a time */
            const BlockWeights p0 = block_weights(row, quant, blk + k);
            for (int r = 0; r < NR; r++)
                acc0[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(scale[r] + k),
                                          block_products(p0, quant, xq + r * qs + (long)(blk + k) * QK,
                                                         xc + r * cs + (long)(blk + k) * 8),
                                          acc0[r]);
            const BlockWeights p1 = block_weights(row, quant, blk + k + 1);
            for (int r = 0; r < NR; r++)
                acc1[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(scale[r] + k + 1),
                                          block_products(p1, quant, xq + r * qs + (long)(blk + k + 1) * QK,
                                                         xc + r * cs + (long)(blk + k + 1) * 8),
                                          acc1[r]);
        }
    }
    for (; blk < blocks; blk++) {
        const BlockWeights p = block_weights(row, quant, blk);
        const float wd = half_to_float(ws[blk]);
        for (int r = 0; r < NR; r++)
            acc0[r] = _mm256_fmadd_ps(_mm256_set1_ps(wd * xd[r * blocks + blk]),
                                      block_products(p, quant, xq + r * qs + (long)blk * QK, xc + r * cs + (long)blk * 8),
                                      acc0[r]);
    }
#ifdef QUANT_VNNI512
    vf sums[QUANT_TILE];
    for (int r = 0; r < NR; r++) sums[r] = (vf)_mm512_add_ps(wide0[r], wide1[r]);
    hsum_rows(sums, out, NR);
    if (blocks % 8 != 0) /* the blocks past the pairs */
        for (int r = 0; r < NR; r++) out[r] += hsum256(_mm256_add_ps(acc0[r], acc1[r]));
#else
    for (int r = 0; r < NR; r++) out[r] = hsum256(_mm256_add_ps(acc0[r], acc1[r]));
#endif
}

/* out[r] for r < nr <= QUANT_TILE: the tile's size and the format made constants; `ahead` as dots_tile's */
static void quant_dots_tile(const void *row, const uint16_t *ws, int quant, const int8_t *xq, const float *xd,
                            const int32_t *xc, int blocks, float *out, long ahead, int nr) {
#define QUANT_CASE(NR)                                                                                        \
    case NR:                                                                                                  \
        if (quant == QUANT_Q8)                                                                                \
            quant_dots(row, ws, QUANT_Q8, xq, xd, xc, blocks, out, ahead, NR);                                \
        else                                                                                                  \
            quant_dots(row, ws, QUANT_Q4, xq, xd, xc, blocks, out, ahead, NR);                                \
        return;
    switch (nr) {
        QUANT_CASE(1)
        QUANT_CASE(2)
        QUANT_CASE(3)
        QUANT_CASE(4)
    default: return;
    }
#undef QUANT_CASE
}
#else
static inline int block_weight(const void *row, int quant, long i) { /* element i of a quantized row */
    if (quant == QUANT_Q8) return ((const int8_t *)row)[i];
    const uint8_t byte = ((const uint8_t *)row)[i / QK * (QK / 2) + i % (QK / 2)];
    return (i % QK < QK / 2 ? byte & 0x0f : byte >> 4) - 8;
}

#define QUANT_TILE 1

/* out[0]: the plain C loop, one token row at a time (the weight row stays in L1 for the next) */
static void quant_dots_tile(const void *row, const uint16_t *ws, int quant, const int8_t *xq, const float *xd,
                            const int32_t *xc, int blocks, float *out, long ahead, int nr) {
    (void)xc, (void)nr, (void)ahead;
    float total = 0.0f;
    for (int blk = 0; blk < blocks; blk++) {
        int32_t sum = 0;
        for (int k = 0; k < QK; k++) sum += block_weight(row, quant, (long)blk * QK + k) * xq[(long)blk * QK + k];
        total += (half_to_float(ws[blk]) * xd[blk]) * (float)sum;
    }
    out[0] = total;
}
#endif

typedef struct {
    const Linear *lin;
    const int8_t *xq;  /* (B, blocks * 32) */
    const int32_t *xc; /* (B, blocks * 8) */
    const float *xd;   /* (B, blocks) */
    const int32_t *xs; /* (B, blocks): -8 * each block's input sum, where 4-bit groups use it (quant_groups.h) */
    float *y;         /* (B, out) */
    int B, mode, activation, rows_per_chunk;
    const char *packed; /* 8-bit weights on AMX tiles: the tokens packed for them (amx_int8.h); else NULL */
    const Argmax *argmax; /* as Gemv's */
} QuantGemv;

#ifdef QUANT_VNNI512
#include "quant_groups.h"
#endif

static void quant_gemv_chunk(const Job *job, int chunk, int thread) {
    (void)thread;
    const QuantGemv *g = (const QuantGemv *)job->args;
    const Linear *L = g->lin;
    const int blocks = (L->in + QK - 1) / QK, quant = L->quant;
    const long row_bytes = quant_row_bytes(quant, L->in);
    int r0 = chunk * g->rows_per_chunk, r1 = r0 + g->rows_per_chunk;
    if (r1 > L->out) r1 = L->out;
    int o = r0;
#ifdef QUANT_VNNI512
    if (L->group_scales) { /* whole groups of 16 rows (chunks start at one); the matrix's last rows below */
#ifdef AMX_INT8
        if (g->packed) o = amx_q8_groups(g, o, r1);
#endif
        for (; o + GROUP_ROWS <= r1; o += GROUP_ROWS) quant_group(g, o);
    }
#endif
    for (; o < r1; o++) {
        const void *row = (const char *)L->w + (long)o * row_bytes;
        const uint16_t *ws = L->scales + (long)o * blocks;
        const float bias = L->b ? L->b[o] : 0.0f;
        for (int b0 = 0; b0 < g->B; b0 += QUANT_TILE) { /* the row stays in L1 for the other tiles */
            const int nr = g->B - b0 < QUANT_TILE ? g->B - b0 : QUANT_TILE;
            float v[QUANT_TILE];
            quant_dots_tile(row, ws, quant, g->xq + (long)b0 * blocks * QK, g->xd + (long)b0 * blocks,
                            g->xc + (long)b0 * blocks * 8, blocks, v, b0 == 0 ? (long)(r1 - o) * row_bytes : 0, nr);
            for (int r = 0; r < nr; r++) {
                float *y = g->y + (long)(b0 + r) * L->out + o;
                *y = g->mode == OUT_ADD ? *y + v[r] + bias : v[r] + bias;
            }
        }
    }
    if (g->mode == OUT_ACT)
        for (int b = 0; b < g->B; b++) activate(g->y + (long)b * L->out + r0, r1 - r0, g->activation);
    if (g->argmax) chunk_best(g->argmax, chunk, g->y, g->B, L->out, r0, r1);
}

/* bytes of scratch a quantized matvec of B rows of up to `widest` inputs needs: the int8 blocks, their 4-bit
 * corrections (8 int32 each), their fp32 scales, and their sums for 4-bit groups (every part a multiple of
 * 32 bytes but the last two) */
static size_t quant_scratch_size(int B, int widest) {
    const size_t blocks = (size_t)(widest + QK - 1) / QK;
    size_t size = (size_t)B * blocks * (QK + 8 * sizeof(int32_t) + sizeof(float) + sizeof(int32_t));
#ifdef AMX_INT8
    size = aligned_size(size) + amx_q8_packed_size(B, (long)blocks);
#endif
    return size;
}

static int model_is_quantized(const Model *m) {
    return m->lm_head.quant != QUANT_NONE || m->wte_quant != QUANT_NONE ||
           (m->n_layer > 0 && m->layers[0].attn.quant != QUANT_NONE);
}

/* y = x W^T (+ bias) for a quantized W, then the output mode (as gemv); rows_per_chunk as gemv chose it;
 * `scratch` has quant_scratch_size(B, lin->in) bytes */
static void quant_gemv(const Linear *lin, const float *x, void *scratch, float *y, int B, int mode, int activation,
                       int rows, const Argmax *argmax) {
    const int blocks = (lin->in + QK - 1) / QK;
    int8_t *xq = (int8_t *)scratch;
    int32_t *xc = (int32_t *)(xq + (size_t)B * blocks * QK);
    float *xd = (float *)(xc + (size_t)B * blocks * 8);
    int32_t *xs = (int32_t *)(xd + (size_t)B * blocks);
    for (int b = 0; b < B; b++)
        quantize_input(x + (long)b * lin->in, lin->in, xq + (long)b * blocks * QK, xd + (long)b * blocks,
                       xc + (long)b * blocks * 8);
#ifdef QUANT_VNNI512
    if (lin->quant == QUANT_Q8) /* q + 128 as unsigned bytes (pair_weights) */
        for (long i = 0; i < (long)B * blocks * QK; i++) xq[i] = (int8_t)((uint8_t)xq[i] ^ 0x80u);
#endif
#ifdef QUANT_VNNI512
    if (lin->group_scales) rows = (rows + GROUP_ROWS - 1) / GROUP_ROWS * GROUP_ROWS; /* chunks of whole groups */
    if (lin->group_scales && lin->quant == QUANT_Q4) /* xc holds -8 * the sums of each block's groups of four */
        for (long i = 0; i < (long)B * blocks; i++) {
            int32_t total = 0;
            for (int j = 0; j < 8; j++) total += xc[i * 8 + j];
            xs[i] = total;
        }
#endif
    const char *packed = NULL;
#ifdef AMX_INT8
    if (lin->quant == QUANT_Q8 && lin->group_scales && B > 1 && amx_usable()) { /* after the rest (quant_scratch_size) */
        char *at = (char *)scratch + aligned_size((size_t)B * blocks * (QK + 8 * sizeof(int32_t) + sizeof(float) + sizeof(int32_t)));
        amx_q8_pack(xq, xd, B, blocks, at);
        packed = at;
    }
#endif
    QuantGemv g = {lin, xq, xc, xd, xs, y, B, mode, activation, rows, packed, argmax};
    const int chunks = (lin->out + rows - 1) / rows;
    run_job(quant_gemv_chunk, chunks, &g);
    if (argmax) put_best(argmax, chunks, B);
}

/* row `id` of a quantized (vocab, C) table, dequantized into out (C values) */
static void quant_embed_row(const void *table, const uint16_t *scales, int quant, long id, int C, float *out) {
    const int blocks = (C + QK - 1) / QK;
    const char *row = (const char *)table + id * quant_row_bytes(quant, C);
    const uint16_t *ws = scales + id * blocks;
    for (int i = 0; i < C; i++) {
        int q;
        if (quant == QUANT_Q8) {
            q = ((const int8_t *)row)[i];
        } else {
            const uint8_t byte = ((const uint8_t *)row)[i / QK * (QK / 2) + i % (QK / 2)];
            q = (i % QK < QK / 2 ? byte & 0x0f : byte >> 4) - 8;
        }
        out[i] = half_to_float(ws[i / QK]) * (float)q;
    }
}

/* y (B, out) = x (B, in) W^T + bias for one quantized Linear, on `threads` threads: the matvec of a decode
 * step on its own, for tests against a PyTorch reference. Returns 0, or -1 when out of memory. */
int bigcode_quant_matvec(const Linear *lin, const float *x, float *y, int B, int threads) {
    void *scratch = malloc(quant_scratch_size(B, lin->in));
    if (!scratch) return -1;
    pthread_mutex_lock(&step_lock);
    ensure_workers(threads < 1 ? 1 : threads);
    int chunks = CHUNKS_PER_THREAD * atomic_load(&pool.active);
    int rows = (lin->out + chunks - 1) / chunks;
    rows = rows < 4 ? 4 : (rows + 3) / 4 * 4;
    quant_gemv(lin, x, scratch, y, B, OUT_STORE, 0, rows, NULL);
    pthread_mutex_unlock(&step_lock);
    free(scratch);
    return 0;
}
