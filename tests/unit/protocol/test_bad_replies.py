"""The bad-replies corpus: every malformed or unusual reply becomes a correct record or a typed error.

Each case in ``tests/replies/cases.json`` names a raw body file, the action, the HTTP status, the
content type and the expected outcome. The body goes through ``protocol.decode_reply`` and the action's
parser, exactly as the hooks and triggers use them; nothing may escape but a record or a
``MirPanelError`` subclass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.replies import parse_reply

from airflow_provider_mirpanel import exceptions, protocol
from airflow_provider_mirpanel.exceptions import MirPanelAPIError, MirPanelError, MirPanelTransientError
from airflow_provider_mirpanel.protocol import Action

CORPUS = Path(__file__).resolve().parents[2] / "replies"
CASES: list[dict[str, Any]] = json.loads((CORPUS / "cases.json").read_text(encoding="utf-8"))
TEN_MB = 10 * 1024 * 1024


def run_case(case: dict[str, Any], body: bytes | None = None) -> Any:
    """Decode and parse one corpus case; returns the record(s) or raises what the provider raises."""
    action = Action(case["action"])
    raw = (CORPUS / case["file"]).read_bytes() if body is None else body
    payload = protocol.decode_reply(
        raw,
        case["http_status"],
        action,
        content_type=case.get("content_type"),
        retry_after=case.get("retry_after"),
    )
    return parse_reply(action, payload, case.get("ids"))


def outcome_of(case: dict[str, Any]) -> Any:
    """The case's records, or the MirPanelError it raised; any other exception fails the test."""
    try:
        return run_case(case)
    except MirPanelError as error:
        return error


def test_the_corpus_holds_at_least_40_cases_each_with_its_own_file() -> None:
    names = [case["name"] for case in CASES]
    files = [case["file"] for case in CASES]
    assert len(CASES) >= 40
    assert len(set(names)) == len(names) and len(set(files)) == len(files)
    on_disk = {path.name for path in CORPUS.iterdir()} - {"cases.json", "README.md"}
    assert on_disk == set(files), "every body file is a case and every case has its file"
    assert {case["action"] for case in CASES} == {action.value for action in Action}
    raising = sum("raises" in case["expect"] for case in CASES)
    assert 20 <= raising <= len(CASES) - 20, "both records and errors are well represented"


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_bad_reply_gives_the_expected_record_or_typed_error(case: dict[str, Any]) -> None:
    expect = case["expect"]
    outcome = outcome_of(case)
    if "raises" not in expect:
        assert not isinstance(outcome, Exception), f"raised {outcome!r}"
        assert outcome == expect["record"] if "record" in expect else outcome == expect["records"]
        return
    assert isinstance(outcome, MirPanelError), f"expected {expect['raises']}, got the record(s) {outcome!r}"
    assert type(outcome) is getattr(exceptions, expect["raises"]), f"{type(outcome).__name__}: {outcome}"
    text = str(outcome)
    assert len(text) < 600, "an error never carries a whole body"
    if "match" in expect:
        assert expect["match"] in text
        if isinstance(outcome, MirPanelAPIError):
            assert expect["match"] in outcome.panel_message, "the panel's own text is kept"
    for name, value in expect.get("attrs", {}).items():
        assert getattr(outcome, name) == value, name
    if case["action"] == "add":
        assert_add_outcome(outcome, expect["add_outcome"])


def assert_add_outcome(error: MirPanelError, expected: str) -> None:
    """How a failed add is reported: refused (nothing placed), not sent (safe to resend), or ambiguous."""
    ambiguous = protocol.outcome_unknown(Action.ADD, error)
    resent = protocol.may_retry(Action.ADD, error)
    if expected == "ambiguous":
        assert ambiguous and not resent
    elif expected == "not sent":
        assert not ambiguous and resent
    else:
        assert expected == "refused" and not ambiguous and not resent


def test_every_corpus_error_is_a_subclass_the_docs_name() -> None:
    raised = {case["expect"]["raises"] for case in CASES if "raises" in case["expect"]}
    assert raised == {
        "MirPanelTransientError",
        "MirPanelResponseError",
        "MirPanelAPIError",
        "MirPanelAuthError",
        "MirPanelInsufficientFundsError",
    }


