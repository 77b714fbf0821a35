/* Fuzzes the request-head parser and the chunked decoder for consistency:
 * the head parser must give the same answer whatever max_head (up to the 431
 * cut-off) and however much of the input has arrived, and the chunked decoder
 * the same bytes whatever the input is split into. Any disagreement aborts. */
#include "error.h"
#include "http_parse.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                               \
    do {                                                                       \
        if (!(x)) {                                                            \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,   \
                    #x);                                                       \
            abort();                                                           \
        }                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static void fuzz_chunked(const uint8_t *data, size_t size, uint32_t seed);

typedef struct {
    int rc;
    int status;
    const char *why;
    sl_http_request_t req;
} parsed_t;

static void
parse(const uint8_t *data, size_t len, size_t max_head, parsed_t *p)
{
    p->status = -1;
    p->why = "unset";
    p->rc = sl_http_parse_request((const char *)data, len, max_head, &p->req,
                                  &p->status, &p->why);
}

static int
lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c | 0x20 : c;
}

static int
names_equal(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 0;
    return 1;
}

static int
inside(const uint8_t *data, size_t n, const char *p, size_t len)
{
    return (const uint8_t *)p >= data && (const uint8_t *)p + len <= data + n;
}

/* What must hold of any accepted head. */
static void
check_accepted(const uint8_t *data, const parsed_t *p, size_t max_head)
{
    const sl_http_request_t *r = &p->req;
    size_t n = (size_t)p->rc;

    CHECK(p->status == 0 && p->why == NULL);
    CHECK(n <= max_head);
    CHECK(n >= 4 && memcmp(data + n - 4, "\r\n\r\n", 4) == 0);
    for (size_t i = 0; i < n; i++) {
        CHECK(data[i] != 0 && data[i] != 0x7f);
        if (data[i] == '\n')
            CHECK(i > 0 && data[i - 1] == '\r');
        if (data[i] == '\r')
            CHECK(i + 1 < n && data[i + 1] == '\n');
    }
    CHECK(r->version_minor == 0 || r->version_minor == 1);
    CHECK(inside(data, n, r->method_str, r->method_len) && r->method_len > 0);
    CHECK(inside(data, n, r->target, r->target_len) && r->target_len > 0);
    CHECK(r->target[0] == '/' || (r->target_len == 1 && r->target[0] == '*' &&
                                  r->method == SL_METHOD_OPTIONS));
    for (size_t i = 0; i < r->target_len; i++)
        CHECK((unsigned char)r->target[i] > 0x20 &&
              (unsigned char)r->target[i] < 0x7f);
    CHECK(r->path == r->target && r->path_len <= r->target_len);
    CHECK(memchr(r->path, '?', r->path_len) == NULL);
    CHECK(r->nheaders <= SL_HTTP_MAX_HEADERS);
    CHECK(r->content_length >= -1);
    CHECK(!(r->chunked && r->content_length >= 0));
    CHECK(r->chunked == 0 || r->chunked == 1);
    CHECK(!(r->chunked && r->version_minor == 0));
    CHECK(r->keep_alive == 0 || r->keep_alive == 1);
    CHECK(!(r->expect_continue && r->version_minor == 0));

    int hosts = 0, cls = 0, tes = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        const sl_http_header_t *h = &r->headers[i];
        CHECK(h->name_len > 0 && inside(data, n, h->name, h->name_len));
        CHECK(inside(data, n, h->value, h->value_len));
        if (h->value_len > 0) {
            char a = h->value[0], z = h->value[h->value_len - 1];
            CHECK(a != ' ' && a != '\t' && z != ' ' && z != '\t');
        }
        for (size_t k = 0; k < h->value_len; k++) {
            unsigned char c = (unsigned char)h->value[k];
            CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
        }
        hosts += h->name_len == 4 && names_equal(h->name, "host", 4);
        cls += h->name_len == 14 && names_equal(h->name, "content-length", 14);
        tes +=
            h->name_len == 17 && names_equal(h->name, "transfer-encoding", 17);

        /* lookup by the same name finds the first field so named */
        char name[8192];
        if (h->name_len < sizeof(name)) {
            memcpy(name, h->name, h->name_len);
            name[h->name_len] = '\0';
            const sl_http_header_t *f = sl_http_header_find(r, name);
            CHECK(f != NULL && f <= h && f->name_len == h->name_len);
            CHECK(names_equal(f->name, h->name, h->name_len));
        }
    }
    CHECK(hosts <= 1 && cls <= 1 && tes <= 1 && !(cls && tes));
    CHECK(r->version_minor == 0 || hosts == 1);
    CHECK(tes == r->chunked);
    CHECK((r->content_length >= 0) == (cls == 1));
}

