#include "dashboard.h"
#include "request.h"

#include <string.h>

#define PREFIX "/dashboard"
#define PREFIX_LEN (sizeof(PREFIX) - 1)

/* The page loads nothing from elsewhere (no CDN) and may not be framed;
 * the data calls go to this listener only. Chart.js sets canvas sizes
 * through element.style, which style-src does not govern. */
#define HEADERS                                                                \
    "Cache-Control: no-cache\r\n"                                              \
    "X-Content-Type-Options: nosniff\r\n"                                      \
    "Referrer-Policy: no-referrer\r\n"                                         \
    "Content-Security-Policy: default-src 'none'; script-src 'self'; "         \
    "style-src 'self'; img-src 'self' data:; connect-src 'self'; "             \
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'\r\n"

int
sl_dashboard_path(const char *path, size_t len)
{
    return len >= PREFIX_LEN && memcmp(path, PREFIX, PREFIX_LEN) == 0 &&
           (len == PREFIX_LEN || path[PREFIX_LEN] == '/');
}

const sl_dashboard_file_t *
sl_dashboard_find(const char *path, size_t len)
{
    static const char index[] = PREFIX "/index.html";
    if (!sl_dashboard_path(path, len))
        return NULL;
    if (len <= PREFIX_LEN + 1) {
        path = index;
        len = sizeof(index) - 1;
    }
    for (size_t i = 0; i < sl_dashboard_nfiles; i++) {
        const sl_dashboard_file_t *f = &sl_dashboard_files[i];
        if (strlen(f->path) == len && memcmp(f->path, path, len) == 0)
            return f;
    }
    return NULL;
}

void
sl_dashboard_serve(sl_request_t *r)
{
    if (r->http.method != SL_METHOD_GET && r->http.method != SL_METHOD_HEAD) {
        sl_response_error_with(r, 405, "the dashboard is read-only: GET",
                               "method_not_allowed", "Allow: GET, HEAD\r\n");
        return;
    }
    const sl_dashboard_file_t *f = sl_dashboard_find(r->http.path,
                                                     r->http.path_len);
    if (f == NULL) {
        sl_response_error(r, 404, "no dashboard file at this path",
                          "not_found");
        return;
    }
    sl_response_send(r, 200, f->content_type, HEADERS,
                     (const char *)f->data, f->len);
}
