"""Drives sipconf with the published Catapult v1 client bandwidth-sdk 3.1.0
(module `bandwidth`), changing only its endpoint: create a conference, read
it, add two answered calls as members, list and read them, mute, hold, remove
one, and complete the conference. Run by tests/api_clients.rs; exits non-zero
on any mismatch.

usage: python bandwidth_sdk.py BASE_URL USER_ID TOKEN SECRET CALL_ID_1 CALL_ID_2
"""
import sys

import bandwidth
from bandwidth.voice import BandwidthVoiceAPIException


def main():
    base_url, user_id, token, secret, first, second = sys.argv[1:7]
    api = bandwidth.client("voice", user_id, token, secret, api_endpoint=base_url)

    call = api.get_call(first)
    assert call["state"] == "active", call

    # The client sends every keyword, None when unset: null must mean absent.
    conference_id = api.create_conference("+15550002", tag="python")
    assert conference_id.startswith("conf-"), conference_id
    conference = api.get_conference(conference_id)
    assert conference["state"] == "created", conference
    assert conference["tag"] == "python", conference
    assert "fallback_url" not in conference, conference

    a = api.create_conference_member(conference_id, call_id=first, join_tone=False)
    b = api.create_conference_member(conference_id, call_id=second, mute=True)
    assert a.startswith("member-"), a
    members = list(api.list_conference_members(conference_id))
    assert [m["id"] for m in members] == [a, b], members
    member = api.get_conference_member(conference_id, b)
    assert member["mute"] is True, member

    api.mute_conference_member(conference_id, a, True)
    api.hold_conference_member(conference_id, a, True)
    member = api.get_conference_member(conference_id, a)
    assert member["mute"] is True and member["hold"] is True, member

    api.mute_conference(conference_id, True)
    api.hold_conference(conference_id, False)
    conference = api.get_conference(conference_id)
    assert conference["state"] == "active", conference
    assert conference["mute"] is True, conference
    assert conference["active_members"] == 2, conference

    api.remove_conference_member(conference_id, a)
    member = api.get_conference_member(conference_id, a)
    assert member["state"] == "completed", member
    assert "removed_time" in member, member

    api.terminate_conference(conference_id)
    conference = api.get_conference(conference_id)
    assert conference["state"] == "completed", conference
    assert conference["active_members"] == 0, conference

    try:
        api.mute_conference(conference_id, False)
    except BandwidthVoiceAPIException as e:
        assert e.status_code == 403, e
        assert e.code == "conference-error", e
    else:
        raise AssertionError("a completed conference accepted a change")
    print("bandwidth-sdk 3.1.0: every step passed")


if __name__ == "__main__":
    main()
