/* Block-quantized weights sixteen rows at a time, one row per 32-bit lane (512-bit VNNI builds), for
 * quant_matvec.h: 8-bit (q8_group_tokens) and 4-bit (q4_group_tokens) weights, and one token of either
 * (group_one); quant_group picks.
 *
 * Why: the row-at-a-time path (quant_dots) sums each row's products across the lanes, so every token pays,
 * per pair of blocks, a conversion, a scale permute and an FMA, and a horizontal sum per row at the end:
 * with eight tokens those float steps, not the weights' read, set the time (116m shape, one thread: an
 * 8-token step's products cost ~1.8x one token's in int8, ~3.2x in int4, whose nibbles were unpacked
 * again for every tile of tokens). Here a block of 16 rows is turned so that lane r holds row r: the
 * block's 4-byte pieces become vectors (a transpose in registers; 4-bit: then split into low and high
 * nibbles), each token's four input bytes are broadcast against them (eight vpdpbusd: the 16 rows'
 * whole-block integer sums, one per lane), and one conversion and one FMA per token apply the 16 rows'
 * scales at once. The transposed weights serve every token of the step, and the results land in the
 * output's own order.
 *
 * The weights stay in their row-major format (no second copy, the same file and PyTorch paths); only the
 * scales of the groups are kept again in lane order (Linear.group_scales: 1/16 of an int8 matrix's bytes).
 * The 16 rows are read as one sequential run, the next group's lines asked for while this one is
 * multiplied (16 rows read side by side with only the hardware prefetchers ran at half speed).
 *
 * Measured, one thread, CPU time of a step of the 116m shape (Intel Xeon, AVX-512 VNNI; old path then this
 * one, interleaved, `python benchmarks/batch_step.py --shape 116m --dtype int8 --dtype int4 --threads 1
 * --clock cpu --prompt 128`): int8 1 token 9.8-11.8 -> 9.6-10.8 ms, 8 tokens 17.7-20.0 -> 14.4-16.4;
 * int4 1 token 6.0-6.4 -> 4.9-5.0, 8 tokens 19.8-20.1 -> 9.0-10.0. A row's result does not depend on the
 * other tokens of the step: its whole-block integer sums are exact whichever path made them, and each
 * block's are scaled into its sum the same way, in the same order (group_scaled), so one token alone or
 * among others gives the same bits (batch invariance). Which rows come here depends only on the matrix
 * (its whole groups of 16; the rest keep quant_dots), since chunks are whole groups (quant_gemv). */

#define GROUP_ROWS 16

/* The weights are read a group of 16 rows at a time, each group one run of memory. Each loop asks, as it
 * reaches bytes [at, at + bytes) of its group's run, for the same bytes of the next group into L1 and, with
 * 8-bit weights (`far`), of the group GROUP_L2_AHEAD after that into L2 only (a prefetch past the matrix is
 * harmless). The next group alone left the loads waiting on memory (the hardware prefetchers do not follow
 * 16 rows read side by side); asking for lines further ahead into L1 as well evicted the ones about to be
 * read. Measured on the Intel Xeon (AMX), one thread, the products of a 116m step (a test program: 12 layers
 * and the LM head, builds alternated, medians of 11): int8 one token 6.0-7.1 -> 5.0-5.4 ms, eight on tiles
 * 7.0-9.2 -> 6.6-7.8 ms, eight on vectors (BIGCODE_AMX=0) the same within noise; int4, half the bytes, gained
 * nothing (its extra prefetches cost ~3% of eight tokens' time), so it keeps the next group only. */
#ifndef GROUP_L2_AHEAD
#define GROUP_L2_AHEAD 1
#endif
static inline __attribute__((always_inline)) void group_lines(const char *next, long group_bytes, long at, int bytes,
                                                              const int far) {
    for (int l = 0; l < bytes; l += 64) __builtin_prefetch(next + at + l);
    if (far && GROUP_L2_AHEAD > 0)
        for (int l = 0; l < bytes; l += 64) __builtin_prefetch(next + GROUP_L2_AHEAD * group_bytes + at + l, 0, 2);
}

