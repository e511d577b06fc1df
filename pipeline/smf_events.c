/* The event pass of pipeline/smf.py's read(), in C: the same rules as its Python loop (_events_python), which
 * stays the reference, byte for byte. Plain C99, no Python headers: pipeline/smf_native.py builds it with the
 * system C compiler and calls it through ctypes.
 *
 * smf_events scans every track chunk of a Standard MIDI File and writes what it finds into the caller's arena:
 * the tables below one after another, table t holding caps[t] rows of WIDTH[t] int64 values, in the order the
 * Python loop appends them (so that stable sorts downstream see the same ties). Nothing is allocated here, and
 * nothing is read outside data[0, len) or written outside a table's caps[t] rows.
 *
 * counts[IRREGULAR] collects IRREGULAR_* bits: what the standard does not allow but this pass reads on through by
 * its rules (a caller that wants a stricter parser's verdict asks it only for such files).
 *
 * Returns SMF_OK; SMF_INVALID_EVENT with the offending data byte in counts[BAD_BYTE]; or SMF_RANGE where it
 * cannot give the Python loop's answer: a tick past int64 (the Python loop's ticks are exact integers) or a
 * table full (the caller's capacities are upper bounds, so this is only a guard). The caller then runs the
 * Python loop.
 */
#include <stdint.h>
#include <string.h>

/* radix_sort comes from pipeline/radix_sort.c, which pipeline/native.py puts before this text */

enum { SMF_OK = 0, SMF_INVALID_EVENT = 1, SMF_RANGE = 2 };

/* The arena's tables, and their rows:
 * NOTES (track, channel, pitch, start tick, end tick, velocity); PROGRAMS (tick, track, channel, program);
 * PEDALS (tick, track, channel, down 0/1); TEMPOS (tick, microseconds per quarter);
 * SIGS (tick, numerator, denominator exponent); NAMES, one per track chunk (offset of its last track name in
 * data, or -1 where it has none; length in bytes); PENDING, scratch: note-ons waiting for their note-off
 * (tick, velocity, index of the next one of the same key, or -1). */
enum { NOTES, PROGRAMS, PEDALS, TEMPOS, SIGS, NAMES, PENDING, N_TABLES };
static const int64_t WIDTH[N_TABLES] = {6, 4, 4, 2, 3, 2, 3};

/* counts[]: rows written per output table (NOTES .. NAMES: the last is the number of track chunks), then: */
enum { NOTE_ONS = NAMES + 1, RECOVERED, END_TICK, BAD_BYTE, IRREGULAR, N_COUNTS };

/* The IRREGULAR bits (pipeline/smf.py names them too) */
enum {
    IRREGULAR_CHUNK_PAST_END = 1,     /* a chunk's length runs past the end of the file */
    IRREGULAR_FOREIGN_CHUNK = 2,      /* a chunk that is not MTrk, or bytes after the last chunk */
    IRREGULAR_CUT_EVENT = 4,          /* a track chunk ends inside an event, or a meta or sysex runs past it */
    IRREGULAR_UNKNOWN_STATUS = 8,     /* a status byte 0xF1-0xF6 or 0xF8-0xFE */
    IRREGULAR_DATA_OVER_127 = 16,     /* a data byte of a channel message with its top bit set */
    IRREGULAR_STATUS_AFTER_META = 32, /* running status carried over a meta or sysex event */
    IRREGULAR_LONG_NUMBER = 64,       /* a variable-length number of more than 4 bytes */
    IRREGULAR_ESCAPE = 256            /* an F7 escape or sysex continuation: legal, but symusic 0.6 does not skip it
                                       * by its length and can lose its place after one */
};

/* A FIFO of pending note-ons per (channel << 7 | key byte). The key byte is taken whole, as the Python loop
 * takes it: a data byte over 127 ORs into the channel bits, so the space is 2048 keys, not 16 * 128. */
#define KEYS 2048

