#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"

static int cleanups_run;
static int order[4];

static void
note_cleanup(void *p)
{
    order[cleanups_run++] = (int)(intptr_t)p;
}

static void
test_allocations_are_aligned_and_usable(void **state)
{
    sl_arena_t *a = sl_arena_create(64);
    for (int i = 1; i < 200; i++) {
        unsigned char *p = sl_arena_alloc(a, (size_t)i);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, 0xab, (size_t)i);
    }
    sl_arena_destroy(a);
}

static void
test_large_allocation_gets_its_own_block(void **state)
{
    sl_arena_t *a = sl_arena_create(64);
    char *big = sl_arena_alloc(a, 100000);
    assert_non_null(big);
    memset(big, 1, 100000);
    char *small = sl_arena_alloc(a, 8);
    assert_non_null(small);
    sl_arena_destroy(a);
}

static void
test_cleanups_run_last_registered_first_on_reset(void **state)
{
    sl_arena_t *a = sl_arena_create(128);
    cleanups_run = 0;
    sl_arena_cleanup_add(a, note_cleanup, (void *)1);
    sl_arena_cleanup_add(a, note_cleanup, (void *)2);
    sl_arena_reset(a);
    assert_int_equal(cleanups_run, 2);
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 1);
    /* Reset arenas are reusable and do not rerun old cleanups. */
    assert_non_null(sl_arena_alloc(a, 1000));
    sl_arena_destroy(a);
    assert_int_equal(cleanups_run, 2);
}

static void
test_strndup_and_printf_copy_into_the_arena(void **state)
{
    sl_arena_t *a = sl_arena_create(32);
    char *s = sl_arena_strndup(a, "hello world", 5);
    assert_string_equal(s, "hello");
    char *p = sl_arena_printf(a, "%s-%d", "x", 42);
    assert_string_equal(p, "x-42");
    char *z = sl_arena_calloc(a, 100);
    for (int i = 0; i < 100; i++)
        assert_int_equal(z[i], 0);
    sl_arena_destroy(a);
}

static void
test_reset_keeps_a_grown_block_for_the_next_request(void **state)
{
    sl_arena_t *a = sl_arena_create(1024);
    char *p1 = sl_arena_alloc(a, 20000); /* outgrows the first block */
    assert_non_null(p1);
    memset(p1, 1, 20000);
    sl_arena_reset(a);
    /* Had reset freed it, this would likely get its memory. */
    char *other = malloc(20000 + 64);
    assert_non_null(other);
    char *p2 = sl_arena_alloc(a, 20000);
    assert_ptr_equal(p2, p1);
    memset(p2, 2, 20000);
    /* and the first block still serves small allocations */
    sl_arena_reset(a);
    char *s = sl_arena_alloc(a, 16);
    assert_true(s < p1 || s > p1 + 20000);
    /* A block over the keep limit goes back to the system. */
    char *big = sl_arena_alloc(a, 1u << 20);
    assert_non_null(big);
    memset(big, 3, 1u << 20);
    sl_arena_reset(a);
    free(other);
    sl_arena_destroy(a);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allocations_are_aligned_and_usable),
        cmocka_unit_test(test_large_allocation_gets_its_own_block),
        cmocka_unit_test(test_cleanups_run_last_registered_first_on_reset),
        cmocka_unit_test(test_strndup_and_printf_copy_into_the_arena),
        cmocka_unit_test(test_reset_keeps_a_grown_block_for_the_next_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
