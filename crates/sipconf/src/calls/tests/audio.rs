//! Audio into conferences and to calls, its events, and the join tone.

use super::*;

#[test]
fn audio_into_a_conference_is_fetched_played_and_reported() {
    let mut bridge = Bridge::new(ROOM);
    room_member(&mut bridge, 1);
    let conference = bridge.room_conference("1000").id;
    let request = |url: &str| ApiRequest::Audio {
        target: AudioTarget::Conference(conference.clone()),
        request: AudioRequest {
            source: Some(Source::File { url: url.into() }),
            looped: false,
            tag: Some("intro".into()),
        },
        speech_missing: None,
    };
    let (reply, actions) = bridge.api(request("http://files.example/a.wav"));
    assert_eq!(reply, Ok(Reply::Done));
    let [(first, _)] = &fetches(&actions)[..] else {
        panic!("one fetch");
    };
    // A second request while the first is still fetched replaces it.
    let (_, actions) = bridge.api(request("http://files.example/b.wav"));
    let [(second, _)] = &fetches(&actions)[..] else {
        panic!("one fetch");
    };
    let clip: Clip = vec![0i16; 1600].into();
    let actions = bridge.handle(Input::Clip {
        id: *first,
        result: Ok(clip.clone()),
    });
    assert!(
        media_commands(&actions).is_empty(),
        "the first was replaced"
    );
    assert_eq!(callbacks(&actions), ["conference-playback:done"]);
    let actions = bridge.handle(Input::Clip {
        id: *second,
        result: Ok(clip),
    });
    assert_eq!(callbacks(&actions), ["conference-playback:started"]);
    let Some(Command::PlayClip { id, target, .. }) = media_commands(&actions).first().copied()
    else {
        panic!("the clip plays");
    };
    assert!(matches!(target, ClipTarget::Mix(_)));
    let actions = bridge.media(Event::ClipDone {
        id: *id,
        end: ClipEnd::Finished,
    });
    assert_eq!(callbacks(&actions), ["conference-playback:done"]);
    assert_eq!(bridge.switchboard.playback.counts(), (0, 0));
}

#[test]
fn a_sentence_without_text_to_speech_is_refused_and_reported_done() {
    let mut bridge = Bridge::new(ROOM);
    room_member(&mut bridge, 1);
    let conference = bridge.room_conference("1000").id;
    let voice = crate::audio::espeak_voice(None, None, None).expect("default voice");
    let (reply, actions) = bridge.api(ApiRequest::Audio {
        target: AudioTarget::Conference(conference),
        request: AudioRequest {
            source: Some(Source::Speech {
                sentence: "hello".into(),
                voice,
            }),
            looped: false,
            tag: None,
        },
        speech_missing: Some("espeak-ng is not installed".into()),
    });
    assert_eq!(
        reply,
        Err(CallError::SpeechUnavailable(
            "espeak-ng is not installed".into()
        ))
    );
    assert!(fetches(&actions).is_empty());
    assert_eq!(callbacks(&actions), ["conference-speak:done"]);
}

#[test]
fn audio_for_a_conference_that_does_not_exist_is_not_found() {
    let mut bridge = Bridge::new(ROOM);
    let (reply, actions) = bridge.api(ApiRequest::Audio {
        target: AudioTarget::Conference("conf-none".into()),
        request: AudioRequest {
            source: None,
            looped: false,
            tag: None,
        },
        speech_missing: None,
    });
    assert_eq!(
        reply,
        Err(RecordError::ConferenceNotFound("conf-none".into()).into())
    );
    assert!(actions.is_empty());
}

#[test]
fn a_join_tone_plays_into_the_conference_when_a_member_with_one_joins() {
    let mut bridge = Bridge::new(&format!("{ROOM}{APPLICATION}"));
    room_member(&mut bridge, 1);
    let conference = bridge.room_conference("1000").id;
    bridge.invite(2, "5551234");
    let call_id = the_call_id(&bridge, 2);
    answer_for_the_application(&mut bridge, &call_id);
    let (_, actions) = bridge.api(ApiRequest::AddMember {
        conference_id: conference,
        call_id,
        options: MemberOptions {
            join_tone: true,
            ..MemberOptions::default()
        },
    });
    assert!(media_commands(&actions).iter().any(|c| matches!(
        c,
        Command::PlayClip {
            target: ClipTarget::Mix(_),
            looped: false,
            ..
        }
    )));
}
