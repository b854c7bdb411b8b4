/*
 * fuzz_response.c: the Store Instances Response Module
 * (stowrs_resp_build, XML and JSON) and the outcome-to-status rule
 * (stowrs_outcome_http_status).
 *
 * The input is decoded into an outcome list and a retrieve base:
 *
 *   byte 0     bits 0-2 number of outcomes, bit 4 no retrieve base
 *   base       a length byte, then that many bytes
 *   per outcome  a flags byte: bits 0-3 FailureReason (table below; 15
 *              takes two more bytes as a raw value), bit 4 no study UID,
 *              bit 5 no series UID, bit 6 duplicate; then four strings
 *              (class, instance, study, series), each a length byte and
 *              that many bytes - any bytes, '<', '&', '"', non-ASCII and
 *              control characters included (a NUL ends the C string)
 *
 * Properties: both bodies are built; the XML parses with libxml2 (no
 * network, no error of any level) and the JSON with jansson; each names
 * the Native DICOM Model attributes of DESIGN.md §3.6, with one item per
 * outcome in order, and every value reads back as what went in (bytes
 * outside printable ASCII as '?', which is what the writer promises). The
 * HTTP status follows §3.6.
 */
#include <string.h>

#include <apr_strings.h>
#include <apr_tables.h>

#include <jansson.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "fuzz.h"
#include "stowrs_outcome.h"
#include "stowrs_response.h"

#define NATIVE_DICOM_NS "http://dicom.nema.org/PS3.19/models/NativeDICOM"

static const unsigned int reason_table[15] = {
    0, 0, 0, 0,
    STOWRS_FR_PROCESSING_FAILURE, STOWRS_FR_DUPLICATE_REJECTED,
    STOWRS_FR_SOP_CLASS_NOT_SUPPORTED, STOWRS_FR_OUT_OF_RESOURCES,
    STOWRS_FR_UID_CONFLICT, STOWRS_FR_DATASET_MISMATCH,
    STOWRS_FR_BULKDATA_MISSING, STOWRS_FR_CANNOT_UNDERSTAND,
    STOWRS_FR_TS_NOT_SUPPORTED, STOWRS_FR_STUDY_MISMATCH,
    STOWRS_FR_NOT_PARSEABLE
};

typedef struct {
    const uint8_t *p;
    size_t left;
} input_t;

static unsigned int
take_byte(input_t *in)
{
    if (!in->left) {
        return 0;
    }
    in->left--;
    return *in->p++;
}

static const char *
take_string(apr_pool_t *pool, input_t *in)
{
    size_t n = take_byte(in);

    if (n > in->left) {
        n = in->left;
    }
    in->p += n;
    in->left -= n;
    /* apr_pstrmemdup keeps a NUL inside: the C string ends there */
    return apr_pstrmemdup(pool, (const char *)in->p - n, n);
}

/* What the writer promises for a value: printable ASCII kept, the rest
 * replaced by '?'. NULL for NULL or "" (an empty attribute). */
static const char *
expect_value(apr_pool_t *pool, const char *s)
{
    char *c, *copy;

    if (!s || !*s) {
        return NULL;
    }
    copy = apr_pstrdup(pool, s);
    for (c = copy; *c; c++) {
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e) {
            *c = '?';
        }
    }
    return copy;
}

static int
stored(const stowrs_outcome_t *o)
{
    return o->failure_reason == 0;
}

static const char *
expect_instance_url(apr_pool_t *pool, const stowrs_outcome_t *o, const char *base)
{
    if (!o->study_instance_uid || !o->series_instance_uid || !o->sop_instance_uid) {
        return NULL;
    }
    return expect_value(pool, apr_pstrcat(pool, base, "/studies/", o->study_instance_uid,
                                          "/series/", o->series_instance_uid,
                                          "/instances/", o->sop_instance_uid, NULL));
}

static const char *
expect_study_url(apr_pool_t *pool, const apr_array_header_t *outs, const char *base)
{
    const char *study = NULL;
    int i;

    for (i = 0; i < outs->nelts; i++) {
        const stowrs_outcome_t *o = &APR_ARRAY_IDX(outs, i, stowrs_outcome_t);

        if (!stored(o) || !o->study_instance_uid || !*o->study_instance_uid) {
            continue;
        }
        if (!study) {
            study = o->study_instance_uid;
        }
        else if (strcmp(study, o->study_instance_uid) != 0) {
            return NULL;
        }
    }
    return study ? expect_value(pool, apr_pstrcat(pool, base, "/studies/", study, NULL))
                 : NULL;
}

