/*
 * fuzz_doc_structured.c - structure-aware: the input bytes are choices that build a JSON document from POSH's
 * own pieces (member names, hash names, base64 of right and wrong lengths, padding, numbers at the int64
 * edges, URLs near 2048 characters, 64 and 65 descriptors, nesting around the depth limit, duplicate members
 * (refused: the model notes any object given a name twice),
 * escaped names). The generator also keeps a model of what it built, so the parser's answer is checked
 * exactly: the error (and the member its message names), or every value of the parsed document.
 * Running out of input means "the usual choice", so even an empty input builds a valid document.
 */
#include "fuzz_check.h"

#include <stdbool.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- choices ---- */

typedef struct choices {
    const uint8_t *p;
    size_t n, i;
} choices;

/* A choice among n (0 once the input is used up). */
static unsigned take(choices *c, unsigned n)
{
    return c->i < c->n ? c->p[c->i++] % n : 0;
}

static uint8_t take_byte(choices *c)
{
    return c->i < c->n ? c->p[c->i++] : 0;
}

/* ---- output text ---- */

typedef struct text {
    char *b;
    size_t len, cap;
} text;

/* Keeps one spare byte, for maybe_break() to insert one. */
static void put(text *t, const void *s, size_t n)
{
    while (t->len + n + 1 > t->cap) {
        t->cap = t->cap ? 2 * t->cap : 4096;
        if ((t->b = realloc(t->b, t->cap)) == NULL)
            abort();
    }
    memcpy(t->b + t->len, s, n);
    t->len += n;
}

static void puts_(text *t, const char *s)
{
    put(t, s, strlen(s));
}

/* ---- the model of the document being built ---- */

enum hash_state { H_ABSENT, H_VALID, H_INVALID };

typedef struct mdesc {
    bool is_object;
    enum hash_state state[POSH_HASH_COUNT];
    unsigned char digest[POSH_HASH_COUNT][POSH_HASH_MAX_LEN];
} mdesc;

#define MAX_GEN_DESCRIPTORS (POSH_MAX_DESCRIPTORS + 1)
#define URL_BUF 4096

typedef struct model {
    bool json_ok;     /* false: the text was broken on purpose (or holds non-JSON the parser must refuse) */
    size_t max_depth; /* deepest value, counted as json-c does: the top object is 1 */
    bool has_fp, fp_is_array;
    size_t n_desc;
    mdesc desc[MAX_GEN_DESCRIPTORS];
    bool has_url, url_is_string;
    char url[URL_BUF];
    size_t url_len;
    bool has_expires, exp_valid;
    int64_t exp;
    unsigned ws;   /* whitespace style between tokens */
    int budget;    /* values left for unknown members, so nesting cannot blow up */
    bool duplicate;/* some object was given a member name twice (decoded): the parser refuses the document */
} model;

/* The member names one object was given so far (decoded), to see a name given twice. */
typedef struct names_seen {
    const char *name[16];
    size_t n;
} names_seen;

static void name_seen(model *m, names_seen *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->name[i], name) == 0)
            m->duplicate = true;
    if (s->n < sizeof(s->name) / sizeof(s->name[0]))
        s->name[s->n++] = name;
}

static void depth_at(model *m, size_t depth)
{
    if (depth > m->max_depth)
        m->max_depth = depth;
}

static void ws(text *t, model *m)
{
    static const char *const styles[] = {"", " ", "\n  ", "\r\n\t", ""};
    puts_(t, styles[m->ws]);
}

/* A JSON string whose decoded bytes are s[0..len): escapes chosen by mode, non-ASCII bytes left raw. */
static void put_string(text *t, const char *s, size_t len, unsigned mode)
{
    static const char hex_lo[] = "0123456789abcdef", hex_up[] = "0123456789ABCDEF";
    size_t i;

    puts_(t, "\"");
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[7];
        if (c >= 0x80) {
            put(t, &s[i], 1);
        } else if (mode >= 2 || c < 0x20) {
            const char *hex = mode == 3 ? hex_up : hex_lo;
            esc[0] = '\\', esc[1] = 'u', esc[2] = '0', esc[3] = '0', esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
            put(t, esc, 6);
        } else if (c == '"' || c == '\\' || (c == '/' && mode == 1)) {
            esc[0] = '\\', esc[1] = (char)c;
            put(t, esc, 2);
        } else {
            put(t, &s[i], 1);
        }
    }
    puts_(t, "\"");
}

