/* Dot products of one float32 or bf16 weight row with NR token rows at once, for decode_step.c (included
 * there, once): the small-M matrix product of a step over many rows.
 *
 * The weight row is read front to back once (measured: about 1.4x the bandwidth of interleaving several
 * weight rows when rows are short) and each loaded weight vector is multiplied into all NR inputs while it
 * is in a register, so a tile of rows costs the weight loads of one.
 *
 * Batch invariance: every token row is summed exactly as it would be alone (four vector sums over runs of
 * 4 * VW values, the rest into the first, a scalar tail, then ((a0 + a1) + (a2 + a3)) summed as a tree),
 * whatever NR is and whichever other rows share the tile. Only the interleaving of independent sums
 * changes with NR, never the order of any one sum, so a row's result is bit for bit the same alone or in a
 * crowd. NR is a constant at every call (`dots_tile` switches on it), so the loops over it unroll and the
 * sums stay in registers: DOT_TILE rows at most, as many as the registers hold (4 * NR sums plus four
 * weight vectors: 32 registers on AVX-512, 16 elsewhere).
 */

#if defined(__AVX512F__)
#define DOT_TILE 4
#else
#define DOT_TILE 2
#endif

/* out[r] = dot(w, x + r * xs) over n values, r < NR */
static inline __attribute__((always_inline)) void dots_f32(const float *w, const float *x, long xs, int n,
                                                           float *out, long ahead, const int NR) {
    vf a[DOT_TILE][4];
    for (int r = 0; r < NR; r++) a[r][0] = a[r][1] = a[r][2] = a[r][3] = (vf){0};
    int i = 0;
    for (; i + 4 * VW <= n; i += 4 * VW) {
        prefetch_lines((const char *)(w + i), 4 * VW * 4, i * 4L, ahead);
        const vf w0 = load_f32(w + i), w1 = load_f32(w + i + VW), w2 = load_f32(w + i + 2 * VW);
        const vf w3 = load_f32(w + i + 3 * VW);
        for (int r = 0; r < NR; r++) {
            const float *xr = x + r * xs + i;
            a[r][0] += w0 * load_f32(xr);
            a[r][1] += w1 * load_f32(xr + VW);
            a[r][2] += w2 * load_f32(xr + 2 * VW);
            a[r][3] += w3 * load_f32(xr + 3 * VW);
        }
    }
    for (; i + VW <= n; i += VW) {
        const vf w0 = load_f32(w + i);
        for (int r = 0; r < NR; r++) a[r][0] += w0 * load_f32(x + r * xs + i);
    }
    vf sums[DOT_TILE];
    for (int r = 0; r < NR; r++) sums[r] = (a[r][0] + a[r][1]) + (a[r][2] + a[r][3]);
    hsum_rows(sums, out, NR);
    for (int r = 0; r < NR; r++) {
        float tail = 0.0f;
        for (int j = i; j < n; j++) tail += w[j] * x[r * xs + j];
        out[r] += tail;
    }
}

#ifdef __AVX512BF16__
/* bf16 pairs multiplied exactly and summed in fp32, 32 weights per instruction; the inputs are rounded to
 * bf16 (round_inputs), as in PyTorch's bfloat16 matmuls */
