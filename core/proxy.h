/* Model endpoints: decode the body once, pick a target, hand the request to
 * the provider's adapter. */
#ifndef SL_PROXY_H
#define SL_PROXY_H

#include "request.h"

void sl_proxy_chat(sl_request_t *r);
void sl_proxy_embeddings(sl_request_t *r);
/* A chat call the gateway makes itself (subcall.c): the route's plugins
 * and script do not run. */
void sl_proxy_subcall(sl_request_t *r);

#endif
