"""The tests' private Dovecot configurations, written in the installed Dovecot's syntax.

Debian 12 ships Dovecot 2.3 (Pigeonhole 0.5), Debian 13 Dovecot 2.4.1 (Pigeonhole
2.4), whose configuration syntax changed: a 2.3 file makes 2.4 refuse to start, and
the other way round.  Every private dovecot.conf of the tests (tests/mta.py, the
LMTP, ManageSieve, dovecot-lda and doveadm tests) is built from the pieces below,
so that the differences live in one place.  Sources, all in Dovecot's documentation
(doc.dovecot.org):

- "Upgrading Dovecot CE from 2.3 to 2.4" (installation/upgrade/2.3-to-2.4): the
  first setting MUST be ``dovecot_config_version``, ``dovecot_storage_version`` is
  required; the ``plugin { }`` section is gone (plugin settings are global);
  ``mail_location`` (and the userdb ``mail`` field) is split into ``mail_*``
  settings; ``disable_plaintext_auth`` is replaced by ``auth_allow_cleartext``;
  the one-letter variables are gone (``%n`` is ``%{user | username}``, ``%u`` is
  ``%{user}``); the LDA no longer reads ``HOME`` (give ``-o mail_home=$HOME``).
- "Mail Location" (core/config/mail_location): ``mail_driver``, ``mail_path``.
- "Sieve Plugin" (core/plugins/sieve): ``protocol lda { mail_plugins { sieve = yes } }``;
  script storages are ``sieve_script NAME { type = … driver = file path = …
  active_path = … }`` with the types ``personal`` and ``before`` (2.3's ``sieve`` and
  ``sieve_before``).
- "Static" and "passwd-file" auth databases (core/config/auth/databases/): named
  ``passdb static { fields { nopassword = yes } }``, ``userdb static { fields { uid
  = … gid = … home = … } }``, ``passdb passwd-file { passwd_file_path = … }``.
- dovecot-lda(1) of 2.4.1: ``lda_mailbox_autocreate`` keeps its name.
- "Service Configuration" (core/config/service) and dovecot/documentation#1350: an
  ``inet_listener`` has no ``address`` in 2.4 (2.4.1's doveconf refuses it); the global
  ``listen`` (the same name in 2.3) says where every listener listens.
- "Pigeonhole Sieve Extprograms Plugin" (core/plugins/sieve_extprograms,
  https://doc.dovecot.org/latest/core/plugins/sieve_extprograms.html): the plugin
  and the extensions are boolean lists, ``sieve_plugins { sieve_extprograms = yes }``
  and ``sieve_global_extensions { vnd.dovecot.filter = yes }``; the program settings
  keep their 2.3 names, ``sieve_filter_bin_dir`` and ``sieve_filter_exec_timeout``.
"""

from __future__ import annotations

import re
from pathlib import Path

from sieve.pigeonhole import dovecot_version

__all__ = ["DovecotSyntax", "dovecot_version"]

