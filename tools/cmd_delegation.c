/*
 * cmd_delegation.c - `posh delegation [-s SERVICE] DOMAIN`: what DOMAIN says about where its service runs
 * (Secure Service Delegation, posh_lookup_delegation()), printed as one JSON object like `posh lookup`.
 */
#include "cli.h"

#include <stdio.h>

#define CMD "delegation"

static const char delegation_help[] =
    "usage: posh delegation [-s SERVICE] DOMAIN\n"
    "\n"
    "Fetch DOMAIN's Secure Service Delegation document (draft-jennings-secure-service-delegation-00) for\n"
    "SERVICE over verified HTTPS, from https://DOMAIN/.well-known/services/SERVICE/ (redirects followed, as\n"
    "for POSH), and print the result as one JSON object:\n"
    "  domain, service, requests [{url, status}] (status null when no HTTP response came), ttl (how long a\n"
    "  client keeps the answer: POSH_MAX_TTL, lowered by the response's Cache-Control max-age; null on\n"
    "  failure), delegations [{host, port, domain}] (connect to host:port and expect a certificate valid for\n"
    "  domain), error (null, or {code, name, description, message}).\n"
    "The document is a JSON array of 1 to 32 objects {\"host\": NAME, \"port\": 1..65535, \"domain\": NAME}: the\n"
    "draft's member names are lost, and this is posh's reading of it.\n"
    "\n"
    "  -s, --service SERVICE   the service (default xmpp-server); the SRV form _SERVICE._PROTO is accepted\n"
    "                          too, and its bare name is what the URL holds\n"
    "  -h, --help              this text\n"
    "\n"
    "The HTTPS fetch follows the POSH_* environment: POSH_CA_FILE, POSH_CA_PATH (trust anchors; default the\n"
    "system store), POSH_CONNECT_TO (HOST:PORT:ADDR:PORT routes, as curl's --connect-to), POSH_TIMEOUT_MS,\n"
    "POSH_MAX_REDIRECTS, POSH_MAX_BYTES, POSH_MAX_TTL, POSH_LOG.\n"
    "\n"
    "Exit status: 0 a valid delegation document was found; 1 none (POSH_ERR_NO_DELEGATION), or invalid, or\n"
    "the fetch failed (the reason is in \"error\" and on stderr); 2 usage error (bad option, domain or\n"
    "service) or invalid POSH_* environment.\n";

static json_object *delegations_json(const posh_result *r)
{
    json_object *arr = json_object_new_array();
    size_t n = r != NULL ? posh_result_delegation_count(r) : 0;

    for (size_t i = 0; arr != NULL && i < n; i++) {
        const char *host = NULL, *domain = NULL;
        int port = 0;
        json_object *d = json_object_new_object();
        if (d == NULL || !posh_result_delegation(r, i, &host, &port, &domain)) {
            json_object_put(d);
            continue;
        }
        json_object_object_add(d, "host", json_object_new_string(host != NULL ? host : ""));
        json_object_object_add(d, "port", json_object_new_int(port));
        json_object_object_add(d, "domain", json_object_new_string(domain != NULL ? domain : ""));
        json_object_array_add(arr, d);
    }
    return arr;
}

static json_object *result_json(const char *domain, const char *service, const posh_result *r, posh_err err)
{
    json_object *o = cli_json_result_open(domain, service, r);

    if (o == NULL)
        return NULL;
    json_object_object_add(o, "ttl", err == POSH_OK ? json_object_new_int64(posh_result_ttl(r)) : NULL);
    json_object_object_add(o, "delegations", delegations_json(err == POSH_OK ? r : NULL));
    return cli_json_result_close(o, r, err);
}

int cmd_delegation(int argc, char **argv)
{
    return cli_lookup_command(CMD, delegation_help, argc, argv, posh_lookup_delegation, result_json);
}
