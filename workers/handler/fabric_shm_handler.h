/* SPDX-License-Identifier: MIT
 * fabric_shm_handler.h: write a long-lived handler for `fabric-shm-worker --handler` in C or
 * C++. Header-only, C99, libc only (no fabric-shm library to link). The protocol is in
 * docs/handlers.md; this header speaks it:
 *
 *     #include "fabric_shm_handler.h"
 *     static int upper(void *ctx, const fshm_request *req, fshm_reply *reply) {
 *         unsigned char *out = fshm_reply_alloc(reply, req->data_len);
 *         if (!out) return FSHM_RETRYABLE;
 *         for (uint32_t i = 0; i < req->data_len; ++i) out[i] = (unsigned char)toupper(req->data[i]);
 *         return FSHM_OK;
 *     }
 *     int main(void) { return fshm_handler_run(upper, NULL); }
 *
 * The callback returns FSHM_OK with the result in the reply (fshm_reply_alloc or
 * fshm_reply_set), or FSHM_RETRYABLE / FSHM_PERMANENT with a message (fshm_reply_error).
 * Requests that arrive in one read are handled in turn and their replies written together in
 * one write (one pipe wake-up carries many objects). fshm_handler_run returns 0 when the
 * worker closes stdin (drain), 3 on a protocol error (after saying so on stderr).
 */
#ifndef FABRIC_SHM_HANDLER_H
#define FABRIC_SHM_HANDLER_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FSHM_PROTOCOL_VERSION 1
enum { FSHM_OK = 0, FSHM_RETRYABLE = 1, FSHM_PERMANENT = 2 };

typedef struct {
    uint64_t id;
    uint32_t attempt, partition;
    uint64_t offset, version;
    const char *uri; uint16_t uri_len;     /* not NUL-terminated */
    const char *key; uint16_t key_len;
    const char *topic; uint16_t topic_len;
    const unsigned char *data; uint32_t data_len;
} fshm_request;

typedef struct {
    unsigned char *buf; /* the reply body: result bytes or error message */
    uint32_t len, cap;
} fshm_reply;

typedef int (*fshm_handle_fn)(void *ctx, const fshm_request *req, fshm_reply *reply);

static inline unsigned char *fshm_reply_alloc(fshm_reply *r, uint32_t len) {
    if (len > r->cap) {
        unsigned char *b = (unsigned char *)realloc(r->buf, len ? len : 1);
        if (!b) return NULL;
        r->buf = b;
        r->cap = len;
    }
    r->len = len;
    return r->buf;
}
static inline int fshm_reply_set(fshm_reply *r, const void *p, uint32_t len) {
    unsigned char *b = fshm_reply_alloc(r, len);
    if (!b) return FSHM_RETRYABLE;
    if (len) memcpy(b, p, len);
    return FSHM_OK;
}
/* Sets the message of a failure; returns `status` (FSHM_RETRYABLE or FSHM_PERMANENT). */
static inline int fshm_reply_error(fshm_reply *r, int status, const char *message) {
    (void)fshm_reply_set(r, message, (uint32_t)strlen(message));
    return status;
}

static inline uint64_t fshm_le_(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= (uint64_t)p[i] << (8 * i);
    return v;
}
static inline void fshm_put_le_(unsigned char *p, uint64_t v, int n) {
    for (int i = 0; i < n; ++i) p[i] = (unsigned char)(v >> (8 * i));
}
typedef struct { unsigned char *p; size_t len, cap; } fshm_buf_;
static inline int fshm_reserve_(fshm_buf_ *b, size_t more) {
    if (b->len + more <= b->cap) return 1;
    size_t cap = b->cap ? b->cap * 2 : 65536;
    while (cap < b->len + more) cap *= 2;
    unsigned char *n = (unsigned char *)realloc(b->p, cap);
    if (!n) return 0;
    b->p = n;
    b->cap = cap;
    return 1;
}
static inline int fshm_write_all_(int fd, const unsigned char *p, size_t n) {
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return 0;
        p += k;
        n -= (size_t)k;
    }
    return 1;
}
static inline int fshm_fail_(const char *why) {
    fprintf(stderr, "fabric_shm_handler: protocol error: %s\n", why);
    return 3;
}

