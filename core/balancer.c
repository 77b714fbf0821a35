#include "balancer.h"
#include "error.h"

#include <stdlib.h>

sl_target_state_t *
sl_target_state_new(void)
{
    return calloc(1, sizeof(sl_target_state_t));
}

const char *
sl_breaker_name(sl_breaker_state_t s)
{
    switch (s) {
    case SL_BREAKER_OPEN: return "open";
    case SL_BREAKER_HALF_OPEN: return "half_open";
    default: return "closed";
    }
}

static size_t
pick_weighted(const sl_model_t *m, uint32_t rnd)
{
    /* Scale, not modulo: every target gets exactly its share of rnd. */
    uint64_t point = ((uint64_t)rnd * m->total_weight) >> 32;
    for (size_t i = 0; i < m->ntargets; i++) {
        if (point < m->targets[i].weight)
            return i;
        point -= m->targets[i].weight;
    }
    return m->ntargets - 1;
}

static size_t
pick_least_outstanding(const sl_model_t *m, uint32_t rnd)
{
    size_t best = 0, ties = 0;
    long best_n = -1;
    for (size_t i = 0; i < m->ntargets; i++) {
        const sl_target_state_t *st = m->targets[i].state;
        long n = st ? atomic_load_explicit(&st->outstanding,
                                           memory_order_relaxed)
                    : 0;
        /* Scaled by weight: a target of weight 3 takes three times the
         * load before it looks as busy as one of weight 1. */
        long score = n * 1000 / (long)m->targets[i].weight;
        if (best_n < 0 || score < best_n) {
            best = i;
            best_n = score;
            ties = 1;
        } else if (score == best_n && (rnd % (uint32_t)++ties) == 0) {
            best = i; /* reservoir choice among equals */
        }
    }
    return best;
}

size_t
sl_balancer_chain(const sl_model_t *m, uint32_t rnd, const sl_target_t **chain,
                  size_t cap)
{
    size_t n = 0;
    if (m->ntargets == 0 || cap == 0)
        return 0;
    size_t first = m->balance == SL_BALANCE_LEAST_OUTSTANDING
                       ? pick_least_outstanding(m, rnd)
                       : pick_weighted(m, rnd);
    chain[n++] = &m->targets[first];
    for (size_t i = 0; i < m->ntargets && n < cap; i++)
        if (i != first)
            chain[n++] = &m->targets[i];
    for (size_t i = 0; i < m->nfallback && n < cap; i++)
        chain[n++] = &m->fallback[i];
    return n;
}

sl_breaker_state_t
sl_balancer_state(const sl_model_t *m, const sl_target_t *t, int64_t now_ms)
{
    sl_target_state_t *st = t->state;
    if (st == NULL)
        return SL_BREAKER_CLOSED;
    int b = atomic_load(&st->breaker);
    if (b == SL_BREAKER_OPEN &&
        now_ms - atomic_load(&st->opened_at) >= m->breaker_open_ms)
        return SL_BREAKER_HALF_OPEN;
    return (sl_breaker_state_t)b;
}

int
sl_balancer_acquire(const sl_model_t *m, const sl_target_t *t, int64_t now_ms,
                    int *probe)
{
    sl_target_state_t *st = t->state;
    *probe = 0;
    if (st == NULL)
        return 0;
    int b = atomic_load(&st->breaker);
    if (b != SL_BREAKER_CLOSED) {
        if (now_ms - atomic_load(&st->opened_at) < m->breaker_open_ms)
            return SL_EAGAIN;
        /* Half-open: exactly one probe at a time goes through. */
        int expected = 0;
        if (!atomic_compare_exchange_strong(&st->probing, &expected, 1))
            return SL_EAGAIN;
        atomic_store(&st->breaker, SL_BREAKER_HALF_OPEN);
        *probe = 1;
    }
    long n = atomic_fetch_add(&st->outstanding, 1);
    if (t->max_concurrency > 0 && n >= t->max_concurrency) {
        atomic_fetch_sub(&st->outstanding, 1);
        if (*probe)
            atomic_store(&st->probing, 0);
        *probe = 0;
        return SL_EAGAIN;
    }
    atomic_fetch_add_explicit(&st->requests, 1, memory_order_relaxed);
    return 0;
}

void
sl_balancer_release(const sl_model_t *m, const sl_target_t *t, int success,
                    int probe, int64_t now_ms)
{
    sl_target_state_t *st = t->state;
    if (st == NULL)
        return;
    atomic_fetch_sub(&st->outstanding, 1);
    if (success) {
        if (probe || atomic_load(&st->breaker) != SL_BREAKER_CLOSED) {
            atomic_store(&st->failures, 0);
            atomic_store(&st->breaker, SL_BREAKER_CLOSED);
        }
        if (probe)
            atomic_store(&st->probing, 0);
        return;
    }
    atomic_fetch_add_explicit(&st->errors, 1, memory_order_relaxed);
    if (m->breaker_failures <= 0)
        return;
    if (probe) {
        /* The probe failed: open again for a full period. */
        atomic_store(&st->opened_at, now_ms);
        atomic_store(&st->breaker, SL_BREAKER_OPEN);
        atomic_store(&st->probing, 0);
        return;
    }
    int64_t start = atomic_load(&st->window_start);
    if (now_ms - start > m->breaker_window_ms) {
        /* A new window; a race here only loses a count, never opens
         * the breaker wrongly. */
        atomic_store(&st->window_start, now_ms);
        atomic_store(&st->failures, 0);
    }
    if (atomic_fetch_add(&st->failures, 1) + 1 >= m->breaker_failures &&
        atomic_load(&st->breaker) == SL_BREAKER_CLOSED) {
        atomic_store(&st->opened_at, now_ms);
        atomic_store(&st->breaker, SL_BREAKER_OPEN);
    }
}