/* four input bytes from p broadcast to every 32-bit lane (read through memcpy: int8 storage, no aliasing doubt) */
static inline __attribute__((always_inline)) __m512i four_bytes(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm512_set1_epi32(v);
}
#define GROUP_TOKENS 8 /* tokens per pass over a group: their sums and the transposed weights fit the registers */

/* the block's 32 bytes of rows w, w + stride, ... (16 rows): v[k] lane r = bytes 4k .. 4k + 3 of row r */
static inline __attribute__((always_inline)) void q8_transpose(const int8_t *w, long stride, __m512i v[8]) {
    __m512i z[8], t[8], u[8];
    for (int i = 0; i < 8; i++) /* lanes 0-7: row i, lanes 8-15: row i + 8 */
        z[i] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(w + i * stride))),
                                  _mm256_loadu_si256((const __m256i *)(w + (i + 8) * stride)), 1);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_epi32(z[i], z[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(z[i], z[i + 1]);
    }
    for (int q = 0; q < 8; q += 4) {
        u[q] = _mm512_unpacklo_epi64(t[q], t[q + 2]);
        u[q + 1] = _mm512_unpackhi_epi64(t[q], t[q + 2]);
        u[q + 2] = _mm512_unpacklo_epi64(t[q + 1], t[q + 3]);
        u[q + 3] = _mm512_unpackhi_epi64(t[q + 1], t[q + 3]);
    }
    /* u[k] and u[k + 4] hold pieces k and k + 4 of rows 0-3 / 4-7 (128-bit lanes 0 and 1) and 8-11 / 12-15
     * (lanes 2 and 3) in alternate lanes */
    const __m512i low = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0), high = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
    for (int k = 0; k < 4; k++) {
        v[k] = _mm512_permutex2var_epi64(u[k], low, u[k + 4]);
        v[k + 4] = _mm512_permutex2var_epi64(u[k], high, u[k + 4]);
    }
}

/* acc = sum over blocks of float(the lanes' block sums) * (row scales * the token's scale), in block order:
 * both paths below end every block this way, so a row's result is the same bits whichever ran it */
static inline __attribute__((always_inline)) __m512 group_scaled(__m512 acc, __m512i sums, __m512 wd, float xd) {
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(wd, _mm512_set1_ps(xd)), acc);
}

/* y rows o .. o + 15 of token t from its sums: as put_output, (y + v) + bias, or v + bias */
static inline void group_put(const QuantGemv *g, int t, int o, __m512 v) {
    const Linear *L = g->lin;
    float *y = g->y + (long)t * L->out + o;
    if (g->mode == OUT_ADD) v = _mm512_add_ps(_mm512_loadu_ps(y), v);
    _mm512_storeu_ps(y, L->b ? _mm512_add_ps(v, _mm512_loadu_ps(L->b + o)) : _mm512_add_ps(v, _mm512_setzero_ps()));
}

/* rows o .. o + 15, tokens t0 .. t0 + NT - 1: the inputs are q + 128 (unsigned, quant_gemv), so each lane's
 * sums start from -128 * (its row's weights' sum), made once per block for every token: exactly sum(q * w) */
static inline __attribute__((always_inline)) void q8_group_tokens(const QuantGemv *g, int o, int t0, const int NT) {
    const Linear *L = g->lin;
    const int blocks = (L->in + QK - 1) / QK;
    const long row_bytes = (long)blocks * QK;
    const int8_t *w = (const int8_t *)L->w + (long)o * row_bytes;
    const uint16_t *scales = L->group_scales + (long)(o / GROUP_ROWS) * blocks * GROUP_ROWS;
    const int8_t *xq = g->xq + (long)t0 * row_bytes;
    const float *xd = g->xd + (long)t0 * blocks;
    const __m512i bias128 = _mm512_set1_epi8((char)0x80);
    const char *next = (const char *)(w + GROUP_ROWS * row_bytes); /* the next group's rows, one run */
    __m512 acc[GROUP_TOKENS];
    for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps();
    for (int blk = 0; blk < blocks; blk++) {
        if (t0 == 0) /* this block's share of the groups ahead */
            group_lines(next, GROUP_ROWS * row_bytes, (long)blk * GROUP_ROWS * QK, GROUP_ROWS * QK, 1);
        __m512i v[8];
        q8_transpose(w + (long)blk * QK, row_bytes, v);
        __m512i i0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias128, v[0]);
        __m512i i1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias128, v[1]);
        for (int j = 2; j < 8; j += 2) {
            i0 = _mm512_dpbusd_epi32(i0, bias128, v[j]);
            i1 = _mm512_dpbusd_epi32(i1, bias128, v[j + 1]);
        }
        const __m512i start = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_add_epi32(i0, i1));
        const __m512 wd = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(scales + (long)blk * GROUP_ROWS)));
        for (int t = 0; t < NT; t++) {
            const int8_t *x = xq + t * row_bytes + (long)blk * QK;
            __m512i s0 = start, s1 = _mm512_setzero_si512();
            for (int j = 0; j < 8; j += 2) {
                s0 = _mm512_dpbusd_epi32(s0, four_bytes(x + 4 * j), v[j]);
                s1 = _mm512_dpbusd_epi32(s1, four_bytes(x + 4 * j + 4), v[j + 1]);
            }
            acc[t] = group_scaled(acc[t], _mm512_add_epi32(s0, s1), wd, xd[(long)t * blocks + blk]);
        }
    }
    for (int t = 0; t < NT; t++) group_put(g, t0 + t, o, acc[t]);
}

