/* 8-bit weights times several tokens on AMX tiles, for quant_groups.h (included there, once, where the
 * compiler targets AMX-INT8 and amx_tiles.h was included).
 *
 * Why: on the transposed path (q8_group_tokens) a step of eight tokens spends per block of 16 rows x 32
 * inputs 32 shuffles and 64 vpdpbusd on integer sums, and its products cost ~1.7x one token's on the
 * 116M shape (one thread), while the weights' read alone is the same for both. One tile product
 * (tdpbssd) makes the same 16 x 16 integer sums of a block at once: the weights are its A operand as they
 * lie in memory (16 consecutive rows, the block's 32 bytes of each), the tokens' quantized inputs its B
 * operand, packed once per step (`amx_q8_pack`: row k of a block's tile holds bytes 4k .. 4k + 3 of each
 * token). What is left per block is scaling the sums into the float sums, LANES tokens per 32-bit lane
 * group, 16 / LANES rows per vector.
 *
 * The sums are exact integers whichever path made them, and each is scaled and added exactly as
 * group_scaled does it (float(sum) * (row scale * token scale) + sum so far, block after block), and put
 * out as group_put does: a token's results are the same bits on this path, on the transposed one and on
 * group_one (one token), so whether a step takes tiles does not change any row (batch invariance).
 * Which steps do is decided by the matrix and the process only (several tokens, 8-bit weights with their
 * scales in lane order, tiles handed out: amx_usable).
 */

#define AMX_Q8_TOKENS 16 /* tokens per tile product */

/* tokens per row of a result tile for nt tokens: 4, 8 or 16 (the lanes of a vector hold 16 / that rows) */
static inline int q8_tile_lanes(int nt) { return nt <= 4 ? 4 : nt <= 8 ? 8 : 16; }

/* bytes of a group of 16 tokens' packed inputs over `blocks` blocks: the B tiles (32 bytes of each of up to
 * 16 tokens a block), then each block's 16 token scales as a vector */
static inline size_t amx_q8_group_bytes(long blocks) { return (size_t)blocks * (QK * AMX_Q8_TOKENS + 16 * sizeof(float)); }

static inline size_t amx_q8_packed_size(int B, long blocks) {
    return (size_t)((B + AMX_Q8_TOKENS - 1) / AMX_Q8_TOKENS) * amx_q8_group_bytes(blocks);
}

/* packed <- the B tokens' inputs (xq: q + 128, quant_gemv's) as signed q in B-tile order, and their scales
 * (xd) as vectors: a block's lane i * LANES + t holds token t's scale (0 past the last token). A tile's 16
 * four-byte pieces at a time are gathered (piece i: row k = i / lanes, token t = i % lanes). One piece at a time,
 * quant_gemv (this and quantize_input) took 2.6-2.9% of an 8-token 116m step under perf, now 2.0%. */
static void amx_q8_pack(const int8_t *xq, const float *xd, int B, int blocks, char *packed) {
    const int x_pieces = blocks * QK / 4; /* four-byte pieces of one token's inputs */
    for (int g0 = 0; g0 < B; g0 += AMX_Q8_TOKENS) {
        const int nt = B - g0 < AMX_Q8_TOKENS ? B - g0 : AMX_Q8_TOKENS, lanes = q8_tile_lanes(nt);
        const int vectors = QK / 4 * lanes / 16; /* of a block's tile */
        char *group = packed + (long)(g0 / AMX_Q8_TOKENS) * amx_q8_group_bytes(blocks);
        float *scales = (float *)(group + (long)blocks * QK * AMX_Q8_TOKENS);
        const int *pieces = (const int *)(xq + (long)g0 * x_pieces * 4);
        __m512i at[QK / 4 * AMX_Q8_TOKENS / 16];
        __mmask16 real[QK / 4 * AMX_Q8_TOKENS / 16];
        for (int v = 0; v < vectors; v++) {
            int32_t index[16];
            __mmask16 mask = 0;
            for (int i = 0; i < 16; i++) {
                const int piece = 16 * v + i, k = piece / lanes, t = piece % lanes;
                index[i] = t < nt ? t * x_pieces + k : 0;
                if (t < nt) mask |= (__mmask16)(1u << i);
            }
            at[v] = _mm512_loadu_si512(index);
            real[v] = mask;
        }
        int32_t token_index[16];
        __mmask16 token_real = 0;
        for (int i = 0; i < 16; i++) {
            const int t = i % lanes;
            token_index[i] = t < nt ? t * blocks : 0;
            if (t < nt) token_real |= (__mmask16)(1u << i);
        }
        const __m512i token_at = _mm512_loadu_si512(token_index), flip = _mm512_set1_epi32((int)0x80808080u);
        for (int blk = 0; blk < blocks; blk++) {
            int *tile = (int *)(group + (long)blk * QK * lanes); /* 8 rows of `lanes` tokens' 4 bytes */
            const __m512i block = _mm512_set1_epi32(blk * QK / 4);
            for (int v = 0; v < vectors; v++) {
                const __m512i four = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), real[v],
                                                                 _mm512_add_epi32(at[v], block), pieces, 4);
                _mm512_storeu_si512(tile + 16 * v, _mm512_mask_xor_epi32(four, real[v], four, flip)); /* back from q + 128 */
            }
            _mm512_storeu_ps(scales + (long)blk * 16,
                             _mm512_mask_i32gather_ps(_mm512_setzero_ps(), token_real,
                                                      _mm512_add_epi32(token_at, _mm512_set1_epi32(blk)), xd + (long)g0 * blocks, 4));
        }
    }
}

