/*
 * fuzz_cache_entry.c - posh_store_entry_parse on arbitrary bytes, twice: as they are, and with the trailing
 * SHA-256 made right (else almost nothing would get past the checksum to the fields). What must hold: an
 * accepted entry serialises back to exactly the bytes parsed (the format is canonical, nothing is skipped);
 * its documents re-parse to what the entry holds; its strings pass the rules they were written under; an
 * error leaves the entry empty with a message.
 */
#include "fuzz_check.h"

#include <openssl/evp.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_entry(const uint8_t *data, size_t size)
{
    char msg[POSH_MSG_LEN], dom[POSH_MAX_DOMAIN_LEN + 2], svc[POSH_MAX_SERVICE_LEN + 1],
        proto[POSH_MAX_SERVICE_LEN + 1];
    unsigned char *out = NULL;
    size_t outlen = 0;
    posh_store_entry e;
    posh_doc again;
    posh_err err;

    err = posh_store_entry_parse(data, size, &e, msg, sizeof(msg));
    FUZZ_ASSERT_IN(data, size, strnlen(msg, sizeof(msg)) < sizeof(msg), "message not terminated");
    if (err != POSH_OK) {
        FUZZ_ASSERT_IN(data, size, msg[0] != '\0', "error %d without a message", (int)err);
        FUZZ_ASSERT_IN(data, size, e.source_doc == NULL && e.target_doc == NULL && e.domain[0] == '\0' &&
                                       fuzz_doc_is_empty(&e.source) && fuzz_doc_is_empty(&e.target),
                       "a refused entry left data");
        return;
    }
    /* Round trip: the accepted bytes are exactly what the entry serialises to. */
    FUZZ_ASSERT_IN(data, size, posh_store_entry_serialize(&e, &out, &outlen) == POSH_OK, "cannot serialise");
    FUZZ_ASSERT_IN(data, size, outlen == size && memcmp(out, data, size) == 0, "round trip differs");
    free(out);
    /* The fields keep the rules they were written under. */
    FUZZ_ASSERT_IN(data, size, e.fetched > 0, "fetched %lld", (long long)e.fetched);
    FUZZ_ASSERT_IN(data, size, posh_domain_normalize(e.domain, dom, sizeof(dom)) == POSH_OK &&
                                   strcmp(dom, e.domain) == 0, "domain %s", e.domain);
    FUZZ_ASSERT_IN(data, size, posh_service_parse(e.service, svc, proto) == POSH_OK, "service %s", e.service);
    FUZZ_ASSERT_IN(data, size, posh_url_is_https(e.source_url, strlen(e.source_url)), "source url");
    FUZZ_ASSERT_IN(data, size, e.source_status >= 200 && e.source_status <= 299, "status %u", e.source_status);
    /* The documents: the same parse again gives the same document, and their kinds fit together. */
    FUZZ_ASSERT_IN(data, size, posh_doc_parse(e.source_doc, e.source_doc_len, &again, NULL, 0) == POSH_OK,
                   "the source document does not re-parse");
    fuzz_check_same_doc(POSH_OK, &e.source, POSH_OK, &again);
    posh_doc_clear(&again);
    if (e.source.kind == POSH_DOC_FINGERPRINTS) {
        FUZZ_ASSERT_IN(data, size, e.target_doc_len == 0 && e.target_url[0] == '\0' && e.target_fetched == 0 &&
                                       fuzz_doc_is_empty(&e.target), "a target without a reference");
    } else {
        FUZZ_ASSERT_IN(data, size, e.target_fetched > 0 && posh_url_is_https(e.target_url, strlen(e.target_url)),
                       "target url or time");
        FUZZ_ASSERT_IN(data, size, posh_doc_parse(e.target_doc, e.target_doc_len, &again, NULL, 0) == POSH_OK,
                       "the target document does not re-parse");
        fuzz_check_same_doc(POSH_OK, &e.target, POSH_OK, &again);
        FUZZ_ASSERT_IN(data, size, again.kind == POSH_DOC_FINGERPRINTS, "the target is a reference");
        posh_doc_clear(&again);
    }
    posh_store_entry_clear(&e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *fixed;
    unsigned int n = 0;

    check_entry(data, size);
    if (size < 32 || size > POSH_STORE_MAX_ENTRY)
        return 0;
    if ((fixed = malloc(size)) == NULL)
        abort();
    memcpy(fixed, data, size);
    if (EVP_Digest(fixed, size - 32, fixed + size - 32, &n, EVP_sha256(), NULL) != 1 || n != 32)
        abort();
    check_entry(fixed, size);
    free(fixed);
    return 0;
}