static void put_member_name(text *t, model *m, const char *name, unsigned mode)
{
    put_string(t, name, strlen(name), mode);
    ws(t, m);
    puts_(t, ":");
    ws(t, m);
}

/* ---- values ---- */

/* Numbers that are JSON; the model's view of each as "expires". */
static const struct number {
    const char *text;
    bool valid;    /* a positive integer */
    int64_t value; /* when valid: what the parser must keep (huge values saturate) */
} numbers[] = {
    {"60", true, 60},
    {"1", true, 1},
    {"86400", true, 86400},
    {"2147483647", true, 2147483647},
    {"2147483648", true, 2147483648LL},
    {"4294967296", true, 4294967296LL},
    {"9223372036854775807", true, INT64_MAX},
    {"9223372036854775808", true, INT64_MAX},
    {"18446744073709551615", true, INT64_MAX},
    {"18446744073709551616", true, INT64_MAX},
    {"99999999999999999999999999", true, INT64_MAX},
    {"0", false, 0},
    {"-0", false, 0},
    {"-1", false, 0},
    {"-60", false, 0},
    {"-9223372036854775808", false, 0},
    {"-9223372036854775809", false, 0},
    {"-99999999999999999999", false, 0},
    {"1.0", false, 0},
    {"60.5", false, 0},
    {"1e3", false, 0},
    {"1E+3", false, 0},
    {"6e-1", false, 0},
    {"1e400", false, 0},
    {"-1e400", false, 0},
    {"0.0", false, 0},
    {"100", true, 100},
    {"1e05", false, 0},
    {"1E-007", false, 0},
    {"0.05", false, 0},
    {"-0.0e-0", false, 0},
    {"10.01e+10", false, 0},
};
#define N_NUMBERS (sizeof(numbers) / sizeof(numbers[0]))

/* Not JSON, though json-c in strict mode reads some of them: the parser must refuse every one. */
static const char *const bad_numbers[] = {"00", "-01", "01.5", "-00", "000", "1.", ".5", "+1", "0x10", "NaN",
                                          "Infinity", "-Infinity", "1e", "--1", "-"};
#define N_BAD_NUMBERS (sizeof(bad_numbers) / sizeof(bad_numbers[0]))

/* A positive integer of 1..25 digits from the input; its value saturates at INT64_MAX as json-c's does. */
static void gen_digits(text *t, choices *c, int64_t *value)
{
    unsigned n = 1 + take(c, 25), i;
    uint64_t v = 0;
    bool big = false;
    char d[32];

    for (i = 0; i < n; i++) {
        d[i] = (char)('0' + (i == 0 ? 1 + take(c, 9) : take(c, 10)));
        if (v > (UINT64_MAX - 9) / 10)
            big = true;
        else
            v = v * 10 + (uint64_t)(d[i] - '0');
    }
    put(t, d, n);
    *value = big || v > INT64_MAX ? INT64_MAX : (int64_t)v;
}

static void gen_any(text *t, choices *c, model *m, size_t depth);

static const char *const any_names[] = {"x", "", "fingerprint", "Fingerprints", "URL", "expire", "sha-256",
                                        "\xc3\xa9t\xc3\xa9", "expires ", "a\"b\\c", "\x7f", "\t"};
#define N_ANY_NAMES (sizeof(any_names) / sizeof(any_names[0]))

/* Strings with escapes the encoder never makes: surrogate pairs, lone surrogates, the short forms. */
static const char *const raw_strings[] = {"\"\\ud83d\\ude00\"", "\"\\ud800\"", "\"\\udc00\\ud800\"",
                                          "\"\\b\\f\\n\\r\\t\\/\"", "\"\\u00e9\\u20ac\"", "\"\\uFFFF\""};
#define N_RAW_STRINGS (sizeof(raw_strings) / sizeof(raw_strings[0]))