/* tiles: 0 and 1 results, 2 and 3 weights, 4 and 5 packed tokens (even and odd blocks) */
static void amx_q8_configure(int lanes) {
    TileConfig config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int t = 0; t < 6; t++) {
        config.rows[t] = t == 4 || t == 5 ? QK / 4 : 16;
        config.colsb[t] = t == 2 || t == 3 ? QK : 4 * lanes;
    }
    amx_load_config(&config);
}

/* acc[j] += the block's sums (c: 16 rows of LANES int32) scaled: lane l is row j * (16 / LANES) + l / LANES,
 * token l % LANES; as group_scaled, float(sum) * (row scale * token scale) + acc */
static inline __attribute__((always_inline)) void q8_tile_scaled(__m512 *acc, const int32_t *c, const uint16_t *row_scales,
                                                                 const float *token_scales, const int LANES) {
    const __m512 wd = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)row_scales));
    const __m512 xd = _mm512_loadu_ps(token_scales);
    const __m512i lane_row = _mm512_srli_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                               LANES == 4 ? 2 : LANES == 8 ? 3 : 4);
    for (int j = 0; j < LANES; j++) {
        const __m512 rows = _mm512_permutexvar_ps(_mm512_add_epi32(lane_row, _mm512_set1_epi32(j * (16 / LANES))), wd);
        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c + 16 * j)), _mm512_mul_ps(rows, xd), acc[j]);
    }
}

/* rows o .. o + 15 of the tokens of packed group `group` (tokens 16 * group on): block after block, two in
 * flight (even blocks in tiles 0, 2, 4, odd ones in 1, 3, 5) */
