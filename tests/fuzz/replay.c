/* Replays fuzz inputs without libFuzzer, so a gcc build can run a harness
 * over its seed corpus (and crash reproducers) as an ordinary test. Link it
 * with one fuzz_*.c file. Inputs: every regular file in SL_CORPUS (a string
 * macro, optional) and every path given on the command line (a file, or a
 * directory whose files are all replayed). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional in a harness, as with libFuzzer. */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Replays one file; returns 1 if it was replayed, 0 if skipped, -1 on a read
 * error. */
static int
replay_file(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    size_t cap = (size_t)st.st_size, len = 0;
    /* an exact-size buffer, so a harness reading past the input is caught
     * by the sanitizers as it would be under libFuzzer */
    uint8_t *buf = malloc(cap ? cap : 1);
    if (buf == NULL) {
        fclose(f);
        return -1;
    }
    len = fread(buf, 1, cap, f);
    int err = ferror(f);
    fclose(f);
    if (err) {
        perror(path);
        free(buf);
        return -1;
    }
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 1;
}

static int
skip_dot(const struct dirent *e)
{
    return e->d_name[0] != '.';
}

/* Replays every regular file in dir, in name order; adds to *count. */
static int
replay_dir(const char *dir, size_t *count)
{
    struct dirent **names;
    int n = scandir(dir, &names, skip_dot, alphasort);
    int rc = 0;
    if (n < 0) {
        perror(dir);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        size_t len = strlen(dir) + strlen(names[i]->d_name) + 2;
        char *path = malloc(len);
        if (path != NULL) {
            snprintf(path, len, "%s/%s", dir, names[i]->d_name);
            int r = replay_file(path);
            if (r > 0)
                (*count)++;
            else if (r < 0)
                rc = -1;
            free(path);
        } else {
            rc = -1;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

static int
replay_path(const char *path, size_t *count)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        perror(path);
        return -1;
    }
    if (S_ISDIR(st.st_mode))
        return replay_dir(path, count);
    int r = replay_file(path);
    if (r > 0)
        (*count)++;
    return r < 0 ? -1 : 0;
}

int
main(int argc, char **argv)
{
    size_t count = 0;
    int failed = 0;

    if (LLVMFuzzerInitialize != NULL)
        LLVMFuzzerInitialize(&argc, &argv);
#ifdef SL_CORPUS
    size_t before = count;
    if (replay_dir(SL_CORPUS, &count) != 0)
        failed = 1;
    if (count == before) {
        fprintf(stderr, "no inputs in %s\n", SL_CORPUS);
        failed = 1;
    }
#endif
    for (int i = 1; i < argc; i++)
        if (replay_path(argv[i], &count) != 0)
            failed = 1;
    printf("replayed %zu inputs\n", count);
    if (count == 0)
        failed = 1;
    return failed ? 1 : 0;
}