/* Any JSON value, for members nobody looks at: only its depth and well-formedness matter. */
static void gen_any(text *t, choices *c, model *m, size_t depth)
{
    unsigned k, n;

    depth_at(m, depth);
    if (--m->budget < 0) {
        puts_(t, "1");
        return;
    }
    switch (take(c, 9)) {
    case 0:
        puts_(t, "1");
        break;
    case 1: {
        const char *s = any_names[take(c, N_ANY_NAMES)];
        put_string(t, s, strlen(s), take(c, 4));
        break;
    }
    case 2: {
        static const char *const lits[] = {"true", "false", "null"};
        puts_(t, lits[take(c, 3)]);
        break;
    }
    case 3:
        puts_(t, "[");
        ws(t, m);
        for (k = 0, n = take(c, 4); k < n; k++) {
            if (k > 0)
                puts_(t, ",");
            gen_any(t, c, m, depth + 1);
        }
        ws(t, m);
        puts_(t, "]");
        break;
    case 4: {
        names_seen seen = {.n = 0};
        puts_(t, "{");
        for (k = 0, n = take(c, 4); k < n; k++) {
            const char *name = any_names[take(c, N_ANY_NAMES)];
            if (k > 0)
                puts_(t, ",");
            ws(t, m);
            name_seen(m, &seen, name);
            put_member_name(t, m, name, take(c, 4));
            gen_any(t, c, m, depth + 1);
        }
        ws(t, m);
        puts_(t, "}");
        break;
    }
    case 5: {
        /* A chain of containers around the depth limit, ending in a scalar or an empty container. */
        unsigned chain = take(c, 12), end = take(c, 2);
        for (k = 0; k < chain; k++)
            puts_(t, k % 2 ? "{\"y\":" : "[");
        puts_(t, end ? "[]" : "1");
        for (k = chain; k-- > 0;)
            puts_(t, k % 2 ? "}" : "]");
        depth_at(m, depth + chain);
        break;
    }
    case 6:
        puts_(t, numbers[take(c, N_NUMBERS)].text);
        break;
    case 7:
        puts_(t, raw_strings[take(c, N_RAW_STRINGS)]);
        break;
    default:
        puts_(t, bad_numbers[take(c, N_BAD_NUMBERS)]);
        m->json_ok = false;
        break;
    }
}

/* Standard base64, padded or not. */
static size_t b64(const unsigned char *in, size_t len, char *out, bool pad)
{
    size_t n = posh_b64_encode(in, len, out, 4 * ((len + 2) / 3) + 1);
    if (n == 0 && len > 0)
        abort();
    while (!pad && n > 0 && out[n - 1] == '=')
        out[--n] = '\0';
    return n;
}

/* The value of a known hash member: a string of base64 that is right or wrong in one of many ways. */
static void gen_fingerprint(text *t, choices *c, model *m, posh_hash h, mdesc *d)
{
    static const char bad_chars[] = {'-', '_', ' ', '.', '*', '\n', '\t', '!', ':'};
    const size_t want = posh_hash_len(h);
    unsigned char bytes[POSH_HASH_MAX_LEN + 1];
    char s[256];
    size_t i, n, spare_bits = (6 - want * 8 % 6) % 6;
    unsigned variant = take(c, 12), mode = take(c, 4);

    for (i = 0; i <= want; i++)
        bytes[i] = take_byte(c);
    if (variant == 5 && spare_bits == 0)
        variant = 0; /* SHA-384 fills its last symbol: no unused bits to set */
    d->state[h] = H_INVALID;
    switch (variant) {
    case 0: /* valid, padded */
    case 1: /* valid, unpadded */
        n = b64(bytes, want, s, variant == 0);
        memcpy(d->digest[h], bytes, want);
        d->state[h] = H_VALID;
        break;
    case 2: /* one byte short */
    case 3: /* one byte long */
        n = b64(bytes, variant == 2 ? want - 1 : want + 1, s, take(c, 2));
        break;
    case 4: /* one symbol replaced by something that is never base64 */
        n = b64(bytes, want, s, take(c, 2));
        s[take_byte(c) % n] = bad_chars[take(c, sizeof(bad_chars))];
        break;
    case 5: { /* the right length, but an unused bit of the last symbol set: a second spelling */
        static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        size_t last;
        n = b64(bytes, want, s, take(c, 2));
        last = n - 1;
        while (s[last] == '=')
            last--;
        /* Canonical base64 leaves the unused bits zero, so the lowest bit of the last symbol is one of them. */
        s[last] = alphabet[(strchr(alphabet, s[last]) - alphabet) | 1];
        break;
    }
    case 6: /* over the length limit: POSH_MAX_HASH_STRING + 1 or far more */
    case 7: /* exactly at the limit, never a digest */
        n = variant == 7 ? POSH_MAX_HASH_STRING : POSH_MAX_HASH_STRING + 1 + take(c, 100);
        memset(s, 'A', n);
        break;
    case 8: { /* not a string */
        static const char *const others[] = {"null", "1", "[]", "{}", "true", "[\"AAAA\"]"};
        puts_(t, others[take(c, 6)]);
        return;
    }
    case 9: /* wrong padding: one '=' too many or too few */
        n = b64(bytes, want, s, true);
        if (want % 3 == 0)
            s[n++] = '=';
        else if (want % 3 == 1 && take(c, 2))
            s[--n] = '\0';
        else
            s[n++] = '=';
        break;
    case 10: /* empty */
        n = 0;
        break;
    default: /* whitespace inside */
        n = b64(bytes, want, s, take(c, 2));
        memmove(s + 5, s + 4, n - 4);
        s[4] = take(c, 2) ? ' ' : '\n';
        n++;
        break;
    }
    put_string(t, s, n, mode);
}

