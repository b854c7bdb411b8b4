/*
 * Unit tests of stowrs_meta.c: the Native DICOM Model (XML) and DICOM JSON
 * readers on complete documents and on malformed, hostile and huge input,
 * and the bulk data URI key.
 *
 * Every read of hostile input runs with stderr redirected to a temporary
 * file that must stay empty: libxml2 must not print into httpd's error log.
 */

#include <stdlib.h>
#include <unistd.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "stowrs_meta.h"
#include "unit.h"

#define NS "http://dicom.nema.org/PS3.19/models/NativeDICOM"

/* --- stderr must stay silent ------------------------------------------------ */

static int quiet_saved = -1;
static FILE *quiet_file;
static long stderr_bytes;       /* what the readers printed, over all tests */

static void
quiet_begin(void)
{
    fflush(stderr);
    quiet_file = tmpfile();
    quiet_saved = dup(2);
    if (quiet_file && quiet_saved >= 0) {
        dup2(fileno(quiet_file), 2);
    }
}

static void
quiet_end(void)
{
    fflush(stderr);
    if (quiet_saved >= 0) {
        dup2(quiet_saved, 2);
        close(quiet_saved);
        quiet_saved = -1;
    }
    if (quiet_file) {
        stderr_bytes += lseek(fileno(quiet_file), 0, SEEK_END);
        fclose(quiet_file);
        quiet_file = NULL;
    }
}

/* Read @c len bytes copied into an exact-size heap block, so that ASan
 * sees any read past the end. */
static stowrs_meta_rc_e
xml_read(apr_pool_t *pool, const char *doc, size_t len, stowrs_meta_ds_t **ds,
         const char **error)
{
    char *copy = malloc(len ? len : 1);
    stowrs_meta_rc_e rc;

    memcpy(copy, doc, len);
    quiet_begin();
    rc = stowrs_meta_read_xml(pool, copy, len, ds, error);
    quiet_end();
    free(copy);
    return rc;
}

static stowrs_meta_rc_e
xml_rc(apr_pool_t *pool, const char *doc)
{
    stowrs_meta_ds_t *ds = (stowrs_meta_ds_t *)1;
    const char *error = NULL;
    stowrs_meta_rc_e rc = xml_read(pool, doc, strlen(doc), &ds, &error);

    /* the out-parameters are set on every path */
    CHECK(rc == STOWRS_META_OK ? ds != NULL && error == NULL
                               : ds == NULL && error != NULL);
    return rc;
}

static stowrs_meta_rc_e
json_read(apr_pool_t *pool, const char *doc, size_t len, apr_array_header_t **objs,
          const char **error)
{
    char *copy = malloc(len ? len : 1);
    stowrs_meta_rc_e rc;

    memcpy(copy, doc, len);
    quiet_begin();
    rc = stowrs_meta_read_json(pool, copy, len, objs, error);
    quiet_end();
    free(copy);
    return rc;
}

/* The rc of object @c i of a JSON document that must parse. */
static stowrs_meta_rc_e
json_obj_rc(apr_pool_t *pool, const char *doc, int i)
{
    apr_array_header_t *objs = NULL;
    const char *error = NULL;
    const stowrs_meta_object_t *o;

    CHECK_INT(json_read(pool, doc, strlen(doc), &objs, &error), STOWRS_META_OK);
    if (!objs || i >= objs->nelts) {
        CHECK(objs && i < objs->nelts);
        return STOWRS_META_OK;
    }
    o = &APR_ARRAY_IDX(objs, i, stowrs_meta_object_t);
    CHECK(o->rc == STOWRS_META_OK ? o->ds != NULL && o->error == NULL
                                  : o->ds == NULL && o->error != NULL);
    return o->rc;
}

static const stowrs_meta_elem_t *
get(const stowrs_meta_ds_t *ds, unsigned int tag)
{
    const stowrs_meta_elem_t *e = stowrs_meta_find(ds, tag);

    if (!e) {
        fprintf(stderr, "tag %08X not found\n", tag);
        unit_failed++;
    }
    return e;
}

static const char *
value(const stowrs_meta_elem_t *e, int i)
{
    return e && i < e->nvalues ? e->values[i] : "(no such value)";
}

static int
sorted(const stowrs_meta_ds_t *ds)
{
    int i;

    for (i = 1; i < ds->nelems; i++) {
        if (ds->elems[i - 1].tag >= ds->elems[i].tag) {
            return 0;
        }
    }
    return 1;
}

/* --- a complete XML document ------------------------------------------------ */

