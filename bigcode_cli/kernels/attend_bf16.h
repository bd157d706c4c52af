/* Multi-query attention over a bf16 key/value cache with bf16 pair products (AVX-512 BF16: vdpbf16ps
 * multiplies two bf16 pairs per 32-bit lane exactly and adds them to an fp32 sum). Included by decode_step.c
 * inside its attention section; it uses Attend, score layout and partial results exactly as
 * attend_block_mq does, and differs only in how the two products are formed:
 *   - scores: the scaled query rounded to bf16, in pairs of dimensions (qt2, D/2 x HW lanes), times a key's
 *     pair of dimensions broadcast: D/2 instructions per position instead of D fp32 multiplications, each
 *     key element read as it lies in the cache (no widening);
 *   - values: the softmax weights rounded to bf16 in pairs of positions (p2), times the two positions'
 *     value vectors interleaved pairwise (one unpack per 32 dimensions and pair of positions): half the
 *     multiplications again.
 * As PyTorch's bfloat16 attention rounds its query and its weights before the two matrix products; sums,
 * the softmax and the merge of blocks stay fp32. Each lane's arithmetic is the same whatever else the step
 * holds (lanes never mix; the tiles over heads only group independent lanes), so a row's result does not
 * depend on the others (batch invariance). Needs D a multiple of 32 (attend_bf16_fits). */

#if defined(__AVX512BF16__) && defined(__AVX512BW__)
#define ATTEND_BF16 1

static inline int attend_bf16_fits(const Model *m) { return m->kv_bf16 && m->multi_query && m->head_dim % 32 == 0; }

static inline __m512bh bf16_pairs(__m512i v) { return (__m512bh)v; }

/* out[c] = column c of the 16 x 16 matrix of 32-bit values rows[0..15] (out[c] lane k = rows[k] lane c) */
static inline __attribute__((always_inline)) void transpose16(const __m512i rows[16], __m512i out[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(rows[i], rows[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(rows[i], rows[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) { /* u[i + c], 128-bit lane L: rows i .. i + 3 at column 4L + c */
        u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int c = 0; c < 4; c++) {
        const __m512i v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], _MM_SHUFFLE(2, 0, 2, 0));
        const __m512i v2 = _mm512_shuffle_i32x4(u[c], u[4 + c], _MM_SHUFFLE(3, 1, 3, 1));
        const __m512i w1 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(2, 0, 2, 0));
        const __m512i w2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(3, 1, 3, 1));
        out[c] = _mm512_shuffle_i32x4(v1, w1, _MM_SHUFFLE(2, 0, 2, 0));
        out[8 + c] = _mm512_shuffle_i32x4(v1, w1, _MM_SHUFFLE(3, 1, 3, 1));
        out[4 + c] = _mm512_shuffle_i32x4(v2, w2, _MM_SHUFFLE(2, 0, 2, 0));
        out[12 + c] = _mm512_shuffle_i32x4(v2, w2, _MM_SHUFFLE(3, 1, 3, 1));
    }
}

/* f's bits with its upper half rounded to bf16 as f32_to_bf16 rounds it (nearest even; a NaN stays a NaN) */
static inline __m512i bf16_upper(__m512 f) {
    const __m512i u = _mm512_castps_si512(f);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd));
    return _mm512_mask_mov_epi32(rounded, _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q), _mm512_or_si512(u, _mm512_set1_epi32(0x400000)));
}

/* vexp's bits for x <= 88 or NaN (a score less the block's largest; a NaN score can make a later "largest"
 * smaller than some scores, but that block's weights are NaN whichever exp runs): its clamp from above never applies, the
 * one from below is one max (NaN kept, as vexp keeps it), and 2^n is applied by vscalefps, exact like vexp's
 * multiplication by 2^n (n >= -126 after the clamp): ~8 of its ~22 instructions fewer per position and 16
 * heads (attention alone, 8 rows of 1,600 positions, lines in L2: 3.15 -> 3.0-3.1 ms). */
