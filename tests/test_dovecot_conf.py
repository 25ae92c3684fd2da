"""The Dovecot configurations of the tests and examples, in 2.3's and in 2.4's syntax.

Debian 12 has Dovecot 2.3, Debian 13 Dovecot 2.4.  On a machine with one of them the
integration tests run that one; these tests check the other rendering as text: every
setting and block name of the 2.4 text is one that 2.4 knows (NAMES_24, from Dovecot's
documentation, see tests/dovecot_conf.py), no 2.3-only name is left, and the settings
that 2.4 wants first come first.  When 2.4 is installed, ``doveconf`` reads the rendered
files as well.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from sieve.pigeonhole import private_config
from tests.dovecot_conf import (
    NAMES_24,
    ONLY_23,
    DovecotSyntax,
    dovecot_version,
    setting_names,
    settings_text,
)
from tests.mta import EXAMPLES, HOSTNAME, dovecot_conf
from tests.test_forgery_lmtp import lmtp_conf
from tests.test_learn_imap import server_conf as imapsieve_server_conf
from tests.test_managesieve import _config as managesieve_config
from tests.test_sieve_dovecot import dovecot_conf as lda_conf

V23, V24 = DovecotSyntax((2, 3)), DovecotSyntax((2, 4))
DOVECONF = "/usr/bin/doveconf"
ROOT = Path("/tmp/authsieve-dovecot-conf")


def every_piece(syntax: DovecotSyntax) -> str:
    """Gives a dovecot.conf made of every piece the syntax renders."""
    return (
        syntax.header()
        + syntax.maildir("~/Maildir")
        + syntax.sieve_plugin("lda")
        + syntax.sieve_plugin("lmtp")
        + syntax.sieve_scripts("~/sieve", "~/.dovecot.sieve", "/etc/dovecot/sieve-before.d/")
        + syntax.static_passdb()
        + syntax.passwd_file_passdb("/etc/dovecot/passwd")
        + syntax.static_userdb("vmail", "vmail", f"/var/vmail/{syntax.username()}")
        + syntax.allow_cleartext()
        + "service lmtp {\n"
        + syntax.inet_listener("lmtp", 24)
        + "}\n"
    )


def rendered_24() -> dict[str, str]:
    """Gives every 2.4 text the tests and the examples use, by name."""
    texts = {"pieces": every_piece(V24)}
    texts["mta"] = mta_conf(V24)
    texts["lda"] = lda_conf(ROOT, V24)
    texts["sieve-tools"] = private_config(ROOT, (2, 4))
    texts["lmtp"] = lmtp_conf(ROOT, 24, V24)
    texts["lmtp-filter"] = lmtp_conf(ROOT, 24, V24) + V24.lmtp_filter(str(ROOT))
    texts["managesieve"] = managesieve_config(ROOT, 4190, V24)
    texts["imapsieve"] = imapsieve_server_conf(ROOT, 143, V24)
    texts |= {f"examples {p.name}": p.read_text() for p in (EXAMPLES / "dovecot/2.4").iterdir()}
    return texts


def mta_conf(syntax: DovecotSyntax) -> str:
    """Gives tests/mta.py's dovecot.conf and its snippets for syntax, as one text."""
    folder = EXAMPLES / "dovecot" / syntax.examples
    snippets = {p.name: p.read_text() for p in folder.glob("90-authsieve-[lm]*.conf")}
    return dovecot_conf(ROOT, snippets, syntax) + "".join(snippets.values())


def test_2_4_text_uses_only_settings_dovecot_2_4_knows() -> None:
    for name, text in rendered_24().items():
        unknown = set(setting_names(text)) - NAMES_24
        assert not unknown, f"{name}: {sorted(unknown)}"


@pytest.mark.parametrize("old", ONLY_23)
def test_2_4_text_has_no_setting_only_2_3_knows(old: str) -> None:
    for name, text in rendered_24().items():
        assert old not in setting_names(text), f"{name} has {old!r}"
        assert not re.search(rf"^{old}\b", settings_text(text), re.MULTILINE), name


