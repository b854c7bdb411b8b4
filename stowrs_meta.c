/*
 * Readers of DICOM metadata (PS3.19 Native DICOM Model XML, PS3.18 Annex F
 * DICOM JSON) into the plain tree of stowrs_meta.h, and the key under which
 * bulk data URIs and Content-Locations are matched.
 *
 * Both readers build only our pool-allocated tree: XML is streamed through
 * xmlTextReader (no DOM is kept), the JSON document is freed as soon as it
 * has been copied. The tree's size is proportional to the document, whose
 * size the caller bounds; our recursion is bounded by STOWRS_META_MAX_DEPTH.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_base64.h>
#include <apr_file_io.h>
#include <apr_strings.h>
#include <apr_uri.h>

#include <libxml/xmlerror.h>
#include <libxml/xmlreader.h>
#include <jansson.h>

#include "stowrs_meta.h"

/* --- common: tags, VRs, values, datasets ------------------------------------ */

typedef enum {
    VR_STRING,
    VR_NUMBER,      /* JSON numbers (or strings) */
    VR_AT,
    VR_PN,
    VR_SQ,
    VR_BINARY       /* only InlineBinary or bulk data, never Value */
} vr_class_e;

typedef struct {
    char vr[3];
    vr_class_e cls;
} vr_info_t;

static const vr_info_t vr_table[] = {
    { "AE", VR_STRING }, { "AS", VR_STRING }, { "AT", VR_AT },
    { "CS", VR_STRING }, { "DA", VR_STRING }, { "DS", VR_NUMBER },
    { "DT", VR_STRING }, { "FD", VR_NUMBER }, { "FL", VR_NUMBER },
    { "IS", VR_NUMBER }, { "LO", VR_STRING }, { "LT", VR_STRING },
    { "OB", VR_BINARY }, { "OD", VR_BINARY }, { "OF", VR_BINARY },
    { "OL", VR_BINARY }, { "OV", VR_BINARY }, { "OW", VR_BINARY },
    { "PN", VR_PN },     { "SH", VR_STRING }, { "SL", VR_NUMBER },
    { "SQ", VR_SQ },     { "SS", VR_NUMBER }, { "ST", VR_STRING },
    { "SV", VR_NUMBER }, { "TM", VR_STRING }, { "UC", VR_STRING },
    { "UI", VR_STRING }, { "UL", VR_NUMBER }, { "UN", VR_BINARY },
    { "UR", VR_STRING }, { "US", VR_NUMBER }, { "UT", VR_STRING },
    { "UV", VR_NUMBER }
};

/* @return the table entry of a VR given as exactly two characters, or NULL */
static const vr_info_t *
vr_lookup(const char *s, size_t len)
{
    size_t i;

    if (len != 2) {
        return NULL;
    }
    for (i = 0; i < sizeof(vr_table) / sizeof(vr_table[0]); i++) {
        if (s[0] == vr_table[i].vr[0] && s[1] == vr_table[i].vr[1]) {
            return &vr_table[i];
        }
    }
    return NULL;
}

static int
hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* A tag as exactly eight hex digits ("GGGGEEEE"). @return 0 or -1 */
static int
parse_tag(const char *s, size_t len, unsigned int *tag)
{
    unsigned int t = 0;
    size_t i;
    int d;

    if (len != 8) {
        return -1;
    }
    for (i = 0; i < 8; i++) {
        if ((d = hex_digit(s[i])) < 0) {
            return -1;
        }
        t = (t << 4) | (unsigned int)d;
    }
    *tag = t;
    return 0;
}

/* AT values are kept in one spelling (upper-case hex) so the shim can
 * parse them without caring how the client wrote them. */
static const char *
at_value(apr_pool_t *pool, const char *s, size_t len)
{
    unsigned int tag;

    if (parse_tag(s, len, &tag) != 0) {
        return NULL;
    }
    return apr_psprintf(pool, "%08X", tag);
}

static int
is_b64_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
           || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

static int
is_xml_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * Decode base64, allowing the white space that xs:base64Binary allows.
 * apr_base64_decode_binary() stops silently at the first character outside
 * the alphabet, so the alphabet and the padding are checked here first:
 * garbage must fail the object, not shorten the value.
 * @return 0, or -1 if @c s is not base64
 */
static int
decode_base64(apr_pool_t *pool, const char *s, size_t len,
              const unsigned char **out, size_t *out_len)
{
    char *compact = apr_palloc(pool, len + 1);
    unsigned char *data;
    size_t n = 0, i, pad = 0;
    int decoded;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (is_xml_space(c)) {
            continue;
        }
        if (c == '=') {
            pad++;
        }
        else if (pad || !is_b64_char(c)) {
            /* data after padding, or outside the alphabet */
            return -1;
        }
        compact[n++] = (char)c;
    }
    compact[n] = '\0';
    if (n % 4 != 0 || pad > 2) {
        return -1;
    }
    if (n == 0) {
        *out = (const unsigned char *)compact;
        *out_len = 0;
        return 0;
    }
    /* apr_base64 counts in int */
    if (n > (size_t)(0x7fffffff - 4)) {
        return -1;
    }
    data = apr_palloc(pool, (apr_size_t)apr_base64_decode_len(compact));
    decoded = apr_base64_decode_binary(data, compact);
    if (decoded < 0 || (size_t)decoded != n / 4 * 3 - pad) {
        return -1;
    }
    *out = data;
    *out_len = (size_t)decoded;
    return 0;
}

/*
 * Join PN groups: components with '^' and groups with '=', trailing empty
 * components and groups dropped. @c comp holds 3 groups of 5 components,
 * NULL for absent. @return the value, or NULL when it is empty
 */
static const char *
pn_join(apr_pool_t *pool, const char *const comp[3][5])
{
    const char *groups[3];
    const char *parts[5];
    int g, c, last_group = -1;

    for (g = 0; g < 3; g++) {
        int last = -1;

        for (c = 0; c < 5; c++) {
            parts[c] = comp[g][c] ? comp[g][c] : "";
            if (*parts[c]) {
                last = c;
            }
        }
        groups[g] = "";
        for (c = 0; c <= last; c++) {
            groups[g] = c ? apr_pstrcat(pool, groups[g], "^", parts[c], NULL)
                          : parts[c];
        }
        if (*groups[g]) {
            last_group = g;
        }
    }
    if (last_group < 0) {
        return NULL;
    }
    if (last_group == 0) {
        return groups[0];
    }
    if (last_group == 1) {
        return apr_pstrcat(pool, groups[0], "=", groups[1], NULL);
    }
    return apr_pstrcat(pool, groups[0], "=", groups[1], "=", groups[2], NULL);
}

