/* The dashboard's files as the binary embeds them: every path the admin
 * listener serves, its content type, and bytes equal to dashboard/. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dashboard.h"

static const sl_dashboard_file_t *
find(const char *path)
{
    return sl_dashboard_find(path, strlen(path));
}

static void
test_page_is_served_at_dashboard_with_or_without_slash(void **state)
{
    (void)state;
    const sl_dashboard_file_t *a = find("/dashboard");
    const sl_dashboard_file_t *b = find("/dashboard/");
    assert_non_null(a);
    assert_ptr_equal(a, b);
    assert_string_equal(a->path, "/dashboard/index.html");
    assert_ptr_equal(a, find("/dashboard/index.html"));
    assert_string_equal(a->content_type, "text/html; charset=utf-8");
}

static void
test_assets_carry_their_content_types(void **state)
{
    (void)state;
    assert_string_equal(find("/dashboard/app.js")->content_type,
                        "text/javascript; charset=utf-8");
    assert_string_equal(find("/dashboard/style.css")->content_type,
                        "text/css; charset=utf-8");
    const sl_dashboard_file_t *c = find("/dashboard/chart.umd.js");
    assert_non_null(c);
    assert_string_equal(c->content_type, "text/javascript; charset=utf-8");
    assert_true(c->len > 100000);
    assert_memory_equal(c->data, "/*!\n * Chart.js v4.", 19);
}

static void
test_paths_outside_the_table_are_not_found(void **state)
{
    (void)state;
    assert_null(find("/dashboard/nope.js"));
    assert_null(find("/dashboard/../admin/config"));
    assert_null(find("/dashboard/app.js/"));
    assert_null(find("/dashboard//app.js"));
    assert_null(find("/dashboardx"));
    assert_null(find("/DASHBOARD"));
    assert_null(find("/embed.sh"));
    assert_null(find("/dashboard/embed.sh"));
    assert_null(find("/dashboard/VENDOR.md"));
}

static void
test_dashboard_path_is_the_prefix_and_its_subtree_only(void **state)
{
    (void)state;
    assert_true(sl_dashboard_path("/dashboard", 10));
    assert_true(sl_dashboard_path("/dashboard/x", 12));
    assert_false(sl_dashboard_path("/dashboards", 11));
    assert_false(sl_dashboard_path("/dashboar", 9));
    assert_false(sl_dashboard_path("/admin/dashboard", 16));
    assert_false(sl_dashboard_path("/metrics", 8));
}

static void
test_embedded_bytes_equal_the_source_files(void **state)
{
    (void)state;
    assert_true(sl_dashboard_nfiles >= 4);
    for (size_t i = 0; i < sl_dashboard_nfiles; i++) {
        const sl_dashboard_file_t *f = &sl_dashboard_files[i];
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", SL_SRCDIR, f->path + 1);
        FILE *fp = fopen(path, "rb");
        assert_non_null(fp);
        char *buf = malloc(f->len + 1);
        assert_non_null(buf);
        size_t n = fread(buf, 1, f->len + 1, fp);
        fclose(fp);
        assert_int_equal(n, f->len);
        assert_memory_equal(buf, f->data, f->len);
        assert_int_equal(f->data[f->len], 0); /* the generator's guard */
        free(buf);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_page_is_served_at_dashboard_with_or_without_slash),
        cmocka_unit_test(test_assets_carry_their_content_types),
        cmocka_unit_test(test_paths_outside_the_table_are_not_found),
        cmocka_unit_test(test_dashboard_path_is_the_prefix_and_its_subtree_only),
        cmocka_unit_test(test_embedded_bytes_equal_the_source_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