static inline __m512 exp_below(__m512 x) {
    vf n;
    const vf p = exp_parts((vf)_mm512_max_ps(_mm512_set1_ps(-87.0f), x), &n);
    return _mm512_scalef_ps((__m512)p, (__m512)n);
}

/* qt2 (D/2, HW): lane t * H + h of row dp = the bf16 pair (q[2dp] * scale, q[2dp + 1] * scale) of head h of
 * token b + t (f32_to_bf16 of each, the first in the low half), 0 past the Q = G * H lanes. Per 16 lanes and
 * 32 dimensions: each lane's 32 scaled values rounded, their upper halves packed into 16 pairs, the 16 x 16
 * pairs transposed. It runs for every block of every row: one value at a time it took 0.8 of the 7 ms of
 * attention of an 8-row step (116m shape, 1,600 positions a row, one thread; attention alone in a test
 * program, tiles: 6.8-7.0 -> 5.7-6.0 ms). Bit for bit the same as f32_to_bf16's, NaN, ties and subnormals
 * included (checked over 6 million values). */
static void query_pairs(const Attend *a, int b, int G, uint32_t *qt2, int HW) {
    const Model *m = a->m;
    const int H = m->n_head, D = m->head_dim, Q = G * H, qkv_out = m->layers[0].attn.out;
    const __m512 scale = _mm512_set1_ps(m->scale);
    __m512i upper = _mm512_setzero_si512(); /* 16-bit index 2i + 1: the upper half of value i of 32 */
    {
        uint16_t index[32];
        for (int i = 0; i < 32; i++) index[i] = (uint16_t)(2 * i + 1);
        upper = _mm512_loadu_si512(index);
    }
    for (int l0 = 0; l0 < HW; l0 += 16)
        for (int d0 = 0; d0 < D; d0 += 32) {
            __m512i rows[16], cols[16];
            for (int i = 0; i < 16; i++) {
                const int l = l0 + i;
                if (l >= Q) {
                    rows[i] = _mm512_setzero_si512();
                    continue;
                }
                const float *q = a->qkv + (long)(b + l / H) * qkv_out + (long)(l % H) * D + d0;
                const __m512i lo = bf16_upper(_mm512_mul_ps(_mm512_loadu_ps(q), scale));
                const __m512i hi = bf16_upper(_mm512_mul_ps(_mm512_loadu_ps(q + 16), scale));
                rows[i] = _mm512_permutex2var_epi16(lo, upper, hi);
            }
            transpose16(rows, cols);
            for (int c = 0; c < 16; c++) _mm512_storeu_si512(qt2 + (long)(d0 / 2 + c) * HW + l0, cols[c]);
        }
}

