/* One decoding step of a GPTBigCode causal LM on the CPU: B rows of one new token each, through every
 * layer and the LM head, in a single call.
 *
 * Why: a decode step is a chain of one-row matrix products. They are bound by memory bandwidth, and the
 * step is short enough that per-operation dispatch in Python costs as much as the arithmetic. Here the
 * weights are streamed once per step by all threads, and nothing returns to Python until the logits
 * are ready.
 *
 * Layout contract (bigcode_cli/kernels/cpu_decode.py builds the structs):
 *   - Linear weights are (out, in) row-major, float32 or bfloat16 (`bf16`), or block-quantized (see
 *     quant_matvec.h: int8 or int4 blocks of 32 with fp16 scales); biases and LayerNorm parameters are
 *     float32 copies.
 *   - The cache of a layer is the torch KVCache tensor, bf16 (`kv_bf16`) or float32:
 *     multi-query (B, capacity, 2D), key then value; multi-head (B, capacity, H, 2D).
 *   - Activations and accumulation are float32 whatever the weight dtype.
 *
 * Work is split into chunks (row blocks of a matrix product; for attention, a row's block of positions
 * and group of heads) claimed from an atomic counter by the calling thread and a small pool of workers. A worker that is
 * descheduled on a busy machine delays nothing: the caller simply claims the remaining chunks.
 *
 * Portable C11 with GCC/Clang vector extensions: the compiler maps them to AVX-512, AVX2 or NEON; bf16
 * products, int8 products of several tokens and multi-query attention over bf16 caches use AMX tiles where
 * the CPU has them and Linux hands them out (amx_tiles.h; amx_bf16.h, amx_int8.h, amx_attend.h).
 */

#include <math.h>
#ifdef __AVX512BF16__
#include <immintrin.h>
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* VW: floats per vector, the width of the CPU's own registers. A vector type wider than the registers
 * (16 floats on AVX2) makes GCC spill every accumulator to the stack (measured: the fp32 116m step took
 * 38 ms with VW 16 on AVX2) */
#if defined(__AVX512F__)
#define VW 16
#elif defined(__AVX__)
#define VW 8
#else
#define VW 4 /* SSE, NEON */
#endif
typedef float vf __attribute__((vector_size(VW * 4)));
typedef int32_t vi __attribute__((vector_size(VW * 4)));
typedef uint32_t vu __attribute__((vector_size(VW * 4)));
typedef uint16_t vh __attribute__((vector_size(VW * 2)));

enum { ACT_GELU_TANH = 0, ACT_GELU_ERF = 1, ACT_RELU = 2, ACT_SILU = 3, ACT_TANH = 4 };

typedef struct {
    const void *w;  /* (out, in); quantized: (out, blocks) blocks of quant_matvec.h's formats */
    const float *b; /* (out,) or NULL */
    int32_t out, in;
    const uint16_t *scales; /* quantized: (out, blocks) fp16 block scales; else NULL */
    int32_t quant;          /* QUANT_NONE (float32 or bf16, as the model), QUANT_Q8 or QUANT_Q4 */
    const uint16_t *group_scales; /* quantized, where bigcode_quant_group_rows() > 0: the scales of the whole
                                   * groups of rows in lane order, (out / 16, blocks, 16) (quant_groups.h); else NULL */
} Linear;

typedef struct {
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    Linear attn, proj, fc, mlp_proj;
} Layer;

typedef struct {
    int32_t n_layer, n_embd, n_head, head_dim, multi_query, inner, vocab, n_positions;
    int32_t activation, bf16;
    int32_t kv_bf16;       /* the caches hold bf16 keys and values (else float32), whatever the weights are */
    float eps, scale;
    const void *wte, *wpe; /* (vocab, C), (n_positions, C) */
    const float *lnf_w, *lnf_b;
    Linear lm_head;
    const Layer *layers;
    const uint16_t *wte_scales; /* a quantized token embedding's block scales, else NULL */
    int32_t wte_quant;          /* QUANT_NONE, or the format of a quantized wte (the tied LM head's matrix) */
} Model;

/* ------------------------------------------------------------------ loads, stores, math */

#define BUFFER_ALIGN 64
static size_t aligned_size(size_t n) { return (n + BUFFER_ALIGN - 1) / BUFFER_ALIGN * BUFFER_ALIGN; }

