/* The request journal behind GET /mock/requests: the last requests on /v1,
 * so a test can see exactly what the gateway sent upstream. Workers share it
 * under one mutex; that is test-only state, not a hot-path design. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "mock.h"

/* One request in one allocation: the strings follow the struct. */
typedef struct entry {
    const char *method;
    const char *path;
    int nhdr;
    const char **names;
    const char **values;
    const char *body;
} entry_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static entry_t *ring[MOCK_JOURNAL_SIZE];
static size_t next_slot; /* where the next entry goes */
static size_t count;

static char *
put(char **at, const char *s, size_t n)
{
    char *start = *at;
    memcpy(start, s, n);
    start[n] = '\0';
    *at += n + 1;
    return start;
}

void
mock_journal_record(const mock_req_t *r)
{
    size_t size = sizeof(entry_t) + 2 * sizeof(char *) * (size_t)r->nhdr;
    size += strlen(r->method) + strlen(r->target) + r->body_len + 3;
    for (int i = 0; i < r->nhdr; i++)
        size += strlen(r->hdr[i].name) + strlen(r->hdr[i].value) + 2;
    entry_t *e = malloc(size);
    if (!e)
        abort();
    e->nhdr = r->nhdr;
    e->names = (const char **)(e + 1);
    e->values = e->names + r->nhdr;
    char *at = (char *)(e->values + r->nhdr);
    e->method = put(&at, r->method, strlen(r->method));
    e->path = put(&at, r->target, strlen(r->target));
    e->body = put(&at, r->body ? r->body : "", r->body_len);
    for (int i = 0; i < r->nhdr; i++) {
        e->names[i] = put(&at, r->hdr[i].name, strlen(r->hdr[i].name));
        e->values[i] = put(&at, r->hdr[i].value, strlen(r->hdr[i].value));
    }

    pthread_mutex_lock(&lock);
    entry_t *old = ring[next_slot];
    ring[next_slot] = e;
    next_slot = (next_slot + 1) % MOCK_JOURNAL_SIZE;
    if (count < MOCK_JOURNAL_SIZE)
        count++;
    pthread_mutex_unlock(&lock);
    free(old);
}

static cJSON *
entry_json(const entry_t *e)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "method", e->method);
    cJSON_AddStringToObject(o, "path", e->path);
    cJSON *h = cJSON_AddObjectToObject(o, "headers");
    for (int i = 0; i < e->nhdr; i++) {
        cJSON *prev = cJSON_GetObjectItemCaseSensitive(h, e->names[i]);
        if (!prev) {
            cJSON_AddStringToObject(h, e->names[i], e->values[i]);
            continue;
        }
        /* A repeated header reads as one, its values joined as in HTTP. */
        size_t n = strlen(prev->valuestring) + strlen(e->values[i]) + 3;
        char *joined = malloc(n);
        if (!joined)
            abort();
        strcpy(joined, prev->valuestring);
        strcat(joined, ", ");
        strcat(joined, e->values[i]);
        cJSON_ReplaceItemInObjectCaseSensitive(h, e->names[i],
                                               cJSON_CreateString(joined));
        free(joined);
    }
    cJSON_AddStringToObject(o, "body", e->body);
    return o;
}

char *
mock_journal_json(void)
{
    cJSON *list = cJSON_CreateArray();
    pthread_mutex_lock(&lock);
    size_t first = (next_slot + MOCK_JOURNAL_SIZE - count) % MOCK_JOURNAL_SIZE;
    for (size_t i = 0; i < count; i++)
        cJSON_AddItemToArray(list,
                             entry_json(ring[(first + i) % MOCK_JOURNAL_SIZE]));
    pthread_mutex_unlock(&lock);
    char *json = cJSON_PrintUnformatted(list);
    cJSON_Delete(list);
    if (!json)
        abort();
    return json;
}

void
mock_journal_clear(void)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < MOCK_JOURNAL_SIZE; i++) {
        free(ring[i]);
        ring[i] = NULL;
    }
    next_slot = count = 0;
    pthread_mutex_unlock(&lock);
}
