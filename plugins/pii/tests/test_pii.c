/* Unit tests of the pii plugin's parts: validators, detectors, the
 * placeholder map, rewriting and restoring, and the stream restorer cut at
 * every byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../pii.h"

/* Test memory: malloc'd, remembered, freed after each test. */
static void **blocks;
static size_t nblocks;

static void *
test_alloc(void *ud, size_t n) {
    (void)ud;
    void *p = malloc(n);
    blocks = realloc(blocks, (nblocks + 1) * sizeof(*blocks));
    blocks[nblocks++] = p;
    return p;
}

static const pii_alloc_t A = {test_alloc, NULL};

static int
free_all(void **state) {
    (void)state;
    for (size_t i = 0; i < nblocks; i++)
        free(blocks[i]);
    free(blocks);
    blocks = NULL;
    nblocks = 0;
    return 0;
}

static pii_detectors_t
all_detectors(pii_mode_t mode) {
    pii_detectors_t ds = {0};
    char err[160];
    for (size_t i = 0; pii_builtin_names[i]; i++)
        assert_int_equal(pii_detectors_add_builtin(&ds, pii_builtin_names[i],
                                                   mode, err, sizeof(err)),
                         0);
    return ds;
}

static char *
rewrite(const pii_detectors_t *ds, pii_map_t *map, const char *text) {
    pii_buf_t out = {0};
    size_t changed;
    assert_int_equal(
        pii_rewrite(ds, map, -1, text, strlen(text), &out, &changed, &A), 0);
    return out.p;
}

static void
test_validators_accept_real_values_and_refuse_lookalikes(void **state) {
    (void)state;
    assert_true(pii_card_ok("4111 1111 1111 1111", 19));
    assert_true(pii_card_ok("378282246310005", 15));
    assert_false(pii_card_ok("4111 1111 1111 1112", 19)); /* Luhn */
    assert_false(pii_card_ok("4111 1111-1111 1111", 19)); /* mixed seps */
    assert_false(pii_card_ok("0000000000000000", 16));
    assert_true(pii_iban_ok("DE89 3704 0044 0532 0130 00", 27));
    assert_true(pii_iban_ok("GB82WEST12345698765432", 22));
    assert_false(pii_iban_ok("DE89 3704 0044 0532 0130 01", 27)); /* mod97 */
    assert_false(pii_iban_ok("DE89370400440532013", 19));         /* length */
    assert_true(pii_ssn_ok("123-45-6780", 11));
    assert_false(pii_ssn_ok("666-45-6789", 11));
    assert_false(pii_ssn_ok("900-45-6789", 11));
    assert_false(pii_ssn_ok("123-00-6789", 11));
    assert_false(pii_ssn_ok("123-45-0000", 11));
    assert_true(pii_ipv4_ok("192.168.1.20", 12));
    assert_false(pii_ipv4_ok("256.1.1.1", 9));
    assert_false(pii_ipv4_ok("01.2.3.4", 8));
    assert_true(pii_ipv6_ok("2001:db8::8a2e:370:7334", 23));
    assert_false(pii_ipv6_ok("10:30:00", 8));
    assert_false(pii_phone_ok("2023-10-12", 10));
    assert_true(pii_phone_ok("+44 20 7946 0958", 16));
}

static void
test_tokenize_gives_one_placeholder_per_value_and_numbers_per_label(
    void **state) {
    (void)state;
    pii_detectors_t ds = all_detectors(PII_MODE_TOKENIZE);
    pii_map_t map = {0};
    char *out = rewrite(&ds, &map,
                        "mail a@example.com, b@example.org and a@example.com;"
                        " card 4111 1111 1111 1111");
    assert_string_equal(out, "mail <EMAIL_1>, <EMAIL_2> and <EMAIL_1>;"
                             " card <CARD_1>");
    assert_int_equal(map.n, 3);
    /* A second message of the same request shares the numbering. */
    out = rewrite(&ds, &map, "again b@example.org, new c@example.net");
    assert_string_equal(out, "again <EMAIL_2>, new <EMAIL_3>");
    pii_detectors_free(&ds);
}

static void
test_redact_and_mask_modes(void **state) {
    (void)state;
    pii_detectors_t ds = all_detectors(PII_MODE_REDACT);
    assert_string_equal(rewrite(&ds, NULL, "ssn 123-45-6780 ok"),
                        "ssn [SSN] ok");
    pii_detectors_free(&ds);
    ds = all_detectors(PII_MODE_MASK);
    assert_string_equal(rewrite(&ds, NULL, "card 4111-1111-1111-1111."),
                        "card ****-****-****-1111.");
    pii_detectors_free(&ds);
}