static void
same(const char *what, const char *got, const char *want)
{
    if ((got == NULL) != (want == NULL) || (got && strcmp(got, want) != 0)) {
        fprintf(stderr, "fuzz_response: %s is [%s], want [%s]\n", what,
                got ? got : "(none)", want ? want : "(none)");
        abort();
    }
}

/* --- XML ------------------------------------------------------------------ */

static int xml_errors;

static void
xml_count_error(void *ctx, xmlErrorPtr err)
{
    (void)ctx;
    if (err && err->level >= XML_ERR_WARNING) {
        xml_errors++;
    }
}

static int
xml_is(const xmlNode *n, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0;
}

/* The DicomAttribute child of @parent with @tag, checked for @vr, or NULL. */
static xmlNode *
xml_find(xmlNode *parent, const char *tag, const char *vr)
{
    xmlNode *n;

    for (n = parent->children; n; n = n->next) {
        xmlChar *t, *v;
        int match;

        if (!xml_is(n, "DicomAttribute")) {
            continue;
        }
        t = xmlGetProp(n, (const xmlChar *)"tag");
        match = t && strcmp((const char *)t, tag) == 0;
        xmlFree(t);
        if (!match) {
            continue;
        }
        v = xmlGetProp(n, (const xmlChar *)"vr");
        FUZZ_CHECK(v && strcmp((const char *)v, vr) == 0);
        xmlFree(v);
        FUZZ_CHECK(xmlHasProp(n, (const xmlChar *)"keyword") != NULL);
        return n;
    }
    return NULL;
}

/* The single Value of a DicomAttribute, NULL if it has none. */
static const char *
xml_value(apr_pool_t *pool, xmlNode *attr)
{
    xmlNode *n, *val = NULL;
    xmlChar *num, *text;
    const char *copy;

    for (n = attr->children; n; n = n->next) {
        if (n->type != XML_ELEMENT_NODE) {
            continue;
        }
        FUZZ_CHECK(xml_is(n, "Value") && val == NULL);
        val = n;
    }
    if (!val) {
        return NULL;
    }
    num = xmlGetProp(val, (const xmlChar *)"number");
    FUZZ_CHECK(num && strcmp((const char *)num, "1") == 0);
    xmlFree(num);
    text = xmlNodeGetContent(val);
    copy = apr_pstrdup(pool, text ? (const char *)text : "");
    xmlFree(text);
    return copy;
}

static void
xml_check_items(apr_pool_t *pool, xmlNode *seq, const apr_array_header_t *outs,
                int want_stored, const char *base)
{
    xmlNode *n = seq->children;
    int i, number = 0;

    for (i = 0; i < outs->nelts; i++) {
        const stowrs_outcome_t *o = &APR_ARRAY_IDX(outs, i, stowrs_outcome_t);
        xmlNode *a;
        xmlChar *num;
        char want_num[16];

        if (stored(o) != want_stored) {
            continue;
        }
        while (n && n->type != XML_ELEMENT_NODE) {
            n = n->next;
        }
        FUZZ_CHECK(xml_is(n, "Item"));
        num = xmlGetProp(n, (const xmlChar *)"number");
        snprintf(want_num, sizeof(want_num), "%d", ++number);
        FUZZ_CHECK(num && strcmp((const char *)num, want_num) == 0);
        xmlFree(num);

        a = xml_find(n, "00081150", "UI");
        FUZZ_CHECK(a);
        same("XML ReferencedSOPClassUID", xml_value(pool, a),
             expect_value(pool, o->sop_class_uid));
        a = xml_find(n, "00081155", "UI");
        FUZZ_CHECK(a);
        same("XML ReferencedSOPInstanceUID", xml_value(pool, a),
             expect_value(pool, o->sop_instance_uid));
        if (want_stored) {
            a = xml_find(n, "00081190", "UR");
            FUZZ_CHECK(a);
            same("XML item RetrieveURL", xml_value(pool, a),
                 expect_instance_url(pool, o, base));
            FUZZ_CHECK(xml_find(n, "00081197", "US") == NULL);
        }
        else {
            a = xml_find(n, "00081197", "US");
            FUZZ_CHECK(a);
            same("XML FailureReason", xml_value(pool, a),
                 apr_psprintf(pool, "%u", o->failure_reason));
            FUZZ_CHECK(xml_find(n, "00081190", "UR") == NULL);
        }
        n = n->next;
    }
    while (n && n->type != XML_ELEMENT_NODE) {
        n = n->next;
    }
    FUZZ_CHECK(n == NULL);
}

