/* consumer.c - proves the installed header, library and package files work together. */
#include <posh.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    int ok = ctx != NULL && SSL_CTX_set_posh_verify(ctx, "xmpp-server") == 1 &&
             strcmp(posh_version(), POSH_VERSION_STRING) == 0 &&
             (SSL_CTX_get_verify_mode(ctx) & SSL_VERIFY_PEER) != 0;
    SSL_CTX_free(ctx);
    printf("consumer: %s (posh %s)\n", ok ? "ok" : "FAILED", posh_version());
    return ok ? 0 : 1;
}