static inline int32_t hsum_epi32_256(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* 32-bit lanes of a and b: the sums of their neighbouring pairs, interleaved (wide: 64-bit halves) */
static inline __m512i pair_sums(__m512i a, __m512i b, int wide) {
    return wide ? _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
                : _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
}

/* One token, rows o .. o + 15: no transpose (its shuffles are worth it only when several tokens share them).
 * Each row's two blocks meet the token's 64 inputs in one vpdpbusd: 8-bit weights made unsigned (w + 128)
 * against the token signed, a lane's sum starting from -128 * (the sum of its four token values), 16 * xc
 * (quantize_input's -8 * those sums); 4-bit weights' unsigned nibbles in element order (pair_weights)
 * against the token, starting from xc itself, so (u - 8) * q: the same start for every row. Then the 16
 * rows' lanes are summed down, pairs at a time, to one vector per block with a lane per row: the same
 * integers as the transposed paths, scaled the same way (group_scaled). */
static inline __attribute__((always_inline)) void group_one(const QuantGemv *g, int o, int t, const int Q4) {
    const Linear *L = g->lin;
    const int blocks = (L->in + QK - 1) / QK, block_bytes = Q4 ? QK / 2 : QK;
    const long row_bytes = (long)blocks * block_bytes, x_bytes = (long)blocks * QK;
    const int8_t *w = (const int8_t *)L->w + (long)o * row_bytes;
    const uint16_t *scales = L->group_scales + (long)(o / GROUP_ROWS) * blocks * GROUP_ROWS;
    const int8_t *xq = g->xq + (long)t * x_bytes;
    const int32_t *xc = g->xc + (long)t * blocks * 8;
    const float *xd = g->xd + (long)t * blocks;
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const char *next = (const char *)(w + GROUP_ROWS * row_bytes);
    __m512 acc = _mm512_setzero_ps();
    int blk = 0;
    for (; blk + 2 <= blocks; blk += 2) {
        group_lines(next, GROUP_ROWS * row_bytes, (long)blk * GROUP_ROWS * block_bytes, 2 * GROUP_ROWS * block_bytes, !Q4);
        const __m512i xv = _mm512_loadu_si512(xq + (long)blk * QK), cv = _mm512_loadu_si512(xc + (long)blk * 8);
        const __m512i x = Q4 ? xv : _mm512_xor_si512(xv, flip); /* q, signed */
        const __m512i start = Q4 ? cv : _mm512_slli_epi32(cv, 4);
        __m512i s[16], p[8], q[4], unused;
        for (int r = 0; r < 16; r++) {
            const int8_t *row = w + r * row_bytes;
            const __m512i wr = Q4 ? pair_weights(row, QUANT_Q4, blk, &unused)
                                  : _mm512_xor_si512(_mm512_loadu_si512(row + (long)blk * QK), flip);
            s[r] = _mm512_dpbusd_epi32(start, wr, x);
        }
        for (int i = 0; i < 8; i++) p[i] = pair_sums(s[2 * i], s[2 * i + 1], 0);
        for (int i = 0; i < 4; i++) q[i] = pair_sums(p[2 * i], p[2 * i + 1], 1);
        /* q[m]'s 128-bit lane k: rows 4m .. 4m + 3, their sums over dwords 4k .. 4k + 3 (blocks: k 0-1, 2-3) */
        const __m512i q01 = _mm512_add_epi32(_mm512_shuffle_i32x4(q[0], q[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                             _mm512_shuffle_i32x4(q[0], q[1], _MM_SHUFFLE(3, 1, 3, 1)));
        const __m512i q23 = _mm512_add_epi32(_mm512_shuffle_i32x4(q[2], q[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                             _mm512_shuffle_i32x4(q[2], q[3], _MM_SHUFFLE(3, 1, 3, 1)));
        for (int half = 0; half < 2; half++) {
            const __m512i sums = half ? _mm512_shuffle_i32x4(q01, q23, _MM_SHUFFLE(3, 1, 3, 1))
                                      : _mm512_shuffle_i32x4(q01, q23, _MM_SHUFFLE(2, 0, 2, 0));
            const int b = blk + half;
            const __m512 wd = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(scales + (long)b * GROUP_ROWS)));
            acc = group_scaled(acc, sums, wd, xd[b]);
        }
    }
    for (; blk < blocks; blk++) { /* an odd last block: the same integers, one block of each row */
        const __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + (long)blk * QK));
        const __m256i cv = _mm256_loadu_si256((const __m256i *)(xc + (long)blk * 8));
        const __m256i x = Q4 ? xv : _mm256_xor_si256(xv, _mm256_set1_epi8((char)0x80));
        const __m256i start = Q4 ? cv : _mm256_slli_epi32(cv, 4);
        int32_t lane[16];
        for (int r = 0; r < 16; r++) {
            const int8_t *row = w + r * row_bytes;
            const __m256i wr = Q4 ? block_weights(row, QUANT_Q4, blk).u
                                  : _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(row + (long)blk * QK)),
                                                     _mm256_set1_epi8((char)0x80));
            lane[r] = hsum_epi32_256(_mm256_dpbusd_epi32(start, wr, x));
        }
        const __m512 wd = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(scales + (long)blk * GROUP_ROWS)));
        acc = group_scaled(acc, _mm512_loadu_si512(lane), wd, xd[blk]);
    }
    group_put(g, t, o, acc);
}


