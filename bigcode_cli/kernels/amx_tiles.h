/* Intel's AMX tiles (Xeon 4th generation and later): whether this process may use them, and their
 * configuration, for decode_step.c's tile products (amx_bf16.h; included there, once, where the compiler
 * targets AMX).
 *
 * Linux hands out the tile registers only to a process that asks (arch_prctl ARCH_REQ_XCOMP_PERM). Where that
 * fails (an older kernel, a hypervisor that hides them) or BIGCODE_AMX is 0 (false, no, off), every product stays on the
 * vector path. The decision is made once and holds for the life of the process: a format's products go
 * one way for every step, which keeps each row's result the same alone or in company (batch invariance).
 * Each run of tile products loads its configuration and releases the tiles after: other code on the same
 * threads (PyTorch's oneDNN matmuls) uses and releases them too.
 */

#include <immintrin.h> /* the tile intrinsics, whatever else the target has (decode_step.c includes it only for BF16) */
#include <sys/syscall.h>
#include <unistd.h>

#define AMX_ROWS 16   /* weight rows (outputs) of a tile product */
#define AMX_TOKENS 16 /* token rows of a tile product */

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} TileConfig;

static _Atomic int amx_state; /* 0: not decided, 1: usable, -1: not */

/* whether an environment setting says no: 0, false, no or off, in any case, spaces around (as the Python side
 * reads BIGCODE_CPU_KERNEL) */
static int is_blank(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

static int setting_is_off(const char *setting) {
    if (!setting) return 0;
    while (is_blank(*setting)) setting++;
    char word[64];
    size_t n = 0;
    for (; setting[n] && n < sizeof word - 1; n++) word[n] = (char)(setting[n] >= 'A' && setting[n] <= 'Z' ? setting[n] + 32 : setting[n]);
    if (setting[n]) return 0; /* longer than any of the words with any blanks a person would type */
    while (n > 0 && is_blank(word[n - 1])) n--;
    word[n] = 0;
    return strcmp(word, "0") == 0 || strcmp(word, "false") == 0 || strcmp(word, "no") == 0 || strcmp(word, "off") == 0;
}

/* whether this process multiplies on tiles: decided at the first call, the same ever after */
static __attribute__((unused)) int amx_usable(void) {
    int state = atomic_load(&amx_state);
    if (state == 0) {
        int usable = !setting_is_off(getenv("BIGCODE_AMX"));
        if (usable) usable = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
        int expected = 0;
        atomic_compare_exchange_strong(&amx_state, &expected, usable ? 1 : -1);
        state = atomic_load(&amx_state);
    }
    return state == 1;
}

static inline void amx_load_config(const TileConfig *config) { _tile_loadconfig(config); }