static const char *const hash_names[] = {"sha-1", "sha-224", "sha-256", "sha-384", "sha-512"};

/* Names that are not hash names, however close. */
static const char *const not_hash_names[] = {"SHA-256", "sha256", "sha-257", "sha-256 ", "", "md5", "sha-",
                                             "sha-3-256", "Sha-1", "sha_256", "sha-2560", "\xef\xbc\x93"};
#define N_NOT_HASH_NAMES (sizeof(not_hash_names) / sizeof(not_hash_names[0]))

static void gen_descriptor(text *t, choices *c, model *m, mdesc *d)
{
    names_seen seen = {.n = 0};
    unsigned k, extra;

    memset(d, 0, sizeof(*d));
    depth_at(m, 3);
    if (take(c, 8) == 7) {
        static const char *const others[] = {"[]", "\"sha-256\"", "null", "42"};
        puts_(t, others[take(c, 4)]);
        return;
    }
    d->is_object = true;
    puts_(t, "{");
    ws(t, m);
    extra = take(c, 5);
    for (k = 0; k <= extra; k++) {
        unsigned which = k == 0 ? 2 + take(c, 9) % 9 : take(c, 9); /* the first member defaults to sha-256 */
        if (k > 0) {
            puts_(t, ",");
            ws(t, m);
        }
        depth_at(m, 4);
        if (which < POSH_HASH_COUNT) {
            name_seen(m, &seen, hash_names[which]);
            put_member_name(t, m, hash_names[which], take(c, 4));
            gen_fingerprint(t, c, m, (posh_hash)which, d);
        } else {
            const char *name = not_hash_names[take(c, N_NOT_HASH_NAMES)];
            name_seen(m, &seen, name);
            put_member_name(t, m, name, take(c, 4));
            if (which < 8)
                gen_any(t, c, m, 4);
            else /* a known name next to garbage for an unknown one: only the known name is looked at */
                puts_(t, "\"!!not base64!!\"");
        }
    }
    ws(t, m);
    puts_(t, "}");
}

static void gen_fingerprints(text *t, choices *c, model *m)
{
    unsigned form = take(c, 10), n, k;

    m->has_fp = true;
    m->fp_is_array = false;
    m->n_desc = 0;
    depth_at(m, 2);
    switch (form) {
    case 6:
        puts_(t, "{}");
        return;
    case 7:
        puts_(t, "null");
        return;
    case 8:
        puts_(t, "\"sha-256\"");
        return;
    default:
        break;
    }
    m->fp_is_array = true;
    if (form == 9)
        n = 0;
    else if (form == 4)
        n = POSH_MAX_DESCRIPTORS;
    else if (form == 5)
        n = POSH_MAX_DESCRIPTORS + 1;
    else
        n = 1 + take(c, 4);
    puts_(t, "[");
    ws(t, m);
    for (k = 0; k < n; k++) {
        if (k > 0) {
            puts_(t, ",");
            ws(t, m);
        }
        gen_descriptor(t, c, m, &m->desc[k]);
    }
    m->n_desc = n;
    ws(t, m);
    puts_(t, "]");
}