/* A meta or sysex length is clamped here, far beyond any buffer: past this, only "larger than the data" matters
 * (where it ends the track), and (SIZE_CAP << 7) | 0x7F still fits in int64. */
#define SIZE_CAP ((int64_t)1 << 55)

typedef struct {
    int64_t *table[N_TABLES];
    int64_t cap[N_TABLES];
    int64_t n[N_TABLES];
} arena_t;

typedef struct {
    int64_t head[KEYS], tail[KEYS];  /* PENDING rows, -1 for none */
    int16_t order[KEYS];             /* the keys in the order of their first note-on in the track */
    uint8_t seen[KEYS];
    int n_keys;
} queues_t;

/* The next free row of table t, or NULL when it is full. */
static int64_t *row(arena_t *a, int t) {
    if (a->n[t] >= a->cap[t]) return NULL;
    return a->table[t] + WIDTH[t] * a->n[t]++;
}

static int add_note(arena_t *a, int64_t track, int64_t channel, int64_t pitch, int64_t start, int64_t end,
                    int64_t velocity) {
    int64_t *r = row(a, NOTES);
    if (!r) return SMF_RANGE;
    r[0] = track; r[1] = channel; r[2] = pitch; r[3] = start; r[4] = end; r[5] = velocity;
    return SMF_OK;
}

static int add4(arena_t *a, int t, int64_t v0, int64_t v1, int64_t v2, int64_t v3) {
    int64_t *r = row(a, t);
    if (!r) return SMF_RANGE;
    r[0] = v0; r[1] = v1;
    if (WIDTH[t] > 2) r[2] = v2;
    if (WIDTH[t] > 3) r[3] = v3;
    return SMF_OK;
}

/* Queue a note-on at the back of its key's FIFO. */
static int push(arena_t *a, queues_t *q, int key, int64_t tick, int64_t velocity) {
    int64_t k = a->n[PENDING];
    if (add4(a, PENDING, tick, velocity, -1, 0) != SMF_OK) return SMF_RANGE;
    if (!q->seen[key]) {
        q->seen[key] = 1;
        q->order[q->n_keys++] = (int16_t)key;
    }
    if (q->head[key] < 0) q->head[key] = k;
    else a->table[PENDING][3 * q->tail[key] + 2] = k;
    q->tail[key] = k;
    return SMF_OK;
}

/* The note-ons never released, per key in first-seen order, each ending at its key's next onset, else at `last`;
 * the queues are left empty for the next track. */
static int recover(arena_t *a, queues_t *q, int64_t track, int64_t last, int64_t *recovered) {
    const int64_t *p = a->table[PENDING];
    for (int k = 0; k < q->n_keys; k++) {
        int key = q->order[k];
        for (int64_t e = q->head[key]; e >= 0; e = p[3 * e + 2]) {
            int64_t next = p[3 * e + 2];
            if (add_note(a, track, key >> 7, key & 0x7F, p[3 * e], next >= 0 ? p[3 * next] : last, p[3 * e + 1]))
                return SMF_RANGE;
            ++*recovered;
        }
        q->head[key] = q->tail[key] = -1;
        q->seen[key] = 0;
    }
    q->n_keys = 0;
    a->n[PENDING] = 0;
    return SMF_OK;
}

