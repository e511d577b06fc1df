/* prepare's per-file measures of notes in C: the off-grid counts behind the timing class (quality.py), the
 * content hash's (onset step, pitch) pairs (dedupe.py) and a sequence's quality measures (quality.py). Each has
 * its numpy reference in those modules, which stays the rule; pipeline/measures_native.py builds this with the
 * system C compiler and calls it through ctypes. Plain C99, no Python headers; the caller allocates everything.
 *
 * Exactness. Integers (counts, pairs) are the reference's exactly. Floats are computed with the same IEEE
 * operations in the same order (t / tpq, the window of each onset, the same differences and maxima); sums
 * follow numpy's pairwise summation (numpy/_core/src/umath/loops_utils.h.src, pairwise_sum: 8 accumulators,
 * blocks of 128), so they match the reference bit for bit, except where a logarithm is taken: numpy may use
 * its own SIMD log2, which can differ from the C library's in the last bit (tests allow 1e-12).
 * Built without -ffast-math and in ISO C mode, where GCC does not contract a * b + c into one rounding.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

/* radix_sort comes from pipeline/radix_sort.c, which pipeline/native.py puts before this text */

enum { MEASURES_OK = 0, MEASURES_RANGE = 1 };

/* rint(x) for x >= 0: adding and taking away 2^52 leaves x rounded to an integer in the current rounding mode
 * (to nearest, ties to even: rint's), without a call into the C library (which rint is, short of SSE4.1). The
 * compiler keeps the two roundings: without -ffast-math it may not reassociate floating-point sums. */
static double rint_nonneg(double x) {
    const double big = 4503599627370496.0; /* 2^52 */
    return x < big ? (x + big) - big : rint(x);
}

