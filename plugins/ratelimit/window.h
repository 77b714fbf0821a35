/* The rate limit's arithmetic: fixed one-minute windows counted in one
 * 64-bit atomic word each, so admission is one compare-and-swap and never
 * takes a lock. A word packs the window's number (its high 24 bits) and
 * the count in it (the low 40 bits): a word left over from an older window
 * reads as zero in the current one, and the first request of a new window
 * resets it in the same CAS that counts it. */
#ifndef RL_WINDOW_H
#define RL_WINDOW_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define RL_WINDOW_BITS 24
#define RL_COUNT_BITS 40
#define RL_COUNT_MAX ((UINT64_C(1) << RL_COUNT_BITS) - 1)
#define RL_WINDOW_MASK ((UINT32_C(1) << RL_WINDOW_BITS) - 1)

typedef _Atomic uint64_t rl_counter_t;

/* The window (minute) that wall-clock second `now_s` falls in. */
uint32_t rl_window(int64_t now_s);
/* Seconds until that window ends (1..60). */
int rl_reset_seconds(int64_t now_s);

/* What c holds for window win: 0 when it last counted another window. */
uint64_t rl_count(rl_counter_t *c, uint32_t win);

/* Adds n to c's count in window win when the sum stays within limit;
 * returns 1 (taken) or 0 (refused: nothing changes). *count (may be NULL)
 * gets the count after the take, or the count that refused it. Exact
 * under concurrency: of many threads taking 1 from a limit of K in one
 * window, exactly K succeed. */
int rl_take(rl_counter_t *c, uint32_t win, uint64_t n, uint64_t limit,
            uint64_t *count);
/* Adds n with no limit (settling more tokens than were reserved),
 * saturating at RL_COUNT_MAX. Counts into window win only: a window that
 * has ended is not changed. */
void rl_add(rl_counter_t *c, uint32_t win, uint64_t n);
/* Gives n back to window win (a reservation that was not used), never
 * below 0. A window that has ended is not changed. */
void rl_give(rl_counter_t *c, uint32_t win, uint64_t n);
/* Sets window win's count (seeding from the store); replaces whatever c
 * held. */
void rl_seed(rl_counter_t *c, uint32_t win, uint64_t n);

/* Tokens a prompt of `chars` characters is estimated at: chars / 4,
 * rounded up, as OpenAI's rule of thumb for English text. */
uint64_t rl_estimate_tokens(size_t chars);

/* Formats seconds (0..5999) as OpenAI's reset headers do ("1s", "59s",
 * "1m0s") into buf; returns buf. */
char *rl_format_reset(int seconds, char *buf, size_t cap);

/* Formats v in decimal at the end of buf; returns where it starts. */
#define RL_U64_CHARS 21
char *rl_format_u64(uint64_t v, char buf[RL_U64_CHARS]);

#endif
