/* Each logits row's largest value and where it lies (greedy decoding's choice), found by the LM head's own
 * chunks, for decode_step.c (included there, before the matrix products).
 *
 * Why: a greedy generation chooses each token as the argmax of its logits row. Found afterwards (NumPy, in
 * sampling.best_ids) the rows come back from memory: 49,152 logits of a row of the 116M shape are 192 KB, and
 * by the time the step returns the LM head's 37 MB of weights have pushed them out of cache; eight rows cost
 * the serve engine's thread ~0.19 ms a step (2% of it). Each chunk of the LM head scans its own stretch of each
 * row right after making it, while it is still in cache, and the chunks' answers are combined in order.
 *
 * The rule is NumPy's argmax, what best_ids gives: the first NaN if the row has one, else the first of equal
 * largest values (a +0 after a -0 is not larger). Each stretch's answer follows it, and `best_after` combines
 * a stretch's with the one after it so that the whole row's answer is the same wherever the stretches end. */

#ifdef __AVX512F__
#include <immintrin.h>
#endif

typedef struct {
    float value;
    int32_t index;
} Best;

/* Where a matrix product leaves each row's Best: `parts` holds one per chunk and row (chunk-major), `out` gets
 * each row's index once the chunks are combined */
typedef struct {
    Best *parts;
    int32_t *out;
} Argmax;

/* y[r0 .. r1)'s Best (r0 < r1), NumPy's rule one value at a time */
static Best best_scalar(const float *y, int r0, int r1) {
    Best b = {y[r0], r0};
    if (b.value != b.value) return b;
    for (int i = r0 + 1; i < r1; i++)
        if (!(y[i] <= b.value)) { /* larger, or a NaN */
            b.value = y[i];
            b.index = i;
            if (y[i] != y[i]) break;
        }
    return b;
}

/* y[r0 .. r1)'s Best (r0 < r1). With AVX-512: each lane keeps its largest value and the first index it had,
 * updated only where a value is strictly larger; a stretch with a NaN (none in practice) goes the scalar way. */
static Best best_of(const float *y, int r0, int r1) {
#ifdef __AVX512F__
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const int n = r1 - r0;
    /* the first vector's lanes past n hold -inf with indices after every real one: never chosen over a real lane */
    const __mmask16 first = n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
    __m512 m = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), first, y + r0);
    __m512i at = _mm512_add_epi32(iota, _mm512_set1_epi32(r0));
    __mmask16 nan = _mm512_cmp_ps_mask(m, m, _CMP_UNORD_Q);
    int i = r0 + 16;
    for (; i < r1; i += 16) {
        const __mmask16 real = r1 - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (r1 - i)) - 1);
        const __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), real, y + i);
        const __mmask16 larger = _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        m = _mm512_mask_mov_ps(m, larger, v);
        at = _mm512_mask_mov_epi32(at, larger, _mm512_add_epi32(iota, _mm512_set1_epi32(i)));
    }
    if (nan) return best_scalar(y, r0, r1);
    const float largest = _mm512_reduce_max_ps(m);
    const __mmask16 holding = _mm512_cmp_ps_mask(m, _mm512_set1_ps(largest), _CMP_EQ_OQ);
    return (Best){largest, _mm512_mask_reduce_min_epi32(holding, at)};
#else
    return best_scalar(y, r0, r1);
#endif
}

/* the Best of a stretch followed by the next one: the earlier's NaN, else the later's only if larger or a NaN */
static inline Best best_after(Best earlier, Best later) {
    if (earlier.value != earlier.value) return earlier;
    return !(later.value <= earlier.value) ? later : earlier;
}

/* chunk `chunk` of a product made rows r0 .. r1 of each of the B rows of y (`out` wide): their Bests */
static void chunk_best(const Argmax *a, int chunk, const float *y, int B, int out, int r0, int r1) {
    for (int b = 0; b < B; b++) a->parts[(long)chunk * B + b] = best_of(y + (long)b * out, r0, r1);
}

/* every chunk done: each row's index, the chunks combined in row order */
static void put_best(const Argmax *a, int chunks, int B) {
    for (int b = 0; b < B; b++) {
        Best best = a->parts[b];
        for (int c = 1; c < chunks; c++) best = best_after(best, a->parts[(long)c * B + b]);
        a->out[b] = best.index;
    }
}

/* the index of the largest of y[0 .. n) by the rule above, found in `pieces` stretches as near equal as can be and
 * combined as a product's chunks are: for tests against NumPy's argmax (n >= pieces >= 1) */
int bigcode_argmax(const float *y, int n, int pieces) {
    Best best = best_of(y, 0, n / pieces);
    for (int p = 1; p < pieces; p++)
        best = best_after(best, best_of(y, (int)((long)n * p / pieces), (int)((long)n * (p + 1) / pieces)));
    return best.index;
}
