/*
 * delegation.c - parse a Secure Service Delegation document (draft-jennings-secure-service-delegation-00) from
 * bytes: a JSON array of objects, each naming where the domain's service is run and which name that server's
 * certificate carries. The draft's member names are lost from its surviving text; posh reads
 * {"host": "xmpp.example.com", "port": 5269, "domain": "example.com"}. Strict JSON as for POSH documents
 * (doc.c), every member type-checked, bounded. Pure: no I/O, no globals, no clock.
 */
#include "posh_internal.h"

#include <stdlib.h>
#include <string.h>

/* A DNS name member (host, domain): a string that posh_domain_normalize() accepts, normalised into out. */
static posh_err name_member(json_object *obj, size_t i, const char *name, char out[POSH_MAX_DOMAIN_LEN + 2],
                            char *msg, size_t msglen)
{
    json_object *v;
    int len;

    if (!json_object_object_get_ex(obj, name, &v)) {
        posh_msg(msg, msglen, "[%zu].%s: missing", i, name);
        return POSH_ERR_DOCUMENT;
    }
    if (!json_object_is_type(v, json_type_string)) {
        posh_msg(msg, msglen, "[%zu].%s: expected a string, got %s", i, name, posh_json_type_name(v));
        return POSH_ERR_DOCUMENT;
    }
    len = json_object_get_string_len(v);
    if (len < 0 || len > POSH_MAX_DOMAIN_LEN + 1 ||
        posh_domain_normalize(json_object_get_string(v), out, POSH_MAX_DOMAIN_LEN + 2) != POSH_OK) {
        posh_msg(msg, msglen, "[%zu].%s: not a DNS name", i, name);
        return POSH_ERR_DOCUMENT;
    }
    return POSH_OK;
}

static posh_err parse_entry(json_object *obj, size_t i, posh_delegation *d, char *msg, size_t msglen)
{
    json_object *v;
    int64_t port;
    posh_err err;

    if (!json_object_is_type(obj, json_type_object)) {
        posh_msg(msg, msglen, "[%zu]: expected an object, got %s", i, posh_json_type_name(obj));
        return POSH_ERR_DOCUMENT;
    }
    if ((err = name_member(obj, i, "host", d->host, msg, msglen)) != POSH_OK ||
        (err = name_member(obj, i, "domain", d->domain, msg, msglen)) != POSH_OK)
        return err;
    if (!json_object_object_get_ex(obj, "port", &v)) {
        posh_msg(msg, msglen, "[%zu].port: missing", i);
        return POSH_ERR_DOCUMENT;
    }
    if (!json_object_is_type(v, json_type_int)) {
        posh_msg(msg, msglen, "[%zu].port: expected an integer, got %s", i, posh_json_type_name(v));
        return POSH_ERR_DOCUMENT;
    }
    if ((port = json_object_get_int64(v)) < 1 || port > 65535) {
        posh_msg(msg, msglen, "[%zu].port: %lld is not a port (1..65535)", i, (long long)port);
        return POSH_ERR_DOCUMENT;
    }
    d->port = (int)port;
    return POSH_OK;
}

posh_err posh_delegation_parse(const char *buf, size_t len, posh_delegation_doc *doc, char *msg, size_t msglen)
{
    posh_delegation_doc tmp = {0};
    json_object *top = NULL;
    posh_err err;
    size_t n;

    posh_msg(msg, msglen, "%s", "");
    if (doc == NULL || (buf == NULL && len > 0))
        return POSH_ERR_INVALID_ARGUMENT;
    memset(doc, 0, sizeof(*doc));
    if ((err = posh_json_parse(buf, len, json_type_array, &top, msg, msglen)) != POSH_OK)
        goto done;
    err = POSH_ERR_DOCUMENT;
    if ((n = json_object_array_length(top)) == 0 || n > POSH_MAX_DELEGATIONS) {
        posh_msg(msg, msglen, "%zu delegations, expected 1 to %d", n, POSH_MAX_DELEGATIONS);
        goto done;
    }
    if ((tmp.entries = calloc(n, sizeof(*tmp.entries))) == NULL) {
        err = POSH_ERR_NOMEM;
        goto done;
    }
    tmp.n = n;
    for (size_t i = 0; i < n; i++)
        if ((err = parse_entry(json_object_array_get_idx(top, i), i, &tmp.entries[i], msg, msglen)) != POSH_OK)
            goto done;
    *doc = tmp;
    memset(&tmp, 0, sizeof(tmp));
    err = POSH_OK;
done:
    if (err == POSH_ERR_NOMEM)
        posh_msg(msg, msglen, "out of memory");
    posh_delegation_clear(&tmp);
    json_object_put(top);
    return err;
}

void posh_delegation_clear(posh_delegation_doc *doc)
{
    if (doc == NULL)
        return;
    free(doc->entries);
    memset(doc, 0, sizeof(*doc));
}