static inline vf load_f32(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline vf load_bf16(const uint16_t *p) {
    vh h;
    memcpy(&h, p, sizeof h);
    vu u = __builtin_convertvector(h, vu) << 16;
    vf v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t f32_to_bf16(float f) { /* round to nearest even, like torch */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* The input of a matmul with bf16 weights, rounded to bf16 as PyTorch's bf16 matmuls round it. With
 * AVX-512 BF16 it is kept as bf16 pairs for vdpbf16ps. Elsewhere it is held as the same values in fp32, so
 * that only the weights need widening (measured on AVX2: 14 GB/s of bf16 weights instead of 8.5 widening
 * both), and in "split" order: each run of 2 * VW inputs as its VW even-indexed ones, then its VW odd ones.
 * Then 2 * VW bf16 weights loaded as VW 32-bit lanes widen with one shift (the even ones, low halves) and
 * one mask (the odd ones, high halves), no shuffles (another 5-10% on AVX2). Inputs past the last whole
 * run keep their order. Little-endian lanes (x86, ARM); other CPUs keep the plain order. */
#if defined(__AVX512BF16__)
typedef uint16_t bf16_input;
static inline bf16_input round_input(float v) { return f32_to_bf16(v); }
#else
typedef float bf16_input;
static inline bf16_input round_input(float v) { return bf16_to_f32(f32_to_bf16(v)); }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define BF16_SPLIT 1
#endif
#endif

/* xr (n values) = x rounded to bf16, in the order dot_bf16 reads it */
static inline void round_inputs(const float *x, bf16_input *xr, long n) {
    long i = 0;
#ifdef BF16_SPLIT
    for (; i + 2 * VW <= n; i += 2 * VW)
        for (int j = 0; j < VW; j++) {
            xr[i + j] = round_input(x[i + 2 * j]);
            xr[i + VW + j] = round_input(x[i + 2 * j + 1]);
        }
#endif
    for (; i < n; i++) xr[i] = round_input(x[i]);
}

/* the sum of a vector's lanes as a tree (halving), not a chain of VW - 1 dependent additions */
#if defined(__clang__)
#define LANES(v, ...) __builtin_shufflevector(v, v, __VA_ARGS__)
#define LANES2(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define LANES(v, ...) __builtin_shuffle(v, (vi){__VA_ARGS__})
#define LANES2(a, b, ...) __builtin_shuffle(a, b, (vi){__VA_ARGS__})
#endif

/* The halving steps in registers: lane i of the result is lane i + w of v, for the lanes below w (the
 * lanes above are don't-cares). Going through memory instead (store the vector, add its floats) stalled
 * on every store forwarded to narrower loads: in a step of several tokens of a small model that was
 * most of the matrix products' time (perf: bundled model, 8 tokens, float32). */
static inline float hsum(vf v) {
#if VW == 16
    v += LANES(v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    v += LANES(v, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3);
    v += LANES(v, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1);
    v += LANES(v, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0);
#elif VW == 8
    v += LANES(v, 4, 5, 6, 7, 0, 1, 2, 3);
    v += LANES(v, 2, 3, 0, 1, 2, 3, 0, 1);
    v += LANES(v, 1, 0, 1, 0, 1, 0, 1, 0);
#else
    v += LANES(v, 2, 3, 0, 1);
    v += LANES(v, 1, 0, 1, 0);
#endif
    return v[0];
}

/* out[r] = hsum(v[r]) for r < NR <= 4, bit for bit, with the halving steps of four vectors shared: after
 * the first step two vectors' halves fill one register, after the second four quarters do (a tile of
 * token rows reduces its sums in about a third of the instructions of one hsum each) */
static inline __attribute__((always_inline)) void hsum_rows(const vf *v, float *out, const int NR) {
#if VW == 16 || VW == 8
    if (NR == 1) {
        out[0] = hsum(v[0]);
        return;
    }
    const vf zero = {0}, a = v[0], b = v[1], c = NR > 2 ? v[2] : zero, d = NR > 3 ? v[3] : zero;
#if VW == 16
    const vf ab = LANES2(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                  LANES2(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    const vf cd = LANES2(c, d, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
                  LANES2(c, d, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    vf q = LANES2(ab, cd, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
           LANES2(ab, cd, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    q += LANES(q, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    q += LANES(q, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    for (int r = 0; r < NR; r++) out[r] = q[4 * r];
#else
    const vf ab = LANES2(a, b, 0, 1, 2, 3, 8, 9, 10, 11) + LANES2(a, b, 4, 5, 6, 7, 12, 13, 14, 15);
    const vf cd = LANES2(c, d, 0, 1, 2, 3, 8, 9, 10, 11) + LANES2(c, d, 4, 5, 6, 7, 12, 13, 14, 15);
    vf q = LANES2(ab, cd, 0, 1, 4, 5, 8, 9, 12, 13) + LANES2(ab, cd, 2, 3, 6, 7, 10, 11, 14, 15);
    q += LANES(q, 1, 0, 3, 2, 5, 4, 7, 6);
    for (int r = 0; r < NR; r++) out[r] = q[2 * r];
#endif
#else
    for (int r = 0; r < NR; r++) out[r] = hsum(v[r]);
#endif
}

/* element i of a row of `bf16 ? uint16 : float` values */
static inline float elem(const void *row, int bf16, long i) {
    return bf16 ? bf16_to_f32(((const uint16_t *)row)[i]) : ((const float *)row)[i];
}

static inline void put(void *row, int bf16, long i, float v) {
    if (bf16)
        ((uint16_t *)row)[i] = f32_to_bf16(v);
    else
        ((float *)row)[i] = v;
}

/* exp(x) for x in [-87, 88] is 2^n * p: n = x / ln 2 rounded to an integer, p = a degree-7 polynomial of the rest
 * (x - n ln 2, split into two parts of ln 2 for precision); returns p, and n in *n */
static inline vf exp_parts(vf x, vf *n) {
    const vf zero = {0}, one = zero + 1.0f;
    vf t = x * 1.44269504088896341f + 12582912.0f; /* adding 1.5 * 2^23 rounds to an integer */
    *n = t - 12582912.0f;
    vf r = x - *n * 0.693145751953125f - *n * 1.42860682030941723e-6f;
    return one + r * (one + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720 + r * (1.0f / 5040)))))));
}

/* exp(x) for a vector, relative error about 1e-7 over the float range (Cody-Waite reduction, degree-7
 * Taylor polynomial on |r| <= ln2/2); inputs below -87 give about 1e-38 instead of 0 */
static inline vf vexp(vf x) {
    const vf zero = {0}, lo = zero - 87.0f, hi = zero + 88.0f;
    vi below = x < lo, above = x > hi; /* all ones where true */
    x = (vf)(((vi)x & ~below) | ((vi)lo & below));
    x = (vf)(((vi)x & ~above) | ((vi)hi & above));
    vf n;
    vf p = exp_parts(x, &n);
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    vf scale;
    memcpy(&scale, &e, sizeof scale);
    return p * scale;
}

static float scalar_exp(float x) {
    vf v = {0};
    v[0] = x;
    return vexp(v)[0];
}

static void activate(float *y, int n, int kind) {
    const float k0 = 0.7978845608028654f, k1 = 0.044715f; /* sqrt(2/pi) */
    int i = 0;
    if (kind == ACT_GELU_TANH || kind == ACT_SILU || kind == ACT_TANH) {
        for (; i + VW <= n; i += VW) {
            vf x = load_f32(y + i), out;
            if (kind == ACT_GELU_TANH) { /* 0.5 x (1 + tanh(u)) = x - x / (1 + exp(2u)) */
                vf u = k0 * (x + k1 * x * x * x);
                out = x - x / (1.0f + vexp(2.0f * u));
            } else if (kind == ACT_SILU) {
                out = x / (1.0f + vexp(-x));
            } else {
                out = 1.0f - 2.0f / (1.0f + vexp(2.0f * x));
            }
            memcpy(y + i, &out, sizeof out);
        }
    }
    for (; i < n; i++) {
        float x = y[i];
        switch (kind) {
        case ACT_GELU_TANH: y[i] = x - x / (1.0f + scalar_exp(2.0f * k0 * (x + k1 * x * x * x))); break;
        case ACT_GELU_ERF: y[i] = 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); break;
        case ACT_RELU: y[i] = x > 0.0f ? x : 0.0f; break;
        case ACT_SILU: y[i] = x / (1.0f + scalar_exp(-x)); break;
        default: y[i] = 1.0f - 2.0f / (1.0f + scalar_exp(2.0f * x)); break;
        }
    }
}

/* out = (x - mean) / sqrt(var + eps) * w + b. The mean and the variance are summed in VW lanes (then across
 * them, then the rest one at a time): one sum in order waited four cycles an element, ~1.5% of an 8-row step
 * of the 116m shape. The order depends on n only, so a row gets the same bits whatever else the step holds. */
static void layer_norm(const float *x, float *out, int n, const float *w, const float *b, float eps) {
    vf lanes = {0};
    int i = 0;
    for (; i + VW <= n; i += VW) lanes += load_f32(x + i);
    float mean = hsum(lanes);
    for (int j = i; j < n; j++) mean += x[j];
    mean /= (float)n;
    vf spread = {0};
    for (i = 0; i + VW <= n; i += VW) {
        const vf d = load_f32(x + i) - mean;
        spread += d * d;
    }
    float var = hsum(spread);
    for (int j = i; j < n; j++) var += (x[j] - mean) * (x[j] - mean);
    float inv = 1.0f / sqrtf(var / (float)n + eps);
    for (i = 0; i < n; i++) out[i] = (x[i] - mean) * inv * w[i] + b[i];
}

/* ------------------------------------------------------------------ the thread pool */

typedef struct Job Job;
typedef void (*ChunkFn)(const Job *job, int chunk, int thread);

struct Job {
    ChunkFn fn;
    int n_chunks;
    const void *args;
};

#define MAX_THREADS 64
#define SPIN_NS 2000000L /* an idle worker spins this long (covers the gap between two steps), then blocks */
#define CHUNKS_PER_THREAD 8

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;     /* a job was posted (for workers asleep after spinning) */
    pthread_cond_t enlisted; /* `active` grew (for workers beyond it) */
    _Atomic uint64_t ticket; /* (job sequence << 32) | next chunk to claim; low half all ones = closed */
    _Atomic int done;        /* chunks of the current job finished */
    _Atomic int sleepers;
    _Atomic int active;      /* threads allowed to work, the caller included */
    Job job;                 /* written and read with relaxed atomics; see run_job and worker_main */
    int workers;             /* started worker threads */
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .enlisted = PTHREAD_COND_INITIALIZER};

static pthread_mutex_t step_lock = PTHREAD_MUTEX_INITIALIZER; /* one step at a time uses the pool */

static inline uint32_t current_seq(void) { return (uint32_t)(atomic_load(&pool.ticket) >> 32); }

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

/* Claim and run chunks of job `seq` until none is left or the job is no longer current.
 * `job` is the caller's copy of the job's fields. A successful claim proves the copy belongs to job `seq`:
 * run_job closes the ticket, then issues a release fence, before it rewrites the fields, and the copier
 * issues an acquire fence after copying; so a copy that saw any newer field is ordered after the close,
 * and the claim's compare-and-swap then fails. */
static void run_chunks(uint32_t seq, const Job *job, int thread) {
    for (;;) {
        uint64_t t = atomic_load(&pool.ticket);
        if ((uint32_t)(t >> 32) != seq || (uint32_t)t >= (uint32_t)job->n_chunks) return;
        if (!atomic_compare_exchange_weak(&pool.ticket, &t, t + 1)) continue;
        job->fn(job, (int)(uint32_t)t, thread);
        atomic_fetch_add(&pool.done, 1);
    }
}

static Job copy_job(void) {
    Job job;
    job.fn = __atomic_load_n(&pool.job.fn, __ATOMIC_RELAXED);
    job.n_chunks = __atomic_load_n(&pool.job.n_chunks, __ATOMIC_RELAXED);
    job.args = __atomic_load_n(&pool.job.args, __ATOMIC_RELAXED);
    atomic_thread_fence(memory_order_acquire);
    return job;
}

typedef struct {
    int thread;
    uint32_t seen; /* the job sequence when the worker was started: older jobs are not its business */
} WorkerStart;

static void *worker_main(void *arg) {
    WorkerStart start = *(WorkerStart *)arg;
    free(arg);
    const int thread = start.thread;
    uint32_t seen = start.seen;
    for (;;) {
        if (thread >= atomic_load(&pool.active)) { /* not enlisted for now: sleep until `active` grows */
            pthread_mutex_lock(&pool.lock);
            while (thread >= atomic_load(&pool.active)) pthread_cond_wait(&pool.enlisted, &pool.lock);
            pthread_mutex_unlock(&pool.lock);
            seen = current_seq(); /* a job in flight is joined only if posted after this */
        }
        /* wait for the next job: spinning for a bounded time (measured in time, not iterations: a pause
         * instruction takes from ~10 to ~140 cycles depending on the CPU), then blocked on the condition
         * variable, so that an idle process uses no CPU */
        uint32_t seq = current_seq();
        for (long spin = 1, since = now_ns(); seq == seen; spin++) {
            cpu_relax();
            seq = current_seq();
            if (seq != seen || spin % 256 != 0 || now_ns() - since < SPIN_NS) continue;
            pthread_mutex_lock(&pool.lock);
            atomic_fetch_add(&pool.sleepers, 1);
            while ((seq = current_seq()) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
            atomic_fetch_sub(&pool.sleepers, 1);
            pthread_mutex_unlock(&pool.lock);
        }
        seen = seq;
        if (thread >= atomic_load(&pool.active)) continue;
        Job job = copy_job();
        run_chunks(seq, &job, thread);
    }
    return NULL;
}

/* A child forked while the pool existed has none of its threads, and possibly a job the parent was
 * running: close that job and start afresh. */
static void forget_pool_after_fork(void) {
    pthread_mutex_init(&step_lock, NULL);
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.enlisted, NULL);
    atomic_store(&pool.ticket, ((uint64_t)current_seq() << 32) | 0xffffffffu);
    atomic_store(&pool.done, 0);
    atomic_store(&pool.sleepers, 0);
    atomic_store(&pool.active, 1);
    pool.workers = 0;
}

static void ensure_workers(int threads) {
    static int fork_handler;
    if (!fork_handler) {
        pthread_atfork(NULL, NULL, forget_pool_after_fork);
        fork_handler = 1;
    }
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    while (pool.workers + 1 < threads) {
        WorkerStart *start = malloc(sizeof *start);
        if (!start) break;
        start->thread = pool.workers + 1;
        start->seen = current_seq();
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int ok = pthread_create(&t, &attr, worker_main, start) == 0;
        pthread_attr_destroy(&attr);
        if (!ok) {
            free(start);
            break;
        }
        pool.workers++;
    }
    if (threads > pool.workers + 1) threads = pool.workers + 1;
    if (threads > atomic_load(&pool.active)) {
        pthread_mutex_lock(&pool.lock);
        atomic_store(&pool.active, threads);
        pthread_cond_broadcast(&pool.enlisted);
        pthread_mutex_unlock(&pool.lock);
    } else {
        atomic_store(&pool.active, threads);
    }
}

/* run every chunk of `job` on the caller and the pool; returns when all are done */
static void run_job(ChunkFn fn, int n_chunks, const void *args) {
    if (n_chunks <= 0) return;
    uint32_t seq = current_seq();
    atomic_store(&pool.ticket, ((uint64_t)seq << 32) | 0xffffffffu); /* close the finished job */
    atomic_thread_fence(memory_order_release);
    seq++;
    __atomic_store_n(&pool.job.fn, fn, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.job.n_chunks, n_chunks, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.job.args, args, __ATOMIC_RELAXED);
    atomic_store(&pool.done, 0);
    Job job = {fn, n_chunks, args};
    atomic_store(&pool.ticket, (uint64_t)seq << 32); /* publishes the fields to workers that see `seq` */
    if (atomic_load(&pool.sleepers) > 0 && atomic_load(&pool.active) > 1) {
        pthread_mutex_lock(&pool.lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.lock);
    }
    run_chunks(seq, &job, 0);
    while (atomic_load(&pool.done) < n_chunks) cpu_relax();
}

/* ------------------------------------------------------------------ matrix products */

enum { OUT_STORE = 0, OUT_ADD = 1, OUT_ACT = 2 };

#include "logits_best.h"

typedef struct {
    const Linear *lin;
    const float *x;     /* (B, in) */
    const bf16_input *xr; /* x rounded to bf16, for bf16 weights */
    const uint16_t *xp; /* bf16 weights on AMX tiles: x packed for them (amx_bf16.h); else NULL */
    float *y;           /* (B, out) */
    int B, mode, activation, rows_per_chunk, bf16;
    const Argmax *argmax; /* the LM head of a step that wants each row's largest logit: where; else NULL */
} Gemv;

/* The weights are asked for PREFETCH_BYTES ahead of the products that read them: with two cores the hardware
 * prefetchers alone leave the memory bus idle between rows (measured, one 116m-shaped step's matrix products
 * on an AVX2 AMD EPYC, 2 threads, means of 30: int8 12.2 -> 10.0 ms, int4 7.3 -> 6.0 ms; 2 and 4 KB did
 * equally well, 1 KB less). prefetch_lines asks for the lines PREFETCH_BYTES past the `bytes` at `p` (which
 * lie `done` bytes into the run that may be prefetched, `ahead` bytes long), as the loop reaches them. Asking
 * for a whole row's lines at its start instead filled the line buffers and stalled everything behind the
 * burst (perf: a several-token step of the bundled model, float32, spent half its matrix time on them; 116m
 * int8 on an Intel Xeon, one thread: one row 11.0 -> 10.5 ms, eight 19.8 -> 18.3 ms), where spread out they
 * overlap the multiplications. */
#ifndef PREFETCH_BYTES
#define PREFETCH_BYTES 4096
#endif
static inline __attribute__((always_inline)) void prefetch_lines(const char *p, int bytes, long done, long ahead) {
    if (done + PREFETCH_BYTES + bytes > ahead) return;
    for (int at = 0; at < bytes; at += 64) __builtin_prefetch(p + PREFETCH_BYTES + at);
}

#include "float_dots.h"

#if defined(__AMX_TILE__) && defined(__AVX512F__) && defined(__linux__)
#define AMX_TILES 1
#include "amx_tiles.h"
#if defined(__AMX_BF16__) && defined(__AVX512BF16__)
#define AMX_BF16 1
#include "amx_bf16.h"
#endif
#endif

/* y[b, o] (+= with OUT_ADD) = v + bias, the way every path writes its results */
static inline void put_output(const Gemv *g, int b, int o, float v, float bias) {
    float *y = g->y + (long)b * g->lin->out + o;
    *y = g->mode == OUT_ADD ? *y + v + bias : v + bias;
}

static void dot_rows(const Gemv *g, int r0, int r1);

/* y[b, o] for o in [r0, r1): dot(W[o], x[b]) (+ bias), then the output mode; whole groups of 16 weight
 * rows on AMX tiles where this process uses them (amx_bf16.h), the others in tiles of token rows that
 * share each weight load (float_dots.h) */
static void gemv_block(const Gemv *g, int r0, int r1) {
    int o = r0;
#ifdef AMX_BF16
    if (g->xp) {
        const Linear *L = g->lin;
        const long row_bytes = (long)L->in * 2;
        float c[AMX_ROWS * AMX_TOKENS] __attribute__((aligned(64)));
        amx_configure();
        for (; o + AMX_ROWS <= r1; o += AMX_ROWS) {
            const uint16_t *w = (const uint16_t *)L->w + (long)o * L->in;
            for (int b0 = 0; b0 < g->B; b0 += AMX_TOKENS) {
                amx_rows_product(w, row_bytes, g->xp + (long)b0 * L->in, L->in / AMX_STEP, c,
                                 b0 == 0 && o + 2 * AMX_ROWS <= L->out);
                const int tokens = g->B - b0 < AMX_TOKENS ? g->B - b0 : AMX_TOKENS;
                for (int r = 0; r < AMX_ROWS; r++) {
                    const float bias = L->b ? L->b[o + r] : 0.0f;
                    for (int t = 0; t < tokens; t++) put_output(g, b0 + t, o + r, c[r * AMX_TOKENS + t], bias);
                }
            }
        }
        _tile_release();
    }
#endif
    dot_rows(g, o, r1);
    if (g->mode == OUT_ACT)
        for (int b = 0; b < g->B; b++) activate(g->y + (long)b * g->lin->out + r0, r1 - r0, g->activation);
}

static void dot_rows(const Gemv *g, int r0, int r1) {
    const Linear *L = g->lin;
    const int n = L->in;
    const long row_bytes = (long)n * (g->bf16 ? 2 : 4);
    const void *x = g->bf16 ? (const void *)g->xr : (const void *)g->x;
    const long x_bytes = (long)n * (g->bf16 ? (long)sizeof(bf16_input) : (long)sizeof(float));
    for (int o = r0; o < r1; o++) {
        const float bias = L->b ? L->b[o] : 0.0f;
        const char *w = (const char *)L->w + (long)o * row_bytes;
        for (int b0 = 0; b0 < g->B; b0 += DOT_TILE) { /* the row stays in L1 for the other tiles */
            const int nr = g->B - b0 < DOT_TILE ? g->B - b0 : DOT_TILE;
            float v[DOT_TILE];
            dots_tile(w, g->bf16, (const char *)x + b0 * x_bytes, n, n, v, b0 == 0 ? (long)(r1 - o) * row_bytes : 0, nr);
            for (int r = 0; r < nr; r++) put_output(g, b0 + r, o, v[r], bias);
        }
    }
}

static void gemv_chunk(const Job *job, int chunk, int thread) {
    (void)thread;
    const Gemv *g = (const Gemv *)job->args;
    int r0 = chunk * g->rows_per_chunk, r1 = r0 + g->rows_per_chunk;
    if (r1 > g->lin->out) r1 = g->lin->out;
    gemv_block(g, r0, r1);
    if (g->argmax) chunk_best(g->argmax, chunk, g->y, g->B, g->lin->out, r0, r1);
}

#include "quant_matvec.h"

/* `xb` is the Buffers scratch: bf16 weights multiply the input rounded to bf16 (bf16_input values), as
 * PyTorch's bf16 matmuls do; quantized weights quantize the input into it (quant_scratch_size). With `argmax`
 * (OUT_STORE only), each of the B rows of y also gets the index of its largest value (logits_best.h); its parts
 * hold a Best per chunk and row: CHUNKS_PER_THREAD * threads * B at most. */
static void gemv(const Linear *lin, const float *x, void *xb, float *y, int B, int mode, int activation,
                 int bf16, const Argmax *argmax) {
    /* a few long runs of rows per thread: each chunk is one sequential stream for the prefetchers, and
     * there are enough chunks that a thread descheduled on a busy machine leaves work to the others */
    int chunks = CHUNKS_PER_THREAD * atomic_load(&pool.active);
    int rows = (lin->out + chunks - 1) / chunks;
    rows = rows < 4 ? 4 : (rows + 3) / 4 * 4;
    if (lin->quant != QUANT_NONE) {
        quant_gemv(lin, x, xb, y, B, mode, activation, rows, argmax);
        return;
    }
    bf16_input *xr = bf16 ? (bf16_input *)xb : NULL;
    if (bf16)
        for (int b = 0; b < B; b++) round_inputs(x + (long)b * lin->in, xr + (long)b * lin->in, lin->in);
    uint16_t *xp = NULL;
#ifdef AMX_BF16
    if (bf16 && lin->in % AMX_STEP == 0 && amx_usable()) { /* after xr in the scratch (bf16_scratch_size) */
        xp = (uint16_t *)((char *)xb + aligned_size((size_t)B * lin->in * sizeof(bf16_input)));
        amx_pack_inputs(x, B, lin->in, xp);
        rows = (rows + AMX_ROWS - 1) / AMX_ROWS * AMX_ROWS; /* chunks of whole tile groups */
    }
#endif
    Gemv g = {lin, x, xr, xp, y, B, mode, activation, rows, bf16, argmax};
    const int chunks_run = (lin->out + rows - 1) / rows;
    run_job(gemv_chunk, chunks_run, &g);
    if (argmax) put_best(argmax, chunks_run, B);
}

/* bytes of scratch a bf16 matvec of B rows of up to `widest` inputs needs: the inputs rounded to bf16 (xr),
 * then, with AMX tiles, the same packed for them */
static size_t bf16_scratch_size(int B, size_t widest) {
    size_t size = aligned_size((size_t)B * widest * sizeof(bf16_input));
#ifdef AMX_BF16
    size += amx_packed_size(B, (long)widest);
#endif
    return size;
}

/* ------------------------------------------------------------------ attention */

/* Attention is split over blocks of cached positions ("flash decoding"): each chunk takes one row, one
 * block of positions and every head that reads the same keys there (all heads with multi-query, one with
 * multi-head). It leaves, per head, the block's largest score, the sum of exp(score - largest) and the
 * unnormalised weighted sum of values; `merge_blocks` combines the blocks exactly. Each key and value is
 * read once per row, and long contexts keep every thread busy whatever the number of heads. */

/* Positions per block: fixed (a position's block never depends on the step, so a row's result does not either).
 * Each block pays its query's setup, its tiles' configuration and release, the first lines of its own read and
 * its share of the merge (scalar, per head); 1024 over 256 and 512: eight rows of 1,600 bf16 positions (116m
 * shape, one thread, attention alone in a test program, 10 MB of other reads between layers as a step's products
 * make, Intel Xeon; medians of 20 runs, the builds in a random order): 256: 4.25 ms, 512: 4.05, 1024: 3.75;
 * one row 0.52 -> 0.49 ms (256 -> 1024). Three builds alternated also gave 4,000 positions 8.7-9.1 / 8.4-8.9 /
 * 7.7-8.2 ms and, on the vector path (BIGCODE_AMX=0, Zen 4's), 6.5-6.8 / 6.4-6.6 / 6.2-6.8. The price: a row
 * spreads over fewer chunks. With two threads a 1,600-position row's longest share is 1,024 positions whichever
 * of the three (one row's decode measured no slower there); with many more threads a long row's attention
 * would use fewer of them (not measured: no such machine here). */
#define ATTEND_BLOCK 1024

typedef struct {
    const Model *m;
    const float *qkv;           /* (T, attn.out): the step's token rows */
    void *const *cache;         /* (T,): the cache of this layer of each token's sequence */
    const int32_t *length;      /* (T,): positions each token attends, its own included (causal) */
    const int32_t *first_chunk; /* (units + 1,): chunks of the units (tokens; multi-query: groups) before each */
    const int32_t *group_first; /* multi-query: (groups + 1,): the first token of each group (attend) */
    float *partial;             /* (T, H, blocks, 2 + D): max, sum, values */
    float *scores;              /* per thread: multi-query, mq_scratch_floats; else ATTEND_BLOCK scores */
    int T, blocks, head_groups; /* blocks: of the longest token (the stride of `partial`) */
    int units;                  /* what first_chunk counts: T tokens, or (multi-query) the groups */
} Attend;

static inline __attribute__((always_inline)) vf load_kv(const void *base, long at, int bf16) {
    return bf16 ? load_bf16((const uint16_t *)base + at) : load_f32((const float *)base + at);
}

static inline __attribute__((always_inline)) void attend_block(const Attend *a, int b, int h0, int nh, int s0,
                                                               int s1, float *scores, int bf16) {
    const Model *m = a->m;
    const int H = m->n_head, D = m->head_dim, n = s1 - s0, qkv_out = m->layers[0].attn.out;
    const long stride = m->multi_query ? 2L * D : 2L * H * D; /* from one position to the next */
    const long base = m->multi_query ? 0 : 2L * h0 * D; /* within the token's own cache */
    const void *cache = a->cache[b];
    const int nvec = D / VW;
    /* scores[hh * n + j] = q_h . k_(s0+j) * scale, four positions at a time for independent sums */
    for (int hh = 0; hh < nh; hh++) {
        const int h = h0 + hh;
        const float *q = a->qkv + (long)b * qkv_out + (m->multi_query ? (long)h * D : (long)h * 3 * D);
        float *sc = scores + (long)hh * n;
        int j = 0;
        for (; j + 4 <= n; j += 4) {
            const long at = base + (long)(s0 + j) * stride;
            vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (int v = 0; v < nvec; v++) {
                vf qv = load_f32(q + v * VW);
                a0 += qv * load_kv(cache, at + v * VW, bf16);
                a1 += qv * load_kv(cache, at + stride + v * VW, bf16);
                a2 += qv * load_kv(cache, at + 2 * stride + v * VW, bf16);
                a3 += qv * load_kv(cache, at + 3 * stride + v * VW, bf16);
            }
            float t[4] = {0, 0, 0, 0};
            for (int d = nvec * VW; d < D; d++)
                for (int k = 0; k < 4; k++) t[k] += q[d] * elem(cache, bf16, at + k * stride + d);
            sc[j] = (hsum(a0) + t[0]) * m->scale;
            sc[j + 1] = (hsum(a1) + t[1]) * m->scale;
            sc[j + 2] = (hsum(a2) + t[2]) * m->scale;
            sc[j + 3] = (hsum(a3) + t[3]) * m->scale;
        }
        for (; j < n; j++) {
            const long at = base + (long)(s0 + j) * stride;
            float t = 0.0f;
            for (int d = 0; d < D; d++) t += q[d] * elem(cache, bf16, at + d);
            sc[j] = t * m->scale;
        }
    }
    /* per head: block max, exp(score - max) in place, their sum; then the weighted values */
    for (int hh = 0; hh < nh; hh++) {
        float *sc = scores + (long)hh * n, best = -INFINITY, total = 0.0f;
        for (int j = 0; j < n; j++) best = sc[j] > best ? sc[j] : best;
        int j = 0;
        for (; j + VW <= n; j += VW) {
            vf e = vexp(load_f32(sc + j) - best);
            memcpy(sc + j, &e, sizeof e);
            total += hsum(e);
        }
        for (; j < n; j++) {
            sc[j] = scalar_exp(sc[j] - best);
            total += sc[j];
        }
        float *part = a->partial + (((long)b * H + h0 + hh) * a->blocks + s0 / ATTEND_BLOCK) * (2L + D);
        part[0] = best;
        part[1] = total;
        float *out = part + 2;
        for (int d = 0; d < D; d++) out[d] = 0.0f;
        for (j = 0; j + 2 <= n; j += 2) {
            const long at = base + (long)(s0 + j) * stride + D;
            const float p0 = sc[j], p1 = sc[j + 1];
            for (int v = 0; v < nvec; v++) {
                vf o = load_f32(out + v * VW) + p0 * load_kv(cache, at + v * VW, bf16) +
                       p1 * load_kv(cache, at + stride + v * VW, bf16);
                memcpy(out + v * VW, &o, sizeof o);
            }
            for (int d = nvec * VW; d < D; d++)
                out[d] += p0 * elem(cache, bf16, at + d) + p1 * elem(cache, bf16, at + stride + d);
        }
        for (; j < n; j++) {
            const long at = base + (long)(s0 + j) * stride + D;
            for (int d = 0; d < D; d++) out[d] += sc[j] * elem(cache, bf16, at + d);
        }
    }
}

/* The scores loop reads only the keys of each position, a short run followed by a skip over its values, and
 * the hardware prefetchers alone left it waiting on memory most of the time (perf, 116m shape, int8, 8 rows
 * of 1,600 positions: the key loads held ~70% of attention's cycles). So it asks for the keys and values
 * KV_AHEAD bytes ahead, a line at a time between its multiplications (a burst of prefetches filled the
 * line buffers and stalled as long as the loads had). kv_ahead_lines: how many lines of `count` elements
 * from element `at`, moved KV_AHEAD bytes on, lie before element `end` (the row's cached length). */
#ifndef KV_AHEAD
#define KV_AHEAD 4096
#endif
static inline long kv_ahead_lines(long at, long count, long end, int bf16) {
    const int size = bf16 ? 2 : 4;
    long bytes = (end - at) * size - KV_AHEAD;
    if (bytes > count * size) bytes = count * size;
    return bytes > 0 ? (bytes + 63) / 64 : 0;
}

/* Multi-query attention takes the new tokens of one sequence together (a verify step's draft, a prompt's
 * rest fed as a row): they read the same keys and values, so their heads share the lanes, up to MQ_LANES
 * of them (mq_group_tokens tokens), and each key is loaded once for all of them. */
#define MQ_LANES 64

static inline int mq_group_tokens(const Model *m) { return m->n_head >= MQ_LANES ? 1 : MQ_LANES / m->n_head; }

/* floats of one thread's scratch for attend_block_mq: qt (D, HW) and the scores (ATTEND_BLOCK, HW) */
static inline long mq_scratch_floats(const Model *m) {
    const long HW = ((long)mq_group_tokens(m) * m->n_head + VW - 1) / VW * VW;
    return ((long)m->head_dim + ATTEND_BLOCK) * HW;
}

/* Multi-query attention, with every head reading the same keys and values: the heads go across the
 * vector lanes. q is transposed once per block to qt (D, HW) (HW = the heads rounded up to whole
 * vectors, zero past the last head), so that a score vector for one position holds every head's score,
 * built from one broadcast key element per dimension; the softmax runs lane-wise over positions; values
 * are summed with each head's weight broadcast. No horizontal sums, each key and value element read once
 * per block, and the heads' work shares every load. Measured on AVX2, 2 threads, one layer's attention:
 * 12 heads of 64 over 2,400 positions 324 -> 194 us; 16 heads of 128 over 1,024 positions 296 -> 172 us
 * (bf16 cache 387 -> 163 us), against one head at a time with a horizontal sum per score. Multi-head
 * attention, where no two heads share keys, keeps that way (attend_block). */
/* A values tile: VALUE_LANES lanes by VALUE_VECS value vectors summed in registers. Six by four are 24
 * accumulators of AVX-512's 32 registers (116m shape, 8 rows of 1,600 positions, one thread: attention 6.8 ->
 * 6.0 ms against three lanes). With AVX2's 16, six by two: 12 accumulators, the tile's 2 value vectors and a
 * broadcast weight stay in registers, where three by four (12 + 4 + 1) made the compiler reload each value
 * vector for every lane (116m shape, one row of 200 cached positions, one thread, AVX2 AMD EPYC: 0.19 -> 0.17
 * ms). The sums are the same whatever the tile: each lane adds its positions in order. */
#define VALUE_LANES (VW == 16 ? 6 : VW == 8 ? 6 : 3)
#define VALUE_VECS (VW == 16 ? 4 : VW == 8 ? 2 : 4)

/* heads h0 .. h0 + NH - 1, value vectors v0 .. v0 + NV - 1 of one block: sum_j p[j, h] * value_j, summed
 * in registers (NH and NV are constants at every call, so the tile is unrolled) */
static inline __attribute__((always_inline)) void value_tile(const Attend *a, const float *sc, int HW, const void *cache,
                                                             int s0, int n, int h0, int v0, float *parts,
                                                             long part_stride, const int NH, const int NV, int bf16) {
    const int D = a->m->head_dim;
    const long stride = 2L * D;
    vf o[VALUE_LANES][4] = {{{0}}};
    for (int j = 0; j < n; j++) {
        const long at = (long)(s0 + j) * stride + D + (long)v0 * VW;
        const float *p = sc + (long)j * HW + h0;
        vf val[4];
        for (int k = 0; k < NV; k++) val[k] = load_kv(cache, at + (long)k * VW, bf16);
        for (int hh = 0; hh < NH; hh++)
            for (int k = 0; k < NV; k++) o[hh][k] += p[hh] * val[k];
    }
    for (int hh = 0; hh < NH; hh++)
        for (int k = 0; k < NV; k++)
            memcpy(parts + (h0 + hh) * part_stride + 2 + (long)(v0 + k) * VW, &o[hh][k], sizeof(vf));
}

/* sc[j, g*VW .. (g+NG)*VW) = qt . key_(s0+j) for the block's n positions, NP positions by NG head vectors at
 * a time in registers (NP <= 8 and NG <= 2 are constants at every call, so the tile is unrolled). One vector
 * of heads (a row's one new token: 12 heads of the 116m shape) takes eight positions, one multiplication per
 * key element; it took four with a second, unused vector of heads multiplied alongside, twice the
 * multiplications (the 116m shape's attention, 8 rows of 1,600 positions, one thread: 7.3-7.9 -> 5.7-6.8 ms) */
/* Positions a tile of two head vectors takes. With AVX2's 16 registers six: 12 accumulators, the two vectors of
 * the query and a broadcast key element, so each query vector is loaded once per dimension for six positions
 * (four loaded it for each multiplication: 116m shape's 12 heads on 16 lanes, one row of 200 cached positions,
 * one thread, AVX2 AMD EPYC: 0.166 -> 0.140 ms). The sums are the same: each adds its dimensions in order. */
#define SCORE_PAIR_POSITIONS (VW == 8 ? 6 : 4)

static inline __attribute__((always_inline)) void score_rows(const void *cache, const float *qt, float *sc, int D,
                                                             int HW, int g, int s0, int n, long ahead_end, int bf16,
                                                             const int NP, const int NG) {
    const long stride = 2L * D;
    int j = 0;
    for (; j + NP <= n; j += NP) {
        const long at = (long)(s0 + j) * stride;
        /* the positions KV_AHEAD bytes ahead, one cache line per dimension while the lines last */
        const long ahead = g == 0 ? kv_ahead_lines(at, NP * stride, ahead_end, bf16) : 0;
        const char *ahead_at = (const char *)cache + at * (bf16 ? 2 : 4) + KV_AHEAD;
        vf c[8][2];
        for (int p = 0; p < NP; p++)
            for (int k = 0; k < NG; k++) c[p][k] = (vf){0};
        for (int d = 0; d < D; d++) {
            if (d < ahead) __builtin_prefetch(ahead_at + 64L * d);
            vf q[2];
            for (int k = 0; k < NG; k++) q[k] = load_f32(qt + (long)d * HW + (g + k) * VW);
            for (int p = 0; p < NP; p++) {
                const float key = elem(cache, bf16, at + p * stride + d);
                for (int k = 0; k < NG; k++) c[p][k] += q[k] * key;
            }
        }
        for (int p = 0; p < NP; p++)
            for (int k = 0; k < NG; k++) memcpy(sc + (long)(j + p) * HW + (g + k) * VW, &c[p][k], sizeof(vf));
    }
    for (; j < n; j++) {
        const long at = (long)(s0 + j) * stride;
        vf c[2] = {{0}};
        for (int d = 0; d < D; d++) {
            const float key = elem(cache, bf16, at + d);
            for (int k = 0; k < NG; k++) c[k] += load_f32(qt + (long)d * HW + (g + k) * VW) * key;
        }
        for (int k = 0; k < NG; k++) memcpy(sc + (long)j * HW + (g + k) * VW, &c[k], sizeof(vf));
    }
}

/* positions of the block [s0, s1) a token of the group b .. b + G - 1 does not attend (its own length and
 * on): score -inf in sc (n, HW), weight exactly 0 after the softmax; whether there were any */
static int mask_unattended(const Attend *a, int b, int G, int s0, int s1, float *sc, int HW) {
    const int H = a->m->n_head, n = s1 - s0;
    const int masked = s1 > a->length[b];
    if (masked)
        for (int j = a->length[b] - s0 > 0 ? a->length[b] - s0 : 0; j < n; j++)
            for (int t = 0; t < G; t++)
                if (s0 + j >= a->length[b + t])
                    for (int h = 0; h < H; h++) sc[(long)j * HW + t * H + h] = -INFINITY;
    return masked;
}

/* tokens b .. b + G - 1 of one sequence (positions one after another), block [s0, s1) of its cache: lane
 * t * H + h is token b + t's head h. A lane sees exactly the sums it would see alone, in the same order
 * (lanes never mix), and a position past a token's own length (a later token of the group) weighs exactly
 * zero: so each token's result is bit for bit its result alone. */
static inline __attribute__((always_inline)) void attend_block_mq(const Attend *a, int b, int G, int s0, int s1,
                                                                  float *scratch, int bf16) {
    const Model *m = a->m;
    const int H = m->n_head, D = m->head_dim, n = s1 - s0, qkv_out = m->layers[0].attn.out;
    const int Q = G * H, HV = (Q + VW - 1) / VW, HW = HV * VW; /* query lanes, their vectors, lanes padded */
    const long stride = 2L * D, base = 0;
    const void *cache = a->cache[b];
    const long ahead_end = (long)a->length[b + G - 1] * stride; /* the cached elements, for kv_ahead_lines */
    float *qt = scratch, *sc = scratch + (long)D * HW; /* qt (D, HW); sc (n, HW) */
    for (int t = 0; t < G; t++) {
        const float *q = a->qkv + (long)(b + t) * qkv_out;
        for (int d = 0; d < D; d++)
            for (int h = 0; h < H; h++) qt[(long)d * HW + t * H + h] = q[(long)h * D + d] * m->scale;
    }
    for (int d = 0; d < D; d++)
        for (int l = Q; l < HW; l++) qt[(long)d * HW + l] = 0.0f;
    /* scores: positions by one or two head vectors at a time, all in registers */
    for (int g = 0; g < HV; g += 2) {
        if (g + 1 < HV)
            score_rows(cache, qt, sc, D, HW, g, s0, n, ahead_end, bf16, SCORE_PAIR_POSITIONS, 2);
        else
            score_rows(cache, qt, sc, D, HW, g, s0, n, ahead_end, bf16, 8, 1);
    }
    const int masked = mask_unattended(a, b, G, s0, s1, sc, HW);
    /* lane-wise softmax pieces over the block's positions: max, exp(score - max) in place, sum */
    const long part_stride = (long)a->blocks * (2L + D), block = s0 / ATTEND_BLOCK;
    float *parts = a->partial + ((long)b * H * a->blocks + block) * (2L + D); /* lane l's at + l * part_stride */
    const vf gone = (vf){0} - INFINITY;
    for (int v = 0; v < HV; v++) {
        vf best = load_f32(sc + v * VW), total = {0};
        for (int j = 1; j < n; j++) {
            const vf s = load_f32(sc + (long)j * HW + v * VW);
            const vi more = s > best; /* all ones where true */
            best = (vf)(((vi)s & more) | ((vi)best & ~more));
        }
        for (int j = 0; j < n; j++) {
            const vf s = load_f32(sc + (long)j * HW + v * VW);
            vf e = vexp(s - best);
            if (masked) e = (vf)((vi)e & ~(vi)(s == gone)); /* exactly 0, as if the position were not there */
            memcpy(sc + (long)j * HW + v * VW, &e, sizeof e);
            total += e;
        }
        for (int l = 0; l < VW && v * VW + l < Q; l++) {
            parts[(v * VW + l) * part_stride] = best[l];
            parts[(v * VW + l) * part_stride + 1] = total[l];
        }
    }
    /* values: tiles of VALUE_LANES lanes by VALUE_VECS value vectors in registers, narrower tiles at the edges,
     * dimensions past the last whole vector one by one */
    const int nvec = D / VW;
    for (int h0 = 0; h0 < Q; h0 += VALUE_LANES) {
        const int nh = Q - h0 < VALUE_LANES ? Q - h0 : VALUE_LANES;
        int v0 = 0;
        for (; v0 + VALUE_VECS <= nvec; v0 += VALUE_VECS) {
            if (nh == VALUE_LANES)
                value_tile(a, sc, HW, cache, s0, n, h0, v0, parts, part_stride, VALUE_LANES, VALUE_VECS, bf16);
            else
                for (int hh = 0; hh < nh; hh++)
                    value_tile(a, sc, HW, cache, s0, n, h0 + hh, v0, parts, part_stride, 1, VALUE_VECS, bf16);
        }
        for (; v0 < nvec; v0++)
            for (int hh = 0; hh < nh; hh++)
                value_tile(a, sc, HW, cache, s0, n, h0 + hh, v0, parts, part_stride, 1, 1, bf16);
        for (int d = nvec * VW; d < D; d++)
            for (int hh = 0; hh < nh; hh++) {
                float t = 0.0f;
                for (int j = 0; j < n; j++)
                    t += sc[(long)j * HW + h0 + hh] * elem(cache, bf16, base + (long)(s0 + j) * stride + D + d);
                parts[(h0 + hh) * part_stride + 2 + d] = t;
            }
    }
}

#include "attend_bf16.h"

static void attend_chunk(const Job *job, int chunk, int thread) {
    const Attend *a = (const Attend *)job->args;
    int lo = 0, hi = a->units - 1; /* the unit whose chunks hold `chunk` */
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (a->first_chunk[mid] <= chunk) lo = mid; else hi = mid - 1;
    }
    if (a->m->multi_query) { /* a group of tokens, one block of its longest token's positions */
        const int b = a->group_first[lo], G = a->group_first[lo + 1] - b, length = a->length[b + G - 1];
        const int s0 = (chunk - a->first_chunk[lo]) * ATTEND_BLOCK;
        const int s1 = s0 + ATTEND_BLOCK < length ? s0 + ATTEND_BLOCK : length;
        float *scratch = a->scores + (long)thread * mq_scratch_floats(a->m);
#ifdef ATTEND_BF16
        if (attend_bf16_fits(a->m)) {
            attend_block_mq_bf16(a, b, G, s0, s1, scratch);
            return;
        }
#endif
        if (a->m->kv_bf16)
            attend_block_mq(a, b, G, s0, s1, scratch, 1);
        else
            attend_block_mq(a, b, G, s0, s1, scratch, 0);
        return;
    }
    const int b = lo, length = a->length[b], blocks = (length + ATTEND_BLOCK - 1) / ATTEND_BLOCK;
    const int local = chunk - a->first_chunk[b], block = local % blocks, group = local / blocks;
    const int nh = a->m->n_head / a->head_groups, h0 = group * nh;
    const int s0 = block * ATTEND_BLOCK, s1 = s0 + ATTEND_BLOCK < length ? s0 + ATTEND_BLOCK : length;
    float *scores = a->scores + (long)thread * nh * ATTEND_BLOCK;
    if (a->m->kv_bf16)
        attend_block(a, b, h0, nh, s0, s1, scores, 1);
    else
        attend_block(a, b, h0, nh, s0, s1, scores, 0);
}

/* out[t, h*D:(h+1)*D] = softmax-weighted values, from the per-block partial results */
static void merge_blocks(const Attend *a, float *out) {
    const int H = a->m->n_head, D = a->m->head_dim, C = a->m->n_embd;
    for (int b = 0; b < a->T; b++) {
        const int blocks = (a->length[b] + ATTEND_BLOCK - 1) / ATTEND_BLOCK;
        for (int h = 0; h < H; h++) {
            const float *part = a->partial + ((long)b * H + h) * a->blocks * (2L + D);
            float best = -INFINITY, total = 0.0f;
            for (int k = 0; k < blocks; k++) best = part[k * (2L + D)] > best ? part[k * (2L + D)] : best;
            float *o = out + (long)b * C + (long)h * D;
            for (int d = 0; d < D; d++) o[d] = 0.0f;
            for (int k = 0; k < blocks; k++) {
                const float *p = part + k * (2L + D);
                const float w = expf(p[0] - best);
                total += w * p[1];
                for (int d = 0; d < D; d++) o[d] += w * p[2 + d];
            }
            for (int d = 0; d < D; d++) o[d] /= total;
        }
    }
}

/* attention of T tokens, each over its own sequence's cache (`cache`, `length` per token); `first_chunk`
 * and `group_first` (T + 1 values each) are scratch. Multi-query: consecutive tokens of one sequence go
 * together (attend_block_mq), at most mq_group_tokens at a time; multi-head: every token's heads apart. */
static void attend(const Model *m, const float *qkv, void *const *cache, const int32_t *length, int32_t *first_chunk,
                   int32_t *group_first, float *partial, float *scores, float *out, int T, int max_length) {
    const int head_groups = m->multi_query ? 1 : m->n_head;
    int units = 0;
    first_chunk[0] = 0;
    if (m->multi_query) {
        const int most = mq_group_tokens(m);
        for (int t = 0; t < T; units++) {
            int G = 1;
            while (t + G < T && G < most && cache[t + G] == cache[t] && length[t + G] == length[t] + G) G++;
            group_first[units] = t;
            first_chunk[units + 1] = first_chunk[units] + (length[t + G - 1] + ATTEND_BLOCK - 1) / ATTEND_BLOCK;
            t += G;
        }
        group_first[units] = T;
    } else {
        for (; units < T; units++)
            first_chunk[units + 1] = first_chunk[units] + head_groups * ((length[units] + ATTEND_BLOCK - 1) / ATTEND_BLOCK);
    }
    Attend a = {m, qkv, cache, length, first_chunk, group_first, partial, scores, T,
                (max_length + ATTEND_BLOCK - 1) / ATTEND_BLOCK, head_groups, units};
    run_job(attend_chunk, first_chunk[units], &a);
    merge_blocks(&a, out);
}

/* copy each token's key and value into its sequence's cache (`cache[t]`, this layer's) at its position */
static void write_cache(const Model *m, const float *qkv, void *const *cache, const int32_t *pos, int T) {
    const int H = m->n_head, D = m->head_dim, C = m->n_embd, qkv_out = m->layers[0].attn.out;
    for (int t = 0; t < T; t++) {
        const float *row = qkv + (long)t * qkv_out;
        if (m->multi_query) {
            const long at = (long)pos[t] * 2L * D;
            for (int i = 0; i < 2 * D; i++) put(cache[t], m->kv_bf16, at + i, row[C + i]);
        } else {
            for (int h = 0; h < H; h++) {
                const long at = ((long)pos[t] * H + h) * 2L * D;
                for (int i = 0; i < 2 * D; i++) put(cache[t], m->kv_bf16, at + i, row[(long)h * 3 * D + D + i]);
            }
        }
    }
}

/* ------------------------------------------------------------------ buffers */

/* Everything a step writes besides the caches and the logits lives in one allocation that a decoder keeps
 * from step to step (bigcode_workspace_new / _free): made by the first step, grown, never shrunk, when a
 * step needs more (more rows, a longer context, more threads). A step whose buffers cannot be had fails
 * before it computes or writes anything. */
typedef struct {
    void *base;
    size_t size;
} Workspace;

typedef struct {
    float *x, *h, *att; /* (T, C): residual stream, normalised input, attention output */
    float *qkv, *f;     /* (T, attn.out), (T, inner) */
    void *xb;           /* bf16 weights: (T, widest matmul input) bf16_input values, then the inputs packed
                         * for AMX tiles where they run (bf16_scratch_size); quantized weights: the input's
                         * int8 blocks, sums and scales (quant_scratch_size); else unused */
    float *partial;     /* (T, H, blocks, 2 + D): attention's per-block results */
    float *scores;      /* each thread's attention scratch (Attend.scores) */
    int32_t *pos, *length, *first_chunk, *group_first; /* (T,), (T,): each token's position, attended length;
                                                         * (T + 1,) each: attend's scratch */
    void **cache;       /* (T,): the cache of the current layer of each token's sequence */
    Best *best_parts;   /* (CHUNKS_PER_THREAD * threads, T): the LM head's chunks' Bests (gemv's Argmax) */
} Buffers;
void *bigcode_workspace_new(void) { return calloc(1, sizeof(Workspace)); }

void bigcode_workspace_free(void *workspace) {
    Workspace *ws = (Workspace *)workspace;
    if (!ws) return;
    free(ws->base);
    free(ws);
}

enum { N_BUFFERS = 14 };

/* point `out` into the workspace, growing it first if this step needs more; 0, or -1 without memory */
static int reserve(Workspace *ws, const Model *m, int B, int length, int threads, Buffers *out) {
    const size_t rows = (size_t)B, i32 = sizeof(int32_t), C = (size_t)m->n_embd, H = (size_t)m->n_head, D = (size_t)m->head_dim;
    const size_t widest = m->inner > m->n_embd ? (size_t)m->inner : C;
    const size_t blocks = ((size_t)length + ATTEND_BLOCK - 1) / ATTEND_BLOCK;
    const size_t f = sizeof(float);
    const size_t sizes[N_BUFFERS] = {
        rows * C * f, rows * C * f, rows * C * f, rows * (size_t)m->layers[0].attn.out * f, rows * (size_t)m->inner * f,
        m->bf16 ? bf16_scratch_size(B, widest) : model_is_quantized(m) ? quant_scratch_size(B, (int)widest) : 0,
        rows * H * blocks * (2 + D) * f,
        (size_t)threads * (m->multi_query ? (size_t)mq_scratch_floats(m) : ATTEND_BLOCK) * f,
        rows * i32, rows * i32, (rows + 1) * i32, (rows + 1) * i32, rows * sizeof(void *),
        (size_t)CHUNKS_PER_THREAD * (size_t)threads * rows * sizeof(Best),
    };
    size_t total = 0;
    for (int i = 0; i < N_BUFFERS; i++) total += aligned_size(sizes[i]);
    if (total > ws->size) {
        void *grown = NULL;
        if (posix_memalign(&grown, BUFFER_ALIGN, total) != 0) return -1;
        free(ws->base);
        ws->base = grown;
        ws->size = total;
    }
    char *at = (char *)ws->base;
    void *parts[N_BUFFERS];
    for (int i = 0; i < N_BUFFERS; i++) {
        parts[i] = at;
        at += aligned_size(sizes[i]);
    }
    *out = (Buffers){parts[0], parts[1], parts[2], parts[3], parts[4], parts[5],  parts[6],
                     parts[7], parts[8], parts[9], parts[10], parts[11], parts[12], parts[13]};
    return 0;
}

/* ------------------------------------------------------------------ the step */

int bigcode_decode_abi(void) { return 7; }

/* rows per group of quant_groups.h (quantized weights a group of rows at a time, Linear.group_scales), or 0
 * when this build multiplies them a row at a time */
int bigcode_quant_group_rows(void) {
#ifdef QUANT_VNNI512
    return GROUP_ROWS;
#else
    return 0;
#endif
}

/* 1 when this build's multi-query attention over bf16 caches takes bf16 pair products (attend_bf16.h; heads a
 * multiple of 32 wide), else 0: then each bf16 key and value is widened to fp32 first */
int bigcode_attention_bf16_pairs(void) {
#ifdef ATTEND_BF16
    return 1;
#else
    return 0;
#endif
}

/* 1 when this process multiplies bf16 weights on AMX tiles (amx_tiles.h), else 0 */
int bigcode_amx_tiles(void) {
#ifdef AMX_BF16
    return amx_usable();
#else
    return 0;
#endif
}

/* 1 when this process multiplies 8-bit weights by steps of several tokens on AMX tiles (amx_int8.h), else 0 */
int bigcode_amx_int8(void) {
#ifdef AMX_INT8
    return amx_usable();
#else
    return 0;
#endif
}

/* how many runs of 8-bit tile products this process made (a chunk's rows of one matrix each): what tells a
 * test that a step really took the tiles */
long bigcode_amx_int8_products(void) {
#ifdef AMX_INT8
    return atomic_load(&amx_q8_runs);
#else
    return 0;
#endif
}

/* 1 when this process's multi-query attention over bf16 caches (heads a multiple of 32 wide, at most 256)
 * forms its products on AMX tiles (amx_attend.h), else 0 */
int bigcode_amx_attention(void) {
#if defined(ATTEND_BF16) && defined(AMX_BF16)
    return amx_usable();
#else
    return 0;
#endif
}

#define MAX_STEP_ROWS 4096
#define MAX_STEP_TOKENS 16384

/* x[t] = wte[ids[t]] + wpe[pos[t]] */
static void embed_tokens(const Model *m, const int64_t *ids, const int32_t *pos, float *x, int T) {
    const int C = m->n_embd;
    for (int t = 0; t < T; t++) {
        float *row = x + (long)t * C;
        if (m->wte_quant != QUANT_NONE)
            quant_embed_row(m->wte, m->wte_scales, m->wte_quant, ids[t], C, row);
        else
            for (int i = 0; i < C; i++) row[i] = elem(m->wte, m->bf16, ids[t] * (long)C + i);
        for (int i = 0; i < C; i++) row[i] += elem(m->wpe, m->bf16, (long)pos[t] * C + i);
    }
}

/* 0 when the rows describe a step this model can take, else the status bigcode_decode_rows returns */
static int check_rows(const Model *m, int R, const int32_t *counts, const int32_t *starts, const int32_t *capacities,
                      void *const *caches, const int64_t *ids, int *tokens) {
    if (R < 1 || R > MAX_STEP_ROWS || !counts || !starts || !capacities || !caches || !ids) return -4;
    long T = 0;
    for (int r = 0; r < R; r++) {
        if (counts[r] < 1 || counts[r] > MAX_STEP_TOKENS) return -4;
        T += counts[r];
        if (T > MAX_STEP_TOKENS) return -4;
        /* positions starts[r] .. starts[r] + counts[r] - 1 must fit the row's cache and the model's context */
        if (starts[r] < 0 || capacities[r] < 1 || starts[r] > capacities[r] - counts[r] ||
            starts[r] > m->n_positions - counts[r])
            return -2;
        for (int l = 0; l < m->n_layer; l++)
            if (!caches[(long)r * m->n_layer + l]) return -5;
    }
    for (long t = 0; t < T; t++)
        if (ids[t] < 0 || ids[t] >= m->vocab) return -3;
    if (m->n_layer > 0) /* two rows writing one cache would overwrite each other's keys */
        for (int r = 0; r < R; r++)
            for (int q = r + 1; q < R; q++)
                if (caches[(long)r * m->n_layer] == caches[(long)q * m->n_layer]) return -5;
    *tokens = (int)T;
    return 0;
}

static void decode_rows(const Model *m, const Buffers *buf, int R, const int32_t *counts, const int32_t *starts,
                        void *const *caches, const int64_t *ids, int T, float *logits, int32_t *best, int last_only);

/* One step of R sequences ("rows"). Row r has its own cache: per layer l, caches[r * n_layer + l] points at
 * its memory, multi-query (capacities[r], 2D), multi-head (capacities[r], H, 2D), bf16 (kv_bf16) or
 * float32; starts[r] positions of it are filled. It gets counts[r] >= 1 new tokens (ids, rows one after
 * another, sum(counts) = T in all) at positions starts[r] .. starts[r] + counts[r] - 1, each attending to
 * the row's cached positions and to the row's new tokens before it (causal); their keys and values are
 * written to the row's cache. logits: (T, vocab) float32, or with last_only (R, vocab), each row's last
 * token's. best: NULL, or one int32 per row of logits, the index of its largest value (NumPy's argmax:
 * logits_best.h). A row's results do not depend on the other rows of the step, bit for bit.
 *
 * `workspace` comes from bigcode_workspace_new. Returns 0, or -1 when the buffers could not be allocated, -2
 * for a position outside a row's cache or the model's context, -3 for a token id outside the vocabulary, -4
 * for a row or token count out of range, -5 for a missing cache or two rows given the same one; on any
 * error nothing (cache, logits) was written. Safe to call from several threads: steps run one at a time. */
int bigcode_decode_rows(const Model *m, void *workspace, int R, const int32_t *counts, const int32_t *starts,
                        const int32_t *capacities, void *const *caches, const int64_t *ids, float *logits,
                        int32_t *best, int last_only, int threads) {
    if (!workspace) return -4;
    int T = 0;
    const int problem = check_rows(m, R, counts, starts, capacities, caches, ids, &T);
    if (problem != 0) return problem;
    int longest = 0;
    for (int r = 0; r < R; r++) longest = starts[r] + counts[r] > longest ? starts[r] + counts[r] : longest;
    pthread_mutex_lock(&step_lock);
    ensure_workers(threads < 1 ? 1 : threads);
    Buffers buf;
    int status = reserve((Workspace *)workspace, m, T, longest, atomic_load(&pool.active), &buf);
    if (status == 0) decode_rows(m, &buf, R, counts, starts, caches, ids, T, logits, best, last_only);
    pthread_mutex_unlock(&step_lock);
    return status;
}

static void decode_rows(const Model *m, const Buffers *buf, int R, const int32_t *counts, const int32_t *starts,
                        void *const *caches, const int64_t *ids, int T, float *logits, int32_t *best, int last_only) {
    const int C = m->n_embd;
    float *x = buf->x, *h = buf->h, *att = buf->att, *qkv = buf->qkv, *f = buf->f;
    int longest = 0;
    for (int r = 0, t = 0; r < R; r++)
        for (int j = 0; j < counts[r]; j++, t++) {
            buf->pos[t] = starts[r] + j;
            buf->length[t] = starts[r] + j + 1; /* its cached positions, the row's earlier new tokens, itself */
            longest = buf->length[t] > longest ? buf->length[t] : longest;
        }
    embed_tokens(m, ids, buf->pos, x, T);
    for (int l = 0; l < m->n_layer; l++) {
        const Layer *L = &m->layers[l];
        for (int r = 0, t = 0; r < R; r++)
            for (int j = 0; j < counts[r]; j++, t++) buf->cache[t] = caches[(long)r * m->n_layer + l];
        for (int t = 0; t < T; t++) layer_norm(x + (long)t * C, h + (long)t * C, C, L->ln1_w, L->ln1_b, m->eps);
        gemv(&L->attn, h, buf->xb, qkv, T, OUT_STORE, 0, m->bf16, NULL);
        write_cache(m, qkv, buf->cache, buf->pos, T); /* every new key first: a row's later tokens read them */
        attend(m, qkv, buf->cache, buf->length, buf->first_chunk, buf->group_first, buf->partial, buf->scores, att, T,
               longest);
        gemv(&L->proj, att, buf->xb, x, T, OUT_ADD, 0, m->bf16, NULL);
        for (int t = 0; t < T; t++) layer_norm(x + (long)t * C, h + (long)t * C, C, L->ln2_w, L->ln2_b, m->eps);
        gemv(&L->fc, h, buf->xb, f, T, OUT_ACT, m->activation, m->bf16, NULL);
        gemv(&L->mlp_proj, f, buf->xb, x, T, OUT_ADD, 0, m->bf16, NULL);
    }
    int out_rows = T;
    if (last_only) { /* the residual rows of each row's last token, in row order */
        out_rows = R;
        for (int r = 0, t = 0; r < R; r++) {
            t += counts[r];
            layer_norm(x + (long)(t - 1) * C, h + (long)r * C, C, m->lnf_w, m->lnf_b, m->eps);
        }
    } else {
        for (int t = 0; t < T; t++) layer_norm(x + (long)t * C, h + (long)t * C, C, m->lnf_w, m->lnf_b, m->eps);
    }
    const Argmax argmax = {buf->best_parts, best};
    gemv(&m->lm_head, h, buf->xb, logits, out_rows, OUT_STORE, 0, m->bf16, best ? &argmax : NULL);
}