static void
check_same(const parsed_t *a, const parsed_t *b)
{
    CHECK(a->rc == b->rc);
    CHECK(a->status == b->status);
    CHECK((a->why == NULL) == (b->why == NULL));
    if (a->why != NULL)
        CHECK(strcmp(a->why, b->why) == 0);
    if (a->rc > 0) {
        CHECK(a->req.nheaders == b->req.nheaders);
        CHECK(a->req.content_length == b->req.content_length);
        CHECK(a->req.chunked == b->req.chunked);
        CHECK(a->req.keep_alive == b->req.keep_alive);
        CHECK(a->req.expect_continue == b->req.expect_continue);
        CHECK(a->req.method == b->req.method);
        CHECK(a->req.target_len == b->req.target_len);
    }
}

static void
fuzz_head(const uint8_t *data, size_t size, uint32_t seed)
{
    static parsed_t ref, p;
    static const size_t heads[] = {0, 1, 16, 64, 333, 4096};

    /* No limit: the reference answer. */
    parse(data, size, SIZE_MAX, &ref);
    if (ref.rc > 0) {
        check_accepted(data, &ref, SIZE_MAX);
    } else if (ref.rc == SL_EAGAIN) {
        CHECK(ref.status == 0 && ref.why == NULL);
    } else {
        CHECK(ref.why != NULL && ref.why[0] != '\0');
        CHECK((ref.rc == SL_EINVAL &&
               (ref.status == 400 || ref.status == 501 || ref.status == 505)) ||
              (ref.rc == SL_ETOOBIG && ref.status == 431));
    }

    /* A limit changes the answer only into 431, and only when the head
     * (or what is there of it) does not fit. */
    for (size_t k = 0; k < sizeof(heads) / sizeof(heads[0]); k++) {
        size_t m = heads[k];
        parse(data, size, m, &p);
        if (p.rc == SL_ETOOBIG) {
            CHECK(p.status == 431 && p.why != NULL);
            if (ref.status != 431)
                CHECK(ref.rc > 0 ? (size_t)ref.rc > m : size >= m);
        } else {
            check_same(&ref, &p);
        }
    }
    if (ref.rc > 0) {
        size_t n = (size_t)ref.rc;
        parse(data, size, n, &p);
        check_same(&ref, &p);
        parse(data, size, n - 1, &p);
        CHECK(p.rc == SL_ETOOBIG && p.status == 431);
        /* bytes after the head do not matter */
        parse(data, n, SIZE_MAX, &p);
        check_same(&ref, &p);
    }

    /* Less of the input: a prefix of an accepted head or of a head that is
     * still incomplete needs more (a prefix holding the whole head parses the
     * same); a prefix past the first error fails the same way. */
    size_t cuts[3] = {size ? size - 1 : 0, size / 2, size ? seed % size : 0};
    for (size_t k = 0; k < 3; k++) {
        size_t c = cuts[k];
        if (c >= size)
            continue;
        uint8_t *copy = malloc(c ? c : 1);
        memcpy(copy, data, c);
        parse(copy, c, SIZE_MAX, &p);
        if (ref.rc > 0 && c >= (size_t)ref.rc) {
            check_same(&ref, &p);
        } else if (ref.rc > 0 || ref.rc == SL_EAGAIN) {
            CHECK(p.rc == SL_EAGAIN && p.status == 0 && p.why == NULL);
        } else if (p.rc != SL_EAGAIN) {
            CHECK(p.rc < 0);
            CHECK(p.status == ref.status && strcmp(p.why, ref.why) == 0);
        }
        free(copy);
    }

    /* The body that follows a chunked head. */
    if (ref.rc > 0 && ref.req.chunked)
        fuzz_chunked(data + ref.rc, size - (size_t)ref.rc, seed);
}

typedef struct {
    ssize_t rc; /* the error, or the total consumed */
    const char *why;
    size_t out_len;
    int done;
    uint64_t total;
} decoded_t;

