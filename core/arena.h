/* Per-request memory: a bump allocator that frees everything at once. */
#ifndef SL_ARENA_H
#define SL_ARENA_H

#include <stddef.h>

typedef struct sl_arena sl_arena_t;
typedef void (*sl_cleanup_fn)(void *data);

/* Creates an arena whose first block holds `first_block` bytes. NULL on OOM. */
sl_arena_t *sl_arena_create(size_t first_block);
/* Runs the cleanups (last registered first) and frees every block. */
void sl_arena_destroy(sl_arena_t *a);
/* Runs the cleanups and frees all but the first block, ready for reuse. */
void sl_arena_reset(sl_arena_t *a);

/* 16-byte aligned memory that lives until reset/destroy. NULL on OOM. */
void *sl_arena_alloc(sl_arena_t *a, size_t n);
void *sl_arena_calloc(sl_arena_t *a, size_t n);
char *sl_arena_strndup(sl_arena_t *a, const char *s, size_t n);
/* printf into the arena; NULL on OOM. */
char *sl_arena_printf(sl_arena_t *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Registers fn(data) to run at reset/destroy: for what is not arena memory
 * (a cJSON tree, an evbuffer). 0 or SL_ENOMEM. */
int sl_arena_cleanup_add(sl_arena_t *a, sl_cleanup_fn fn, void *data);

#endif