static int
elem_cmp(const void *a, const void *b)
{
    unsigned int ta = ((const stowrs_meta_elem_t *)a)->tag;
    unsigned int tb = ((const stowrs_meta_elem_t *)b)->tag;

    return ta < tb ? -1 : ta > tb;
}

/* Sort the attributes gathered in @c elems into a dataset. @return 0, or -1
 * on a duplicate tag */
static int
finish_ds(apr_pool_t *pool, apr_array_header_t *elems, stowrs_meta_ds_t **out)
{
    stowrs_meta_ds_t *ds = apr_pcalloc(pool, sizeof(*ds));
    stowrs_meta_elem_t *e = (stowrs_meta_elem_t *)elems->elts;
    int i;

    if (elems->nelts > 1) {
        qsort(e, (size_t)elems->nelts, sizeof(*e), elem_cmp);
    }
    for (i = 1; i < elems->nelts; i++) {
        if (e[i].tag == e[i - 1].tag) {
            return -1;
        }
    }
    ds->nelems = elems->nelts;
    ds->elems = e;
    *out = ds;
    return 0;
}

/* --- XML: PS3.19 Native DICOM Model ---------------------------------------- */

#define NATIVE_DICOM_NS "http://dicom.nema.org/PS3.19/models/NativeDICOM"

/*
 * Read without network, without a DTD and without entity substitution.
 * XML_PARSE_HUGE lifts libxml2's 10 MB cap on one text node (InlineBinary
 * pixel data can be larger), and with it libxml2's entity amplification
 * checks: that is safe only because no DTD ever reaches libxml2 (see
 * prolog_scan), and the caller bounds the document size.
 * The encoding is fixed to UTF-8 (the encoding of application/dicom+xml):
 * an encoding declaration such as UTF-7 or ISO-2022-JP could otherwise
 * spell a DOCTYPE in bytes that prolog_scan does not recognise.
 */
#define XML_OPTIONS (XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_HUGE \
                     | XML_PARSE_IGNORE_ENC)
#define XML_ENCODING "UTF-8"

/* Where prolog_scan is in the bytes before the root element. */
typedef enum {
    P_TEXT,         /* between markup: white space only */
    P_LT,           /* after '<' */
    P_BANG,         /* after "<!" */
    P_BANG_DASH,    /* after "<!-" */
    P_COMMENT,      /* in "<!-- … -->" */
    P_PI,           /* in "<? … ?>", the XML declaration included */
    P_DONE          /* the root element has started */
} prolog_e;

typedef struct {
    apr_pool_t *pool;
    xmlTextReaderPtr rd;
    /* the input: a file, or a buffer */
    apr_file_t *file;
    const char *buf;
    size_t len;
    size_t off;
    prolog_e prolog;
    int run;                /* '-' seen in a comment, '?' in a PI */
    apr_off_t pos;          /* bytes scanned (for the BOM) */
    int root_ns;            /* the root is in NATIVE_DICOM_NS */
    int xml_error;          /* libxml2 reported an error */
    int xml_error_line;
    stowrs_meta_rc_e rc;
    const char *error;
} xml_ctx_t;

typedef enum {
    X_OTHER, X_ROOT, X_ATTRIBUTE, X_VALUE, X_PERSON_NAME, X_ITEM,
    X_BULK_DATA, X_INLINE_BINARY, X_ALPHABETIC, X_IDEOGRAPHIC, X_PHONETIC,
    X_FAMILY, X_GIVEN, X_MIDDLE, X_PREFIX, X_SUFFIX
} xml_name_e;

static const char *const xml_names[] = {
    "", "NativeDicomModel", "DicomAttribute", "Value", "PersonName", "Item",
    "BulkData", "InlineBinary", "Alphabetic", "Ideographic", "Phonetic",
    "FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix"
};

/* Errors come here instead of libxml2's default, which prints to stderr
 * (httpd's error log); the text may quote the document, so only the line
 * is kept. */
static void
xml_on_error(void *arg, const char *msg, xmlParserSeverities severity,
             xmlTextReaderLocatorPtr locator)
{
    xml_ctx_t *x = arg;

    (void)msg;
    if (severity == XML_PARSER_SEVERITY_ERROR
        || severity == XML_PARSER_SEVERITY_VALIDITY_ERROR) {
        if (!x->xml_error) {
            x->xml_error_line = xmlTextReaderLocatorLineNumber(locator);
        }
        x->xml_error = 1;
    }
}

#ifdef LIBXML_THREAD_ENABLED
/* Swallows what libxml2 reports outside the reader's handler (while the
 * reader is created); installed for this thread only, during one read. */
static void
xml_quiet(void *ctx, const char *msg, ...)
{
    (void)ctx;
    (void)msg;
}
#endif

static int
xml_fail(xml_ctx_t *x, stowrs_meta_rc_e rc, const char *error)
{
    if (x->rc == STOWRS_META_OK) {
        x->rc = rc;
        x->error = error;
    }
    return -1;
}

static int
xml_fail_parse(xml_ctx_t *x)
{
    return xml_fail(x, STOWRS_META_MALFORMED,
                    x->xml_error_line > 0
                    ? apr_psprintf(x->pool, "not well-formed XML (line %d)",
                                   x->xml_error_line)
                    : "not well-formed XML");
}

/*
 * Advance to the next node that matters: comments and processing
 * instructions are skipped, and white space unless @c keep_ws.
 * A DOCTYPE or an entity reference stops the read; prolog_scan has
 * refused any DOCTYPE already, this is the second line.
 * @return 1 on a node, 0 at the end of the document, -1 on failure
 */
static int
xml_next(xml_ctx_t *x, int keep_ws)
{
    for (;;) {
        int ret = xmlTextReaderRead(x->rd);

        if (ret < 0 || x->xml_error) {
            return xml_fail_parse(x);
        }
        if (ret == 0) {
            return 0;
        }
        switch (xmlTextReaderNodeType(x->rd)) {
        case XML_READER_TYPE_DOCUMENT_TYPE:
            return xml_fail(x, STOWRS_META_FORBIDDEN, "DOCTYPE not allowed");
        case XML_READER_TYPE_ENTITY_REFERENCE:
        case XML_READER_TYPE_ENTITY:
        case XML_READER_TYPE_NOTATION:
            return xml_fail(x, STOWRS_META_FORBIDDEN, "entities not allowed");
        case XML_READER_TYPE_COMMENT:
        case XML_READER_TYPE_PROCESSING_INSTRUCTION:
        case XML_READER_TYPE_XML_DECLARATION:
            continue;
        case XML_READER_TYPE_WHITESPACE:
        case XML_READER_TYPE_SIGNIFICANT_WHITESPACE:
            if (!keep_ws) {
                continue;
            }
            return 1;
        default:
            return 1;
        }
    }
}