static const char full_xml[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<NativeDicomModel xml:space=\"preserve\" xmlns=\"" NS "\">\n"
    "  <!-- attributes deliberately out of order -->\n"
    "  <DicomAttribute tag=\"00100010\" vr=\"PN\" keyword=\"PatientName\">\n"
    "    <PersonName number=\"1\">\n"
    "      <Alphabetic><FamilyName>Doe</FamilyName><GivenName>John</GivenName>"
    "<MiddleName/><NameSuffix></NameSuffix></Alphabetic>\n"
    "      <Ideographic><FamilyName>\xe5\xb1\xb1\xe7\x94\xb0</FamilyName>"
    "<GivenName>\xe5\xa4\xaa\xe9\x83\x8e</GivenName></Ideographic>\n"
    "      <Phonetic><FamilyName>yamada</FamilyName><GivenName>taro</GivenName></Phonetic>\n"
    "    </PersonName>\n"
    "    <PersonName number=\"2\"><Alphabetic><FamilyName>Roe</FamilyName>"
    "<NamePrefix>Dr</NamePrefix></Alphabetic><Ideographic/></PersonName>\n"
    "    <PersonName number=\"3\"><Phonetic><GivenName>x</GivenName></Phonetic></PersonName>\n"
    "    <PersonName number=\"4\"/>\n"
    "  </DicomAttribute>\n"
    "  <DicomAttribute tag=\"00080005\" vr=\"CS\"><Value number=\"1\">ISO_IR 192</Value></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00080016\" vr=\"UI\"><Value number=\"1\">1.2.840.10008.5.1.4.1.1.7</Value></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00080018\" vr=\"UI\"><Value number=\"1\">1.2.3.4</Value></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00100020\" vr=\"LO\"><Value number=\"1\">a&amp;b&#x41;<![CDATA[<id>]]></Value></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00100030\" vr=\"DA\"><Value number=\"1\"/></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00101010\" vr=\"AS\"/>\n"
    "  <DicomAttribute tag=\"00280030\" vr=\"DS\"><Value number=\"1\">0.5</Value><Value number=\"2\">0.25</Value></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00189219\" vr=\"IS\"><Value number=\"1\">1</Value><Value number=\"2\"></Value><Value number=\"3\">-3</Value></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00280010\" vr=\"US\"><Value number=\"1\">512</Value></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00189220\" vr=\"SS\"><Value number=\"1\">-5</Value></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00081161\" vr=\"UL\"><Value number=\"1\">4294967295</Value></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00186020\" vr=\"SL\"><Value number=\"1\">-2147483648</Value></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00189087\" vr=\"FL\"><Value number=\"1\">1.5</Value></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00189089\" vr=\"FD\"><Value number=\"1\">3.141592653589793</Value></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00720082\" vr=\"SV\"><Value number=\"1\">-9223372036854775808</Value></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00720083\" vr=\"UV\"><Value number=\"1\">18446744073709551615</Value></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00209165\" vr=\"AT\"><Value number=\"1\">0020000d</Value><Value number=\"2\">00100010</Value></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00081115\" vr=\"SQ\">\n"
    "    <Item number=\"1\">\n"
    "      <DicomAttribute tag=\"0020000E\" vr=\"UI\"><Value number=\"1\">1.2.3</Value></DicomAttribute>\n"
    "      <DicomAttribute tag=\"00081199\" vr=\"SQ\">\n"
    "        <Item number=\"1\"><DicomAttribute tag=\"00081150\" vr=\"UI\"><Value number=\"1\">1.2</Value></DicomAttribute></Item>\n"
    "        <Item number=\"2\"/>\n"
    "      </DicomAttribute>\n"
    "    </Item>\n"
    "    <Item number=\"2\"></Item>\n"
    "  </DicomAttribute>\n"
    "  <DicomAttribute tag=\"00081120\" vr=\"SQ\"/>\n"
    "  <DicomAttribute tag=\"7FE00010\" vr=\"OW\"><BulkData uri=\"bulk/1?x=1&amp;y=2\"/></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00420011\" vr=\"OB\"><InlineBinary>AAEC\n /w==</InlineBinary></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00420012\" vr=\"OB\"><InlineBinary/></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00090010\" vr=\"LO\"><Value number=\"1\">ACME 1.0</Value></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00091001\" vr=\"LO\" privateCreator=\"ACME 1.0\"><Value number=\"1\">x</Value></DicomAttribute>\n"
    "  <DicomAttribute tag=\"00081030\" vr=\"LO\"><Value number=\"1\"> two  spaces </Value></DicomAttribute>\n"
    "</NativeDicomModel>";

static void
test_xml_full(apr_pool_t *pool)
{
    stowrs_meta_ds_t *ds = NULL, *item, *inner;
    const stowrs_meta_elem_t *e;
    const char *error = NULL;

    CHECK_INT(xml_read(pool, full_xml, sizeof(full_xml) - 1, &ds, &error), STOWRS_META_OK);
    CHECK_STR(error, NULL);
    if (!ds) {
        return;
    }
    CHECK_INT(ds->nelems, 26);
    CHECK(sorted(ds));
    CHECK_INT(ds->elems[0].tag, 0x00080005);
    CHECK_INT(ds->elems[ds->nelems - 1].tag, 0x7FE00010);

    e = get(ds, 0x00100010);
    CHECK_STR(e ? e->vr : NULL, "PN");
    CHECK_INT(e ? e->nvalues : -1, 4);
    CHECK_STR(value(e, 0), "Doe^John=\xe5\xb1\xb1\xe7\x94\xb0^\xe5\xa4\xaa\xe9\x83\x8e=yamada^taro");
    CHECK_STR(value(e, 1), "Roe^^^Dr");
    CHECK_STR(value(e, 2), "==^x");
    CHECK_STR(value(e, 3), NULL);
    CHECK_STR(e ? e->private_creator : "", NULL);

    CHECK_STR(value(get(ds, 0x00080005), 0), "ISO_IR 192");
    CHECK_STR(value(get(ds, 0x00080016), 0), "1.2.840.10008.5.1.4.1.1.7");
    CHECK_STR(value(get(ds, 0x00100020), 0), "a&bA<id>");
    e = get(ds, 0x00100030);
    CHECK_INT(e ? e->nvalues : -1, 1);
    CHECK_STR(value(e, 0), NULL);
    e = get(ds, 0x00101010);
    CHECK_INT(e ? e->nvalues : -1, 0);
    CHECK_STR(e ? e->vr : NULL, "AS");
    CHECK(e && !e->has_inline && !e->bulk_uri && e->nitems == 0);

    e = get(ds, 0x00280030);
    CHECK_INT(e ? e->nvalues : -1, 2);
    CHECK_STR(value(e, 0), "0.5");
    CHECK_STR(value(e, 1), "0.25");
    e = get(ds, 0x00189219);
    CHECK_INT(e ? e->nvalues : -1, 3);
    CHECK_STR(value(e, 0), "1");
    CHECK_STR(value(e, 1), NULL);
    CHECK_STR(value(e, 2), "-3");
    CHECK_STR(value(get(ds, 0x00280010), 0), "512");
    CHECK_STR(value(get(ds, 0x00189220), 0), "-5");
    CHECK_STR(value(get(ds, 0x00081161), 0), "4294967295");
    CHECK_STR(value(get(ds, 0x00186020), 0), "-2147483648");
    CHECK_STR(value(get(ds, 0x00189087), 0), "1.5");
    CHECK_STR(value(get(ds, 0x00189089), 0), "3.141592653589793");
    CHECK_STR(value(get(ds, 0x00720082), 0), "-9223372036854775808");
    CHECK_STR(value(get(ds, 0x00720083), 0), "18446744073709551615");
    e = get(ds, 0x00209165);
    CHECK_STR(e ? e->vr : NULL, "AT");
    CHECK_STR(value(e, 0), "0020000D");
    CHECK_STR(value(e, 1), "00100010");
    CHECK_STR(value(get(ds, 0x00081030), 0), " two  spaces ");

    e = get(ds, 0x00081115);
    CHECK_STR(e ? e->vr : NULL, "SQ");
    CHECK_INT(e ? e->nitems : -1, 2);
    CHECK_INT(e ? e->nvalues : -1, 0);
    if (e && e->nitems == 2) {
        item = e->items[0];
        CHECK_INT(item->nelems, 2);
        CHECK(sorted(item));
        CHECK_STR(value(get(item, 0x0020000E), 0), "1.2.3");
        e = get(item, 0x00081199);
        CHECK_INT(e ? e->nitems : -1, 2);
        if (e && e->nitems == 2) {
            inner = e->items[0];
            CHECK_INT(inner->nelems, 1);
            CHECK_STR(value(get(inner, 0x00081150), 0), "1.2");
            CHECK_INT(e->items[1]->nelems, 0);
        }
        CHECK_INT(get(ds, 0x00081115)->items[1]->nelems, 0);
    }
    e = get(ds, 0x00081120);
    CHECK_INT(e ? e->nitems : -1, 0);

    e = get(ds, 0x7FE00010);
    CHECK_STR(e ? e->vr : NULL, "OW");
    CHECK_STR(e ? e->bulk_uri : NULL, "bulk/1?x=1&y=2");
    CHECK(e && !e->has_inline && e->nvalues == 0);

    e = get(ds, 0x00420011);
    CHECK(e && e->has_inline);
    CHECK_INT(e ? e->inline_len : 0, 4);
    CHECK(e && e->inline_len == 4 && memcmp(e->inline_data, "\x00\x01\x02\xff", 4) == 0);
    e = get(ds, 0x00420012);
    CHECK(e && e->has_inline);
    CHECK_INT(e ? e->inline_len : 1, 0);

    e = get(ds, 0x00091001);
    CHECK_STR(e ? e->private_creator : NULL, "ACME 1.0");
    CHECK_STR(value(e, 0), "x");
    CHECK_STR(value(get(ds, 0x00090010), 0), "ACME 1.0");
}

/* Binary search: every present tag, and absent ones before, between, after. */
static void
test_find(apr_pool_t *pool)
{
    stowrs_meta_ds_t *ds = NULL, empty = { 0, NULL };
    const char *error;
    int i, found = 0;

    if (xml_read(pool, full_xml, sizeof(full_xml) - 1, &ds, &error) != STOWRS_META_OK) {
        CHECK(0);
        return;
    }
    for (i = 0; i < ds->nelems; i++) {
        found += stowrs_meta_find(ds, ds->elems[i].tag) == &ds->elems[i];
    }
    CHECK_INT(found, ds->nelems);
    CHECK(stowrs_meta_find(ds, 0x00000000) == NULL);
    CHECK(stowrs_meta_find(ds, 0x00080006) == NULL);
    CHECK(stowrs_meta_find(ds, 0x00100011) == NULL);
    CHECK(stowrs_meta_find(ds, 0xFFFFFFFF) == NULL);
    CHECK(stowrs_meta_find(&empty, 0x00100010) == NULL);
    CHECK(stowrs_meta_find(NULL, 0x00100010) == NULL);
}

static void
test_xml_file(apr_pool_t *pool)
{
    static const char doctype[] =
        "<?xml version=\"1.0\"?>\n<!DOCTYPE NativeDicomModel [<!ENTITY e \"x\">]>\n"
        "<NativeDicomModel a=\"&e;\"/>";
    char path[] = "/tmp/test_meta_XXXXXX";
    int fd = mkstemp(path);
    stowrs_meta_ds_t *ds = NULL;
    const char *error = NULL;

    CHECK(fd >= 0);
    if (fd < 0) {
        return;
    }
    CHECK_INT(write(fd, full_xml, sizeof(full_xml) - 1), sizeof(full_xml) - 1);
    close(fd);
    quiet_begin();
    CHECK_INT(stowrs_meta_read_xml_file(pool, path, &ds, &error), STOWRS_META_OK);
    quiet_end();
    CHECK_INT(ds ? ds->nelems : 0, 26);
    CHECK_STR(value(get(ds, 0x00100010), 0), "Doe^John=\xe5\xb1\xb1\xe7\x94\xb0^\xe5\xa4\xaa\xe9\x83\x8e=yamada^taro");
    unlink(path);

    quiet_begin();
    CHECK(stowrs_meta_read_xml_file(pool, "/nonexistent/x.xml", &ds, &error) != STOWRS_META_OK);
    quiet_end();
    CHECK(ds == NULL && error != NULL);

    /* the file path goes through the same prolog check */
    strcpy(path, "/tmp/test_meta_XXXXXX");
    if ((fd = mkstemp(path)) < 0) {
        CHECK(fd >= 0);
        return;
    }
    CHECK_INT(write(fd, doctype, sizeof(doctype) - 1), sizeof(doctype) - 1);
    close(fd);
    quiet_begin();
    CHECK_INT(stowrs_meta_read_xml_file(pool, path, &ds, &error), STOWRS_META_FORBIDDEN);
    quiet_end();
    unlink(path);
}

/* Every strict prefix of a valid document fails, and does so cleanly. */
static void
test_xml_truncated(apr_pool_t *pool)
{
    size_t len = sizeof(full_xml) - 1, i;
    int bad = 0;
    apr_pool_t *sub;

    apr_pool_create(&sub, pool);
    for (i = 0; i < len; i++) {
        stowrs_meta_ds_t *ds;
        const char *error;
        stowrs_meta_rc_e rc = xml_read(sub, full_xml, i, &ds, &error);

        if ((rc != STOWRS_META_MALFORMED && rc != STOWRS_META_NOT_MODEL) || ds || !error) {
            fprintf(stderr, "truncated XML at %zu: rc %d\n", i, (int)rc);
            bad++;
        }
        apr_pool_clear(sub);
    }
    CHECK_INT(bad, 0);
    apr_pool_destroy(sub);
}

#define ROOT "<NativeDicomModel xmlns=\"" NS "\">"
#define END "</NativeDicomModel>"
#define LO(tag, v) "<DicomAttribute tag=\"" tag "\" vr=\"LO\"><Value number=\"1\">" v "</Value></DicomAttribute>"

static void
test_xml_not_model(apr_pool_t *pool)
{
    CHECK_INT(xml_rc(pool, ROOT LO("00100020", "x") END), STOWRS_META_OK);
    CHECK_INT(xml_rc(pool, "<NativeDicomModel>" LO("00100020", "x") END), STOWRS_META_OK);
    CHECK_INT(xml_rc(pool, ROOT END), STOWRS_META_OK);
    CHECK_INT(xml_rc(pool, "<NativeDicomModel/>"), STOWRS_META_OK);
    CHECK_INT(xml_rc(pool, "<d:NativeDicomModel xmlns:d=\"" NS "\"><d:DicomAttribute tag=\"00100020\" vr=\"LO\"/></d:NativeDicomModel>"),
              STOWRS_META_OK);

    /* namespace and root */
    CHECK_INT(xml_rc(pool, "<NativeDicomModel xmlns=\"http://example.com/other\">" LO("00100020", "x") END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, "<NativeDicom xmlns=\"" NS "\"/>"), STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, "<html/>"), STOWRS_META_NOT_MODEL);
    /* a child outside the root's namespace */
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute xmlns=\"\" tag=\"00100020\" vr=\"LO\"/>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, "<NativeDicomModel>" "<DicomAttribute xmlns=\"" NS "\" tag=\"00100020\" vr=\"LO\"/>" END),
              STOWRS_META_NOT_MODEL);

    /* unknown elements, stray text */
    CHECK_INT(xml_rc(pool, ROOT "<Foo/>" END), STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100020\" vr=\"LO\"><Values number=\"1\">x</Values></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100020\" vr=\"LO\"><Value number=\"1\">x<b/></Value></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "junk" LO("00100020", "x") END), STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100020\" vr=\"LO\">junk</DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);

    /* tags and VRs */
    CHECK_INT(xml_rc(pool, ROOT LO("0010001", "x") END), STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT LO("0010001G", "x") END), STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT LO("001000200", "x") END), STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT LO("", "x") END), STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute vr=\"LO\"/>" END), STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100020\" vr=\"XX\"/>" END), STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100020\" vr=\"lo\"/>" END), STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100020\" vr=\"LOX\"/>" END), STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100020\"/>" END), STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT LO("0010001a", "x") LO("00100020", "y") END), STOWRS_META_OK);
    CHECK_INT(xml_rc(pool, ROOT LO("00100020", "x") LO("00100020", "y") END), STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT LO("0010001a", "x") LO("0010001A", "y") END), STOWRS_META_NOT_MODEL);

    /* value numbering */
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100020\" vr=\"LO\"><Value number=\"2\">a</Value><Value number=\"1\">b</Value></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100020\" vr=\"LO\"><Value number=\"1\">a</Value><Value number=\"3\">b</Value></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100020\" vr=\"LO\"><Value number=\"1\">a</Value><Value number=\"1\">b</Value></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100020\" vr=\"LO\"><Value>a</Value></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100020\" vr=\"LO\"><Value number=\"-1\">a</Value></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100020\" vr=\"LO\"><Value number=\"99999999999999999999\">a</Value></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00081115\" vr=\"SQ\"><Item number=\"2\"/></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);

    /* content that does not fit the VR, mixed content */
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100020\" vr=\"LO\"><Item number=\"1\"/></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00081115\" vr=\"SQ\"><Value number=\"1\">x</Value></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100010\" vr=\"PN\"><Value number=\"1\">x</Value></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100020\" vr=\"LO\"><PersonName number=\"1\"/></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"7FE00010\" vr=\"OB\"><Value number=\"1\">x</Value></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"7FE00010\" vr=\"OB\"><BulkData uri=\"a\"/><BulkData uri=\"b\"/></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"7FE00010\" vr=\"OB\"><BulkData uri=\"a\"/><InlineBinary>AA==</InlineBinary></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"7FE00010\" vr=\"OB\"><BulkData/></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"7FE00010\" vr=\"OB\"><BulkData uri=\"a\">x</BulkData></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00209165\" vr=\"AT\"><Value number=\"1\">0020000</Value></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);

    /* person names */
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100010\" vr=\"PN\"><PersonName number=\"1\"><Alphabetic><FamilyName>a^b</FamilyName></Alphabetic></PersonName></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100010\" vr=\"PN\"><PersonName number=\"1\"><Alphabetic><FamilyName>a</FamilyName><FamilyName>b</FamilyName></Alphabetic></PersonName></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100010\" vr=\"PN\"><PersonName number=\"1\"><Alphabetic/><Alphabetic/></PersonName></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100010\" vr=\"PN\"><PersonName number=\"1\"><Latin/></PersonName></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100010\" vr=\"PN\"><PersonName number=\"1\"><Alphabetic><Name>x</Name></Alphabetic></PersonName></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);

    /* XInclude is never processed: xi:include is just an unknown element */
    CHECK_INT(xml_rc(pool, ROOT "<xi:include xmlns:xi=\"http://www.w3.org/2001/XInclude\" href=\"file:///etc/passwd\" parse=\"text\"/>" END),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100020\" vr=\"LO\"><Value number=\"1\"><xi:include xmlns:xi=\"http://www.w3.org/2001/XInclude\" href=\"file:///etc/passwd\" parse=\"text\"/></Value></DicomAttribute>" END),
              STOWRS_META_NOT_MODEL);
}

