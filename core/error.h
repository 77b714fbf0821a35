/* Error codes shared by the core, and the one OpenAI-shaped error builder. */
#ifndef SL_ERROR_H
#define SL_ERROR_H

#include <stddef.h>

enum {
    SL_OK = 0,
    SL_ENOMEM = -1,    /* out of memory */
    SL_EINVAL = -2,    /* invalid argument or input */
    SL_EAGAIN = -3,    /* need more input */
    SL_ETOOBIG = -4,   /* a size limit was exceeded */
    SL_EIO = -5,       /* a system call failed (see errno) */
    SL_ECONFIG = -6,   /* the configuration is invalid */
    SL_ENOTFOUND = -7, /* no such thing */
    SL_EUPSTREAM = -8, /* the upstream failed */
    SL_ETIMEDOUT = -9, /* a deadline passed */
};

/* A static name for an SL_E* code. */
const char *sl_strerror(int code);

/* The OpenAI `type` that goes with an HTTP status, e.g. 400 ->
 * "invalid_request_error", 401 -> "authentication_error". */
const char *sl_error_type_for_status(int status);

/* Writes {"error":{"message":...,"type":...,"code":...}} into buf (message
 * JSON-escaped; code may be NULL for a JSON null). Returns the length that
 * was needed, like snprintf; buf is always NUL-terminated when cap > 0. */
size_t sl_error_json(char *buf, size_t cap, const char *message,
                     const char *type, const char *code);

/* Appends s, JSON-escaped and without quotes, to buf; returns the length
 * needed, like snprintf (counting from `used`). */
size_t sl_json_escape(char *buf, size_t cap, size_t used, const char *s,
                      size_t len);

#endif
