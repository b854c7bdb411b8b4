/*
 * stowrs_response.c - the Store Instances Response Module (PS3.18 Annex I)
 * as application/dicom+xml (PS3.19 Native DICOM Model, written with
 * libxml2) or application/dicom+json (PS3.18 Annex F, written with jansson),
 * and the Accept negotiation that picks one.
 *
 * Escaping is left to the libraries. Everything they allocate is owned by
 * a pool cleanup, so an early return cannot leak.
 */

#include <string.h>

#include <apr_lib.h>
#include <apr_strings.h>
#include <apr_tables.h>

#include <libxml/xmlwriter.h>
#include <libxml/xmlstring.h>
#include <jansson.h>

#include "stowrs_multipart.h"
#include "stowrs_outcome.h"
#include "stowrs_response.h"

#define NATIVE_DICOM_NS "http://dicom.nema.org/PS3.19/models/NativeDICOM"

#define CT_XML  "application/dicom+xml"
#define CT_JSON "application/dicom+json"

/* The attributes of the module, as tag, VR and keyword. */
#define TAG_REF_SOP_CLASS     "00081150"
#define TAG_REF_SOP_INSTANCE  "00081155"
#define TAG_RETRIEVE_URL      "00081190"
#define TAG_FAILED_SOP_SEQ    "00081198"
#define TAG_FAILURE_REASON    "00081197"
#define TAG_REF_SOP_SEQ       "00081199"

/* --- Accept negotiation ------------------------------------------------- */

/*
 * How closely an Accept element names a format; RFC 9110 §12.5.1 lets the
 * most specific matching range decide that format's q.
 */
enum {
    MATCH_NONE = 0,
    MATCH_ANY,          /* (star)/(star) */
    MATCH_MAIN,         /* application/(star), text/(star) */
    MATCH_ALIAS,        /* application/xml, text/xml, application/json, ... */
    MATCH_EXACT         /* application/dicom+xml, application/dicom+json */
};

typedef struct {
    int level;          /* best MATCH_* seen */
    int q;              /* q in thousandths at that level (max of equals) */
    int first_explicit; /* index of the first MATCH_ALIAS/EXACT element, or -1 */
} fmt_pref_t;

/* RFC 9110 qvalue: "0" ["." 0-3 digits] / "1" ["." 0-3 zeros]. */
static int
parse_qvalue(const char *s, int *q)
{
    int val;
    int scale = 100;

    if (s == NULL || (s[0] != '0' && s[0] != '1')) {
        return 0;
    }
    val = (s[0] - '0') * 1000;
    s++;
    if (*s == '.') {
        int n;

        for (s++, n = 0; *s && n < 3; s++, n++) {
            if (!apr_isdigit(*s)) {
                return 0;
            }
            val += (*s - '0') * scale;
            scale /= 10;
        }
    }
    if (*s != '\0' || val > 1000) {
        return 0;
    }
    *q = val;
    return 1;
}

static void
classify(const stowrs_media_type_t *mt, int *xml, int *json)
{
    const char *t = mt->type;

    *xml = *json = MATCH_NONE;
    if (strcmp(t, "*/*") == 0) {
        *xml = *json = MATCH_ANY;
    }
    else if (strcmp(t, "application/*") == 0) {
        *xml = *json = MATCH_MAIN;
    }
    else if (strcmp(t, "text/*") == 0) {
        *xml = MATCH_MAIN;
    }
    else if (strcmp(t, CT_XML) == 0) {
        *xml = MATCH_EXACT;
    }
    else if (strcmp(t, "application/xml") == 0 || strcmp(t, "text/xml") == 0) {
        *xml = MATCH_ALIAS;
    }
    else if (strcmp(t, CT_JSON) == 0) {
        *json = MATCH_EXACT;
    }
    else if (strcmp(t, "application/json") == 0) {
        *json = MATCH_ALIAS;
    }
    else if (strcmp(t, "multipart/related") == 0) {
        /* Only a multipart wrapper around one of our types says anything. */
        const char *type = apr_table_get(mt->params, "type");

        if (type && strcasecmp(type, CT_XML) == 0) {
            *xml = MATCH_ALIAS;
        }
        else if (type && strcasecmp(type, CT_JSON) == 0) {
            *json = MATCH_ALIAS;
        }
    }
}