static void append(char *u, size_t *len, const char *s)
{
    memcpy(u + *len, s, strlen(s));
    *len += strlen(s);
}

/* A URL from pieces, possibly padded to a length around POSH_MAX_URL_LEN. */
static void gen_url(text *t, choices *c, model *m)
{
    static const char *const schemes[] = {"https://", "HTTPS://", "hTtPs://", "http://", "https:/", "", "ftp://",
                                          "https:", "https:///"};
    static const char *const userinfo[] = {"", "", "", "user@", "u:p@", "@", "hosting.example.net@"};
    static const char *const hosts[] = {"hosting.example.net", "h", "", "[::1]", "[", "[]", "127.0.0.1",
                                        "a_b", "xn--bcher-kva.example", "\xc3\xa9.example", "H.EXAMPLE", "a..b"};
    static const char *const ports[] = {"", "", ":443", ":0", ":65535", ":65536", ":", ":x", ":0443", ":1234567"};
    static const char *const parts[] = {"/", "/posh/foo.json", "?q=1", "#f", "%41", "%4", "%zz", " ", "\\",
                                        "\"", "<", "\t", "\x7f", "@", "/a@b", "^", "{", "|", "`", "%", "//x"};
    char *u = m->url;
    size_t len = 0, target;
    unsigned k, n, pad;

    m->has_url = true;
    m->url_is_string = false;
    depth_at(m, 2);
    if (take(c, 10) == 9) {
        static const char *const others[] = {"null", "1", "[\"https://h/\"]", "{}"};
        puts_(t, others[take(c, 4)]);
        return;
    }
    m->url_is_string = true;
#define APPEND(s) append(u, &len, (s))
    APPEND(schemes[take(c, sizeof(schemes) / sizeof(schemes[0]))]);
    APPEND(userinfo[take(c, sizeof(userinfo) / sizeof(userinfo[0]))]);
    APPEND(hosts[take(c, sizeof(hosts) / sizeof(hosts[0]))]);
    APPEND(ports[take(c, sizeof(ports) / sizeof(ports[0]))]);
    n = take(c, 5);
    for (k = 0; k < n; k++)
        APPEND(parts[take(c, sizeof(parts) / sizeof(parts[0]))]);
#undef APPEND
    pad = take(c, 5);
    target = pad == 1 ? POSH_MAX_URL_LEN : pad == 2 ? POSH_MAX_URL_LEN + 1 : pad == 3 ? POSH_MAX_URL_LEN - 1
             : pad == 4 ? POSH_MAX_URL_LEN + 300 : 0;
    if (target > len) {
        if (len == 0 || u[len - 1] != '/')
            u[len++] = '/';
        while (len < target)
            u[len++] = 'a';
    }
    u[len] = '\0';
    m->url_len = len;
    put_string(t, u, len, take(c, 4));
}

static void gen_expires(text *t, choices *c, model *m)
{
    unsigned form = take(c, 6);

    m->has_expires = true;
    m->exp_valid = false;
    depth_at(m, 2);
    if (form <= 2) {
        const struct number *num = &numbers[form == 0 ? 0 : take(c, N_NUMBERS)];
        puts_(t, num->text);
        m->exp_valid = num->valid;
        m->exp = num->value;
    } else if (form == 3) {
        gen_digits(t, c, &m->exp);
        m->exp_valid = true;
    } else if (form == 4) {
        puts_(t, "-");
        gen_digits(t, c, &m->exp);
    } else {
        static const char *const others[] = {"\"60\"", "null", "true", "[60]", "{}", "\"\""};
        puts_(t, others[take(c, 6)]);
    }
}

enum member { M_FINGERPRINTS, M_URL, M_EXPIRES, M_UNKNOWN, M_COUNT };