# Setting and block names that a 2.4 configuration of ours may use (see the sources above,
# plus the names that 2.4 kept from 2.3: base_dir, state_dir, log_path, ssl, protocols, …).
NAMES_24 = frozenset(
    (
        "dovecot_config_version",
        "dovecot_storage_version",
        "mail_driver",
        "mail_path",
        "mail_home",
        "mail_uid",
        "mail_gid",
        "first_valid_uid",
        "mail_plugins",
        "mail_plugins/sieve",
        # examples/dovecot/2.4/90-authsieve-filter.conf ("sieve extprograms" plugin page; the
        # lists themselves are below, with issue 17's)
        "sieve_global_extensions/vnd.dovecot.filter",
        "sieve_global_extensions/editheader",
        "sieve_filter_bin_dir",
        "sieve_filter_exec_timeout",
        "protocols",
        "protocol",
        "listen",
        "ssl",
        "base_dir",
        "state_dir",
        "log_path",
        "stats_writer_socket_path",
        "hostname",
        "postmaster_address",
        "recipient_delimiter",
        "lda_mailbox_autocreate",
        "lda_mailbox_autosubscribe",
        "namespace",
        "inbox",
        "mailbox",
        "special_use",
        "auto",
        "separator",
        "prefix",
        "sieve_script",
        "type",
        "driver",
        "path",
        "active_path",
        "name",
        "passdb",
        "userdb",
        "fields",
        "nopassword",
        "passwd_file_path",
        "default_password_scheme",
        "uid",
        "gid",
        "home",
        "service",
        "inet_listener",
        "unix_listener",
        "port",
        "mode",
        "user",
        "group",
        "auth_allow_cleartext",
        "auth_mechanisms",
        "auth_failure_delay",
        "default_internal_user",
        "default_internal_group",
        "default_login_user",
        # Learning from moves (issue 17): "IMAPSieve Plugin" (core/plugins/imap_sieve:
        # the imap_sieve mail plugin, ``mailbox NAME`` and ``imapsieve_from NAME`` filter
        # blocks holding a ``sieve_script`` with ``cause``), "Sieve Extprograms Plugin"
        # (core/plugins/sieve_extprograms: the ``sieve_plugins`` and
        # ``sieve_global_extensions`` boolean lists, ``sieve_pipe_bin_dir``).
        "mail_plugins/imap_sieve",
        "sieve_plugins",
        "sieve_plugins/sieve_imapsieve",
        "sieve_plugins/sieve_extprograms",
        "sieve_global_extensions",
        "sieve_global_extensions/vnd.dovecot.pipe",
        "sieve_pipe_bin_dir",
        "imapsieve_from",
        "cause",
        # The LMTP filter (issue 18, examples/dovecot/2.4/90-authsieve-filter.conf).
        "sieve_global_extensions/vnd.dovecot.filter",
        "sieve_global_extensions/editheader",
        "sieve_filter_bin_dir",
        "sieve_filter_exec_timeout",
    )
)
# Boolean-list blocks of 2.4: a name inside one is given with the list's name in front.
BOOLEAN_LISTS = ("mail_plugins", "sieve_plugins", "sieve_global_extensions", "sieve_extensions")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "dovecot"
# The paths of 90-authsieve-filter.conf, by version, and where the LMTP filter tests put them.
FILTER_PATHS = {
    "2.3": {
        "/etc/dovecot/sieve-before.d/": "{root}/before-lmtp/",
        "/usr/local/lib/authsieve/sieve-filter": "{root}/filter-bin",
        "file:~/sieve;active=~/.dovecot.sieve": "file:{root}/home/sieve;"
        + "active={root}/home/.dovecot.sieve",
    },
    "2.4": {
        "/etc/dovecot/sieve-before.d/": "{root}/before-lmtp/",
        "/usr/local/lib/authsieve/sieve-filter": "{root}/filter-bin",
        "path = ~/sieve\n": "path = {root}/home/sieve\n",
        "active_path = ~/.dovecot.sieve": "active_path = {root}/home/.dovecot.sieve",
    },
}
# Names only 2.3 knows: 2.4 refuses a file that has any of them ("sieve" at the top level is
# 2.3's plugin setting; inside 2.4's mail_plugins { } list it is "mail_plugins/sieve").
# "address" is 2.3's listener address (2.4: listen, see DovecotSyntax.inet_listener).
ONLY_23 = (
    "mail_location",
    "sieve_before",
    "sieve",
    "plugin",
    "disable_plaintext_auth",
    "address",
    "imapsieve_mailbox1_name",
    "imapsieve_mailbox1_before",
    "address",
)


def settings_text(text: str) -> str:
    """Gives a dovecot.conf text without its comments and blank lines."""
    lines = (line.split("#", 1)[0].rstrip() for line in text.splitlines())
    return "\n".join(line for line in lines if line.strip())


def setting_names(text: str) -> list[str]:
    """Gives the setting and block names of a dovecot.conf text, in order.

    A name inside a boolean-list block (2.4's ``mail_plugins { sieve = yes }``,
    ``sieve_global_extensions { vnd.dovecot.filter = yes }``) is given with the list's
    name in front: ``mail_plugins/sieve``.
    """
    names: list[str] = []
    blocks: list[str] = []
    for line in settings_text(text).splitlines():
        line = line.strip()
        if line == "}":
            blocks.pop()
            continue
        in_list = bool(blocks) and blocks[-1] in BOOLEAN_LISTS
        pattern = (
            r"([A-Za-z_][\w.-]*)\s*(=)" if in_list else r"([A-Za-z_][\w-]*)\s*(=|\{|[^\s={]+\s*\{)"
        )
        found = re.match(pattern, line)
        if not found or line.startswith("!"):
            continue
        name = found[1]
        if in_list:
            name = f"{blocks[-1]}/{name}"
        names.append(name)
        if line.endswith("{"):
            blocks.append(found[1])
    return names


