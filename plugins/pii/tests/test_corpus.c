/* Accuracy on the labelled corpus (tests/corpus/, made by make_corpus.py):
 * prints precision and recall per detector and fails below 0.95 on
 * either. A detection counts only when detector and span both match the
 * label exactly; anything found in negatives.txt is a false positive. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../pii.h"

#ifndef PII_CORPUS_DIR
#define PII_CORPUS_DIR "plugins/pii/tests/corpus"
#endif
#define BAR 0.95

static void *
leak_alloc(void *ud, size_t n) {
    void **list = ud;
    void **p = malloc(sizeof(void *) + n);
    if (p == NULL)
        return NULL;
    *p = *list; /* a chain, freed per line */
    *list = p;
    return p + 1;
}

static void
free_chain(void **list) {
    while (*list) {
        void **p = *list;
        *list = *p;
        free(p);
    }
}

typedef struct {
    size_t start, end;
    char det[32];
} label_t;

typedef struct {
    long tp, fp, fn;
} score_t;

static score_t scores[16];

static int
det_index(const char *name) {
    for (int i = 0; pii_builtin_names[i]; i++)
        if (strcmp(pii_builtin_names[i], name) == 0)
            return i;
    return -1;
}

/* Strips {{det:value}} marks (and turns "\n" into newlines), filling
 * labels; returns the clean text's length. */
static size_t
parse_line(const char *in, char *out, label_t *labels, size_t *nl) {
    size_t n = 0;
    *nl = 0;
    label_t *open = NULL;
    for (const char *p = in; *p && *p != '\n';) {
        if (open == NULL && p[0] == '{' && p[1] == '{') {
            const char *colon = strchr(p, ':');
            open = &labels[(*nl)++];
            snprintf(open->det, sizeof(open->det), "%.*s", (int)(colon - p - 2),
                     p + 2);
            open->start = n;
            p = colon + 1;
        } else if (open != NULL && p[0] == '}' && p[1] == '}') {
            open->end = n;
            open = NULL;
            p += 2;
        } else if (p[0] == '\\' && p[1] == 'n') {
            out[n++] = '\n';
            p += 2;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    return n;
}

static int
run_file(const pii_detectors_t *ds, const char *name) {
    char path[512], line[8192], text[8192];
    snprintf(path, sizeof(path), "%s/%s", PII_CORPUS_DIR, name);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        label_t labels[8];
        size_t nl;
        size_t n = parse_line(line, text, labels, &nl);
        void *chain = NULL;
        pii_alloc_t a = {leak_alloc, &chain};
        pii_matches_t ms = {0};
        if (pii_scan(ds, text, n, &ms, &a) != 0) {
            fclose(f);
            return -1;
        }
        int used[8] = {0};
        for (size_t i = 0; i < ms.n; i++) {
            int d = det_index(ms.m[i].det->name), hit = 0;
            for (size_t k = 0; k < nl; k++)
                if (!used[k] && labels[k].start == ms.m[i].start &&
                    labels[k].end == ms.m[i].end &&
                    strcmp(labels[k].det, ms.m[i].det->name) == 0)
                    used[k] = hit = 1;
            if (hit) {
                scores[d].tp++;
            } else {
                scores[d].fp++;
                printf("  false positive %-6s '%.*s' in: %s", ms.m[i].det->name,
                       (int)(ms.m[i].end - ms.m[i].start), text + ms.m[i].start,
                       line);
            }
        }
        for (size_t k = 0; k < nl; k++)
            if (!used[k]) {
                int d = det_index(labels[k].det);
                if (d < 0) {
                    printf("corpus names unknown detector %s\n", labels[k].det);
                    fclose(f);
                    return -1;
                }
                scores[d].fn++;
                printf("  missed %-6s '%.*s' in: %s", labels[k].det,
                       (int)(labels[k].end - labels[k].start),
                       text + labels[k].start, line);
            }
        free_chain(&chain);
    }
    fclose(f);
    return 0;
}

int
main(void) {
    pii_detectors_t ds = {0};
    char err[160];
    size_t nb = 0;
    for (; pii_builtin_names[nb]; nb++)
        if (pii_detectors_add_builtin(&ds, pii_builtin_names[nb],
                                      PII_MODE_REDACT, err, sizeof(err)) != 0) {
            printf("detector %s: %s\n", pii_builtin_names[nb], err);
            return 1;
        }
    if (run_file(&ds, "positives.txt") != 0 ||
        run_file(&ds, "negatives.txt") != 0)
        return 1;
    int bad = 0;
    printf("%-8s %6s %6s %6s %9s %7s\n", "detector", "tp", "fp", "fn",
           "precision", "recall");
    for (size_t i = 0; i < nb; i++) {
        score_t s = scores[i];
        double p = s.tp + s.fp ? (double)s.tp / (double)(s.tp + s.fp) : 1.0;
        double r = s.tp + s.fn ? (double)s.tp / (double)(s.tp + s.fn) : 1.0;
        int fail = p < BAR || r < BAR || s.tp == 0;
        bad |= fail;
        printf("%-8s %6ld %6ld %6ld %9.3f %7.3f%s\n", pii_builtin_names[i],
               s.tp, s.fp, s.fn, p, r, fail ? "  BELOW 0.95" : "");
    }
    pii_detectors_free(&ds);
    return bad;
}