static inline __attribute__((always_inline)) void dots_bf16(const uint16_t *w, const bf16_input *x, long xs, int n,
                                                            float *out, long ahead, const int NR) {
    __m512 a[DOT_TILE][4];
    for (int r = 0; r < NR; r++) a[r][0] = a[r][1] = a[r][2] = a[r][3] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 128 <= n; i += 128) {
        prefetch_lines((const char *)(w + i), 256, i * 2L, ahead);
        const __m512bh w0 = (__m512bh)_mm512_loadu_si512(w + i), w1 = (__m512bh)_mm512_loadu_si512(w + i + 32);
        const __m512bh w2 = (__m512bh)_mm512_loadu_si512(w + i + 64), w3 = (__m512bh)_mm512_loadu_si512(w + i + 96);
        for (int r = 0; r < NR; r++) {
            const bf16_input *xr = x + r * xs + i;
            a[r][0] = _mm512_dpbf16_ps(a[r][0], w0, (__m512bh)_mm512_loadu_si512(xr));
            a[r][1] = _mm512_dpbf16_ps(a[r][1], w1, (__m512bh)_mm512_loadu_si512(xr + 32));
            a[r][2] = _mm512_dpbf16_ps(a[r][2], w2, (__m512bh)_mm512_loadu_si512(xr + 64));
            a[r][3] = _mm512_dpbf16_ps(a[r][3], w3, (__m512bh)_mm512_loadu_si512(xr + 96));
        }
    }
    for (; i + 32 <= n; i += 32) {
        const __m512bh w0 = (__m512bh)_mm512_loadu_si512(w + i);
        for (int r = 0; r < NR; r++)
            a[r][0] = _mm512_dpbf16_ps(a[r][0], w0, (__m512bh)_mm512_loadu_si512(x + r * xs + i));
    }
    vf sums[DOT_TILE];
    for (int r = 0; r < NR; r++) sums[r] = (vf)_mm512_add_ps(_mm512_add_ps(a[r][0], a[r][1]), _mm512_add_ps(a[r][2], a[r][3]));
    hsum_rows(sums, out, NR);
    for (int r = 0; r < NR; r++) {
        float tail = 0.0f;
        for (int j = i; j < n; j++) tail += bf16_to_f32(w[j]) * bf16_to_f32(x[r * xs + j]);
        out[r] += tail;
    }
}
#elif defined(BF16_SPLIT)
static inline vf lanes_as_f32(vu u) {
    vf v;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* the same products without bf16 instructions: the weights widened to fp32 (exactly) by shift and mask,
 * times the inputs already rounded to bf16, held as fp32 in split order (round_inputs); fp32 sums */
static inline __attribute__((always_inline)) void dots_bf16(const uint16_t *w, const bf16_input *x, long xs, int n,
                                                            float *out, long ahead, const int NR) {
    vf a[DOT_TILE][4];
    for (int r = 0; r < NR; r++) a[r][0] = a[r][1] = a[r][2] = a[r][3] = (vf){0};
    const vu high = (vu){0} + 0xffff0000u;
    int i = 0;
    for (; i + 4 * VW <= n; i += 4 * VW) {
        prefetch_lines((const char *)(w + i), 4 * VW * 2, i * 2L, ahead);
        vu u0, u1;
        memcpy(&u0, w + i, sizeof u0);
        memcpy(&u1, w + i + 2 * VW, sizeof u1);
        const vf w0 = lanes_as_f32(u0 << 16), w1 = lanes_as_f32(u0 & high);
        const vf w2 = lanes_as_f32(u1 << 16), w3 = lanes_as_f32(u1 & high);
        for (int r = 0; r < NR; r++) {
            const float *xr = x + r * xs + i;
            a[r][0] += w0 * load_f32(xr);
            a[r][1] += w1 * load_f32(xr + VW);
            a[r][2] += w2 * load_f32(xr + 2 * VW);
            a[r][3] += w3 * load_f32(xr + 3 * VW);
        }
    }
    for (; i + 2 * VW <= n; i += 2 * VW) {
        vu u;
        memcpy(&u, w + i, sizeof u);
        const vf w0 = lanes_as_f32(u << 16), w1 = lanes_as_f32(u & high);
        for (int r = 0; r < NR; r++) {
            a[r][0] += w0 * load_f32(x + r * xs + i);
            a[r][1] += w1 * load_f32(x + r * xs + i + VW);
        }
    }
    vf sums[DOT_TILE];
    for (int r = 0; r < NR; r++) sums[r] = (a[r][0] + a[r][1]) + (a[r][2] + a[r][3]);
    hsum_rows(sums, out, NR);
    for (int r = 0; r < NR; r++) {
        float tail = 0.0f;
        for (int j = i; j < n; j++) tail += bf16_to_f32(w[j]) * x[r * xs + j];
        out[r] += tail;
    }
}
#else
/* the same products on other CPUs: the weights widened to fp32 (exactly) times the inputs already rounded
 * to bf16 and held as fp32, fp32 sums */
static inline __attribute__((always_inline)) void dots_bf16(const uint16_t *w, const bf16_input *x, long xs, int n,
                                                            float *out, long ahead, const int NR) {
    vf a[DOT_TILE][4];
    for (int r = 0; r < NR; r++) a[r][0] = a[r][1] = a[r][2] = a[r][3] = (vf){0};
    int i = 0;
    for (; i + 4 * VW <= n; i += 4 * VW) {
        prefetch_lines((const char *)(w + i), 4 * VW * 2, i * 2L, ahead);
        const vf w0 = load_bf16(w + i), w1 = load_bf16(w + i + VW), w2 = load_bf16(w + i + 2 * VW);
        const vf w3 = load_bf16(w + i + 3 * VW);
        for (int r = 0; r < NR; r++) {
            const float *xr = x + r * xs + i;
            a[r][0] += w0 * load_f32(xr);
            a[r][1] += w1 * load_f32(xr + VW);
            a[r][2] += w2 * load_f32(xr + 2 * VW);
            a[r][3] += w3 * load_f32(xr + 3 * VW);
        }
    }
    for (; i + VW <= n; i += VW) {
        const vf w0 = load_bf16(w + i);
        for (int r = 0; r < NR; r++) a[r][0] += w0 * load_f32(x + r * xs + i);
    }
    vf sums[DOT_TILE];
    for (int r = 0; r < NR; r++) sums[r] = (a[r][0] + a[r][1]) + (a[r][2] + a[r][3]);
    hsum_rows(sums, out, NR);
    for (int r = 0; r < NR; r++) {
        float tail = 0.0f;
        for (int j = i; j < n; j++) tail += bf16_to_f32(w[j]) * x[r * xs + j];
        out[r] += tail;
    }
}
#endif

/* out[r] = dot(weight row, input row b0 + r) for r < nr <= DOT_TILE: the tile's size made a constant;
 * `ahead`: the bytes from w that may be prefetched (prefetch_lines), 0 for none */
static void dots_tile(const void *w, int bf16, const void *x, long xs, int n, float *out, long ahead, int nr) {
#define DOTS_CASE(NR)                                                                                   \
    case NR:                                                                                            \
        if (bf16)                                                                                       \
            dots_bf16((const uint16_t *)w, (const bf16_input *)x, xs, n, out, ahead, NR);                      \
        else                                                                                            \
            dots_f32((const float *)w, (const float *)x, xs, n, out, ahead, NR);                             \
        return;
    switch (nr) {
        DOTS_CASE(1)
        DOTS_CASE(2)
#if DOT_TILE > 2
        DOTS_CASE(3)
        DOTS_CASE(4)
#endif
    default: return;
    }
#undef DOTS_CASE
}
