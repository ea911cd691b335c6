"""Scoped API keys in LEADARCHIVE_API_KEYS: entries read strictly, refused without an echo, and
the line ``leadarchive keys new`` prints read back as the same name, hash and scope."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from api.auth import hash_key
from leadarchive.cli import main
from tasks.scopes import KeyScope, Lists, ScopeError, key_entry, parse_scope
from tasks.settings import Settings

A, B = "a" * 64, "b" * 64


def _settings(tmp_path: Path, **values: object) -> Settings:
    values.setdefault("astguiclient_conf", tmp_path / "missing.conf")
    values.setdefault("data_dir", tmp_path / "data")
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_an_entry_with_a_scope_gives_the_key_its_actions_lists_and_limit(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        api_keys=f"acme:{A}:actions=archive+delete&lists=1001+1002+1003+2001-2004&max=100, ops:{B}",
    )

    keys = settings.api_key_scopes()

    acme = keys[A]
    assert acme.name == "acme"
    assert acme.scope == KeyScope(
        actions=frozenset({"archive", "delete"}),
        lists=Lists(((1001, 1003), (2001, 2004))),
        max_lead_ids=100,
    )
    assert keys[B].name == "ops" and keys[B].scope.unscoped
    # Names as before, for whatever reads only them.
    assert settings.key_hashes() == {A: "acme", B: "ops"}


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("actions=restore", KeyScope(actions=frozenset({"restore"}))),
        ("max=1", KeyScope(max_lead_ids=1)),
        ("lists=7", KeyScope(lists=Lists(((7, 7),)))),
        # Order is free; ranges are sorted and merged.
        (
            "lists=5-9+1+2+3-4&actions=selection",
            KeyScope(frozenset({"selection"}), Lists(((1, 9),))),
        ),
        ("lists=0-18446744073709551615", KeyScope(lists=Lists(((0, 2**64 - 1),)))),
    ],
)
def test_good_scopes(tmp_path: Path, scope: str, expected: KeyScope) -> None:
    settings = _settings(tmp_path, api_keys=f"acme:{A}:{scope}")

    assert settings.api_key_scopes()[A].scope == expected


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (f"acme:{A}:", "entry 1 of 1: the scope after the hash is empty"),
        (f"ops:{B},acme:{A}:actions=archive+la_pasted-raw-key", "entry 2 of 2: actions must be"),
        (f"acme:{A}:actions=", "actions is empty"),
        (f"acme:{A}:actions=Archive", "actions must be some of archive, delete"),
        (f"acme:{A}:lists=1001-999", "from the lower ID to the higher"),
        (f"acme:{A}:lists=1001;1002", "lists must be list IDs"),
        (f"acme:{A}:lists=-5", "lists must be list IDs"),
        (f"acme:{A}:lists=18446744073709551616", "at most 18446744073709551615"),
        (f"acme:{A}:max=0", "max must be a whole number"),
        (f"acme:{A}:max=ten", "max must be a whole number"),
        (f"acme:{A}:max=501", "entry 1 has a max= above LEADARCHIVE_MAX_LEAD_IDS \\(500\\)"),
        (f"acme:{A}:max=5&max=6", "max is given twice"),
        (f"acme:{A}:actions=archive + delete", "a scope has no spaces"),
        (f"acme:{A}:owner=me", "a scope is actions=..., lists=... and max=..."),
        (f"acme:{A}:actions=archive,delete", "entry 2 of 2: each entry must be name:sha256hex"),
        (f"acme:{A}:actions=archive;max=3", "actions must be some of"),
        (f"acme:{A}:actions=archive,acme:{B}", "must have the same scope"),
        (f"acme:{A.upper()}:max=5", "each entry must be name:sha256hex"),
    ],
)
def test_bad_entries_are_refused_by_position_never_echoed(
    tmp_path: Path, entries: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as refused:
        _settings(tmp_path, api_keys=entries)

    shown = str(refused.value)
    assert "la_pasted-raw-key" not in shown
    assert A not in shown and B not in shown and "acme" not in shown
    assert entries not in shown


def test_a_key_limit_may_equal_the_global_limit(tmp_path: Path) -> None:
    settings = _settings(tmp_path, api_keys=f"acme:{A}:max=250", max_lead_ids=250)

    assert settings.api_key_scopes()[A].scope.lead_limit(settings.max_lead_ids) == 250
    with pytest.raises(ValidationError, match="above LEADARCHIVE_MAX_LEAD_IDS \\(249\\)"):
        _settings(tmp_path, api_keys=f"acme:{A}:max=250", max_lead_ids=249)


def test_scopes_read_back_as_written() -> None:
    scope = KeyScope(frozenset({"delete", "archive"}), Lists.parse("2001,1001-1004", ","), 50)

    assert str(scope) == "actions=archive+delete&lists=1001-1004+2001&max=50"
    assert parse_scope(str(scope)) == scope
    assert key_entry("acme", A, scope) == f"acme:{A}:{scope}"
    assert key_entry("acme", A) == f"acme:{A}"
    with pytest.raises(ScopeError):
        parse_scope("")


def _keys_new(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = main(["keys", "new", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


@pytest.mark.usefixtures("no_settings")
def test_keys_new_prints_an_entry_the_settings_read_as_the_same_key_and_scope(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, _ = _keys_new(
        capsys, "acme", "--actions", "delete,archive", "--lists", "2001,1001-1004", "--max", "100"
    )

    assert code == 0
    key, entry = lines[1], lines[-1]
    assert entry == f"acme:{hash_key(key)}:actions=archive+delete&lists=1001-1004+2001&max=100"
    settings = _settings(tmp_path, api_keys=f"ops:{B},{entry}")
    assert settings.api_key_scopes()[hash_key(key)] == (
        "acme",
        KeyScope(frozenset({"archive", "delete"}), Lists(((1001, 1004), (2001, 2001))), 100),
        2,
    )
    assert "quote" in lines[2]  # '&' in a value a shell reads


@pytest.mark.usefixtures("no_settings")
def test_keys_new_without_options_prints_an_unscoped_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, _ = _keys_new(capsys, "ops")

    assert code == 0
    assert lines[-1] == f"ops:{hash_key(lines[1])}"
    assert (
        _settings(tmp_path, api_keys=lines[-1]).api_key_scopes()[hash_key(lines[1])].scope.unscoped
    )
    assert "quote" not in lines[2]
    # A scope of one part has no '&' to quote either.
    code, lines, _ = _keys_new(capsys, "crm", "--actions", "archive")
    assert code == 0 and lines[-1].endswith(":actions=archive") and "quote" not in lines[2]


@pytest.mark.usefixtures("no_settings")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("acme", "--actions", "archive,purge"), "actions must be some of"),
        (("acme", "--lists", "1004-1001"), "from the lower ID to the higher"),
        (("acme", "--max", "0"), "max must be a whole number"),
        (("acme", "--max", "501"), "above LEADARCHIVE_MAX_LEAD_IDS (500)"),
        (("ac me",), "a key's name is"),
        (("acme:x",), "a key's name is"),
    ],
)
def test_keys_new_refuses_what_the_service_would_refuse_and_prints_no_key(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    code, lines, err = _keys_new(capsys, *args)

    assert code == 2
    assert message in " ".join(err.split())
    assert not any(line.startswith("la_") for line in lines)
