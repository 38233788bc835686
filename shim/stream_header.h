/*
 * stream_header.h - reading the `to` and `from` of an XMPP stream start tag from bytes a program sends or
 * receives. Pure: no I/O, no globals; the shim (stream.c) and the fuzz target fuzz_stream use it.
 */
#ifndef POSH_STREAM_HEADER_H
#define POSH_STREAM_HEADER_H

#include <stddef.h>

/* Bytes of one call that are read at most: the tag and its attributes must end within them. */
#define STREAM_HEADER_SCAN_MAX 4096

/*
 * Does p (len bytes, not NUL-terminated) open with an XMPP stream start tag ("<stream:stream ...>" or
 * "<stream ...>", optionally after an XML declaration "<?xml ...?>" and white space, as RFC 6120 section 4.2
 * places it)? Returns 0 when it does not (to untouched). Otherwise returns 1 and writes into to (tolen > 0
 * bytes, always NUL-terminated) the raw value of its `to` attribute, or "" when the tag has none or cannot be
 * read completely within STREAM_HEADER_SCAN_MAX bytes (cut off, malformed, a value of tolen bytes or more).
 */
int shim_stream_header_to(const char *p, size_t len, char *to, size_t tolen);
/*
 * The same, with the `from` attribute too (from: fromlen > 0 bytes, always NUL-terminated): what a server reads
 * in the header its peer sent. A tag that cannot be read completely gives "" for both; a value too long for its
 * buffer gives "" for that one alone.
 */
int shim_stream_header(const char *p, size_t len, char *to, size_t tolen, char *from, size_t fromlen);

#endif /* POSH_STREAM_HEADER_H */