/* One track chunk's events, data[pos, end), running status applied; a truncated final event ends the track. */
static int track_events(const uint8_t *d, int64_t len, int64_t pos, int64_t end, int64_t track, arena_t *a,
                        queues_t *q, int64_t *counts) {
    int64_t tick = 0, last = 0, name_at = -1, name_len = 0, i = pos;
    int status = 0, after_meta = 0, irregular = 0;
    while (i < end) {
        int c = d[i++], bytes = 1;
        int64_t delta = c & 0x7F;
        while ((c & 0x80) && i < end) {
            if (delta > (INT64_MAX >> 7)) return SMF_RANGE;
            c = d[i++];
            bytes++;
            delta = (delta << 7) | (c & 0x7F);
        }
        if (bytes > 4) irregular |= IRREGULAR_LONG_NUMBER;
        if (delta > INT64_MAX - tick) return SMF_RANGE;
        tick += delta;
        if (i >= end) {
            irregular |= IRREGULAR_CUT_EVENT;
            break;
        }
        c = d[i];
        if (c >= 0xF0) {  /* meta (FF type len data) or sysex (F0/F7 len data): skipped but for a few metas */
            if (c != 0xFF && c != 0xF0 && c != 0xF7) irregular |= IRREGULAR_UNKNOWN_STATUS;
            if (c == 0xF7) irregular |= IRREGULAR_ESCAPE;
            i++;
            int kind = -1;
            if (c == 0xFF) {
                if (i >= end) {
                    irregular |= IRREGULAR_CUT_EVENT;
                    break;
                }
                kind = d[i++];
            }
            int64_t size = 0;
            int ended = 0;
            bytes = 0;
            while (i < end) {
                c = d[i++];
                bytes++;
                size = (size << 7) | (c & 0x7F);
                if (size > SIZE_CAP) size = SIZE_CAP;
                if (!(c & 0x80)) {
                    ended = 1;
                    break;
                }
            }
            if (bytes > 4) irregular |= IRREGULAR_LONG_NUMBER;
            if (!ended || size > end - i) irregular |= IRREGULAR_CUT_EVENT;
            after_meta = 1;
            /* As in Python's slices, a name or tempo running past the chunk reads on into the file's next bytes */
            if (kind == 0x03) {
                name_at = i;
                name_len = size < len - i ? size : len - i;
            } else if (kind == 0x51 && size == 3) {
                int64_t us = 0;
                for (int64_t j = i; j < i + 3 && j < len; j++) us = (us << 8) | d[j];
                if (add4(a, TEMPOS, tick, us, 0, 0)) return SMF_RANGE;
            } else if (kind == 0x58 && size >= 2 && i + 1 < end) {
                if (add4(a, SIGS, tick, d[i], d[i + 1], 0)) return SMF_RANGE;
            }
            i += size;
            last = tick;
            continue;
        }
        if (c >= 0x80) {
            status = c;
            i++;
        } else if (!status) {
            counts[BAD_BYTE] = c;
            counts[IRREGULAR] |= irregular;
            return SMF_INVALID_EVENT;
        } else if (after_meta) {
            irregular |= IRREGULAR_STATUS_AFTER_META;
        }
        after_meta = 0;
        int hi = status & 0xF0, channel = status & 0x0F;
        if (hi == 0xC0 || hi == 0xD0) {
            if (i >= end) {
                irregular |= IRREGULAR_CUT_EVENT;
                break;
            }
            if (d[i] & 0x80) irregular |= IRREGULAR_DATA_OVER_127;
            if (hi == 0xC0 && add4(a, PROGRAMS, tick, track, channel, d[i])) return SMF_RANGE;
            i++;
            last = tick;
            continue;
        }
        if (i + 1 >= end) {
            irregular |= IRREGULAR_CUT_EVENT;
            break;
        }
        if ((d[i] | d[i + 1]) & 0x80) irregular |= IRREGULAR_DATA_OVER_127;
        int k = d[i], v = d[i + 1];
        i += 2;
        last = tick;
        if (hi == 0x90 && v) {
            counts[NOTE_ONS]++;
            if (push(a, q, channel << 7 | k, tick, v)) return SMF_RANGE;
        } else if (hi == 0x80 || hi == 0x90) {
            int key = channel << 7 | k;
            int64_t e = q->head[key];
            if (e >= 0) {
                const int64_t *p = a->table[PENDING] + 3 * e;
                q->head[key] = p[2];
                if (p[2] < 0) q->tail[key] = -1;
                if (add_note(a, track, channel, k, p[0], tick, p[1])) return SMF_RANGE;
            }
        } else if (hi == 0xB0 && k == 64) {
            if (add4(a, PEDALS, tick, track, channel, v >= 64)) return SMF_RANGE;
        }
    }
    counts[IRREGULAR] |= irregular;
    if (recover(a, q, track, last, &counts[RECOVERED])) return SMF_RANGE;
    if (add4(a, NAMES, name_at, name_len, 0, 0)) return SMF_RANGE;
    if (last > counts[END_TICK]) counts[END_TICK] = last;
    return SMF_OK;
}

