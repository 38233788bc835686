/*
 * probe_san.h - what the probe programs (shim_probe.c, clients_probe.c) share: the name check curl and Python
 * make, reading the subjectAltName with X509_get_ext_d2i(). Header-only: each probe is a program of its own.
 */
#ifndef POSH_PROBE_SAN_H
#define POSH_PROBE_SAN_H

#include <string.h>

#include <openssl/x509v3.h>

/* 1 when the subjectAltName x gives the program (X509_get_ext_d2i) lists the DNS name name, exactly. */
static inline int probe_san_has(X509 *x, const char *name)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    int found = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type == GEN_DNS && (size_t)ASN1_STRING_length(g->d.dNSName) == strlen(name) &&
            memcmp(ASN1_STRING_get0_data(g->d.dNSName), name, strlen(name)) == 0)
            found = 1;
    }
    GENERAL_NAMES_free(gens);
    return found;
}

#endif