/* 4-bit weights: a block of 16 rows is 16 bytes a row; v[k] lane r = bytes 4k .. 4k + 3 of row r, whose low
 * nibbles are the row's elements 4k .. 4k + 3 and high nibbles elements 16 + 4k .. 16 + 4k + 3 (quantize.py) */
static inline __attribute__((always_inline)) void q4_transpose(const uint8_t *w, long stride, __m512i lo[4],
                                                               __m512i hi[4]) {
    __m512i z[4], t[4];
    for (int i = 0; i < 4; i++) { /* 128-bit lane L: row i + 4L */
        __m512i r = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(w + i * stride)));
        r = _mm512_inserti32x4(r, _mm_loadu_si128((const __m128i *)(w + (i + 4) * stride)), 1);
        r = _mm512_inserti32x4(r, _mm_loadu_si128((const __m128i *)(w + (i + 8) * stride)), 2);
        z[i] = _mm512_inserti32x4(r, _mm_loadu_si128((const __m128i *)(w + (i + 12) * stride)), 3);
    }
    t[0] = _mm512_unpacklo_epi32(z[0], z[1]), t[1] = _mm512_unpackhi_epi32(z[0], z[1]);
    t[2] = _mm512_unpacklo_epi32(z[2], z[3]), t[3] = _mm512_unpackhi_epi32(z[2], z[3]);
    const __m512i v[4] = {_mm512_unpacklo_epi64(t[0], t[2]), _mm512_unpackhi_epi64(t[0], t[2]),
                          _mm512_unpacklo_epi64(t[1], t[3]), _mm512_unpackhi_epi64(t[1], t[3])};
    const __m512i nibble = _mm512_set1_epi8(0x0f);
    for (int k = 0; k < 4; k++) {
        lo[k] = _mm512_and_si512(v[k], nibble);
        hi[k] = _mm512_and_si512(_mm512_srli_epi16(v[k], 4), nibble);
    }
}