static void
note_match(fmt_pref_t *f, int level, int q, int index)
{
    if (level == MATCH_NONE) {
        return;
    }
    if (level > f->level) {
        f->level = level;
        f->q = q;
    }
    else if (level == f->level && q > f->q) {
        f->q = q;
    }
    if (level >= MATCH_ALIAS && q > 0 && f->first_explicit < 0) {
        f->first_explicit = index;
    }
}

/* Handle one comma-separated element of the Accept header. */
static void
accept_element(apr_pool_t *pool, const char *elem, int index,
               fmt_pref_t *xml, fmt_pref_t *json)
{
    stowrs_media_type_t mt;
    const char *qs;
    int q = 1000;
    int lx, lj;

    if (stowrs_mp_parse_media_type(pool, elem, &mt) != APR_SUCCESS
        || mt.type == NULL) {
        return;
    }
    qs = mt.params ? apr_table_get(mt.params, "q") : NULL;
    if (qs && !parse_qvalue(qs, &q)) {
        return;
    }
    classify(&mt, &lx, &lj);
    note_match(xml, lx, q, index);
    note_match(json, lj, q, index);
}

apr_status_t
stowrs_resp_negotiate(apr_pool_t *pool, const char *accept,
                      stowrs_resp_format_e *fmt)
{
    fmt_pref_t xml = { MATCH_NONE, 0, -1 };
    fmt_pref_t json = { MATCH_NONE, 0, -1 };
    const char *p;
    const char *start;
    int in_quote = 0;
    int index = 0;
    int any = 0;

    *fmt = STOWRS_RESP_XML;
    if (accept == NULL) {
        return APR_SUCCESS;
    }

    /* Split on commas outside quoted strings; empty elements are legal. */
    for (p = start = accept; ; p++) {
        if (in_quote && *p == '\\' && p[1] != '\0') {
            p++;
            continue;
        }
        if (*p == '"') {
            in_quote = !in_quote;
            continue;
        }
        if (*p == '\0' || (*p == ',' && !in_quote)) {
            const char *b = start;
            const char *e = p;

            while (b < e && (*b == ' ' || *b == '\t')) {
                b++;
            }
            while (e > b && (e[-1] == ' ' || e[-1] == '\t')) {
                e--;
            }
            if (e > b) {
                accept_element(pool, apr_pstrmemdup(pool, b, (apr_size_t)(e - b)),
                               index++, &xml, &json);
                any = 1;
            }
            if (*p == '\0') {
                break;
            }
            start = p + 1;
        }
    }

    /* A header of nothing but blanks and commas says nothing: the default. */
    if (!any) {
        return APR_SUCCESS;
    }
    if (xml.q <= 0 && json.q <= 0) {
        return APR_ENOTIMPL;
    }
    if (json.q > xml.q) {
        *fmt = STOWRS_RESP_JSON;
    }
    else if (json.q == xml.q && json.first_explicit >= 0
             && (xml.first_explicit < 0
                 || json.first_explicit < xml.first_explicit)) {
        /* On a tie the type the client named first; XML if it named none. */
        *fmt = STOWRS_RESP_JSON;
    }
    else {
        *fmt = STOWRS_RESP_XML;
    }
    return APR_SUCCESS;
}

const char *
stowrs_resp_content_type(stowrs_resp_format_e fmt)
{
    return fmt == STOWRS_RESP_JSON ? CT_JSON : CT_XML;
}

/* --- shared helpers ------------------------------------------------------ */

/*
 * Values come partly from the files received (a failed instance reports
 * whatever its meta header said), and neither XML 1.0 nor JSON (jansson
 * wants valid UTF-8) takes arbitrary bytes. UIDs and URLs are printable
 * ASCII, so anything else is replaced rather than escaped.
 */
