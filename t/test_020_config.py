"""Configuration: `apache2 -t` accepts good values and rejects each bad one
with a message naming the directive (mod_tile's bad_httpd_config_N habit),
and every directive is documented.
"""

import pathlib
import re

import pytest

from stowrs_env import Httpd, REPO

DIRECTIVE_RE = re.compile(r"\bStowRS[A-Z][A-Za-z]+\b")


@pytest.fixture(scope="module")
def cfg(new_workdir):
    """An unstarted server: only its generated configuration is used."""
    return Httpd(new_workdir("config"))


def test_020_01_default_config_ok(cfg):
    rc, out = cfg.config_test("")
    assert rc == 0, out
    assert "Syntax OK" in out


GOOD = [
    ("archive-abs", "StowRSArchive /var/tmp/stowrs-other-archive"),
    ("format-default", "StowRSPathFormat {StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"),
    ("format-flat", "StowRSPathFormat {SOPInstanceUID}.dcm"),
    ("format-class", "StowRSPathFormat {SOPClassUID}/{StudyInstanceUID}/{SOPInstanceUID}"),
    ("overwrite-never", "StowRSOverwritePolicy Never"),
    ("overwrite-always", "StowRSOverwritePolicy Always"),
    ("overwrite-reject", "StowRSOverwritePolicy Reject"),
    ("sync-on", "StowRSSync On"),
    ("sync-off", "StowRSSync Off"),
    ("max-zero", "StowRSMaxBodySize 0"),
    ("max-big", "StowRSMaxBodySize 4294967296"),
    ("ts-image-uid", "StowRSAcceptTransferSyntax image 1.2.840.10008.1.2.1 1.2.840.10008.1.2.4.50"),
    ("ts-sr-uid", "StowRSAcceptTransferSyntax sr 1.2.840.10008.1.2.1"),
    ("ts-video-uid", "StowRSAcceptTransferSyntax video 1.2.840.10008.1.2.4.100"),
    ("ts-other-uid", "StowRSAcceptTransferSyntax other 1.2.840.10008.1.2"),
    ("sop-all", "StowRSAcceptSOPClass all"),
    ("sop-uid", "StowRSAcceptSOPClass 1.2.840.10008.5.1.4.1.1.2"),
    ("sop-name", "StowRSAcceptSOPClass CTImageStorage MRImageStorage"),
    ("retrieve-base", "StowRSRetrieveBase https://pacs.example.org/dcm4chee-arc/aets/DCM4CHEE/rs"),
]


@pytest.mark.parametrize("line", [g[1] for g in GOOD], ids=[g[0] for g in GOOD])
def test_020_02_good_values(cfg, line):
    rc, out = cfg.config_test("", location_conf=line)
    assert rc == 0, "%s\n%s" % (line, out)


BAD = [
    ("archive-relative", "StowRSArchive relative/archive", "StowRSArchive"),
    ("archive-none", "StowRSArchive", "StowRSArchive"),
    ("format-unknown-token", "StowRSPathFormat {StudyInstanceUID}/{PatientID}/{SOPInstanceUID}.dcm",
     "StowRSPathFormat"),
    ("format-absolute", "StowRSPathFormat /{StudyInstanceUID}/{SOPInstanceUID}.dcm",
     "StowRSPathFormat"),
    ("format-dotdot", "StowRSPathFormat ../{StudyInstanceUID}/{SOPInstanceUID}.dcm",
     "StowRSPathFormat"),
    ("format-inner-dotdot", "StowRSPathFormat {StudyInstanceUID}/../../{SOPInstanceUID}.dcm",
     "StowRSPathFormat"),
    ("format-no-sop", "StowRSPathFormat {StudyInstanceUID}/{SeriesInstanceUID}.dcm",
     "StowRSPathFormat"),
    ("overwrite-sometimes", "StowRSOverwritePolicy Sometimes", "StowRSOverwritePolicy"),
    ("sync-maybe", "StowRSSync Maybe", "StowRSSync"),
    ("max-negative", "StowRSMaxBodySize -1", "StowRSMaxBodySize"),
    ("max-suffix", "StowRSMaxBodySize 12abc", "StowRSMaxBodySize"),
    ("ts-bogus-category", "StowRSAcceptTransferSyntax bogus-category 1.2.840.10008.1.2.1",
     "StowRSAcceptTransferSyntax"),
    ("ts-not-a-uid", "StowRSAcceptTransferSyntax image not-a-uid", "StowRSAcceptTransferSyntax"),
    ("ts-bad-uid", "StowRSAcceptTransferSyntax image 1.2..840", "StowRSAcceptTransferSyntax"),
    ("sop-unknown-name", "StowRSAcceptSOPClass NoSuchClassName", "StowRSAcceptSOPClass"),
    ("sop-bad-uid", "StowRSAcceptSOPClass 01.2.840", "StowRSAcceptSOPClass"),
]


@pytest.mark.parametrize("line,directive", [(b[1], b[2]) for b in BAD],
                         ids=[b[0] for b in BAD])
def test_020_03_bad_value_in_location(cfg, line, directive):
    rc, out = cfg.config_test("", location_conf=line)
    assert rc != 0, "apache2 -t accepted %r:\n%s" % (line, out)
    assert directive in out, "message does not name %s:\n%s" % (directive, out)
    assert "Syntax OK" not in out
    value = line.split()[-1]
    if "bogus-category" in line:
        value = "bogus-category"
    if value != directive and directive != "StowRSSync":
        assert value in out, "message does not quote the bad value %r:\n%s" % (value, out)


@pytest.mark.parametrize("line,directive", [
    ("StowRSOverwritePolicy Sometimes", "StowRSOverwritePolicy"),
    ("StowRSMaxBodySize 12abc", "StowRSMaxBodySize"),
    ("StowRSArchive relative/archive", "StowRSArchive"),
], ids=["overwrite", "max", "archive"])
def test_020_04_bad_value_at_server_level(cfg, line, directive):
    rc, out = cfg.config_test(line)
    assert rc != 0, "apache2 -t accepted %r at server level:\n%s" % (line, out)
    assert directive in out, out


def _contract_directives():
    text = (REPO / "t" / "CONTRACT.md").read_text()
    names = set(DIRECTIVE_RE.findall(text))
    assert len(names) >= 8, names
    return names


def _module_directives():
    src = REPO / "mod_stowrs.c"
    if not src.exists():
        return set()
    return set(re.findall(r'AP_INIT_\w+\(\s*"(StowRS\w+)"', src.read_text()))


def test_020_05_readme_documents_every_directive():
    readme = REPO / "README.md"
    assert readme.is_file(), "README.md is missing"
    text = readme.read_text()
    wanted = _contract_directives() | _module_directives()
    missing = sorted(d for d in wanted if d not in text)
    assert not missing, "README.md does not mention %s" % missing


def test_020_06_example_conf_mentions_every_directive():
    confs = sorted((REPO / "conf").glob("*.conf"))
    assert confs, "no conf/*.conf"
    text = "\n".join(p.read_text() for p in confs)
    assert "SetHandler stowrs" in text
    wanted = _contract_directives() | _module_directives()
    missing = sorted(d for d in wanted if d not in text)
    assert not missing, "conf/*.conf do not mention %s" % missing


def test_020_07_module_implements_contract_directives():
    mod = _module_directives()
    assert mod, "no directives found in mod_stowrs.c"
    missing = sorted(_contract_directives() - mod)
    assert not missing, "mod_stowrs.c lacks %s" % missing