static void
test_email_found_anywhere_in_a_long_text_and_local_part_capped(void **state) {
    (void)state;
    pii_detectors_t ds = all_detectors(PII_MODE_REDACT);
    char text[1024], want[1024];
    char pad[301];
    memset(pad, 'w', 300);
    pad[300] = '\0';
    for (int i = 0; i < 300; i += 7)
        pad[i] = ' ';
    snprintf(text, sizeof(text), "%s a@b.io%s x.y@c.de", pad, pad);
    snprintf(want, sizeof(want), "%s [EMAIL]%s [EMAIL]", pad, pad);
    assert_string_equal(rewrite(&ds, NULL, text), want);
    /* RFC 5321 caps the local part at 64: a 65-byte one is no address
     * (and no tail of it is either). */
    char local[66];
    memset(local, 'q', 65);
    local[65] = '\0';
    snprintf(text, sizeof(text), "to %s@example.com", local);
    assert_string_equal(rewrite(&ds, NULL, text), text);
    pii_detectors_free(&ds);
}

static void
test_secrets_and_private_key_blocks(void **state) {
    (void)state;
    pii_detectors_t ds = all_detectors(PII_MODE_REDACT);
    assert_string_equal(
        rewrite(&ds, NULL,
                "key AKIAIOSFODNN7EXAMPLE and "
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nIBAAK\n"
                "-----END RSA PRIVATE KEY----- done"),
        "key [SECRET] and [SECRET] done");
    assert_string_equal(
        rewrite(&ds, NULL, "Authorization: Bearer abcDEF123456ghiJKL789xyz"),
        "Authorization: Bearer [SECRET]");
    pii_detectors_free(&ds);
}

/* A detector is skipped on a text with fewer digits, capitals or marks
 * (a ':', "eyJ", "xox"...) than any value of its kind holds: values with
 * just enough are found. */