static void
check_xml(apr_pool_t *pool, const char *body, apr_size_t len,
          const apr_array_header_t *outs, const char *base, int nfailed, int nstored)
{
    xmlDocPtr doc;
    xmlNode *root, *a;

    xml_errors = 0;
    xmlSetStructuredErrorFunc(NULL, xml_count_error);
    doc = xmlReadMemory(body, (int)len, "response.xml", NULL, XML_PARSE_NONET);
    xmlSetStructuredErrorFunc(NULL, NULL);
    if (!doc || xml_errors) {
        fprintf(stderr, "fuzz_response: XML does not parse (%d errors):\n%.*s\n",
                xml_errors, (int)len, body);
        abort();
    }
    root = xmlDocGetRootElement(doc);
    FUZZ_CHECK(xml_is(root, "NativeDicomModel"));
    FUZZ_CHECK(root->ns && root->ns->href
               && strcmp((const char *)root->ns->href, NATIVE_DICOM_NS) == 0);

    a = xml_find(root, "00081190", "UR");
    FUZZ_CHECK(a);
    same("XML RetrieveURL", xml_value(pool, a), expect_study_url(pool, outs, base));

    a = xml_find(root, "00081198", "SQ");
    FUZZ_CHECK((a != NULL) == (nfailed > 0));
    if (a) {
        xml_check_items(pool, a, outs, 0, base);
    }
    a = xml_find(root, "00081199", "SQ");
    FUZZ_CHECK((a != NULL) == (nstored > 0));
    if (a) {
        xml_check_items(pool, a, outs, 1, base);
    }
    xmlFreeDoc(doc);
}

/* --- JSON ----------------------------------------------------------------- */

/* obj[tag] with its vr checked; NULL if absent. */
static json_t *
json_find(json_t *obj, const char *tag, const char *vr)
{
    json_t *a = json_object_get(obj, tag);
    json_t *v;

    if (!a) {
        return NULL;
    }
    FUZZ_CHECK(json_is_object(a));
    v = json_object_get(a, "vr");
    FUZZ_CHECK(json_is_string(v) && strcmp(json_string_value(v), vr) == 0);
    return a;
}

static const char *
json_value(json_t *attr)
{
    json_t *arr = json_object_get(attr, "Value");
    json_t *v;

    if (!arr) {
        return NULL;
    }
    FUZZ_CHECK(json_is_array(arr) && json_array_size(arr) == 1);
    v = json_array_get(arr, 0);
    FUZZ_CHECK(json_is_string(v));
    /* no NUL inside: what went in was a C string */
    FUZZ_CHECK(strlen(json_string_value(v)) == json_string_length(v));
    return json_string_value(v);
}

static void
json_check_items(apr_pool_t *pool, json_t *seq, const apr_array_header_t *outs,
                 int want_stored, const char *base)
{
    json_t *items = json_object_get(seq, "Value");
    size_t k = 0;
    int i;

    FUZZ_CHECK(json_is_array(items));
    for (i = 0; i < outs->nelts; i++) {
        const stowrs_outcome_t *o = &APR_ARRAY_IDX(outs, i, stowrs_outcome_t);
        json_t *item, *a, *arr;

        if (stored(o) != want_stored) {
            continue;
        }
        item = json_array_get(items, k++);
        FUZZ_CHECK(json_is_object(item));
        a = json_find(item, "00081150", "UI");
        FUZZ_CHECK(a);
        same("JSON ReferencedSOPClassUID", json_value(a),
             expect_value(pool, o->sop_class_uid));
        a = json_find(item, "00081155", "UI");
        FUZZ_CHECK(a);
        same("JSON ReferencedSOPInstanceUID", json_value(a),
             expect_value(pool, o->sop_instance_uid));
        if (want_stored) {
            a = json_find(item, "00081190", "UR");
            FUZZ_CHECK(a);
            same("JSON item RetrieveURL", json_value(a),
                 expect_instance_url(pool, o, base));
            FUZZ_CHECK(json_object_size(item) == 3);
        }
        else {
            a = json_find(item, "00081197", "US");
            FUZZ_CHECK(a);
            arr = json_object_get(a, "Value");
            FUZZ_CHECK(json_is_array(arr) && json_array_size(arr) == 1);
            FUZZ_CHECK(json_is_integer(json_array_get(arr, 0)));
            FUZZ_CHECK(json_integer_value(json_array_get(arr, 0))
                       == (json_int_t)o->failure_reason);
            FUZZ_CHECK(json_object_size(item) == 3);
        }
    }
    FUZZ_CHECK(k == json_array_size(items));
}

