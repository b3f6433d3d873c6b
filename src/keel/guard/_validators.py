"""Ready validators for the dangerous argument kinds: read-only SQL, allow-listed shell
commands, paths inside a root, URLs to allowed hosts.

Each validator is built once (a configuration that makes no sense raises
:class:`keel.ConfigError` naming the part) and used two ways:

- standalone: ``check(value)`` returns ``None`` or the reason it is refused;
  ``validate(value)`` returns the safe, normalised value or raises :class:`ArgumentRefused`;
- on a tool: ``@tool(validators=[ReadOnlySQL().on("sql")])``; a refused argument never
  reaches the function, the model gets the ``rejected_arguments`` observation with the reason.

All of them fail closed: what cannot be parsed or understood is refused.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from keel.core import ConfigError, UserError

#: The longest argument any validator here looks at; longer ones are refused unparsed.
MAX_ARGUMENT_CHARS = 100_000


def _show(value: str, limit: int = 80) -> str:
    """``value`` quoted for a message, cut to ``limit`` characters (refused values can be
    huge, and the message goes to the model and the journal)."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"… ({len(value)} chars)"


class ArgumentRefused(UserError, ValueError):
    """A validator refused an argument; ``reason`` says why (and is what the model sees).

    A :class:`keel.UserError` (bad input, the message says what to change) and a
    ``ValueError`` too, so raising it inside a tool validator rejects the call."""

    def __init__(self, reason: str, *, argument: str | None = None) -> None:
        prefix = f"{argument}: " if argument else ""
        super().__init__(prefix + reason)
        self.reason = reason
        self.argument = argument


class ArgumentCheck(ABC):
    """The shape every validator here shares: ``check``, ``validate`` and ``on``."""

    #: What a refused argument's message starts with (e.g. "SQL").
    kind: ClassVar[str] = "argument"
    #: Longer values are refused before any parsing.
    max_chars: int | None = MAX_ARGUMENT_CHARS

    @abstractmethod
    def _refusal(self, value: str) -> str | None:
        """The reason ``value`` (a str) is refused, or None."""

    def check(self, value: Any) -> str | None:
        """``None`` if ``value`` is allowed, else the reason (one sentence with the fix)."""
        if not isinstance(value, str):
            return f"{self.kind} must be text, not {type(value).__name__}"
        if self.max_chars is not None and len(value) > self.max_chars:
            return (f"{self.kind} is {len(value)} characters, over the "
                    f"{self.max_chars}-character limit")
        if "\x00" in value:
            return f"{self.kind} contains a NUL byte"
        return self._refusal(value)

    def validate(self, value: Any) -> Any:
        """``value`` if allowed (subclasses return a normalised form), else raise
        :class:`ArgumentRefused`."""
        reason = self.check(value)
        if reason is not None:
            raise ArgumentRefused(reason)
        return value

    def on(self, *names: str) -> Callable[[Any], str | None]:
        """A tool validator (``@tool(validators=[...])``) checking the named arguments.

        An argument whose value is ``None`` (an optional one left out) passes; a list or
        tuple is checked item by item. Naming an argument the tool does not have raises
        :class:`keel.ConfigError` when the tool is first called."""
        if not names or not all(isinstance(n, str) and n.isidentifier() for n in names):
            raise ConfigError("on", f"name the tool arguments to check, e.g. .on('sql'), "
                              f"not {names!r}")

        def validator(args: Any) -> str | None:
            for name in names:
                if not hasattr(args, name):
                    raise ConfigError(
                        "on", f"{type(self).__name__} was told to check argument {name!r}, "
                        f"which the tool does not have (its arguments: "
                        f"{', '.join(getattr(args, '__dict__', {}))})")
                value = getattr(args, name)
                items = value if isinstance(value, list | tuple) else [value]
                for item in items:
                    if item is None:
                        continue
                    reason = self.check(item)
                    if reason is not None:
                        return f"{name}: {reason}"
            return None

        validator.__name__ = f"{type(self).__name__}.on({', '.join(names)})"
        return validator


# ------------------------------------------------------------------------------------ SQL


def _sql_forbidden() -> tuple[type[Any], ...]:
    from sqlglot import exp

    names = ("Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "TruncateTable",
             "Grant", "Revoke", "Attach", "Detach", "Pragma", "Copy", "Command", "Set", "Into",
             "Lock", "Use", "Kill", "Analyze", "Transaction", "Commit", "Rollback", "LoadData",
             "Cache", "Uncache", "Refresh", "Comment", "Install", "Export")
    return tuple(getattr(exp, n) for n in names if hasattr(exp, n))