/*
 * Check the prolog before libxml2 sees it. xmlTextReader reports a
 * DOCTYPE node only once it has parsed the whole internal subset and the
 * root's start tag, and libxml2 expands entities in attribute values even
 * without XML_PARSE_NOENT: refusing the DOCTYPE node is too late. So the
 * bytes before the root element may hold only white space, a UTF-8 BOM,
 * comments and processing instructions (the XML declaration is one);
 * "<!" not starting a comment is a DOCTYPE, and anything else is not
 * well-formed XML anyway.
 * @return 0, or -1 with the failure recorded in @c x
 */
static int
prolog_scan(xml_ctx_t *x, const char *buf, size_t n)
{
    static const unsigned char bom[3] = { 0xEF, 0xBB, 0xBF };
    size_t i;

    for (i = 0; i < n && x->prolog != P_DONE; i++, x->pos++) {
        unsigned char c = (unsigned char)buf[i];

        switch (x->prolog) {
        case P_TEXT:
            if (c == '<') {
                x->prolog = P_LT;
            }
            else if (!is_xml_space(c) && !(x->pos < 3 && c == bom[x->pos])) {
                return xml_fail(x, STOWRS_META_MALFORMED,
                                "content before the root element");
            }
            break;
        case P_LT:
            if (c == '?') {
                x->prolog = P_PI;
                x->run = 0;
            }
            else if (c == '!') {
                x->prolog = P_BANG;
            }
            else if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'
                     || c == ':' || c >= 0x80) {
                x->prolog = P_DONE;
            }
            else {
                return xml_fail(x, STOWRS_META_MALFORMED, "not well-formed XML (prolog)");
            }
            break;
        case P_BANG:
            if (c != '-') {
                return xml_fail(x, STOWRS_META_FORBIDDEN, "DOCTYPE not allowed");
            }
            x->prolog = P_BANG_DASH;
            break;
        case P_BANG_DASH:
            if (c != '-') {
                return xml_fail(x, STOWRS_META_MALFORMED, "not well-formed XML (prolog)");
            }
            x->prolog = P_COMMENT;
            x->run = 0;
            break;
        case P_COMMENT:
            if (c == '>' && x->run >= 2) {
                x->prolog = P_TEXT;
            }
            x->run = c == '-' ? x->run + 1 : 0;
            break;
        case P_PI:
            if (c == '>' && x->run) {
                x->prolog = P_TEXT;
            }
            x->run = c == '?';
            break;
        case P_DONE:
            break;
        }
    }
    return 0;
}

/* The reader's input: the file or buffer, through prolog_scan. We do not
 * use xmlReaderForFile, which would decompress a gzip file on the fly,
 * past the size limit the caller enforces on the part. */
static int
xml_input(void *ctx, char *buf, int len)
{
    xml_ctx_t *x = ctx;
    apr_size_t n = (apr_size_t)len;

    if (x->rc != STOWRS_META_OK || len < 0) {
        return -1;
    }
    if (x->file) {
        apr_status_t rv = apr_file_read(x->file, buf, &n);

        if (rv == APR_EOF) {
            n = 0;
        }
        else if (rv != APR_SUCCESS) {
            return -1;
        }
    }
    else {
        if (n > x->len - x->off) {
            n = x->len - x->off;
        }
        memcpy(buf, x->buf + x->off, n);
        x->off += n;
    }
    if (x->prolog != P_DONE && prolog_scan(x, buf, n) < 0) {
        /* none of this chunk reaches libxml2 */
        return -1;
    }
    return (int)n;
}

/* Which of our elements the current element node is; X_OTHER for any
 * other name or namespace. */
static xml_name_e
xml_name(xml_ctx_t *x)
{
    const char *local = (const char *)xmlTextReaderConstLocalName(x->rd);
    const char *ns = (const char *)xmlTextReaderConstNamespaceUri(x->rd);
    size_t i;

    if (!local) {
        return X_OTHER;
    }
    if (x->root_ns ? (!ns || strcmp(ns, NATIVE_DICOM_NS) != 0) : ns != NULL) {
        return X_OTHER;
    }
    for (i = 1; i < sizeof(xml_names) / sizeof(xml_names[0]); i++) {
        if (strcmp(local, xml_names[i]) == 0) {
            return (xml_name_e)i;
        }
    }
    return X_OTHER;
}

/* An attribute of the current element copied into the pool, or NULL. */
static const char *
xml_attr(xml_ctx_t *x, const char *name)
{
    xmlChar *v = xmlTextReaderGetAttribute(x->rd, (const xmlChar *)name);
    const char *copy;

    if (!v) {
        return NULL;
    }
    copy = apr_pstrdup(x->pool, (const char *)v);
    xmlFree(v);
    return copy;
}

/* The "number" attribute must count 1, 2, ... in document order. */
static int
xml_check_number(xml_ctx_t *x, int expected)
{
    const char *s = xml_attr(x, "number");
    long n = 0;

    if (!s || !*s || strlen(s) > 9) {
        return xml_fail(x, STOWRS_META_NOT_MODEL, "missing or bad number attribute");
    }
    for (; *s; s++) {
        if (*s < '0' || *s > '9') {
            return xml_fail(x, STOWRS_META_NOT_MODEL, "bad number attribute");
        }
        n = n * 10 + (*s - '0');
    }
    if (n != expected) {
        return xml_fail(x, STOWRS_META_NOT_MODEL, "number attributes out of order");
    }
    return 0;
}