static int64_t be32(const uint8_t *p) {
    return (int64_t)p[0] << 24 | (int64_t)p[1] << 16 | (int64_t)p[2] << 8 | p[3];
}

/* The chunks of data[0, len) from `pos` (just past the header chunk). arena: the tables, as above, caps[t] rows
 * each; counts: N_COUNTS values, written whatever the result. */
int smf_events(const uint8_t *data, int64_t len, int64_t pos, int64_t *arena, const int64_t *caps,
               int64_t *counts) {
    arena_t a;
    queues_t q;
    for (int t = 0; t < N_TABLES; t++) {
        a.table[t] = arena;
        a.cap[t] = caps[t];
        a.n[t] = 0;
        arena += WIDTH[t] * caps[t];
    }
    for (int k = 0; k < KEYS; k++) q.head[k] = q.tail[k] = -1;
    memset(q.seen, 0, sizeof q.seen);
    q.n_keys = 0;
    for (int c = 0; c < N_COUNTS; c++) counts[c] = 0;
    int rc = SMF_OK;
    for (int64_t track = 0; rc == SMF_OK && pos + 8 <= len; ) {
        int64_t size = be32(data + pos + 4), start = pos + 8;
        int is_track = memcmp(data + pos, "MTrk", 4) == 0;
        int64_t end = start + size < len ? start + size : len;
        if (size > len - start) counts[IRREGULAR] |= IRREGULAR_CHUNK_PAST_END;
        if (is_track) rc = track_events(data, len, start, end, track++, &a, &q, counts);
        else counts[IRREGULAR] |= IRREGULAR_FOREIGN_CHUNK;
        pos = end;
    }
    if (rc == SMF_OK && pos < len) counts[IRREGULAR] |= IRREGULAR_FOREIGN_CHUNK;
    for (int t = NOTES; t <= NAMES; t++) counts[t] = a.n[t];
    return rc;
}

/* ---- parts: each note's program, and the notes ordered and cut into parts ----------------------------------
 *
 * smf_parts is _parts of pipeline/smf.py (its numpy code, the reference, gives the same parts): each note's
 * program is its channel's program at its onset (the last change at or before it in tick order, ties in file
 * order; 0 before any), the channel's state shared by every track, or kept per track where `independent` (a
 * type-2 file); then the notes in order of (track, channel, program, start, pitch), ties in their given order,
 * cut into parts where (track, channel, program) changes.
 *
 * notes: n rows of (track, channel, pitch, start, end, velocity); programs: m rows of (tick, track, channel,
 * program). Writes cols: 7 columns of n values (track, channel, program, pitch, start, end, velocity), in order;
 * bounds: the first note of each part, then n (at most n + 1 values); counts[0]: the number of parts. scratch:
 * 4 * max(n, m) int64 values. Returns SMF_OK, or SMF_RANGE where a value does not fit the packed sort keys
 * (a track past 2047, a tick past 2^32, a program or key byte past 255: pathological files): the caller then
 * runs the reference. */

/* Stable insertion sort of n keys carrying idx, giving up (returning 0) after `budget` moves; equal keys keep
 * their order either way. The notes of a track come in note-off order, nearly their onset order (a chord's notes
 * end in any order, a melody's in turn), so this is near-linear on real files; radix_sort finishes the rest. */