static void
test_values_with_just_what_the_prefilter_asks_are_still_found(void **state) {
    (void)state;
    pii_detectors_t ds = all_detectors(PII_MODE_REDACT);
    static const char *const cases[][2] = {
        {"pay 4222222222222 now", "pay [CARD] now"}, /* 13 digits */
        {"call 030 12345 now", "call [PHONE] now"},  /* 8 */
        {"call +1 555 0100 x", "call [PHONE] x"},
        {"ssn 123-45-6780 here", "ssn [SSN] here"}, /* 9 */
        {"iban DE89370400440532013000 ok", "iban [IBAN] ok"}, /* 2 capitals */
        {"ip 10.0.0.1 x", "ip [IP] x"},                        /* 4 digits */
        {"BeArEr abcDEF123456ghiJKL789xyz", "BeArEr [SECRET]"},
        {"passwd: Zx81KqLm90PwQeRt", "passwd: [SECRET]"},
        {"password=Xy7!kLm9#Qr2$Tz", "password=[SECRET]"},
        {"use github_pat_11ABCDEFG0123456789abcdefghij now",
         "use [SECRET] now"},
        {"key rk_test_4eC39HqLyjWDarjtT1zdp7dc ok", "key [SECRET] ok"},
        {"tok xoxb-1234567890-abcdefghij ok", "tok [SECRET] ok"},
        {"jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3"
         "jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U x",
         "jwt [SECRET] x"},
        {"card 1234 and no more", "card 1234 and no more"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_string_equal(rewrite(&ds, NULL, cases[i][0]), cases[i][1]);
    /* Scans on many threads share the set's match data; a set scanned
     * many times still frees everything with pii_detectors_free. */
    for (int i = 0; i < 3 * PII_MD_POOL; i++)
        assert_string_equal(rewrite(&ds, NULL, "mail a@b.co"), "mail [EMAIL]");
    pii_detectors_free(&ds);
}

static void
test_custom_pattern_reports_the_pcre2_offset(void **state) {
    (void)state;
    pii_detector_t d;
    char err[160];
    size_t off = 99;
    assert_int_not_equal(pii_detector_custom(&d, "emp", "EMP", "EMP-(\\d+",
                                             PII_MODE_REDACT, &off, err,
                                             sizeof(err)),
                         0);
    assert_int_equal(off, 8);
    assert_non_null(strstr(err, "parenthesis"));
    assert_int_equal(pii_detector_custom(&d, "emp", "EMP", "EMP-\\d{6}",
                                         PII_MODE_TOKENIZE, &off, err,
                                         sizeof(err)),
                     0);
    /* The set owns what it scanned with: freed with it. */
    pii_detectors_t ds = {.d = malloc(sizeof(d)), .n = 1};
    assert_non_null(ds.d);
    ds.d[0] = d;
    pii_map_t map = {0};
    assert_string_equal(rewrite(&ds, &map, "badge EMP-123456."),
                        "badge <EMP_1>.");
    pii_detectors_free(&ds);
}

static void
test_map_survives_encode_and_decode(void **state) {
    (void)state;
    pii_map_t m = {0}, back = {0};
    pii_map_put(&m, "EMAIL", "a@x.io", 6, &A);
    pii_map_put(&m, "SECRET", "line1\nline2", 11, &A);
    pii_buf_t b = {0};
    assert_int_equal(pii_map_encode(&m, &b, &A), 0);
    assert_int_equal(pii_map_decode(&back, b.p, b.n, &A), 0);
    assert_int_equal(back.n, 2);
    assert_string_equal(back.e[1].val, "line1\nline2");
    /* New values continue the numbering of the loaded ones. */
    const pii_entry_t *e = pii_map_put(&back, "EMAIL", "b@x.io", 6, &A);
    assert_string_equal(e->ph, "<EMAIL_2>");
    assert_int_equal(pii_map_decode(&back, "bad", 3, &A), -1);
}

static void
test_restore_leaves_unknown_placeholders(void **state) {
    (void)state;
    pii_map_t m = {0};
    pii_map_put(&m, "EMAIL", "a@x.io", 6, &A);
    pii_buf_t out = {0};
    const char *t = "<EMAIL_1> <EMAIL_2> <<EMAIL_1>> <email_1>";
    assert_int_equal(pii_restore(&m, t, strlen(t), &out, &A), 0);
    assert_string_equal(out.p, "a@x.io <EMAIL_2> <a@x.io> <email_1>");
}

static void
map_with_two(pii_map_t *m) {
    memset(m, 0, sizeof(*m));
    pii_map_add(m, "<EMAIL_1>", 9, "ann@example.com", 15, &A);
    pii_map_add(m, "<EMAIL_12>", 10, "zed@example.com", 15, &A);
    pii_map_add(m, "<PHONE_1>", 9, "+1 415 555 2671", 15, &A);
}

/* What may be held after text: the suffix from its last '<' when that
 * is a proper prefix of a placeholder of the map, else nothing. */
static size_t
expected_hold(const pii_map_t *m, const char *t, size_t n) {
    const char *lt = NULL;
    for (size_t i = 0; i < n; i++)
        if (t[i] == '<')
            lt = t + i;
    if (lt == NULL)
        return 0;
    size_t k = (size_t)(t + n - lt);
    for (size_t i = 0; i < m->n; i++)
        if (m->e[i].phlen > k && memcmp(m->e[i].ph, lt, k) == 0)
            return k;
    return 0;
}

static void
test_placeholder_split_at_every_byte_is_restored_and_holds_minimum(
    void **state) {
    (void)state;
    pii_map_t m;
    map_with_two(&m);
    const char *texts[] = {
        "Write to <EMAIL_1> now",
        "<EMAIL_12>",
        "a<EMAIL_1><PHONE_1>b <EMAIL_1",
        "x < y and <EMAIL_2> stays, <EMAIL_1>.",
    };
    for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
        const char *s = texts[t];
        size_t n = strlen(s);
        pii_buf_t want = {0};
        pii_restore(&m, s, n, &want, &A);
        for (size_t cut = 0; cut <= n; cut++) {
            pii_stream_t st = {0};
            pii_buf_t first = {0}, rest = {0};
            assert_int_equal(
                pii_stream_feed(&st, &m, NULL, 0, s, cut, 0, &first, &A), 0);
            /* Only a partial placeholder waits; everything else went. */
            size_t hold = expected_hold(&m, s, cut);
            assert_int_equal(st.pending.n, hold);
            pii_buf_t sent = {0};
            pii_restore(&m, s, cut - hold, &sent, &A);
            assert_int_equal(first.n, sent.n);
            assert_memory_equal(first.p, sent.p, sent.n);
            assert_int_equal(pii_stream_feed(&st, &m, NULL, 0, s + cut, n - cut,
                                             0, &rest, &A),
                             0);
            pii_buf_t fin = {0};
            pii_stream_feed(&st, &m, NULL, 0, "", 0, 1, &fin, &A);
            pii_buf_t all = {0};
            pii_buf_add(&all, first.p, first.n, &A);
            pii_buf_add(&all, rest.p, rest.n, &A);
            pii_buf_add(&all, fin.p, fin.n, &A);
            if (strcmp(all.p, want.p) != 0)
                fail_msg("text %zu cut %zu: got '%s' want '%s'", t, cut, all.p,
                         want.p);
        }
    }
}

static void
test_three_way_splits_restore_too(void **state) {
    (void)state;
    pii_map_t m;
    map_with_two(&m);
    const char *s = "Hi <EMAIL_1>, call <PHONE_1>!";
    size_t n = strlen(s);
    pii_buf_t want = {0};
    pii_restore(&m, s, n, &want, &A);
    for (size_t i = 0; i <= n; i++)
        for (size_t j = i; j <= n; j++) {
            pii_stream_t st = {0};
            pii_buf_t out = {0};
            pii_stream_feed(&st, &m, NULL, 0, s, i, 0, &out, &A);
            pii_stream_feed(&st, &m, NULL, 0, s + i, j - i, 0, &out, &A);
            pii_stream_feed(&st, &m, NULL, 0, s + j, n - j, 0, &out, &A);
            pii_stream_feed(&st, &m, NULL, 0, "", 0, 1, &out, &A);
            assert_string_equal(out.p, want.p);
        }
}

static void
test_no_map_means_no_holding(void **state) {
    (void)state;
    pii_map_t empty = {0};
    pii_stream_t st = {0};
    pii_buf_t out = {0};
    pii_stream_feed(&st, &empty, NULL, 0, "a <EMAIL_", 9, 0, &out, &A);
    assert_string_equal(out.p, "a <EMAIL_");
    assert_int_equal(st.pending.n, 0);
}

/* A value the model produced, cut at every byte: the raw value never
 * reaches the output, whichever event carries which part. */
static void
test_value_split_at_every_byte_is_masked_in_answers(void **state) {
    (void)state;
    pii_detectors_t ds = all_detectors(PII_MODE_REDACT);
    pii_map_t m;
    map_with_two(&m);
    const char *texts[] = {
        "contact bob.smith@example.com today",
        "card 4111 1111 1111 1111 expires soon",
        "Reach <EMAIL_1> or +44 20 7946 0958 and ok",
        "iban DE89 3704 0044 0532 0130 00 thanks",
        "use Bearer abcDEF123456ghiJKL789xyz please",
    };
    const char *want[] = {
        "contact [EMAIL] today",
        "card [CARD] expires soon",
        "Reach ann@example.com or [PHONE] and ok",
        "iban [IBAN] thanks",
        "use Bearer [SECRET] please",
    };
    const char *raw[] = {"bob.smith", "1111 1111", "7946", "0532", "abcDEF"};
    for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
        const char *s = texts[t];
        size_t n = strlen(s);
        for (size_t cut = 0; cut <= n; cut++) {
            pii_stream_t st = {0};
            pii_buf_t out = {0};
            pii_stream_feed(&st, &m, &ds, PII_MODE_REDACT, s, cut, 0, &out, &A);
            pii_stream_feed(&st, &m, &ds, PII_MODE_REDACT, s + cut, n - cut, 0,
                            &out, &A);
            pii_stream_feed(&st, &m, &ds, PII_MODE_REDACT, "", 0, 1, &out, &A);
            if (strcmp(out.p, want[t]) != 0)
                fail_msg("text %zu cut %zu: got '%s'", t, cut, out.p);
            assert_null(strstr(out.p, raw[t]));
        }
    }
    pii_detectors_free(&ds);
}