static void
check_json(apr_pool_t *pool, const char *body, apr_size_t len,
           const apr_array_header_t *outs, const char *base, int nfailed, int nstored)
{
    json_error_t err;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
    json_t *a;

    if (!root) {
        fprintf(stderr, "fuzz_response: JSON does not parse (%s):\n%.*s\n",
                err.text, (int)len, body);
        abort();
    }
    FUZZ_CHECK(json_is_object(root));
    a = json_find(root, "00081190", "UR");
    FUZZ_CHECK(a);
    same("JSON RetrieveURL", json_value(a), expect_study_url(pool, outs, base));
    a = json_find(root, "00081198", "SQ");
    FUZZ_CHECK((a != NULL) == (nfailed > 0));
    if (a) {
        json_check_items(pool, a, outs, 0, base);
    }
    a = json_find(root, "00081199", "SQ");
    FUZZ_CHECK((a != NULL) == (nstored > 0));
    if (a) {
        json_check_items(pool, a, outs, 1, base);
    }
    FUZZ_CHECK(json_object_size(root) == 1u + (nfailed > 0) + (nstored > 0));
    json_decref(root);
}

/* --- the status ----------------------------------------------------------- */

static void
check_status(const apr_array_header_t *outs, int nfailed, int nstored)
{
    int status = stowrs_outcome_http_status(outs);
    int resources = 0, i;

    for (i = 0; i < outs->nelts; i++) {
        unsigned int r = APR_ARRAY_IDX(outs, i, stowrs_outcome_t).failure_reason;
        const char *text = stowrs_outcome_reason_text(r);

        /* it goes into a quoted-string of a Warning header */
        FUZZ_CHECK(text && *text && !strchr(text, '"') && !strchr(text, '\\'));
        if (r && (r & 0xFF00u) == 0xA700u && r != STOWRS_FR_UID_CONFLICT) {
            resources++;
        }
    }
    if (nfailed == 0) {
        FUZZ_CHECK(status == (nstored > 0 ? 200 : 409));
    }
    else if (nstored > 0) {
        FUZZ_CHECK(status == 202);
    }
    else {
        FUZZ_CHECK(status == (resources == nfailed ? 503 : 409));
    }
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_apr_init();
    xmlInitParser();
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *pool = fuzz_pool();
    input_t in = { data, size };
    apr_array_header_t *outs = apr_array_make(pool, 4, sizeof(stowrs_outcome_t));
    unsigned int head = take_byte(&in);
    unsigned int n = head & 7, i;
    const char *base = take_string(pool, &in);
    const char *body;
    apr_size_t len;
    int nfailed = 0, nstored = 0;

    if (head & 16) {
        base = NULL;
    }
    for (i = 0; i < n; i++) {
        stowrs_outcome_t *o = apr_array_push(outs);
        unsigned int flags = take_byte(&in);

        memset(o, 0, sizeof(*o));
        if ((flags & 15) == 15) {
            o->failure_reason = take_byte(&in) << 8;
            o->failure_reason |= take_byte(&in);
        }
        else {
            o->failure_reason = reason_table[flags & 15];
        }
        o->duplicate = (flags & 64) != 0;
        o->sop_class_uid = take_string(pool, &in);
        o->sop_instance_uid = take_string(pool, &in);
        o->study_instance_uid = take_string(pool, &in);
        o->series_instance_uid = take_string(pool, &in);
        if (flags & 16) {
            o->study_instance_uid = NULL;
        }
        if (flags & 32) {
            o->series_instance_uid = NULL;
        }
        o->detail = "fuzz";
        if (stored(o)) {
            nstored++;
        }
        else {
            nfailed++;
        }
    }

    FUZZ_CHECK(stowrs_resp_build(pool, STOWRS_RESP_XML, outs, base, &body, &len)
               == APR_SUCCESS);
    FUZZ_CHECK(body != NULL && strlen(body) == len);
    check_xml(pool, body, len, outs, base ? base : "", nfailed, nstored);

    FUZZ_CHECK(stowrs_resp_build(pool, STOWRS_RESP_JSON, outs, base, &body, &len)
               == APR_SUCCESS);
    FUZZ_CHECK(body != NULL && strlen(body) == len);
    check_json(pool, body, len, outs, base ? base : "", nfailed, nstored);

    check_status(outs, nfailed, nstored);
    apr_pool_destroy(pool);
    return 0;
}