static int insertion_sort(uint64_t *key, int64_t *idx, int64_t n, int64_t budget) {
    for (int64_t i = 1; i < n; i++) {
        uint64_t k = key[i];
        int64_t x = idx[i], j = i;
        while (j > 0 && key[j - 1] > k) {
            key[j] = key[j - 1];
            idx[j] = idx[j - 1];
            j--;
            if (--budget < 0) {
                key[j] = k;
                idx[j] = x;
                return 0;
            }
        }
        key[j] = k;
        idx[j] = x;
    }
    return 1;
}

int smf_parts(const int64_t *notes, int64_t n, const int64_t *programs, int64_t m, int64_t independent,
              int64_t *cols, int64_t *bounds, int64_t *scratch, int64_t *counts) {
    int64_t big = n > m ? n : m;
    uint64_t *key = (uint64_t *)scratch, *tmp_k = (uint64_t *)scratch + big;
    int64_t *idx = scratch + 2 * big, *tmp_i = scratch + 3 * big;
    int64_t *prog = cols + 2 * n;  /* the program column, filled in note order first, then reordered below */
    counts[0] = 0;
    /* the program changes by (scope, channel, tick), ties in file order */
    for (int64_t j = 0; j < m; j++) {
        const int64_t *p = programs + 4 * j;
        int64_t scope = independent ? p[1] : 0;
        if (p[0] < 0 || p[0] >= ((int64_t)1 << 40) || scope < 0 || scope >= ((int64_t)1 << 19)) return SMF_RANGE;
        key[j] = (uint64_t)(scope * 16 + p[2]) << 40 | (uint64_t)p[0];
        idx[j] = j;
    }
    radix_sort(key, idx, tmp_k, tmp_i, m);
    int64_t lo = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t *r = notes + 6 * i;
        int64_t scope = independent ? r[0] : 0;
        if (r[3] < 0 || r[3] >= ((int64_t)1 << 32) || r[0] < 0 || r[0] >= 2048 || r[2] < 0 || r[2] > 255)
            return SMF_RANGE;
        uint64_t channel = (uint64_t)(scope * 16 + r[1]), want = channel << 40 | (uint64_t)r[3];
        /* lo: the first change past (channel, onset). The last note's answer mostly holds (the same channel,
         * an onset before the next change): checked first, searched for only where it does not */
        if (!((lo == m || want < key[lo]) && (lo == 0 || key[lo - 1] <= want))) {
            int64_t hi = m;
            lo = 0;
            while (lo < hi) {
                int64_t mid = lo + (hi - lo) / 2;
                if (key[mid] <= want) lo = mid + 1;
                else hi = mid;
            }
        }
        prog[i] = lo > 0 && key[lo - 1] >> 40 == channel ? programs[4 * idx[lo - 1] + 3] : 0;
        if (prog[i] < 0 || prog[i] > 255) return SMF_RANGE;
    }
    /* the notes by (track, channel, program, start, pitch) */
    for (int64_t i = 0; i < n; i++) {
        const int64_t *r = notes + 6 * i;
        key[i] = ((uint64_t)(r[0] << 12 | r[1] << 8 | prog[i]) << 40) | (uint64_t)r[3] << 8 | (uint64_t)r[2];
        idx[i] = i;
    }
    if (!insertion_sort(key, idx, n, 4 * n)) radix_sort(key, idx, tmp_k, tmp_i, n);
    int64_t *out_prog = (int64_t *)tmp_k;  /* the programs in the new order, before prog's column is overwritten */
    for (int64_t i = 0; i < n; i++) out_prog[i] = prog[idx[i]];
    int64_t parts = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t *r = notes + 6 * idx[i];
        cols[i] = r[0];
        cols[n + i] = r[1];
        cols[2 * n + i] = out_prog[i];
        cols[3 * n + i] = r[2];
        cols[4 * n + i] = r[3];
        cols[5 * n + i] = r[4];
        cols[6 * n + i] = r[5];
        if (i == 0 || key[i] >> 40 != key[i - 1] >> 40) bounds[parts++] = i;
    }
    bounds[parts] = n;
    counts[0] = parts;
    return SMF_OK;
}
