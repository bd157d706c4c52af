/* bf16 matrix products on AMX tiles, for decode_step.c (included there, once, after amx_tiles.h, where the
 * compiler targets AMX-BF16).
 *
 * Why: a step of several tokens (a verify step, a few requests at once) multiplies each weight by every
 * token row. With vdpbf16ps that is one instruction per 32 weights per token row, and on a model small
 * enough to be read from the caches a verify step of 4 tokens cost 1.85x one token (the bundled model,
 * bf16). One tile product multiplies 16 weight rows by 16 token rows over 32 inputs, so up to 16 tokens
 * cost about what one does, while one token still costs a read of the weights.
 *
 * The weights are the tile's A operand as they lie in memory: 16 consecutive (out, in) rows, 64 bytes of
 * each per step. The token rows are the B operand, packed once per product into pairs of inputs
 * (`amx_pack_inputs`): row j of a B tile holds inputs 2j and 2j + 1 of each of 16 token rows, zeros past
 * the last token. The result tile is (16 outputs, 16 tokens).
 *
 * Batch invariance: a token's sums depend on its own inputs and the weights only, in the same order (tile
 * steps over the inputs front to back) whichever tokens share its tile; so whenever this path is usable it
 * takes every bf16 product whose inputs come in whole steps of 32, one token or sixteen (whether tiles are
 * used at all is decided once per process: amx_tiles.h). Rows of a matrix past its last whole group of 16
 * (out % 16) go through float_dots.h, whatever the number of tokens; matrix products are cut into chunks of
 * whole groups.
 *
 * Measured (2-core Xeon with AMX, one thread, CPU time of a step of one row of k tokens, tiles against
 * vdpbf16ps: `BIGCODE_AMX=1`, then `0`, `python benchmarks/step_overheads.py --model bundled|116m|1.1b --dtype
 * bfloat16`, BIGCODE_BENCH_DIR set for the two shapes): the bundled model
 * 0.57 / 0.54 ms for one token, 0.68 / 0.94 for 4, 0.84 / 1.67 for 8; the 116M shape 17.2 / 22.9 ms for one,
 * 19.3 / 29.7 for 8; the 1.1B shape 156 / 229 ms for one, 163 / 327 for 8.
 */

#define AMX_STEP 32 /* inputs per tile product: 64 bytes of bf16 */
#define AMX_PAIRS (AMX_STEP / 2)
#ifndef AMX_AHEAD
#define AMX_AHEAD 2 /* steps of 32 inputs whose weights are asked for before they are multiplied */
#endif

/* all eight tiles 16 x 64 bytes. Here: 0 and 1 results (even and odd steps); 2 and 3 weights, 4 and 5 the
 * packed tokens (amx_attend.h uses all eight) */
static void amx_configure(void) {
    TileConfig config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int t = 0; t < 8; t++) {
        config.rows[t] = 16;
        config.colsb[t] = 64;
    }
    amx_load_config(&config);
}

/* bytes of the packed tokens of B rows of n inputs (n a multiple of AMX_STEP) */
static inline size_t amx_packed_size(int B, long n) {
    return (size_t)((B + AMX_TOKENS - 1) / AMX_TOKENS) * AMX_TOKENS * (size_t)n * sizeof(uint16_t);
}

/* xp = the B rows of x (n inputs each) rounded to bf16, in groups of 16 tokens: a group's pair j of inputs
 * is 64 bytes, the pair of each token in turn (zeros for tokens past B) */
static void amx_pack_inputs(const float *x, int B, int n, uint16_t *xp) {
    const int groups = (B + AMX_TOKENS - 1) / AMX_TOKENS;
    if (B % AMX_TOKENS != 0) /* the last group's empty places */
        memset(xp + (long)(groups - 1) * AMX_TOKENS * n, 0, (size_t)AMX_TOKENS * n * sizeof(uint16_t));
    for (int b = 0; b < B; b++) {
        uint32_t *out = (uint32_t *)(xp + (long)(b / AMX_TOKENS) * AMX_TOKENS * n) + b % AMX_TOKENS;
        const float *row = x + (long)b * n;
        for (int j = 0; j < n / 2; j++)
            out[(long)j * AMX_TOKENS] = (uint32_t)f32_to_bf16(row[2 * j]) | (uint32_t)f32_to_bf16(row[2 * j + 1]) << 16;
    }
}

/* c (16 outputs x 16 tokens, floats) = 16 weight rows from w (row_bytes apart) times one packed group of
 * tokens, over `steps` steps of 32 inputs: even steps into one result tile and odd ones into another
 * (two products in flight), added at the end; the operands of odd steps in other tiles than even ones' (a
 * tile being read cannot be reloaded). The lines of step s + AMX_AHEAD are asked for at step s (the next
 * group's first ones near the end if `more`). Tried and slower: 32 rows at a time into two result tiles
 * (32 streams of weight rows: the 1.1B shape's one-token step 216 ms against 156), the 32 rows first copied
 * into a panel in tile order (the tile loads waited on the copy's stores), prefetching further ahead. */
static inline void amx_rows_product(const uint16_t *w, long row_bytes, const uint16_t *xp, int steps, float *c,
                                    int more) {
    const long tokens_bytes = 2 * AMX_TOKENS * (long)sizeof(uint16_t);
    const char *x = (const char *)xp, *wb = (const char *)w;
    float odd[AMX_ROWS * AMX_TOKENS] __attribute__((aligned(64)));
    _tile_zero(0);
    _tile_zero(1);
    int s = 0;
    for (; s < steps; s += 2) {
#if AMX_AHEAD > 0
        for (int j = 0; j < 2; j++) {
            const int at = s + j + AMX_AHEAD;
            const char *p = at < steps ? wb + (long)at * 64 : more ? wb + AMX_ROWS * row_bytes + (long)(at - steps) * 64 : NULL;
            if (p)
                for (int r = 0; r < AMX_ROWS; r++) __builtin_prefetch(p + r * row_bytes);
        }
#endif
        _tile_loadd(4, x + s * AMX_PAIRS * tokens_bytes, tokens_bytes);
        _tile_loadd(2, wb + (long)s * 64, row_bytes);
        if (s + 1 < steps) {
            _tile_loadd(5, x + (s + 1) * AMX_PAIRS * tokens_bytes, tokens_bytes);
            _tile_loadd(3, wb + (long)(s + 1) * 64, row_bytes);
            _tile_dpbf16ps(0, 2, 4);
            _tile_dpbf16ps(1, 3, 5);
        } else {
            _tile_dpbf16ps(0, 2, 4);
        }
    }
    _tile_stored(0, c, AMX_TOKENS * (long)sizeof(float));
    _tile_stored(1, odd, AMX_TOKENS * (long)sizeof(float));
    for (int i = 0; i < AMX_ROWS * AMX_TOKENS; i += 16)
        _mm512_store_ps(c + i, _mm512_add_ps(_mm512_load_ps(c + i), _mm512_load_ps(odd + i)));
}
