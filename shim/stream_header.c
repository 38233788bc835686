/*
 * stream_header.c - see stream_header.h. Every index is checked against len before it is read; the only
 * write is into to, bounded by tolen.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include "stream_header.h"

#include <string.h>

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ':' || c == '_' ||
           c == '-' || c == '.';
}

/*
 * The offset just past the stream start tag's name, or 0. As RFC 6120 section 4.2 has it, the stream header
 * opens what a program sends on the stream, after an optional XML declaration; so only that position is looked
 * at: an XML stanza ("<message ...") costs a two-byte test. The element is "stream:stream", or "stream" when the
 * streams namespace is the default one.
 */
static size_t stream_tag(const char *p, size_t len)
{
    static const char *const names[] = {"<stream:stream", "<stream"};
    size_t at = 0;

    if (len >= 5 && memcmp(p, "<?xml", 5) == 0) {
        const char *end = memmem(p, len, "?>", 2);
        if (end == NULL)
            return 0;
        for (at = (size_t)(end - p) + 2; at < len && is_space(p[at]); at++)
            ;
    }
    if (at + 1 >= len || p[at] != '<' || p[at + 1] != 's')
        return 0;
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        size_t n = strlen(names[k]);
        if (at + n < len && memcmp(p + at, names[k], n) == 0 && (is_space(p[at + n]) || p[at + n] == '>'))
            return at + n;
    }
    return 0;
}

static void copy_value(char *out, size_t outlen, const char *value, size_t len)
{
    if (len >= outlen)
        len = 0;
    memcpy(out, value, len);
    out[len] = '\0';
}

/*
 * The tag's attributes up to its '>': the values of `to` and `from` into to and from (raw, bounded). Returns 1
 * for a complete tag (a value "" when the tag has no such attribute), 0 for anything else (cut off, malformed).
 */
static int stream_attrs(const char *p, size_t len, size_t at, char *to, size_t tolen, char *from, size_t fromlen)
{
    to[0] = '\0';
    from[0] = '\0';
    for (;;) {
        size_t name, name_len, value;
        char quote;
        while (at < len && is_space(p[at]))
            at++;
        if (at >= len)
            return 0;
        if (p[at] == '>' || (p[at] == '/' && at + 1 < len && p[at + 1] == '>'))
            return 1;
        for (name = at; at < len && is_name_char(p[at]); at++)
            ;
        name_len = at - name;
        while (at < len && is_space(p[at]))
            at++;
        if (name_len == 0 || at >= len || p[at] != '=')
            return 0;
        for (at++; at < len && is_space(p[at]); at++)
            ;
        if (at >= len || (p[at] != '\'' && p[at] != '"'))
            return 0;
        quote = p[at++];
        /* XML allows no control character (NUL least of all: it would cut the value short) nor '<' in it. */
        for (value = at; at < len && p[at] != quote && p[at] != '<' && (unsigned char)p[at] >= 0x20 && p[at] != 0x7f;
             at++)
            ;
        if (at >= len || p[at] != quote)
            return 0;
        /* A value too long for its buffer reads as "" (unusable), and the other attribute is still read. */
        if (name_len == 2 && memcmp(p + name, "to", 2) == 0)
            copy_value(to, tolen, p + value, at - value);
        else if (name_len == 4 && memcmp(p + name, "from", 4) == 0)
            copy_value(from, fromlen, p + value, at - value);
        at++;
    }
}

int shim_stream_header(const char *p, size_t len, char *to, size_t tolen, char *from, size_t fromlen)
{
    size_t tag_end;

    if (p == NULL || to == NULL || tolen == 0 || from == NULL || fromlen == 0)
        return 0;
    if (len > STREAM_HEADER_SCAN_MAX)
        len = STREAM_HEADER_SCAN_MAX;
    if ((tag_end = stream_tag(p, len)) == 0)
        return 0;
    if (!stream_attrs(p, len, tag_end, to, tolen, from, fromlen))
        to[0] = from[0] = '\0';
    return 1;
}

int shim_stream_header_to(const char *p, size_t len, char *to, size_t tolen)
{
    char from[1];
    return shim_stream_header(p, len, to, tolen, from, sizeof(from));
}