/* numpy's pairwise sum of a[0, n) (float64, unit stride) */
static double pairwise_sum(const double *a, int64_t n) {
    if (n < 8) {
        double res = 0.;
        for (int64_t i = 0; i < n; i++) res += a[i];
        return res;
    }
    if (n <= 128) {
        double r[8], res;
        int64_t i;
        for (int j = 0; j < 8; j++) r[j] = a[j];
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    int64_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

/* quality.off_grid_shares' counts: for each of n_parts parts (lengths[k] onsets each, concatenated), how many
 * onsets (ticks) lie on none of the grids (grids[g] > 0 points a quarter note, each point rounded to the nearest
 * tick: rint(rint(t * g / tpq) * tpq / g) == t, as the reference computes it). Writes off[n_parts].
 * MEASURES_RANGE for an onset outside 0..2^50 (t * g would leave the doubles' exact integers). */
int off_grid_counts(const int64_t *onset, const int64_t *lengths, int64_t n_parts, int64_t tpq, const int64_t *grids,
                    int64_t n_grids, int64_t *off) {
    const int64_t *t = onset;
    int64_t n = 0;
    for (int64_t k = 0; k < n_parts; k++) n += lengths[k];
    for (int64_t i = 0; i < n; i++)
        if (t[i] < 0 || t[i] > ((int64_t)1 << 50)) return MEASURES_RANGE;
    for (int64_t k = 0; k < n_parts; k++) {
        int64_t n_off = 0;
        for (int64_t i = 0; i < lengths[k]; i++) {
            int on = 0;
            for (int64_t g = 0; g < n_grids && !on; g++) {
                if (tpq % grids[g] == 0) {
                    /* whole ticks a grid step: the nearest grid point is t itself exactly when the step divides
                     * t (the float route below gives the same answer, more slowly) */
                    on = t[i] % (tpq / grids[g]) == 0;
                    continue;
                }
                double x = rint(rint((double)(t[i] * grids[g]) / (double)tpq) * (double)tpq / (double)grids[g]);
                on = (int64_t)x == t[i];
            }
            n_off += !on;
        }
        off[k] = n_off;
        t += lengths[k];
    }
    return MEASURES_OK;
}

/* dedupe.content_hash_of's sorted set of (onset step, pitch) pairs: onsets (ticks) and pitches of n_parts parts
 * (lengths[k] notes each, concatenated), is_drum[k] for each; the step nearest t * steps / tpq, less the first;
 * pitches shifted by drum_offset for drum parts, else down by the lowest pitched note (when transpose_invariant);
 * pair = step * 512 + shifted pitch. Writes the distinct pairs ascending to pairs[0, *count)
 * and their largest to *largest. MEASURES_RANGE where a step or pair would not fit the reference's arithmetic
 * (a step past 2^40, a pitch outside 0..255): the caller runs the reference. scratch: n int64 values. */
int content_pairs(const int64_t *onset, const int64_t *pitch, const int64_t *lengths, const uint8_t *is_drum,
                  int64_t n_parts, int64_t tpq, int64_t steps, int64_t transpose_invariant, int64_t drum_offset,
                  int64_t *pairs, int64_t *scratch, int64_t *count, int64_t *largest) {
    int64_t n = 0, low = INT64_MAX;
    *count = 0;
    *largest = 0;
    for (int64_t k = 0; k < n_parts; k++) n += lengths[k];
    if (n == 0) return MEASURES_OK;
    double first = INFINITY;
    double *step = (double *)scratch;  /* each note's step until the pairs are made, then the sort's */
    for (int64_t i = 0; i < n; i++) {
        double x = (double)onset[i] * (double)steps / (double)tpq;
        step[i] = x >= 0 ? rint_nonneg(x) : rint(x);
        if (step[i] < first) first = step[i];
    }
    const int64_t *p = pitch;
    for (int64_t k = 0; k < n_parts; k++) {
        for (int64_t i = 0; i < lengths[k]; i++) {
            if (p[i] < 0 || p[i] > 255) return MEASURES_RANGE;
            if (!is_drum[k] && p[i] < low) low = p[i];
        }
        p += lengths[k];
    }
    if (low == INT64_MAX || !transpose_invariant) low = 0;
    int64_t at = 0;
    for (int64_t k = 0; k < n_parts; k++) {
        int64_t shift = is_drum[k] ? drum_offset : -low;
        for (int64_t i = 0; i < lengths[k]; i++, at++) {
            double s = step[at] - first;
            if (!(s >= 0 && s < 1099511627776.0)) return MEASURES_RANGE;  /* 2^40 */
            pairs[at] = (int64_t)s * 512 + pitch[at] + shift;
        }
    }
    radix_sort((uint64_t *)pairs, NULL, (uint64_t *)scratch, NULL, n);
    int64_t m = 1;
    for (int64_t i = 1; i < n; i++)
        if (pairs[i] != pairs[m - 1]) pairs[m++] = pairs[i];
    *count = m;
    *largest = pairs[m - 1];
    return MEASURES_OK;
}

/* The JSD term of quality.chunk_divergence for one pair of successive windows' pitch counts (128 each, totals
 * np and nq): (KL(p || m) + KL(q || m)) / 2 in bits, m = (p + q) / 2, each KL summed over the 128 keys as numpy
 * sums a row. */
static double jsd(const int64_t *cp, int64_t np_, const int64_t *cq, int64_t nq) {
    double p[128], q[128], m[128], a[128], b[128];
    for (int k = 0; k < 128; k++) {
        p[k] = (double)cp[k] / (double)np_;
        q[k] = (double)cq[k] / (double)nq;
        m[k] = (p[k] + q[k]) / 2;
    }
    for (int k = 0; k < 128; k++) {
        a[k] = p[k] > 0 ? p[k] * log2(p[k] / m[k]) : 0.0;
        b[k] = q[k] > 0 ? q[k] * log2(q[k] / m[k]) : 0.0;
    }
    return (pairwise_sum(a, 128) + pairwise_sum(b, 128)) / 2;
}

/* quality.measures of one sequence: n notes (onset and release ticks, pitches; pitched[i] 0 for a drum note),
 * tpq ticks a quarter note, windows of `window` beats. out: [0] span in beats, [1] pitch-class entropy of the
 * pitched notes (bits; NAN without any), [2] longest silence (beats), [3] onsets per beat in the densest window,
 * [4] chunk divergence of the pitched notes (bits; NAN with fewer than two windows holding pitched notes).
 * scratch: 5n + 256 int64 values. MEASURES_RANGE where an onset is negative or past 2^62 (the reference's float
 * windows are still exact there, this sort's keys are not), or a pitch is negative. */
int sequence_measures(const int64_t *start, const int64_t *end, const int64_t *pitch, const uint8_t *pitched,
                      int64_t n, int64_t tpq, double window, double *out, int64_t *scratch) {
    for (int j = 0; j < 5; j++) out[j] = NAN;
    if (n == 0) {
        out[0] = out[2] = out[3] = 0.0;
        return MEASURES_OK;
    }
    uint64_t *key = (uint64_t *)scratch, *tmp_k = (uint64_t *)scratch + n;
    int64_t *idx = scratch + 2 * n, *tmp_i = scratch + 3 * n;
    double *jsds = (double *)(scratch + 4 * n);
    int64_t *counts = scratch + 5 * n;  /* two windows of 128 keys */
    for (int64_t i = 0; i < n; i++) {
        if (start[i] < 0 || start[i] >= ((int64_t)1 << 62) || pitch[i] < 0) return MEASURES_RANGE;
        key[i] = (uint64_t)start[i];
        idx[i] = i;
    }
    radix_sort(key, idx, tmp_k, tmp_i, n);  /* the notes by onset (ties in any order: no measure depends on it) */
    double first = (double)start[idx[0]] / (double)tpq, last_end = -INFINITY, reach = -INFINITY, silence = 0.0;
    int64_t pc[12] = {0}, n_pitched = 0, run = 0, most = 0, w_prev = -1;
    double first_pitched = NAN;
    for (int64_t r = 0; r < n; r++) {
        int64_t i = idx[r];
        double s = (double)start[i] / (double)tpq, e = (double)end[i] / (double)tpq;
        if (e > last_end) last_end = e;
        if (r > 0 && s - reach > silence) silence = s - reach;  /* the gap after the notes begun so far */
        if (e > reach) reach = e;
        double at = (s - first) / window;
        if (at >= 4e18) return MEASURES_RANGE;  /* past int64: the reference's own overflow, not repeated here */
        int64_t w = (int64_t)at;  /* >= 0: truncation is floor */
        run = w == w_prev ? run + 1 : 1;
        w_prev = w;
        if (run > most) most = run;
        if (pitched[i]) {
            pc[pitch[i] % 12]++;
            if (!n_pitched) first_pitched = s;
            n_pitched++;
        }
    }
    out[0] = last_end - first;
    out[2] = silence;
    out[3] = (double)most / window;
    if (n_pitched) {
        double terms[12];
        int k = 0;
        for (int c = 0; c < 12; c++)
            if (pc[c]) {
                double p = (double)pc[c] / (double)n_pitched;
                terms[k++] = p * log2(1 / p);
            }
        out[1] = pairwise_sum(terms, k);
        /* chunk divergence: windows counted from the first pitched onset, successive windows that hold notes */
        int64_t *prev = counts, *cur = counts + 128, n_prev = 0, n_cur = 0, w_cur = -1, pairs = 0;
        memset(counts, 0, 256 * sizeof *counts);
        for (int64_t r = 0; r < n; r++) {
            int64_t i = idx[r];
            if (!pitched[i]) continue;
            /* >= 0 and below 4e18, as above (no later onset than the last, no earlier than the first pitched) */
            int64_t w = (int64_t)(((double)start[i] / (double)tpq - first_pitched) / window);
            if (w != w_cur) {
                if (n_cur) {
                    if (n_prev) jsds[pairs++] = jsd(prev, n_prev, cur, n_cur);
                    int64_t *t = prev; prev = cur; cur = t;
                    n_prev = n_cur;
                    memset(cur, 0, 128 * sizeof *cur);
                    n_cur = 0;
                }
                w_cur = w;
            }
            cur[pitch[i] & 127]++;
            n_cur++;
        }
        if (n_prev) jsds[pairs++] = jsd(prev, n_prev, cur, n_cur);
        if (pairs) out[4] = pairwise_sum(jsds, pairs) / (double)pairs;
    }
    return MEASURES_OK;
}