static void
test_xml_malformed(apr_pool_t *pool)
{
    CHECK_INT(xml_rc(pool, ""), STOWRS_META_MALFORMED);
    CHECK_INT(xml_rc(pool, " "), STOWRS_META_MALFORMED);
    CHECK_INT(xml_rc(pool, "<"), STOWRS_META_MALFORMED);
    CHECK_INT(xml_rc(pool, "not xml at all"), STOWRS_META_MALFORMED);
    CHECK_INT(xml_rc(pool, ROOT LO("00100020", "x") "</NativeDicomModel>junk"), STOWRS_META_MALFORMED);
    CHECK_INT(xml_rc(pool, ROOT LO("00100020", "x") END "<NativeDicomModel/>"), STOWRS_META_MALFORMED);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100020\" vr=\"LO\"></DicomAttributes>" END),
              STOWRS_META_MALFORMED);
    CHECK_INT(xml_rc(pool, ROOT "<DicomAttribute tag=\"00100020\" tag=\"00100020\" vr=\"LO\"/>" END),
              STOWRS_META_MALFORMED);
    /* an undeclared prefix is a namespace error, which libxml2 reports but
     * does not treat as fatal */
    CHECK_INT(xml_rc(pool, ROOT "<x:DicomAttribute tag=\"00100020\" vr=\"LO\"/>" END),
              STOWRS_META_MALFORMED);
    /* an undeclared entity, no DTD */
    CHECK_INT(xml_rc(pool, ROOT LO("00100020", "&foo;") END), STOWRS_META_MALFORMED);
    /* not UTF-8 */
    CHECK_INT(xml_rc(pool, ROOT LO("00100020", "\xff\xfe") END), STOWRS_META_MALFORMED);
    /* an encoding libxml2 may not have: EBCDIC and UTF-32 signatures */
    CHECK(xml_rc(pool, "\x4c\x6f\xa7\x94\x93\x40") != STOWRS_META_OK);
    /* the declared encoding is ignored: application/dicom+xml is UTF-8 */
    CHECK_INT(xml_rc(pool, "<?xml version=\"1.0\" encoding=\"x-no-such-charset\"?><NativeDicomModel/>"),
              STOWRS_META_OK);
    {
        /* a NUL byte inside the document */
        static const char doc[] = "<NativeDicomModel>\0</NativeDicomModel>";
        stowrs_meta_ds_t *ds;
        const char *error;

        CHECK_INT(xml_read(pool, doc, sizeof(doc) - 1, &ds, &error), STOWRS_META_MALFORMED);
    }
}