int
main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(
            test_validators_accept_real_values_and_refuse_lookalikes, free_all),
        cmocka_unit_test_teardown(
            test_tokenize_gives_one_placeholder_per_value_and_numbers_per_label,
            free_all),
        cmocka_unit_test_teardown(test_redact_and_mask_modes, free_all),
        cmocka_unit_test_teardown(
            test_values_with_just_what_the_prefilter_asks_are_still_found,
            free_all),
        cmocka_unit_test_teardown(
            test_email_found_anywhere_in_a_long_text_and_local_part_capped,
            free_all),
        cmocka_unit_test_teardown(test_secrets_and_private_key_blocks,
                                  free_all),
        cmocka_unit_test_teardown(test_custom_pattern_reports_the_pcre2_offset,
                                  free_all),
        cmocka_unit_test_teardown(test_map_survives_encode_and_decode,
                                  free_all),
        cmocka_unit_test_teardown(test_restore_leaves_unknown_placeholders,
                                  free_all),
        cmocka_unit_test_teardown(
            test_placeholder_split_at_every_byte_is_restored_and_holds_minimum,
            free_all),
        cmocka_unit_test_teardown(test_three_way_splits_restore_too, free_all),
        cmocka_unit_test_teardown(test_no_map_means_no_holding, free_all),
        cmocka_unit_test_teardown(
            test_value_split_at_every_byte_is_masked_in_answers, free_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
