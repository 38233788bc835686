/*
 * fuzz_stream.c - the shim's reader of XMPP stream headers (shim/stream_header.c) on arbitrary bytes a program
 * might send. Besides ASan/UBSan: the result is always a NUL-terminated string within the buffer; a `to`
 * returned stands quoted in the bytes read, and holds no control byte, no '<' and not both quotes; input
 * that holds no "<stream" in those bytes is never taken for a header; and a tiny buffer is never overrun.
 */
#include "stream_header.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                            \
    do {                                                                                                       \
        if (!(cond)) {                                                                                         \
            fprintf(stderr, "fuzz_stream: broken invariant: %s\n", #cond);                                     \
            abort();                                                                                           \
        }                                                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int contains(const char *hay, size_t len, const char *needle, size_t nlen)
{
    return nlen <= len && memmem(hay, len, needle, nlen) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    size_t seen = size < STREAM_HEADER_SCAN_MAX ? size : STREAM_HEADER_SCAN_MAX;
    char to[256], tiny[4], attr[300];
    int r;

    memset(to, 'X', sizeof(to));
    r = shim_stream_header_to(p, size, to, sizeof(to));
    CHECK(r == 0 || r == 1);
    if (r == 0)
        return 0;
    CHECK(memchr(to, '\0', sizeof(to)) != NULL);
    CHECK(contains(p, seen, "<stream", 7));
    if (to[0] != '\0') {
        size_t n = strlen(to);
        CHECK(strchr(to, '\'') == NULL || strchr(to, '"') == NULL);
        CHECK(strchr(to, '<') == NULL);
        for (size_t i = 0; i < n; i++)
            CHECK((unsigned char)to[i] >= 0x20 && to[i] != 0x7f);
        /* XML allows white space around '=': the quoted value itself must be there, and an attribute "to". */
        CHECK(contains(p, seen, "to", 2));
        snprintf(attr, sizeof(attr), "'%s'", to);
        if (!contains(p, seen, attr, n + 2)) {
            snprintf(attr, sizeof(attr), "\"%s\"", to);
            CHECK(contains(p, seen, attr, n + 2));
        }
    }
    /* The same header into a buffer too small for most values: bounded, terminated, same verdict. */
    CHECK(shim_stream_header_to(p, size, tiny, sizeof(tiny)) == 1);
    CHECK(memchr(tiny, '\0', sizeof(tiny)) != NULL);
    return 0;
}
