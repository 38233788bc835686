/*
 * errors.c - the stable error strings. A switch without default so that -Wswitch-enum flags a missing code.
 */
#include "posh_internal.h"

const char *posh_strerror(posh_err err)
{
    switch (err) {
    case POSH_OK: return "success";
    case POSH_ERR_NOMEM: return "out of memory";
    case POSH_ERR_INVALID_ARGUMENT: return "invalid argument";
    case POSH_ERR_CONFIG: return "invalid configuration";
    case POSH_ERR_BAD_DOMAIN: return "invalid source domain";
    case POSH_ERR_BAD_SERVICE: return "invalid service name";
    case POSH_ERR_NO_POSH: return "no POSH document published";
    case POSH_ERR_HTTP_STATUS: return "unexpected HTTP status";
    case POSH_ERR_CONNECT: return "could not connect to the web server";
    case POSH_ERR_TLS: return "HTTPS handshake or web server certificate verification failed";
    case POSH_ERR_TIMEOUT: return "lookup timed out";
    case POSH_ERR_TOO_LARGE: return "response body too large";
    case POSH_ERR_REDIRECT_SCHEME: return "redirect to a non-https URL";
    case POSH_ERR_TOO_MANY_REDIRECTS: return "too many redirects";
    case POSH_ERR_FETCH: return "HTTPS transfer failed";
    case POSH_ERR_JSON: return "malformed JSON";
    case POSH_ERR_DOCUMENT: return "invalid POSH document";
    case POSH_ERR_FINGERPRINT: return "malformed fingerprint";
    case POSH_ERR_EXPIRES: return "invalid or missing expires";
    case POSH_ERR_REFERENCE_URL: return "invalid reference URL";
    case POSH_ERR_REFERENCE_CHAIN: return "reference points to another reference";
    case POSH_ERR_REFERENCE_TARGET: return "referenced document not found";
    case POSH_ERR_NO_MATCH: return "certificate not vouched for by the POSH document";
    case POSH_ERR_NO_REFERENCE_ID: return "no reference identifier for POSH";
    case POSH_ERR_CERTIFICATE: return "peer certificate unreadable";
    case POSH_ERR_INTERNAL: return "internal error";
    case POSH_ERR_BUSY: return "too many lookups in flight or waiting in the non-blocking engine";
    case POSH_ERR_CANCELLED: return "lookup abandoned";
    case POSH_ERR_NO_DELEGATION: return "no service delegation document published";
    }
    return "unknown error";
}

const char *posh_version(void)
{
    return POSH_VERSION_STRING;
}