/* Sequences nested @c n deep, innermost holding one LO. */
static const char *
xml_nested(apr_pool_t *pool, int n)
{
    const char *open = "<DicomAttribute tag=\"00081115\" vr=\"SQ\"><Item number=\"1\">";
    const char *close = "</Item></DicomAttribute>";
    char *doc, *p;
    size_t size = strlen(ROOT END LO("00100020", "deep")) + (size_t)n * (strlen(open) + strlen(close)) + 1;
    int i;

    p = doc = apr_palloc(pool, size);
    p += sprintf(p, "%s", ROOT);
    for (i = 0; i < n; i++) {
        p += sprintf(p, "%s", open);
    }
    p += sprintf(p, "%s", LO("00100020", "deep"));
    for (i = 0; i < n; i++) {
        p += sprintf(p, "%s", close);
    }
    sprintf(p, "%s", END);
    return doc;
}

static void
test_xml_depth(apr_pool_t *pool)
{
    stowrs_meta_ds_t *ds = NULL;
    const char *error, *doc = xml_nested(pool, STOWRS_META_MAX_DEPTH);
    int depth = 0;

    CHECK_INT(xml_read(pool, doc, strlen(doc), &ds, &error), STOWRS_META_OK);
    while (ds && ds->nelems == 1 && ds->elems[0].nitems == 1) {
        ds = ds->elems[0].items[0];
        depth++;
    }
    CHECK_INT(depth, STOWRS_META_MAX_DEPTH);
    CHECK_STR(ds ? value(stowrs_meta_find(ds, 0x00100020), 0) : NULL, "deep");

    CHECK_INT(xml_rc(pool, xml_nested(pool, STOWRS_META_MAX_DEPTH + 1)), STOWRS_META_TOO_DEEP);
    CHECK_INT(xml_rc(pool, xml_nested(pool, 5000)), STOWRS_META_TOO_DEEP);
}

/* Entities are refused before they could expand or be fetched. */
static void
test_xml_entities(apr_pool_t *pool)
{
    static const char laughs[] =
        "<?xml version=\"1.0\"?>\n"
        "<!DOCTYPE NativeDicomModel [\n"
        " <!ENTITY lol \"lol\">\n"
        " <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n"
        " <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">\n"
        " <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n"
        " <!ENTITY lol4 \"&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;\">\n"
        " <!ENTITY lol5 \"&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;\">\n"
        " <!ENTITY lol6 \"&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;\">\n"
        " <!ENTITY lol7 \"&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;\">\n"
        " <!ENTITY lol8 \"&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;\">\n"
        " <!ENTITY lol9 \"&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;\">\n"
        "]>\n"
        "<NativeDicomModel xmlns=\"" NS "\"><DicomAttribute tag=\"00100020\" vr=\"LO\">"
        "<Value number=\"1\">&lol9;&lol9;&lol9;&lol9;&lol9;&lol9;&lol9;&lol9;</Value>"
        "</DicomAttribute></NativeDicomModel>";
    static const char xxe[] =
        "<?xml version=\"1.0\"?>\n"
        "<!DOCTYPE NativeDicomModel [ <!ENTITY xxe SYSTEM \"file:///etc/passwd\"> ]>\n"
        "<NativeDicomModel xmlns=\"" NS "\"><DicomAttribute tag=\"00100020\" vr=\"LO\">"
        "<Value number=\"1\">&xxe;</Value></DicomAttribute></NativeDicomModel>";
    static const char xxe_attr[] =
        "<!DOCTYPE NativeDicomModel [ <!ENTITY % p SYSTEM \"file:///etc/passwd\"> %p; ]>\n"
        "<NativeDicomModel/>";
    static const char ext_dtd[] =
        "<!DOCTYPE NativeDicomModel SYSTEM \"file:///etc/passwd\">\n"
        "<NativeDicomModel xmlns=\"" NS "\"/>";
    static const char net_dtd[] =
        "<!DOCTYPE NativeDicomModel PUBLIC \"-//x//y\" \"http://127.0.0.1:9/x.dtd\">\n"
        "<NativeDicomModel/>";
    static const char plain_doctype[] = "<!DOCTYPE NativeDicomModel><NativeDicomModel/>";
    stowrs_meta_ds_t *ds;
    const char *error = NULL, *attr;
    apr_time_t t0 = apr_time_now();

    CHECK_INT(xml_read(pool, laughs, sizeof(laughs) - 1, &ds, &error), STOWRS_META_FORBIDDEN);
    CHECK(apr_time_now() - t0 < apr_time_from_sec(2));
    CHECK(ds == NULL);

    CHECK_INT(xml_read(pool, xxe, sizeof(xxe) - 1, &ds, &error), STOWRS_META_FORBIDDEN);
    CHECK(ds == NULL && error && !strstr(error, "root:"));
    CHECK_INT(xml_rc(pool, xxe_attr), STOWRS_META_FORBIDDEN);
    CHECK_INT(xml_read(pool, ext_dtd, sizeof(ext_dtd) - 1, &ds, &error), STOWRS_META_FORBIDDEN);
    CHECK(ds == NULL && error && !strstr(error, "root:"));
    CHECK_INT(xml_rc(pool, net_dtd), STOWRS_META_FORBIDDEN);
    CHECK_INT(xml_rc(pool, plain_doctype), STOWRS_META_FORBIDDEN);
    CHECK_INT(xml_rc(pool, "<?xml version=\"1.0\"?>\n<!-- c --><?pi x?>\n<!DOCTYPE NativeDicomModel><NativeDicomModel/>"),
              STOWRS_META_FORBIDDEN);
    /* what only looks like a DOCTYPE, inside a comment, is harmless */
    CHECK_INT(xml_rc(pool, "<?xml version=\"1.0\"?><!-- <!DOCTYPE x> --><!--->--><?p <!DOCTYPE ?><NativeDicomModel/>"),
              STOWRS_META_OK);

    /* libxml2 expands entities in attribute values for its own checks,
     * and reports the DOCTYPE node only after the root's start tag:
     * the DOCTYPE must be refused before libxml2 sees it */
    t0 = apr_time_now();
    attr = apr_pstrcat(pool, apr_pstrndup(pool, laughs, (apr_size_t)(strstr(laughs, "]>") - laughs)),
                       "]><NativeDicomModel a=\"&lol9;\" b=\"&lol8;\"/>", NULL);
    CHECK_INT(xml_rc(pool, attr), STOWRS_META_FORBIDDEN);
    CHECK(apr_time_now() - t0 < apr_time_from_sec(2));

    /* declared encodings that could spell a DOCTYPE in other bytes */
    CHECK(xml_rc(pool, "<?xml version=\"1.0\" encoding=\"UTF-7\"?><+ACE-DOCTYPE NativeDicomModel><NativeDicomModel/>")
          != STOWRS_META_OK);
    CHECK(xml_rc(pool, "<?xml version=\"1.0\" encoding=\"UTF-7\"?>+ADw-+ACE-DOCTYPE x+AD4-<NativeDicomModel/>")
          != STOWRS_META_OK);
    {
        /* ISO-2022-JP: a comment that ends for us but not for an iconv
         * reader, then a root-like "<A" and a DOCTYPE; must not expand */
        const char *jp = apr_pstrcat(pool, "<?xml version=\"1.0\" encoding=\"ISO-2022-JP\"?><!-- \x1b$B-->",
                                     "<A\x1b(B --><!DOCTYPE NativeDicomModel [",
                                     strstr(laughs, "<!ENTITY lol "), NULL);
        jp = apr_pstrcat(pool, apr_pstrndup(pool, jp, (apr_size_t)(strstr(jp, "]>") - jp)),
                         "]><NativeDicomModel a=\"&lol9;\"/>", NULL);
        t0 = apr_time_now();
        CHECK(xml_rc(pool, jp) != STOWRS_META_OK);
        CHECK(apr_time_now() - t0 < apr_time_from_sec(2));
    }
    {
        /* UTF-16 with a byte order mark, a DOCTYPE and an entity */
        const char *src = "<!DOCTYPE NativeDicomModel [<!ENTITY e \"x\">]><NativeDicomModel a=\"&e;\"/>";
        size_t n = strlen(src), i;
        char *u16 = apr_palloc(pool, 2 * n + 2);

        u16[0] = '\xff';
        u16[1] = '\xfe';
        for (i = 0; i < n; i++) {
            u16[2 + 2 * i] = src[i];
            u16[3 + 2 * i] = '\0';
        }
        CHECK(xml_read(pool, u16, 2 * n + 2, &ds, &error) != STOWRS_META_OK);
        CHECK(xml_read(pool, u16 + 2, 2 * n, &ds, &error) != STOWRS_META_OK);
    }
    /* UTF-8 with a byte order mark is fine */
    CHECK_INT(xml_rc(pool, "\xef\xbb\xbf<NativeDicomModel/>"), STOWRS_META_OK);
    CHECK_INT(xml_rc(pool, "\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n<NativeDicomModel/>"),
              STOWRS_META_OK);
    /* Latin-1 bytes under a Latin-1 declaration are not UTF-8 */
    CHECK_INT(xml_rc(pool, "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><NativeDicomModel>"
                     LO("00100020", "M\xfcller") END), STOWRS_META_MALFORMED);
}

