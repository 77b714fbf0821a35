/* A bump allocator: requests allocate freely and free nothing; the arena
 * drops everything at once when the request ends. */
#include "arena.h"
#include "error.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_ALIGN 16

typedef struct sl_block {
    struct sl_block *next;
    size_t size, used;
    _Alignas(SL_ALIGN) unsigned char data[];
} sl_block_t;

typedef struct sl_cleanup {
    struct sl_cleanup *next;
    sl_cleanup_fn fn;
    void *data;
} sl_cleanup_t;

/* Reset keeps one extra block up to this size for the next request: a
 * connection whose requests outgrow the first block (long prompts) then
 * allocates nothing per request, and an idle connection holds at most
 * this much more. */
#define SL_ARENA_KEEP (64u << 10)

struct sl_arena {
    sl_block_t *first, *cur;
    sl_block_t *spare; /* kept by reset; not in the list */
    sl_cleanup_t *cleanups;
};

static sl_block_t *
block_new(size_t size)
{
    sl_block_t *b = malloc(sizeof(*b) + size);
    if (b == NULL)
        return NULL;
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

sl_arena_t *
sl_arena_create(size_t first_block)
{
    sl_arena_t *a = malloc(sizeof(*a));
    if (a == NULL)
        return NULL;
    a->first = a->cur = block_new(first_block ? first_block : 4096);
    a->spare = NULL;
    a->cleanups = NULL;
    if (a->first == NULL) {
        free(a);
        return NULL;
    }
    return a;
}

static void
run_cleanups(sl_arena_t *a)
{
    while (a->cleanups != NULL) {
        sl_cleanup_t *c = a->cleanups;
        a->cleanups = c->next;
        c->fn(c->data);
    }
}

void
sl_arena_reset(sl_arena_t *a)
{
    run_cleanups(a);
    sl_block_t *b = a->first->next;
    while (b != NULL) {
        sl_block_t *next = b->next;
        if (b->size <= SL_ARENA_KEEP &&
            (a->spare == NULL || a->spare->size < b->size)) {
            free(a->spare); /* the larger one serves more requests */
            a->spare = b;
        } else {
            free(b);
        }
        b = next;
    }
    a->first->next = NULL;
    a->first->used = 0;
    a->cur = a->first;
}

void
sl_arena_destroy(sl_arena_t *a)
{
    if (a == NULL)
        return;
    sl_arena_reset(a);
    free(a->spare);
    free(a->first);
    free(a);
}

void *
sl_arena_alloc(sl_arena_t *a, size_t n)
{
    size_t need = (n + SL_ALIGN - 1) & ~(size_t)(SL_ALIGN - 1);
    if (need < n)
        return NULL;
    sl_block_t *b = a->cur;
    if (b->size - b->used < need) {
        sl_block_t *nb;
        if (a->spare != NULL && a->spare->size >= need) {
            nb = a->spare;
            a->spare = NULL;
            nb->used = 0;
        } else {
            size_t size = a->first->size;
            while (size < need)
                size *= 2;
            if ((nb = block_new(size)) == NULL)
                return NULL;
        }
        nb->next = b->next;
        b->next = nb;
        a->cur = nb;
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += need;
    return p;
}

void *
sl_arena_calloc(sl_arena_t *a, size_t n)
{
    void *p = sl_arena_alloc(a, n);
    if (p != NULL)
        memset(p, 0, n);
    return p;
}

char *
sl_arena_strndup(sl_arena_t *a, const char *s, size_t n)
{
    char *p = sl_arena_alloc(a, n + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *
sl_arena_printf(sl_arena_t *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *p = sl_arena_alloc(a, (size_t)n + 1);
    if (p == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

int
sl_arena_cleanup_add(sl_arena_t *a, sl_cleanup_fn fn, void *data)
{
    sl_cleanup_t *c = sl_arena_alloc(a, sizeof(*c));
    if (c == NULL)
        return SL_ENOMEM;
    c->fn = fn;
    c->data = data;
    c->next = a->cleanups;
    a->cleanups = c;
    return 0;
}
