/*
 * fuzz_stream.c - the shim's reader of XMPP stream headers (shim/stream_header.c) on arbitrary bytes a program
 * might send or receive. Besides ASan/UBSan: each result (`to`, and `from` as a server reads it in the header
 * its peer sent) is always a NUL-terminated string within its buffer, stands quoted in the bytes read, and holds
 * no control byte, no '<' and not both quotes; input that holds no "<stream" in those bytes is never taken for a
 * header; both readers agree on `to` and on the verdict; and a tiny buffer is never overrun.
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

/* A value the reader returned: bounded, printable, and quoted in the bytes it read, after the attribute name. */
static void check_value(const char *p, size_t seen, const char *v, size_t vsize, const char *attr_name)
{
    char attr[300];
    size_t n;

    CHECK(memchr(v, '\0', vsize) != NULL);
    if (v[0] == '\0')
        return;
    n = strlen(v);
    CHECK(strchr(v, '\'') == NULL || strchr(v, '"') == NULL);
    CHECK(strchr(v, '<') == NULL);
    for (size_t i = 0; i < n; i++)
        CHECK((unsigned char)v[i] >= 0x20 && v[i] != 0x7f);
    /* XML allows white space around '=': the quoted value itself must be there, and the attribute's name. */
    CHECK(contains(p, seen, attr_name, strlen(attr_name)));
    snprintf(attr, sizeof(attr), "'%s'", v);
    if (!contains(p, seen, attr, n + 2)) {
        snprintf(attr, sizeof(attr), "\"%s\"", v);
        CHECK(contains(p, seen, attr, n + 2));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    size_t seen = size < STREAM_HEADER_SCAN_MAX ? size : STREAM_HEADER_SCAN_MAX;
    char to[256], to2[256], from[256], tiny[4], tiny2[3];
    int r;

    memset(to, 'X', sizeof(to));
    memset(from, 'X', sizeof(from));
    r = shim_stream_header_to(p, size, to, sizeof(to));
    CHECK(r == 0 || r == 1);
    /* The reader of received headers: the same verdict and the same `to`. */
    CHECK(shim_stream_header(p, size, to2, sizeof(to2), from, sizeof(from)) == r);
    if (r == 0)
        return 0;
    CHECK(strcmp(to, to2) == 0);
    CHECK(contains(p, seen, "<stream", 7));
    check_value(p, seen, to, sizeof(to), "to");
    check_value(p, seen, from, sizeof(from), "from");
    /* The same header into buffers too small for most values: bounded, terminated, same verdict. */
    CHECK(shim_stream_header_to(p, size, tiny, sizeof(tiny)) == 1);
    CHECK(memchr(tiny, '\0', sizeof(tiny)) != NULL);
    CHECK(shim_stream_header(p, size, tiny, sizeof(tiny), tiny2, sizeof(tiny2)) == 1);
    CHECK(memchr(tiny, '\0', sizeof(tiny)) != NULL && memchr(tiny2, '\0', sizeof(tiny2)) != NULL);
    /* A `from` too long for its buffer never costs the `to` its value. */
    CHECK(shim_stream_header(p, size, to2, sizeof(to2), tiny2, sizeof(tiny2)) == 1 && strcmp(to, to2) == 0);
    return 0;
}
