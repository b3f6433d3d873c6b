"""keel.guard's argument validators: hostile inputs refused (classic bypasses included),
ordinary ones accepted, nonsense configurations refused at construction, and a refused
argument seen by the model as the ``rejected_arguments`` observation without the tool
running."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from keel import Agent, ConfigError, MemoryStore, tool
from keel.guard import (
    AllowedCommands,
    AllowedURLs,
    ArgumentRefused,
    PathInRoot,
    ReadOnlySQL,
    TextLimits,
    json_depth,
    json_text_depth,
    undelimit,
)
from keel.testing import ScriptedModel, call

# --------------------------------------------------------------------------------- SQL

HOSTILE_SQL = [
    "select 1; drop table users",
    "select 1;drop table users;",
    "select 1 /* harmless */; delete from users",
    "select 1 -- comment\n; delete from users",
    "select 1; -- trailing\ndelete from users",
    "insert into users values (1)",
    "update users set admin = true",
    "delete from users",
    "merge into t using s on t.a = s.a when matched then delete",
    "create table x (a int)",
    "drop table users",
    "alter table users add column x int",
    "truncate users",
    "grant all on users to public",
    "select * into backup from users",
    "with d as (delete from users returning *) select * from d",
    "with u as (update users set a = 1 returning *) select * from u",
    "with i as (insert into users values (1) returning *) select * from i",
    "select * from users for update",
    "pragma journal_mode = delete",
    "pragma table_info(users)",
    "copy users to '/tmp/out.csv'",
    "set role admin",
    "vacuum",
    "call do_things()",
    "explain analyze delete from users",
    "select pg_sleep(100)",
    "SELECT PG_READ_FILE('/etc/passwd')",
    "select lo_import('/etc/passwd')",
    "select nextval('seq')",
    "select set_config('role', 'admin', false)",
    "select load_extension('evil.so')",
    "selec * from users",
    "",
    "   ;  ",
    "select * from users where name = 'unterminated",
    "begin; delete from users; commit",
    "select 1 union all select 2; delete from users",
    "select 1 /*! ; drop table users */",  # MySQL runs /*! ... */
    "select 1 /*!50000 ; drop table users */",
    "select 1 /* /* */ ; drop table users -- */",  # nested in PostgreSQL only
    "select 1 --; drop table users",  # no comment in MySQL (needs a space after --)
    "select 1 -- harmless ; drop table users",
    "select 1 # ; drop table users",
    "do $$ begin drop table users; end $$",
    "prepare p as delete from users",
    "lock table users",
    "select 1 into temp t",
    "select * from users for share",
]

BENIGN_SQL = [
    "select 1",
    "SELECT id, name FROM users WHERE id = 3",
    "select * from users where name = 'a;b' -- a comment",
    "select /* the count */ count(*) from t -- all of them",
    "select count(*) from orders o join users u on u.id = o.user_id group by u.id",
    "with recent as (select * from orders where ts > now() - interval '1 day') "
    "select * from recent",
    "select 1 union select 2",
    "(select 1)",
    "values (1), (2)",
    "select 1;",
    "select 'delete from users'",
    "select \"delete\" from t",
]


@pytest.mark.parametrize("sql", HOSTILE_SQL)
def test_read_only_sql_refuses_writes_and_tricks(sql: str) -> None:
    check = ReadOnlySQL(dialect="postgres")
    assert check.check(sql) is not None
    with pytest.raises(ArgumentRefused):
        check.validate(sql)


@pytest.mark.parametrize("sql", BENIGN_SQL)
def test_read_only_sql_accepts_queries(sql: str) -> None:
    assert ReadOnlySQL(dialect="postgres").check(sql) is None
    assert ReadOnlySQL().validate(sql) == sql


def test_read_only_sql_reasons_say_what_is_wrong() -> None:
    check = ReadOnlySQL(dialect="sqlite")
    assert "2 statements" in str(check.check("select 1; select 2"))
    assert "DELETE" in str(check.check("with d as (delete from t returning *) select 1"))
    assert "SELECT … INTO" in str(check.check("select * into x from t"))
    assert "could not be parsed" in str(check.check("selec 1"))
    assert "pg_sleep" in str(check.check("select pg_sleep(1)"))
    assert ReadOnlySQL(denied_functions=()).check("select pg_sleep(1)") is None


def test_read_only_sql_configuration_is_checked() -> None:
    with pytest.raises(ConfigError, match="dialect"):
        ReadOnlySQL(dialect="no-such-sql")
    with pytest.raises(ConfigError, match="denied_functions"):
        ReadOnlySQL(denied_functions="pg_sleep")
    with pytest.raises(ConfigError, match="max_chars"):
        ReadOnlySQL(max_chars=0)


# ------------------------------------------------------------------------------- shell

HOSTILE_COMMANDS = [
    "rm -rf /",
    "ls; rm -rf /",
    "ls;rm -rf /",
    "ls && rm -rf /",
    "ls || rm -rf /",
    "ls & rm -rf /",
    "ls\nrm -rf /",
    "ls\rrm -rf /",
    "ls | sh",
    "ls |& sh",
    "ls > /etc/passwd",
    "ls >> ~/.bashrc",
    "ls < /etc/shadow",
    "ls 2>&1",
    "ls &> out",
    "echo $(id)",
    "ls `id`",
    "ls $(rm -rf /)",
    "ls ${HOME}",
    "ls $HOME",
    "ls $IFS",
    "cat <(id)",
    "(rm -rf /)",
    "/bin/rm -rf /",
    "/bin/ls",
    "./ls",
    "PATH=/tmp ls",
    "LD_PRELOAD=evil.so ls",
    "'rm' -rf /",
    "ls 'unterminated",
    "",
    "   ",
    "ls\x00rm",
    "ls\x1b[2J",
    "git log" + "a" * 200_000,
]

BENIGN_COMMANDS = [
    "ls",
    "ls -la /tmp",
    "git log --oneline -n 5",
    "git commit -m 'fix; and | more'",
    'grep "a && b" notes.txt',
    "ls\tdocs",
    "l's' -l",
]


@pytest.mark.parametrize("command", HOSTILE_COMMANDS)
def test_commands_outside_the_allow_list_or_with_shell_tricks_are_refused(command: str) -> None:
    check = AllowedCommands(["ls", "git", "grep"])
    assert check.check(command) is not None
    with pytest.raises(ArgumentRefused):
        check.validate(command)


@pytest.mark.parametrize("command", BENIGN_COMMANDS)
def test_allowed_commands_pass_and_give_an_argv(command: str) -> None:
    check = AllowedCommands(["ls", "git", "grep"])
    assert check.check(command) is None
    argv = check.validate(command)
    assert argv[0] in {"ls", "git", "grep"}


def test_argv_keeps_quoted_operators_as_plain_arguments() -> None:
    check = AllowedCommands(["git"])
    assert check.validate("git commit -m 'a; b'") == ["git", "commit", "-m", "a; b"]


def test_chaining_pipes_and_redirects_only_when_allowed_and_every_program_is_checked() -> None:
    loose = AllowedCommands(["ls", "grep", "wc"], allow_chaining=True, allow_pipes=True,
                            allow_redirects=True)
    assert loose.check("ls | grep x | wc -l") is None
    assert loose.check("ls; wc -l\nls") is None
    assert loose.check("ls > out.txt") is None
    assert "'rm'" in str(loose.check("ls | rm -rf /"))
    assert "'sh'" in str(loose.check("ls && sh"))
    assert loose.check("ls $(rm -rf /)") is not None  # substitution never
    assert loose.check("(ls)") is not None
    with pytest.raises(ArgumentRefused, match="single argv"):
        loose.validate("ls | wc -l")
    pipes_only = AllowedCommands(["ls", "wc"], allow_pipes=True)
    assert pipes_only.check("ls | wc") is None
    assert pipes_only.check("ls; wc") is not None
    assert pipes_only.check("ls > x") is not None


def test_command_allow_list_configuration_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"programs.*empty"):
        AllowedCommands([])
    with pytest.raises(ConfigError, match="programs"):
        AllowedCommands("ls")
    with pytest.raises(ConfigError, match="not a program name"):
        AllowedCommands(["ls; rm"])
    with pytest.raises(ConfigError, match=r"bash.*allow_runners"):
        AllowedCommands(["ls", "bash"])
    with pytest.raises(ConfigError, match="env"):
        AllowedCommands(["/usr/bin/env"])
    assert AllowedCommands(["bash"], allow_runners=True).check("bash x.sh") is None


# ------------------------------------------------------------------------------- paths


@pytest.fixture
def root(tmp_path: Path) -> Path:
    base = tmp_path / "root"
    (base / "docs").mkdir(parents=True)
    (base / "docs" / "a.txt").write_text("a")
    (tmp_path / "secret.txt").write_text("s")
    os.symlink(tmp_path / "secret.txt", base / "escape")
    os.symlink(tmp_path, base / "up")
    os.symlink(base / "docs" / "a.txt", base / "inside")
    os.symlink(base / "loop1", base / "loop2")
    os.symlink(base / "loop2", base / "loop1")
    return base


HOSTILE_PATHS = [
    "../secret.txt",
    "docs/../../secret.txt",
    "docs/../../../../../../etc/passwd",
    "/etc/passwd",
    "escape",
    "up/secret.txt",
    "up",
    "..",
    "docs/a.txt\x00.png",
    "",
    "loop1",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_paths_escaping_the_root_are_refused(root: Path, path: str) -> None:
    check = PathInRoot(root)
    assert check.check(path) is not None
    with pytest.raises(ArgumentRefused):
        check.validate(path)


def test_absolute_path_into_root_through_a_symlinked_tmp_is_refused_when_outside(
        root: Path) -> None:
    check = PathInRoot(root)
    assert check.check(str(root.parent / "secret.txt")) is not None
    assert check.check(str(root.resolve() / "docs" / "a.txt")) is None


@pytest.mark.parametrize("path", ["docs/a.txt", "docs/./a.txt", "docs/../docs/a.txt",
                                  "inside", "new/file.txt", ".", "docs"])
def test_paths_inside_the_root_pass_and_resolve(root: Path, path: str) -> None:
    check = PathInRoot(root)
    assert check.check(path) is None
    resolved = check.validate(path)
    assert resolved.is_relative_to(root.resolve())


def test_must_exist_refuses_missing_files(root: Path) -> None:
    check = PathInRoot(root, must_exist=True)
    assert check.check("docs/a.txt") is None
    assert "does not exist" in str(check.check("docs/missing.txt"))


def test_path_root_configuration_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"root.*does not exist"):
        PathInRoot(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        PathInRoot(tmp_path / "file")


# -------------------------------------------------------------------------------- URLs

HOSTILE_URLS = [
    "https://evil.com/",
    "https://example.com@evil.com/",
    "https://example.com:pass@evil.com/",
    "https://user@example.com/",
    "https://evil.com#@example.com",
    "https://evil.com?@example.com",
    "https://evil.com\\@example.com",
    "https://example.com\\@evil.com",
    "https://example.com.evil.com/",
    "https://evilexample.com/",
    "https://example.com%2eevil.com/",
    "http://example.com/",
    "ftp://example.com/",
    "javascript:alert(1)",
    "file:///etc/passwd",
    "//example.com/path",
    "example.com/path",
    "https:///example.com",
    "https://ex\u0430mple.com/",  # Cyrillic a
    "https://xn--exmple-4nf.com/",
    "https://127.0.0.1/",
    "https://169.254.169.254/latest/meta-data/",
    "https://[::1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://2130706433/",
    "https://0x7f000001/",
    "https://127.1/",
    "https://0177.0.0.1/",
    "https://example.com:8443/",
    "https://example.com:0/",
    "https://example.com:99999/",
    "https://example.com:abc/",
    "https://exa mple.com/",
    "https://example.com/\nHost: evil.com",
    "\thttps://example.com/",
    "https://example.com\x00.evil.com/",
    "https://*.example.org/",
    "https://example.org/",  # only its subdomains are allowed
    "https://a_b.example.org/",
    "",
    "https://" + "a." * 200 + "example.org/",
]

BENIGN_URLS = [
    "https://example.com/",
    "https://example.com",
    "https://EXAMPLE.com/Path?q=1#frag",
    "https://example.com./x",
    "https://example.com:443/x",
    "https://api.example.org/v1",
    "https://a.b.example.org/",
    "https://bücher.example.org/",
    "https://xn--bcher-kva.example.org/",
    "https://example.com/?next=https://evil.com",
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_urls_to_other_hosts_or_with_tricks_are_refused(url: str) -> None:
    check = AllowedURLs(["example.com", "*.example.org"])
    assert check.check(url) is not None, url
    with pytest.raises(ArgumentRefused):
        check.validate(url)


@pytest.mark.parametrize("url", BENIGN_URLS)
def test_urls_to_allowed_hosts_pass(url: str) -> None:
    check = AllowedURLs(["example.com", "*.example.org"])
    assert check.check(url) is None
    normalised = check.validate(url)
    assert check.check(normalised) is None
    assert normalised.isascii() and normalised.split("/")[2] == normalised.split("/")[2].lower()


def test_validate_returns_the_url_with_the_checked_host() -> None:
    check = AllowedURLs(["example.com", "*.example.org"])
    assert check.validate("HTTPS://EXAMPLE.com./Path?Q=1#F") == "https://example.com/Path?Q=1#F"
    assert check.validate("https://bücher.example.org:443/x") == \
        "https://xn--bcher-kva.example.org:443/x"
    assert check.validate("https://example。com/") == "https://example.com/"  # ideographic .


def test_url_options_allow_http_listed_ips_ports_and_idna_hosts() -> None:
    check = AllowedURLs(["10.0.0.5", "bücher.de", "example.com"], schemes=["https", "http"],
                        ports=[8443])
    assert check.check("http://example.com/") is None
    assert check.check("https://10.0.0.5/") is None
    assert check.check("https://10.0.0.6/") is not None
    assert check.check("https://example.com:8443/") is None
    assert check.check("https://example.com:8080/") is not None
    assert check.check("https://xn--bcher-kva.de/") is None
    assert check.check("https://BÜCHER.de/") is None


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"hosts": []}, "hosts"),
    ({"hosts": "example.com"}, "hosts"),
    ({"hosts": ["https://example.com"]}, "hosts"),
    ({"hosts": ["example.com/path"]}, "hosts"),
    ({"hosts": ["example.com:443"]}, "hosts"),
    ({"hosts": ["ex ample.com"]}, "hosts"),
    ({"hosts": ["*"]}, "hosts"),
    ({"hosts": ["ex*.com"]}, "hosts"),
    ({"hosts": [""]}, "hosts"),
    ({"hosts": ["example.com"], "schemes": []}, "schemes"),
    ({"hosts": ["example.com"], "schemes": ["ht tp"]}, "schemes"),
    ({"hosts": ["example.com"], "ports": [0]}, "ports"),
])
def test_url_allow_list_configuration_is_checked(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        AllowedURLs(**kwargs)
    assert info.value.field == field


# ------------------------------------------------------------------------------ limits


def test_text_limits_refuse_or_truncate_long_text() -> None:
    strict = TextLimits(max_chars=10)
    assert strict.check("short") is None
    assert "11 characters" in str(strict.check("x" * 11))
    cut = TextLimits(max_chars=10, on_excess="truncate")
    assert cut.clean("x" * 11) == "x" * 10
    by_bytes = TextLimits(max_chars=None, max_bytes=5, on_excess="truncate")
    assert by_bytes.clean("ééé") == "éé"  # never half a character
    assert TextLimits(max_bytes=5).check("ééé") is not None


def test_text_limits_refuse_or_repair_binary_and_invalid_utf8() -> None:
    strict = TextLimits()
    assert "UTF-8" in str(strict.check(b"ok \xff\xfe"))
    assert "surrogate" in str(strict.check("a\ud800b"))
    assert "control" in str(strict.check("a\x00b"))
    assert "control" in str(strict.check("\x1b[31mred"))
    assert strict.clean(b"caf\xc3\xa9\n\ttab") == "café\n\ttab"
    lenient = TextLimits(on_excess="truncate")
    assert lenient.clean("a\ud800b\x00") == "a\ufffdb\ufffd"
    assert lenient.clean(b"ok \xff") == "ok \ufffd"
    assert TextLimits(max_chars=3, on_excess="truncate").clean("ab\u00e9".encode() + b"xyz") \
        == "abé"
    assert strict.check(12) is not None


def test_deep_json_is_refused_without_recursion_and_fast() -> None:
    limits = TextLimits(max_chars=None, max_depth=20)
    deep = "[" * 500_000 + "]" * 500_000
    start = time.perf_counter()
    with pytest.raises(ArgumentRefused, match="nested over 20"):
        limits.parse_json(deep)
    nested: Any = []
    for _ in range(100_000):
        nested = [nested]
    assert "nested over 20" in str(limits.check_value(nested))
    assert json_depth(nested, stop_at=50) == 51
    assert time.perf_counter() - start < 5
    assert limits.parse_json('{"a": [1, {"b": "[[[[[[[[[[[[[[[[[[[[[[[[["}]}') == {
        "a": [1, {"b": "[" * 25}]}
    assert json_text_depth('{"a": "\\"[[["}') == 1
    with pytest.raises(ArgumentRefused, match="not valid JSON"):
        limits.parse_json("{nope")


def test_huge_hostile_inputs_do_not_hang() -> None:
    start = time.perf_counter()
    huge = "select 1" + " or 1=1" * 200_000
    assert "limit" in str(ReadOnlySQL().check(huge))
    assert AllowedURLs(["example.com"]).check("https://example.com/" + "a" * 10**6) is not None
    assert AllowedCommands(["ls"]).check("ls " + "-l " * 10**6) is not None
    assert PathInRoot(".").check("a/" * 10**6) is not None
    long_escape = PathInRoot(".").check("../" * 1_300)
    assert long_escape is not None and len(long_escape) < 300  # the value is not echoed whole
    assert TextLimits(max_chars=1000).check("x" * 10**7) is not None
    nested_sql = "select " + "(" * 5_000 + "1" + ")" * 5_000
    assert "nested more than 50" in str(ReadOnlySQL().check(nested_sql))
    assert "could not be parsed" in str(ReadOnlySQL().check("select " + "not " * 4_000 + "1"))
    assert ReadOnlySQL().check("select " + ",".join(["a"] * 9_000)) is None
    assert time.perf_counter() - start < 20


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"max_chars": 0}, "max_chars"),
    ({"max_bytes": -1}, "max_bytes"),
    ({"max_depth": 0}, "max_depth"),
    ({"on_excess": "drop"}, "on_excess"),
])
def test_text_limits_configuration_is_checked(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        TextLimits(**kwargs)


# --------------------------------------------------------------------- through an Agent


def _observation(model: ScriptedModel, turn: int) -> dict[str, Any]:
    [result] = model.requests[turn][-1].tool_results
    assert result.is_error
    return json.loads(undelimit(result.content))["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("validator", "argument", "value"), [
    (ReadOnlySQL().on("arg"), "SQL", "select 1; drop table users"),
    (AllowedCommands(["ls"]).on("arg"), "chaining", "ls; rm -rf /"),
    (AllowedURLs(["example.com"]).on("arg"), "user info", "https://example.com@evil.com"),
    (PathInRoot(".").on("arg"), "outside", "../../etc/passwd"),
    (TextLimits(max_chars=10).on("arg"), "characters", "x" * 50),
])
async def test_a_refused_argument_reaches_the_model_and_the_tool_never_runs(
        validator: Any, argument: str, value: str) -> None:
    ran: list[str] = []

    @tool(validators=[validator])
    def act(arg: str) -> str:
        """Do something dangerous with arg."""
        ran.append(arg)
        return "done"

    model = ScriptedModel([call("act", {"arg": value}), "I could not do that."])
    store = MemoryStore()
    result = await Agent("guarded", model=model, tools=[act]).run("go", store=store)
    assert ran == []
    observation = _observation(model, 1)
    assert observation["error_type"] == "rejected_arguments"
    assert observation["retryable"] is True and observation["hint"]
    assert observation["message"].startswith("act refused these arguments: arg: ")
    assert argument in observation["message"]
    assert result.output == "I could not do that."
    [entry] = [e for e in await store.read_journal(result.run_id) if e.kind == "tool"]
    assert entry.data["failure"]["error_type"] == "rejected_arguments"


async def test_the_model_can_fix_its_arguments_and_the_tool_then_runs(tmp_path: Path) -> None:
    ran: list[str] = []
    (tmp_path / "notes.txt").write_text("hello")
    inside = PathInRoot(tmp_path)

    @tool(validators=[inside.on("path"), AllowedURLs(["example.com"]).on("links")])
    def read(path: str, links: list[str] | None = None) -> str:
        """Read a file."""
        ran.append(path)
        return inside.validate(path).read_text()

    model = ScriptedModel([
        call("read", {"path": "../../etc/passwd"}),
        call("read", {"path": "notes.txt", "links": ["https://example.com", "http://x.io"]}),
        call("read", {"path": "notes.txt", "links": ["https://example.com/a"]}),
        "hello it says"])
    result = await Agent("files", model=model, tools=[read]).run("read", store=MemoryStore())
    assert "outside" in _observation(model, 1)["message"]
    assert "links: scheme 'http'" in _observation(model, 2)["message"]
    assert [undelimit(r.content) for r in model.requests[3][-1].tool_results] == ["hello"]
    assert ran == ["notes.txt"]
    assert result.output == "hello it says"


async def test_naming_an_argument_the_tool_lacks_fails_closed_with_a_config_error() -> None:
    ran: list[str] = []

    @tool(validators=[ReadOnlySQL().on("query")])
    def run_sql(sql: str) -> str:
        """Run SQL."""
        ran.append(sql)
        return "rows"

    model = ScriptedModel([call("run_sql", {"sql": "select 1"}), "done"])
    with pytest.raises(ConfigError, match=r"'query'.*does not have"):
        await Agent("db", model=model, tools=[run_sql]).run("go", store=MemoryStore())
    assert ran == []
    with pytest.raises(ConfigError, match="on"):
        ReadOnlySQL().on()
    with pytest.raises(ConfigError, match="on"):
        ReadOnlySQL().on("not an identifier")


def test_text_limits_on_a_tool_check_nested_arguments() -> None:
    check = TextLimits(max_chars=5, max_depth=3).on("data")

    class Args:
        def __init__(self, data: Any) -> None:
            self.data = data

    assert check(Args({"a": ["ok"]})) is None
    assert check(Args(None)) is None
    assert "nested over 3" in str(check(Args({"a": [[[1]]]})))
    assert "characters" in str(check(Args({"a": ["toolong"]})))
    assert "characters" in str(check(Args({"toolongkey": 1})))


def test_the_validators_section_of_the_security_page_runs_as_written() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    section = page.split("## Validating dangerous arguments", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks
    namespace: dict[str, Any] = {"__name__": "security_doc"}
    for block in blocks:
        exec(compile(block, "docs/security.md", "exec"), namespace)  # our own docs
    query, read_file = namespace["query"], namespace["read_file"]
    assert query.fn("select name from users") == [("Ada",)]
    assert ReadOnlySQL(dialect="sqlite").check("delete from users") is not None
    assert read_file.validators and namespace["inside"].check("../x") is not None