static int
is_blank(const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        if (!is_xml_space((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

/*
 * The text content of the current element, up to its end tag; child
 * elements are not allowed. @c *text is NULL when the element is empty.
 * @return 0 or -1
 */
static int
xml_text(xml_ctx_t *x, const char **text, size_t *len)
{
    char *buf = NULL;
    size_t used = 0, cap = 0;

    *text = NULL;
    *len = 0;
    if (xmlTextReaderIsEmptyElement(x->rd)) {
        return 0;
    }
    for (;;) {
        int ret = xml_next(x, 1);
        int type;

        if (ret <= 0) {
            return ret < 0 ? -1 : xml_fail_parse(x);
        }
        type = xmlTextReaderNodeType(x->rd);
        if (type == XML_READER_TYPE_END_ELEMENT) {
            break;
        }
        if (type == XML_READER_TYPE_TEXT || type == XML_READER_TYPE_CDATA
            || type == XML_READER_TYPE_WHITESPACE
            || type == XML_READER_TYPE_SIGNIFICANT_WHITESPACE) {
            const char *v = (const char *)xmlTextReaderConstValue(x->rd);
            size_t n = v ? strlen(v) : 0;

            /* one text node is the rule, but CDATA sections split the
             * text into many: grow by doubling so that the copying and
             * the pool memory stay linear in the text */
            if (used + n + 1 > cap) {
                size_t ncap = cap ? cap : n + 1;
                char *b;

                while (ncap < used + n + 1) {
                    ncap *= 2;
                }
                b = apr_palloc(x->pool, ncap);
                if (used) {
                    memcpy(b, buf, used);
                }
                buf = b;
                cap = ncap;
            }
            if (n) {
                memcpy(buf + used, v, n);
            }
            used += n;
            buf[used] = '\0';
            continue;
        }
        return xml_fail(x, STOWRS_META_NOT_MODEL, "unexpected element in text");
    }
    if (used) {
        *text = buf;
        *len = used;
    }
    return 0;
}

/* Skip insignificant content of an element that holds only elements:
 * @return 1 on a child element, 0 at the end tag, -1 on failure */
static int
xml_child(xml_ctx_t *x)
{
    for (;;) {
        int ret = xml_next(x, 0), type;

        if (ret <= 0) {
            return ret < 0 ? -1 : xml_fail_parse(x);
        }
        type = xmlTextReaderNodeType(x->rd);
        if (type == XML_READER_TYPE_ELEMENT) {
            return 1;
        }
        if (type == XML_READER_TYPE_END_ELEMENT) {
            return 0;
        }
        if (type == XML_READER_TYPE_TEXT || type == XML_READER_TYPE_CDATA) {
            const char *v = (const char *)xmlTextReaderConstValue(x->rd);

            if (v && is_blank(v, strlen(v))) {
                continue;
            }
            return xml_fail(x, STOWRS_META_NOT_MODEL, "unexpected text");
        }
        return xml_fail(x, STOWRS_META_NOT_MODEL, "unexpected node");
    }
}

/* A PersonName element: up to three groups of up to five components. */
static int
xml_person_name(xml_ctx_t *x, const char **value)
{
    const char *comp[3][5] = { { NULL } };
    int seen[3] = { 0, 0, 0 };
    int ret;

    if (xmlTextReaderIsEmptyElement(x->rd)) {
        *value = NULL;
        return 0;
    }
    while ((ret = xml_child(x)) > 0) {
        xml_name_e g = xml_name(x);
        int gi, cret;

        if (g != X_ALPHABETIC && g != X_IDEOGRAPHIC && g != X_PHONETIC) {
            return xml_fail(x, STOWRS_META_NOT_MODEL, "unknown element in PersonName");
        }
        gi = (int)(g - X_ALPHABETIC);
        if (seen[gi]++) {
            return xml_fail(x, STOWRS_META_NOT_MODEL, "repeated name group");
        }
        if (xmlTextReaderIsEmptyElement(x->rd)) {
            continue;
        }
        while ((cret = xml_child(x)) > 0) {
            xml_name_e c = xml_name(x);
            const char *text;
            size_t len;
            int ci;

            if (c < X_FAMILY || c > X_SUFFIX) {
                return xml_fail(x, STOWRS_META_NOT_MODEL,
                                "unknown element in name group");
            }
            ci = (int)(c - X_FAMILY);
            if (comp[gi][ci]) {
                return xml_fail(x, STOWRS_META_NOT_MODEL, "repeated name component");
            }
            if (xml_text(x, &text, &len) < 0) {
                return -1;
            }
            /* the delimiters would change the name's structure */
            if (text && (memchr(text, '^', len) || memchr(text, '=', len)
                         || memchr(text, '\\', len))) {
                return xml_fail(x, STOWRS_META_NOT_MODEL, "delimiter in name component");
            }
            comp[gi][ci] = text ? text : "";
        }
        if (cret < 0) {
            return -1;
        }
    }
    if (ret < 0) {
        return -1;
    }
    *value = pn_join(x->pool, comp);
    return 0;
}

static int xml_dataset(xml_ctx_t *x, int depth, stowrs_meta_ds_t **out);

/* One DicomAttribute element and its content. */
static int
xml_attribute(xml_ctx_t *x, int depth, stowrs_meta_elem_t *e)
{
    const char *tag = xml_attr(x, "tag");
    const char *vr = xml_attr(x, "vr");
    const vr_info_t *info;
    apr_array_header_t *values = NULL, *items = NULL;
    xml_name_e kind = X_OTHER;
    int ret;

    memset(e, 0, sizeof(*e));
    if (!tag || parse_tag(tag, strlen(tag), &e->tag) != 0) {
        return xml_fail(x, STOWRS_META_NOT_MODEL, "missing or bad tag");
    }
    if (!vr || !(info = vr_lookup(vr, strlen(vr)))) {
        return xml_fail(x, STOWRS_META_NOT_MODEL, "missing or unknown VR");
    }
    memcpy(e->vr, info->vr, 3);
    e->private_creator = xml_attr(x, "privateCreator");
    if (xmlTextReaderIsEmptyElement(x->rd)) {
        return 0;
    }
    while ((ret = xml_child(x)) > 0) {
        xml_name_e name = xml_name(x);
        const char *text;
        size_t len;

        if (name != X_VALUE && name != X_PERSON_NAME && name != X_ITEM
            && name != X_BULK_DATA && name != X_INLINE_BINARY) {
            return xml_fail(x, STOWRS_META_NOT_MODEL,
                            "unknown element in DicomAttribute");
        }
        if (kind != X_OTHER && (kind != name || name == X_BULK_DATA
                                || name == X_INLINE_BINARY)) {
            return xml_fail(x, STOWRS_META_NOT_MODEL, "mixed content in DicomAttribute");
        }
        kind = name;
        switch (name) {
        case X_VALUE:
            if (info->cls == VR_SQ || info->cls == VR_PN || info->cls == VR_BINARY) {
                return xml_fail(x, STOWRS_META_NOT_MODEL,
                                "Value not allowed for this VR");
            }
            if (!values) {
                values = apr_array_make(x->pool, 1, sizeof(const char *));
            }
            if (xml_check_number(x, values->nelts + 1) < 0
                || xml_text(x, &text, &len) < 0) {
                return -1;
            }
            if (text && info->cls == VR_AT && !(text = at_value(x->pool, text, len))) {
                return xml_fail(x, STOWRS_META_NOT_MODEL, "bad AT value");
            }
            APR_ARRAY_PUSH(values, const char *) = text;
            break;
        case X_PERSON_NAME:
            if (info->cls != VR_PN) {
                return xml_fail(x, STOWRS_META_NOT_MODEL, "PersonName needs VR PN");
            }
            if (!values) {
                values = apr_array_make(x->pool, 1, sizeof(const char *));
            }
            if (xml_check_number(x, values->nelts + 1) < 0
                || xml_person_name(x, &text) < 0) {
                return -1;
            }
            APR_ARRAY_PUSH(values, const char *) = text;
            break;
        case X_ITEM: {
            stowrs_meta_ds_t *item;

            if (info->cls != VR_SQ) {
                return xml_fail(x, STOWRS_META_NOT_MODEL, "Item needs VR SQ");
            }
            if (depth + 1 > STOWRS_META_MAX_DEPTH) {
                return xml_fail(x, STOWRS_META_TOO_DEEP, "sequences nested too deep");
            }
            if (!items) {
                items = apr_array_make(x->pool, 1, sizeof(stowrs_meta_ds_t *));
            }
            if (xml_check_number(x, items->nelts + 1) < 0
                || xml_dataset(x, depth + 1, &item) < 0) {
                return -1;
            }
            APR_ARRAY_PUSH(items, stowrs_meta_ds_t *) = item;
            break;
        }
        case X_BULK_DATA:
            if (info->cls == VR_SQ) {
                return xml_fail(x, STOWRS_META_NOT_MODEL, "BulkData not allowed for SQ");
            }
            e->bulk_uri = xml_attr(x, "uri");
            if (!e->bulk_uri || !*e->bulk_uri) {
                return xml_fail(x, STOWRS_META_NOT_MODEL, "BulkData without uri");
            }
            if (xml_text(x, &text, &len) < 0) {
                return -1;
            }
            if (text && !is_blank(text, len)) {
                return xml_fail(x, STOWRS_META_NOT_MODEL, "text in BulkData");
            }
            break;
        case X_INLINE_BINARY:
            if (info->cls == VR_SQ) {
                return xml_fail(x, STOWRS_META_NOT_MODEL,
                                "InlineBinary not allowed for SQ");
            }
            if (xml_text(x, &text, &len) < 0) {
                return -1;
            }
            if (decode_base64(x->pool, text ? text : "", len, &e->inline_data,
                              &e->inline_len) != 0) {
                return xml_fail(x, STOWRS_META_NOT_MODEL, "InlineBinary is not base64");
            }
            e->has_inline = 1;
            break;
        default:
            break;
        }
    }
    if (ret < 0) {
        return -1;
    }
    if (values) {
        e->nvalues = values->nelts;
        e->values = (const char **)values->elts;
    }
    if (items) {
        e->nitems = items->nelts;
        e->items = (stowrs_meta_ds_t **)items->elts;
    }
    return 0;
}

/* The DicomAttribute children of the current element (root or Item). */
static int
xml_dataset(xml_ctx_t *x, int depth, stowrs_meta_ds_t **out)
{
    apr_array_header_t *elems = apr_array_make(x->pool, 8, sizeof(stowrs_meta_elem_t));
    int ret;

    if (!xmlTextReaderIsEmptyElement(x->rd)) {
        while ((ret = xml_child(x)) > 0) {
            stowrs_meta_elem_t e;

            if (xml_name(x) != X_ATTRIBUTE) {
                return xml_fail(x, STOWRS_META_NOT_MODEL, "unknown element in dataset");
            }
            if (xml_attribute(x, depth, &e) < 0) {
                return -1;
            }
            APR_ARRAY_PUSH(elems, stowrs_meta_elem_t) = e;
        }
        if (ret < 0) {
            return -1;
        }
    }
    if (finish_ds(x->pool, elems, out) != 0) {
        return xml_fail(x, STOWRS_META_NOT_MODEL, "duplicate tag");
    }
    return 0;
}

/* The whole document: the root, then nothing but the end of the input. */
static int
xml_document(xml_ctx_t *x, stowrs_meta_ds_t **out)
{
    const char *local, *ns;
    int ret;

    if ((ret = xml_next(x, 0)) <= 0) {
        return ret < 0 ? -1 : xml_fail_parse(x);
    }
    if (xmlTextReaderNodeType(x->rd) != XML_READER_TYPE_ELEMENT) {
        return xml_fail(x, STOWRS_META_NOT_MODEL, "no root element");
    }
    local = (const char *)xmlTextReaderConstLocalName(x->rd);
    ns = (const char *)xmlTextReaderConstNamespaceUri(x->rd);
    if (!local || strcmp(local, "NativeDicomModel") != 0) {
        return xml_fail(x, STOWRS_META_NOT_MODEL, "root is not NativeDicomModel");
    }
    if (ns && strcmp(ns, NATIVE_DICOM_NS) != 0) {
        return xml_fail(x, STOWRS_META_NOT_MODEL, "wrong namespace");
    }
    x->root_ns = ns != NULL;
    if (xml_dataset(x, 0, out) < 0) {
        return -1;
    }
    /* well-formedness of what follows the root is libxml2's to check */
    if ((ret = xml_next(x, 0)) > 0) {
        return xml_fail(x, STOWRS_META_NOT_MODEL, "content after the root");
    }
    return ret;
}

/* Read the document from x's input; libxml2 objects are freed here. */
static stowrs_meta_rc_e
xml_run(xml_ctx_t *x, stowrs_meta_ds_t **out, const char **error)
{
    stowrs_meta_ds_t *ds = NULL;
    xmlTextReaderPtr rd;

    x->rd = rd = xmlReaderForIO(xml_input, NULL, x, NULL, XML_ENCODING, XML_OPTIONS);
    if (!rd) {
        /* the first bytes are read here: prolog_scan may have refused them */
        xml_fail(x, STOWRS_META_NOMEM, "cannot create XML reader");
    }
    else {
        xmlTextReaderSetErrorHandler(rd, xml_on_error, x);
        if (xml_document(x, &ds) < 0 && x->rc == STOWRS_META_OK) {
            /* every failing path sets rc; keep that promise anyway */
            x->rc = STOWRS_META_MALFORMED;
            x->error = "not well-formed XML";
        }
        xmlFreeTextReader(rd);
    }
    *out = x->rc == STOWRS_META_OK ? ds : NULL;
    *error = x->rc == STOWRS_META_OK ? NULL : x->error;
    return x->rc;
}

/* Saved thread-local libxml2 error handlers, restored after one read. */
typedef struct {
    xmlGenericErrorFunc generic;
    void *generic_ctx;
    xmlStructuredErrorFunc structured;
    void *structured_ctx;
} xml_quiet_t;

static void
xml_quiet_begin(xml_quiet_t *q)
{
#ifdef LIBXML_THREAD_ENABLED
    q->generic = xmlGenericError;
    q->generic_ctx = xmlGenericErrorContext;
    q->structured = xmlStructuredError;
    q->structured_ctx = xmlStructuredErrorContext;
    xmlSetGenericErrorFunc(NULL, xml_quiet);
    xmlSetStructuredErrorFunc(NULL, NULL);
#else
    (void)q;
#endif
}

static void
xml_quiet_end(const xml_quiet_t *q)
{
#ifdef LIBXML_THREAD_ENABLED
    xmlSetGenericErrorFunc(q->generic_ctx, q->generic);
    xmlSetStructuredErrorFunc(q->structured_ctx, q->structured);
#else
    (void)q;
#endif
}

stowrs_meta_rc_e
stowrs_meta_read_xml(apr_pool_t *pool, const char *buf, size_t len,
                     stowrs_meta_ds_t **out, const char **error)
{
    xml_ctx_t x;
    xml_quiet_t q;
    stowrs_meta_rc_e rc;

    memset(&x, 0, sizeof(x));
    x.pool = pool;
    *out = NULL;
    if (!buf || len == 0) {
        *error = "empty XML document";
        return STOWRS_META_MALFORMED;
    }
    x.buf = buf;
    x.len = len;
    xml_quiet_begin(&q);
    rc = xml_run(&x, out, error);
    xml_quiet_end(&q);
    return rc;
}

stowrs_meta_rc_e
stowrs_meta_read_xml_file(apr_pool_t *pool, const char *path,
                          stowrs_meta_ds_t **out, const char **error)
{
    xml_ctx_t x;
    xml_quiet_t q;
    apr_file_t *f;
    stowrs_meta_rc_e rc;

    memset(&x, 0, sizeof(x));
    x.pool = pool;
    *out = NULL;
    if (apr_file_open(&f, path, APR_FOPEN_READ | APR_FOPEN_BUFFERED, APR_OS_DEFAULT,
                      pool) != APR_SUCCESS) {
        *error = "cannot open XML document";
        return STOWRS_META_MALFORMED;
    }
    x.file = f;
    xml_quiet_begin(&q);
    rc = xml_run(&x, out, error);
    xml_quiet_end(&q);
    apr_file_close(f);
    return rc;
}

/* --- JSON: PS3.18 Annex F --------------------------------------------------- */

typedef struct {
    apr_pool_t *pool;
    stowrs_meta_rc_e rc;
    const char *error;
} json_ctx_t;

static int
json_fail(json_ctx_t *j, stowrs_meta_rc_e rc, const char *error)
{
    if (j->rc == STOWRS_META_OK) {
        j->rc = rc;
        j->error = error;
    }
    return -1;
}

/* The shortest text that reads back as the same double, so 0.1 stays
 * "0.1" and no precision is lost. */
static const char *
json_number_text(apr_pool_t *pool, const json_t *v)
{
    char buf[40];
    double d;
    int prec;

    if (json_is_integer(v)) {
        /* apr_psprintf does not know %lld */
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
        return apr_pstrdup(pool, buf);
    }
    d = json_real_value(v);
    for (prec = 15; prec < 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, d);
        if (strtod(buf, NULL) == d) {
            return apr_pstrdup(pool, buf);
        }
    }
    snprintf(buf, sizeof(buf), "%.17g", d);
    return apr_pstrdup(pool, buf);
}

/* A string value, "" taken as an empty value (NULL). */
static const char *
json_string_text(apr_pool_t *pool, const json_t *v)
{
    size_t len = json_string_length(v);

    return len ? apr_pstrmemdup(pool, json_string_value(v), len) : NULL;
}

/* A PN value object: {"Alphabetic": .., "Ideographic": .., "Phonetic": ..}. */
static int
json_person_name(json_ctx_t *j, json_t *v, const char **value)
{
    static const char *const groups[3] = { "Alphabetic", "Ideographic", "Phonetic" };
    const char *comp[3][5] = { { NULL } };
    const char *key;
    json_t *g;

    json_object_foreach(v, key, g) {
        size_t len;
        int gi;

        for (gi = 0; gi < 3 && strcmp(key, groups[gi]) != 0; gi++) {
        }
        if (gi == 3) {
            return json_fail(j, STOWRS_META_NOT_MODEL, "unknown member in PN value");
        }
        if (json_is_null(g)) {
            continue;
        }
        if (!json_is_string(g)) {
            return json_fail(j, STOWRS_META_NOT_MODEL, "PN group is not a string");
        }
        if (strchr(json_string_value(g), '=') || strchr(json_string_value(g), '\\')) {
            return json_fail(j, STOWRS_META_NOT_MODEL, "delimiter in PN group");
        }
        /* a group's components are already '^'-joined: keep it as one,
         * without trailing empty components */
        len = json_string_length(g);
        while (len > 0 && json_string_value(g)[len - 1] == '^') {
            len--;
        }
        comp[gi][0] = apr_pstrmemdup(j->pool, json_string_value(g), len);
    }
    *value = pn_join(j->pool, comp);
    return 0;
}

static int json_dataset(json_ctx_t *j, json_t *obj, int depth, stowrs_meta_ds_t **out);

/* The "Value" array of an attribute, read according to its VR. */
static int
json_values(json_ctx_t *j, json_t *arr, const vr_info_t *info, int depth,
            stowrs_meta_elem_t *e)
{
    size_t n = json_array_size(arr), i;

    if (n > 0x7fffffff) {
        return json_fail(j, STOWRS_META_NOT_MODEL, "too many values");
    }
    if (info->cls == VR_BINARY) {
        return json_fail(j, STOWRS_META_NOT_MODEL, "Value not allowed for this VR");
    }
    if (info->cls == VR_SQ) {
        if (depth + 1 > STOWRS_META_MAX_DEPTH) {
            return json_fail(j, STOWRS_META_TOO_DEEP, "sequences nested too deep");
        }
        e->items = apr_pcalloc(j->pool, (n ? n : 1) * sizeof(*e->items));
        e->nitems = (int)n;
        for (i = 0; i < n; i++) {
            json_t *item = json_array_get(arr, i);

            if (!json_is_object(item)) {
                return json_fail(j, STOWRS_META_NOT_MODEL, "SQ item is not an object");
            }
            if (json_dataset(j, item, depth + 1, &e->items[i]) < 0) {
                return -1;
            }
        }
        return 0;
    }
    e->values = apr_pcalloc(j->pool, (n ? n : 1) * sizeof(*e->values));
    e->nvalues = (int)n;
    for (i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);

        if (json_is_null(v)) {
            continue;
        }
        switch (info->cls) {
        case VR_PN:
            if (!json_is_object(v)) {
                return json_fail(j, STOWRS_META_NOT_MODEL, "PN value is not an object");
            }
            if (json_person_name(j, v, &e->values[i]) < 0) {
                return -1;
            }
            break;
        case VR_AT:
            if (!json_is_string(v)
                || !(e->values[i] = at_value(j->pool, json_string_value(v),
                                             json_string_length(v)))) {
                return json_fail(j, STOWRS_META_NOT_MODEL, "bad AT value");
            }
            break;
        case VR_NUMBER:
            /* PS3.18 F.2.3 allows strings for DS, IS, SV, UV (and
             * "NaN"-like text for FL/FD); the shim checks the text */
            if (json_is_number(v)) {
                e->values[i] = json_number_text(j->pool, v);
            }
            else if (json_is_string(v)) {
                e->values[i] = json_string_text(j->pool, v);
            }
            else {
                return json_fail(j, STOWRS_META_NOT_MODEL, "wrong value type");
            }
            break;
        default:
            if (!json_is_string(v)) {
                return json_fail(j, STOWRS_META_NOT_MODEL, "wrong value type");
            }
            e->values[i] = json_string_text(j->pool, v);
            break;
        }
    }
    return 0;
}

/* One attribute: "GGGGEEEE": {"vr": .., and at most one of Value,
 * BulkDataURI, InlineBinary}. */
static int
json_attribute(json_ctx_t *j, const char *key, json_t *a, int depth,
               stowrs_meta_elem_t *e)
{
    json_t *vr, *value, *bulk, *inl;
    const vr_info_t *info;
    const char *member;
    json_t *m;

    memset(e, 0, sizeof(*e));
    if (parse_tag(key, strlen(key), &e->tag) != 0) {
        return json_fail(j, STOWRS_META_NOT_MODEL, "bad tag");
    }
    if (!json_is_object(a)) {
        return json_fail(j, STOWRS_META_NOT_MODEL, "attribute is not an object");
    }
    json_object_foreach(a, member, m) {
        if (strcmp(member, "vr") != 0 && strcmp(member, "Value") != 0
            && strcmp(member, "BulkDataURI") != 0
            && strcmp(member, "InlineBinary") != 0) {
            return json_fail(j, STOWRS_META_NOT_MODEL, "unknown member in attribute");
        }
    }
    vr = json_object_get(a, "vr");
    if (!json_is_string(vr)
        || !(info = vr_lookup(json_string_value(vr), json_string_length(vr)))) {
        return json_fail(j, STOWRS_META_NOT_MODEL, "missing or unknown VR");
    }
    memcpy(e->vr, info->vr, 3);
    value = json_object_get(a, "Value");
    bulk = json_object_get(a, "BulkDataURI");
    inl = json_object_get(a, "InlineBinary");
    if ((value != NULL) + (bulk != NULL) + (inl != NULL) > 1) {
        return json_fail(j, STOWRS_META_NOT_MODEL,
                         "more than one of Value, BulkDataURI, InlineBinary");
    }
    if (value) {
        if (!json_is_array(value)) {
            return json_fail(j, STOWRS_META_NOT_MODEL, "Value is not an array");
        }
        return json_values(j, value, info, depth, e);
    }
    if (bulk) {
        if (info->cls == VR_SQ || !json_is_string(bulk)
            || json_string_length(bulk) == 0) {
            return json_fail(j, STOWRS_META_NOT_MODEL, "bad BulkDataURI");
        }
        e->bulk_uri = apr_pstrmemdup(j->pool, json_string_value(bulk),
                                     json_string_length(bulk));
    }
    if (inl) {
        if (info->cls == VR_SQ || !json_is_string(inl)
            || decode_base64(j->pool, json_string_value(inl), json_string_length(inl),
                             &e->inline_data, &e->inline_len) != 0) {
            return json_fail(j, STOWRS_META_NOT_MODEL, "InlineBinary is not base64");
        }
        e->has_inline = 1;
    }
    return 0;
}

static int
json_dataset(json_ctx_t *j, json_t *obj, int depth, stowrs_meta_ds_t **out)
{
    apr_array_header_t *elems = apr_array_make(j->pool, (int)json_object_size(obj) + 1,
                                               sizeof(stowrs_meta_elem_t));
    const char *key;
    json_t *a;

    json_object_foreach(obj, key, a) {
        stowrs_meta_elem_t e;

        if (json_attribute(j, key, a, depth, &e) < 0) {
            return -1;
        }
        APR_ARRAY_PUSH(elems, stowrs_meta_elem_t) = e;
    }
    if (finish_ds(j->pool, elems, out) != 0) {
        return json_fail(j, STOWRS_META_NOT_MODEL, "duplicate tag");
    }
    return 0;
}

/* Read the objects of a parsed document and free it. */
static stowrs_meta_rc_e
json_run(apr_pool_t *pool, json_t *root, const json_error_t *jerr,
         apr_array_header_t **objects, const char **error)
{
    apr_array_header_t *arr;
    size_t n, i;

    *objects = NULL;
    *error = NULL;
    if (!root) {
        switch (json_error_code(jerr)) {
        case json_error_out_of_memory:
            *error = "out of memory reading JSON";
            return STOWRS_META_NOMEM;
        case json_error_cannot_open_file:
            *error = "cannot open JSON document";
            return STOWRS_META_MALFORMED;
        case json_error_duplicate_key:
            /* jansson would silently keep one of the two */
            *error = apr_psprintf(pool, "duplicate key in JSON (line %d, column %d)",
                                  jerr->line, jerr->column);
            return STOWRS_META_MALFORMED;
        default:
            /* jerr->text may quote the document: position only */
            *error = apr_psprintf(pool, "not well-formed JSON (line %d, column %d)",
                                  jerr->line, jerr->column);
            return STOWRS_META_MALFORMED;
        }
    }
    if (!json_is_array(root) && !json_is_object(root)) {
        /* json_loadb without JSON_DECODE_ANY does not return these */
        json_decref(root);
        *error = "JSON document is not an array of objects";
        return STOWRS_META_NOT_MODEL;
    }
    n = json_is_array(root) ? json_array_size(root) : 1;
    if (n > 0x7ffffff) {
        json_decref(root);
        *error = "too many objects";
        return STOWRS_META_NOT_MODEL;
    }
    arr = apr_array_make(pool, (int)n + 1, sizeof(stowrs_meta_object_t));
    for (i = 0; i < n; i++) {
        json_t *obj = json_is_array(root) ? json_array_get(root, i) : root;
        stowrs_meta_object_t *o = apr_array_push(arr);
        json_ctx_t j;

        j.pool = pool;
        j.rc = STOWRS_META_OK;
        j.error = NULL;
        o->ds = NULL;
        if (!json_is_object(obj)) {
            json_fail(&j, STOWRS_META_NOT_MODEL, "not a JSON object");
        }
        else if (json_dataset(&j, obj, 0, &o->ds) < 0 && j.rc == STOWRS_META_OK) {
            j.rc = STOWRS_META_NOT_MODEL;
            j.error = "not a DICOM JSON object";
        }
        o->rc = j.rc;
        o->error = j.error;
        if (o->rc != STOWRS_META_OK) {
            o->ds = NULL;
        }
    }
    json_decref(root);
    *objects = arr;
    return STOWRS_META_OK;
}

/* Duplicate keys are refused: in DICOM JSON they are duplicate tags, and
 * jansson would otherwise keep only the last. JSON_DECODE_ANY is not
 * given, so a top-level scalar is not well-formed for us; JSON_ALLOW_NUL is
 * not given, so every string is a C string. */
#define JSON_FLAGS JSON_REJECT_DUPLICATES

stowrs_meta_rc_e
stowrs_meta_read_json(apr_pool_t *pool, const char *buf, size_t len,
                      apr_array_header_t **objects, const char **error)
{
    json_error_t jerr;

    if (!buf) {
        buf = "";
        len = 0;
    }
    return json_run(pool, json_loadb(buf, len, JSON_FLAGS, &jerr), &jerr, objects, error);
}

stowrs_meta_rc_e
stowrs_meta_read_json_file(apr_pool_t *pool, const char *path,
                           apr_array_header_t **objects, const char **error)
{
    json_error_t jerr;

    return json_run(pool, json_load_file(path, JSON_FLAGS, &jerr), &jerr, objects, error);
}

/* --- lookups ------------------------------------------------------------------ */

const stowrs_meta_elem_t *
stowrs_meta_find(const stowrs_meta_ds_t *ds, unsigned int tag)
{
    int lo = 0, hi;

    if (!ds) {
        return NULL;
    }
    hi = ds->nelems - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        unsigned int t = ds->elems[mid].tag;

        if (t == tag) {
            return &ds->elems[mid];
        }
        if (t < tag) {
            lo = mid + 1;
        }
        else {
            hi = mid - 1;
        }
    }
    return NULL;
}

/* RFC 3986 §5.2.4 remove_dot_segments. */
static const char *
remove_dot_segments(apr_pool_t *pool, const char *in)
{
    char *out = apr_palloc(pool, strlen(in) + 1);
    size_t olen = 0;

    while (*in) {
        if (strncmp(in, "../", 3) == 0) {
            in += 3;
        }
        else if (strncmp(in, "./", 2) == 0) {
            in += 2;
        }
        else if (strncmp(in, "/./", 3) == 0) {
            in += 2;
        }
        else if (strcmp(in, "/.") == 0) {
            in = "/";
        }
        else if (strncmp(in, "/../", 4) == 0 || strcmp(in, "/..") == 0) {
            in = in[3] ? in + 3 : "/";
            while (olen > 0 && out[olen - 1] != '/') {
                olen--;
            }
            if (olen > 0) {
                olen--;
            }
        }
        else if (strcmp(in, ".") == 0 || strcmp(in, "..") == 0) {
            in = "";
        }
        else {
            size_t n = 1 + strcspn(in + 1, "/");

            if (*in != '/') {
                n = strcspn(in, "/");
            }
            memcpy(out + olen, in, n);
            olen += n;
            in += n;
        }
    }
    out[olen] = '\0';
    return out;
}

const char *
stowrs_meta_uri_key(apr_pool_t *pool, const char *request_url, const char *ref)
{
    apr_uri_t r, b;
    const char *path, *query;

    if (!ref || apr_uri_parse(pool, ref, &r) != APR_SUCCESS) {
        return NULL;
    }
    if (r.scheme && !r.hostinfo && (!r.path || r.path[0] != '/')) {
        /* opaque (urn:uuid:…, cid:…): nothing to resolve */
        return apr_pstrdup(pool, ref);
    }
    if (r.scheme || r.hostinfo) {
        /* absolute or network-path reference: another host's name for
         * our path is still our path */
        path = r.path && *r.path ? r.path : "/";
        query = r.query;
    }
    else if (r.path && r.path[0] == '/') {
        path = r.path;
        query = r.query;
    }
    else {
        const char *bpath;

        if (!request_url || apr_uri_parse(pool, request_url, &b) != APR_SUCCESS) {
            return NULL;
        }
        bpath = b.path && *b.path ? b.path : (b.hostinfo ? "/" : "");
        if (!r.path || !*r.path) {
            path = bpath;
            query = r.query ? r.query : b.query;
        }
        else {
            const char *slash = strrchr(bpath, '/');

            /* §5.2.3: all but the last segment of the base path */
            path = slash ? apr_pstrcat(pool, apr_pstrmemdup(pool, bpath,
                                           (apr_size_t)(slash - bpath + 1)),
                                       r.path, NULL)
                         : r.path;
            query = r.query;
        }
    }
    path = remove_dot_segments(pool, path);
    return query ? apr_pstrcat(pool, path, "?", query, NULL) : path;
}
