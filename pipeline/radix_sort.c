/* A stable LSD radix sort shared by the pipeline's C libraries: pipeline/native.py puts this text before the
 * source of each library whose Native lists it (smf_events.c, note_measures.c), so it is compiled into each, and
 * the library's digest covers it. Plain C99. */
#include <stdint.h>
#include <string.h>

/* Stable LSD radix sort of n keys (8 bits a pass) carrying idx along (or nothing, where idx is NULL); tmp_k and
 * tmp_i: n values each, scratch. Bytes that are the same in every key are neither counted nor sorted on. The
 * result ends in key and idx. */
static void radix_sort(uint64_t *key, int64_t *idx, uint64_t *tmp_k, int64_t *tmp_i, int64_t n) {
    int64_t count[8][256];
    uint64_t *from_k = key, *to_k = tmp_k, differ = 0;
    int64_t *from_i = idx, *to_i = tmp_i;
    int bytes[8], n_bytes = 0;
    if (n < 2) return;
    for (int64_t i = 0; i < n; i++) differ |= key[i] ^ key[0];
    for (int b = 0; b < 8; b++)
        if ((differ >> (8 * b)) & 0xFF) bytes[n_bytes++] = b;
    memset(count, 0, sizeof count);
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < n_bytes; j++) count[j][(key[i] >> (8 * bytes[j])) & 0xFF]++;
    for (int j = 0; j < n_bytes; j++) {
        int shift = 8 * bytes[j];
        int64_t *c = count[j], sum = 0;
        for (int v = 0; v < 256; v++) {
            int64_t k = c[v];
            c[v] = sum;
            sum += k;
        }
        for (int64_t i = 0; i < n; i++) {
            int64_t at = c[(from_k[i] >> shift) & 0xFF]++;
            to_k[at] = from_k[i];
            if (idx) to_i[at] = from_i[i];
        }
        uint64_t *sk = from_k; from_k = to_k; to_k = sk;
        int64_t *si = from_i; from_i = to_i; to_i = si;
    }
    if (from_k != key) {
        memcpy(key, from_k, n * sizeof *key);
        if (idx) memcpy(idx, from_i, n * sizeof *idx);
    }
}

