#include "window.h"

#include <string.h>

static uint64_t
pack(uint32_t win, uint64_t n) {
    return ((uint64_t)(win & RL_WINDOW_MASK) << RL_COUNT_BITS) |
           (n & RL_COUNT_MAX);
}

static uint32_t
win_of(uint64_t w) {
    return (uint32_t)(w >> RL_COUNT_BITS);
}

static uint64_t
count_of(uint64_t w) {
    return w & RL_COUNT_MAX;
}

uint32_t
rl_window(int64_t now_s) {
    return (uint32_t)((now_s / 60) & RL_WINDOW_MASK);
}

int
rl_reset_seconds(int64_t now_s) {
    return 60 - (int)(now_s % 60);
}

uint64_t
rl_count(rl_counter_t *c, uint32_t win) {
    uint64_t w = atomic_load_explicit(c, memory_order_acquire);
    return win_of(w) == (win & RL_WINDOW_MASK) ? count_of(w) : 0;
}

int
rl_take(rl_counter_t *c, uint32_t win, uint64_t n, uint64_t limit,
        uint64_t *count) {
    win &= RL_WINDOW_MASK;
    uint64_t w = atomic_load_explicit(c, memory_order_acquire);
    for (;;) {
        uint64_t cur = win_of(w) == win ? count_of(w) : 0;
        if (n > limit || cur > limit - n || cur > RL_COUNT_MAX - n) {
            if (count != NULL)
                *count = cur;
            return 0;
        }
        if (atomic_compare_exchange_weak_explicit(c, &w, pack(win, cur + n),
                                                  memory_order_acq_rel,
                                                  memory_order_acquire)) {
            if (count != NULL)
                *count = cur + n;
            return 1;
        }
    }
}

void
rl_add(rl_counter_t *c, uint32_t win, uint64_t n) {
    win &= RL_WINDOW_MASK;
    uint64_t w = atomic_load_explicit(c, memory_order_acquire);
    for (;;) {
        if (win_of(w) != win)
            return;
        uint64_t cur = count_of(w);
        uint64_t next = cur > RL_COUNT_MAX - n ? RL_COUNT_MAX : cur + n;
        if (atomic_compare_exchange_weak_explicit(c, &w, pack(win, next),
                                                  memory_order_acq_rel,
                                                  memory_order_acquire))
            return;
    }
}

void
rl_give(rl_counter_t *c, uint32_t win, uint64_t n) {
    win &= RL_WINDOW_MASK;
    uint64_t w = atomic_load_explicit(c, memory_order_acquire);
    for (;;) {
        if (win_of(w) != win)
            return;
        uint64_t cur = count_of(w);
        uint64_t next = cur > n ? cur - n : 0;
        if (atomic_compare_exchange_weak_explicit(c, &w, pack(win, next),
                                                  memory_order_acq_rel,
                                                  memory_order_acquire))
            return;
    }
}

void
rl_seed(rl_counter_t *c, uint32_t win, uint64_t n) {
    atomic_store_explicit(c, pack(win, n > RL_COUNT_MAX ? RL_COUNT_MAX : n),
                          memory_order_release);
}

uint64_t
rl_estimate_tokens(size_t chars) {
    return ((uint64_t)chars + 3) / 4;
}

char *
rl_format_u64(uint64_t v, char buf[RL_U64_CHARS]) {
    static const char pairs[201] = "00010203040506070809"
                                   "10111213141516171819"
                                   "20212223242526272829"
                                   "30313233343536373839"
                                   "40414243444546474849"
                                   "50515253545556575859"
                                   "60616263646566676869"
                                   "70717273747576777879"
                                   "80818283848586878889"
                                   "90919293949596979899";
    char *p = buf + RL_U64_CHARS - 1;
    *p = '\0';
    while (v >= 100) {
        const char *d = pairs + (v % 100) * 2;
        v /= 100;
        *--p = d[1];
        *--p = d[0];
    }
    if (v >= 10) {
        *--p = pairs[v * 2 + 1];
        *--p = pairs[v * 2];
    } else {
        *--p = (char)('0' + v);
    }
    return p;
}

/* Headers go out on every answer: no printf. */
char *
rl_format_reset(int seconds, char *buf, size_t cap) {
    char tmp[8], *p = tmp;
    if (seconds < 0)
        seconds = 0;
    if (seconds >= 60) {
        int m = seconds / 60;
        if (m >= 10)
            *p++ = (char)('0' + m / 10 % 10);
        *p++ = (char)('0' + m % 10);
        *p++ = 'm';
        seconds %= 60;
    }
    if (seconds >= 10)
        *p++ = (char)('0' + seconds / 10);
    *p++ = (char)('0' + seconds % 10);
    *p++ = 's';
    size_t n = (size_t)(p - tmp);
    if (cap == 0)
        return buf;
    if (n >= cap)
        n = cap - 1;
    memcpy(buf, tmp, n);
    buf[n] = '\0';
    return buf;
}