class DovecotSyntax:
    """Renders the pieces of a dovecot.conf for one Dovecot version, (2, 3) or (2, 4)."""

    def __init__(self, version: tuple[int, int] | None = None) -> None:
        self.version = version or dovecot_version()

    @property
    def v24(self) -> bool:
        return self.version >= (2, 4)

    @property
    def examples(self) -> str:
        """Gives the folder of examples/dovecot/ for this version: "2.3" or "2.4"."""
        return "2.4" if self.v24 else "2.3"

    def header(self) -> str:
        """Gives the settings that must open the file (none in 2.3)."""
        if not self.v24:
            return ""
        return "dovecot_config_version = 2.4.0\ndovecot_storage_version = 2.4.0\n"

    def maildir(self, path: str) -> str:
        """Gives the settings that put the mailboxes into a Maildir at path."""
        if self.v24:
            return f"mail_driver = maildir\nmail_path = {path}\n"
        return f"mail_location = maildir:{path}\n"

    def username(self) -> str:
        """Gives the variable for the local part of the user name (2.3's %n)."""
        return "%{user | username}" if self.v24 else "%n"

    def sieve_plugin(self, protocol: str) -> str:
        """Gives the protocol block that turns Sieve on for protocol (lda, lmtp)."""
        if self.v24:
            return f"protocol {protocol} {{\n  mail_plugins {{\n    sieve = yes\n  }}\n}}\n"
        return f"protocol {protocol} {{\n  mail_plugins = $mail_plugins sieve\n}}\n"

    def sieve_scripts(self, directory: str, active: str, before: str = "") -> str:
        """Gives where the personal scripts are (directory, active link) and the before dir."""
        if not self.v24:
            lines = [f"  sieve = file:{directory};active={active}\n"]
            if before:
                lines.append(f"  sieve_before = {before}\n")
            return "plugin {\n" + "".join(lines) + "}\n"
        text = (
            "sieve_script personal {\n  driver = file\n"
            f"  path = {directory}\n  active_path = {active}\n}}\n"
        )
        if before:
            text += f"sieve_script authsieve {{\n  type = before\n  path = {before}\n}}\n"
        return text

    def lmtp_filter(self, root: str) -> str:
        """Gives this version's examples 90-authsieve-filter.conf with its paths under root.

        What the LMTP filter tests (tests/test_lmtp_filter.py) add to their LMTP
        server's dovecot.conf: the README's file, only its paths moved.
        """
        text = (EXAMPLES / self.examples / "90-authsieve-filter.conf").read_text()
        for path, ours in FILTER_PATHS[self.examples].items():
            if path not in text:
                raise ValueError(f"90-authsieve-filter.conf ({self.examples}): no {path!r}")
            text = text.replace(path, ours.format(root=root))
        return text

    def static_passdb(self) -> str:
        """Gives a passdb that takes any user with any password (tests only)."""
        if self.v24:
            return "passdb static {\n  fields {\n    nopassword = yes\n  }\n}\n"
        return "passdb {\n  driver = static\n  args = nopassword=y\n}\n"

    def passwd_file_passdb(self, path: str) -> str:
        """Gives a passdb reading plain-text passwords from the passwd-file at path."""
        if self.v24:
            return (
                f"passdb passwd-file {{\n  passwd_file_path = {path}\n"
                "  default_password_scheme = PLAIN\n}\n"
            )
        args = f"scheme=PLAIN username_format=%u {path}"
        return f"passdb {{\n  driver = passwd-file\n  args = {args}\n}}\n"

    def static_userdb(self, uid: str, gid: str, home: str = "") -> str:
        """Gives a userdb giving every user uid, gid and (if given) the home template."""
        if self.v24:
            fields = f"    uid = {uid}\n    gid = {gid}\n" + (
                f"    home = {home}\n" if home else ""
            )
            return f"userdb static {{\n  fields {{\n{fields}  }}\n}}\n"
        args = f"uid={uid} gid={gid}" + (f" home={home}" if home else "")
        return f"userdb {{\n  driver = static\n  args = {args}\n}}\n"

    def allow_cleartext(self) -> str:
        """Gives the setting that allows PLAIN logins without TLS (loopback tests)."""
        return "auth_allow_cleartext = yes\n" if self.v24 else "disable_plaintext_auth = no\n"

    def inet_listener(self, name: str, port: int) -> str:
        """Gives an inet_listener block for name on 127.0.0.1:port (inside a service block).

        2.4 has no ``address`` in a listener: the global ``listen``, set inside the listener,
        overrides it there (doc.dovecot.org "Service Configuration"; Dovecot documentation
        pull request 1350 removed the ``inet_listener_address`` it had listed by mistake).
        """
        where = "listen" if self.v24 else "address"
        return f"  inet_listener {name} {{\n    {where} = 127.0.0.1\n    port = {port}\n  }}\n"

    def doveadm_mail_args(self) -> list[str]:
        """Gives the arguments a doveadm mail command needs to read the configured mail_path.

        2.4 refuses to guess the user: "One of -u, -F, -A or --no-userdb-lookup must be
        provided" (2.4.1); --no-userdb-lookup runs as the calling user, as 2.3 did.
        """
        return ["--no-userdb-lookup"] if self.v24 else []

    def lda_home_args(self, home: str) -> list[str]:
        """Gives dovecot-lda's arguments that give it the home when it runs without -d.

        2.3 reads $HOME; 2.4.0 and 2.4.1 (Debian 13) do not ("Upgrading 2.3 to 2.4": LDA).
        """
        return ["-o", f"mail_home={home}"] if self.v24 else []