#: Functions with effects or a way out of the database (sleep, files, extensions,
#: sequences, settings, other servers), refused by default in a read-only query.
DEFAULT_DENIED_SQL_FUNCTIONS = frozenset({
    "pg_sleep", "pg_sleep_for", "pg_sleep_until", "sleep", "benchmark", "waitfor",
    "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "lo_import",
    "lo_export", "lo_from_bytea", "lo_put", "pg_terminate_backend", "pg_cancel_backend",
    "pg_reload_conf", "pg_rotate_logfile", "set_config", "nextval", "setval",
    "dblink", "dblink_exec", "query_to_xml", "load_extension", "readfile", "writefile",
    "edit", "fts3_tokenizer", "load_file", "sys_exec", "sys_eval", "xp_cmdshell",
    "openrowset", "opendatasource", "read_csv", "read_csv_auto", "read_parquet", "read_json",
    "read_json_auto", "read_text", "read_blob", "glob",
})


class ReadOnlySQL(ArgumentCheck):
    """One read-only statement (a SELECT, a set operation of them, VALUES), parsed with
    sqlglot in ``dialect``: more than one statement, any DML or DDL (also inside a CTE),
    ``SELECT … INTO``, ``FOR UPDATE`` locks, PRAGMA, COPY, ATTACH, SET, statements sqlglot
    cannot parse, and the functions in ``denied_functions`` are refused. Statements longer
    than ``max_chars`` or with brackets nested deeper than ``max_depth`` are refused before
    parsing (parse time grows with both)."""

    kind = "SQL"

    def __init__(self, *, dialect: str | None = None,
                 denied_functions: Iterable[str] = DEFAULT_DENIED_SQL_FUNCTIONS,
                 max_chars: int = 20_000, max_depth: int = 50) -> None:
        for field, limit in (("max_chars", max_chars), ("max_depth", max_depth)):
            if not isinstance(limit, int) or limit < 1:
                raise ConfigError(field, f"must be a positive number, not {limit!r}")
        self.max_chars = max_chars
        self.max_depth = max_depth
        try:
            from sqlglot import Dialect
        except ImportError as exc:  # pragma: no cover - a main dependency
            raise ConfigError("ReadOnlySQL", "needs sqlglot: pip install sqlglot") from exc
        try:
            self._dialect = Dialect.get_or_raise(dialect)
        except ValueError as exc:
            raise ConfigError("dialect", f"{dialect!r} is not a SQL dialect sqlglot knows "
                              "(e.g. 'postgres', 'sqlite', 'mysql', 'duckdb')") from exc
        if isinstance(denied_functions, str):
            raise ConfigError("denied_functions", "pass a list of function names, not a str")
        self.dialect = dialect
        self.denied_functions = frozenset(f.lower() for f in denied_functions)
        self._forbidden = _sql_forbidden()

    def _refusal(self, value: str) -> str | None:
        from sqlglot import exp
        from sqlglot.errors import SqlglotError

        if _bracket_depth(value) > self.max_depth:
            return f"SQL is nested more than {self.max_depth} brackets deep"
        try:
            for token in self._dialect.tokenize(value):
                for comment in token.comments:
                    if _hiding(comment):
                        return ("SQL has a comment that could hide or run code (';', a "
                                "nested '/*' or '*/', or MySQL's '/*!'); remove the comment")
            statements = [s for s in self._dialect.parse(value) if s is not None]
        except (SqlglotError, RecursionError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return f"SQL could not be parsed, so it is refused ({first[:120]})"
        if not statements:
            return "SQL is empty: send one SELECT statement"
        if len(statements) > 1:
            return (f"SQL has {len(statements)} statements; send exactly one read-only "
                    "SELECT statement")
        root = statements[0]
        if not isinstance(root, exp.Select | exp.SetOperation | exp.Subquery | exp.Values):
            return (f"only a read-only SELECT is allowed, not {_sql_name(root)}")
        for node in root.walk():
            if isinstance(node, self._forbidden):
                return (f"only a read-only SELECT is allowed; it contains {_sql_name(node)}")
            if isinstance(node, exp.Func):
                fname = (node.name if isinstance(node, exp.Anonymous) else node.sql_name())
                if fname.lower() in self.denied_functions:
                    return f"SQL calls {fname.lower()}(), which is not allowed here"
        return None


def _hiding(comment: str) -> bool:
    """Whether a comment could mean code to some database: a ';' (MySQL's '--' needs a
    space after it, so '--;' is no comment there), nested comment marks (PostgreSQL nests
    block comments, MySQL and SQLite do not), or MySQL's executable '/*! ... */'."""
    return ";" in comment or "/*" in comment or "*/" in comment or comment.startswith("!")


def _bracket_depth(text: str) -> int:
    """The deepest nesting of round brackets (quotes ignored: an overestimate is safe)."""
    depth = deepest = 0
    for ch in text:
        if ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
    return deepest


def _sql_name(node: Any) -> str:
    names = {"Into": "SELECT … INTO", "Lock": "a row lock (FOR UPDATE/SHARE)",
             "TruncateTable": "TRUNCATE", "Command": "a statement keel cannot check"}
    name = type(node).__name__
    return names.get(name, name.upper())


# ---------------------------------------------------------------------------------- shell

_CHAIN_OPS = frozenset({";", "&&", "||", "&", ";;", "\n"})
_PIPE_OPS = frozenset({"|", "|&"})
#: Programs that run other programs or code: allow-listing one allows everything.
_RUNNERS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "fish", "csh", "tcsh", "env",
                      "xargs", "sudo", "su", "doas", "eval", "exec", "nohup", "timeout",
                      "python", "python3", "perl", "ruby", "node", "php", "busybox", "awk",
                      "nice", "strace", "command", "builtin", "time", "watch", "ssh"})