/* The usual shapes first (choice 0 is a fingerprints document), then everything that must fail. */
static const enum member skeletons[][4] = {
    {M_FINGERPRINTS, M_EXPIRES, M_COUNT},
    {M_URL, M_EXPIRES, M_COUNT},
    {M_EXPIRES, M_FINGERPRINTS, M_COUNT},
    {M_EXPIRES, M_URL, M_COUNT},
    {M_FINGERPRINTS, M_COUNT},
    {M_URL, M_COUNT},
    {M_EXPIRES, M_COUNT},
    {M_FINGERPRINTS, M_URL, M_EXPIRES, M_COUNT},
    {M_COUNT},
};
#define N_SKELETONS (sizeof(skeletons) / sizeof(skeletons[0]))

/* The names of the known members, spelled with escapes too: they are the same name once decoded. */
static const char *const member_names[] = {"fingerprints", "url", "expires"};

static void gen_document(text *t, choices *c, model *m)
{
    enum member list[12];
    names_seen seen = {.n = 0};
    size_t n = 0, k, extra, at;
    const enum member *sk = skeletons[take(c, N_SKELETONS)];

    while (sk[n] != M_COUNT)
        list[n] = sk[n], n++;
    for (extra = take(c, 4); extra > 0; extra--) {
        at = take(c, (unsigned)n + 1);
        memmove(list + at + 1, list + at, (n - at) * sizeof(list[0]));
        list[at] = (enum member)take(c, M_COUNT);
        n++;
    }
    depth_at(m, 1);
    ws(t, m);
    puts_(t, "{");
    for (k = 0; k < n; k++) {
        ws(t, m);
        if (k > 0) {
            puts_(t, ",");
            ws(t, m);
        }
        if (list[k] == M_UNKNOWN) {
            const char *name = any_names[take(c, N_ANY_NAMES)];
            name_seen(m, &seen, name);
            put_member_name(t, m, name, take(c, 4));
            gen_any(t, c, m, 2);
            continue;
        }
        name_seen(m, &seen, member_names[list[k]]);
        put_member_name(t, m, member_names[list[k]], take(c, 4));
        switch (list[k]) {
        case M_FINGERPRINTS:
            gen_fingerprints(t, c, m);
            break;
        case M_URL:
            gen_url(t, c, m);
            break;
        case M_EXPIRES:
            gen_expires(t, c, m);
            break;
        case M_UNKNOWN:
        case M_COUNT:
            abort();
        }
    }
    ws(t, m);
    puts_(t, "}");
    ws(t, m);
}

/* Now and then break the text: the parser must then refuse it (or at least keep its promises). */
static void maybe_break(text *t, choices *c, model *m)
{
    static const char inserts[] = {'\0', ',', '}', ']', '\'', 'N', '\x01', '"', ':', '\xff', '\xc0', '/'};
    size_t at;

    if (take(c, 16) != 15 || t->len == 0)
        return;
    at = ((size_t)take_byte(c) << 8 | take_byte(c)) % t->len;
    m->json_ok = false;
    if (take(c, 2)) {
        t->len = at; /* truncated */
    } else {
        memmove(t->b + at + 1, t->b + at, t->len - at);
        t->b[at] = inserts[take(c, sizeof(inserts))];
        t->len++;
    }
}

/* What posh_doc_parse must answer for the model, in its order of checks; *bad = the descriptor at fault. */
static posh_err expected(const model *m, const char **url_ok, size_t *bad)
{
    size_t i;
    int h;

    *url_ok = NULL;
    *bad = SIZE_MAX;
    if (m->max_depth > POSH_MAX_JSON_DEPTH || m->duplicate)
        return POSH_ERR_JSON;
    if (m->has_fp == m->has_url)
        return POSH_ERR_DOCUMENT;
    if (!m->has_expires || !m->exp_valid)
        return POSH_ERR_EXPIRES;
    if (m->has_url) {
        if (!m->url_is_string || m->url_len > POSH_MAX_URL_LEN || !posh_url_is_https(m->url, m->url_len))
            return POSH_ERR_REFERENCE_URL;
        *url_ok = m->url;
        return POSH_OK;
    }
    if (!m->fp_is_array || m->n_desc == 0 || m->n_desc > POSH_MAX_DESCRIPTORS)
        return POSH_ERR_DOCUMENT;
    for (i = 0; i < m->n_desc; i++) {
        *bad = i;
        if (!m->desc[i].is_object)
            return POSH_ERR_DOCUMENT;
        for (h = 0; h < POSH_HASH_COUNT; h++) {
            if (m->desc[i].state[h] == H_INVALID)
                return POSH_ERR_FINGERPRINT;
        }
    }
    *bad = SIZE_MAX;
    return POSH_OK;
}

