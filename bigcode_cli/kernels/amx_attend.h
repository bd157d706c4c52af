/* Multi-query attention's two products on AMX tiles, for attend_bf16.h (included there, where the
 * compiler targets AMX-BF16 and amx_tiles.h was included; used where this process multiplies on tiles).
 *
 * Why: with eight editors' windows of ~1,600 positions, attention was 40% of an 8-row step of the 116M
 * shape in int8 (7 of 17 ms, one thread), and its vdpbf16ps loops were bound by arithmetic, not by the
 * read of the cache (on this Xeon vdpbf16ps runs at a quarter of the FMA rate). One tile product
 * multiplies 16 x 16 results over 32 inputs at once.
 *   - scores: the transposed scores (positions x heads) are keys times the query: the keys are the A
 *     operand as they lie in the cache (16 positions, 32 dimensions of each per product) and the scaled
 *     query in pairs of dimensions (qt2, made for vdpbf16ps already) is the B operand as it lies; the
 *     result tile is stored straight into the scores.
 *   - values: the weights in pairs of positions (p2, written by the softmax) turned into one row per head
 *     (a 16 x 16 transpose of 32-bit pairs per 32 positions) are the A operand; the values of 32 positions
 *     interleaved in pairs of positions (the unpacks of value_pairs, stored) the B operand; sums in result
 *     tiles, 64 dimensions at a time, put in dimension order as value_pairs does.
 * The same bf16 roundings as attend_bf16.h (query, weights), sums in fp32 in another order. Positions past
 * the block's last whole 16 are scored from a zero-padded copy of their keys; positions past the block weigh
 * 0 and their values are never read. Each row's arithmetic depends on its own cache and query only (batch invariance),
 * and whether tiles are used is decided once per process (amx_usable).
 */

/* tiles (amx_configure: all 16 x 64 bytes) 0-3: results; 4 and 5: keys and query (scores), 6 and 7: weights and
 * values */

/* positions ahead whose cache lines are asked for: attention alone (8 rows x 12 layers x 1,600 positions, the
 * weights' read between layers, one thread; a copy of the kernel in a test program, medians of 20) 6.5-6.9 ms
 * without, 5.8-6.1 with 16, 6.1-6.4 with 48, 6.8-7.0 with 128; prefetching into L2 or L3 only the same. The
 * cache's plain read takes 1.8 ms there: the tile loads of keys still wait on memory for a third of it. */
#ifndef AMX_KV_AHEAD
#define AMX_KV_AHEAD 16
#endif

#define AMX_ATTEND_MAX_D 256 /* widest heads on tiles: a block's last keys are copied into a 16 x D buffer */
_Static_assert(ATTEND_BLOCK % 32 == 0, "amx_values takes a block's weights 32 positions at a time");

/* whether this process forms multi-query attention's products on tiles for model m (decided per process and
 * model: every step of a model scores the same way) */
static inline int amx_attend_fits(const Model *m) { return m->head_dim <= AMX_ATTEND_MAX_D && amx_usable(); }

/* sc[j, g*16 ..] for the block's n positions, 16 at a time; the last ones (past the block's whole 16s) from a
 * copy of their keys with zeros after them, so that a position's scores come from the same tile product
 * whatever n is (n is set by the last token of the step's group: a token's scores must not depend on
 * whether later tokens of its row share the step). Tiles configured. */
static void amx_scores(const uint16_t *cache, const uint32_t *qt2, float *sc, int D, int HW, int HV, int s0, int n,
                       long ahead_end) {
    const long stride = 2L * D; /* elements from one position to the next */
    uint16_t last[16 * AMX_ATTEND_MAX_D] __attribute__((aligned(64)));
    for (int j = 0; j < n; j += 16) {
        const uint16_t *keys = cache + (long)(s0 + j) * stride;
        long key_stride = stride;
        if (j + 16 > n) { /* scores for rows past n land in the scratch's ATTEND_BLOCK rows and are never read */
            memset(last, 0, sizeof(uint16_t) * 16 * (size_t)D);
            for (int p = 0; p < n - j; p++) memcpy(last + (long)p * D, keys + (long)p * stride, sizeof(uint16_t) * (size_t)D);
            keys = last;
            key_stride = D;
        }
        { /* the keys and values of the 16 positions after these (on into the next block), for both passes */
            const long from = (long)(s0 + j + AMX_KV_AHEAD) * stride;
            const long to = from + 16 * stride < ahead_end ? from + 16 * stride : ahead_end;
            for (long at = from; at < to; at += 32) __builtin_prefetch(cache + at);
        }
        for (int g = 0; g < HV; g++) {
            _tile_zero(0);
            for (int d0 = 0; d0 < D; d0 += 32) {
                _tile_loadd(4, keys + d0, key_stride * 2);
                _tile_loadd(5, qt2 + (long)(d0 / 2) * HW + g * 16, HW * 4);
                _tile_dpbf16ps(0, 4, 5);
            }
            _tile_stored(0, sc + (long)j * HW + g * 16, HW * 4);
        }
    }
}