static inline __attribute__((always_inline)) void amx_q8_rows(const QuantGemv *g, int o, int group, const int LANES) {
    const Linear *L = g->lin;
    const int blocks = (L->in + QK - 1) / QK, t0 = group * AMX_Q8_TOKENS;
    const int nt = g->B - t0 < AMX_Q8_TOKENS ? g->B - t0 : AMX_Q8_TOKENS;
    const long row_bytes = (long)blocks * QK, tile_bytes = (long)QK * LANES;
    const int8_t *w = (const int8_t *)L->w + (long)o * row_bytes;
    const uint16_t *scales = L->group_scales + (long)(o / GROUP_ROWS) * blocks * GROUP_ROWS;
    const char *tokens = g->packed + (long)group * amx_q8_group_bytes(blocks);
    const float *token_scales = (const float *)(tokens + (long)blocks * QK * AMX_Q8_TOKENS);
    const char *next = (const char *)(w + GROUP_ROWS * row_bytes); /* the next group's rows, one run */
    int32_t c[2][2][16 * LANES] __attribute__((aligned(64))); /* the sums of two pairs of blocks: one being
                                                                * made while the one before is scaled */
    __m512 acc[LANES];
    for (int j = 0; j < LANES; j++) acc[j] = _mm512_setzero_ps();
    const int pairs = blocks / 2;
    for (int p = 0; p <= pairs; p++) {
        const int blk = 2 * p;
        if (p < pairs) {
            if (group == 0) group_lines(next, GROUP_ROWS * row_bytes, (long)blk * GROUP_ROWS * QK, 2 * GROUP_ROWS * QK, 1);
            int32_t *into = c[p % 2][0];
            _tile_zero(0);
            _tile_zero(1);
            _tile_loadd(2, w + (long)blk * QK, row_bytes);
            _tile_loadd(4, tokens + blk * tile_bytes, 4 * LANES);
            _tile_loadd(3, w + (long)(blk + 1) * QK, row_bytes);
            _tile_loadd(5, tokens + (blk + 1) * tile_bytes, 4 * LANES);
            _tile_dpbssd(0, 2, 4);
            _tile_dpbssd(1, 3, 5);
            _tile_stored(0, into, 4 * LANES);
            _tile_stored(1, into + 16 * LANES, 4 * LANES);
        }
        if (p > 0) { /* the pair before, its stores done by now */
            const int before = blk - 2;
            q8_tile_scaled(acc, c[(p - 1) % 2][0], scales + (long)before * GROUP_ROWS, token_scales + (long)before * 16, LANES);
            q8_tile_scaled(acc, c[(p - 1) % 2][1], scales + (long)(before + 1) * GROUP_ROWS,
                           token_scales + (long)(before + 1) * 16, LANES);
        }
    }
    if (blocks % 2) { /* an odd last block */
        const int blk = blocks - 1;
        _tile_zero(0);
        _tile_loadd(2, w + (long)blk * QK, row_bytes);
        _tile_loadd(4, tokens + blk * tile_bytes, 4 * LANES);
        _tile_dpbssd(0, 2, 4);
        _tile_stored(0, c[0][0], 4 * LANES);
        q8_tile_scaled(acc, c[0][0], scales + (long)blk * GROUP_ROWS, token_scales + (long)blk * 16, LANES);
    }
    float v[16 * LANES] __attribute__((aligned(64))); /* row r, token t at r * LANES + t */
    for (int j = 0; j < LANES; j++) _mm512_store_ps(v + 16 * j, acc[j]);
    const __m512i rows = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                            _mm512_set1_epi32(LANES));
    for (int t = 0; t < nt; t++) /* each token's 16 rows gathered into a vector and put out as group_put does (one
                                   * value at a time, the loop reloaded y, mode and bias for every one: ~1 ms of
                                   * the ~8 ms int8 products of an 8-token 116m step) */
        group_put(g, t0 + t, o, _mm512_i32gather_ps(_mm512_add_epi32(rows, _mm512_set1_epi32(t)), v, 4));
}

static void amx_q8_rows_of(const QuantGemv *g, int o, int group, int lanes) {
    if (lanes == 4)
        amx_q8_rows(g, o, group, 4);
    else if (lanes == 8)
        amx_q8_rows(g, o, group, 8);
    else
        amx_q8_rows(g, o, group, 16);
}

/* the whole groups of 16 rows from o below r1 for every token of the step, a group of 16 tokens at a time
 * (the tiles configured once where one group holds them all, else for each group's lanes; released after);
 * returns the first row left */
static _Atomic long amx_q8_runs; /* calls of amx_q8_groups in this process (bigcode_amx_int8_products) */

static int amx_q8_groups(const QuantGemv *g, int o, int r1) {
    atomic_fetch_add_explicit(&amx_q8_runs, 1, memory_order_relaxed);
    const int groups = (g->B + AMX_Q8_TOKENS - 1) / AMX_Q8_TOKENS;
    const int last_lanes = q8_tile_lanes(g->B - (groups - 1) * AMX_Q8_TOKENS);
    if (groups == 1) amx_q8_configure(last_lanes);
    for (; o + GROUP_ROWS <= r1; o += GROUP_ROWS)
        for (int group = 0; group < groups; group++) {
            const int lanes = group == groups - 1 ? last_lanes : AMX_Q8_TOKENS;
            if (groups > 1) amx_q8_configure(lanes);
            amx_q8_rows_of(g, o, group, lanes);
        }
    _tile_release();
    return o;
}