static const char *
clean_value(apr_pool_t *pool, const char *s)
{
    const unsigned char *p;
    char *copy;
    char *c;

    if (s == NULL) {
        return NULL;
    }
    for (p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p > 0x7e) {
            break;
        }
    }
    if (*p == '\0') {
        return s;
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
is_stored(const stowrs_outcome_t *o)
{
    return o->failure_reason == 0;
}

/* The study URL when exactly one study was stored, else NULL. */
static const char *
study_url(apr_pool_t *pool, const apr_array_header_t *outcomes,
          const char *base)
{
    const char *study = NULL;
    int i;

    for (i = 0; i < outcomes->nelts; i++) {
        const stowrs_outcome_t *o = &APR_ARRAY_IDX(outcomes, i, stowrs_outcome_t);

        if (!is_stored(o) || o->study_instance_uid == NULL
            || o->study_instance_uid[0] == '\0') {
            continue;
        }
        if (study == NULL) {
            study = o->study_instance_uid;
        }
        else if (strcmp(study, o->study_instance_uid) != 0) {
            return NULL;
        }
    }
    if (study == NULL) {
        return NULL;
    }
    return clean_value(pool, apr_pstrcat(pool, base, "/studies/", study, NULL));
}

static const char *
instance_url(apr_pool_t *pool, const stowrs_outcome_t *o, const char *base)
{
    if (o->study_instance_uid == NULL || o->series_instance_uid == NULL
        || o->sop_instance_uid == NULL) {
        return NULL;
    }
    return clean_value(pool, apr_pstrcat(pool, base, "/studies/",
                                         o->study_instance_uid, "/series/",
                                         o->series_instance_uid, "/instances/",
                                         o->sop_instance_uid, NULL));
}

static int
count_outcomes(const apr_array_header_t *outcomes, int stored)
{
    int i;
    int n = 0;

    for (i = 0; i < outcomes->nelts; i++) {
        if (is_stored(&APR_ARRAY_IDX(outcomes, i, stowrs_outcome_t)) == stored) {
            n++;
        }
    }
    return n;
}

/* --- XML ----------------------------------------------------------------- */

static apr_status_t
cleanup_xml_buffer(void *data)
{
    xmlBufferFree((xmlBufferPtr)data);
    return APR_SUCCESS;
}

static apr_status_t
cleanup_xml_writer(void *data)
{
    xmlFreeTextWriter((xmlTextWriterPtr)data);
    return APR_SUCCESS;
}

#define X(s) ((const xmlChar *)(s))

/*
 * <DicomAttribute tag vr keyword> with one Value, or none when @c value is
 * NULL or empty (the attribute is then present but empty).
 */
static int
xml_attr(xmlTextWriterPtr w, const char *tag, const char *vr,
         const char *keyword, const char *value)
{
    if (xmlTextWriterStartElement(w, X("DicomAttribute")) < 0
        || xmlTextWriterWriteAttribute(w, X("tag"), X(tag)) < 0
        || xmlTextWriterWriteAttribute(w, X("vr"), X(vr)) < 0
        || xmlTextWriterWriteAttribute(w, X("keyword"), X(keyword)) < 0) {
        return -1;
    }
    if (value && *value) {
        if (xmlTextWriterStartElement(w, X("Value")) < 0
            || xmlTextWriterWriteAttribute(w, X("number"), X("1")) < 0
            || xmlTextWriterWriteString(w, X(value)) < 0
            || xmlTextWriterEndElement(w) < 0) {
            return -1;
        }
    }
    return xmlTextWriterEndElement(w) < 0 ? -1 : 0;
}

static int
xml_item(apr_pool_t *pool, xmlTextWriterPtr w, const stowrs_outcome_t *o,
         int number, const char *base)
{
    if (xmlTextWriterStartElement(w, X("Item")) < 0
        || xmlTextWriterWriteFormatAttribute(w, X("number"), "%d", number) < 0) {
        return -1;
    }
    if (xml_attr(w, TAG_REF_SOP_CLASS, "UI", "ReferencedSOPClassUID",
                 clean_value(pool, o->sop_class_uid)) < 0
        || xml_attr(w, TAG_REF_SOP_INSTANCE, "UI", "ReferencedSOPInstanceUID",
                    clean_value(pool, o->sop_instance_uid)) < 0) {
        return -1;
    }
    if (is_stored(o)) {
        if (xml_attr(w, TAG_RETRIEVE_URL, "UR", "RetrieveURL",
                     instance_url(pool, o, base)) < 0) {
            return -1;
        }
    }
    else {
        if (xml_attr(w, TAG_FAILURE_REASON, "US", "FailureReason",
                     apr_psprintf(pool, "%u", o->failure_reason)) < 0) {
            return -1;
        }
    }
    return xmlTextWriterEndElement(w) < 0 ? -1 : 0;
}

static int
xml_sequence(apr_pool_t *pool, xmlTextWriterPtr w,
             const apr_array_header_t *outcomes, int stored,
             const char *tag, const char *keyword, const char *base)
{
    int i;
    int number = 0;

    if (count_outcomes(outcomes, stored) == 0) {
        return 0;
    }
    if (xmlTextWriterStartElement(w, X("DicomAttribute")) < 0
        || xmlTextWriterWriteAttribute(w, X("tag"), X(tag)) < 0
        || xmlTextWriterWriteAttribute(w, X("vr"), X("SQ")) < 0
        || xmlTextWriterWriteAttribute(w, X("keyword"), X(keyword)) < 0) {
        return -1;
    }
    for (i = 0; i < outcomes->nelts; i++) {
        const stowrs_outcome_t *o = &APR_ARRAY_IDX(outcomes, i, stowrs_outcome_t);

        if (is_stored(o) != stored) {
            continue;
        }
        if (xml_item(pool, w, o, ++number, base) < 0) {
            return -1;
        }
    }
    return xmlTextWriterEndElement(w) < 0 ? -1 : 0;
}

static apr_status_t
build_xml(apr_pool_t *pool, const apr_array_header_t *outcomes,
          const char *base, const char **body, apr_size_t *len)
{
    xmlBufferPtr buf;
    xmlTextWriterPtr w;
    apr_status_t rv = APR_ENOMEM;

    buf = xmlBufferCreate();
    if (buf == NULL) {
        return APR_ENOMEM;
    }
    apr_pool_cleanup_register(pool, buf, cleanup_xml_buffer,
                              apr_pool_cleanup_null);
    w = xmlNewTextWriterMemory(buf, 0);
    if (w == NULL) {
        goto leave;
    }
    /* Registered after the buffer, so it runs first: it flushes into it. */
    apr_pool_cleanup_register(pool, w, cleanup_xml_writer,
                              apr_pool_cleanup_null);

    /* Items follow the attribute order of the module: ascending tags. */
    if (xmlTextWriterStartDocument(w, "1.0", "UTF-8", NULL) < 0
        || xmlTextWriterStartElement(w, X("NativeDicomModel")) < 0
        || xmlTextWriterWriteAttribute(w, X("xmlns"), X(NATIVE_DICOM_NS)) < 0
        || xml_attr(w, TAG_RETRIEVE_URL, "UR", "RetrieveURL",
                    study_url(pool, outcomes, base)) < 0
        || xml_sequence(pool, w, outcomes, 0, TAG_FAILED_SOP_SEQ,
                        "FailedSOPSequence", base) < 0
        || xml_sequence(pool, w, outcomes, 1, TAG_REF_SOP_SEQ,
                        "ReferencedSOPSequence", base) < 0
        || xmlTextWriterEndElement(w) < 0
        || xmlTextWriterEndDocument(w) < 0) {
        goto leave_writer;
    }
    /* Freeing the writer flushes what it still holds into the buffer. */
    apr_pool_cleanup_run(pool, w, cleanup_xml_writer);
    w = NULL;

    *len = (apr_size_t)xmlBufferLength(buf);
    *body = apr_pstrmemdup(pool, (const char *)xmlBufferContent(buf), *len);
    rv = APR_SUCCESS;

leave_writer:
    if (w) {
        apr_pool_cleanup_run(pool, w, cleanup_xml_writer);
    }
leave:
    apr_pool_cleanup_run(pool, buf, cleanup_xml_buffer);
    return rv;
}

/* --- JSON ---------------------------------------------------------------- */

static apr_status_t
cleanup_json(void *data)
{
    json_decref((json_t *)data);
    return APR_SUCCESS;
}

/*
 * Add "tag": {"vr": vr, "Value": [value]} to @c obj; no "Value" key when
 * @c value is NULL (PS3.18 F.2.5: an empty attribute has no Value).
 * Takes over the reference to @c value whatever the outcome.
 */
static int
json_attr(json_t *obj, const char *tag, const char *vr, json_t *value)
{
    json_t *attr = json_object();

    if (attr == NULL
        || json_object_set_new(attr, "vr", json_string(vr)) < 0) {
        json_decref(value);
        json_decref(attr);
        return -1;
    }
    if (value) {
        /*
         * The *_new calls release the value they are given on any failure,
         * a NULL container included.
         */
        json_t *arr = json_array();

        if (json_array_append_new(arr, value) < 0) {
            json_decref(arr);
            json_decref(attr);
            return -1;
        }
        if (json_object_set_new(attr, "Value", arr) < 0) {
            json_decref(attr);
            return -1;
        }
    }
    return json_object_set_new(obj, tag, attr);
}

/* A string value, or an empty attribute for NULL or "". */
static int
json_attr_str(json_t *obj, const char *tag, const char *vr, const char *s)
{
    json_t *v = NULL;

    if (s && *s) {
        v = json_string(s);
        if (v == NULL) {
            return -1;
        }
    }
    return json_attr(obj, tag, vr, v);
}

static json_t *
json_item(apr_pool_t *pool, const stowrs_outcome_t *o, const char *base)
{
    json_t *item = json_object();
    int bad;

    if (item == NULL) {
        return NULL;
    }
    bad = json_attr_str(item, TAG_REF_SOP_CLASS, "UI",
                        clean_value(pool, o->sop_class_uid)) < 0
          || json_attr_str(item, TAG_REF_SOP_INSTANCE, "UI",
                           clean_value(pool, o->sop_instance_uid)) < 0;
    if (!bad && is_stored(o)) {
        bad = json_attr_str(item, TAG_RETRIEVE_URL, "UR",
                            instance_url(pool, o, base)) < 0;
    }
    else if (!bad) {
        json_t *v = json_integer((json_int_t)o->failure_reason);

        bad = v == NULL || json_attr(item, TAG_FAILURE_REASON, "US", v) < 0;
    }
    if (bad) {
        json_decref(item);
        return NULL;
    }
    return item;
}

static int
json_sequence(apr_pool_t *pool, json_t *root,
              const apr_array_header_t *outcomes, int stored,
              const char *tag, const char *base)
{
    json_t *items;
    json_t *attr;
    int i;

    if (count_outcomes(outcomes, stored) == 0) {
        return 0;
    }
    items = json_array();
    if (items == NULL) {
        return -1;
    }
    for (i = 0; i < outcomes->nelts; i++) {
        const stowrs_outcome_t *o = &APR_ARRAY_IDX(outcomes, i, stowrs_outcome_t);

        if (is_stored(o) != stored) {
            continue;
        }
        if (json_array_append_new(items, json_item(pool, o, base)) < 0) {
            json_decref(items);
            return -1;
        }
    }
    attr = json_object();
    if (attr == NULL
        || json_object_set_new(attr, "vr", json_string("SQ")) < 0
        || json_object_set_new(attr, "Value", items) < 0) {
        json_decref(attr);
        return -1;
    }
    return json_object_set_new(root, tag, attr);
}

static apr_status_t
build_json(apr_pool_t *pool, const apr_array_header_t *outcomes,
           const char *base, const char **body, apr_size_t *len)
{
    json_t *root;
    char *text;
    apr_status_t rv = APR_ENOMEM;

    root = json_object();
    if (root == NULL) {
        return APR_ENOMEM;
    }
    apr_pool_cleanup_register(pool, root, cleanup_json, apr_pool_cleanup_null);

    if (json_attr_str(root, TAG_RETRIEVE_URL, "UR",
                      study_url(pool, outcomes, base)) < 0
        || json_sequence(pool, root, outcomes, 0, TAG_FAILED_SOP_SEQ, base) < 0
        || json_sequence(pool, root, outcomes, 1, TAG_REF_SOP_SEQ, base) < 0) {
        goto leave;
    }
    /* Sorted keys put the tags in ascending order whatever jansson's version. */
    text = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
    if (text == NULL) {
        goto leave;
    }
    *len = strlen(text);
    *body = apr_pstrmemdup(pool, text, *len);
    free(text);
    rv = APR_SUCCESS;

leave:
    apr_pool_cleanup_run(pool, root, cleanup_json);
    return rv;
}

apr_status_t
stowrs_resp_build(apr_pool_t *pool, stowrs_resp_format_e fmt,
                  const apr_array_header_t *outcomes,
                  const char *retrieve_base,
                  const char **body, apr_size_t *len)
{
    *body = NULL;
    *len = 0;
    if (outcomes == NULL) {
        outcomes = apr_array_make(pool, 1, sizeof(stowrs_outcome_t));
    }
    if (retrieve_base == NULL) {
        retrieve_base = "";
    }
    if (fmt == STOWRS_RESP_JSON) {
        return build_json(pool, outcomes, retrieve_base, body, len);
    }
    return build_xml(pool, outcomes, retrieve_base, body, len);
}
