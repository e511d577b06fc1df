/* The near-duplicate signatures of pipeline/near_duplicates.py in C: the same values, bit for bit, as its numpy
 * and datasketch path (signatures_reference), which stays the reference. Plain C99, no Python headers:
 * pipeline/smf_native.py builds it with the system C compiler and near_duplicates.py calls it through ctypes.
 *
 * near_signatures takes one file's parts, their notes concatenated part after part (onsets and pitches, int64,
 * lengths[k] notes for part k), and for each part in order:
 *   1. its top line: the highest pitch at each distinct onset, in onset order (onsets in any order);
 *   2. its shingles: each run of `intervals` successive pitch intervals of the top line with at least
 *      `min_distinct` distinct values, hashed to 32 bits: h = sum of (interval + 128) * 1000003^(intervals-1-k)
 *      over the run's intervals k, wrapping mod 2^64, then folded, (h ^ h >> 32) mod 2^32;
 *   3. where it has at least `min_shingles` distinct shingles, its MinHash signature by datasketch's "affine32"
 *      scheme (datasketch 2.0, minhash.py): each shingle mixed by the MurmurHash3 32-bit finalizer, then
 *      phv_p = a[p] * x + b[p] mod 2^32 for each permutation p, the signature being the minimum of phv_p over
 *      the part's shingles (2^32 - 1 where it has none).
 * The signatures go to out, one row of num_perm values per part kept, in part order; *kept is their number.
 *
 * Pitches must lie in 0..255 (what smf.read gives, 0..127, and more): outside it the reference's packed sort key
 * no longer orders by pitch, and this returns NEAR_PITCH_RANGE for the caller to run the reference instead.
 * Nothing is read outside onset/pitch[0, n_notes), lengths[0, n_parts), a/b[0, num_perm), nor written outside
 * out[0, out_rows * num_perm); the sizes are checked first (NEAR_BAD_SIZE). Scratch memory is allocated here
 * and freed before returning (NEAR_NO_MEMORY where it cannot be had).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { NEAR_OK = 0, NEAR_BAD_SIZE = 1, NEAR_NO_MEMORY = 2, NEAR_PITCH_RANGE = 3 };

#define HASH_BASE 1000003u  /* the polynomial hash's base, as in near_duplicates._shingle_sets */

typedef struct {
    int64_t onset, pitch;
} note_t;

static int by_onset(const void *x, const void *y) {
    int64_t a = ((const note_t *)x)->onset, b = ((const note_t *)y)->onset;
    return (a > b) - (a < b);
}

/* MurmurHash3's 32-bit finalizer (fmix32), the bijection datasketch applies before the permutations. */
static uint32_t fmix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

/* The highest pitch at each distinct onset of n notes sorted by onset (n >= 1), into line[]; returns how many.
 * Without a data-dependent branch (which onsets repeat is as good as random to the branch predictor): line[m]
 * takes the running maximum at every note and is overwritten until the onset changes. */
static int64_t group_maxima(const int64_t *onset, const int64_t *pitch, int64_t n, int64_t *line) {
    int64_t m = 0, top = pitch[0];
    for (int64_t i = 1; i < n; i++) {
        const int64_t next = onset[i] != onset[i - 1];
        line[m] = top;
        m += next;
        top = next || pitch[i] > top ? pitch[i] : top;
    }
    line[m] = top;
    return m + 1;
}

/* The top line of one part's n notes into line[]: the highest pitch at each distinct onset, in onset order; its
 * length is returned. Notes whose onsets are out of order (never so from smf.read) are sorted first, through
 * `sorted` and then `t` and `p` (n rows each): any sort will do, as only each onset's highest pitch is kept. */
static int64_t top_line(const int64_t *onset, const int64_t *pitch, int64_t n, note_t *sorted, int64_t *t,
                        int64_t *p, int64_t *line) {
    int64_t i, unsorted = 0;
    if (n == 0) return 0;
    for (i = 1; i < n; i++) unsorted |= onset[i] < onset[i - 1];  /* no early exit: the loop vectorises */
    if (!unsorted) return group_maxima(onset, pitch, n, line);
    for (i = 0; i < n; i++) {
        sorted[i].onset = onset[i];
        sorted[i].pitch = pitch[i];
    }
    qsort(sorted, (size_t)n, sizeof *sorted, by_onset);
    for (i = 0; i < n; i++) {
        t[i] = sorted[i].onset;
        p[i] = sorted[i].pitch;
    }
    return group_maxima(t, p, n, line);
}

/* The MinHash signature of the n distinct mixed shingles x (the minimum of a[p] * x + b[p] mod 2^32 per
 * permutation p) into sig. Four shingles per pass over the permutations, so that each permutation's a, b and
 * running minimum are loaded once for four; the inner loop has no dependence between p's, so the compiler can
 * vectorise it. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && __GNUC__ >= 12
/* GCC on x86-64 Linux: a copy of the loop for AVX2 and one for SSE4.1 (their 32-bit multiply and unsigned
 * minimum), besides the baseline's SSE2, the CPU's best picked when the library loads (an ifunc), so that one
 * build serves every x86-64 machine that shares the cache folder */
__attribute__((target_clones("arch=x86-64-v3", "arch=x86-64-v2", "default")))
#endif
static void minhash(const uint32_t *restrict x, int64_t n, const uint32_t *restrict a,
                    const uint32_t *restrict b, int64_t num_perm, uint32_t *restrict sig) {
    int64_t i = 0, p;
    for (p = 0; p < num_perm; p++) sig[p] = UINT32_MAX;
    for (; i + 4 <= n; i += 4) {
        const uint32_t x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3];
        for (p = 0; p < num_perm; p++) {
            uint32_t m = sig[p], v;
            v = a[p] * x0 + b[p]; m = v < m ? v : m;
            v = a[p] * x1 + b[p]; m = v < m ? v : m;
            v = a[p] * x2 + b[p]; m = v < m ? v : m;
            v = a[p] * x3 + b[p]; m = v < m ? v : m;
            sig[p] = m;
        }
    }
    for (; i < n; i++) {
        const uint32_t x0 = x[i];
        for (p = 0; p < num_perm; p++) {
            uint32_t v = a[p] * x0 + b[p];
            sig[p] = v < sig[p] ? v : sig[p];
        }
    }
}

