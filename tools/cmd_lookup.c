/*
 * cmd_lookup.c - `posh lookup [-s SERVICE] DOMAIN`: the library's full lookup (both layouts, redirects, the
 * reference hop), printed as one JSON object.
 */
#include "cli.h"

#include <stdio.h>

#define CMD "lookup"

static const char lookup_help[] =
    "usage: posh lookup [-s SERVICE] DOMAIN\n"
    "\n"
    "Fetch DOMAIN's POSH document for SERVICE over verified HTTPS, as a TLS client would (both URL layouts,\n"
    "redirects, the reference hop), and print the result as one JSON object:\n"
    "  domain, service, requests [{url, status}] (status null when no HTTP response came), followed_reference,\n"
    "  format (the form of the document read: \"fingerprints\" (RFC 7711) or \"jwk\" (a JWK Set, as the drafts\n"
    "  before June 2014 published); null on failure), ttl (the effective lifetime in seconds, null on failure),\n"
    "  fingerprints [{\"sha-256\": base64, ...}] (every hash of every descriptor; for a JWK Set, each key's\n"
    "  x5t#S256 or the SHA-256 of its x5c[0] as \"sha-256\" and its x5t as \"sha-1\", in standard base64),\n"
    "  error (null, or {code, name, description, message}).\n"
    "\n"
    "  -s, --service SERVICE   the service, as RFC 7711 names it (default xmpp-server); the SRV form\n"
    "                          _SERVICE._PROTO is accepted too\n"
    "  -h, --help              this text\n"
    "\n"
    "The HTTPS fetches follow the POSH_* environment: POSH_CA_FILE, POSH_CA_PATH (trust anchors; default the\n"
    "system store), POSH_CONNECT_TO (HOST:PORT:ADDR:PORT routes, as curl's --connect-to), POSH_TIMEOUT_MS,\n"
    "POSH_MAX_REDIRECTS, POSH_MAX_BYTES, POSH_MAX_TTL, POSH_LAYOUT, POSH_FORMATS (fingerprints, jwk or\n"
    "fingerprints,jwk, the default: which forms are accepted), POSH_NO_SHA1, POSH_LOG.\n"
    "\n"
    "Exit status: 0 a valid document (fingerprints or JWK Set) was found; 1 none, or invalid, or of a form\n"
    "POSH_FORMATS refuses, or the fetch failed (the reason is in \"error\" and on stderr); 2 usage error (bad\n"
    "option, domain or service) or invalid POSH_* environment.\n";

static const char *const hash_names[] = {"sha-1", "sha-224", "sha-256", "sha-384", "sha-512"};

static json_object *fingerprints_json(const posh_result *r)
{
    json_object *arr = json_object_new_array();
    size_t n = r != NULL ? posh_result_descriptor_count(r) : 0;

    for (size_t i = 0; arr != NULL && i < n; i++) {
        json_object *desc = json_object_new_object();
        char b64[96];
        if (desc == NULL)
            continue;
        for (size_t h = 0; h < sizeof(hash_names) / sizeof(hash_names[0]); h++)
            if (posh_result_descriptor_hash(r, i, hash_names[h], b64, sizeof(b64)))
                json_object_object_add(desc, hash_names[h], json_object_new_string(b64));
        json_object_array_add(arr, desc);
    }
    return arr;
}

/* The form the result was read from, as POSH_FORMATS names it; NULL (JSON null) for a failure. */
static json_object *format_json(const posh_result *r)
{
    switch (r != NULL ? posh_result_format(r) : 0) {
    case POSH_FORMAT_FINGERPRINTS:
        return json_object_new_string("fingerprints");
    case POSH_FORMAT_JWK:
        return json_object_new_string("jwk");
    default:
        return NULL;
    }
}

static json_object *result_json(const char *domain, const char *service, const posh_result *r, posh_err err)
{
    json_object *o = cli_json_result_open(domain, service, r);

    if (o == NULL)
        return NULL;
    json_object_object_add(o, "followed_reference",
                           json_object_new_boolean(r != NULL && posh_result_followed_reference(r)));
    json_object_object_add(o, "format", format_json(err == POSH_OK ? r : NULL));
    json_object_object_add(o, "ttl", err == POSH_OK ? json_object_new_int64(posh_result_ttl(r)) : NULL);
    json_object_object_add(o, "fingerprints", fingerprints_json(err == POSH_OK ? r : NULL));
    return cli_json_result_close(o, r, err);
}

int cmd_lookup(int argc, char **argv)
{
    return cli_lookup_command(CMD, lookup_help, argc, argv, posh_lookup, result_json);
}
