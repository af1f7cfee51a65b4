//! Unit tests of the triggers: each fires, cools down, resolves and is overridden as configured.

use super::*;

fn set() -> TriggerSet {
    TriggersConfig::default().resolved(None)
}

fn customer(text: Option<&str>, rolling: f32, turns: u32, now: Instant) -> TurnFacts<'_> {
    TurnFacts {
        speaker: Speaker::Customer,
        rolling,
        speaker_turns: turns,
        normalized: text,
        rolling_alert_open: false,
        lang: Lang::En,
        now,
    }
}

#[test]
fn normalizes_and_finds_phrases_as_words() {
    assert_eq!(
        normalize("  I want to SPEAK to a Manager!!! "),
        "i want to speak to a manager"
    );
    let s = set();
    assert_eq!(
        s.escalation_phrase(&normalize("Can I speak to a manager, please?")),
        Some("speak to a manager")
    );
    assert_eq!(
        s.escalation_phrase(&normalize("我要转人工")),
        Some("转人工")
    );
    assert_eq!(
        s.escalation_phrase(&normalize("打12315投诉你们")),
        Some("投诉")
    );
    assert_eq!(
        s.escalation_phrase(&normalize("我要打12315")),
        Some("12315")
    );
    assert_eq!(
        s.escalation_phrase(&normalize("call 0123156")),
        None,
        "inside a number"
    );
    assert_eq!(
        s.escalation_phrase(&normalize("my lawyers")),
        None,
        "whole words"
    );
    assert_eq!(s.escalation_phrase(&normalize("thanks, that helps")), None);
}

#[test]
fn chinese_escalation_in_every_written_form() {
    let s = set();
    let found = |t: &str| s.escalation_phrase(&normalize(t)).map(str::to_string);
    for (text, phrase) in [
        ("我要转人工", "转人工"),
        ("我要轉人工！", "转人工"),
        ("转 人 工", "转人工"),
        ("转-人-工", "转人工"),
        ("我要投訴你們", "投诉"),
        ("我要投 诉", "投诉"),
        ("打１２３１５", "12315"),
        ("我要打 1 2 3 1 5", "12315"),
        ("你們經理呢", "你们经理"),
        ("叫你们领导出来", "你们领导"),
        ("人工", "人工"),
        ("人工！！", "人工"),
        ("我唔要机械人", "唔要机械人"),
        ("我要去消基會", "消基会"),
        ("我要打315曝光你们", "打315"),
    ] {
        assert_eq!(found(text).as_deref(), Some(phrase), "{text}");
    }
    for calm in [
        "人工智能客服挺好用的",
        "上门维修人工费多少钱",
        "我的号码是13812315678",
        "花了315元",
        "谢谢你的帮助",
    ] {
        assert_eq!(found(calm), None, "{calm}");
    }
}

#[test]
fn each_trigger_fires_once_and_resolves() {
    let s = set();
    let now = Instant::now();
    let mut t = TriggerState::default();
    let esc = normalize("Get me a real person now");
    let fired = t.observe(&s, &customer(Some(&esc), 0.2, 1, now));
    assert_eq!(fired.len(), 1);
    assert_eq!(
        (fired[0].kind.as_str(), fired[0].transition.severity),
        ("escalation_request", Severity::Critical)
    );
    assert!(
        t.observe(&s, &customer(Some(&esc), 0.2, 2, now)).is_empty(),
        "cooldown"
    );

    let mut t = TriggerState::default();
    let same = normalize("My card was charged twice!");
    let kinds: Vec<_> = (0..4)
        .flat_map(|i| t.observe(&s, &customer(Some(&same), 0.0, i + 1, now)))
        .map(|f| (f.kind.as_str(), f.transition.severity))
        .collect();
    assert_eq!(
        kinds,
        [("repetition", Severity::Urgent)],
        "third time, once"
    );

    let mut t = TriggerState::default();
    let scores = [-0.25, -0.3, -0.28, -0.3, -0.32, 0.0];
    let got: Vec<_> = scores
        .iter()
        .enumerate()
        .flat_map(|(i, &r)| t.observe(&s, &customer(None, r, i as u32 + 1, now)))
        .map(|f| (f.kind.as_str(), f.transition.state))
        .collect();
    assert_eq!(
        got,
        [
            ("sustained_negativity", AlertState::Raised),
            ("sustained_negativity", AlertState::Resolved)
        ]
    );
    // Or by time: two turns far apart.
    let mut t = TriggerState::default();
    assert!(t.observe(&s, &customer(None, -0.5, 1, now)).is_empty());
    let later = now + Duration::from_secs(121);
    assert_eq!(t.observe(&s, &customer(None, -0.5, 2, later)).len(), 1);

    let mut t = TriggerState::default();
    let agent = |rolling, turns| TurnFacts {
        speaker: Speaker::Agent,
        rolling,
        speaker_turns: turns,
        normalized: None,
        rolling_alert_open: false,
        lang: Lang::En,
        now,
    };
    assert!(t.observe(&s, &agent(-0.5, 2)).is_empty(), "min agent turns");
    let raised = t.observe(&s, &agent(-0.5, 3));
    assert_eq!(raised[0].kind, "agent_strain");
    assert_eq!(t.open_level(), Severity::Warning);
    assert_eq!(
        t.observe(&s, &agent(0.0, 4))[0].transition.state,
        AlertState::Resolved
    );
}

#[test]
fn overrides_pick_the_most_specific() {
    let mut c = TriggersConfig::default();
    c.overrides.push(TriggerOverride {
        tenant: "acme".into(),
        repetition: Some(RepetitionTrigger {
            count: 5,
            ..Default::default()
        }),
        ..Default::default()
    });
    c.overrides.push(TriggerOverride {
        tenant: "acme".into(),
        queue: "vip".into(),
        escalation: Some(EscalationTrigger {
            enabled: false,
            ..Default::default()
        }),
        ..Default::default()
    });
    c.validate().unwrap();
    let p = TriggerPolicies::new(&c);
    assert_eq!(p.for_context("acme", "billing").repetition.count, 5);
    assert!(!p.for_context("acme", "vip").escalation.enabled);
    assert_eq!(
        p.for_context("acme", "vip").repetition.count,
        3,
        "whole sections replace"
    );
    assert_eq!(p.for_context("globex", "billing").repetition.count, 3);
}
