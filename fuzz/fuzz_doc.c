/*
 * fuzz_doc.c - posh_doc_parse on arbitrary bytes: whatever comes back must keep the parser's promises (a valid
 * document only from strict JSON, an empty document on error, a message that is terminated and says why), and
 * the same bytes must give the same result again, also with a short or absent message buffer.
 */
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char msg[POSH_MSG_LEN], *small = NULL;
    size_t small_len = size % 24; /* 0: no buffer at all */
    posh_doc doc, again;
    posh_err err, err2;

    err = posh_doc_parse((const char *)data, size, &doc, msg, sizeof(msg));
    fuzz_check_doc(data, size, err, &doc, msg, sizeof(msg));

    /* No state carried from the first call; a short message buffer is truncated, never overrun. */
    if (small_len > 0 && (small = malloc(small_len)) == NULL)
        abort();
    memset(&again, 0x5a, sizeof(again)); /* garbage in: the parser must not read *doc before writing it */
    err2 = posh_doc_parse((const char *)data, size, &again, small, small_len);
    fuzz_check_same_doc(err, &doc, err2, &again);
    if (small != NULL) {
        FUZZ_ASSERT(strnlen(small, small_len) < small_len, "short message buffer not terminated");
        FUZZ_ASSERT(strncmp(small, msg, strlen(small)) == 0, "short message \"%s\" is not a prefix of \"%s\"",
                    small, msg);
    }
    free(small);
    posh_doc_clear(&again);
    posh_doc_clear(&doc);
    FUZZ_ASSERT(fuzz_doc_is_empty(&doc), "posh_doc_clear left data");
    return 0;
}
