/* SPDX-License-Identifier: MIT
 * A handler in C: upper-cases each object. fabric-shm-worker --handler ./upper_handler */
#include <ctype.h>

#include "fabric_shm_handler.h"

static int upper(void *ctx, const fshm_request *req, fshm_reply *reply) {
    (void)ctx;
    unsigned char *out = fshm_reply_alloc(reply, req->data_len);
    if (!out) return fshm_reply_error(reply, FSHM_RETRYABLE, "out of memory");
    for (uint32_t i = 0; i < req->data_len; ++i) out[i] = (unsigned char)toupper(req->data[i]);
    return FSHM_OK;
}

int main(void) { return fshm_handler_run(upper, NULL); }
