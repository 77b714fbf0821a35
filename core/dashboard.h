/* The dashboard: a static page and its assets, embedded in the binary at
 * build time (dashboard/embed.sh writes the table) and served by the admin
 * listener under /dashboard. The files are public; the page reads every
 * number through the admin API with the admin token. */
#ifndef SL_DASHBOARD_H
#define SL_DASHBOARD_H

#include <stddef.h>

typedef struct {
    const char *path; /* "/dashboard/app.js" */
    const char *content_type;
    const unsigned char *data;
    size_t len;
} sl_dashboard_file_t;

extern const sl_dashboard_file_t sl_dashboard_files[];
extern const size_t sl_dashboard_nfiles;

/* The embedded file served at path[0..len), or NULL. "/dashboard" and
 * "/dashboard/" are the page itself. */
const sl_dashboard_file_t *sl_dashboard_find(const char *path, size_t len);

/* Whether path[0..len) is /dashboard or under /dashboard/. */
int sl_dashboard_path(const char *path, size_t len);

struct sl_request;
/* Answers a request whose path is a dashboard path (GET and HEAD only). */
void sl_dashboard_serve(struct sl_request *r);

#endif