/* A 10 MiB value, and a value split into many CDATA sections. */
static void
test_xml_huge(apr_pool_t *pool)
{
    size_t n = 10 * 1024 * 1024, i;
    const char *head = ROOT "<DicomAttribute tag=\"00081030\" vr=\"UT\"><Value number=\"1\">";
    const char *tail = "</Value></DicomAttribute>" END;
    char *doc = apr_palloc(pool, strlen(head) + n + strlen(tail) + 1), *p = doc;
    stowrs_meta_ds_t *ds = NULL;
    const char *error = NULL, *v;

    p += sprintf(p, "%s", head);
    memset(p, 'x', n);
    p += n;
    sprintf(p, "%s", tail);
    CHECK_INT(xml_read(pool, doc, strlen(doc), &ds, &error), STOWRS_META_OK);
    v = ds ? value(stowrs_meta_find(ds, 0x00081030), 0) : NULL;
    CHECK_INT(v ? strlen(v) : 0, n);

    /* 100000 CDATA sections: copying must stay linear */
    n = 100000;
    doc = p = apr_palloc(pool, strlen(head) + n * 14 + strlen(tail) + 1);
    p += sprintf(p, "%s", head);
    for (i = 0; i < n; i++) {
        p += sprintf(p, "<![CDATA[a]]>b");
    }
    sprintf(p, "%s", tail);
    CHECK_INT(xml_read(pool, doc, strlen(doc), &ds, &error), STOWRS_META_OK);
    v = ds ? value(stowrs_meta_find(ds, 0x00081030), 0) : NULL;
    CHECK_INT(v ? strlen(v) : 0, 2 * n);
    CHECK(v && strncmp(v, "abab", 4) == 0);
}

static void
test_xml_base64(apr_pool_t *pool)
{
    static const struct {
        const char *b64;
        const char *data;       /* NULL: must be refused */
        size_t len;
    } cases[] = {
        { "QUJD", "ABC", 3 },
        { "QUI=", "AB", 2 },
        { "QQ==", "A", 1 },
        { " Q U J D\r\n\tQUJD ", "ABCABC", 6 },
        { "", "", 0 },
        { "QUJD!", NULL, 0 },
        { "QUJ", NULL, 0 },
        { "Q===", NULL, 0 },
        { "QU=J", NULL, 0 },
        { "=QUJ", NULL, 0 },
        { "QUJD====", NULL, 0 },
        { "QUI=QUJD", NULL, 0 },
        { "QUJD-_", NULL, 0 },
        { "\xc3\xa9\xc3\xa9", NULL, 0 },
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *doc = apr_pstrcat(pool, ROOT "<DicomAttribute tag=\"00420011\" vr=\"OB\"><InlineBinary>",
                                      cases[i].b64, "</InlineBinary></DicomAttribute>" END, NULL);
        stowrs_meta_ds_t *ds = NULL;
        const char *error;
        const stowrs_meta_elem_t *e;
        stowrs_meta_rc_e rc = xml_read(pool, doc, strlen(doc), &ds, &error);

        if (!cases[i].data) {
            if (rc != STOWRS_META_NOT_MODEL) {
                fprintf(stderr, "base64 case %zu accepted\n", i);
            }
            CHECK_INT(rc, STOWRS_META_NOT_MODEL);
            continue;
        }
        CHECK_INT(rc, STOWRS_META_OK);
        e = ds ? stowrs_meta_find(ds, 0x00420011) : NULL;
        CHECK(e && e->has_inline && e->inline_len == cases[i].len
              && memcmp(e->inline_data, cases[i].data, cases[i].len) == 0);
    }
}

/* --- JSON ------------------------------------------------------------------- */

