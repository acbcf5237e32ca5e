/*
 * packing.c: first-fit decreasing packing of examples into samples (packing.h). The
 * pieces are ordered by a counting sort on their length (stable, so ties keep file
 * order), and the first sample with room is found in O(log n) with a tree of the
 * samples' free room (each node the most room below it).
 */
#include "packing.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

/* The pieces of example [b, e) in file order into OUT (NULL: only counted); returns their count. */
static int64_t example_pieces(int64_t b, int64_t e, int32_t T, int truncate, struct pack_piece *out) {
    const int64_t len = e - b;
    if (len < 2) return 0;
    const int64_t k = truncate ? 1 : (len - 1 + T - 1) / T;
    for (int64_t j = 0; out && j < k; j++) {
        const int64_t begin = b + j * T, left = e - begin;
        out[j] = (struct pack_piece){begin, (int32_t)(left < (int64_t)T + 1 ? left : (int64_t)T + 1)};
    }
    return k;
}

/* The first of SIZE leaves (a power of two) of TREE whose room is at least N; the tree
 * always has one. */
static int64_t room_find(const int32_t *tree, int64_t size, int32_t n) {
    int64_t i = 1;
    while (i < size) i = tree[2 * i] >= n ? 2 * i : 2 * i + 1;
    return i - size;
}

static void room_take(int32_t *tree, int64_t size, int64_t leaf, int32_t n) {
    int64_t i = leaf + size;
    tree[i] -= n;
    for (i /= 2; i >= 1; i /= 2) tree[i] = tree[2 * i] > tree[2 * i + 1] ? tree[2 * i] : tree[2 * i + 1];
}

/* ORDER (N): the pieces longest first, ties in file order (a stable counting sort). */
static void pieces_order(const struct pack_piece *pc, int64_t n, int32_t T, int64_t *order) {
    int64_t *at = xcalloc((size_t)T + 1, sizeof *at); /* by key T+1-n, 0 .. T-1 */
    for (int64_t i = 0; i < n; i++) at[T + 1 - pc[i].n + 1]++;
    for (int32_t k = 1; k <= T; k++) at[k] += at[k - 1];
    for (int64_t i = 0; i < n; i++) order[at[T + 1 - pc[i].n]++] = i;
    free(at);
}

/* SAMPLE (N, by piece) from placing the pieces in ORDER, each in the first sample with
 * room; returns the sample count. */
static int64_t pieces_pack(const struct pack_piece *pc, const int64_t *order, int64_t n, int32_t T, int64_t *sample) {
    int64_t size = 1;
    while (size < n) size *= 2;
    int32_t *tree = xcalloc(2 * (size_t)size, sizeof *tree);
    for (int64_t i = 0; i < n; i++) tree[size + i] = T + 1;
    for (int64_t i = size - 1; i >= 1; i--) tree[i] = tree[2 * i] > tree[2 * i + 1] ? tree[2 * i] : tree[2 * i + 1];
    int64_t used = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t s = room_find(tree, size, pc[order[i]].n);
        room_take(tree, size, s, pc[order[i]].n);
        sample[order[i]] = s;
        used = s + 1 > used ? s + 1 : used;
    }
    free(tree);
    return used;
}

void packing_plan(struct packing *p, const int64_t *doc, int64_t n_docs, int64_t n_tokens, int32_t T, int pack,
                  int truncate) {
    CHECK(T >= 1);
    memset(p, 0, sizeof *p);
    p->T = T;
    int64_t n = 0;
    for (int64_t d = 0; d < n_docs; d++) {
        const int64_t b = doc[d], e = d + 1 < n_docs ? doc[d + 1] : n_tokens;
        n += example_pieces(b, e, T, truncate, NULL);
        if (e - b > (int64_t)T + 1) {
            p->n_split++;
            if (truncate) p->n_cut_targets += e - b - 1 - T;
        }
    }
    /* the pieces in file order, the order they are placed in and each one's sample */
    struct pack_piece *pc = xmalloc(((size_t)n + 1) * sizeof *pc);
    int64_t *order = xmalloc(2 * ((size_t)n + 1) * sizeof *order), *sample = order + n + 1;
    for (int64_t d = 0, k = 0; d < n_docs; d++)
        k += example_pieces(doc[d], d + 1 < n_docs ? doc[d + 1] : n_tokens, T, truncate, pc + k);
    if (pack) {
        pieces_order(pc, n, T, order);
        p->n_samples = pieces_pack(pc, order, n, T, sample);
    } else {
        for (int64_t i = 0; i < n; i++) order[i] = sample[i] = i;
        p->n_samples = n;
    }
    /* the pieces grouped by sample, each sample's in the order they were placed */
    p->first = xcalloc((size_t)p->n_samples + 1, sizeof *p->first);
    p->pieces = xmalloc(((size_t)n + 1) * sizeof *p->pieces);
    for (int64_t i = 0; i < n; i++) p->first[sample[i] + 1]++, p->n_tokens += pc[i].n;
    for (int64_t s = 0; s < p->n_samples; s++) p->first[s + 1] += p->first[s];
    int64_t *next = xmalloc(((size_t)p->n_samples + 1) * sizeof *next);
    memcpy(next, p->first, ((size_t)p->n_samples + 1) * sizeof *next);
    for (int64_t i = 0; i < n; i++) p->pieces[next[sample[order[i]]]++] = pc[order[i]];
    free(next);
    free(order);
    free(pc);
}

void packing_free(struct packing *p) {
    free(p->first);
    free(p->pieces);
    memset(p, 0, sizeof *p);
}