# -- 10 MB replies (generated here, never committed) ---------------------------------------------------------------


def big_catalogue() -> bytes:
    service = {
        "service": 0,
        "name": "Instagram Followers [Real] ⚡️ 🇹🇷 | Max 1M | Refill 30D",
        "type": "Default",
        "category": "Instagram Followers ✨",
        "rate": "0.90",
        "min": 50,
        "max": "2147483647",
        "refill": True,
        "cancel": "1",
        "desc": "x" * 100,
    }
    entries: list[Any] = []
    size = 2
    while size < TEN_MB:
        service["service"] = len(entries) + 1
        entries.append(json.dumps(service, ensure_ascii=False))
        size += len(entries[-1].encode()) + 1
    return ("[" + ",".join(entries) + "]").encode()


def test_a_10_mb_catalogue_parses_into_typed_records() -> None:
    body = big_catalogue()
    assert len(body) >= TEN_MB
    records = run_case({"action": "services", "http_status": 200}, body)
    assert len(records) == body.count(b'"service":')
    assert records[-1]["service"] == len(records) and records[-1]["max"] == 2147483647
    assert all(record["refill"] is True and record["rate"] == 0.9 for record in records)


def test_a_10_mb_multi_status_reply_gives_only_the_requested_ids() -> None:
    entry = {"charge": "0.27819", "start_count": "3572", "status": "Partial", "remains": "157", "currency": "USD"}
    reply = {str(number): entry for number in range(1, 100_000)}
    body = json.dumps(reply).encode()
    assert len(body) >= TEN_MB
    ids = list(range(99_950, 100_050))
    records = run_case({"action": "status", "http_status": 200, "ids": ids}, body)
    assert [record["order"] for record in records] == ids
    assert [record["status"] for record in records] == ["Partial"] * 50 + [None] * 50
    assert {record["error"] for record in records[50:]} == {protocol.MISSING_FROM_REPLY}


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (b"<html><body>" + b"<p>maintenance</p>" * (TEN_MB // 18) + b"</body></html>", 503, MirPanelTransientError),
        (b"<!DOCTYPE html>" + b"A" * TEN_MB, 200, MirPanelTransientError),
        (b'{"1": {"status": "' + b"Partial" * (TEN_MB // 7), 200, MirPanelTransientError),  # cut off
        (b" \n" * (TEN_MB // 2), 200, MirPanelTransientError),  # empty: lost like a dropped connection
        (b'{"error": "' + b"Incorrect order ID " * (TEN_MB // 19) + b'"}', 200, MirPanelAPIError),
        (b"\xff\xfe" * (TEN_MB // 2), 200, exceptions.MirPanelResponseError),
    ],
    ids=["html-503", "html-200", "truncated-json", "whitespace", "huge-error-text", "binary"],
)
def test_a_10_mb_bad_reply_is_a_typed_error_with_a_short_message(body: bytes, status: int, expected: type) -> None:
    assert len(body) >= TEN_MB - 64
    with pytest.raises(MirPanelError) as caught:
        run_case({"action": "status", "http_status": status, "ids": [1]}, body)
    assert type(caught.value) is expected
    limit = protocol.MAX_PANEL_TEXT + 100 if expected is MirPanelAPIError else 600  # a panel's text is kept, capped
    assert len(str(caught.value)) < limit


def nested(depth: int) -> bytes:
    """A reply whose containers nest ``depth`` levels, dicts and lists in turn: {"a": [{"a": [...]}]}."""
    body = b"1"
    for level in range(depth, 0, -1):
        body = b'{"a": ' + body + b"}" if level % 2 else b"[" + body + b"]"
    return body


def test_a_reply_may_nest_100_levels_and_no_more_on_every_python() -> None:
    deepest = protocol.decode_reply(nested(protocol.decode.MAX_DEPTH), 200, Action.BALANCE)
    for _ in range(protocol.decode.MAX_DEPTH - 1):
        deepest = deepest["a"] if isinstance(deepest, dict) else deepest[0]
    assert deepest == [1]
    with pytest.raises(exceptions.MirPanelResponseError, match="not JSON \\(nested too deeply\\)"):
        protocol.decode_reply(nested(protocol.decode.MAX_DEPTH + 1), 200, Action.BALANCE)