class AllowedCommands(ArgumentCheck):
    """A shell command whose program is in ``programs`` (exact names: ``ls`` does not allow
    ``/bin/ls`` unless listed), split with :mod:`shlex`. Chaining (``;``, ``&&``, ``||``,
    ``&``, newlines), pipes and redirection are refused unless allowed; then every command
    in the chain must be allowed too. Substitution and expansion (``$(…)``, backticks,
    ``<(…)``, ``$VAR``, ``${…}``: any ``$``) are always refused. ``validate`` returns the
    argv list (of the single command) to pass to ``subprocess.run`` without a shell."""

    kind = "command"

    def __init__(self, programs: Iterable[str], *, allow_chaining: bool = False,
                 allow_pipes: bool = False, allow_redirects: bool = False,
                 allow_runners: bool = False) -> None:
        if isinstance(programs, str):
            raise ConfigError("programs", "pass a list of program names, not one str")
        progs = frozenset(programs)
        if not progs:
            raise ConfigError("programs", "the allow-list is empty, so every command would be "
                              "refused; name the programs the tool may run")
        for p in progs:
            if not isinstance(p, str) or not p or any(c.isspace() for c in p) or \
                    any(c in p for c in ";&|<>$`'\"\\(){}*?"):
                raise ConfigError("programs", f"{p!r} is not a program name")
        runners = sorted(p for p in progs if os.path.basename(p) in _RUNNERS)
        if runners and not allow_runners:
            raise ConfigError("programs", f"{', '.join(runners)} can run any other program, "
                              "so allowing it allows everything; remove it, or pass "
                              "allow_runners=True if that is really meant")
        self.programs = progs
        self.allow_chaining = allow_chaining
        self.allow_pipes = allow_pipes
        self.allow_redirects = allow_redirects

    def _refusal(self, value: str) -> str | None:
        return self._split(value)[1]

    def validate(self, value: Any) -> list[str]:
        """The argv of an allowed single command; refused otherwise (also for a chain,
        which needs a shell: run that yourself after ``check``)."""
        reason = self.check(value)
        if reason is not None:
            raise ArgumentRefused(reason)
        commands, _ = self._split(value)
        if len(commands) != 1:
            raise ArgumentRefused("a chain of commands has no single argv; run it in a shell "
                                  "after check()")
        return commands[0]

    def _split(self, value: str) -> tuple[list[list[str]], str | None]:
        if "$" in value or "`" in value or "<(" in value or ">(" in value:
            return [], ("substitution and expansion ($(...), backticks, $VAR, ${...}) are "
                        "not allowed; write the values out")
        if any((ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127 for c in value):
            return [], "the command contains control characters"
        if ("\n" in value or "\r" in value) and not self.allow_chaining:
            return [], "a command must be one line (a newline starts another command)"
        lexer = shlex.shlex(value.replace("\r", "\n"), posix=True, punctuation_chars=";&|<>()")
        lexer.whitespace = " \t"
        lexer.whitespace_split = True
        lexer.commenters = ""
        try:
            tokens = list(lexer)
        except ValueError as exc:
            return [], f"the command cannot be split ({exc}); check its quotes"
        commands: list[list[str]] = [[]]
        for tok in tokens:
            if tok and all(c in ";&|<>()\n" for c in tok):
                reason = self._operator(tok)
                if reason is not None:
                    return [], reason
                if tok in _CHAIN_OPS or tok in _PIPE_OPS or "\n" in tok:
                    commands.append([])
                continue
            commands[-1].append(tok)
        commands = [c for c in commands if c]
        if not commands:
            return [], "the command is empty"
        for argv in commands:
            if argv[0] not in self.programs:
                return [], (f"program {_show(argv[0])} is not allowed; allowed: "
                            f"{', '.join(sorted(self.programs))}")
        return commands, None

    def _operator(self, tok: str) -> str | None:
        if "(" in tok or ")" in tok:
            return "subshells and grouping are not allowed"
        if tok in _PIPE_OPS:
            return None if self.allow_pipes else "pipes (|) are not allowed"
        if tok in _CHAIN_OPS or "\n" in tok:
            return None if self.allow_chaining else (
                f"chaining commands ({tok.strip() or 'newline'}) is not allowed")
        if "<" in tok or ">" in tok:
            return None if self.allow_redirects else "redirection (<, >) is not allowed"
        return f"shell operator {_show(tok)} is not allowed"


# ---------------------------------------------------------------------------------- paths


class PathInRoot(ArgumentCheck):
    """A path that, resolved (``..`` and symlinks followed), stays inside ``root``: relative
    paths are taken from ``root``; absolute ones must point inside it. ``validate`` returns
    the resolved :class:`~pathlib.Path` to open. (A symlink created after the check can
    still redirect the open: keep attackers from writing inside ``root``.)"""

    kind = "path"
    max_chars = 4096  # Linux's PATH_MAX

    def __init__(self, root: str | os.PathLike[str], *, must_exist: bool = False) -> None:
        try:
            real = Path(root).expanduser().resolve(strict=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ConfigError("root", f"{os.fspath(root)!r} does not exist or cannot be "
                              f"resolved ({exc})") from exc
        if not real.is_dir():
            raise ConfigError("root", f"{os.fspath(root)!r} is not a directory")
        self.root = real
        self.must_exist = must_exist

    def _refusal(self, value: str) -> str | None:
        return self._resolve(value)[1]

    def validate(self, value: Any) -> Path:
        reason = self.check(value)
        if reason is not None:
            raise ArgumentRefused(reason)
        return self._resolve(value)[0]

    def _resolve(self, value: str) -> tuple[Path, str | None]:
        if not value.strip():
            return self.root, "the path is empty"
        try:
            resolved = (self.root / value).resolve(strict=self.must_exist)
        except FileNotFoundError:
            return self.root, f"{_show(value)} does not exist"
        except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, bad names
            return self.root, f"{_show(value)} cannot be resolved ({type(exc).__name__})"
        if resolved != self.root and not resolved.is_relative_to(self.root):
            return self.root, (f"{_show(value)} is outside the allowed directory; use a path "
                               "relative to it without '..'")
        return resolved, None


# ----------------------------------------------------------------------------------- URLs

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_DEFAULT_PORTS = {"https": 443, "http": 80, "wss": 443, "ws": 80, "ftp": 21}


def _ascii_host(host: str) -> str | None:
    """The host lower-cased, IDNA (punycode) encoded, without a trailing dot; None if it is
    not a valid DNS name."""
    host = host.strip().rstrip(".").lower()
    if not host or len(host) > 253:
        return None
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return None
    labels = ascii_host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    if re.fullmatch(r"[0-9]+|0x[0-9a-f]*", labels[-1]):
        return None  # a numeric last label is an IP in disguise (2130706433, 127.1, 0x7f.1)
    return ascii_host


def _split_host(netloc: str) -> str:
    """The host part of a netloc without user info (``[v6]`` keeps its brackets)."""
    if netloc.startswith("["):
        return netloc[:netloc.find("]") + 1]
    return netloc.rsplit(":", 1)[0] if ":" in netloc else netloc


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


class AllowedURLs(ArgumentCheck):
    """An absolute URL whose scheme is in ``schemes`` (https only by default) and whose host
    matches ``hosts``: ``"example.com"`` matches that host exactly, ``"*.example.com"`` its
    subdomains (not the apex). Hosts are compared IDNA-normalised (``bücher.de`` is
    ``xn--bcher-kva.de``). Refused: user info (``https://ok.com@evil.com``), IP literals
    (unless the IP is listed in ``hosts``), ports other than the scheme's default (unless in
    ``ports``), backslashes, whitespace and control characters. ``validate`` returns the URL
    with its scheme and host normalised (lower case, IDNA): fetch that one, so the client
    reaches the host that was checked."""

    kind = "URL"
    max_chars = 8192

    def __init__(self, hosts: Iterable[str], *, schemes: Iterable[str] = ("https",),
                 ports: Iterable[int] = ()) -> None:
        if isinstance(hosts, str):
            raise ConfigError("hosts", "pass a list of host names, not one str")
        self.exact: set[str] = set()
        self.suffixes: set[str] = set()
        self.ips: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
        for pattern in hosts:
            self._add_host(pattern)
        if not (self.exact or self.suffixes or self.ips):
            raise ConfigError("hosts", "the allow-list is empty, so every URL would be "
                              "refused; name the hosts the tool may reach")
        if isinstance(schemes, str):
            raise ConfigError("schemes", "pass a list of schemes, e.g. ['https']")
        self.schemes = frozenset(s.lower() for s in schemes)
        if not self.schemes or not all(re.fullmatch(r"[a-z][a-z0-9+.-]*", s)
                                       for s in self.schemes):
            raise ConfigError("schemes", f"{sorted(self.schemes)!r} must be non-empty URL "
                              "schemes such as 'https'")
        self.ports = frozenset(ports)
        if not all(isinstance(p, int) and 0 < p < 65536 for p in self.ports):
            raise ConfigError("ports", f"{sorted(self.ports)!r} must be TCP ports 1-65535")

    def validate(self, value: Any) -> str:
        from urllib.parse import urlsplit, urlunsplit

        reason = self.check(value)
        if reason is not None:
            raise ArgumentRefused(reason)
        parts = urlsplit(str(value))
        host = _split_host(parts.netloc)
        if not host.startswith("["):
            host = _ascii_host(host) or host
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        return urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query,
                           parts.fragment))

    def _add_host(self, pattern: Any) -> None:
        if not isinstance(pattern, str):
            raise ConfigError("hosts", f"{pattern!r} is not a host name")
        ip = _ip(pattern)
        if ip is not None:
            self.ips.add(ip)
            return
        wildcard = pattern.startswith("*.")
        host = _ascii_host(pattern[2:] if wildcard else pattern)
        if host is None or "*" in pattern[2 if wildcard else 0:]:
            raise ConfigError("hosts", f"{pattern!r} is not a host name (write 'example.com' "
                              "or '*.example.com', without scheme, port or path)")
        (self.suffixes if wildcard else self.exact).add(host)

    def _refusal(self, value: str) -> str | None:
        from urllib.parse import urlsplit

        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
            return "the URL contains whitespace or control characters"
        if "\\" in value:
            return "the URL contains a backslash"
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError as exc:
            return f"the URL cannot be parsed ({exc})"
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            return (f"scheme {_show(scheme or '(none)')} is not allowed; use "
                    f"{' or '.join(sorted(self.schemes))}")
        if not parts.netloc:
            return "the URL has no host; send an absolute URL like https://host/path"
        if "@" in parts.netloc:
            return "user info (name@ or name:password@) in a URL is not allowed"
        if port is not None and port not in self.ports and port != _DEFAULT_PORTS.get(scheme):
            return f"port {port} is not allowed"
        return self._host_refusal(_split_host(parts.netloc))

    def _host_refusal(self, netloc_host: str) -> str | None:
        ip = _ip(netloc_host) if netloc_host.startswith("[") or \
            re.fullmatch(r"[0-9.]+", netloc_host) else None
        if ip is not None:
            return None if ip in self.ips else (
                f"IP address {netloc_host} is not allowed; use an allowed host name")
        if netloc_host.startswith("["):
            return "the URL's host cannot be parsed"
        host = _ascii_host(netloc_host)
        if host is None:
            return f"host {_show(netloc_host)} is not a valid host name"
        if host in self.exact or any(host.endswith("." + s) for s in self.suffixes):
            return None
        return f"host {_show(host)} is not in the allowed hosts"

