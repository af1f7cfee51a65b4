//! What `emotion model ...` prints: a model in service, and a shadow report.

use crate::pb;

/// One model: name@version, labels, problem type, hash, path; what it replaced and the gate it
/// passed, after a swap.
pub fn model_info(m: pb::ModelInfo) -> String {
    let mut s = format!(
        "{}@{}  {} labels ({})  sha256 {}  {}",
        m.name,
        m.version,
        m.labels.len(),
        m.problem_type,
        &m.sha256[..12.min(m.sha256.len())],
        m.path
    );
    if !m.replaced_version.is_empty() {
        s.push_str(&format!("\n  replaced {}", m.replaced_version));
    }
    if let Some(g) = m.quality_gate {
        s.push_str(&format!(
            "\n  quality gate on {}: macro-F1 {:.4} vs live {:.4} (max drop {})",
            g.data, g.candidate_macro_f1, g.live_macro_f1, g.max_drop
        ));
    }
    if !m.fleet.is_empty() {
        let active = match m.fleet_active.as_str() {
            "" => "(no swap yet: each replica serves its configured model)",
            tag => tag,
        };
        s.push_str(&format!(
            "
  fleet: active {active}"
        ));
        for r in &m.fleet {
            let at = super::customers::when(r.reported_at.as_ref());
            s.push_str(&format!(
                "
    {:<24} serves {}  sha256 {}  reported {at} UTC{}",
                r.replica_id,
                r.serving,
                &r.sha256[..12.min(r.sha256.len())],
                match r.error.as_str() {
                    "" => String::new(),
                    e => format!("  NOT the active model: {e}"),
                }
            ));
        }
    }
    s
}

/// The shadow against the live model, in a few lines.
pub fn shadow_report(r: pb::ShadowReport) -> String {
    format!(
        "shadow {} beside {} on {:.0}% of conversations: {} turns compared\n  \
         valence correlation {:.4}, mean |diff| {:.4}\n  top label agreement {:.1}%\n  \
         alert decisions agree on {:.1}% of {} customer turns\n  \
         latency p50/p99 ms: live {:.1}/{:.1}, shadow {:.1}/{:.1}\n  dropped {}",
        r.shadow_version,
        r.live_version,
        100.0 * r.share,
        r.turns_compared,
        r.valence_correlation,
        r.mean_abs_valence_diff,
        100.0 * r.top_label_agreement,
        100.0 * r.alert_decision_agreement,
        r.alert_decisions,
        r.live_p50_ms,
        r.live_p99_ms,
        r.shadow_p50_ms,
        r.shadow_p99_ms,
        r.dropped
    )
}