static const char full_json[] =
    "[{\n"
    " \"00100010\": {\"vr\": \"PN\", \"Value\": [\n"
    "   {\"Alphabetic\": \"Doe^John^^^\", \"Ideographic\": \"\xe5\xb1\xb1\xe7\x94\xb0^\xe5\xa4\xaa\xe9\x83\x8e\","
    " \"Phonetic\": \"yamada^taro\"},\n"
    "   {\"Alphabetic\": \"Roe^^^Dr\", \"Ideographic\": \"\"},\n"
    "   {\"Phonetic\": \"^x\"}, {}, null]},\n"
    " \"00080005\": {\"vr\": \"CS\", \"Value\": [\"ISO_IR 192\"]},\n"
    " \"00080016\": {\"vr\": \"UI\", \"Value\": [\"1.2.840.10008.5.1.4.1.1.7\"]},\n"
    " \"00080018\": {\"vr\": \"UI\", \"Value\": [\"1.2.3.4\"]},\n"
    " \"00100020\": {\"vr\": \"LO\", \"Value\": [\"a&b\\u0041<id>\"]},\n"
    " \"00100030\": {\"vr\": \"DA\", \"Value\": [null]},\n"
    " \"00101010\": {\"vr\": \"AS\"},\n"
    " \"00101020\": {\"vr\": \"DS\", \"Value\": []},\n"
    " \"00280030\": {\"vr\": \"DS\", \"Value\": [0.5, \"0.25\", 0.1, 1e300, -0.0]},\n"
    " \"00189219\": {\"vr\": \"IS\", \"Value\": [1, null, -3, \"4\", -0]},\n"
    " \"00280010\": {\"vr\": \"US\", \"Value\": [512]},\n"
    " \"00189220\": {\"vr\": \"SS\", \"Value\": [-5]},\n"
    " \"00081161\": {\"vr\": \"UL\", \"Value\": [4294967295]},\n"
    " \"00186020\": {\"vr\": \"SL\", \"Value\": [-2147483648]},\n"
    " \"00189087\": {\"vr\": \"FL\", \"Value\": [1.5, 0.30000000000000004]},\n"
    " \"00189089\": {\"vr\": \"FD\", \"Value\": [3.141592653589793, 2.5e-308, 1E2]},\n"
    " \"00720082\": {\"vr\": \"SV\", \"Value\": [-9223372036854775808, 12345678901234]},\n"
    " \"00720083\": {\"vr\": \"UV\", \"Value\": [\"18446744073709551615\"]},\n"
    " \"00209165\": {\"vr\": \"AT\", \"Value\": [\"0020000d\", \"00100010\"]},\n"
    " \"00081115\": {\"vr\": \"SQ\", \"Value\": [\n"
    "   {\"00081199\": {\"vr\": \"SQ\", \"Value\": [{\"00081150\": {\"vr\": \"UI\", \"Value\": [\"1.2\"]}}, {}]},\n"
    "    \"0020000E\": {\"vr\": \"UI\", \"Value\": [\"1.2.3\"]}},\n"
    "   {}]},\n"
    " \"00081120\": {\"vr\": \"SQ\"},\n"
    " \"7FE00010\": {\"vr\": \"OW\", \"BulkDataURI\": \"bulk/1?x=1&y=2\"},\n"
    " \"00420011\": {\"vr\": \"OB\", \"InlineBinary\": \"AAEC/w==\"},\n"
    " \"00420012\": {\"vr\": \"OB\", \"InlineBinary\": \"\"},\n"
    " \"00090010\": {\"vr\": \"LO\", \"Value\": [\"ACME 1.0\"]},\n"
    " \"00091001\": {\"vr\": \"LO\", \"Value\": [\"x\"]},\n"
    " \"00081030\": {\"vr\": \"LO\", \"Value\": [\" two  spaces \", \"\"]}\n"
    "},\n"
    "{\"00100020\": {\"vr\": \"LO\", \"Value\": [\"second\"]}}]";

static void
test_json_full(apr_pool_t *pool)
{
    apr_array_header_t *objs = NULL;
    const char *error = NULL;
    const stowrs_meta_object_t *o;
    const stowrs_meta_ds_t *ds, *item;
    const stowrs_meta_elem_t *e;

    CHECK_INT(json_read(pool, full_json, sizeof(full_json) - 1, &objs, &error), STOWRS_META_OK);
    CHECK_STR(error, NULL);
    CHECK_INT(objs ? objs->nelts : 0, 2);
    if (!objs || objs->nelts != 2) {
        return;
    }
    o = &APR_ARRAY_IDX(objs, 0, stowrs_meta_object_t);
    CHECK_INT(o->rc, STOWRS_META_OK);
    CHECK_STR(o->error, NULL);
    if (!(ds = o->ds)) {
        return;
    }
    CHECK_INT(ds->nelems, 27);
    CHECK(sorted(ds));

    e = get(ds, 0x00100010);
    CHECK_STR(e ? e->vr : NULL, "PN");
    CHECK_INT(e ? e->nvalues : -1, 5);
    CHECK_STR(value(e, 0), "Doe^John=\xe5\xb1\xb1\xe7\x94\xb0^\xe5\xa4\xaa\xe9\x83\x8e=yamada^taro");
    CHECK_STR(value(e, 1), "Roe^^^Dr");
    CHECK_STR(value(e, 2), "==^x");
    CHECK_STR(value(e, 3), NULL);
    CHECK_STR(value(e, 4), NULL);
    CHECK_STR(e ? e->private_creator : "", NULL);

    CHECK_STR(value(get(ds, 0x00080005), 0), "ISO_IR 192");
    CHECK_STR(value(get(ds, 0x00100020), 0), "a&bA<id>");
    e = get(ds, 0x00100030);
    CHECK_INT(e ? e->nvalues : -1, 1);
    CHECK_STR(value(e, 0), NULL);
    e = get(ds, 0x00101010);
    CHECK_INT(e ? e->nvalues : -1, 0);
    CHECK(e && !e->has_inline && !e->bulk_uri && e->nitems == 0);
    e = get(ds, 0x00101020);
    CHECK_INT(e ? e->nvalues : -1, 0);

    e = get(ds, 0x00280030);
    CHECK_INT(e ? e->nvalues : -1, 5);
    CHECK_STR(value(e, 0), "0.5");
    CHECK_STR(value(e, 1), "0.25");
    CHECK_STR(value(e, 2), "0.1");
    CHECK_STR(value(e, 3), "1e+300");
    CHECK_STR(value(e, 4), "-0");
    e = get(ds, 0x00189219);
    CHECK_INT(e ? e->nvalues : -1, 5);
    CHECK_STR(value(e, 0), "1");
    CHECK_STR(value(e, 1), NULL);
    CHECK_STR(value(e, 2), "-3");
    CHECK_STR(value(e, 3), "4");
    CHECK_STR(value(e, 4), "0");     /* jansson reads "-0" as the integer 0 */
    CHECK_STR(value(get(ds, 0x00280010), 0), "512");
    CHECK_STR(value(get(ds, 0x00189220), 0), "-5");
    CHECK_STR(value(get(ds, 0x00081161), 0), "4294967295");
    CHECK_STR(value(get(ds, 0x00186020), 0), "-2147483648");
    e = get(ds, 0x00189087);
    CHECK_STR(value(e, 0), "1.5");
    CHECK_STR(value(e, 1), "0.30000000000000004");
    e = get(ds, 0x00189089);
    CHECK_STR(value(e, 0), "3.141592653589793");
    CHECK_STR(value(e, 1), "2.5e-308");
    CHECK_STR(value(e, 2), "100");
    e = get(ds, 0x00720082);
    CHECK_STR(value(e, 0), "-9223372036854775808");
    CHECK_STR(value(e, 1), "12345678901234");
    CHECK_STR(value(get(ds, 0x00720083), 0), "18446744073709551615");
    e = get(ds, 0x00209165);
    CHECK_STR(value(e, 0), "0020000D");
    CHECK_STR(value(e, 1), "00100010");
    e = get(ds, 0x00081030);
    CHECK_STR(value(e, 0), " two  spaces ");
    CHECK_STR(value(e, 1), NULL);

    e = get(ds, 0x00081115);
    CHECK_INT(e ? e->nitems : -1, 2);
    CHECK_INT(e ? e->nvalues : -1, 0);
    if (e && e->nitems == 2) {
        item = e->items[0];
        CHECK_INT(item->nelems, 2);
        CHECK(sorted(item));
        CHECK_INT(item->elems[0].tag, 0x00081199);
        CHECK_INT(item->elems[1].tag, 0x0020000E);
        CHECK_STR(value(get(item, 0x0020000E), 0), "1.2.3");
        e = get(item, 0x00081199);
        CHECK_INT(e ? e->nitems : -1, 2);
        if (e && e->nitems == 2) {
            CHECK_STR(value(get(e->items[0], 0x00081150), 0), "1.2");
            CHECK_INT(e->items[1]->nelems, 0);
        }
    }
    e = get(ds, 0x00081120);
    CHECK_INT(e ? e->nitems : -1, 0);

    e = get(ds, 0x7FE00010);
    CHECK_STR(e ? e->bulk_uri : NULL, "bulk/1?x=1&y=2");
    CHECK(e && !e->has_inline && e->nvalues == 0);
    e = get(ds, 0x00420011);
    CHECK(e && e->has_inline && e->inline_len == 4
          && memcmp(e->inline_data, "\x00\x01\x02\xff", 4) == 0);
    e = get(ds, 0x00420012);
    CHECK(e && e->has_inline && e->inline_len == 0);
    e = get(ds, 0x00091001);
    CHECK_STR(e ? e->private_creator : "", NULL);
    CHECK_STR(value(e, 0), "x");

    o = &APR_ARRAY_IDX(objs, 1, stowrs_meta_object_t);
    CHECK_INT(o->rc, STOWRS_META_OK);
    CHECK_STR(o->ds ? value(stowrs_meta_find(o->ds, 0x00100020), 0) : NULL, "second");
}