/* rows o .. o + 15, tokens t0 .. t0 + NT - 1 of 4-bit weights: the unsigned nibbles u times the signed inputs,
 * each token's sums starting from -8 * (its block's input sum) (g->xs), which is exactly sum((u - 8) * q) */
static inline __attribute__((always_inline)) void q4_group_tokens(const QuantGemv *g, int o, int t0, const int NT) {
    const Linear *L = g->lin;
    const int blocks = (L->in + QK - 1) / QK;
    const long row_bytes = (long)blocks * (QK / 2), x_bytes = (long)blocks * QK;
    const uint8_t *w = (const uint8_t *)L->w + (long)o * row_bytes;
    const uint16_t *scales = L->group_scales + (long)(o / GROUP_ROWS) * blocks * GROUP_ROWS;
    const int8_t *xq = g->xq + (long)t0 * x_bytes;
    const int32_t *xs = g->xs + (long)t0 * blocks;
    const float *xd = g->xd + (long)t0 * blocks;
    const char *next = (const char *)(w + GROUP_ROWS * row_bytes);
    __m512 acc[GROUP_TOKENS];
    for (int t = 0; t < NT; t++) acc[t] = _mm512_setzero_ps();
    for (int blk = 0; blk < blocks; blk++) {
        if (t0 == 0) group_lines(next, GROUP_ROWS * row_bytes, (long)blk * GROUP_ROWS * QK / 2, GROUP_ROWS * QK / 2, 0);
        __m512i lo[4], hi[4];
        q4_transpose(w + (long)blk * (QK / 2), row_bytes, lo, hi);
        const __m512 wd = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(scales + (long)blk * GROUP_ROWS)));
        for (int t = 0; t < NT; t++) {
            const int8_t *x = xq + t * x_bytes + (long)blk * QK;
            __m512i s0 = _mm512_set1_epi32(xs[(long)t * blocks + blk]), s1 = _mm512_setzero_si512();
            for (int k = 0; k < 4; k++) {
                s0 = _mm512_dpbusd_epi32(s0, lo[k], four_bytes(x + 4 * k));
                s1 = _mm512_dpbusd_epi32(s1, hi[k], four_bytes(x + 16 + 4 * k));
            }
            acc[t] = group_scaled(acc[t], _mm512_add_epi32(s0, s1), wd, xd[(long)t * blocks + blk]);
        }
    }
    for (int t = 0; t < NT; t++) group_put(g, t0 + t, o, acc[t]);
}

/* rows o .. o + 15 for every token of the step: one token without the transpose; several GROUP_TOKENS at a
 * time (the group stays in cache for the rest). Measured, 116m shape, int8, one thread, CPU time of a step:
 * from two tokens on the transposed path is the faster (2 tokens 11.0-11.2 ms against 11.9 one by one, 4
 * tokens 12.4-12.7 against 15.7); `python benchmarks/batch_step.py --shape 116m --dtype int8 --threads 1
 * --clock cpu`. */
static void quant_group(const QuantGemv *g, int o) {
    const int q4 = g->lin->quant == QUANT_Q4;
    if (g->B == 1) {
        if (q4)
            group_one(g, o, 0, 1);
        else
            group_one(g, o, 0, 0);
        return;
    }
    for (int t0 = 0; t0 < g->B; t0 += GROUP_TOKENS) {
#define GROUP_CASE(NT)                                        \
    case NT:                                                  \
        if (q4)                                               \
            q4_group_tokens(g, o, t0, NT);                    \
        else                                                  \
            q8_group_tokens(g, o, t0, NT);                    \
        break;
        switch (g->B - t0 < GROUP_TOKENS ? g->B - t0 : GROUP_TOKENS) {
            GROUP_CASE(1)
            GROUP_CASE(2)
            GROUP_CASE(3)
            GROUP_CASE(4)
            GROUP_CASE(5)
            GROUP_CASE(6)
            GROUP_CASE(7)
        default:
            GROUP_CASE(8)
        }
#undef GROUP_CASE
    }
}

#if defined(AMX_TILES) && defined(__AMX_INT8__)
#define AMX_INT8 1
#include "amx_int8.h"
#endif
