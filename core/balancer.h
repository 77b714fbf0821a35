/* Which target serves a call: weighted or least-outstanding choice, the
 * fallback order, per-target concurrency caps and circuit breakers. The
 * live state is shared by workers through atomics: no lock. */
#ifndef SL_BALANCER_H
#define SL_BALANCER_H

#include "config.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    SL_BREAKER_CLOSED = 0,
    SL_BREAKER_OPEN = 1,
    SL_BREAKER_HALF_OPEN = 2,
} sl_breaker_state_t;

typedef struct sl_target_state {
    atomic_long outstanding;    /* calls in flight */
    atomic_long failures;       /* in the current window */
    atomic_llong window_start;  /* ms */
    atomic_int breaker;         /* sl_breaker_state_t */
    atomic_llong opened_at;     /* ms */
    atomic_int probing;         /* a half-open probe is in flight */
    atomic_long requests, errors; /* totals, for the admin view */
} sl_target_state_t;

/* A zeroed state; NULL on OOM. */
sl_target_state_t *sl_target_state_new(void);

#define SL_CHAIN_MAX 16

/* The order in which a call tries targets: the balancer's choice among
 * `targets`, the other targets, then `fallback` in order. Returns how many
 * were written (at most cap). */
size_t sl_balancer_chain(const sl_model_t *m, uint32_t rnd,
                         const sl_target_t **chain, size_t cap);

/* Takes a slot on t: 0, or SL_EAGAIN when its breaker is open (and no
 * probe is due) or it is at max_concurrency. *probe is set when this call
 * is the half-open probe. */
int sl_balancer_acquire(const sl_model_t *m, const sl_target_t *t,
                        int64_t now_ms, int *probe);
/* Gives the slot back with the outcome, feeding the breaker. */
void sl_balancer_release(const sl_model_t *m, const sl_target_t *t,
                         int success, int probe, int64_t now_ms);

/* The breaker state as the admin view shows it (open turns half-open once
 * its time is up). */
sl_breaker_state_t sl_balancer_state(const sl_model_t *m,
                                     const sl_target_t *t, int64_t now_ms);
const char *sl_breaker_name(sl_breaker_state_t s);

#endif