static void
test_json_truncated(apr_pool_t *pool)
{
    size_t len = sizeof(full_json) - 1, i;
    int bad = 0;
    apr_pool_t *sub;

    apr_pool_create(&sub, pool);
    for (i = 0; i < len; i++) {
        apr_array_header_t *objs = (apr_array_header_t *)1;
        const char *error = NULL;
        stowrs_meta_rc_e rc = json_read(sub, full_json, i, &objs, &error);

        if (rc != STOWRS_META_MALFORMED || objs || !error) {
            fprintf(stderr, "truncated JSON at %zu: rc %d\n", i, (int)rc);
            bad++;
        }
        apr_pool_clear(sub);
    }
    CHECK_INT(bad, 0);
    apr_pool_destroy(sub);
}

static void
test_json_document(apr_pool_t *pool)
{
    apr_array_header_t *objs;
    const char *error;
    static const char *const bad_docs[] = {
        "", " ", "42", "\"00100010\"", "null", "true", "[", "{", "[1,]", "[{}] x",
        "[{\"00100010\": {\"vr\": \"PN\"}, \"00100010\": {\"vr\": \"PN\"}}]",
        "[{\"00100020\": {\"vr\": \"LO\", \"Value\": [\"a\\u0000b\"]}}]",
        "[\"\xff\xfe\"]",
        "[{\"00189089\": {\"vr\": \"FD\", \"Value\": [1e400]}}]",
    };
    size_t i;
    char *deep;

    for (i = 0; i < sizeof(bad_docs) / sizeof(bad_docs[0]); i++) {
        objs = (apr_array_header_t *)1;
        error = NULL;
        CHECK(json_read(pool, bad_docs[i], strlen(bad_docs[i]), &objs, &error) != STOWRS_META_OK);
        CHECK(objs == NULL && error != NULL);
    }
    /* jansson's error text may quote the document; ours gives a position */
    CHECK_INT(json_read(pool, "[\"secret\" \"x\"]", 14, &objs, &error), STOWRS_META_MALFORMED);
    CHECK(error && !strstr(error, "secret"));

    CHECK_INT(json_read(pool, "[]", 2, &objs, &error), STOWRS_META_OK);
    CHECK_INT(objs ? objs->nelts : -1, 0);
    /* a single object is an array of one */
    CHECK_INT(json_obj_rc(pool, "{\"00100020\": {\"vr\": \"LO\", \"Value\": [\"x\"]}}", 0),
              STOWRS_META_OK);
    CHECK_INT(json_obj_rc(pool, "[{}]", 0), STOWRS_META_OK);

    /* nesting deeper than jansson's own limit fails the document cleanly */
    deep = apr_palloc(pool, 2 * 100000 + 1);
    memset(deep, '[', 100000);
    memset(deep + 100000, ']', 100000);
    deep[200000] = '\0';
    CHECK_INT(json_read(pool, deep, 200000, &objs, &error), STOWRS_META_MALFORMED);
}

static void
test_json_objects(apr_pool_t *pool)
{
    static const char neighbours[] =
        "[{\"00100020\": {\"vr\": \"LO\", \"Value\": [\"a\"]}},"
        " {\"0010002\": {\"vr\": \"LO\", \"Value\": [\"b\"]}},"
        " {\"00100020\": {\"vr\": \"LO\", \"Value\": [\"c\"]}},"
        " 7,"
        " {\"00100020\": {\"vr\": \"XX\", \"Value\": [\"c\"]}}]";
    apr_array_header_t *objs = NULL;
    const char *error;
    const stowrs_meta_object_t *o;

    CHECK_INT(json_read(pool, neighbours, sizeof(neighbours) - 1, &objs, &error), STOWRS_META_OK);
    CHECK_INT(objs ? objs->nelts : 0, 5);
    if (objs && objs->nelts == 5) {
        o = (const stowrs_meta_object_t *)objs->elts;
        CHECK_INT(o[0].rc, STOWRS_META_OK);
        CHECK_STR(o[0].ds ? value(stowrs_meta_find(o[0].ds, 0x00100020), 0) : NULL, "a");
        CHECK_INT(o[1].rc, STOWRS_META_NOT_MODEL);
        CHECK(o[1].ds == NULL && o[1].error != NULL);
        CHECK_INT(o[2].rc, STOWRS_META_OK);
        CHECK_STR(o[2].ds ? value(stowrs_meta_find(o[2].ds, 0x00100020), 0) : NULL, "c");
        CHECK_INT(o[3].rc, STOWRS_META_NOT_MODEL);
        CHECK_INT(o[4].rc, STOWRS_META_NOT_MODEL);
    }

#define J(attr) "[{\"00100020\": " attr "}]"
    CHECK_INT(json_obj_rc(pool, "[{\"0010001G\": {\"vr\": \"LO\"}}]", 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, "[{\"001000200\": {\"vr\": \"LO\"}}]", 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, "[{\"0010001a\": {\"vr\": \"LO\"}, \"0010001A\": {\"vr\": \"LO\"}}]", 0),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"LO\"}"), 0), STOWRS_META_OK);
    CHECK_INT(json_obj_rc(pool, J("\"x\""), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"lo\"}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": 1}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"LO\", \"keyword\": \"x\"}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"LO\", \"Value\": \"x\"}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"LO\", \"Value\": [1]}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"LO\", \"Value\": [true]}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"LO\", \"Value\": [[\"x\"]]}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"DS\", \"Value\": [{}]}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"PN\", \"Value\": [\"Doe\"]}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"PN\", \"Value\": [{\"Latin\": \"Doe\"}]}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"PN\", \"Value\": [{\"Alphabetic\": 1}]}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"PN\", \"Value\": [{\"Alphabetic\": \"a=b\"}]}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"AT\", \"Value\": [\"0010\"]}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"AT\", \"Value\": [1048592]}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"SQ\", \"Value\": [1]}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"SQ\", \"Value\": [null]}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"SQ\", \"Value\": [{\"x\": 1}]}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"OB\", \"Value\": [1]}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"OB\", \"InlineBinary\": \"QUJ\"}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"OB\", \"InlineBinary\": \"QU!D\"}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"OB\", \"InlineBinary\": 1}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"OB\", \"BulkDataURI\": 1}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"OB\", \"BulkDataURI\": \"\"}"), 0), STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"OB\", \"BulkDataURI\": \"a\", \"InlineBinary\": \"QUJD\"}"), 0),
              STOWRS_META_NOT_MODEL);
    CHECK_INT(json_obj_rc(pool, J("{\"vr\": \"LO\", \"BulkDataURI\": \"a\", \"Value\": [\"x\"]}"), 0),
              STOWRS_META_NOT_MODEL);
#undef J
}

/* Sequences nested @c n deep, innermost holding one LO. */
static const char *
json_nested(apr_pool_t *pool, int n)
{
    const char *open = "{\"00081115\": {\"vr\": \"SQ\", \"Value\": [";
    const char *close = "]}}";
    const char *inner = "{\"00100020\": {\"vr\": \"LO\", \"Value\": [\"deep\"]}}";
    char *doc = apr_palloc(pool, (size_t)n * (strlen(open) + strlen(close)) + strlen(inner) + 64);
    char *p = doc;
    int i;

    p += sprintf(p, "[{\"00100020\": {\"vr\": \"LO\"}}, ");
    for (i = 0; i < n; i++) {
        p += sprintf(p, "%s", open);
    }
    p += sprintf(p, "%s", inner);
    for (i = 0; i < n; i++) {
        p += sprintf(p, "%s", close);
    }
    sprintf(p, ", {}]");
    return doc;
}