static void check_against_model(const model *m, posh_err err, const posh_doc *doc, const char *msg,
                                const text *t)
{
    const char *url;
    size_t bad, i;
    posh_err want = expected(m, &url, &bad);
    char prefix[64];
    int h;

    FUZZ_ASSERT(err == want, "got error %d (%s), the model says %d, for %.*s", (int)err, msg, (int)want,
                (int)(t->len > 3000 ? 3000 : t->len), t->b);
    if (bad != SIZE_MAX) {
        snprintf(prefix, sizeof(prefix), "fingerprints[%zu]%s", bad, err == POSH_ERR_FINGERPRINT ? "." : ":");
        FUZZ_ASSERT(strncmp(msg, prefix, strlen(prefix)) == 0, "message \"%s\" does not start with %s", msg,
                    prefix);
    } else if (err == POSH_ERR_EXPIRES) {
        FUZZ_ASSERT(strncmp(msg, "expires: ", 9) == 0, "message \"%s\"", msg);
    } else if (err == POSH_ERR_REFERENCE_URL) {
        FUZZ_ASSERT(strncmp(msg, "url: ", 5) == 0, "message \"%s\"", msg);
    }
    if (err != POSH_OK)
        return;
    FUZZ_ASSERT(doc->expires == m->exp, "expires %lld, the model says %lld", (long long)doc->expires,
                (long long)m->exp);
    if (url != NULL) {
        FUZZ_ASSERT(doc->kind == POSH_DOC_REFERENCE && strcmp(doc->url, url) == 0, "url \"%s\", the model says \"%s\"",
                    doc->url, url);
        return;
    }
    FUZZ_ASSERT(doc->kind == POSH_DOC_FINGERPRINTS && doc->n_descriptors == m->n_desc, "%zu descriptors, model %zu",
                doc->n_descriptors, m->n_desc);
    for (i = 0; i < m->n_desc; i++) {
        for (h = 0; h < POSH_HASH_COUNT; h++) {
            bool present = (doc->descriptors[i].present & (1u << h)) != 0;
            FUZZ_ASSERT(present == (m->desc[i].state[h] == H_VALID), "descriptor %zu hash %d presence", i, h);
            FUZZ_ASSERT(!present || memcmp(doc->descriptors[i].digest[h], m->desc[i].digest[h],
                                           posh_hash_len((posh_hash)h)) == 0,
                        "descriptor %zu hash %d: digest bytes differ from the ones encoded", i, h);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    choices c = {data, size, 0};
    text t = {0};
    model *m;
    posh_doc doc;
    posh_err err;
    char msg[POSH_MSG_LEN];

    if ((m = calloc(1, sizeof(*m))) == NULL)
        abort();
    m->json_ok = true;
    m->budget = 64;
    m->ws = take(&c, 5);
    gen_document(&t, &c, m);
    maybe_break(&t, &c, m);

    err = posh_doc_parse(t.b, t.len, &doc, msg, sizeof(msg));
    fuzz_check_doc((const uint8_t *)t.b, t.len, err, &doc, msg, sizeof(msg));
    if (m->json_ok)
        check_against_model(m, err, &doc, msg, &t);
    else if (!fuzz_json_is_strict_object((const uint8_t *)t.b, t.len, SIZE_MAX))
        FUZZ_ASSERT(err == POSH_ERR_JSON, "not JSON, yet error %d (%s) for %.*s", (int)err, msg,
                    (int)(t.len > 3000 ? 3000 : t.len), t.b);
    posh_doc_clear(&doc);
    free(t.b);
    free(m);
    return 0;
}
