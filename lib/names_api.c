/*
 * names_api.c - for applications that check the peer's name themselves (socat, after the handshake): one call to
 * put where they call X509_check_host() today, answering for the connection's POSH approval as well.
 */
#include "client_internal.h"

#include <openssl/x509v3.h>
#include <string.h>

int SSL_check_posh_host(SSL *ssl, X509 *cert, const char *name, size_t namelen, unsigned int flags, char **peername)
{
    char given[POSH_MAX_DOMAIN_LEN + 2], norm[POSH_MAX_DOMAIN_LEN + 2];
    const char *vouched;
    X509 *peer;
    int r;

    if (peername != NULL)
        *peername = NULL;
    if (cert == NULL || name == NULL)
        return -1;
    if ((r = X509_check_host(cert, name, namelen, flags, peername)) != 0)
        return r;
    /*
     * POSH's approval speaks for this connection's peer certificate only: cert must be it (the object or a copy
     * of it, compared by content), and the name must be exactly the source domain POSH vouched for.
     */
    if (ssl == NULL || (vouched = SSL_get_posh_vouched_name(ssl)) == NULL ||
        (peer = SSL_get0_peer_certificate(ssl)) == NULL || X509_cmp(peer, cert) != 0)
        return 0;
    if (namelen == 0)
        namelen = strlen(name);
    if (namelen >= sizeof(given) || memchr(name, '\0', namelen) != NULL)
        return 0;
    memcpy(given, name, namelen);
    given[namelen] = '\0';
    if (posh_domain_normalize(given, norm, sizeof(norm)) != POSH_OK || strcmp(norm, vouched) != 0)
        return 0;
    if (peername != NULL && (*peername = OPENSSL_strdup(given)) == NULL)
        return -1;
    return 1;
}