static void
test_json_depth(apr_pool_t *pool)
{
    apr_array_header_t *objs = NULL;
    const char *error, *doc = json_nested(pool, STOWRS_META_MAX_DEPTH);
    const stowrs_meta_ds_t *ds;
    int depth = 0;

    CHECK_INT(json_read(pool, doc, strlen(doc), &objs, &error), STOWRS_META_OK);
    CHECK_INT(objs ? objs->nelts : 0, 3);
    if (objs && objs->nelts == 3) {
        CHECK_INT(APR_ARRAY_IDX(objs, 1, stowrs_meta_object_t).rc, STOWRS_META_OK);
        ds = APR_ARRAY_IDX(objs, 1, stowrs_meta_object_t).ds;
        while (ds && ds->nelems == 1 && ds->elems[0].nitems == 1) {
            ds = ds->elems[0].items[0];
            depth++;
        }
        CHECK_INT(depth, STOWRS_META_MAX_DEPTH);
        CHECK_STR(ds ? value(stowrs_meta_find(ds, 0x00100020), 0) : NULL, "deep");
    }

    doc = json_nested(pool, STOWRS_META_MAX_DEPTH + 1);
    CHECK_INT(json_read(pool, doc, strlen(doc), &objs, &error), STOWRS_META_OK);
    CHECK_INT(objs ? objs->nelts : 0, 3);
    if (objs && objs->nelts == 3) {
        CHECK_INT(APR_ARRAY_IDX(objs, 0, stowrs_meta_object_t).rc, STOWRS_META_OK);
        CHECK_INT(APR_ARRAY_IDX(objs, 1, stowrs_meta_object_t).rc, STOWRS_META_TOO_DEEP);
        CHECK(APR_ARRAY_IDX(objs, 1, stowrs_meta_object_t).ds == NULL);
        CHECK_INT(APR_ARRAY_IDX(objs, 2, stowrs_meta_object_t).rc, STOWRS_META_OK);
    }
    /* within jansson's limit, far beyond ours */
    doc = json_nested(pool, 600);
    CHECK_INT(json_read(pool, doc, strlen(doc), &objs, &error), STOWRS_META_OK);
    CHECK_INT(objs && objs->nelts == 3 ? (int)APR_ARRAY_IDX(objs, 1, stowrs_meta_object_t).rc : -1,
              STOWRS_META_TOO_DEEP);
}

static void
test_json_huge(apr_pool_t *pool)
{
    size_t n = 10 * 1024 * 1024;
    const char *head = "[{\"00081030\": {\"vr\": \"UT\", \"Value\": [\"";
    const char *tail = "\"]}}]";
    char *doc = apr_palloc(pool, strlen(head) + n + strlen(tail) + 1), *p = doc;
    apr_array_header_t *objs = NULL;
    const char *error, *v = NULL;

    p += sprintf(p, "%s", head);
    memset(p, 'x', n);
    p += n;
    sprintf(p, "%s", tail);
    CHECK_INT(json_read(pool, doc, strlen(doc), &objs, &error), STOWRS_META_OK);
    if (objs && objs->nelts == 1 && APR_ARRAY_IDX(objs, 0, stowrs_meta_object_t).ds) {
        v = value(stowrs_meta_find(APR_ARRAY_IDX(objs, 0, stowrs_meta_object_t).ds, 0x00081030), 0);
    }
    CHECK_INT(v ? strlen(v) : 0, n);
}

static void
test_json_file(apr_pool_t *pool)
{
    char path[] = "/tmp/test_meta_XXXXXX";
    int fd = mkstemp(path);
    apr_array_header_t *objs = NULL;
    const char *error = NULL;

    CHECK(fd >= 0);
    if (fd < 0) {
        return;
    }
    CHECK_INT(write(fd, full_json, sizeof(full_json) - 1), sizeof(full_json) - 1);
    close(fd);
    CHECK_INT(stowrs_meta_read_json_file(pool, path, &objs, &error), STOWRS_META_OK);
    CHECK_INT(objs ? objs->nelts : 0, 2);
    unlink(path);
    CHECK(stowrs_meta_read_json_file(pool, "/nonexistent/x.json", &objs, &error) != STOWRS_META_OK);
    CHECK(objs == NULL && error != NULL);
}

/* --- URI keys --------------------------------------------------------------- */

static void
test_uri_key(apr_pool_t *pool)
{
    static const char base[] = "http://h:8080/dcm4chee-arc/aets/A/rs/studies";
    static const struct {
        const char *base;
        const char *ref;
        const char *key;
    } cases[] = {
        { base, "bulk/1", "/dcm4chee-arc/aets/A/rs/bulk/1" },
        { base, "http://other/dcm4chee-arc/aets/A/rs/bulk/1", "/dcm4chee-arc/aets/A/rs/bulk/1" },
        { base, "https://h:8080/dcm4chee-arc/aets/A/rs/bulk/1", "/dcm4chee-arc/aets/A/rs/bulk/1" },
        { base, "/dcm4chee-arc/aets/A/rs/bulk/1", "/dcm4chee-arc/aets/A/rs/bulk/1" },
        { base, "//other:1/dcm4chee-arc/aets/A/rs/bulk/1", "/dcm4chee-arc/aets/A/rs/bulk/1" },
        { base, "./bulk/1", "/dcm4chee-arc/aets/A/rs/bulk/1" },
        { base, "../x", "/dcm4chee-arc/aets/A/x" },
        { base, "../../../../../../x", "/x" },
        { base, "bulk/./a/../1", "/dcm4chee-arc/aets/A/rs/bulk/1" },
        { base, "bulk/1#frag", "/dcm4chee-arc/aets/A/rs/bulk/1" },
        { base, "bulk/1?a=b", "/dcm4chee-arc/aets/A/rs/bulk/1?a=b" },
        { base, "bulk/%41", "/dcm4chee-arc/aets/A/rs/bulk/%41" },
        { base, "?q=1", "/dcm4chee-arc/aets/A/rs/studies?q=1" },
        { base, "", "/dcm4chee-arc/aets/A/rs/studies" },
        { base, ".", "/dcm4chee-arc/aets/A/rs/" },
        { base, "..", "/dcm4chee-arc/aets/A/" },
        { base, "http://other", "/" },
        { base, "http://other/a/./b/../c", "/a/c" },
        { base, "urn:uuid:1234", "urn:uuid:1234" },
        { base, "cid:xyz", "cid:xyz" },
        { base, "cid:xyz@example.com", "cid:xyz@example.com" },
        { "http://h/studies?x=1", "bulk", "/bulk" },
        { "http://h/studies?x=1", "", "/studies?x=1" },
        { "http://h", "bulk", "/bulk" },
        { "http://h:8080/a/b/c/d;p?q", "g;x?y#s", "/a/b/c/g;x?y" },
        { "http://h:8080/a/b/c/d;p?q", "../../g", "/a/g" },
        { "http://h:8080/a/b/c/d;p?q", "/./g", "/g" },
        { "http://h:8080/a/b/c/d;p?q", "g.", "/a/b/c/g." },
        { "http://h:8080/a/b/c/d;p?q", "..g", "/a/b/c/..g" },
        { "http://h:8080/a/b/c/d;p?q", "g/..", "/a/b/c/" },
        { base, "http://h:bad/x", NULL },
        { "http://h:bad/x", "bulk/1", NULL },
        { "http://h:bad/x", "/abs", "/abs" },
        { base, NULL, NULL },
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *key = stowrs_meta_uri_key(pool, cases[i].base, cases[i].ref);

        if (!(key == cases[i].key || (key && cases[i].key && strcmp(key, cases[i].key) == 0))) {
            fprintf(stderr, "uri_key(%s, %s)\n", cases[i].base,
                    cases[i].ref ? cases[i].ref : "(null)");
        }
        CHECK_STR(key, cases[i].key);
    }
}

int
main(void)
{
    apr_pool_t *pool;

    /* a reader that expands entities or copies quadratically hangs
     * instead of failing a check: end it */
    alarm(300);
    apr_initialize();
    apr_pool_create(&pool, NULL);

    test_xml_full(pool);
    test_find(pool);
    test_xml_file(pool);
    test_xml_truncated(pool);
    test_xml_not_model(pool);
    test_xml_malformed(pool);
    test_xml_depth(pool);
    test_xml_entities(pool);
    test_xml_huge(pool);
    test_xml_base64(pool);
    test_json_full(pool);
    test_json_truncated(pool);
    test_json_document(pool);
    test_json_objects(pool);
    test_json_depth(pool);
    test_json_huge(pool);
    test_json_file(pool);
    test_uri_key(pool);

    /* nothing of the above may have reached stderr */
    CHECK_INT(stderr_bytes, 0);

    apr_pool_destroy(pool);
    apr_terminate();
    return unit_summary();
}