def test_setting_names_tell_2_4_plugin_lists_from_2_3_plugin_settings() -> None:
    assert setting_names(V24.sieve_plugin("lda")) == [
        "protocol",
        "mail_plugins",
        "mail_plugins/sieve",
    ]
    names = setting_names(V23.sieve_scripts("~/s", "~/.s", "/b/"))
    assert names == ["plugin", "sieve", "sieve_before"]
    text = "sieve_global_extensions {\n  vnd.dovecot.pipe = yes\n}\nsieve_pipe_bin_dir = /x\n"
    assert setting_names(text) == [
        "sieve_global_extensions",
        "sieve_global_extensions/vnd.dovecot.pipe",
        "sieve_pipe_bin_dir",
    ]


def test_the_imapsieve_examples_name_the_same_script_folders_and_program_dir() -> None:
    def paths(version: str) -> list[str]:
        text = (EXAMPLES / "dovecot" / version / "90-authsieve-imapsieve.conf").read_text()
        return sorted(set(re.findall(r"(?:file:)?(/[\w./-]+)", settings_text(text))))

    assert (
        paths("2.3")
        == paths("2.4")
        == [
            "/etc/dovecot/sieve-imapsieve/authsieve-learn.sieve",
            "/usr/local/lib/authsieve/sieve-pipe",
        ]
    )
    names = setting_names((EXAMPLES / "dovecot/2.4/90-authsieve-imapsieve.conf").read_text())
    assert names.count("imapsieve_from") == 2 and names.count("cause") == 3


def test_2_4_config_versions_come_first() -> None:
    names_first = ("pieces", "mta", "lda", "sieve-tools", "lmtp", "lmtp-filter", "managesieve")
    for name in (*names_first, "imapsieve"):
        names = setting_names(rendered_24()[name])
        assert names[:2] == ["dovecot_config_version", "dovecot_storage_version"], name


def test_2_4_sieve_scripts_are_named_storages_of_type_before_and_personal() -> None:
    text = V24.sieve_scripts("~/sieve", "~/.dovecot.sieve", "/etc/dovecot/sieve-before.d/")
    assert text == (
        "sieve_script personal {\n  driver = file\n  path = ~/sieve\n"
        "  active_path = ~/.dovecot.sieve\n}\n"
        "sieve_script authsieve {\n  type = before\n  path = /etc/dovecot/sieve-before.d/\n}\n"
    )
    assert V24.sieve_plugin("lda") == "protocol lda {\n  mail_plugins {\n    sieve = yes\n  }\n}\n"
    assert V24.maildir("~/Maildir") == "mail_driver = maildir\nmail_path = ~/Maildir\n"


def test_2_3_text_is_what_2_3_reads() -> None:
    text = every_piece(V23)
    assert "dovecot_config_version" not in text and "sieve_script" not in text
    assert "mail_location = maildir:~/Maildir\n" in text
    assert "  sieve_before = /etc/dovecot/sieve-before.d/\n" in text
    assert "mail_plugins = $mail_plugins sieve" in text
    assert V23.username() == "%n" and V24.username() == "%{user | username}"
    assert V23.lda_home_args("/h") == [] and V24.lda_home_args("/h") == ["-o", "mail_home=/h"]


def test_the_2_4_examples_differ_from_2_3_only_where_the_syntax_changed() -> None:
    def settings(version: str, name: str) -> list[str]:
        text = (EXAMPLES / "dovecot" / version / name).read_text()
        return [line for line in text.splitlines() if line.strip() and line[0] != "#"]

    for same in ("90-authsieve-auth.conf", "90-authsieve-mailboxes.conf"):
        assert settings("2.3", same) == settings("2.4", same)
    assert (
        settings("2.4", "90-authsieve-lda.conf")[:3] == settings("2.3", "90-authsieve-lda.conf")[:3]
    )