/* Decodes data fed in the pieces cut at the ascending positions cuts[]. */
static void
decode_cuts(const uint8_t *data, size_t size, const size_t *cuts, size_t ncuts,
            uint64_t max_body, char *out, decoded_t *d)
{
    sl_chunked_t c;
    size_t start = 0, consumed = 0;

    sl_chunked_init(&c);
    memset(d, 0, sizeof(*d));
    for (size_t k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts ? cuts[k] : size;
        size_t n = end - start, out_n = (size_t)-1;
        const char *why = "unset";
        /* each piece in its own allocation so over-reads are caught */
        char *piece = malloc(n ? n : 1);
        memcpy(piece, data + start, n);
        ssize_t rc = sl_chunked_decode(&c, piece, n, out + d->out_len, &out_n,
                                       max_body, &why);
        free(piece);
        CHECK(out_n <= n);
        d->out_len += out_n;
        if (rc < 0) {
            CHECK(rc == SL_EINVAL || rc == SL_ETOOBIG);
            CHECK(why != NULL && why[0] != '\0');
            d->rc = rc;
            d->why = why;
            break;
        }
        CHECK(why == NULL);
        CHECK((size_t)rc <= n);
        CHECK((size_t)rc >= out_n);
        consumed += (size_t)rc;
        if ((size_t)rc < n) {
            CHECK(c.done);
            break;
        }
        start = end;
    }
    if (d->rc == 0)
        d->rc = (ssize_t)consumed;
    d->done = c.done;
    d->total = c.total;
    CHECK(d->rc < 0 || d->total == d->out_len);
    CHECK(d->total <= max_body);
}

static void
check_same_decoding(const decoded_t *a, const char *aout, const decoded_t *b,
                    const char *bout)
{
    CHECK(a->rc == b->rc);
    CHECK(a->done == b->done);
    CHECK(a->out_len == b->out_len);
    CHECK(memcmp(aout, bout, a->out_len) == 0);
    CHECK((a->why == NULL) == (b->why == NULL));
    if (a->why != NULL)
        CHECK(strcmp(a->why, b->why) == 0);
}

static uint32_t
next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static void
fuzz_chunked(const uint8_t *data, size_t size, uint32_t seed)
{
    static const uint64_t bodies[] = {0, 7, 100, UINT64_MAX};
    char *ref_out = malloc(size + 1), *out = malloc(size + 1);
    size_t *cuts = malloc((size + 8) * sizeof(*cuts)); /* >= 6 cuts */
    decoded_t ref, d;

    for (size_t b = 0; b < sizeof(bodies) / sizeof(bodies[0]); b++) {
        uint64_t max_body = bodies[b];
        decode_cuts(data, size, NULL, 0, max_body, ref_out, &ref);

        /* a byte at a time */
        for (size_t i = 0; i < size; i++)
            cuts[i] = i + 1;
        decode_cuts(data, size, cuts, size ? size - 1 : 0, max_body, out, &d);
        check_same_decoding(&ref, ref_out, &d, out);

        /* a few random cuts, empty pieces included */
        uint32_t s = seed | 1;
        for (int round = 0; round < 4; round++) {
            size_t ncuts = size ? next(&s) % 6 : 0;
            for (size_t i = 0; i < ncuts; i++)
                cuts[i] = next(&s) % (size + 1);
            for (size_t i = 1; i < ncuts; i++) /* insertion sort */
                for (size_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
                    size_t t = cuts[j];
                    cuts[j] = cuts[j - 1];
                    cuts[j - 1] = t;
                }
            decode_cuts(data, size, cuts, ncuts, max_body, out, &d);
            check_same_decoding(&ref, ref_out, &d, out);
        }

        if (ref.rc >= 0 && ref.done) {
            /* it stopped at the end of the body: that much alone is the
             * whole body */
            decode_cuts(data, (size_t)ref.rc, NULL, 0, max_body, out, &d);
            check_same_decoding(&ref, ref_out, &d, out);
        } else if (ref.rc >= 0) {
            CHECK((size_t)ref.rc == size);
        }
        /* a bigger limit accepts whatever a smaller one accepted */
        if (ref.rc >= 0 && max_body != UINT64_MAX) {
            decode_cuts(data, size, NULL, 0, UINT64_MAX, out, &d);
            check_same_decoding(&ref, ref_out, &d, out);
        }
    }
    free(cuts);
    free(out);
    free(ref_out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t seed = 2166136261u;
    for (size_t i = 0; i < size; i++)
        seed = (seed ^ data[i]) * 16777619u;
    fuzz_head(data, size, seed);
    fuzz_chunked(data, size, seed);
    return 0;
}
