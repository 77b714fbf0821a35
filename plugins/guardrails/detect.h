/* The prompt-injection detector: text is normalised (case, spacing,
 * leetspeak, Unicode look-alikes, invisible characters) and scored against
 * a fixed set of weighted phrasings of known injection and jailbreak
 * prompts. Compiled once per plugin instance; scoring is read-only on the
 * detector, so every worker thread may score at once. */
#ifndef GR_DETECT_H
#define GR_DETECT_H

#include <stddef.h>
#include <stdint.h>

typedef struct gr_detector gr_detector_t;

/* Compiles the phrase set. 0, or -1 with err set. */
int gr_detector_create(gr_detector_t **out, char *err, size_t errlen);
void gr_detector_free(gr_detector_t *d);

/* Writes the normalised form of in[0..len) to out (cap >= len + 1 is
 * always enough: it never grows): lower-case ASCII words separated by
 * single spaces. Returns its length. */
size_t gr_normalize(const char *in, size_t len, char *out, size_t cap);

/* The injection score of in[0..len): the sum of the weights of the
 * phrasings found. *top (may be NULL) gets the id of the heaviest one
 * found, or NULL. A negative score means out of memory. */
double gr_injection_score(const gr_detector_t *d, const char *in, size_t len,
                          const char **top);

/* For tests: bit i of *found is set when phrase i matches in[0..len)
 * with every pattern run, of *armed when the word prefilter lets its
 * pattern run. A phrase found but not armed is a prefilter bug. 0, or
 * -1 on out of memory. */
int gr_phrases_check(const gr_detector_t *d, const char *in, size_t len,
                     uint64_t *found, uint64_t *armed);

#endif