def test_installed_version_is_read_from_dovecot() -> None:
    if not os.access("/usr/sbin/dovecot", os.X_OK):
        pytest.skip("Dovecot is not installed")
    said = subprocess.run(["/usr/sbin/dovecot", "--version"], capture_output=True, text=True)
    major, minor = said.stdout.split(".")[:2]
    assert dovecot_version() == (int(major), int(minor))
    assert DovecotSyntax().examples == f"{major}.{minor}"


@pytest.mark.skipif(
    dovecot_version() < (2, 4) or not os.access(DOVECONF, os.X_OK),
    reason="Dovecot 2.4 is not installed (Debian 13's dovecot-core); the text checks above ran",
)
def test_doveconf_2_4_reads_every_rendered_config(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    # tests/mta.py's file includes the example snippets: they lie next to it, as there.
    snippets = {p.name: p.read_text() for p in (EXAMPLES / "dovecot/2.4").glob("*.conf")}
    for name, text in snippets.items():
        (tmp_path / name).write_text(text)
    lda_snippets = {n: t for n, t in snippets.items() if re.match(r"90-authsieve-[lm]", n)}
    texts = {
        "mta": dovecot_conf(ROOT, lda_snippets, V24),
        "lmtp-filter-example": lmtp_conf(tmp_path, 24, V24) + "!include 90-authsieve-filter.conf\n",
        "lda": lda_conf(tmp_path, V24),
        "sieve-tools": private_config(tmp_path, (2, 4)),
        "lmtp": lmtp_conf(tmp_path, 24, V24),
        "lmtp-filter": lmtp_conf(tmp_path, 24, V24) + V24.lmtp_filter(str(tmp_path)),
        "managesieve": managesieve_config(tmp_path, 4190, V24),
        "imapsieve": imapsieve_server_conf(tmp_path, 143, V24),
    }
    for name, text in texts.items():
        conf = tmp_path / f"{name}.conf"
        conf.write_text(text.replace(str(ROOT), str(tmp_path)))
        proc = subprocess.run([DOVECONF, "-c", str(conf), "-n"], capture_output=True, text=True)
        assert proc.returncode == 0, f"{name}: {proc.stderr}"


def test_mta_hostname_is_in_its_config() -> None:
    assert f"hostname = {HOSTNAME}\n" in mta_conf(V24)


def test_the_lmtp_filter_settings_in_2_4_are_lists_and_blocks_and_in_2_3_a_plugin_section() -> None:
    names_24 = setting_names(V24.lmtp_filter("/r"))
    names_23 = setting_names(V23.lmtp_filter("/r"))
    for name in (
        "sieve_plugins/sieve_extprograms",
        "sieve_global_extensions/vnd.dovecot.filter",
        "sieve_global_extensions/editheader",
        "mail_plugins/sieve",
        "sieve_filter_bin_dir",
        "sieve_filter_exec_timeout",
        "sieve_script",
    ):
        assert name in names_24, name
    assert "plugin" not in names_24 and "plugin" in names_23
    assert {"sieve_plugins", "sieve_global_extensions", "sieve_before"} <= set(names_23)
    # The tests' paths, in both: nothing of the server's own left.
    for syntax in (V23, V24):
        text = settings_text(syntax.lmtp_filter("/r"))
        assert "~" not in text and "/etc/dovecot" not in text and "/usr/local" not in text
        assert "/r/filter-bin" in text and "/r/before-lmtp/" in text


def test_setting_names_read_dotted_names_in_any_boolean_list() -> None:
    text = "sieve_global_extensions {\n  vnd.dovecot.filter = yes\n}\nsieve_filter_bin_dir = /x\n"
    assert setting_names(text) == [
        "sieve_global_extensions",
        "sieve_global_extensions/vnd.dovecot.filter",
        "sieve_filter_bin_dir",
    ]