/* Serves requests on stdin/stdout until stdin closes. */
static inline int fshm_handler_run(fshm_handle_fn fn, void *ctx) {
    fshm_buf_ in = {0, 0, 0}, out = {0, 0, 0};
    fshm_reply reply = {0, 0, 0};
    int greeted = 0, rc = 0;
    for (;;) {
        if (!fshm_reserve_(&in, 1 << 20)) { rc = fshm_fail_("out of memory"); break; }
        ssize_t k = read(0, in.p + in.len, in.cap - in.len);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break; /* the worker closed stdin: drained */
        in.len += (size_t)k;
        size_t pos = 0;
        while (in.len - pos >= 5) {
            uint32_t flen = (uint32_t)fshm_le_(in.p + pos, 4);
            if (flen == 0) { rc = fshm_fail_("empty frame"); goto done; }
            if (in.len - pos - 4 < flen) {
                if (!fshm_reserve_(&in, flen + 4)) { rc = fshm_fail_("out of memory"); goto done; }
                break;
            }
            const unsigned char *b = in.p + pos + 5;
            uint32_t n = flen - 1;
            unsigned char type = in.p[pos + 4];
            if (type == 'H') {
                if (n < 8 || memcmp(b, "FSHM", 4) != 0) { rc = fshm_fail_("hello without the FSHM magic"); goto done; }
                if (fshm_le_(b + 4, 2) != FSHM_PROTOCOL_VERSION) { rc = fshm_fail_("unsupported protocol version"); goto done; }
                if (!fshm_reserve_(&out, 13)) { rc = fshm_fail_("out of memory"); goto done; }
                unsigned char *o = out.p + out.len;
                fshm_put_le_(o, 9, 4); o[4] = 'h'; memcpy(o + 5, "FSHM", 4);
                fshm_put_le_(o + 9, FSHM_PROTOCOL_VERSION, 2); fshm_put_le_(o + 11, 0, 2);
                out.len += 13;
                greeted = 1;
            } else if (type == 'Q' && greeted) {
                fshm_request r;
                uint32_t at = 32;
                if (n < at + 10) { rc = fshm_fail_("short request"); goto done; }
                r.id = fshm_le_(b, 8); r.attempt = (uint32_t)fshm_le_(b + 8, 4); r.partition = (uint32_t)fshm_le_(b + 12, 4);
                r.offset = fshm_le_(b + 16, 8); r.version = fshm_le_(b + 24, 8);
                const char **strs[3] = {&r.uri, &r.key, &r.topic};
                uint16_t *lens[3] = {&r.uri_len, &r.key_len, &r.topic_len};
                for (int i = 0; i < 3; ++i) {
                    if (at + 2 > n) { rc = fshm_fail_("short request"); goto done; }
                    *lens[i] = (uint16_t)fshm_le_(b + at, 2);
                    *strs[i] = (const char *)(b + at + 2);
                    at += 2u + *lens[i];
                }
                if (at + 4 > n) { rc = fshm_fail_("short request"); goto done; }
                r.data_len = (uint32_t)fshm_le_(b + at, 4);
                r.data = b + at + 4;
                if ((uint64_t)at + 4 + r.data_len != n) { rc = fshm_fail_("request length mismatch"); goto done; }
                reply.len = 0;
                int status = fn(ctx, &r, &reply);
                if (status != FSHM_OK && status != FSHM_RETRYABLE && status != FSHM_PERMANENT) status = FSHM_RETRYABLE;
                if (!fshm_reserve_(&out, 18 + (size_t)reply.len)) { rc = fshm_fail_("out of memory"); goto done; }
                unsigned char *o = out.p + out.len;
                fshm_put_le_(o, 14 + (uint64_t)reply.len, 4); o[4] = 'R';
                fshm_put_le_(o + 5, r.id, 8); o[13] = (unsigned char)status;
                fshm_put_le_(o + 14, reply.len, 4);
                if (reply.len) memcpy(o + 18, reply.buf, reply.len);
                out.len += 18 + (size_t)reply.len;
            } else {
                rc = fshm_fail_(type == 'Q' ? "a request before the hello" : "unknown frame type");
                goto done;
            }
            pos += 4 + (size_t)flen;
        }
        memmove(in.p, in.p + pos, in.len - pos);
        in.len -= pos;
        if (out.len) {
            if (!fshm_write_all_(1, out.p, out.len)) break; /* the worker went away */
            out.len = 0;
        }
    }
done:
    free(in.p);
    free(out.p);
    free(reply.buf);
    return rc;
}

#ifdef __cplusplus
}
#endif
#endif /* FABRIC_SHM_HANDLER_H */