/* sc[j, g*16 ..] for the block's n positions, NP positions by NG head vectors in registers */
static inline __attribute__((always_inline)) void score_pairs(const uint16_t *cache, const uint32_t *qt2, float *sc,
                                                              int D, int HW, int g, int s0, int n, long ahead_end,
                                                              const int NP, const int NG) {
    const long stride = 2L * D;
    int j = 0;
    for (; j + NP <= n; j += NP) {
        const long at = (long)(s0 + j) * stride;
        const long ahead = g == 0 ? kv_ahead_lines(at, NP * stride, ahead_end, 1) : 0;
        const char *ahead_at = (const char *)(cache + at) + KV_AHEAD;
        __m512 c[8][2];
        for (int p = 0; p < NP; p++)
            for (int k = 0; k < NG; k++) c[p][k] = _mm512_setzero_ps();
        for (int dp = 0; dp < D / 2; dp++) {
            if (dp < ahead) __builtin_prefetch(ahead_at + 64L * dp);
            __m512bh q[2];
            for (int k = 0; k < NG; k++) q[k] = bf16_pairs(_mm512_loadu_si512(qt2 + (long)dp * HW + (g + k) * 16));
            for (int p = 0; p < NP; p++) {
                uint32_t key;
                memcpy(&key, cache + at + p * stride + 2 * dp, sizeof key);
                const __m512bh kk = bf16_pairs(_mm512_set1_epi32((int)key));
                for (int k = 0; k < NG; k++) c[p][k] = _mm512_dpbf16_ps(c[p][k], q[k], kk);
            }
        }
        for (int p = 0; p < NP; p++)
            for (int k = 0; k < NG; k++) _mm512_storeu_ps(sc + (long)(j + p) * HW + (g + k) * 16, c[p][k]);
    }
    for (; j < n; j++) { /* the same sums one position at a time */
        const long at = (long)(s0 + j) * stride;
        __m512 c[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int dp = 0; dp < D / 2; dp++) {
            uint32_t key;
            memcpy(&key, cache + at + 2 * dp, sizeof key);
            const __m512bh kk = bf16_pairs(_mm512_set1_epi32((int)key));
            for (int k = 0; k < NG; k++)
                c[k] = _mm512_dpbf16_ps(c[k], bf16_pairs(_mm512_loadu_si512(qt2 + (long)dp * HW + (g + k) * 16)), kk);
        }
        for (int k = 0; k < NG; k++) _mm512_storeu_ps(sc + (long)j * HW + (g + k) * 16, c[k]);
    }
}

/* lanes l0 .. l0 + NH - 1, dimensions c0 .. c0 + 31 of one block: sum over position pairs of p2[pair, l] (two
 * bf16 weights) times the pair's value vectors interleaved, in registers; stored in dimension order.
 * unpacklo/hi interleave within 128-bit lanes, so sums lo hold dimensions 8k .. 8k + 3 of each 128-bit lane k
 * and hi 8k + 4 .. 8k + 7; two permutes put them back in order. */
static inline __attribute__((always_inline)) void value_pairs(const uint16_t *cache, const uint32_t *p2, int HW, int D,
                                                              int s0, int n, int l0, int c0, float *parts,
                                                              long part_stride, const int NH) {
    const long stride = 2L * D;
    __m512 lo[12], hi[12];
    for (int h = 0; h < NH; h++) lo[h] = hi[h] = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 2) {
        const uint16_t *v0 = cache + (long)(s0 + j) * stride + D + c0;
        const __m512i a = _mm512_loadu_si512(v0);
        const __m512i b = j + 1 < n ? _mm512_loadu_si512(v0 + stride) : _mm512_setzero_si512(); /* past the block: 0 */
        const __m512bh pl = bf16_pairs(_mm512_unpacklo_epi16(a, b)), ph = bf16_pairs(_mm512_unpackhi_epi16(a, b));
        const uint32_t *w = p2 + (long)(j / 2) * HW + l0;
        for (int h = 0; h < NH; h++) {
            const __m512bh ww = bf16_pairs(_mm512_set1_epi32((int)w[h]));
            lo[h] = _mm512_dpbf16_ps(lo[h], pl, ww);
            hi[h] = _mm512_dpbf16_ps(hi[h], ph, ww);
        }
    }
    const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    const __m512i second = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    for (int h = 0; h < NH; h++) {
        float *out = parts + (long)(l0 + h) * part_stride + 2 + c0;
        _mm512_storeu_ps(out, _mm512_permutex2var_ps(lo[h], first, hi[h]));
        _mm512_storeu_ps(out + 16, _mm512_permutex2var_ps(lo[h], second, hi[h]));
    }
}

#ifdef AMX_BF16
#include "amx_attend.h"
#endif