/* The shingle runs a part of n notes can have at most: one per note past the first `intervals`. */
static int64_t max_runs(int64_t n, int64_t intervals) {
    return n > intervals ? n - intervals : 0;
}

int near_signatures(const int64_t *onset, const int64_t *pitch, int64_t n_notes, const int64_t *lengths,
                    int64_t n_parts, int64_t intervals, int64_t min_distinct, int64_t min_shingles,
                    const uint32_t *a, const uint32_t *b, int64_t num_perm, uint32_t *out, int64_t out_rows,
                    int64_t *kept) {
    int64_t total = 0, longest = 0, runs_cap, k, i;
    *kept = 0;
    if (n_notes < 0 || n_parts < 0 || n_parts >= (int64_t)UINT32_MAX || intervals < 1 || num_perm < 1 ||
        out_rows < 0)
        return NEAR_BAD_SIZE;
    for (k = 0; k < n_parts; k++) {
        if (lengths[k] < 0 || lengths[k] > n_notes - total) return NEAR_BAD_SIZE;
        total += lengths[k];
        if (lengths[k] > longest) longest = lengths[k];
    }
    if (total != n_notes) return NEAR_BAD_SIZE;
    uint64_t wide = 0;
    for (i = 0; i < n_notes; i++) wide |= (uint64_t)pitch[i];  /* 0..255 unless a bit past the 8th is set */
    if (wide > 255) return NEAR_PITCH_RANGE;
    runs_cap = max_runs(longest, intervals);

    /* scratch, sized for the longest part: its sorted notes (where out of order: as structs, then as columns),
     * its top line and intervals, its distinct mixed shingles, and an open-addressing set of them (at most half
     * full) whose slots are marked with the part's number + 1, so that it needs no clearing between parts */
    if ((uint64_t)longest > (SIZE_MAX / 128)) return NEAR_NO_MEMORY;  /* the sizes below cannot wrap */
    size_t slots = 1;
    while (slots < 2 * (size_t)runs_cap) slots <<= 1;
    const size_t n = (size_t)longest, mask = slots - 1;
    const size_t bytes = n * sizeof(note_t) + 4 * n * sizeof(int64_t) + (size_t)runs_cap * sizeof(uint32_t) +
                         2 * slots * sizeof(uint32_t);
    void *block = malloc(bytes ? bytes : 1);
    if (!block) return NEAR_NO_MEMORY;
    note_t *sorted = block;
    int64_t *t = (int64_t *)(sorted + n), *p = t + n, *line = p + n, *steps = line + n;
    uint32_t *uniq = (uint32_t *)(steps + n), *slot_key = uniq + runs_cap, *slot_mark = slot_key + slots;
    memset(slot_mark, 0, slots * sizeof(uint32_t));

    /* B^(intervals - 1) mod 2^64: what the run's first interval weighs in its hash, taken out as the run slides */
    uint64_t lead = 1;
    for (i = 1; i < intervals; i++) lead *= HASH_BASE;

    int64_t at = 0;
    int rc = NEAR_OK;
    for (k = 0; k < n_parts; at += lengths[k], k++) {
        /* a part with fewer possible runs than min_shingles cannot get a signature: skipped unread */
        if (max_runs(lengths[k], intervals) < min_shingles) continue;
        const int64_t m = top_line(onset + at, pitch + at, lengths[k], sorted, t, p, line);
        int64_t u = 0;
        const uint32_t mark = (uint32_t)k + 1;
        for (i = 0; i + 1 < m; i++) steps[i] = line[i + 1] - line[i];  /* -255..255: pitches are 0..255 */
        /* the run slides along the intervals: its hash and its count of each interval value (so of distinct
         * ones) updated by the interval that leaves and the one that enters, not recomputed over the run */
        int32_t count[511] = {0};
        int64_t distinct = 0;
        uint64_t h = 0;
        for (i = 0; i < intervals && i < m - 1; i++) {
            distinct += count[steps[i] + 255]++ == 0;
            h = h * HASH_BASE + (uint64_t)(steps[i] + 128);
        }
        for (i = 0; i + intervals < m; i++) {
            if (i > 0) {
                const int64_t out_step = steps[i - 1], in_step = steps[i + intervals - 1];
                distinct -= --count[out_step + 255] == 0;
                distinct += count[in_step + 255]++ == 0;
                h = (h - (uint64_t)(out_step + 128) * lead) * HASH_BASE + (uint64_t)(in_step + 128);
            }
            if (distinct < min_distinct) continue;
            /* fmix32 is a bijection: distinct shingles stay distinct, and x is well mixed for the set */
            const uint32_t x = fmix32((uint32_t)(h ^ (h >> 32)));
            size_t s = x & mask;
            while (slot_mark[s] == mark && slot_key[s] != x) s = (s + 1) & mask;
            if (slot_mark[s] != mark) {
                slot_mark[s] = mark;
                slot_key[s] = x;
                uniq[u++] = x;
            }
        }
        if (u < min_shingles) continue;
        if (*kept >= out_rows) {
            rc = NEAR_BAD_SIZE;
            break;
        }
        minhash(uniq, u, a, b, num_perm, out + *kept * num_perm);
        ++*kept;
    }
    free(block);
    return rc;
}
