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

/* the bf16 pair (lo, hi) as one 32-bit lane value */
static inline uint32_t pair_of(float lo, float hi) { return (uint32_t)f32_to_bf16(lo) | (uint32_t)f32_to_bf16(hi) << 16; }

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
    const int H = m->n_head, D = m->head_dim, n = s1 - s0, qkv_out = m->layers[0].attn.out;
    const int Q = G * H, HV = (Q + 15) / 16, HW = HV * 16;
    const uint16_t *cache = (const uint16_t *)a->cache[b];
    const long ahead_end = (long)a->length[b + G - 1] * 2L * D;
    uint32_t *qt2 = (uint32_t *)scratch; /* (D/2, HW) */
    float *sc = scratch + (long)D * HW;  /* (n, HW) scores; then, in place, (n/2 rounded up, HW) weight pairs */
    for (int dp = 0; dp < D / 2; dp++) {
        uint32_t *row = qt2 + (long)dp * HW;
        for (int t = 0; t < G; t++) {
            const float *q = a->qkv + (long)(b + t) * qkv_out;
            for (int h = 0; h < H; h++)
                row[t * H + h] = pair_of(q[(long)h * D + 2 * dp] * m->scale, q[(long)h * D + 2 * dp + 1] * m->scale);
        }
        for (int l = Q; l < HW; l++) row[l] = 0;
    }
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
                    e = (__m512)vexp((vf)_mm512_sub_ps(s, best));
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