/* attend_block_mq's contract, bf16 pair products (see the top of this file) */
static void attend_block_mq_bf16(const Attend *a, int b, int G, int s0, int s1, float *scratch) {
    const Model *m = a->m;
    const int H = m->n_head, D = m->head_dim, n = s1 - s0;
    const int Q = G * H, HV = (Q + 15) / 16, HW = HV * 16;
    const uint16_t *cache = (const uint16_t *)a->cache[b];
    const long ahead_end = (long)a->length[b + G - 1] * 2L * D;
    uint32_t *qt2 = (uint32_t *)scratch; /* (D/2, HW) */
    float *sc = scratch + (long)D * HW;  /* (n, HW) scores; then, in place, (n/2 rounded up, HW) weight pairs */
    query_pairs(a, b, G, qt2, HW);
#ifdef AMX_BF16
    const int tiles = amx_attend_fits(m);
    if (tiles) {
        amx_configure();
        amx_scores(cache, qt2, sc, D, HW, HV, s0, n, ahead_end);
    }
    for (int g = 0; g < HV && !tiles; g += 2) {
#else
    for (int g = 0; g < HV; g += 2) {
#endif
        if (g + 1 < HV)
            score_pairs(cache, qt2, sc, D, HW, g, s0, n, ahead_end, 4, 2);
        else
            score_pairs(cache, qt2, sc, D, HW, g, s0, n, ahead_end, 8, 1);
    }
    const int masked = mask_unattended(a, b, G, s0, s1, sc, HW);
    /* lane-wise max, exp(score - max) and their sum in position order; the weights rounded to bf16 and
     * paired by position (the pair's second past the block weighs 0), written over the rows already read */
    const long part_stride = (long)a->blocks * (2L + D), block = s0 / ATTEND_BLOCK;
    float *parts = a->partial + ((long)b * H * a->blocks + block) * (2L + D);
    const __m512 gone = _mm512_set1_ps(-INFINITY);
    for (int v = 0; v < HV; v++) {
        __m512 best = _mm512_loadu_ps(sc + v * 16), total = _mm512_setzero_ps();
        for (int j = 1; j < n; j++) best = _mm512_max_ps(best, _mm512_loadu_ps(sc + (long)j * HW + v * 16));
        for (int j = 0; j < n; j += 2) {
            __m256i half[2];
            for (int k = 0; k < 2; k++) {
                __m512 e = _mm512_setzero_ps();
                if (j + k < n) {
                    const __m512 s = _mm512_loadu_ps(sc + (long)(j + k) * HW + v * 16);
                    e = exp_below(_mm512_sub_ps(s, best));
                    if (masked) e = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(s, gone, _CMP_NEQ_UQ), e);
                    total = _mm512_add_ps(total, e);
                }
                half[k] = (__m256i)_mm512_cvtneps_pbh(e);
            }
            const __m512i pairs = _mm512_or_si512(_mm512_cvtepu16_epi32(half[0]),
                                                  _mm512_slli_epi32(_mm512_cvtepu16_epi32(half[1]), 16));
            _mm512_storeu_si512(sc + (long)(j / 2) * HW + v * 16, pairs);
        }
        float bests[16], totals[16];
        _mm512_storeu_ps(bests, best);
        _mm512_storeu_ps(totals, total);
        for (int l = 0; l < 16 && v * 16 + l < Q; l++) {
            parts[(v * 16 + l) * part_stride] = bests[l];
            parts[(v * 16 + l) * part_stride + 1] = totals[l];
        }
    }
    const uint32_t *p2 = (const uint32_t *)sc;
#ifdef AMX_BF16
    if (tiles) {
        for (int l0 = 0; l0 < Q; l0 += 16) amx_values(cache, p2, HW, D, s0, n, l0, Q, parts, part_stride);
        _tile_release();
        return;
    }
#endif
    for (int c0 = 0; c0 < D; c0 += 32) {
        int l0 = 0;
        for (; l0 + 12 <= Q; l0 += 12) value_pairs(cache, p2, HW, D, s0, n, l0, c0, parts, part_stride, 12);
        for (; l0 + 4 <= Q; l0 += 4) value_pairs(cache, p2, HW, D, s0, n, l0, c0, parts, part_stride, 4);
        for (; l0 < Q; l0++) value_pairs(cache, p2, HW, D, s0, n, l0, c0, parts, part_stride, 1);
    }
}
#endif