/* parts[l0 + lane, 2 + c0 ..] (lanes < Q) for the block's n positions: the weight pairs p2 ((n + 1) / 2, HW)
 * of lanes l0 .. l0 + 15 times the values. Tiles configured. */
static void amx_values(const uint16_t *cache, const uint32_t *p2, int HW, int D, int s0, int n, int l0, int Q,
                       float *parts, long part_stride) {
    const long stride = 2L * D;
    const int pairs = (n + 1) / 2, chunks = (pairs + 15) / 16;
    uint32_t weights[ATTEND_BLOCK / 32][16 * 16] __attribute__((aligned(64))); /* per 32 positions: lane x pair */
    uint32_t values[2][2][16 * 16] __attribute__((aligned(64)));              /* per 32 dimensions: lo, hi */
    for (int c = 0; c < chunks; c++) {
        __m512i rows[16], cols[16];
        for (int i = 0; i < 16; i++)
            rows[i] = c * 16 + i < pairs ? _mm512_loadu_si512(p2 + (long)(c * 16 + i) * HW + l0) : _mm512_setzero_si512();
        transpose16(rows, cols);
        for (int l = 0; l < 16; l++) _mm512_store_si512(weights[c] + l * 16, cols[l]);
    }
    for (int c0 = 0; c0 < D; c0 += 64) {
        const int halves = D - c0 >= 64 ? 2 : 1; /* 32 dimensions each */
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int c = 0; c < chunks; c++) {
            for (int h = 0; h < halves; h++)
                for (int i = 0; i < 16; i++) {
                    const int j = c * 32 + 2 * i;
                    const uint16_t *v0 = cache + (long)(s0 + j) * stride + D + c0 + 32 * h;
                    const __m512i a = j < n ? _mm512_loadu_si512(v0) : _mm512_setzero_si512();
                    const __m512i b = j + 1 < n ? _mm512_loadu_si512(v0 + stride) : _mm512_setzero_si512();
                    _mm512_store_si512(values[h][0] + i * 16, _mm512_unpacklo_epi16(a, b));
                    _mm512_store_si512(values[h][1] + i * 16, _mm512_unpackhi_epi16(a, b));
                }
            _tile_loadd(6, weights[c], 64);
            _tile_loadd(7, values[0][0], 64);
            _tile_dpbf16ps(0, 6, 7);
            _tile_loadd(7, values[0][1], 64);
            _tile_dpbf16ps(1, 6, 7);
            if (halves == 2) {
                _tile_loadd(7, values[1][0], 64);
                _tile_dpbf16ps(2, 6, 7);
                _tile_loadd(7, values[1][1], 64);
                _tile_dpbf16ps(3, 6, 7);
            }
        }
        float sums[4][16 * 16] __attribute__((aligned(64)));
        _tile_stored(0, sums[0], 64);
        _tile_stored(1, sums[1], 64);
        _tile_stored(2, sums[2], 64);
        _tile_stored(3, sums[3], 64);
        /* as value_pairs: unpacklo/hi interleave within 128-bit lanes, two permutes put the dimensions in order */
        const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
        const __m512i second = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
        for (int l = 0; l < 16 && l0 + l < Q; l++)
            for (int h = 0; h < halves; h++) {
                const __m512 lo = _mm512_load_ps(sums[2 * h] + l * 16), hi = _mm512_load_ps(sums[2 * h + 1] + l * 16);
                float *out = parts + (long)(l0 + l) * part_stride + 2 + c0 + 32 * h;
                _mm512_storeu_ps(out, _mm512_permutex2var_ps(lo, first, hi));
                _mm512_storeu_ps(out + 16, _mm512_permutex2var_ps(lo, second, hi));
            }
    }
}
